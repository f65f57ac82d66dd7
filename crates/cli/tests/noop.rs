//! The front's no-op answers (crate `rbuild-noop`, `src/front.rs`): a rebuild that changes
//! nothing is answered without the engine, with the engine's own output; any change to what the
//! build read — one input at a time, as the cache mutation table — goes to the engine.
//!
//! "Answered by the front" is observed from outside: the engine always writes to the store's
//! database (its lease), the front never opens it.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const DOCKERFILE: &str = r#"FROM busybox:latest AS tools
RUN echo tool > /tool

FROM busybox:latest
ARG VERSION=1
ENV MODE=prod
WORKDIR /app
COPY app/ /app/
RUN echo "$VERSION $MODE" > /app/version
USER nobody
RUN <<EOS
id > /tmp/id
EOS
COPY --from=tools /tool /tool
"#;

/// Size and mtime of the store's database files: unchanged when the engine did not run.
fn db_state(root: &Path) -> Vec<(u64, i64, i64)> {
    ["meta.db", "meta.db-wal"]
        .iter()
        .map(|f| {
            std::fs::metadata(root.join(f))
                .map(|m| (m.size(), m.mtime(), m.mtime_nsec()))
                .unwrap_or_default()
        })
        .collect()
}

/// `DONE 0.3s` of the context load depends on the clock.
fn normalize(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| match l.split_once(" DONE ") {
            Some((n, _)) => format!("{n} DONE"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Fixture {
    env: Env,
    ctx: PathBuf,
    /// Extra environment for the builds.
    vars: std::sync::Mutex<Vec<(String, String)>>,
}

impl Fixture {
    fn new() -> Fixture {
        let env = Env::with_busybox();
        let ctx = env.context(
            "ctx",
            &[
                ("Dockerfile", DOCKERFILE),
                ("app/main.go", "package main\n"),
                ("app/util.go", "package main // util\n"),
                ("README.md", "not copied\n"),
                (".dockerignore", "README.md\n"),
            ],
        );
        Fixture {
            env,
            ctx,
            vars: Default::default(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.ctx.join(rel)
    }

    fn run(&self, extra: &[&str], engine_only: bool) -> Output {
        let mut c = self.env.cmd();
        c.args(["build", "--progress=plain", "-t", "nooptest:latest"]);
        c.args(extra).arg(&self.ctx);
        c.envs(self.vars.lock().unwrap().iter().cloned());
        if engine_only {
            c.env("RBUILD_NOOP_CHECK", "0");
        }
        let out = c.output().expect("running rbuild");
        assert!(
            out.status.success(),
            "build failed: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// Build; true when the front answered (the database was not touched).
    fn build(&self, extra: &[&str]) -> (bool, Output) {
        let before = db_state(&self.env.root);
        let out = self.run(extra, false);
        (db_state(&self.env.root) == before, out)
    }

    /// The front answers now, with what the engine prints for the same no-op.
    fn assert_answered(&self, extra: &[&str], what: &str) {
        let (front, out) = self.build(extra);
        assert!(front, "{what}: an unchanged rebuild went to the engine");
        let engine = self.run(extra, true);
        assert_eq!(stdout(&out), stdout(&engine), "{what}: image id");
        assert_eq!(
            normalize(&stderr(&out)),
            normalize(&stderr(&engine)),
            "{what}: progress"
        );
        assert!(
            !stderr(&out).contains("CACHE MISS"),
            "{what}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn front_answers_no_op_rebuilds_as_the_engine_would() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    let (front, _) = f.build(&[]);
    assert!(!front, "a first build cannot be answered");
    f.assert_answered(&[], "no-op");
    // Quiet: the id alone.
    let (front, out) = f.build(&["-q"]);
    assert!(!front, "another request (-q) is another key");
    let (front, q) = f.build(&["-q"]);
    assert!(front);
    assert_eq!(stdout(&q), stdout(&out));
    assert_eq!(stderr(&q), "");
    // --iidfile and --metadata-file: the front writes what the engine writes.
    let dir = f.env.path("files");
    std::fs::create_dir_all(&dir).unwrap();
    let (id, meta) = (dir.join("id"), dir.join("meta.json"));
    let owned = [
        "--iidfile".to_string(),
        id.display().to_string(),
        format!("--metadata-file={}", meta.display()),
    ];
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    assert!(!f.build(&args).0, "a new request");
    std::fs::remove_file(&id).unwrap();
    std::fs::remove_file(&meta).unwrap();
    assert!(
        f.build(&args).0,
        "the front answers with --iidfile and --metadata-file"
    );
    let front_id = std::fs::read_to_string(&id).unwrap();
    let front_meta = std::fs::read(&meta).unwrap();
    let engine_out = f.run(&args, true);
    assert_eq!(front_id, stdout(&engine_out).trim());
    assert_eq!(std::fs::read_to_string(&id).unwrap(), front_id);
    assert_eq!(std::fs::read(&meta).unwrap(), front_meta);
    let m: serde_json::Value = serde_json::from_slice(&front_meta).unwrap();
    assert_eq!(m["image.name"], "nooptest:latest");
    assert!(m["containerimage.digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // `rbuild -t … CTX` (an implicit `build`): the front knows no subcommand, so these are
    // other arguments, another key; answered from its second run on.
    let implicit = || {
        let before = db_state(&f.env.root);
        let o = f
            .env
            .cmd()
            .args(["-t", "nooptest:latest", "--progress", "plain"])
            .arg(&f.ctx)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        (db_state(&f.env.root) == before, o)
    };
    assert!(!implicit().0);
    let (front, o) = implicit();
    assert!(front, "the implicit build's second run is answered");
    assert_eq!(stdout(&o), stdout(&q));
}

type Change = fn(&Fixture);

#[test]
fn every_change_goes_to_the_engine() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    f.build(&[]);
    let changes: &[(&str, &[&str], Change)] = &[
        ("file content", &[], |f| {
            std::fs::write(f.p("app/main.go"), "package main // 2\n").unwrap()
        }),
        ("file mode", &[], |f| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.p("app/main.go"), std::fs::Permissions::from_mode(0o600))
                .unwrap()
        }),
        ("new file", &[], |f| {
            std::fs::write(f.p("app/new.go"), "x").unwrap()
        }),
        ("deleted file", &[], |f| {
            std::fs::remove_file(f.p("app/new.go")).unwrap()
        }),
        ("renamed file", &[], |f| {
            std::fs::rename(f.p("app/util.go"), f.p("app/util2.go")).unwrap()
        }),
        ("mtime alone", &[], |f| {
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
            std::fs::File::options()
                .append(true)
                .open(f.p("app/main.go"))
                .unwrap()
                .set_modified(t)
                .unwrap()
        }),
        (".dockerignore not affecting the copy", &[], |f| {
            std::fs::write(f.p(".dockerignore"), "README.md\n*.tmp\n").unwrap()
        }),
        (".dockerignore affecting the copy", &[], |f| {
            std::fs::write(f.p(".dockerignore"), "README.md\napp/util2.go\n").unwrap()
        }),
        ("Dockerfile.dockerignore appears", &[], |f| {
            std::fs::write(f.p("Dockerfile.dockerignore"), "README.md\n").unwrap()
        }),
        ("declared ARG value", &["--build-arg", "VERSION=2"], |_| {}),
        (
            "undeclared build arg",
            &["--build-arg", "VERSION=2", "--build-arg", "NOPE=1"],
            |_| {},
        ),
        ("ENV", &[], |f| edit(f, "ENV MODE=prod", "ENV MODE=dev")),
        ("WORKDIR", &[], |f| edit(f, "WORKDIR /app", "WORKDIR /app/")),
        ("USER", &[], |f| edit(f, "USER nobody", "USER 65534")),
        ("heredoc body", &[], |f| {
            edit(f, "id > /tmp/id", "id > /tmp/id2")
        }),
        ("instruction text", &[], |f| {
            edit(f, "RUN echo tool > /tool", "RUN echo tool  > /tool")
        }),
        ("Dockerfile whitespace only", &[], |f| {
            edit(f, "ENV MODE=dev", "ENV MODE=dev ")
        }),
        ("base image re-tagged", &[], |f| {
            // busybox:latest now names another image (one built on it).
            let ctx = f.env.context(
                "base2",
                &[("Dockerfile", "FROM busybox:latest\nRUN echo 2 > /base2\n")],
            );
            let o = f
                .env
                .cmd()
                .args(["build", "-q", "-t", "base2"])
                .arg(&ctx)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let o = f.env.rbuild(&["tag", "base2", "busybox:latest"]);
            assert!(o.status.success(), "{}", stderr(&o));
        }),
        ("output tag moved", &[], |f| {
            let o = f.env.rbuild(&["tag", "busybox:latest", "nooptest:latest"]);
            assert!(o.status.success(), "{}", stderr(&o));
        }),
        ("output tag removed", &[], |f| {
            let o = f.env.rbuild(&["rmi", "nooptest:latest"]);
            assert!(o.status.success(), "{}", stderr(&o));
        }),
        ("prune", &[], |f| {
            let o = f.env.rbuild(&["prune", "-f"]);
            assert!(o.status.success(), "{}", stderr(&o));
            // The void records are gone, not left to pile up.
            let records = std::fs::read_dir(f.env.root.join("noop"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "json")
                })
                .count();
            assert_eq!(records, 0);
        }),
        ("a variable the engine read", &[], |f| {
            f.vars
                .lock()
                .unwrap()
                .push(("RBUILD_LOG".into(), "rbuild=warn".into()))
        }),
        (
            "a --no-cache build of another tag replaced the records",
            &[],
            |f| {
                // A second later: the re-run steps' records differ (their creation time, in
                // seconds), so they replace those this request's answer stands on.
                std::thread::sleep(std::time::Duration::from_millis(1100));
                let o = f
                    .env
                    .cmd()
                    .args(["build", "-q", "--no-cache", "-t", "other"])
                    .arg(&f.ctx)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", stderr(&o));
            },
        ),
    ];
    let mut extra_args: &[&str] = &[];
    for (what, extra, change) in changes {
        // Answered before the change…
        f.assert_answered(extra_args, &format!("before {what}"));
        change(&f);
        extra_args = extra;
        // …not after it: the engine decides (and records its answer for the next time).
        let (front, out) = f.build(extra_args);
        assert!(!front, "{what}: answered by the front:\n{}", stderr(&out));
    }
    f.assert_answered(extra_args, "at the end");
}

fn edit(f: &Fixture, from: &str, to: &str) {
    let p = f.p("Dockerfile");
    let s = std::fs::read_to_string(&p).unwrap();
    assert!(s.contains(from), "{from:?} not in the Dockerfile");
    std::fs::write(&p, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn prune_counts_front_answers_as_uses() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    f.build(&[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(f.build(&[]).0, "the front answers");
    // Records last used by the engine 3 s ago, by the front just now: kept.
    let o = f
        .env
        .rbuild(&["prune", "-f", "--all", "--filter", "until=2s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = f.run(&[], true);
    assert!(
        !stderr(&out).contains("CACHE MISS"),
        "prune removed records the front had used:\n{}",
        stderr(&out)
    );
}

#[test]
fn the_front_without_its_engine_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let front = dir.path().join("rbuild");
    std::fs::copy(rbuild_bin(), &front).unwrap();
    let o = std::process::Command::new(&front)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("cannot run the build engine") && err.contains("rbuild-engine"),
        "{err}"
    );
}

/// The lines a terminal keeps from the live view (escape sequences and spinner frames dropped,
/// times blanked): one per step, then the summary.
fn final_frame(shown: &str) -> Vec<String> {
    let esc = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    let time = regex::Regex::new(r"\d+\.\ds").unwrap();
    let clean = esc.replace_all(shown, "");
    clean
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| {
            l.starts_with("CACHED ") || l.starts_with("DONE ") || l.starts_with("Finished ")
        })
        .map(|l| time.replace_all(l, "T").to_string())
        .collect()
}

#[test]
fn front_shows_the_live_view_s_last_frame_on_a_terminal() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    f.build(&[]);
    let tty = |engine_only: bool| {
        let mut c = f.env.cmd();
        c.args(["build", "-t", "nooptest:latest"]).arg(&f.ctx);
        if engine_only {
            c.env("RBUILD_NOOP_CHECK", "0");
        }
        let before = db_state(&f.env.root);
        let (st, shown) = run_on_pty(c, &[]);
        assert!(st.success(), "{shown}");
        (db_state(&f.env.root) == before, final_frame(&shown))
    };
    // The first terminal build is another request (the live view): the engine answers it.
    let (front, engine_frame) = tty(false);
    assert!(!front);
    let (front, frame) = tty(false);
    assert!(front, "the front did not answer on a terminal");
    let (_, engine_again) = tty(true);
    // The engine's output also has the live frames it drew before; what stays on the terminal
    // is what it prints last, after clearing them.
    let last = |v: &[String]| v[v.len().saturating_sub(frame.len())..].to_vec();
    assert_eq!(frame, last(&engine_frame));
    assert_eq!(frame, last(&engine_again));
    assert_eq!(frame.len(), 9, "{frame:?}");
    assert!(
        frame[0].starts_with("DONE [internal] load build context"),
        "{frame:?}"
    );
    assert!(
        frame[8].starts_with("Finished in T (7 cached, 1 run) image sha256:"),
        "{frame:?}"
    );
}

/// The front knows no flag: a flag it was never taught is part of the key like any other
/// argument, and the engine's answer to it is replayed.
#[test]
fn a_flag_the_front_was_never_taught_needs_no_front_change() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    let (front, one) = f.build(&["--label", "team=a"]);
    assert!(!front, "a first build");
    f.assert_answered(&["--label", "team=a"], "--label");
    let (front, two) = f.build(&["--label", "team=b"]);
    assert!(!front, "another label value is another command");
    assert_ne!(stdout(&one), stdout(&two), "the label is in the image");
    f.assert_answered(&["--label", "team=b"], "--label, again");
    // team=b moved the tag team=a's record stands on: the engine answers (and tags again).
    assert!(!f.build(&["--label", "team=a"]).0, "the tag moved");
    f.assert_answered(&["--label", "team=a"], "--label, tagged back");
}

/// Every variable the engine reads is an input of the record, not only `RBUILD_*` ones: here a
/// secret's (`--secret id=tok,env=NOOP_TEST_TOKEN`), kept as a digest, not its value.
#[test]
fn any_variable_the_engine_read_reaches_the_engine_and_no_other_does() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    let secret = ["--secret", "id=tok,env=NOOP_TEST_TOKEN"];
    f.vars
        .lock()
        .unwrap()
        .push(("NOOP_TEST_TOKEN".into(), "hunter2-value".into()));
    assert!(!f.build(&secret).0);
    f.assert_answered(&secret, "with a secret from the environment");
    for e in std::fs::read_dir(f.env.root.join("noop")).unwrap() {
        let body = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!body.contains("hunter2-value"), "a record holds a secret");
    }
    f.vars.lock().unwrap()[0].1 = "another-value".into();
    let (front, _) = f.build(&secret);
    assert!(!front, "the secret's variable changed: the engine decides");
    f.assert_answered(&secret, "the new value recorded");
    // A variable the engine did not read for this answer (a fully cached build applies no
    // layer, so the layer limits are not looked at) leaves it standing, and the engine agrees.
    f.vars
        .lock()
        .unwrap()
        .push(("RBUILD_MAX_LAYER_DEPTH".into(), "200".into()));
    f.assert_answered(&secret, "a variable the engine did not read");
}
