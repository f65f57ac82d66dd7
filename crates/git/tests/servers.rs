//! rbuild-git against real git servers on loopback: `git daemon` (git://) and `git http-backend`
//! behind testdata/git/http-backend.py (http://). Skips, saying why, when git or python3 is missing.

use rbuild_git::{Error, Git, GitRef};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn have(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

struct Repo {
    _tmp: tempfile::TempDir,
    served: PathBuf,
    main: String,
    first: String,
    tag_commit: String,
    side: String,
}

/// A repository with two commits on main, an annotated tag on the first, a side branch, an `app/`
/// subdirectory, a symlink to the host's /etc, and a `.wh.` file name.
fn make_repo() -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q"]);
    std::fs::create_dir_all(src.join("app/lib")).unwrap();
    std::fs::write(src.join("README"), "one\n").unwrap();
    std::fs::write(src.join("app/main.txt"), "main v1\n").unwrap();
    std::fs::write(src.join("app/lib/x.txt"), "x\n").unwrap();
    std::fs::write(src.join(".wh.notawhiteout"), "plain file\n").unwrap();
    std::os::unix::fs::symlink("/etc", src.join("etclink")).unwrap();
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "first"]);
    let first = git(&src, &["rev-parse", "HEAD"]);
    git(&src, &["tag", "-a", "v1", "-m", "release one"]);
    std::fs::write(src.join("app/main.txt"), "main v2\n").unwrap();
    git(&src, &["commit", "-q", "-am", "second"]);
    let main = git(&src, &["rev-parse", "HEAD"]);
    git(&src, &["checkout", "-q", "-b", "side", &first]);
    std::fs::write(src.join("side.txt"), "side\n").unwrap();
    git(&src, &["add", "side.txt"]);
    git(&src, &["commit", "-q", "-m", "side"]);
    let side = git(&src, &["rev-parse", "HEAD"]);
    git(&src, &["checkout", "-q", "main"]);
    let served = tmp.path().join("served");
    std::fs::create_dir(&served).unwrap();
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            "served/repo.git",
        ],
    );
    Repo {
        _tmp: tmp,
        served,
        main,
        tag_commit: first.clone(),
        first,
        side,
    }
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

fn git_daemon(root: &Path) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", root.display()))
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (Server(child), port)
}

fn http_backend(root: &Path) -> (Server, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/git/http-backend.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    (Server(child), port)
}

fn skip() -> bool {
    if !have("git") || !have("python3") {
        eprintln!("SKIP: git and python3 are needed for the git server tests");
        return true;
    }
    false
}

