//! Authentication against a real registry: htpasswd Basic auth, a bearer-token flow (the proxy plays
//! the token server), TLS with a private CA, login/logout, and no credentials across origins.

mod common;

use common::image::make_image;
use common::proxy::{Action, Proxy, Rule};
use common::registry::{RegistryConfig, TestRegistry};
use rbuild_oci::Platform;
use rbuild_registry::{no_progress, Client, Error, Reference};

fn basic_registry() -> TestRegistry {
    TestRegistry::start(RegistryConfig {
        htpasswd: Some(("alice".into(), "correct horse".into())),
        tls: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_without_wrong_and_right_credentials() {
    require_registry!();
    if !common::have("htpasswd") {
        eprintln!("SKIP: htpasswd (apache2-utils) not installed");
        return;
    }
    let reg = basic_registry();
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 20, &[4_000]);
    let target = Reference::parse(&format!("{}/private/app:v1", reg.host)).unwrap();

    // No credentials at all.
    let e = client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::Unauthorized {
                had_credentials: false,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("rbuild login") && msg.contains(&reg.host),
        "{msg}"
    );

    // Wrong password: a clear error, nothing written.
    let e = client.login(&reg.host, "alice", "wrong").await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::Unauthorized {
                had_credentials: true,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong"),
        "the password leaked into the error: {msg}"
    );
    assert!(!cfg.path().join("config.json").exists());

    // Right password: config.json (0600) and then push and pull work with it.
    client
        .login(&reg.host, "alice", "correct horse")
        .await
        .unwrap();
    let text = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
    assert!(text.contains(&reg.host), "{text}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(cfg.path().join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    let (_e, store_b) = common::temp_store();
    let pulled = client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, img.manifest);

    // Logout forgets them.
    assert!(client.logout(&reg.host).unwrap());
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    assert!(client.resolve(&target).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_caches_tokens() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    proxy.enable_bearer("bob", "s3cret");
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();

    let e = client.login(&proxy.host, "bob", "nope").await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("token server answered 401"), "{e}");

    client.login(&proxy.host, "bob", "s3cret").await.unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 21, &[4_000, 5_000, 6_000]);
    let target = Reference::parse(&format!("{}/tok/app:v1", proxy.host)).unwrap();
    let before = proxy.token_requests();
    client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    let (_e, store_b) = common::temp_store();
    client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    let used = proxy.token_requests() - before;
    // One token per scope set (push; pull), not one per request.
    assert!((1..=3).contains(&used), "{used} token requests");
    assert!(
        proxy
            .seen()
            .iter()
            .filter(|s| s.target.starts_with("/v2/tok/"))
            .count()
            > 8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_origin_carry_no_credentials() {
    require_registry!();
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    proxy.enable_bearer("bob", "s3cret");
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    client.login(&proxy.host, "bob", "s3cret").await.unwrap();
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 22, &[8_000]);
    let target = Reference::parse(&format!("{}/redir/app:v1", proxy.host)).unwrap();
    client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    // Blob GETs are redirected to http://localhost:<port>/__storage/... (another origin).
    proxy.add_rule(Rule::new(
        Some("GET"),
        "/v2/redir/app/blobs/",
        Action::Redirect,
        None,
    ));
    let (_e, store_b) = common::temp_store();
    let pulled = client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, img.manifest);
    let storage: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.target.starts_with("/__storage/"))
        .collect();
    assert_eq!(storage.len(), 2, "config and layer fetched from storage");
    assert!(
        storage.iter().all(|s| s.auth_scheme.is_none()),
        "credentials sent to another origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    require_registry!();
    if !common::have("openssl") {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let reg = TestRegistry::start(RegistryConfig {
        htpasswd: None,
        tls: true,
    });
    // 127.0.0.1 is loopback, which is plain HTTP unless HTTPS is asked for.
    let cfg = tempfile::tempdir().unwrap();
    let mut opts = common::test_options(cfg.path());
    opts.ca_file = reg.ca_file.clone();
    opts.force_https = vec![reg.host.clone()];
    let client = Client::new(opts).unwrap();
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 23, &[4_000]);
    let target = Reference::parse(&format!("{}/tls/app:v1", reg.host)).unwrap();
    client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    let (_e, store_b) = common::temp_store();
    let pulled = client
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, img.manifest);

    // Without the CA the certificate is not trusted: a clear error, after no retries.
    let mut opts = common::test_options(cfg.path());
    opts.force_https = vec![reg.host.clone()];
    let client = Client::new(opts).unwrap();
    let e = client.resolve(&target).await.unwrap_err();
    let chain = error_chain(&e);
    assert!(
        chain.contains("https://") && chain.to_lowercase().contains("certificate"),
        "{chain}"
    );
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
