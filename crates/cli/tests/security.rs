//! Issue 5: the sandbox holds. Each test keeps a host sentinel file and directory that must be
//! unchanged afterwards, and builds real images — as root, and again rootless (issue 16: each
//! `_rootless` twin runs the same body as an ordinary user with a subordinate id range).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A host file and directory that no build may touch.
struct Sentinel {
    dir: PathBuf,
    before: String,
}

impl Sentinel {
    fn new(env: &Env) -> Sentinel {
        let dir = env.path("host-sentinel");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("file"), "sentinel").unwrap();
        std::fs::write(dir.join("sub/inner"), "inner").unwrap();
        if let Some((u, g)) = env.user {
            // Rootless: the sentinel is the user's own, what an escape could really write.
            for p in [
                dir.clone(),
                dir.join("sub"),
                dir.join("file"),
                dir.join("sub/inner"),
            ] {
                std::os::unix::fs::chown(&p, Some(u), Some(g)).unwrap();
            }
        }
        let before = snapshot(&dir);
        Sentinel { dir, before }
    }
    fn check(&self) {
        assert_eq!(
            snapshot(&self.dir),
            self.before,
            "the host sentinel changed"
        );
    }
}

/// Paths, kinds and contents under `dir`, sorted.
fn snapshot(dir: &Path) -> String {
    let mut out = Vec::new();
    fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            out.push(format!("{}: missing", d.display()));
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push(format!("{rel}/"));
                walk(&p, base, out);
            } else {
                let c = std::fs::read(&p).unwrap_or_default();
                out.push(format!("{rel}={}", String::from_utf8_lossy(&c)));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out.join("\n")
}

fn build(env: &Env, name: &str, df: &str, extra: &[&str]) -> (bool, String) {
    let ctx = env.context(name, &[("Dockerfile", df), ("a.txt", "A")]);
    let mut a = vec!["build", "--progress=plain"];
    a.extend_from_slice(extra);
    a.push(ctx.to_str().unwrap());
    let out = env.rbuild(&a);
    (out.status.success(), stderr(&out))
}

fn val(log: &str, key: &str) -> String {
    // Output lines of plain progress: `#N <seconds> KEY=value`.
    let pat = format!("{key}=");
    log.lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ' ');
            let (n, t, rest) = (it.next()?, it.next()?, it.next()?);
            (n.starts_with('#') && t.parse::<f64>().is_ok() && rest.starts_with(&pat))
                .then(|| rest[pat.len()..].trim_end().to_string())
        })
        .unwrap_or_else(|| panic!("no {key}= in:\n{log}"))
}

/// No leftover mounts of the store and no process whose command line has `marker`.
fn assert_clean(env: &Env, marker: &str) {
    let mnt = env.root.join("mnt");
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "mountpoints left in {}: {left:?}",
        mnt.display()
    );
    assert!(
        !mounts().contains(env.root.to_str().unwrap()),
        "a store mount is visible on the host"
    );
    for _ in 0..50 {
        if procs_with(marker).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("processes left running: {:?}", procs_with(marker));
}

fn procs_with(marker: &str) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let s = String::from_utf8_lossy(&c).replace('\0', " ");
            if s.contains(marker) {
                v.push(format!("{}: {s}", e.file_name().to_string_lossy()));
            }
        }
    }
    v
}

#[test]
fn capabilities_are_dockers_default_set() {
    if !require_root(&[]) {
        return;
    }
    capabilities_are_dockers_default_set_in(&Env::with_busybox());
}

#[test]
fn capabilities_are_dockers_default_set_rootless() {
    if !require_root(&[]) {
        return;
    }
    let Some(env) = Env::rootless_with_busybox() else {
        return;
    };
    capabilities_are_dockers_default_set_in(&env);
}

