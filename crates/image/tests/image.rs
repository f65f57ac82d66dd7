//! Export/import checked against real tools (skopeo, umoci) and round trips through `load`.

use rbuild_image::{
    ensure_compressed, export_docker_archive, export_oci, image_record, layer_blobs, load,
    read_config, read_manifest, write_image, ImageError, OciDest,
};
use rbuild_oci::{Compression, Descriptor, Digest, ImageConfig, MEDIA_TYPE_OCI_LAYER};
use rbuild_store::Store;
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// A layer tar with a few files, built in memory.
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A two-layer image named `name`; returns its manifest digest.
fn make_image(store: &Store, name: &str) -> Digest {
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let l1 = layer_tar(&[
        ("bin/hello", b"#!/bin/sh\necho hello\n"),
        ("etc/motd", b"hi\n"),
    ]);
    let l2 = layer_tar(&[("data/big.bin", &big)]);
    let mut layers = Vec::new();
    let mut cfg = ImageConfig {
        architecture: rbuild_oci::host_arch().into(),
        os: "linux".into(),
        created: Some("2024-01-01T00:00:00Z".into()),
        ..Default::default()
    };
    cfg.config.env = vec!["PATH=/bin".into()];
    cfg.config.cmd = Some(vec!["/bin/hello".into()]);
    for l in [l1, l2] {
        let d = store.put_blob(&l).unwrap();
        cfg.rootfs.diff_ids.push(d.clone());
        layers.push(Descriptor::new(MEDIA_TYPE_OCI_LAYER, d, l.len() as u64));
    }
    let (m, _c) = write_image(store, &cfg, &layers).unwrap();
    store
        .put_image(name, &image_record(store, &m).unwrap())
        .unwrap();
    m
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping the {tool} part of this test: {tool} is not installed");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn oci_archive_is_valid_for_skopeo_and_umoci() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let m = make_image(&store, "demo:v1");
    let tar_path = t.path().join("demo.tar");
    let mut f = std::fs::File::create(&tar_path).unwrap();
    let exported = export_oci(
        &store,
        &m,
        &["demo:v1".into()],
        Some(Compression::Gzip),
        OciDest::Tar(&mut f),
    )
    .unwrap();
    drop(f);
    assert_ne!(exported, m, "layers were gzipped, so the manifest changed");
    // Deterministic: a second export is byte-identical (and compresses nothing again).
    let mut again = Vec::new();
    export_oci(
        &store,
        &m,
        &["demo:v1".into()],
        Some(Compression::Gzip),
        OciDest::Tar(&mut again),
    )
    .unwrap();
    assert_eq!(std::fs::read(&tar_path).unwrap(), again);

    if have("skopeo") {
        let out = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}:v1", tar_path.display())));
        let v = json(&out);
        assert_eq!(v["Digest"], exported.to_string());
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
        assert_eq!(v["Env"][0], "PATH=/bin");
    }
    if have("umoci") {
        let layout = t.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&layout));
        let bundle = t.path().join("bundle");
        run(Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:v1", layout.display()))
            .arg(&bundle));
        let hello = std::fs::read_to_string(bundle.join("rootfs/bin/hello")).unwrap();
        assert!(hello.contains("echo hello"));
        assert_eq!(
            std::fs::metadata(bundle.join("rootfs/data/big.bin"))
                .unwrap()
                .len(),
            5_000_000
        );
    }
}

#[test]
fn docker_archive_is_valid_for_skopeo() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let m = make_image(&store, "demo:v1");
    let path = t.path().join("docker.tar");
    export_docker_archive(
        &store,
        &m,
        &["demo:v1".into()],
        std::fs::File::create(&path).unwrap(),
    )
    .unwrap();
    if !have("skopeo") {
        return;
    }
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", path.display())));
    let v = json(&out);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["RepoTags"], serde_json::json!([]), "{v}");
    let cfg = json(&run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", path.display()))));
    let ours = read_config(&store, &read_manifest(&store, &m).unwrap().config.digest).unwrap();
    assert_eq!(
        cfg["rootfs"]["diff_ids"],
        serde_json::to_value(&ours.rootfs.diff_ids).unwrap()
    );
}

