//! Push and pull against a real docker-registry: round-trip digests, skopeo sees the same image,
//! nothing moves twice, cross-repository mounts, chunked uploads, missing repositories.

mod common;

use common::image::make_image;
use common::proxy::Proxy;
use common::registry::{RegistryConfig, TestRegistry};
use rbuild_oci::Platform;
use rbuild_registry::{no_progress, Client, Error, Progress, Reference};
use std::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_round_trip_and_skopeo_agrees() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_a, store_a) = common::temp_store();
    let img = make_image(&store_a, 1, &[20_000, 70_000]);
    let target = Reference::parse(&format!("{}/team/app:v1", reg.host)).unwrap();

    let events = Mutex::new(Vec::new());
    let record = |p: Progress| events.lock().unwrap().push(p);
    let report = client
        .push(&store_a, &img.manifest, &target, &record)
        .await
        .unwrap();
    assert_eq!(report.manifest, img.manifest);
    assert_eq!(report.blobs_uploaded, 3);
    assert_eq!(report.bytes_uploaded, img.blob_bytes());
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Progress::Done { .. })));

    // Pushing again moves no blob bytes.
    let again = client
        .push(&store_a, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    assert_eq!((again.bytes_uploaded, again.blobs_skipped), (0, 3));

    // skopeo sees the same manifest digest, and copies it into an OCI layout unchanged.
    if common::have("skopeo") {
        let out = std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                &format!("docker://{}/team/app:v1", reg.host),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Digest"], img.manifest.to_string());
        let layout = tempfile::tempdir().unwrap();
        let dest = format!("oci:{}:v1", layout.path().join("l").display());
        let st = std::process::Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{}/team/app:v1", reg.host),
                &dest,
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.path().join("l/index.json")).unwrap())
                .unwrap();
        assert_eq!(index["manifests"][0]["digest"], img.manifest.to_string());
    } else {
        eprintln!("SKIP skopeo part: skopeo not installed");
    }

    // Pull into an empty store: same digests, every blob present.
    let (_b, store_b) = common::temp_store();
    let pulled = client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, img.manifest);
    assert_eq!(pulled.config, img.config.digest);
    assert_eq!(pulled.index, None);
    assert_eq!(pulled.bytes_downloaded, img.blob_bytes());
    assert_eq!(pulled.resolved.digest(), Some(&img.manifest));
    for d in img.blobs() {
        assert!(store_b.has_blob(&d.digest), "{} missing", d.digest);
    }
    assert_eq!(
        store_b.read_blob(&img.manifest, 1 << 20).unwrap(),
        img.manifest_bytes
    );
    // A second pull downloads nothing.
    let again = client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(again.bytes_downloaded, 0);
    // Resolve by digest agrees.
    let r = client
        .resolve(&target.with_digest(img.manifest.clone()))
        .await
        .unwrap();
    assert_eq!(r.digest, img.manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mount_moves_no_bytes() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_a, store) = common::temp_store();
    let img = make_image(&store, 2, &[30_000]);
    let first = Reference::parse(&format!("{}/one/app:v1", proxy.host)).unwrap();
    let second = Reference::parse(&format!("{}/two/app:v1", proxy.host)).unwrap();
    client
        .push(&store, &img.manifest, &first, no_progress())
        .await
        .unwrap();
    proxy.reset_counts();
    let report = client
        .push(&store, &img.manifest, &second, no_progress())
        .await
        .unwrap();
    assert_eq!(report.blobs_mounted, 2, "{report:?}");
    assert_eq!(report.bytes_uploaded, 0);
    assert_eq!(proxy.count("POST", "mount="), 2);
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 0);

    // A stale hint (the "from" repository lacks the blob): the registry answers 202 and we upload.
    let other = make_image(&store, 3, &[10_000]);
    for d in other.blobs() {
        client.known_locations().add(
            &d.digest,
            &Reference::parse(&format!("{}/nowhere/x", proxy.host)).unwrap(),
        );
    }
    let third = Reference::parse(&format!("{}/three/app:v1", proxy.host)).unwrap();
    let report = client
        .push(&store, &other.manifest, &third, no_progress())
        .await
        .unwrap();
    assert_eq!(
        (report.blobs_mounted, report.blobs_uploaded),
        (0, 2),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_follows_server_range() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    let cfg = tempfile::tempdir().unwrap();
    let mut opts = common::test_options(cfg.path());
    opts.monolithic_upload_limit = 256 << 10;
    opts.chunk_size = 300 << 10;
    let client = Client::new(opts).unwrap();
    let (_a, store) = common::temp_store();
    let img = make_image(&store, 4, &[1_000_000]);
    let target = Reference::parse(&format!("{}/big/app:v1", proxy.host)).unwrap();
    let report = client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    assert_eq!(report.bytes_uploaded, img.blob_bytes());
    assert_eq!(
        proxy.count("PATCH", "/blobs/uploads/"),
        4,
        "1 MB in 300 KiB chunks"
    );
    let (_b, store_b) = common::temp_store();
    let pulled = client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, img.manifest);
    assert!(store_b.has_blob(&img.layers[0].digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repository_and_tag_are_clear_errors() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_a, store) = common::temp_store();
    let r = Reference::parse(&format!("{}/does/not-exist:v1", reg.host)).unwrap();
    let e = client
        .pull(&store, &r, &Platform::host(), no_progress())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("does/not-exist") && msg.contains("not found"),
        "{msg}"
    );
    assert!(
        msg.contains("NAME_UNKNOWN") || msg.contains("MANIFEST_UNKNOWN"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_picks_the_host_platform() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_a, store) = common::temp_store();
    let host_img = make_image(&store, 5, &[5_000]);
    let other_img = make_image(&store, 6, &[5_000]);
    let desc = |img: &common::image::TestImage, arch: &str| {
        let mut d = rbuild_oci::Descriptor::new(
            rbuild_oci::MEDIA_TYPE_OCI_MANIFEST,
            img.manifest.clone(),
            img.manifest_bytes.len() as u64,
        );
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        });
        d
    };
    let other_arch = if rbuild_oci::host_arch() == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let index = rbuild_oci::Index {
        schema_version: 2,
        media_type: Some(rbuild_oci::MEDIA_TYPE_OCI_INDEX.into()),
        manifests: vec![
            desc(&other_img, other_arch),
            desc(&host_img, rbuild_oci::host_arch()),
        ],
        annotations: Default::default(),
    };
    let index_digest = store.put_blob(&rbuild_oci::canonical_json(&index)).unwrap();
    let target = Reference::parse(&format!("{}/multi/app:v1", reg.host)).unwrap();
    client
        .push(&store, &index_digest, &target, no_progress())
        .await
        .unwrap();
    let (_b, store_b) = common::temp_store();
    let pulled = client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.index, Some(index_digest.clone()));
    assert_eq!(pulled.manifest, host_img.manifest);
    assert!(
        !store_b.has_blob(&other_img.layers[0].digest),
        "other platform's layer fetched"
    );
    let want = Platform {
        architecture: "riscv64".into(),
        os: "linux".into(),
        variant: None,
        os_version: None,
    };
    let e = client
        .pull(&store_b, &target, &want, no_progress())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("linux/riscv64"), "{e}");
}
