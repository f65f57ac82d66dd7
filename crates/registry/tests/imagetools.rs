//! Push by digest and `imagetools create` against a real docker-registry (behind the counting
//! proxy): per-platform manifests pushed with no tag, merged into an index without one layer
//! downloaded, across repositories by mounts; a platform given twice is refused or replaced.

mod common;

use common::image::{make_image, TestImage};
use common::proxy::Proxy;
use common::registry::{RegistryConfig, TestRegistry};
use rbuild_oci::{canonical_json, Descriptor, ImageConfig, Index, Manifest};
use rbuild_registry::{no_progress, Client, CreateAnnotations, DuplicatePlatform, Reference};
use rbuild_store::Store;

/// `make_image`, re-labelled as `arch` (a new config and manifest over the same layers).
fn image_for(store: &Store, seed: u64, arch: &str) -> TestImage {
    let img = make_image(store, seed, &[10_000]);
    let mut cfg: ImageConfig =
        serde_json::from_slice(&store.read_blob(&img.config.digest, 1 << 20).unwrap()).unwrap();
    cfg.architecture = arch.into();
    let cfg_bytes = canonical_json(&cfg);
    let cfg_d = store.put_blob(&cfg_bytes).unwrap();
    let mut m: Manifest = serde_json::from_slice(&img.manifest_bytes).unwrap();
    m.config = Descriptor::new(
        rbuild_oci::MEDIA_TYPE_OCI_CONFIG,
        cfg_d,
        cfg_bytes.len() as u64,
    );
    let bytes = canonical_json(&m);
    let d = store.put_blob(&bytes).unwrap();
    TestImage {
        manifest: d,
        manifest_bytes: bytes,
        config: m.config,
        layers: m.layers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_by_digest_then_merge_into_an_index() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_s, store) = common::temp_store();
    let amd = image_for(&store, 1, "amd64");
    let arm = image_for(&store, 2, "arm64");
    let repo = Reference::parse(&format!("{}/ci/app", proxy.host)).unwrap();

    // Each "runner" pushes its platform by digest: no tag is created.
    for img in [&amd, &arm] {
        let r = client
            .push(
                &store,
                &img.manifest,
                &repo.with_digest(img.manifest.clone()),
                no_progress(),
            )
            .await
            .unwrap();
        assert_eq!(r.manifest, img.manifest);
    }
    assert_eq!(proxy.count("PUT", "/manifests/latest"), 0);
    assert_eq!(proxy.count("PUT", "/manifests/sha256:"), 2);

    // Merge: an index of both, tagged twice, with index and descriptor annotations.
    proxy.reset_counts();
    let mut ann = CreateAnnotations::default();
    ann.add("index:org.opencontainers.image.version=1.0")
        .unwrap();
    ann.add("manifest-descriptor[linux/arm64]:note=arm")
        .unwrap();
    let targets = [
        repo.with_tag("1.0").unwrap(),
        repo.with_tag("latest").unwrap(),
    ];
    let sources = [
        repo.with_digest(amd.manifest.clone()),
        repo.with_digest(arm.manifest.clone()),
    ];
    let (digest, bytes) = client
        .create_index(&targets, &sources, &ann, DuplicatePlatform::Refuse, false)
        .await
        .unwrap();
    // Nothing but manifests and configs was read: no layer GET.
    for l in amd.layers.iter().chain(&arm.layers) {
        assert_eq!(proxy.count("GET", &format!("/blobs/{}", l.digest)), 0);
    }
    let idx: Index = serde_json::from_slice(&bytes).unwrap();
    let plats: Vec<String> = idx
        .manifests
        .iter()
        .map(|d| d.platform.as_ref().unwrap().format())
        .collect();
    assert_eq!(plats, ["linux/amd64", "linux/arm64"]);
    assert_eq!(idx.manifests[1].annotations["note"], "arm");
    assert!(idx.manifests[0].annotations.is_empty());
    assert_eq!(idx.annotations["org.opencontainers.image.version"], "1.0");
    for t in &targets {
        let got = client.resolve(t).await.unwrap();
        assert_eq!(got.digest, digest);
        assert!(got.is_index());
    }
    // skopeo reads the index and copies every platform out of it.
    if common::have("skopeo") {
        let out_dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("skopeo")
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{}/ci/app:1.0", reg.host))
            .arg(format!("oci:{}:x", out_dir.path().join("l").display()))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }

    // Another repository on the same registry: blobs are mounted, manifests put by digest.
    let other = Reference::parse(&format!("{}/team/merged:v1", proxy.host)).unwrap();
    proxy.reset_counts();
    let (d2, _) = client
        .create_index(
            std::slice::from_ref(&other),
            &[repo.with_tag("1.0").unwrap()],
            &CreateAnnotations::default(),
            DuplicatePlatform::Refuse,
            false,
        )
        .await
        .unwrap();
    assert!(proxy.count("POST", "mount=") >= 1);
    assert_eq!(
        proxy.count("PATCH", "/blobs/uploads/"),
        0,
        "no blob was uploaded"
    );
    let merged = client.resolve(&other).await.unwrap();
    assert_eq!(merged.digest, d2);
    for l in &amd.layers {
        assert!(client.has_blob(&other, &l.digest).await.unwrap());
    }

    // A second amd64 manifest: refused naming both, or replacing the first when asked.
    let amd2 = image_for(&store, 3, "amd64");
    client
        .push(
            &store,
            &amd2.manifest,
            &repo.with_digest(amd2.manifest.clone()),
            no_progress(),
        )
        .await
        .unwrap();
    let with_dup = [
        repo.with_digest(amd.manifest.clone()),
        repo.with_digest(arm.manifest.clone()),
        repo.with_digest(amd2.manifest.clone()),
    ];
    let tag2 = [repo.with_tag("dup").unwrap()];
    let err = client
        .create_index(&tag2, &with_dup, &ann, DuplicatePlatform::Refuse, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("platform linux/amd64 is in two sources"),
        "{err}"
    );
    assert!(err.contains(&amd.manifest.to_string()) && err.contains(&amd2.manifest.to_string()));
    assert!(
        client.resolve(&tag2[0]).await.is_err(),
        "nothing was tagged"
    );
    let (_, bytes) = client
        .create_index(&tag2, &with_dup, &ann, DuplicatePlatform::Replace, false)
        .await
        .unwrap();
    let idx: Index = serde_json::from_slice(&bytes).unwrap();
    let digests: Vec<_> = idx.manifests.iter().map(|d| d.digest.clone()).collect();
    assert_eq!(digests, [arm.manifest.clone(), amd2.manifest.clone()]);

    // A source that does not exist: a clear error naming it.
    let missing = repo.with_digest(rbuild_oci::Digest::sha256_of(b"nope"));
    let err = client
        .create_index(&tag2, &[missing], &ann, DuplicatePlatform::Refuse, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ci/app"), "{err}");
}
