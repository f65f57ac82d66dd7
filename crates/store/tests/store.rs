//! Store behaviour through its public API: ingest, concurrency, leases and prune, fsck, disk full.

use rbuild_oci::{
    canonical_json, Descriptor, Digest, ImageConfig, Manifest, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::{ImageRecord, PruneOptions, Store, StoreError};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

fn dir_entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Write a small image (one layer) into the store and name it; returns (record, layer digest).
fn put_test_image(s: &Store, name: &str, layer: &[u8]) -> (ImageRecord, Digest) {
    let layer_d = s.put_blob(layer).unwrap();
    let mut cfg = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    cfg.rootfs.diff_ids.push(layer_d.clone());
    let cfg_bytes = canonical_json(&cfg);
    let cfg_d = s.put_blob(&cfg_bytes).unwrap();
    let m = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(MEDIA_TYPE_OCI_CONFIG, cfg_d.clone(), cfg_bytes.len() as u64),
        layers: vec![Descriptor::new(
            MEDIA_TYPE_OCI_LAYER,
            layer_d.clone(),
            layer.len() as u64,
        )],
        subject: None,
        annotations: BTreeMap::new(),
    };
    let m_d = s.put_blob(&canonical_json(&m)).unwrap();
    let rec = ImageRecord {
        manifest: m_d,
        config: cfg_d,
        media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
        size: (layer.len() + cfg_bytes.len()) as u64,
        created: None,
    };
    s.put_image(name, &rec).unwrap();
    (rec, layer_d)
}

#[test]
fn ingest_verifies_and_mismatch_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let good = Digest::sha256_of(b"hello");

    let mut w = s.ingest().unwrap();
    w.write_all(b"hello").unwrap();
    assert_eq!(w.commit(Some((&good, 5))).unwrap(), (good.clone(), 5));
    assert!(s.has_blob(&good));
    assert_eq!(s.read_blob(&good, 5).unwrap(), b"hello");
    assert!(matches!(
        s.read_blob(&good, 4),
        Err(StoreError::BlobTooLarge { .. })
    ));

    // Wrong digest.
    let other = Digest::sha256_of(b"other");
    let mut w = s.ingest().unwrap();
    w.write_all(b"hellx").unwrap();
    let e = w.commit(Some((&other, 5))).unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    // Wrong size.
    let mut w = s.ingest().unwrap();
    w.write_all(b"hello!").unwrap();
    let e = w.commit(Some((&good, 5))).unwrap_err();
    assert!(matches!(e, StoreError::SizeMismatch { .. }), "{e}");
    // Dropped without commit.
    let mut w = s.ingest().unwrap();
    w.write_all(b"abandoned").unwrap();
    drop(w);

    assert!(!s.has_blob(&other));
    assert!(!s.has_blob(&Digest::sha256_of(b"abandoned")));
    assert_eq!(
        dir_entries(&t.path().join("blobs/sha256")),
        vec![good.hex().to_string()]
    );
    assert!(dir_entries(&t.path().join("ingest")).is_empty());
    // Read-only blob files.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.blob_path(&good))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444);
    assert!(matches!(
        s.open_blob(&other),
        Err(StoreError::BlobNotFound { .. })
    ));
    assert_eq!(s.blob_size(&other).unwrap(), None);
}

#[test]
fn concurrent_writers_threads() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let want = Digest::sha256_of(&data);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let (s, data, want) = (&s, &data, &want);
            scope.spawn(move || {
                let mut w = s.ingest().unwrap();
                for chunk in data.chunks(65_537) {
                    w.write_all(chunk).unwrap();
                }
                let got = w.commit(Some((want, data.len() as u64))).unwrap();
                assert_eq!(&got.0, want);
            });
        }
    });
    assert_eq!(s.read_blob(&want, 10_000_000).unwrap(), data);
    assert!(dir_entries(&t.path().join("ingest")).is_empty());
}

const CHILD_ENV: &str = "RBUILD_STORE_TEST_CHILD_ROOT";