#[test]
fn load_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let m = make_image(&store, "demo:v1");
    let rec = store.get_image("demo:v1").unwrap().unwrap();

    // OCI archive, uncompressed layers: the very same manifest and config.
    let oci = t.path().join("oci.tar");
    export_oci(
        &store,
        &m,
        &["demo:v1".into(), "other/name".into()],
        None,
        OciDest::Tar(&mut std::fs::File::create(&oci).unwrap()),
    )
    .unwrap();
    let fresh = Store::open(&t.path().join("fresh1")).unwrap();
    let loaded = load(&fresh, &oci).unwrap();
    assert_eq!(loaded.len(), 2);
    assert_eq!(loaded[0].manifest, m);
    assert_eq!(loaded[0].config, rec.config);
    assert_eq!(loaded[0].name.as_deref(), Some("demo:v1"));
    assert_eq!(loaded[1].name.as_deref(), Some("other/name:latest"));
    assert_eq!(fresh.get_image("demo:v1").unwrap().unwrap(), rec);

    // Gzip-compressed tar of it.
    let gz = t.path().join("oci.tar.gz");
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut std::fs::File::open(&oci).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
    }
    let fresh = Store::open(&t.path().join("fresh2")).unwrap();
    assert_eq!(load(&fresh, &gz).unwrap()[0].manifest, m);

    // zstd layers in an OCI layout directory.
    let dir = t.path().join("layout");
    let zm = export_oci(
        &store,
        &m,
        &["demo:zstd".into()],
        Some(Compression::Zstd),
        OciDest::Dir(&dir),
    )
    .unwrap();
    // A second image into the same layout keeps the first.
    export_oci(&store, &m, &["demo:v1".into()], None, OciDest::Dir(&dir)).unwrap();
    let fresh = Store::open(&t.path().join("fresh3")).unwrap();
    let loaded = load(&fresh, &dir).unwrap();
    assert_eq!(loaded.len(), 2);
    let z = fresh.get_image("demo:zstd").unwrap().unwrap();
    assert_eq!((z.manifest, z.config.clone()), (zm, rec.config.clone()));
    for l in layer_blobs(&fresh, &z_manifest(&fresh)).unwrap() {
        assert_eq!(l.blob.media_type, Compression::Zstd.oci_layer_media_type());
    }

    // docker-archive: layers stored as is, the OCI manifest we write for them is our original.
    let da = t.path().join("docker.tar");
    export_docker_archive(
        &store,
        &m,
        &["demo:v1".into()],
        std::fs::File::create(&da).unwrap(),
    )
    .unwrap();
    let fresh = Store::open(&t.path().join("fresh4")).unwrap();
    let loaded = load(&fresh, &da).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].config, rec.config);
    assert_eq!(loaded[0].manifest, m);
    assert!(fresh.fsck(false).unwrap().is_clean());
}

fn z_manifest(store: &Store) -> Digest {
    store.get_image("demo:zstd").unwrap().unwrap().manifest
}

#[test]
fn load_skopeo_produced_layouts() {
    if !have("skopeo") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let m = make_image(&store, "demo:v1");
    let config = store.get_image("demo:v1").unwrap().unwrap().config;
    let ours = t.path().join("ours");
    export_oci(
        &store,
        &m,
        &["demo:v1".into()],
        Some(Compression::Gzip),
        OciDest::Dir(&ours),
    )
    .unwrap();

    let sk_oci = t.path().join("sk-oci");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:v1", ours.display()))
        .arg(format!("oci:{}:skopeo-tag", sk_oci.display())));
    let fresh = Store::open(&t.path().join("fresh1")).unwrap();
    let loaded = load(&fresh, &sk_oci).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].config, config);
    assert_eq!(loaded[0].name.as_deref(), Some("skopeo-tag:latest"));

    let sk_da = t.path().join("sk-docker.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:v1", ours.display()))
        .arg(format!(
            "docker-archive:{}:example.com/app:1.0",
            sk_da.display()
        )));
    let fresh = Store::open(&t.path().join("fresh2")).unwrap();
    let loaded = load(&fresh, &sk_da).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].config, config);
    assert_eq!(loaded[0].name.as_deref(), Some("example.com/app:1.0"));
    let rec = fresh.get_image("example.com/app:1.0").unwrap().unwrap();
    let layers = layer_blobs(&fresh, &rec.manifest).unwrap();
    assert_eq!(layers.len(), 2);
    // A layer we can read back is exactly the original content.
    let mut data = Vec::new();
    fresh
        .open_blob(&layers[0].blob.digest)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(Digest::sha256_of(&data), layers[0].diff_id);
}

