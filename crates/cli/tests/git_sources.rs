//! Issue 18 item 1: git sources against real git servers on loopback — `git http-backend` behind
//! testdata/git/http-backend.py and `git daemon` — in `ADD`, as the build context and as a named
//! context; and an http(s) tar as a context. Needs root (builds) and git; skips otherwise.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A work repository `src` and its bare copy served as `served/repo.git`.
struct Repo {
    src: PathBuf,
    served: PathBuf,
}

impl Repo {
    fn new(env: &Env) -> Repo {
        let src = env.path("gitsrc");
        std::fs::create_dir_all(src.join("app")).unwrap();
        std::fs::create_dir_all(src.join("ctxdir")).unwrap();
        git(&src, &["init", "-q"]);
        std::fs::write(src.join("README"), "readme v1\n").unwrap();
        std::fs::write(src.join("app/main.txt"), "app v1\n").unwrap();
        std::fs::write(
            src.join("ctxdir/Dockerfile"),
            "FROM busybox:latest\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n",
        )
        .unwrap();
        std::fs::write(src.join("ctxdir/hello.txt"), "hello from a git context\n").unwrap();
        git(&src, &["add", "-A"]);
        git(&src, &["commit", "-q", "-m", "one"]);
        git(&src, &["tag", "-a", "v1", "-m", "v1"]);
        let served = env.path("served");
        std::fs::create_dir_all(&served).unwrap();
        git(
            env.tmp.path(),
            &[
                "clone",
                "-q",
                "--bare",
                src.to_str().unwrap(),
                "served/repo.git",
            ],
        );
        Repo { src, served }
    }

    /// Commit a change on main and push it to the served copy; returns the new commit.
    fn advance(&self, file: &str, text: &str) -> String {
        std::fs::write(self.src.join(file), text).unwrap();
        git(&self.src, &["commit", "-q", "-am", "more"]);
        let bare = self.served.join("repo.git");
        git(&self.src, &["push", "-q", bare.to_str().unwrap(), "main"]);
        git(&self.src, &["rev-parse", "HEAD"])
    }

    fn http(&self) -> (Server, String) {
        let script = repo_root().join("testdata/git/http-backend.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&self.served)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (
            Server(child),
            format!("http://127.0.0.1:{}/repo.git", line.trim()),
        )
    }

    fn daemon(&self) -> (Server, String) {
        let port = free_port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", self.served.display()))
            .arg(&self.served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port);
        (Server(child), format!("git://127.0.0.1:{port}/repo.git"))
    }
}

fn ran(log: &str, step: &str) -> bool {
    log.lines().any(|l| l.contains(step)) && !cached(log, step)
}