/// Body run in child processes by `concurrent_writers_processes` (a no-op otherwise).
#[test]
fn child_process_writer() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let s = Store::open(Path::new(&root)).unwrap();
    let data = vec![7u8; 2_000_000];
    for i in 0..20 {
        let mut w = s.ingest().unwrap();
        w.write_all(&data).unwrap();
        w.commit(None).unwrap();
        let name = format!("img{}", i % 3);
        let (rec, _) = put_test_image(&s, &name, format!("layer {i}").as_bytes());
        assert!(s.get_image(&name).unwrap().is_some() || rec.size == 0);
        s.put_cache_record(&Digest::sha256_of(format!("{i}").as_bytes()), "{}")
            .unwrap();
    }
}

#[test]
fn concurrent_writers_processes() {
    let t = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_process_writer",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, t.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "child writer failed");
    }
    let s = Store::open(t.path()).unwrap();
    assert!(s.has_blob(&Digest::sha256_of(&vec![7u8; 2_000_000])));
    assert_eq!(s.list_images().unwrap().len(), 3);
    assert_eq!(s.cache_records().unwrap().len(), 20);
    assert!(dir_entries(&t.path().join("ingest")).is_empty());
    assert!(s.fsck(false).unwrap().is_clean());
}

#[test]
fn prune_keeps_images_leases_and_cache() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let (rec, layer) = put_test_image(&s, "app", b"layer-a");
    let (_, layer_b) = put_test_image(&s, "gone", b"layer-b");
    assert!(s.remove_image("gone").unwrap());
    let loose = s.put_blob(b"loose").unwrap();
    let cached = s.put_blob(b"cached layer").unwrap();
    s.put_cache_record(
        &Digest::sha256_of(b"k"),
        &format!(r#"{{"blobs":["{cached}"]}}"#),
    )
    .unwrap();
    // A compressed variant of the kept layer stays; one of the removed layer goes.
    let gz_a = s.put_blob(b"gz of a").unwrap();
    s.put_layer_variant(&layer, rbuild_oci::Compression::Gzip, &gz_a, 7)
        .unwrap();
    let gz_b = s.put_blob(b"gz of b").unwrap();
    s.put_layer_variant(&layer_b, rbuild_oci::Compression::Gzip, &gz_b, 7)
        .unwrap();

    // Backdate everything so the lease time window does not protect it.
    for e in std::fs::read_dir(t.path().join("blobs/sha256")).unwrap() {
        let f = std::fs::File::open(e.unwrap().path()).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .unwrap();
    }
    let leased = s.put_blob(b"leased").unwrap();
    let lease = s.lease("build").unwrap();
    lease.add_blob(&leased).unwrap();
    let f = std::fs::File::open(s.blob_path(&leased)).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
        .unwrap();

    let dry = s
        .prune(PruneOptions {
            all: false,
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert!(s.has_blob(&loose));
    let r = s.prune(PruneOptions::default()).unwrap();
    assert_eq!(dry, r);
    // layer_b, its config and manifest, loose, gz_b.
    assert_eq!(r.blobs_removed, 5, "{r:?}");
    assert_eq!(r.layer_variants_removed, 1);
    for d in [&layer, &rec.manifest, &rec.config, &cached, &gz_a, &leased] {
        assert!(s.has_blob(d), "{d} was removed");
    }
    assert!(!s.has_blob(&loose) && !s.has_blob(&layer_b) && !s.has_blob(&gz_b));
    let du = s.disk_usage().unwrap();
    assert_eq!(du.images, 1);
    assert_eq!(du.reclaimable_bytes, 0, "{du:?}");
    assert!(du.cache_bytes > 0);

    // --all drops cache records and what only they kept, but not the leased blob.
    let r = s
        .prune(PruneOptions {
            all: true,
            dry_run: false,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.cache_records_removed, 1);
    assert!(!s.has_blob(&cached));
    assert!(s.has_blob(&leased));
    drop(lease);
    s.prune(PruneOptions::default()).unwrap();
    assert!(!s.has_blob(&leased));
    assert!(s.has_blob(&layer));
}

#[test]
fn prune_keeps_blobs_written_during_a_live_lease() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let _lease = s.lease("build").unwrap();
    // Written by the build, not yet named anywhere.
    let fresh = s.put_blob(b"fresh layer").unwrap();
    let r = s
        .prune(PruneOptions {
            all: true,
            dry_run: false,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.blobs_removed, 0);
    assert!(s.has_blob(&fresh));
}

#[test]
fn fsck_finds_flipped_byte_and_repairs() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let (_, layer) = put_test_image(&s, "app", b"layer content here");
    assert!(s.fsck(false).unwrap().is_clean());

    // Flip a byte (blobs are read-only files; we are their owner).
    let p = s.blob_path(&layer);
    let mut data = std::fs::read(&p).unwrap();
    data[3] ^= 0x20;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&p, &data).unwrap();
    std::fs::write(t.path().join("blobs/sha256/not-a-digest"), b"x").unwrap();

    let r = s.fsck(false).unwrap();
    assert_eq!(r.corrupt_blobs, vec![layer.clone()]);
    assert_eq!(r.stray_files.len(), 1);
    assert_eq!(r.broken_images.len(), 1, "{r:?}");
    assert!(s.has_blob(&layer), "fsck without repair changed the store");

    let r = s.fsck(true).unwrap();
    assert!(r.repaired);
    assert!(!s.has_blob(&layer));
    assert!(s.get_image("app").unwrap().is_none());
    assert!(s.fsck(false).unwrap().is_clean());
}

#[test]
fn fsck_restores_names_after_meta_db_loss() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let (a, _) = put_test_image(&s, "alpha", b"a");
    let (b, _) = put_test_image(&s, "registry.local:5000/beta:v2", b"b");
    drop(s);
    for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        let _ = std::fs::remove_file(t.path().join(f));
    }
    let s = Store::open(t.path()).unwrap();
    assert!(s.list_images().unwrap().is_empty());
    let r = s.fsck(false).unwrap();
    assert_eq!(r.names_restored.len(), 2);
    let r = s.fsck(true).unwrap();
    assert_eq!(
        r.names_restored,
        vec![
            "alpha:latest".to_string(),
            "registry.local:5000/beta:v2".to_string()
        ]
    );
    assert_eq!(s.get_image("alpha").unwrap(), Some(a));
    assert_eq!(s.get_image("registry.local:5000/beta:v2").unwrap(), Some(b));
    assert!(s.fsck(false).unwrap().is_clean());
}

