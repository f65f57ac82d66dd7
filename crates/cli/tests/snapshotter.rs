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