#[test]
fn compression_is_memoized_and_verified() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let m = make_image(&store, "demo");
    let layers = layer_blobs(&store, &m).unwrap();
    let l = &layers[1];
    let gz = ensure_compressed(&store, &l.blob, &l.diff_id, Compression::Gzip, None).unwrap();
    assert_eq!(
        store
            .get_layer_variant(&l.diff_id, Compression::Gzip)
            .unwrap(),
        Some((gz.digest.clone(), gz.size))
    );
    let mtime = std::fs::metadata(store.blob_path(&gz.digest))
        .unwrap()
        .modified()
        .unwrap();
    let again = ensure_compressed(&store, &l.blob, &l.diff_id, Compression::Gzip, None).unwrap();
    assert_eq!(again, gz);
    assert_eq!(
        std::fs::metadata(store.blob_path(&gz.digest))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    // gzip -> zstd goes through the uncompressed content and checks the diff_id.
    let z = ensure_compressed(&store, &gz, &l.diff_id, Compression::Zstd, None).unwrap();
    assert_eq!(z.media_type, Compression::Zstd.oci_layer_media_type());
    // A wrong diff_id is caught.
    let wrong = Digest::sha256_of(b"wrong");
    let e = ensure_compressed(&store, &gz, &wrong, Compression::Zstd, None).unwrap_err();
    assert!(matches!(e, ImageError::DiffIdMismatch { .. }), "{e}");
}