fn cached(log: &str, step: &str) -> bool {
    // `#N [k/n] STEP` then `#N CACHED`.
    let mut num = None;
    for l in log.lines() {
        if let Some(rest) = l.strip_prefix('#') {
            let (n, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if text.contains(step) {
                num = Some(n.to_string());
            } else if Some(n.to_string()) == num && text.trim() == "CACHED" {
                return true;
            }
        }
    }
    false
}

#[test]
fn add_git_sources_keyed_by_commit() {
    if !require_root(&["git", "python3"]) {
        return;
    }
    let env = Env::with_busybox();
    let repo = Repo::new(&env);
    let (_h, http) = repo.http();
    let (_d, daemon) = repo.daemon();
    let dockerfile = |main_ref: &str| {
        format!(
            "FROM busybox:latest
ADD {daemon}#v1:app /app
ADD {http}#{main_ref} /src
ADD --keep-git-dir=true {http}#{main_ref} /kept
RUN cat /src/README /app/main.txt > /out && test -d /kept/.git && test ! -e /src/.git && test ! -e /app/README
"
        )
    };
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile("main"))]);
    let (_, log) = env.build_ok(&["-t", "g", ctx.to_str().unwrap()]);
    assert!(ran(&log, "RUN cat"), "{log}");
    let out = stdout(&env.rbuild(&["run", "--rm", "g", "cat", "/out"]));
    assert_eq!(out, "readme v1\napp v1\n");

    // Nothing moved: everything cached.
    let (_, log) = env.build_ok(&["-t", "g", ctx.to_str().unwrap()]);
    assert!(cached(&log, "RUN cat"), "{log}");

    // main moves: the ADDs of main miss, the tag's stays cached.
    let c2 = repo.advance("README", "readme v2\n");
    let (_, log) = env.build_ok(&["-t", "g", ctx.to_str().unwrap()]);
    assert!(ran(&log, "RUN cat"), "{log}");
    assert!(cached(&log, &format!("ADD {daemon}#v1:app /app")), "{log}");
    let out = stdout(&env.rbuild(&["run", "--rm", "g", "cat", "/out"]));
    assert_eq!(out, "readme v2\napp v1\n");

    // The same commit named by its id instead of `main`: the key is the commit, so cached.
    std::fs::write(ctx.join("Dockerfile"), dockerfile(&c2)).unwrap();
    let (_, log) = env.build_ok(&["-t", "g", ctx.to_str().unwrap()]);
    assert!(cached(&log, "RUN cat"), "{log}");

    // --checksum: right commit passes, another fails before any step runs.
    let short = &c2[..12];
    let ok_ctx = env.context(
        "ctx-sum",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox:latest\nADD --checksum={short} {http}#main /s\nRUN echo checked\n"
            ),
        )],
    );
    env.build_ok(&[ok_ctx.to_str().unwrap()]);
    let bad = env.context(
        "ctx-badsum",
        &[("Dockerfile", &format!("FROM busybox:latest\nRUN echo must-not-run\nADD --checksum=0000000 {http}#main /s\n"))],
    );
    let o = env.rbuild(&["build", "--progress=plain", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("does not match --checksum 0000000"), "{err}");
    assert!(!err.contains("must-not-run\n#"), "no step ran: {err}");

    // A ref that does not exist: one clear error naming it, before any step.
    let missing = env.context(
        "ctx-missing",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox:latest\nRUN echo must-not-run\nADD {daemon}#no-such-branch /s\n"
            ),
        )],
    );
    let o = env.rbuild(&["build", "--progress=plain", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("git ref \"no-such-branch\" not found"),
        "{err}"
    );
    assert!(!err.contains("#2 [2/3] RUN"), "no step ran: {err}");
}

#[test]
fn git_and_tar_urls_as_contexts() {
    if !require_root(&["git", "python3", "tar"]) {
        return;
    }
    let env = Env::with_busybox();
    let repo = Repo::new(&env);
    let (_h, http) = repo.http();
    let (_d, daemon) = repo.daemon();

    // The main context from a git URL with a subdirectory.
    env.build_ok(&["-t", "fromgit", &format!("{http}#main:ctxdir")]);
    let out = stdout(&env.rbuild(&["run", "--rm", "fromgit"]));
    assert_eq!(out, "hello from a git context\n");

    // A named context from a git URL.
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nCOPY --from=src README /r\nCMD [\"cat\", \"/r\"]\n",
        )],
    );
    env.build_ok(&[
        "-t",
        "named",
        "--build-context",
        &format!("src={daemon}#v1"),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        stdout(&env.rbuild(&["run", "--rm", "named"])),
        "readme v1\n"
    );

    // An http tar.gz as the context.
    let www = env.path("www");
    std::fs::create_dir_all(&www).unwrap();
    let tctx = env.context(
        "tctx",
        &[
            ("Dockerfile", "FROM busybox:latest\nCOPY t.txt /t.txt\n"),
            ("t.txt", "from a tarball\n"),
        ],
    );
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(www.join("ctx.tar.gz"))
            .arg("-C")
            .arg(&tctx)
            .arg("."),
    );
    let port = free_port();
    let _web = Server(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    env.build_ok(&[
        "-t",
        "fromtar",
        &format!("http://127.0.0.1:{port}/ctx.tar.gz"),
    ]);
    assert_eq!(
        stdout(&env.rbuild(&["run", "--rm", "fromtar", "cat", "/t.txt"])),
        "from a tarball\n"
    );

    // A git context whose ref does not exist: one clear error.
    let o = env.rbuild(&["build", &format!("{http}#nope")]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("git ref \"nope\" not found"),
        "{}",
        stderr(&o)
    );
}
