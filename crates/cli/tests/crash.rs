//! Crash tests (issue 8): rbuild killed at points chosen by the `RBUILD_CRASH_AT` hook (it calls
//! `abort()`, which ends the process as `kill -9` would: no destructor, no cleanup), by SIGKILL
//! while a RUN's process is alive, and by SIGKILL after a seeded random delay. After each crash:
//! no mount of the store on the host, no process of the build alive, no populated cgroup left,
//! `rbuild fsck` clean (or clean after `--repair`), and the next build succeeds without manual
//! cleanup, reusing the steps that completed.
//!
//! Seeds: 10 by default, 60 with `RBUILD_SLOW_TESTS=1`.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Pids whose command line contains `marker`.
fn procs_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(marker) {
                out.push(pid);
            }
        }
    }
    out
}

/// Populated cgroups under rbuild's parent cgroup (v2), if any.
fn populated_rbuild_cgroups() -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup/rbuild") else {
        return out;
    };
    for e in rd.flatten() {
        if !e.path().is_dir() {
            continue;
        }
        let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
        if !procs.trim().is_empty() {
            out.push(format!("{}: {}", e.path().display(), procs.trim()));
        }
    }
    out
}

/// Everything a crash must not leave behind; returns whether fsck needed --repair.
fn check_after_crash(env: &Env, marker: &str, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !procs_with(marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: processes of the killed build still run: {:?}",
            procs_with(marker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !mounts().contains(env.root.to_str().unwrap()),
        "{what}: a store path stays mounted on the host:\n{}",
        mounts()
    );
    // Our processes are gone, so no cgroup may hold one of them.
    let cg = populated_rbuild_cgroups();
    for c in &cg {
        for pid in c.split(": ").nth(1).unwrap_or("").split_whitespace() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmd).contains(marker),
                "{what}: cgroup still populated by the build: {c}"
            );
        }
    }
    let out = env.rbuild(&["fsck"]);
    if out.status.success() && stdout(&out).contains(": clean") {
        return false;
    }
    let fixed = env.rbuild(&["fsck", "--repair"]);
    assert!(
        fixed.status.success(),
        "{what}: fsck --repair failed:\n{}{}",
        stdout(&fixed),
        stderr(&fixed)
    );
    let again = env.rbuild(&["fsck"]);
    assert!(
        again.status.success() && stdout(&again).contains(": clean"),
        "{what}: not clean after --repair:\nbefore: {}\nafter: {}",
        stdout(&out),
        stdout(&again)
    );
    true
}

fn dockerfile(marker: &str) -> String {
    format!(
        "FROM busybox\nCOPY a.txt /a.txt\nRUN echo {marker} > /m && cat /a.txt > /b\nARG SEED=0\nRUN echo $SEED > /seed && sleep 0.3 # {marker}\nRUN cat /m /b /seed > /all\n"
    )
}

#[test]
fn crash_at_hook_points() {
    if !require_root(&[]) {
        return;
    }
    // (point, steps expected CACHED on the rebuild besides FROM)
    let points: &[(&str, usize)] = &[
        ("layer-apply", 0),
        ("blob-before-rename", 0),
        ("blob-after-rename", 0),
        ("copy", 0),
        ("run", 1),
        ("snapshot-commit", 0),
        ("cache-record", 0),
        ("cache-record:3", 2),
        ("export", 4),
        ("tag", 4),
    ];
    let mut repaired = 0;
    for (point, cached_after) in points {
        let env = Env::with_busybox();
        let marker = format!(
            "rbuild-crash-{}-{}",
            std::process::id(),
            point.replace(':', "-")
        );
        let ctx = env.context(
            "ctx",
            &[("Dockerfile", &dockerfile(&marker)), ("a.txt", "a\n")],
        );
        let oci = env.path("out.tar");
        let mut cmd = env.cmd();
        cmd.env("RBUILD_CRASH_AT", point)
            .args(["build", "--progress=plain", "-t", "app"]);
        // An -o without type=image names no image: the tag point needs the plain build.
        if *point != "tag" {
            cmd.arg("-o")
                .arg(format!("type=oci,dest={}", oci.display()));
        }
        let out = cmd.arg(ctx.to_str().unwrap()).output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{point}: the hook must abort the build:\n{}",
            stderr(&out)
        );
        if check_after_crash(&env, &marker, point) {
            repaired += 1;
        }
        let (_, err) = env.build_ok(&["-t", "app", ctx.to_str().unwrap()]);
        let cached = err.matches("CACHED").count().saturating_sub(1);
        assert!(
            cached >= *cached_after,
            "{point}: the rebuild reuses what completed ({cached} < {cached_after}):\n{err}"
        );
        let out = env.rbuild(&["fsck"]);
        assert!(
            stdout(&out).contains(": clean"),
            "{point}: {}",
            stdout(&out)
        );
    }
    eprintln!(
        "crash hook: {} points, {repaired} needed fsck --repair",
        points.len()
    );
}

#[test]
fn kill_while_run_is_running() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let marker = format!("rbuild-crash-run-{}", std::process::id());
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nRUN echo one > /one\nRUN sleep 30; echo {marker}\n"),
        )],
    );
    let mut child = env
        .cmd()
        .args([
            "build",
            "--progress=plain",
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The sandboxed `sh -c "sleep 30; echo marker"` is alive: kill rbuild now.
    while procs_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the RUN never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    check_after_crash(&env, &marker, "kill during RUN");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox\nRUN echo one > /one\nRUN echo {marker}\n"),
    )
    .unwrap();
    let (_, err) = env.build_ok(&["-t", "app", ctx.to_str().unwrap()]);
    assert_eq!(
        err.matches("CACHED").count(),
        2,
        "FROM and the first RUN: {err}"
    );
}

#[test]
fn kill_at_random_times() {
    if !require_root(&[]) {
        return;
    }
    let seeds: u64 = if std::env::var_os("RBUILD_SLOW_TESTS").is_some() {
        60
    } else {
        10
    };
    let env = Env::with_busybox();
    let marker = format!("rbuild-crash-seed-{}", std::process::id());
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", &dockerfile(&marker)), ("a.txt", "a\n")],
    );
    let oci = env.path("out.tar");
    let mut killed = 0;
    let mut repaired = 0;
    for seed in 0..seeds {
        // xorshift: a delay of 0–700 ms (a build here takes about 0.5–1 s).
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(x % 700);
        let mut child = env
            .cmd()
            .args([
                "build",
                "--progress=plain",
                "--build-arg",
                &format!("SEED={seed}"),
                "-t",
                &format!("app:{}", seed % 3),
                "-o",
                &format!("type=oci,dest={}", oci.display()),
                ctx.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        if check_after_crash(&env, &marker, &format!("seed {seed}")) {
            repaired += 1;
        }
    }
    // The next build works without cleanup and the result is complete.
    let (_, err) = env.build_ok(&[
        "--build-arg",
        "SEED=final",
        "-t",
        "app:final",
        ctx.to_str().unwrap(),
    ]);
    // When at least one seeded build ran to the end, its first steps are reused (on a loaded
    // machine every seed may be killed early: then there is nothing to reuse yet).
    if killed < seeds {
        assert!(
            err.matches("CACHED").count() >= 3,
            "FROM, COPY and the first RUN: {err}"
        );
    }
    let out = env.rbuild(&["fsck"]);
    assert!(stdout(&out).contains(": clean"), "{}", stdout(&out));
    assert!(Path::new(&env.root).is_dir());
    eprintln!(
        "random kills: {seeds} seeds, {killed} killed mid-build, {repaired} needed fsck --repair"
    );
}