fn capabilities_are_dockers_default_set_in(env: &Env) {
    let s = Sentinel::new(env);
    let (ok, log) = build(
        env,
        "caps",
        "FROM busybox\nRUN echo \"BND=$(grep CapBnd /proc/self/status | cut -f2)\"; echo \"EFF=$(grep CapEff /proc/self/status | cut -f2)\"; echo \"NNP=$(grep NoNewPrivs /proc/self/status | cut -f2)\"\n",
        &[],
    );
    assert!(ok, "{log}");
    assert_eq!(val(&log, "BND"), "00000000a80425fb");
    assert_eq!(val(&log, "EFF"), "00000000a80425fb");
    assert_eq!(val(&log, "NNP"), "1");
    s.check();
}

#[test]
fn seccomp_filter_is_on_and_insecure_turns_it_off() {
    if !require_root(&[]) {
        return;
    }
    seccomp_filter_is_on_and_insecure_turns_it_off_in(&Env::with_busybox());
}

#[test]
fn seccomp_filter_is_on_and_insecure_turns_it_off_rootless() {
    if !require_root(&[]) {
        return;
    }
    let Some(env) = Env::rootless_with_busybox() else {
        return;
    };
    seccomp_filter_is_on_and_insecure_turns_it_off_in(&env);
}

fn seccomp_filter_is_on_and_insecure_turns_it_off_in(env: &Env) {
    let s = Sentinel::new(env);
    // Docker's default profile: user namespaces and mounts refused (EPERM from the
    // filter: `unshare -U` needs no capability, so only the filter stops it).
    let (ok, log) = build(
        env,
        "seccomp",
        "FROM busybox\nRUN echo \"SECCOMP=$(grep '^Seccomp:' /proc/self/status | cut -f2)\"; \
         unshare -U true 2>/dev/null; echo \"UNSHARE=$?\"; \
         mkdir -p /mnt; mount -t tmpfs x /mnt 2>/dev/null; echo \"MOUNT=$?\"\n",
        &[],
    );
    assert!(ok, "{log}");
    assert_eq!(val(&log, "SECCOMP"), "2");
    assert_ne!(val(&log, "UNSHARE"), "0");
    assert_ne!(val(&log, "MOUNT"), "0");
    // --security=insecure: no filter (and every capability), as BuildKit's.
    let (ok, log) = build(
        env,
        "insecure",
        "FROM busybox\nRUN --security=insecure echo \"SECCOMP=$(grep '^Seccomp:' /proc/self/status | cut -f2)\"; \
         unshare -U true; echo \"UNSHARE=$?\"\n",
        &["--allow", "security.insecure"],
    );
    assert!(ok, "{log}");
    assert_eq!(val(&log, "SECCOMP"), "0");
    assert_eq!(val(&log, "UNSHARE"), "0");
    s.check();
}

#[test]
fn only_stdio_reaches_the_step() {
    if !require_root(&[]) {
        return;
    }
    only_stdio_reaches_the_step_in(&Env::with_busybox());
}

#[test]
fn only_stdio_reaches_the_step_rootless() {
    if !require_root(&[]) {
        return;
    }
    let Some(env) = Env::rootless_with_busybox() else {
        return;
    };
    only_stdio_reaches_the_step_in(&env);
}

fn only_stdio_reaches_the_step_in(env: &Env) {
    let s = Sentinel::new(env);
    // `ls` itself holds one fd on the directory it lists; every other fd must be 0-2.
    let (ok, log) = build(
        env,
        "fds",
        "FROM busybox\nRUN echo \"FDS=$(ls -l /proc/self/fd | awk 'NR>1{print $9\"->\"$11}' | tr '\\n' ' ')\"\n",
        &[],
    );
    assert!(ok, "{log}");
    let fds = val(&log, "FDS");
    // At most one fd above 2: the directory `ls` itself is reading.
    let extra: Vec<&str> = fds
        .split_whitespace()
        .filter(|e| e.split_once("->").unwrap().0.parse::<u32>().unwrap() > 2)
        .collect();
    assert!(extra.len() <= 1, "non-stdio fds reached the step: {fds}");
    for e in extra {
        let target = e.split_once("->").unwrap().1;
        assert!(
            target.is_empty() || target.starts_with("/proc/"),
            "a non-stdio fd reached the step: {e} (all: {fds})"
        );
    }
    assert!(fds.split_whitespace().count() <= 4, "{fds}");
    s.check();
}

