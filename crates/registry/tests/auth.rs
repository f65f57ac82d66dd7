//! Authentication against a real registry: htpasswd Basic auth, a bearer-token flow (the proxy plays
//! the token server, in the token spec's GET form and distribution's OAuth2 POST form), identity
//! tokens (refresh tokens) issued at login and used after it, a real credential helper, TLS with a
//! private CA, login/logout, and no credentials across origins.

mod common;

use common::image::make_image;
use common::proxy::{Action, Proxy, Rule};
use common::registry::{RegistryConfig, TestRegistry};
use rbuild_oci::Platform;
use rbuild_registry::{no_progress, Client, Error, Reference, Saved};

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
    assert!(client.logout(&reg.host).await.unwrap());
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

    // This token server knows only the GET form: login's OAuth2 POST gets a 404, then GET works
    // and the password is stored (no identity token).
    let out = client.login(&proxy.host, "bob", "s3cret").await.unwrap();
    assert!(!out.identity_token);
    assert!(proxy.count("POST", "/token") >= 1);
    let cfg_json = config_json(cfg.path());
    assert!(cfg_json["auths"][&proxy.host]["identitytoken"].is_null());
    assert_eq!(cfg_json["auths"][&proxy.host]["auth"], "Ym9iOnMzY3JldA==");
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

const REFRESH: &str = "refresh-4b1d-identity";

/// A registry behind the proxy's bearer-token server, which speaks distribution's OAuth2 form and
/// issues `REFRESH` for bob's password.
async fn oauth_registry() -> (TestRegistry, Proxy) {
    let reg = TestRegistry::start(RegistryConfig::default());
    let proxy = Proxy::start(&reg.host).await;
    proxy.enable_bearer("bob", "s3cret");
    proxy.enable_oauth(REFRESH);
    proxy.watch("s3cret");
    (reg, proxy)
}

fn config_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// Every request that carried a watched secret was an OAuth2 POST to the token server.
fn secrets_only_went_to_the_token_server(proxy: &Proxy) {
    for s in proxy.seen() {
        assert!(
            !s.carries_secret || (s.method == "POST" && s.target == "/token"),
            "a secret was sent with {} {} (Authorization: {:?})",
            s.method,
            s.target,
            s.auth_scheme
        );
    }
}

