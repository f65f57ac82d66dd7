//! Issue 16: rootless builds. An ordinary user (made here with `useradd`, with and without a
//! subordinate id range) builds, runs and pushes with no privilege on the host; the images equal
//! root's with SOURCE_DATE_EPOCH. Needs root to create the users; skips, saying why, otherwise or
//! where user namespaces cannot be made.

mod common;
mod common_registry;
use common::*;
use common_registry::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The tests change users and a sysctl: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const WITH_RANGE: &str = "rbuild-rl";
const SINGLE_ID: &str = "rbuild-rl1";

fn uid_of(user: &str) -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg(user).output().ok()?;
    let gid = Command::new("id").arg("-g").arg(user).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some((
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()?,
        String::from_utf8_lossy(&gid.stdout).trim().parse().ok()?,
    ))
}

/// Make `user` (idempotent), with or without a subordinate id range.
fn ensure_user(user: &str, range: Option<&str>) -> (u32, u32) {
    if uid_of(user).is_none() {
        run_ok(Command::new("useradd").args(["-m", "-s", "/bin/sh", user]));
    }
    // Remove whatever range it has, then add the wanted one.
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{user}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(f, kept).unwrap();
    }
    if let Some(r) = range {
        run_ok(Command::new("usermod").args(["--add-subuids", r, "--add-subgids", r, user]));
    }
    uid_of(user).unwrap()
}

fn skip() -> bool {
    if !require_root(&["setpriv", "useradd", "newuidmap"]) {
        return true;
    }
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        eprintln!("SKIP: user namespaces are disabled here (user.max_user_namespaces=0)");
        return true;
    }
    false
}

/// A scratch dir the user owns (the test's temp dirs are root's, mode 0700).
fn user_dir(env: &Env, name: &str, ids: (u32, u32)) -> PathBuf {
    let d = env.path(name);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(ids.0), Some(ids.1)).unwrap();
    // The path down to it must be traversable by the user.
    std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn chown_tree(p: &Path, ids: (u32, u32)) {
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", ids.0, ids.1))
            .arg(p),
    );
}

/// `rbuild args…` as `ids`, with a store under `home`.
fn as_user(ids: (u32, u32), home: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", ids.0))
        .arg(format!("--regid={}", ids.1))
        .arg("--clear-groups")
        .arg("--")
        .arg(rbuild_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("RBUILD_NOOP_CHECK", "0")
        .current_dir(home);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().expect("running rbuild as the test user")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

const DOCKERFILE: &str = "FROM busybox:latest AS base
RUN echo base > /base && mkdir -p /home/app && chown 1000:1000 /home/app && touch /home/app/mine && chown 1000:1000 /home/app/mine
USER 1000
RUN --mount=type=cache,target=/cache,uid=1000 echo cached >> /cache/log && wc -l < /cache/log > /home/app/count
USER root
RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /secret-len

FROM busybox:latest
COPY --from=base /home/app /home/app
COPY --from=base /base /secret-len /
COPY app.txt /app.txt
RUN stat -c \"%u %g %n\" /home/app /home/app/mine > /listing
CMD [\"cat\", \"/app.txt\"]
";

#[test]
fn rootless_build_run_push_equal_root() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip() || !have_registry() {
        return;
    }
    let ids = ensure_user(WITH_RANGE, Some("300000-365535"));
    let env = Env::with_busybox();
    let home = user_dir(&env, "home", ids);
    let ctx = env.context(
        "home/ctx",
        &[("Dockerfile", DOCKERFILE), ("app.txt", "hello rootless\n")],
    );
    std::fs::write(home.join("tok"), "s3cr3t-token").unwrap();
    chown_tree(&home, ids);
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];

    // Root's image, in root's store.
    let secret = format!("id=tok,src={}", home.join("tok").display());
    let (root_id, _) = {
        let mut c = env.cmd();
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        let o = c
            .args([
                "build",
                "--progress=plain",
                "-t",
                "app",
                "--secret",
                &secret,
            ])
            .arg(&ctx)
            .output()
            .unwrap();
        (ok(&o), ())
    };

    // The user's: load the base into its own store (under XDG_DATA_HOME), build, compare.
    let o = as_user(
        ids,
        &home,
        &["load", busybox_layout().to_str().unwrap()],
        &[],
    );
    ok(&o);
    let o = as_user(
        ids,
        &home,
        &[
            "build",
            "--progress=plain",
            "-t",
            "app",
            "--secret",
            &secret,
            ctx.to_str().unwrap(),
        ],
        &sde,
    );
    let user_id = ok(&o);
    assert_eq!(
        user_id.trim(),
        root_id.trim(),
        "rootless and root images differ:\n{}",
        stderr(&o)
    );
    assert!(
        home.join("data/rbuild/blobs").is_dir(),
        "the store is under XDG_DATA_HOME"
    );

    // In-image ownership is kept: 1000 inside is 1000 in the layer.
    let o = as_user(ids, &home, &["run", "--rm", "app", "cat", "/listing"], &[]);
    let listing = ok(&o);
    assert!(
        listing.contains(" 1000 ") && listing.contains("mine"),
        "{listing}"
    );
    let o = as_user(ids, &home, &["run", "--rm", "app"], &[]);
    assert_eq!(ok(&o), "hello rootless\n");
    // The secret was read (12 bytes) and is in no layer.
    let o = as_user(
        ids,
        &home,
        &["run", "--rm", "app", "cat", "/secret-len"],
        &[],
    );
    assert_eq!(ok(&o).trim(), "12");
    // On the host, files of uid 1000 inside belong to the range (300000 + 999).
    let owners = Command::new("find")
        .arg(home.join("data/rbuild/snapshots"))
        .args(["-name", "mine", "-printf", "%U\n"])
        .output()
        .unwrap();
    let owners = String::from_utf8_lossy(&owners.stdout);
    assert!(owners.lines().any(|u| u == "300999"), "{owners}");

    // Push to the real registry as the user.
    let reg = Registry::start(None);
    let dest = format!("{}/rootless/app:1", reg.host);
    let o = as_user(
        ids,
        &home,
        &["--insecure-registry", &reg.host, "push", "app", &dest],
        &[],
    );
    ok(&o);
    if which("skopeo").is_some() {
        let raw = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--config"])
                .arg(format!("docker://{dest}")),
        );
        assert!(raw.contains("/app.txt"), "{raw}");
    }
}

