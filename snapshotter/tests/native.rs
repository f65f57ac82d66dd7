//! Copy-based ("native") snapshots: a prepared snapshot is a faithful full copy, the layer written by
//! comparing trees equals the one overlay's upper dir gives for the same changes, and a layer
//! applied into a native snapshot is folded into its tree on commit.

mod common;

use common::{overlay_or_skip, root_or_skip, snapshot, tar_names};
use rbuild_snapshotter::diff::{
    apply_layer, trim_unchanged_dirs, write_layer, write_tree_diff, ApplyOptions, LayerOptions,
};
use rbuild_snapshotter::mount::{mount_all, unmount};
use rbuild_snapshotter::{Changes, Driver, Snapshotter};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// A base layer with a bit of everything: files, dirs, a symlink, a hardlink pair, a fifo, a char
/// device, owners, setuid, xattrs, mtimes with no nanoseconds (as unpacked from a tar).
fn base_layer(s: &Snapshotter) {
    s.prepare("base-key", None).unwrap();
    let u = s.upper_dir("base-key").unwrap();
    for d in ["etc", "usr/bin", "var/lib/app", "gone/deep"] {
        fs::create_dir_all(u.join(d)).unwrap();
    }
    fs::write(u.join("etc/conf"), "a=1\n").unwrap();
    fs::write(u.join("etc/keep"), "keep\n").unwrap();
    fs::write(u.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(u.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(u.join("var/lib/app/data"), "data").unwrap();
    fs::hard_link(u.join("var/lib/app/data"), u.join("var/lib/app/data.link")).unwrap();
    fs::write(u.join("gone/deep/x"), "x").unwrap();
    fs::write(u.join("same-size"), "AAAA").unwrap();
    symlink("../etc/conf", u.join("usr/conf-link")).unwrap();
    nix::unistd::mkfifo(
        &u.join("var/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &u.join("etc/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    std::os::unix::fs::lchown(u.join("var/lib/app"), Some(1000), Some(1000)).unwrap();
    xattr::set(u.join("etc/conf"), "user.note", b"hi").unwrap();
    xattr::set(u.join("usr/bin/tool"), "trusted.test", b"t").unwrap();
    // Whole-second mtimes everywhere, as a layer from a tar has.
    run(&format!(
        "find {} -exec touch -h -d @1700000000 {{}} +",
        u.display()
    ));
    s.commit("base", "base-key").unwrap();
}

fn run(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The changes a build step makes, through the mounted rootfs at `m`.
fn step(m: &Path) {
    let m = m.display();
    run(&format!(
        "set -e; cd {m}
         echo b=2 >> etc/conf                    # changed content
         chmod 600 etc/keep                      # metadata only
         rm -r gone                              # a removed dir
         rm var/fifo                             # a removed file
         mkdir -p new/sub && echo n > new/sub/f  # a new tree
         ln -s /etc/keep new/link                # a new symlink
         ln new/sub/f new/hard                   # a new hardlink pair
         printf BBBB > same-size                 # same size, same mtime, other content
         touch -d @1700000000 same-size
         chown 1000:1000 usr/bin/tool            # owner (clears setuid)"
    ));
    xattr::set(
        Path::new(&m.to_string()).join("etc/keep"),
        "user.added",
        b"1",
    )
    .unwrap();
}

const EPOCH: i64 = 1_700_000_100;

fn layer_of(s: &Snapshotter, key: &str) -> (Vec<u8>, rbuild_oci::Digest) {
    let mut tar = Vec::new();
    let opts = LayerOptions {
        source_date_epoch: Some(EPOCH),
    };
    let stats = match s.changes(key).unwrap() {
        Changes::Upper { upper, lowers } => {
            trim_unchanged_dirs(&upper, &lowers).unwrap();
            write_layer(&upper, &mut tar, &opts).unwrap()
        }
        Changes::Tree { tree, parent } => {
            write_tree_diff(&tree, parent.as_deref(), &mut tar, &opts).unwrap()
        }
    };
    (tar, stats.diff_id)
}

fn mounted(s: &Snapshotter, key: &str, parent: &str, mnt: &Path, f: impl FnOnce(&Path)) {
    let specs = s.prepare(key, Some(parent)).unwrap();
    fs::create_dir_all(mnt).unwrap();
    mount_all(&specs, mnt).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(mnt)));
    unmount(mnt).unwrap();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn native_copy_is_faithful_and_its_diff_equals_overlays() {
    if !overlay_or_skip("native_copy_is_faithful_and_its_diff_equals_overlays") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let native =
        Snapshotter::open_with(&t.path().join("snapshots-native"), Driver::Native).unwrap();
    let overlay = Snapshotter::open(&t.path().join("snapshots")).unwrap();
    base_layer(&native);
    base_layer(&overlay);
    assert_eq!(native.driver(), Driver::Native);
    assert_eq!(native.layer_chain("base").unwrap().len(), 1);

    // A prepared native snapshot is a full, faithful copy (same tree, hardlinks kept).
    let specs = native.prepare("copy", Some("base")).unwrap();
    assert_eq!(specs[0].kind, "bind");
    let base_dir = native.layer_dir("base").unwrap();
    let copy_dir = match native.changes("copy").unwrap() {
        Changes::Tree { tree, parent } => {
            assert_eq!(parent.as_deref(), Some(base_dir.as_path()));
            tree
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(snapshot(&copy_dir), snapshot(&base_dir));
    let (_, empty) = layer_of(&native, "copy");
    let e = tempfile::tempdir().unwrap();
    let want = write_layer(e.path(), std::io::sink(), &LayerOptions::default()).unwrap();
    assert_eq!(empty, want.diff_id, "an untouched copy has an empty diff");
    native.remove("copy").unwrap();

    // The same step through each driver gives the same layer, member by member.
    mounted(&native, "n-step", "base", &t.path().join("mn"), step);
    mounted(&overlay, "o-step", "base", &t.path().join("mo"), step);
    let (ntar, nid) = layer_of(&native, "n-step");
    let (otar, oid) = layer_of(&overlay, "o-step");
    let names = tar_names(&ntar);
    for want in [
        "etc/conf",
        "etc/keep",
        ".wh.gone",
        "var/.wh.fifo",
        "new/sub/f",
        "new/hard",
        "new/link",
        "same-size",
        "usr/bin/tool",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("usr/conf-link")),
        "{names:?}"
    );
    assert_eq!(names, tar_names(&otar));
    assert_eq!(nid, oid, "same diff_id as overlay");
    native.commit("n-done", "n-step").unwrap();
    overlay.commit("o-done", "o-step").unwrap();

    // The overlay layer applied on a native snapshot of the base gives the same tree as the step.
    native.prepare("applied", Some("base")).unwrap();
    apply_layer(
        &otar[..],
        &native.upper_dir("applied").unwrap(),
        &ApplyOptions::default(),
    )
    .unwrap();
    native.commit("applied-done", "applied").unwrap();
    let (mut a, mut ga) = snapshot(&native.layer_dir("applied-done").unwrap());
    let (mut b, mut gb) = snapshot(&native.layer_dir("n-done").unwrap());
    ga.sort();
    gb.sort();
    assert!(
        !a.contains_key("gone") && !a.contains_key("var/fifo"),
        "{a:?}"
    );
    // Directory mtimes were clamped in the layer; everything else must match.
    for m in [&mut a, &mut b] {
        for n in m.values_mut().filter(|n| n.kind == "dir") {
            n.mtime = 0;
        }
    }
    for (k, v) in &b {
        let mut got = a.get(k).cloned();
        if let (Some(g), true) = (got.as_mut(), v.mtime > EPOCH) {
            g.mtime = v.mtime;
        }
        assert_eq!(got.as_ref(), Some(v), "{k}");
    }
    assert_eq!(a.len(), b.len());
    assert_eq!(ga, gb, "hardlinks");
}

#[test]
fn native_view_is_a_read_only_bind_and_chains_need_no_overlay() {
    if !root_or_skip("native_view_is_a_read_only_bind_and_chains_need_no_overlay") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open_with(&t.path().join("n"), Driver::Native).unwrap();
    let mut parent: Option<String> = None;
    for i in 0..5 {
        let key = format!("k{i}");
        s.prepare(&key, parent.as_deref()).unwrap();
        fs::write(s.upper_dir(&key).unwrap().join(format!("f{i}")), "x").unwrap();
        s.commit(&format!("l{i}"), &key).unwrap();
        parent = Some(format!("l{i}"));
    }
    let tree = s.layer_dir("l4").unwrap();
    for i in 0..5 {
        assert!(tree.join(format!("f{i}")).exists());
    }
    let view = s.view("v", "l4").unwrap();
    assert_eq!(view[0].kind, "bind");
    assert!(view[0].is_read_only());
    assert_eq!(view[0].source, tree);
    let mnt = t.path().join("m");
    fs::create_dir(&mnt).unwrap();
    mount_all(&view, &mnt).unwrap();
    let write = fs::write(mnt.join("x"), "x");
    unmount(&mnt).unwrap();
    assert!(write.is_err(), "a view is read-only");
    s.remove("v").unwrap();
    assert!(s.remove("l3").is_err(), "has a child");
}