#[test]
fn workdir_through_proc_self_fd_cannot_reach_the_host() {
    if !require_root(&[]) {
        return;
    }
    workdir_through_proc_self_fd_cannot_reach_the_host_in(&Env::with_busybox());
}

#[test]
fn workdir_through_proc_self_fd_cannot_reach_the_host_rootless() {
    if !require_root(&[]) {
        return;
    }
    let Some(env) = Env::rootless_with_busybox() else {
        return;
    };
    workdir_through_proc_self_fd_cannot_reach_the_host_in(&env);
}

fn workdir_through_proc_self_fd_cannot_reach_the_host_in(env: &Env) {
    let s = Sentinel::new(env);
    for n in 3..9 {
        let marker = format!("rbuild-escape-{}-{n}", std::process::id());
        let df = format!(
            "FROM busybox\nWORKDIR /proc/self/fd/{n}\nRUN touch ../../../../../../{marker} {marker}; echo \"CWD=$(pwd -P)\"\n"
        );
        let _ = build(env, &format!("fd{n}"), &df, &[]);
        assert!(
            !Path::new("/").join(&marker).exists(),
            "escaped to the host via fd {n}"
        );
        assert!(!s.dir.join(&marker).exists());
    }
    // The same from a base image's config.
    let (ok, log) = build(
        env,
        "badbase",
        "FROM busybox\nWORKDIR /proc/self/fd/5\n",
        &["-t", "badbase:1"],
    );
    assert!(ok, "{log}");
    let marker = format!("rbuild-escape-base-{}", std::process::id());
    let df = format!("FROM badbase:1\nRUN touch ../../../../../../{marker} {marker}; pwd -P\n");
    let _ = build(env, "frombase", &df, &[]);
    assert!(
        !Path::new("/").join(&marker).exists(),
        "escaped via the base image's WorkingDir"
    );
    s.check();
    assert_clean(env, &marker);
}

#[test]
fn proc_1_exe_is_not_writable_or_openable() {
    if !require_root(&["sha256sum"]) {
        return;
    }
    proc_1_exe_is_not_writable_or_openable_in(&Env::with_busybox());
}

#[test]
fn proc_1_exe_is_not_writable_or_openable_rootless() {
    if !require_root(&["sha256sum"]) {
        return;
    }
    let Some(env) = Env::rootless_with_busybox() else {
        return;
    };
    proc_1_exe_is_not_writable_or_openable_in(&env);
}

fn proc_1_exe_is_not_writable_or_openable_in(env: &Env) {
    let s = Sentinel::new(env);
    let sum = |p: &str| run_ok(Command::new("sha256sum").arg(p));
    let before = sum(rbuild_bin());
    let (ok, log) = build(
        env,
        "exe",
        "FROM busybox\nRUN if echo x >> /proc/1/exe 2>/dev/null; then echo W=yes; else echo W=no; fi; if cat /proc/1/exe > /dev/null 2>&1; then echo R=yes; else echo R=no; fi; if echo x > /proc/self/exe 2>/dev/null; then echo S=yes; else echo S=no; fi\n",
        &[],
    );
    assert!(ok, "{log}");
    assert_eq!(val(&log, "W"), "no");
    assert_eq!(val(&log, "R"), "no");
    assert_eq!(val(&log, "S"), "no");
    assert_eq!(sum(rbuild_bin()), before, "the rbuild binary changed");
    s.check();
}

#[test]
fn mount_ids_sources_and_targets_stay_inside() {
    if !require_root(&[]) {
        return;
    }
    mount_ids_sources_and_targets_stay_inside_in(&Env::with_busybox());
}

