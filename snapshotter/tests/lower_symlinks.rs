//! Issue 14 item 9: applying a layer follows the symlinks the layers below it made, as containerd
//! does — a lower layer's `var/run -> /run` puts a later `var/run/x` at `run/x`, resolved within the
//! rootfs (a link to `../../..` or to an absolute host path stays inside) — and the overlay and
//! native snapshotters agree on the result.

mod common;

use common::{overlay_or_skip, root_or_skip, snapshot, RawTar};
use rbuild_snapshotter::diff::{apply_layer, ApplyOptions};
use rbuild_snapshotter::mount::{mount_all, unmount};
use rbuild_snapshotter::{Changes, Driver, Snapshotter};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Apply `layer` on `parent` as committed snapshot `name`, with the lowers the snapshotter reports.
fn apply(s: &Snapshotter, layer: &[u8], parent: Option<&str>, name: &str) {
    let key = format!("{name}-key");
    s.prepare(&key, parent).unwrap();
    let lowers = match s.changes(&key).unwrap() {
        Changes::Upper { lowers, .. } => lowers,
        Changes::Tree { tree, .. } => vec![tree],
    };
    let opts = ApplyOptions {
        lowers,
        ..ApplyOptions::default()
    };
    apply_layer(layer, &s.upper_dir(&key).unwrap(), &opts).unwrap();
    s.commit(name, &key).unwrap();
}

/// The merged rootfs of `name`, mounted read-only at `mnt` while `check` runs.
fn with_view(s: &Snapshotter, name: &str, mnt: &Path, check: impl FnOnce(&Path)) {
    fs::create_dir_all(mnt).unwrap();
    let specs = s.view(&format!("{name}-view"), name).unwrap();
    mount_all(&specs, mnt).unwrap();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(mnt)));
    unmount(mnt).unwrap();
    s.remove(&format!("{name}-view")).unwrap();
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
}

fn layers(host: &Path) -> (Vec<u8>, Vec<u8>) {
    let host = host.to_str().unwrap();
    let lower = RawTar::new()
        .dir("run", 0o755)
        .file("run/gone", b"g")
        .dir("tmp", 0o1777)
        .dir("var", 0o755)
        .symlink("var/run", "/run")
        .symlink("var/lock", "../run/lock")
        .symlink("var/tmp", "/tmp")
        .symlink("up", "../../..")
        .symlink("hostdir", host)
        .symlink("loop", "loop2")
        .symlink("loop2", "loop")
        .finish();
    let upper = RawTar::new()
        .file("var/run/x", b"r")
        .file("var/lock/l", b"l")
        .file("var/tmp/t", b"t")
        .file("var/run/.wh.gone", b"")
        .file("up/escape", b"e")
        .file("hostdir/pwned", b"p")
        .finish();
    (lower, upper)
}

fn check(root: &Path, host: &Path) {
    let lstat = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert!(
        lstat("var/run").file_type().is_symlink(),
        "var/run stays a symlink"
    );
    assert!(lstat("var/lock").file_type().is_symlink());
    assert_eq!(fs::read(root.join("run/x")).unwrap(), b"r");
    assert_eq!(fs::read(root.join("run/lock/l")).unwrap(), b"l");
    assert_eq!(fs::read(root.join("tmp/t")).unwrap(), b"t");
    assert!(
        !root.join("run/gone").exists(),
        "the whiteout went through the link"
    );
    // /tmp keeps its mode: the directory created beneath the layer copies the lower one's.
    assert_eq!(lstat("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(fs::read(root.join("escape")).unwrap(), b"e");
    let inside = root.join(host.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inside.join("pwned")).unwrap(), b"p");
}

fn run(driver: Driver, t: &Path, host: &Path) -> std::collections::BTreeMap<String, common::Node> {
    let s = Snapshotter::open_with(&t.join(driver.as_str()), driver).unwrap();
    let (lower, upper) = layers(host);
    apply(&s, &lower, None, "l1");
    apply(&s, &upper, Some("l1"), "l2");
    // A symlink loop below is an error naming the entry, not a hang.
    s.prepare("loop-key", Some("l1")).unwrap();
    let lowers = match s.changes("loop-key").unwrap() {
        Changes::Upper { lowers, .. } => lowers,
        Changes::Tree { tree, .. } => vec![tree],
    };
    let err = apply_layer(
        &RawTar::new().file("loop/x", b"x").finish()[..],
        &s.upper_dir("loop-key").unwrap(),
        &ApplyOptions {
            lowers,
            ..ApplyOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("too many levels of symbolic links"),
        "{err}"
    );
    s.remove("loop-key").unwrap();
    let mut tree = Default::default();
    with_view(
        &s,
        "l2",
        &t.join(format!("mnt-{}", driver.as_str())),
        |root| {
            check(root, host);
            tree = snapshot(root).0;
        },
    );
    tree
}

#[test]
fn later_layers_follow_lower_symlinks_inside_the_rootfs() {
    if !root_or_skip("later_layers_follow_lower_symlinks_inside_the_rootfs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    fs::create_dir(&host).unwrap();
    let native = run(Driver::Native, t.path(), &host);
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "the host dir got entries"
    );
    assert!(!t.path().join("escape").exists() && !Path::new("/escape").exists());
    if !overlay_or_skip("later_layers_follow_lower_symlinks_inside_the_rootfs (overlay half)") {
        return;
    }
    let overlay = run(Driver::Overlay, t.path(), &host);
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "the host dir got entries"
    );
    // Both snapshotters show the same rootfs (mtimes of dirs the layer wrote into aside).
    let strip = |m: std::collections::BTreeMap<String, common::Node>| {
        m.into_iter()
            .map(|(k, mut n)| {
                if n.kind == "dir" {
                    n.mtime = 0;
                }
                (k, n)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(strip(native), strip(overlay), "overlay and native disagree");
}
