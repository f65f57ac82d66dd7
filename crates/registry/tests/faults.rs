//! Faults injected by the proxy between client and a real registry: each one either recovers or
//! fails with an error naming the URL and digest, never leaves a corrupt blob in the store, and
//! never outlives the deadline.

mod common;

use common::image::{make_image, TestImage};
use common::proxy::{Action, Proxy, Rule};
use common::registry::{RegistryConfig, TestRegistry};
use rbuild_oci::Platform;
use rbuild_registry::{no_progress, Client, Error, Reference};
use std::time::{Duration, Instant};

struct Setup {
    _reg: TestRegistry,
    proxy: Proxy,
    client: Client,
    _cfg: tempfile::TempDir,
    img: TestImage,
    target: Reference,
}

/// A registry holding one pushed image, a proxy in front, and a client talking to the proxy.
async fn setup() -> Setup {
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 10, &[200_000, 3_000]);
    let target = Reference::parse(&format!("{}/faults/app:v1", proxy.host)).unwrap();
    client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    proxy.reset_counts();
    // A fresh client so nothing is cached from the push.
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    Setup {
        _reg: reg,
        proxy,
        client,
        _cfg: cfg,
        img,
        target,
    }
}

fn layer_path(s: &Setup) -> String {
    format!("/blobs/{}", s.img.layers[0].digest)
}

fn assert_no_layer(store: &rbuild_store::Store, s: &Setup) {
    assert!(
        !store.has_blob(&s.img.layers[0].digest),
        "a corrupt or partial blob reached the store"
    );
    assert!(
        !store.has_blob(&s.img.manifest),
        "the manifest was stored although its blobs are not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_a_digest_error_naming_url_and_digests() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &layer_path(&s),
        Action::FlipByte,
        None,
    ));
    let (_d, store) = common::temp_store();
    let e = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&layer_path(&s)) && msg.contains(&s.img.layers[0].digest.to_string()),
        "{msg}"
    );
    assert_no_layer(&store, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob_resumes_with_range() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &layer_path(&s),
        Action::Truncate,
        Some(1),
    ));
    let (_d, store) = common::temp_store();
    let pulled = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, s.img.manifest);
    assert!(store.has_blob(&s.img.layers[0].digest));
    let ranged: Vec<_> = s
        .proxy
        .seen()
        .into_iter()
        .filter(|r| r.target.contains(&layer_path(&s)) && r.range.is_some())
        .collect();
    assert_eq!(ranged.len(), 1, "one resumed request");
    let half = s.img.layers[0].size / 2;
    assert_eq!(
        ranged[0].range.clone(),
        Some(format!("bytes={half}-")),
        "resumed where it broke"
    );
    // Nothing was downloaded twice.
    assert_eq!(pulled.bytes_downloaded, s.img.blob_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_truncated_blob_gives_up_and_stores_nothing() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &layer_path(&s),
        Action::Truncate,
        None,
    ));
    let (_d, store) = common::temp_store();
    let e = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::GaveUp { .. }), "{msg}");
    assert!(
        msg.contains(&layer_path(&s)) && msg.contains(&s.img.layers[0].digest.to_string()),
        "{msg}"
    );
    assert_no_layer(&store, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_docker_content_digest_is_caught() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        "/manifests/v1",
        Action::LieDigest,
        None,
    ));
    let (_d, store) = common::temp_store();
    let e = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::DigestHeaderMismatch { .. }), "{msg}");
    assert!(
        msg.contains("/manifests/v1") && msg.contains(&s.img.manifest.to_string()),
        "{msg}"
    );
    assert_no_layer(&store, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_once_then_ok_recovers() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &layer_path(&s),
        Action::Status(500, None),
        Some(1),
    ));
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        "/manifests/v1",
        Action::Status(503, None),
        Some(1),
    ));
    let (_d, store) = common::temp_store();
    let pulled = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, s.img.manifest);
    assert_eq!(s.proxy.count("GET", &layer_path(&s)), 2);
    assert_eq!(s.proxy.count("GET", "/manifests/v1"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_honours_retry_after() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &layer_path(&s),
        Action::Status(429, Some(1)),
        Some(1),
    ));
    let (_d, store) = common::temp_store();
    let start = Instant::now();
    s.client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 not honoured"
    );
    assert_eq!(s.proxy.count("GET", &layer_path(&s)), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_give_up_within_the_deadline() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &layer_path(&s),
        Action::Status(429, Some(60)),
        None,
    ));
    let (_d, store) = common::temp_store();
    let start = Instant::now();
    let e = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "waited past the deadline: {:?}",
        start.elapsed()
    );
    let msg = e.to_string();
    assert!(
        msg.contains("429") && msg.contains(&layer_path(&s)),
        "{msg}"
    );
    assert_no_layer(&store, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_transfer_aborts_naming_the_url() {
    require_registry!();
    let s = setup().await;
    s.proxy
        .add_rule(Rule::new(Some("GET"), &layer_path(&s), Action::Stall, None));
    let (_d, store) = common::temp_store();
    let start = Instant::now();
    let e = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap_err();
    let took = start.elapsed();
    let msg = e.to_string();
    assert!(took < Duration::from_secs(15), "hung for {took:?}");
    assert!(
        msg.contains("stalled") && msg.contains(&layer_path(&s)),
        "{msg}"
    );
    assert_no_layer(&store, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_once_then_resume() {
    require_registry!();
    let s = setup().await;
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &layer_path(&s),
        Action::Stall,
        Some(1),
    ));
    let (_d, store) = common::temp_store();
    let pulled = s
        .client
        .pull(&store, &s.target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, s.img.manifest);
    assert!(store.has_blob(&s.img.layers[0].digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_survives_a_server_error_on_upload() {
    require_registry!();
    let s = setup().await;
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 11, &[50_000]);
    s.proxy.add_rule(Rule::new(
        Some("PUT"),
        "/blobs/uploads/",
        Action::Status(500, None),
        Some(1),
    ));
    s.proxy.add_rule(Rule::new(
        Some("PUT"),
        "/manifests/",
        Action::Status(502, None),
        Some(1),
    ));
    let target = Reference::parse(&format!("{}/faults/pushed:v1", s.proxy.host)).unwrap();
    let report = s
        .client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    assert_eq!(report.blobs_uploaded, 2);
    let r = s.client.resolve(&target).await.unwrap();
    assert_eq!(r.digest, img.manifest);
}