#[test]
fn single_id_mapping_and_clear_errors() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip() {
        return;
    }
    let ids = ensure_user(SINGLE_ID, None);
    let env = Env::with_busybox();
    let home = user_dir(&env, "home1", ids);
    let plain = env.context(
        "home1/plain",
        &[
            (
                "Dockerfile",
                "FROM busybox:latest\nRUN echo ok > /ok\nCOPY f /f\n",
            ),
            ("f", "x"),
        ],
    );
    let chown = env.context(
        "home1/chown",
        &[(
            "Dockerfile",
            "FROM busybox:latest\nRUN touch /x && chown 1000:1000 /x\n",
        )],
    );
    chown_tree(&home, ids);
    ok(&as_user(
        ids,
        &home,
        &["load", busybox_layout().to_str().unwrap()],
        &[],
    ));

    // A build that needs only the user's own id works.
    ok(&as_user(
        ids,
        &home,
        &["build", "-q", plain.to_str().unwrap()],
        &[],
    ));

    // A chown to another id fails, saying how to add a range.
    let o = as_user(
        ids,
        &home,
        &["build", "--progress=plain", chown.to_str().unwrap()],
        &[],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("usermod --add-subuids"), "{err}");

    // A read-only store (a read-only bind mount: chmod would not stop root in the user
    // namespace, who owns the files): a clear error naming it.
    let ro = home.join("data/rbuild");
    run_ok(Command::new("mount").arg("--bind").arg(&ro).arg(&ro));
    run_ok(
        Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro),
    );
    let o = as_user(ids, &home, &["build", "-q", chown.to_str().unwrap()], &[]);
    run_ok(Command::new("umount").arg(&ro));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&ro.display().to_string()) && err.contains("Read-only"),
        "{err}"
    );
}

#[test]
fn no_user_namespaces_is_one_clear_line() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip() {
        return;
    }
    let path = "/proc/sys/user/max_user_namespaces";
    let before = std::fs::read_to_string(path).unwrap();
    if let Err(e) = std::fs::write(path, "0") {
        eprintln!("SKIP: cannot switch user namespaces off here ({path}: {e})");
        return;
    }
    let ids = ensure_user(SINGLE_ID, None);
    let env = Env::empty();
    let home = user_dir(&env, "home2", ids);
    let o = as_user(ids, &home, &["images"], &[]);
    std::fs::write(path, before.trim()).unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("cannot create a user namespace"), "{err}");
    assert!(err.contains("max_user_namespaces"), "{err}");
}

#[test]
fn info_and_limits_rootless() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if skip() {
        return;
    }
    let ids = ensure_user(WITH_RANGE, Some("300000-365535"));
    let env = Env::with_busybox();
    let home = user_dir(&env, "home3", ids);
    let ctx = env.context(
        "home3/ctx",
        &[("Dockerfile", "FROM busybox:latest\nRUN echo ran > /ran\n")],
    );
    chown_tree(&home, ids);

    // What the environment allows and what rbuild chose.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&as_user(ids, &home, &["info", "--json"], &[]))).unwrap();
    assert_eq!(info["rootless"], true, "{info}");
    assert_eq!(info["uid"], ids.0, "{info}");
    assert!(
        info["id_mapping"].as_str().unwrap().contains("1→300000"),
        "{info}"
    );
    assert_eq!(
        info["store"],
        home.join("data/rbuild").to_str().unwrap(),
        "{info}"
    );
    assert!(
        info["snapshotter"]
            .as_str()
            .unwrap()
            .starts_with("overlayfs"),
        "{info}"
    );
    let root_info: serde_json::Value =
        serde_json::from_str(&stdout(&env.rbuild(&["info", "--json"]))).unwrap();
    assert_eq!(root_info["rootless"], false, "{root_info}");

    // A limit that cannot be applied rootless is refused before any step runs.
    ok(&as_user(
        ids,
        &home,
        &["load", busybox_layout().to_str().unwrap()],
        &[],
    ));
    let v2_delegated = info["cgroup"].as_str().unwrap().contains("limits work");
    let o = as_user(
        ids,
        &home,
        &[
            "build",
            "--progress=plain",
            "--memory",
            "64m",
            ctx.to_str().unwrap(),
        ],
        &[],
    );
    if v2_delegated {
        ok(&o);
    } else {
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("cannot apply the memory limit rootless"),
            "{err}"
        );
        assert!(!err.contains("RUN echo ran"), "no step ran: {err}");
    }
}
