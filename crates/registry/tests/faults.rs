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

/// Issue 14 item 6: a server that never answers, answers headers then nothing, or trickles a byte a
/// second fails the pull within the timeout budget (retries included), naming the URL; nothing
/// partial stays. The timeouts are scaled down (first byte 1s, 1 KiB/s over 2s, budget 4s); the
/// defaults (20s, 1 KiB/s over 20s, 40s) give about a minute in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_servers_fail_within_the_timeout_budget() {
    require_registry!();
    let s = setup().await;
    let cfg = tempfile::tempdir().unwrap();
    let opts = rbuild_registry::Options {
        first_byte_timeout: Duration::from_secs(1),
        speed_limit: 1024,
        speed_time: Duration::from_secs(2),
        timeout_budget: Duration::from_secs(4),
        stall_timeout: Duration::from_secs(60),
        deadline: Duration::from_secs(600),
        ..common::test_options(cfg.path())
    };
    let cases = [
        (Action::NeverAnswer, "no response within 1s"),
        (Action::HeadersThenSilence, "transfer too slow: 0 bytes"),
        (Action::Trickle, "transfer too slow"),
    ];
    for (action, want) in cases {
        s.proxy.clear_rules();
        s.proxy.add_rule(Rule::new(
            Some("GET"),
            &layer_path(&s),
            action.clone(),
            None,
        ));
        let client = Client::new(opts.clone()).unwrap();
        let (_d, store) = common::temp_store();
        let start = Instant::now();
        let e = client
            .pull(&store, &s.target, &Platform::host(), no_progress())
            .await
            .unwrap_err();
        let took = start.elapsed();
        let msg = e.to_string();
        eprintln!("{action:?}: failed after {took:.1?}: {msg}");
        // The budget (4s) plus one last attempt (2s) and slack for a loaded machine.
        assert!(took < Duration::from_secs(15), "{action:?}: took {took:?}");
        assert!(
            msg.contains(want) && msg.contains(&layer_path(&s)) && msg.contains("gave up"),
            "{action:?}: {msg}"
        );
        assert_no_layer(&store, &s);
    }
}

/// Issue 14 item 7 (CVE-2021-41190): a manifest or index whose fields and media types disagree,
/// or that has both `manifests` and `layers`, is refused with an error naming its digest, and
/// nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_documents_are_refused() {
    require_registry!();
    let s = setup().await;
    let config = format!(
        r#"{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}}"#,
        rbuild_oci::Digest::sha256_of(b"{}")
    );
    let layer = format!(
        r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
        s.img.layers[0].digest, s.img.layers[0].size
    );
    let oci_m = "application/vnd.oci.image.manifest.v1+json";
    let oci_i = "application/vnd.oci.image.index.v1+json";
    let cases = [
        (
            "both manifests and layers",
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{oci_m}","config":{config},"layers":[{layer}],"manifests":[]}}"#
            ),
            oci_m,
            "both",
        ),
        (
            "index fields, manifest mediaType",
            format!(r#"{{"schemaVersion":2,"mediaType":"{oci_m}","manifests":[]}}"#),
            oci_m,
            "its mediaType",
        ),
        (
            "manifest fields, index Content-Type",
            format!(r#"{{"schemaVersion":2,"config":{config},"layers":[{layer}]}}"#),
            oci_i,
            "Content-Type",
        ),
        (
            "manifest mediaType, index Content-Type",
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{oci_m}","config":{config},"layers":[{layer}]}}"#
            ),
            oci_i,
            "Content-Type",
        ),
    ];
    for (name, body, content_type, want) in cases {
        s.proxy.clear_rules();
        s.proxy.add_rule(Rule::new(
            Some("GET"),
            "/manifests/",
            Action::Serve(body.clone(), content_type.to_string()),
            None,
        ));
        let (_d, store) = common::temp_store();
        let e = s
            .client
            .pull(&store, &s.target, &Platform::host(), no_progress())
            .await
            .unwrap_err();
        let msg = e.to_string();
        let digest = rbuild_oci::Digest::sha256_of(body.as_bytes()).to_string();
        assert!(
            msg.contains("ambiguous") && msg.contains(&digest) && msg.contains(want),
            "{name}: {msg}"
        );
        assert!(
            !store.has_blob(&s.img.layers[0].digest),
            "{name}: a layer was fetched"
        );
    }
}