/// The proxy reads a `POST /token` form after it has recorded the request; a registry request
/// arriving meanwhile (concurrent blob requests on push do) must not be marked with the form's
/// secret. Holding the form back until that request is answered makes this deterministic; it once
/// flaked `oauth_login_stores_an_identity_token_that_later_tokens_use` on a loaded machine ("a
/// secret was sent with HEAD /v2/idt/app/blobs/…", a request that carried only a bearer token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_marks_a_token_form_secret_on_its_own_request() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // No registry: the proxy answers both requests itself (the HEAD carries no token: 401).
    let proxy = Proxy::start("127.0.0.1:9").await;
    proxy.enable_bearer("bob", "s3cret");
    proxy.enable_oauth(REFRESH);
    proxy.watch("s3cret");

    let form = format!(
        "grant_type=refresh_token&client_id=rbuild&service=rbuild-test&refresh_token={REFRESH}"
    );
    let mut post = tokio::net::TcpStream::connect(&proxy.host).await.unwrap();
    post.write_all(
        format!(
            "POST /token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            proxy.host,
            form.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The proxy has recorded the POST and is waiting for its form.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.count("POST", "/token") == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", proxy.seen());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let head = reqwest::Client::new()
        .head(format!(
            "http://{}/v2/idt/app/blobs/sha256:{}",
            proxy.host,
            "a".repeat(64)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 401);
    post.write_all(form.as_bytes()).await.unwrap();
    let mut answer = String::new();
    post.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let seen = proxy.seen();
    let marked: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.carries_secret))
        .collect();
    assert_eq!(marked, [("POST", true), ("HEAD", false)], "{seen:?}");
    secrets_only_went_to_the_token_server(&proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_login_stores_an_identity_token_that_later_tokens_use() {
    require_registry!();
    let (_reg, proxy) = oauth_registry().await;
    let cfg = tempfile::tempdir().unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();

    let e = client.login(&proxy.host, "bob", "nope").await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(!cfg.path().join("config.json").exists());

    let out = client.login(&proxy.host, "bob", "s3cret").await.unwrap();
    assert!(out.identity_token);
    assert_eq!(out.saved, Saved::File(cfg.path().join("config.json")));
    let grant = proxy.oauth_requests().pop().unwrap();
    assert_eq!(grant.grant_type, "password");
    assert_eq!(grant.access_type.as_deref(), Some("offline"));
    assert_eq!(grant.client_id.as_deref(), Some("rbuild"));
    assert_eq!(grant.service.as_deref(), Some("rbuild-test"));
    // As docker writes it: the user with an empty password, and the token. No password.
    let text = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    let v = config_json(cfg.path());
    assert_eq!(v["auths"][&proxy.host]["identitytoken"], REFRESH);
    assert_eq!(v["auths"][&proxy.host]["auth"], "Ym9iOg==");

    // A new client (a new rbuild process) gets every token with the refresh-token grant.
    proxy.reset_counts();
    let before = proxy.oauth_requests().len();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 24, &[4_000, 9_000]);
    let target = Reference::parse(&format!("{}/idt/app:v1", proxy.host)).unwrap();
    client
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    proxy.add_rule(Rule::new(
        Some("GET"),
        "/v2/idt/app/blobs/",
        Action::Redirect,
        None,
    ));
    let (_e, store_b) = common::temp_store();
    let pulled = Client::new(common::test_options(cfg.path()))
        .unwrap()
        .pull(&store_b, &target, &Platform::host(), no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest, img.manifest);
    let grants = &proxy.oauth_requests()[before..];
    assert!(grants.len() >= 2, "{grants:?}");
    for g in grants {
        assert_eq!(g.grant_type, "refresh_token", "{g:?}");
        assert!(g.refresh_token_ok, "{g:?}");
        assert_eq!(g.client_id.as_deref(), Some("rbuild"));
        assert_eq!(g.service.as_deref(), Some("rbuild-test"));
        assert!(
            g.scope
                .as_deref()
                .is_some_and(|s| s.contains("repository:idt/app:")),
            "{g:?}"
        );
    }
    assert_eq!(proxy.count("GET", "/token"), 0, "the GET form was used");
    let storage: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.target.starts_with("/__storage/"))
        .collect();
    assert_eq!(
        storage.len(),
        3,
        "config and both layers fetched from storage"
    );
    assert!(storage.iter().all(|s| s.auth_scheme.is_none()));
    secrets_only_went_to_the_token_server(&proxy);

    // A revoked identity token is a clear error, without the token in it.
    let mut v = config_json(cfg.path());
    v["auths"][&proxy.host]["identitytoken"] = "revoked-token-99".into();
    std::fs::write(cfg.path().join("config.json"), v.to_string()).unwrap();
    let e = Client::new(common::test_options(cfg.path()))
        .unwrap()
        .resolve(&target)
        .await
        .unwrap_err();
    let msg = error_chain(&e);
    assert!(matches!(e, Error::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("token server answered 401"), "{msg}");
    assert!(!msg.contains("revoked-token-99"), "{msg}");
}

/// docker-credential-testhelper (testdata/registry), a helper by docker's protocol, on PATH.
/// Returns its directory (its store/ and calls log are there).
fn install_test_helper() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let bin = tempfile::tempdir().unwrap();
        let dest = bin.path().join("docker-credential-testhelper");
        std::fs::copy(
            common::testdata().join("docker-credential-testhelper"),
            &dest,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // Rust 2021: set_var is synchronized with Command's reading of the environment.
        std::env::set_var("PATH", path);
        bin
    })
    .path()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_token_in_a_credential_helper() {
    require_registry!();
    let (_reg, proxy) = oauth_registry().await;
    let helper = install_test_helper();
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        r#"{"credsStore":"testhelper","auths":{}}"#,
    )
    .unwrap();
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    let out = client.login(&proxy.host, "bob", "s3cret").await.unwrap();
    assert_eq!(out.saved, Saved::Helper("testhelper".into()));
    assert!(out.identity_token);
    // config.json keeps an empty entry; the helper holds the token under docker's "<token>" user.
    let text = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
    assert!(
        !text.contains(REFRESH) && !text.contains("s3cret"),
        "{text}"
    );
    assert_eq!(
        config_json(cfg.path())["auths"][&proxy.host],
        serde_json::json!({})
    );
    // The helper names its file after the server.
    let key = &proxy.host;
    let held: serde_json::Value =
        serde_json::from_slice(&std::fs::read(helper.join("store").join(key)).unwrap()).unwrap();
    assert_eq!(
        held,
        serde_json::json!({"ServerURL": proxy.host, "Username": "<token>", "Secret": REFRESH})
    );

    // Read back through `get`: tokens come from the refresh-token grant.
    let before = proxy.oauth_requests().len();
    let target = Reference::parse(&format!("{}/helper/app:v1", proxy.host)).unwrap();
    let (_d, store) = common::temp_store();
    let img = make_image(&store, 25, &[3_000]);
    Client::new(common::test_options(cfg.path()))
        .unwrap()
        .push(&store, &img.manifest, &target, no_progress())
        .await
        .unwrap();
    let grants = &proxy.oauth_requests()[before..];
    assert!(!grants.is_empty());
    assert!(grants
        .iter()
        .all(|g| g.grant_type == "refresh_token" && g.refresh_token_ok));
    secrets_only_went_to_the_token_server(&proxy);

    // logout erases it from the helper and drops the entry.
    let client = Client::new(common::test_options(cfg.path())).unwrap();
    assert!(client.logout(&proxy.host).await.unwrap());
    assert!(!helper.join("store").join(key).exists());
    assert!(config_json(cfg.path())["auths"].get(&proxy.host).is_none());
    let calls = std::fs::read_to_string(helper.join("calls")).unwrap();
    assert!(calls.contains(&format!("store {}", proxy.host)), "{calls}");
    assert!(calls.contains(&format!("erase {}", proxy.host)), "{calls}");
    assert!(!client.logout(&proxy.host).await.unwrap());
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