/// A tar built by hand, for hostile archives.
fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        // Bypass the tar crate's path checks: write the name bytes directly.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn hostile_archives_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let p = t.path().join("evil.tar");

    std::fs::write(
        &p,
        raw_tar(&[("../escape", b"x"), ("manifest.json", b"[]")]),
    )
    .unwrap();
    assert!(matches!(
        load(&store, &p),
        Err(ImageError::UnsafeEntryName { .. })
    ));

    std::fs::write(&p, raw_tar(&[("/etc/passwd", b"x")])).unwrap();
    assert!(matches!(
        load(&store, &p),
        Err(ImageError::UnsafeEntryName { .. })
    ));

    let fake = format!("blobs/sha256/{}", "a".repeat(64));
    std::fs::write(
        &p,
        raw_tar(&[(&fake, b"not matching"), ("index.json", b"{}")]),
    )
    .unwrap();
    assert!(matches!(
        load(&store, &p),
        Err(ImageError::ArchiveBlob { .. })
    ));

    let huge = vec![b' '; (rbuild_oci::MAX_MANIFEST_SIZE + 1) as usize];
    std::fs::write(&p, raw_tar(&[("manifest.json", &huge)])).unwrap();
    assert!(matches!(
        load(&store, &p),
        Err(ImageError::DocumentTooLarge { .. })
    ));

    std::fs::write(&p, raw_tar(&[("hello.txt", b"hi")])).unwrap();
    assert!(matches!(
        load(&store, &p),
        Err(ImageError::NotAnImage { .. })
    ));

    std::fs::write(&p, b"garbage that is not a tar at all").unwrap();
    assert!(load(&store, &p).is_err());

    assert!(store.list_images().unwrap().is_empty());
    assert!(std::fs::read_dir(t.path().join("store/ingest"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn docker_archive_with_wrong_diff_id_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let layer = layer_tar(&[("a", b"a")]);
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::sha256_of(b"something else")
    );
    let manifest = r#"[{"Config":"config.json","RepoTags":["x:1"],"Layers":["l.tar"]}]"#;
    let p = t.path().join("bad.tar");
    std::fs::write(
        &p,
        raw_tar(&[
            ("config.json", cfg.as_bytes()),
            ("l.tar", &layer),
            ("manifest.json", manifest.as_bytes()),
        ]),
    )
    .unwrap();
    assert!(matches!(
        load(&store, &p),
        Err(ImageError::DiffIdMismatch { .. })
    ));
    assert!(store.get_image("x:1").unwrap().is_none());
    let _ = Path::new("");
}

#[test]
fn write_image_checks_its_inputs() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let layer = layer_tar(&[("a", b"a")]);
    let d = store.put_blob(&layer).unwrap();
    let desc = Descriptor::new(MEDIA_TYPE_OCI_LAYER, d.clone(), layer.len() as u64);
    let cfg = ImageConfig::default();
    assert!(matches!(
        write_image(&store, &cfg, std::slice::from_ref(&desc)),
        Err(ImageError::LayerCountMismatch { .. })
    ));
    let mut cfg = ImageConfig::default();
    cfg.rootfs.diff_ids.push(Digest::sha256_of(b"absent"));
    let absent = Descriptor::new(MEDIA_TYPE_OCI_LAYER, Digest::sha256_of(b"absent"), 6);
    assert!(matches!(
        write_image(&store, &cfg, &[absent]),
        Err(ImageError::MissingBlob { .. })
    ));
    // Same inputs, same digests.
    cfg.rootfs.diff_ids = vec![d];
    let a = write_image(&store, &cfg, std::slice::from_ref(&desc)).unwrap();
    let b = write_image(&store, &cfg, &[desc]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn compression_levels_give_different_blobs_of_the_same_content() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    // Text-like content, compressible to different degrees by different levels.
    let mut text = Vec::new();
    let mut x = 12345u32;
    while text.len() < 2_000_000 {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        let w = [
            "alpha", "beta", "gamma", "delta", "layer", "image", "rbuild",
        ][(x >> 16) as usize % 7];
        text.extend_from_slice(w.as_bytes());
        text.extend_from_slice(format!(" {} ", (x >> 8) % 1000).as_bytes());
    }
    let l = layer_tar(&[("data/words.txt", &text)]);
    let diff_id = store.put_blob(&l).unwrap();
    let layer = Descriptor::new(MEDIA_TYPE_OCI_LAYER, diff_id.clone(), l.len() as u64);
    let unpack = |d: &Descriptor, c: Compression| -> Digest {
        let mut raw = Vec::new();
        store
            .open_blob(&d.digest)
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        let mut out = Vec::new();
        match c {
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(&raw[..])
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Compression::None => out = raw,
        }
        Digest::sha256_of(&out)
    };
    for (c, lo, hi) in [(Compression::Gzip, 1, 9), (Compression::Zstd, 1, 19)] {
        let default = ensure_compressed(&store, &layer, &diff_id, c, None).unwrap();
        let fast = ensure_compressed(&store, &layer, &diff_id, c, Some(lo)).unwrap();
        let small = ensure_compressed(&store, &layer, &diff_id, c, Some(hi)).unwrap();
        assert!(
            small.size < fast.size,
            "{c:?}: level {hi} gave {} bytes, level {lo} {} bytes",
            small.size,
            fast.size
        );
        assert_ne!(fast.digest, default.digest, "{c:?}");
        for d in [&default, &fast, &small] {
            assert_eq!(unpack(d, c), diff_id, "{c:?} {}", d.digest);
        }
        // Only the default level is remembered; a level is deterministic.
        assert_eq!(
            store.get_layer_variant(&diff_id, c).unwrap(),
            Some((default.digest.clone(), default.size))
        );
        let again = ensure_compressed(&store, &layer, &diff_id, c, Some(lo)).unwrap();
        assert_eq!(again, fast);
        // An explicit default level is the remembered blob.
        let dflt = if c == Compression::Gzip { 6 } else { 3 };
        let explicit = ensure_compressed(&store, &layer, &diff_id, c, Some(dflt)).unwrap();
        assert_eq!(explicit, default);
    }
    // Out-of-range levels are clear errors.
    let e = ensure_compressed(&store, &layer, &diff_id, Compression::Gzip, Some(10)).unwrap_err();
    assert!(
        e.to_string()
            .contains("gzip compression level 10 is out of range (0-9)"),
        "{e}"
    );
    let e = ensure_compressed(&store, &layer, &diff_id, Compression::Zstd, Some(0)).unwrap_err();
    assert!(e.to_string().contains("out of range (1-22)"), "{e}");
}