#[test]
fn corrupt_meta_db_is_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let (a, _) = put_test_image(&s, "alpha", b"a");
    drop(s);
    for f in ["meta.db-wal", "meta.db-shm"] {
        let _ = std::fs::remove_file(t.path().join(f));
    }
    std::fs::write(t.path().join("meta.db"), vec![0x5a; 8192]).unwrap();
    assert!(matches!(Store::open(t.path()), Err(StoreError::Db { .. })));
    let (s, aside) = Store::open_for_repair(t.path()).unwrap();
    assert!(aside.unwrap().exists());
    let r = s.fsck(true).unwrap();
    assert_eq!(r.names_restored, vec!["alpha:latest".to_string()]);
    assert_eq!(s.get_image("alpha").unwrap(), Some(a));
}

/// A full disk: mount a tiny tmpfs as the store root (needs root; skipped otherwise).
#[test]
fn disk_full_names_the_store_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("small");
    std::fs::create_dir(&root).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&root)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping disk_full test: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&root);
    let s = Store::open(&root).unwrap();
    let big = vec![1u8; 4 << 20];
    let err = s.put_blob(&big).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("disk full") && msg.contains(&root.display().to_string()),
        "{msg}"
    );
    // Through the Write interface, too.
    let mut w = s.ingest().unwrap();
    let e = w.write_all(&big).and_then(|_| w.flush()).unwrap_err();
    assert!(w.error("write", e).is_disk_full());
    drop(w);
    assert!(dir_entries(&root.join("ingest")).is_empty());
    assert!(dir_entries(&root.join("blobs/sha256")).is_empty());
    // The store still works once there is room.
    s.put_blob(b"small").unwrap();
}
