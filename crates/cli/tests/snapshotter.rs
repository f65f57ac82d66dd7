//! Snapshotter behaviour seen from a build: chains deeper than one page of overlay options.

mod common;
use common::*;

/// 130 layer-making steps (more than the ≈100 absolute lower dirs `mount(2)`'s one-page options
/// hold): the build succeeds, the image runs, and the image loaded into a fresh store works as a
/// base (its 131 layers unpacked as a chain, then one more step on top).
#[test]
fn a_130_layer_image_builds_runs_and_serves_as_a_base() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let mut df = String::from("FROM busybox\n");
    for i in 0..130 {
        df.push_str(&format!("RUN touch /l{i}\n"));
    }
    df.push_str("CMD [\"sh\", \"-c\", \"ls / | grep -c '^l[0-9]'\"]\n");
    let ctx = env.context("deep", &[("Dockerfile", &df)]);
    env.build_ok(&["-t", "deep:1", ctx.to_str().unwrap()]);
    let inspect = stdout(&env.rbuild(&["inspect", "deep:1"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let layers = v["Manifest"]["layers"].as_array().map(|a| a.len());
    assert_eq!(layers, Some(131), "{inspect}");
    let out = env.rbuild(&["run", "--rm", "deep:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "130");

    let tar = env.path("deep.tar");
    let out = env.rbuild(&["save", "deep:1", "-o", tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = Env::empty();
    let out = fresh.rbuild(&["load", tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ctx = fresh.context(
        "on-deep",
        &[(
            "Dockerfile",
            "FROM deep:1\nRUN test -e /l0 && test -e /l129 && touch /on-top\n",
        )],
    );
    fresh.build_ok(&["-t", "on-deep:1", ctx.to_str().unwrap()]);
    let out = fresh.rbuild(&[
        "run",
        "--rm",
        "on-deep:1",
        "sh",
        "-c",
        "ls / | grep -c '^l[0-9]'; ls /on-top",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "130\n/on-top\n");
}

const CHANGES: &str = r#"FROM busybox
COPY a.txt /data/a.txt
RUN mkdir -p /data/dir/sub /data/old/deep && echo 1 > /data/dir/sub/f && echo x > /data/old/deep/x \
 && echo keep > /data/keep && ln -s ../keep /data/dir/link && ln /data/keep /data/keep.hard \
 && echo other > /data/other && mkfifo /data/fifo && echo same > /data/same && touch -d @1600000000 /data/same
RUN echo more >> /data/a.txt && chmod 600 /data/other && rm -r /data/old && rm /data/fifo \
 && mkdir /data/new && touch /data/new/empty && ln -sf /data/a.txt /data/dir/link \
 && chmod 4755 /data/dir/sub/f && ln /data/dir/sub/f /data/dir/f.hard && chown 1:1 /data/dir \
 && echo SAME > /data/same && touch -d @1600000000 /data/same
RUN rm /data/keep.hard && mv /data/new /data/renamed && chmod 0700 /data/renamed
CMD ["sh", "-c", "cd /data && find . -exec stat -c '%n %A %u:%g %s %Y %N' {} + | sort && cat a.txt same dir/link"]
"#;

/// Build `CHANGES` with `driver`, SOURCE_DATE_EPOCH set; returns the image id, the config's
/// diff_ids and what the image prints when run.
fn build_with(driver: &str) -> (String, serde_json::Value, String) {
    let env = Env::with_busybox();
    let ctx = env.context("changes", &[("Dockerfile", CHANGES), ("a.txt", "a\n")]);
    let build = |extra: &[&str]| {
        let mut cmd = env.cmd();
        cmd.env("SOURCE_DATE_EPOCH", "1700000000")
            .env("RBUILD_SNAPSHOTTER", driver)
            .args(["build", "--progress=plain", "-t", "changes:1"])
            .args(extra)
            .arg(&ctx);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{driver}: {}", stderr(&out));
        (stdout(&out).trim().to_string(), stderr(&out))
    };
    let (id, _) = build(&[]);
    // Only the chosen driver's snapshot dir exists.
    let other = if driver == "native" {
        "snapshots"
    } else {
        "snapshots-native"
    };
    assert!(!env.root.join(other).exists(), "{driver} used {other}");
    // A rebuild is all cached and gives the same image.
    let (again, log) = build(&[]);
    assert_eq!(again, id);
    assert!(
        !log.contains("DONE") || log.matches("CACHED").count() >= 4,
        "{log}"
    );
    let inspect = stdout(&env.rbuild(&["inspect", "changes:1"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let mut cmd = env.cmd();
    cmd.env("RBUILD_SNAPSHOTTER", driver)
        .args(["run", "--rm", "changes:1"]);
    let shown = run_ok(&mut cmd);
    (id, v["Config"]["rootfs"]["diff_ids"].clone(), shown)
}

/// The copy-based snapshotter builds, caches and runs what overlay does, layer for layer: added,
/// changed and deleted files and directories, chmod/chown, setuid, symlinks, hard links, a fifo, a
/// same-size same-mtime rewrite, a rename — same diff_ids and image id with SOURCE_DATE_EPOCH.
/// (Not a chmod of a hard-linked lower file: overlay breaks that link, a copy keeps it.)
#[test]
fn native_snapshotter_builds_the_same_image_as_overlay() {
    if !require_root(&[]) {
        return;
    }
    let (oid, olayers, oshown) = build_with("overlayfs");
    let (nid, nlayers, nshown) = build_with("native");
    assert_eq!(nlayers, olayers, "diff_ids");
    assert_eq!(nid, oid, "image id");
    assert_eq!(nshown, oshown);
    assert!(oshown.contains("a\nmore\nSAME\n"), "{oshown}");
    assert!(
        !oshown.contains("keep.hard") && !oshown.contains("fifo"),
        "{oshown}"
    );
}

/// A bad --snapshotter value is a usage error naming the choices.
#[test]
fn unknown_snapshotter_is_a_usage_error() {
    let env = Env::empty();
    let out = env.rbuild(&["--snapshotter", "zfs", "images"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("overlayfs or native"),
        "{}",
        stderr(&out)
    );
}

/// With no choice made, the first build probes overlay with a real mount and remembers that it
/// worked (`snapshots/overlay-probed`), so later builds skip the probe; a store whose probe is
/// not remembered is probed again.
#[test]
fn a_successful_overlay_probe_is_remembered() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context("probe", &[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let marker = env.root.join("snapshots").join("overlay-probed");
    let mut build = env.cmd();
    build
        .env_remove("RBUILD_SNAPSHOTTER")
        .args(["build", "--progress=plain", "-t", "probe"])
        .arg(&ctx);
    run_ok(&mut build);
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
    // The engine's probe, not the front's no-op answer.
    run_ok(build.env("RBUILD_NOOP_CHECK", "0"));
    assert!(marker.exists(), "probed and remembered again");
    assert!(!env.root.join("snapshots-native").exists());
}

/// A store built once with each driver has two snapshot directories; prune, df and fsck cover
/// both, whichever driver is selected: df and fsck count the snapshots of both, and `prune -a`
/// (images removed) leaves none in either.
#[test]
fn maintenance_covers_every_snapshot_directory() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    for driver in ["native", "overlayfs"] {
        // Steps of its own: the other driver's cache would answer the same ones.
        let dockerfile = format!("FROM busybox\nRUN echo {driver} > /one\nRUN echo 2 > /two\n");
        let ctx = env.context(driver, &[("Dockerfile", &dockerfile)]);
        let mut build = env.cmd();
        build
            .env("RBUILD_SNAPSHOTTER", driver)
            .args(["build", "--progress=plain", "-t", &format!("both:{driver}")])
            .arg(&ctx);
        run_ok(&mut build);
    }
    // Snapshot directories (named by id) under a driver's directory.
    let count = |dir: &str| {
        std::fs::read_dir(env.root.join(dir))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
                    .count()
            })
            .unwrap_or(0)
    };
    let (overlay, native) = (count("snapshots"), count("snapshots-native"));
    assert!(overlay >= 3 && native >= 3, "{overlay} {native}");
    let df_snapshots = |driver: &str| {
        let mut df = env.cmd();
        df.env("RBUILD_SNAPSHOTTER", driver).arg("df");
        let out = run_ok(&mut df);
        let line = out.lines().find(|l| l.starts_with("Snapshots")).unwrap();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    let fsck = || {
        let mut fsck = env.cmd();
        fsck.env_remove("RBUILD_SNAPSHOTTER").arg("fsck");
        run_ok(&mut fsck)
    };
    for driver in ["overlayfs", "native"] {
        assert_eq!(df_snapshots(driver), (overlay + native).to_string());
    }
    let checked = fsck();
    assert!(
        checked.contains(&format!(" {} snapshots: clean", overlay + native)),
        "{checked}"
    );

    run_ok(
        env.cmd()
            .args(["rmi", "both:native", "both:overlayfs", "busybox:latest"]),
    );
    run_ok(
        env.cmd()
            .env_remove("RBUILD_SNAPSHOTTER")
            .args(["prune", "-a", "-f"]),
    );
    assert_eq!((count("snapshots"), count("snapshots-native")), (0, 0));
    assert_eq!(df_snapshots("overlayfs"), "0");
    let checked = fsck();
    assert!(checked.contains(" 0 snapshots: clean"), "{checked}");
}