fn parse(s: &str) -> GitRef {
    GitRef::parse(s).unwrap().unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn check_transport(url_base: &str, repo: &Repo) {
    let cache = tempfile::tempdir().unwrap();
    let g = Git::new(cache.path()).with_timeout(Duration::from_secs(60));

    // Refs resolve to commits: HEAD, a branch, an annotated tag (peeled), a commit id.
    assert_eq!(
        g.resolve(&parse(&format!("{url_base}/repo.git"))).unwrap(),
        repo.main
    );
    assert_eq!(
        g.resolve(&parse(&format!("{url_base}/repo.git#side")))
            .unwrap(),
        repo.side
    );
    assert_eq!(
        g.resolve(&parse(&format!("{url_base}/repo.git#v1")))
            .unwrap(),
        repo.tag_commit
    );
    assert_eq!(
        g.resolve(&parse(&format!("{url_base}/repo.git#{}", repo.first)))
            .unwrap(),
        repo.first
    );

    // A missing ref names itself.
    let err = g
        .resolve(&parse(&format!("{url_base}/repo.git#no-such-branch")))
        .unwrap_err();
    assert!(matches!(err, Error::RefNotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");

    // The whole tree at main: files, the symlink kept as a link (never followed), no .git.
    let out = tempfile::tempdir().unwrap();
    let r = parse(&format!("{url_base}/repo.git#main"));
    g.checkout(&r, &repo.main, out.path(), false).unwrap();
    assert_eq!(read(&out.path().join("app/main.txt")), "main v2\n");
    assert_eq!(read(&out.path().join(".wh.notawhiteout")), "plain file\n");
    assert_eq!(
        std::fs::read_link(out.path().join("etclink")).unwrap(),
        Path::new("/etc")
    );
    assert!(!out.path().join(".git").exists());

    // An older commit, fetched by id into the same cache, and a commit only on another branch.
    let out = tempfile::tempdir().unwrap();
    g.checkout(&r, &repo.first, out.path(), false).unwrap();
    assert_eq!(read(&out.path().join("app/main.txt")), "main v1\n");
    let out = tempfile::tempdir().unwrap();
    g.checkout(
        &parse(&format!("{url_base}/repo.git#{}", repo.side)),
        &repo.side,
        out.path(),
        false,
    )
    .unwrap();
    assert_eq!(read(&out.path().join("side.txt")), "side\n");

    // A subdirectory: only its contents.
    let out = tempfile::tempdir().unwrap();
    let r = parse(&format!("{url_base}/repo.git#main:app"));
    g.checkout(&r, &repo.main, out.path(), false).unwrap();
    assert_eq!(read(&out.path().join("main.txt")), "main v2\n");
    assert_eq!(read(&out.path().join("lib/x.txt")), "x\n");
    assert!(!out.path().join("README").exists());

    // A subdirectory through the symlink would read the host's /etc: refused.
    let out = tempfile::tempdir().unwrap();
    for sub in ["etclink", "etclink/ssl"] {
        let r = parse(&format!("{url_base}/repo.git#main:{sub}"));
        let err = g.checkout(&r, &repo.main, out.path(), false).unwrap_err();
        assert!(matches!(err, Error::Subdir { .. }), "{sub}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written"
    );
    let r = parse(&format!("{url_base}/repo.git#main:nope"));
    assert!(matches!(
        g.checkout(&r, &repo.main, out.path(), false),
        Err(Error::Subdir { .. })
    ));

    // --keep-git-dir: a repository at the commit, origin set.
    let out = tempfile::tempdir().unwrap();
    let r = parse(&format!("{url_base}/repo.git#v1"));
    g.checkout(&r, &repo.first, out.path(), true).unwrap();
    assert_eq!(git(out.path(), &["rev-parse", "HEAD"]), repo.first);
    assert_eq!(
        git(out.path(), &["remote", "get-url", "origin"]),
        format!("{url_base}/repo.git")
    );
    assert_eq!(read(&out.path().join("app/main.txt")), "main v1\n");
}

#[test]
fn git_daemon_transport() {
    if skip() {
        return;
    }
    let repo = make_repo();
    let (_srv, port) = git_daemon(&repo.served);
    check_transport(&format!("git://127.0.0.1:{port}"), &repo);
}

#[test]
fn http_backend_transport_and_offline_reuse() {
    if skip() {
        return;
    }
    let repo = make_repo();
    let (srv, port) = http_backend(&repo.served);
    let base = format!("http://127.0.0.1:{port}");
    check_transport(&base, &repo);

    // A commit already fetched checks out with the server gone.
    let cache = tempfile::tempdir().unwrap();
    let g = Git::new(cache.path()).with_timeout(Duration::from_secs(60));
    let r = parse(&format!("{base}/repo.git#main"));
    g.checkout(&r, &repo.main, tempfile::tempdir().unwrap().path(), false)
        .unwrap();
    drop(srv);
    let out = tempfile::tempdir().unwrap();
    g.checkout(&r, &repo.main, out.path(), false).unwrap();
    assert_eq!(read(&out.path().join("README")), "one\n");

    // The server is gone: resolving fails with git's reason, quickly, and names the remote.
    let t = Instant::now();
    let err = g.resolve(&r).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    if skip() {
        return;
    }
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let g = Git::new(cache.path()).with_timeout(Duration::from_secs(2));
    let t = Instant::now();
    let err = g
        .resolve(&parse(&format!("http://127.0.0.1:{port}/r.git")))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn credentials_never_printed() {
    if skip() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let g = Git::new(cache.path()).with_timeout(Duration::from_secs(20));
    // Nothing listens on port 1.
    let err = g
        .resolve(&parse("http://user:s3cr3t@127.0.0.1:1/r.git#main"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("s3cr3t"), "{msg}");
    assert!(msg.contains("user:xxxxx@127.0.0.1:1"), "{msg}");
}

#[test]
fn ssh_needs_an_agent() {
    let cache = tempfile::tempdir().unwrap();
    let g = Git::new(cache.path());
    let err = g
        .resolve(&parse("git@127.0.0.1:repo.git#main"))
        .unwrap_err();
    assert!(matches!(err, Error::NoSshAgent { .. }), "{err}");
    assert!(err.to_string().contains("--ssh default"), "{err}");
}