#[test]
fn mount_ids_sources_and_targets_stay_inside_rootless() {
    if !require_root(&[]) {
        return;
    }
    let Some(env) = Env::rootless_with_busybox() else {
        return;
    };
    mount_ids_sources_and_targets_stay_inside_in(&env);
}

fn mount_ids_sources_and_targets_stay_inside_in(env: &Env) {
    let s = Sentinel::new(env);
    let up = "../../../../../../../../..";
    let sd = s.dir.display().to_string();
    // A cache id with `..` is contained (it names a dir by hash).
    let df = format!(
        "FROM busybox\nRUN --mount=type=cache,id={up}{sd},target=/c touch /c/planted && ls /c > /dev/null\n"
    );
    let (ok, log) = build(env, "cacheid", &df, &[]);
    assert!(ok, "{log}");
    s.check();
    // A bind source with `..` resolves inside the context: not found, or contained.
    let df = format!("FROM busybox\nRUN --mount=type=bind,source={up}{sd},target=/b,rw touch /b/planted; ls /b\n");
    let _ = build(env, "bindsrc", &df, &[]);
    s.check();
    // A target with `..`, and a target through a symlink to the host path, stay in the rootfs;
    // removing the mountpoints afterwards does not delete on the host.
    let df = format!(
        "FROM busybox\nRUN mkdir -p /x && ln -s {sd} /viahost\nRUN --mount=type=tmpfs,target=/viahost/sub touch /viahost/sub/planted\nRUN --mount=type=tmpfs,target=/x/{up}{sd}/file true\nRUN --mount=type=bind,source=a.txt,target=/viahost/newfile cat /viahost/newfile\n"
    );
    let (ok, log) = build(env, "targets", &df, &[]);
    let _ = (ok, log);
    s.check();
    assert_clean(env, "rbuild-nothing-to-find");
}

#[test]
fn failed_and_killed_steps_leave_nothing_behind() {
    if !require_root(&[]) {
        return;
    }
    failed_and_killed_steps_leave_nothing_behind_in(&Env::with_busybox());
}

#[test]
fn failed_and_killed_steps_leave_nothing_behind_rootless() {
    if !require_root(&[]) {
        return;
    }
    let Some(env) = Env::rootless_with_busybox() else {
        return;
    };
    failed_and_killed_steps_leave_nothing_behind_in(&env);
}

fn failed_and_killed_steps_leave_nothing_behind_in(env: &Env) {
    let s = Sentinel::new(env);
    let before = mounts().lines().count();
    // A failing step that leaves a background process.
    let marker = format!("1{}7", std::process::id());
    let df = format!(
        "FROM busybox\nRUN --mount=type=tmpfs,target=/t --mount=type=bind,source=a.txt,target=/a (sleep {marker} &) ; exit 3\n"
    );
    let (ok, log) = build(env, "fail", &df, &[]);
    assert!(!ok);
    assert!(log.contains("exit code: 3"), "{log}");
    assert_clean(env, &format!("sleep {marker}"));

    // A build killed (SIGKILL) while its step runs.
    let marker2 = format!("2{}9", std::process::id());
    let ctx = env.context(
        "killed",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nRUN (sleep {marker2} &); sleep {marker2}\n"),
        )],
    );
    let mut child = env
        .cmd()
        .args(["build", "--progress=plain"])
        .arg(&ctx)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if !procs_with(&format!("sleep {marker2}")).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !procs_with(&format!("sleep {marker2}")).is_empty(),
        "the step never started"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Processes die with rbuild; mounts lived in its private namespace.
    for _ in 0..50 {
        if procs_with(&format!("sleep {marker2}")).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        procs_with(&format!("sleep {marker2}")).is_empty(),
        "{:?}",
        procs_with(&format!("sleep {marker2}"))
    );
    assert!(!mounts().contains(env.root.to_str().unwrap()));
    assert_eq!(mounts().lines().count(), before, "host mount table changed");
    s.check();
}
