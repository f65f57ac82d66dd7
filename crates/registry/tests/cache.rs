//! The build cache as an OCI artifact in a real registry: push it, read it back lazily (config
//! first, a layer only when asked), and mount its layers when an image is pushed to the same
//! registry.

mod common;

use common::image::make_image;
use common::proxy::Proxy;
use common::registry::{RegistryConfig, TestRegistry};
use rbuild_registry::{no_progress, CacheConfig, Client, Reference, CACHE_ARTIFACT_TYPE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_artifact_round_trip_is_lazy_and_mounts() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    let cfg = tempfile::tempdir().unwrap();

    // Machine A: an image's layers become cache records, exported to the registry.
    let client_a = Client::new(common::test_options(cfg.path())).unwrap();
    let (_a, store_a) = common::temp_store();
    let img = make_image(&store_a, 30, &[40_000, 50_000, 60_000]);
    let mut cache = CacheConfig::new();
    for i in 0..img.layers.len() {
        cache
            .records
            .insert(format!("key{i}"), img.layers[..=i].to_vec());
    }
    let cache_ref = Reference::parse(&format!("{}/ci/cache:main", proxy.host)).unwrap();
    let pushed = client_a
        .push_cache(&store_a, &cache_ref, &cache, no_progress())
        .await
        .unwrap();
    assert_eq!(pushed.blobs_uploaded, 4, "config + 3 layers");

    // Machine B: reads the artifact — manifest and config only.
    proxy.reset_counts();
    let client_b = Client::new(common::test_options(cfg.path())).unwrap();
    let (_b, store_b) = common::temp_store();
    let art = client_b.pull_artifact(&store_b, &cache_ref).await.unwrap();
    assert_eq!(art.manifest_digest, pushed.manifest);
    assert_eq!(
        art.manifest.artifact_type.as_deref(),
        Some(CACHE_ARTIFACT_TYPE)
    );
    assert_eq!(art.cache_config().unwrap(), cache);
    assert_eq!(
        proxy.count("GET", "/blobs/"),
        1,
        "only the config blob was fetched"
    );
    for l in &img.layers {
        assert!(!store_b.has_blob(&l.digest));
    }

    // A later step needs the second layer's content: fetched on demand, once.
    let wanted = &art.cache_config().unwrap().records["key1"][1];
    let n = client_b
        .fetch_blob(&store_b, &cache_ref, wanted, no_progress())
        .await
        .unwrap();
    assert_eq!(n, wanted.size);
    assert!(store_b.has_blob(&wanted.digest));
    assert_eq!(proxy.count("GET", "/blobs/"), 2);
    assert_eq!(
        client_b
            .fetch_blob(&store_b, &cache_ref, wanted, no_progress())
            .await
            .unwrap(),
        0
    );

    // B pushes the image (whose layers it mostly never downloaded) to another repository of the
    // same registry: the layers are mounted from the cache repository, not uploaded.
    store_b.put_blob(&img.manifest_bytes).unwrap();
    let cfg_bytes = store_a.read_blob(&img.config.digest, 1 << 20).unwrap();
    store_b.put_blob(&cfg_bytes).unwrap();
    proxy.reset_counts();
    let target = Reference::parse(&format!("{}/ci/app:v1", proxy.host)).unwrap();
    let report = client_b
        .push(&store_b, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    assert_eq!(report.blobs_mounted, 3, "{report:?}");
    assert_eq!(report.blobs_uploaded, 1, "only the image config is new");
    assert_eq!(
        proxy.count("GET", "/blobs/"),
        0,
        "nothing downloaded to push"
    );

    // An export that references a layer neither in the store nor known anywhere is a clear error.
    let (_c, store_c) = common::temp_store();
    let client_c = Client::new(common::test_options(cfg.path())).unwrap();
    let stray = make_image(&store_a, 31, &[1_000]);
    let mut bad = CacheConfig::new();
    bad.records.insert("k".into(), stray.layers.clone());
    let e = client_c
        .push_cache(&store_c, &cache_ref, &bad, no_progress())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&stray.layers[0].digest.to_string()),
        "{e}"
    );
}
