//! Snapshotter lifecycle and overlay end to end: prepare on a chain, mount, change through the mount,
//! diff the upper, apply to another stack, verify through another overlay.

mod common;

use common::{overlay_or_skip, root_or_skip, tar_names};
use rbuild_snapshotter::diff::{apply_layer, write_layer, ApplyOptions, LayerOptions};
use rbuild_snapshotter::mount::{mount_all, unmount};
use rbuild_snapshotter::{Kind, MountSpec, SnapshotError, Snapshotter};
use std::fs;
use std::path::Path;

/// Commit a layer made of `files` (path, content) on `parent`.
fn layer(s: &Snapshotter, name: &str, parent: Option<&str>, files: &[(&str, &str)]) {
    let key = format!("{name}-key");
    s.prepare(&key, parent).unwrap();
    let upper = s.upper_dir(&key).unwrap();
    for (p, c) in files {
        let p = upper.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
    s.commit(name, &key).unwrap();
}

fn with_mount<T>(specs: &[MountSpec], target: &Path, f: impl FnOnce() -> T) -> T {
    fs::create_dir_all(target).unwrap();
    mount_all(specs, target).unwrap();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    unmount(target).unwrap();
    match out {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

#[test]
fn overlay_end_to_end() {
    if !overlay_or_skip("overlay_end_to_end") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(&t.path().join("snapshots")).unwrap();
    layer(
        &s,
        "base",
        None,
        &[("file", "lower file"), ("dir/old1", "1"), ("dir/old2", "2")],
    );
    layer(&s, "l2", Some("base"), &[("l2.txt", "second")]);
    assert_eq!(s.layer_chain("l2").unwrap().len(), 2);

    let specs = s.prepare("step", Some("l2")).unwrap();
    assert_eq!(specs[0].kind, "overlay");
    assert!(specs[0].options.iter().any(|o| o == "index=off"));
    let mnt = t.path().join("mnt");
    with_mount(&specs, &mnt, || {
        assert_eq!(fs::read_to_string(mnt.join("file")).unwrap(), "lower file");
        assert_eq!(fs::read_to_string(mnt.join("l2.txt")).unwrap(), "second");
        fs::remove_file(mnt.join("file")).unwrap();
        fs::remove_dir_all(mnt.join("dir")).unwrap();
        fs::create_dir(mnt.join("dir")).unwrap();
        fs::write(mnt.join("dir/new"), "new").unwrap();
    });
    let mut tar = Vec::new();
    let w = write_layer(
        &s.upper_dir("step").unwrap(),
        &mut tar,
        &LayerOptions::default(),
    )
    .unwrap();
    let names = tar_names(&tar);
    assert!(names.contains(&".wh.file".to_string()), "{names:?}");
    assert!(names.contains(&"dir/.wh..wh..opq".to_string()), "{names:?}");
    assert!(names.contains(&"dir/new".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("old")), "{names:?}");
    s.commit("step-done", "step").unwrap();

    // Apply the layer onto another stack with the same lowers, and look through an overlay view.
    s.prepare("other", Some("l2")).unwrap();
    let a = apply_layer(
        &tar[..],
        &s.upper_dir("other").unwrap(),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(a.diff_id, w.diff_id);
    s.commit("other-done", "other").unwrap();
    let view = s.view("look", "other-done").unwrap();
    assert!(view[0].is_read_only());
    let mnt2 = t.path().join("mnt2");
    with_mount(&view, &mnt2, || {
        assert!(!mnt2.join("file").exists());
        let mut entries: Vec<_> = fs::read_dir(mnt2.join("dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(entries, vec!["new"]);
        assert_eq!(fs::read_to_string(mnt2.join("l2.txt")).unwrap(), "second");
        assert!(
            fs::write(mnt2.join("x"), "x").is_err(),
            "a view is read-only"
        );
    });
    // A view of a single layer is a read-only bind.
    let single = s.view("look-base", "base").unwrap();
    assert_eq!(single[0].kind, "bind");
    let mnt3 = t.path().join("mnt3");
    with_mount(&single, &mnt3, || {
        assert_eq!(fs::read_to_string(mnt3.join("file")).unwrap(), "lower file");
        assert!(fs::write(mnt3.join("x"), "x").is_err());
    });
    // An active snapshot with no parent is a writable bind of its fs dir.
    let fresh = s.prepare("fresh", None).unwrap();
    let mnt4 = t.path().join("mnt4");
    with_mount(&fresh, &mnt4, || fs::write(mnt4.join("hi"), "hi").unwrap());
    assert_eq!(
        fs::read_to_string(s.upper_dir("fresh").unwrap().join("hi")).unwrap(),
        "hi"
    );
}

#[test]
fn lifecycle_rules() {
    if !root_or_skip("lifecycle_rules") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(&t.path().join("snapshots")).unwrap();
    layer(&s, "base", None, &[("a", "a")]);
    assert!(matches!(
        s.prepare("base", None),
        Err(SnapshotError::AlreadyExists { .. })
    ));
    assert!(matches!(
        s.prepare("k", Some("nope")),
        Err(SnapshotError::NotFound { .. })
    ));
    s.prepare("k", Some("base")).unwrap();
    // Only committed snapshots can be parents; only active ones can be committed.
    assert!(matches!(
        s.prepare("k2", Some("k")),
        Err(SnapshotError::WrongKind { .. })
    ));
    assert!(matches!(
        s.commit("x", "base"),
        Err(SnapshotError::WrongKind { .. })
    ));
    assert!(matches!(
        s.upper_dir("base"),
        Err(SnapshotError::WrongKind { .. })
    ));
    assert!(matches!(
        s.remove("base"),
        Err(SnapshotError::HasChildren { children: 1, .. })
    ));
    let info = s.stat("k").unwrap().unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::Active, Some("base"))
    );
    assert!(s.stat("missing").unwrap().is_none());
    s.remove("k").unwrap();
    s.remove("base").unwrap();
    assert!(s.list().unwrap().is_empty());
    assert!(matches!(
        s.prepare("", None),
        Err(SnapshotError::InvalidKey { .. })
    ));
    assert!(Snapshotter::open(Path::new("relative")).is_err());
    assert!(Snapshotter::open(&t.path().join("a:b")).is_err());
    // Only the metadata db and the trash are left.
    let left: Vec<_> = fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.parse::<u64>().is_ok())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn commit_race_loser_succeeds_and_is_dropped() {
    if !root_or_skip("commit_race_loser_succeeds_and_is_dropped") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("snapshots");
    // Several "processes" (separate instances, separate db connections) build the same step.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = Snapshotter::open(&root).unwrap();
                let key = format!("build-{i}");
                s.prepare(&key, None).unwrap();
                fs::write(s.upper_dir(&key).unwrap().join("out"), format!("{i}")).unwrap();
                s.commit("same-step", &key).unwrap();
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let s = Snapshotter::open(&root).unwrap();
    let all = s.list().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].kind, Kind::Committed);
    assert!(s.layer_dir("same-step").unwrap().join("out").exists());
}

#[test]
fn cleanup_removes_only_dead_owners() {
    if !root_or_skip("cleanup_removes_only_dead_owners") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("snapshots");
    let s = Snapshotter::open(&root).unwrap();
    layer(&s, "base", None, &[("a", "a")]);
    s.prepare("mine", Some("base")).unwrap();
    let other = Snapshotter::open(&root).unwrap();
    other.prepare("other-live", None).unwrap();
    {
        let crashed = Snapshotter::open(&root).unwrap();
        crashed.prepare("crashed", Some("base")).unwrap();
        crashed.view("crashed-view", "base").unwrap();
        // Dropping the instance releases its locks, as a process exit would.
    }
    fs::create_dir_all(root.join("99999/fs")).unwrap();
    let report = s.cleanup_stale().unwrap();
    let mut removed = report.removed.clone();
    removed.sort();
    assert_eq!(removed, vec!["crashed", "crashed-view"]);
    assert_eq!(report.orphan_dirs, 1);
    assert!(!root.join("99999").exists());
    // The live ones, ours and another instance's, are untouched.
    assert!(s.stat("mine").unwrap().is_some());
    assert!(s.stat("other-live").unwrap().is_some());
    assert!(s.stat("base").unwrap().is_some());
    other.commit("other-done", "other-live").unwrap();
}

/// `cleanup_stale_on_first_use`: nothing is opened or removed until the snapshot table is first
/// needed; then the crashed owner's snapshot goes before the caller's own operation runs.
#[test]
fn deferred_cleanup_runs_at_first_use_only() {
    if !root_or_skip("deferred_cleanup_runs_at_first_use_only") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("snapshots");
    {
        let crashed = Snapshotter::open(&root).unwrap();
        crashed.prepare("crashed", None).unwrap();
    }
    let db_mtime = || {
        fs::metadata(root.join("meta.db-wal"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = db_mtime();
    let s = Snapshotter::open(&root).unwrap();
    s.cleanup_stale_on_first_use();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(db_mtime(), before, "nothing written before first use");
    assert!(
        root.join("1").exists(),
        "the crashed snapshot's dir is still there"
    );
    // First use: the stale snapshot is removed, then the lookup answers.
    assert!(s.stat("crashed").unwrap().is_none());
    assert!(!root.join("1").exists());
    s.prepare("next", None).unwrap();
}

/// A 200-deep chain: far more lowers than absolute `lowerdir=` paths fit in a page, mounted
/// writable and as a view; 501 lowers is overlay's own limit, refused before any mount.
#[test]
fn deep_chain_mounts_past_the_page_limit() {
    if !overlay_or_skip("deep_chain_mounts_past_the_page_limit") {
        return;
    }
    // 500 commits are 500 syncfs + fsync'd transactions: on tmpfs where there is one, as the test
    // is about depth, not durability (≈1 s instead of ≈12 s on this machine's disk).
    let t = match tempfile::tempdir_in("/dev/shm") {
        Ok(t) => t,
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let s = Snapshotter::open(&t.path().join("snapshots")).unwrap();
    let depth = 200;
    let mut parent: Option<String> = None;
    for i in 0..depth {
        let name = format!("l{i}");
        let (f, c) = (format!("f{i}"), i.to_string());
        layer(
            &s,
            &name,
            parent.as_deref(),
            &[(f.as_str(), c.as_str()), ("top", c.as_str())],
        );
        parent = Some(name);
    }
    let top = parent.unwrap();
    assert_eq!(s.layer_chain(&top).unwrap().len(), depth);
    let specs = s.prepare("deep", Some(&top)).unwrap();
    let data_len: usize = specs[0].options.iter().map(|o| o.len() + 1).sum();
    assert!(
        data_len > rbuild_snapshotter::mount::MAX_MOUNT_DATA,
        "{data_len}"
    );
    let mnt = t.path().join("mnt");
    with_mount(&specs, &mnt, || {
        assert_eq!(fs::read_to_string(mnt.join("f0")).unwrap(), "0");
        assert_eq!(fs::read_to_string(mnt.join("f199")).unwrap(), "199");
        assert_eq!(fs::read_to_string(mnt.join("top")).unwrap(), "199");
        fs::write(mnt.join("top"), "changed").unwrap();
    });
    let upper = s.upper_dir("deep").unwrap();
    assert_eq!(fs::read_to_string(upper.join("top")).unwrap(), "changed");
    s.commit("deep-done", "deep").unwrap();

    let view = s.view("deep-view", "deep-done").unwrap();
    with_mount(&view, &mnt, || {
        assert_eq!(fs::read_to_string(mnt.join("top")).unwrap(), "changed");
        assert_eq!(fs::read_to_string(mnt.join("f100")).unwrap(), "100");
        assert!(
            fs::write(mnt.join("x"), "x").is_err(),
            "a view is read-only"
        );
    });
    s.remove("deep-view").unwrap();

    // Up to overlay's 500 lowers; one more is refused with a hint, and nothing is left behind.
    let mut parent = "deep-done".to_string();
    for i in depth + 1..500 {
        let name = format!("l{i}");
        layer(&s, &name, Some(&parent), &[]);
        parent = name;
    }
    assert_eq!(s.layer_chain(&parent).unwrap().len(), 500);
    let specs = s.prepare("at-limit", Some(&parent)).unwrap();
    with_mount(&specs, &mnt, || {
        assert_eq!(fs::read_to_string(mnt.join("f0")).unwrap(), "0");
    });
    layer(&s, "l500", Some(&parent), &[]);
    let before = s.list().unwrap().len();
    match s.prepare("too-deep", Some("l500")) {
        Err(e @ SnapshotError::ChainTooDeep { depth: 501, .. }) => {
            assert!(e.to_string().contains("fewer layers"), "{e}");
        }
        other => panic!("expected ChainTooDeep, got {other:?}"),
    }
    assert_eq!(s.list().unwrap().len(), before);
    assert!(s.stat("too-deep").unwrap().is_none());
}
