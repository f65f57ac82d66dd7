//! rbuild (the CLI, as users run it) against a real registry behind a fault-injecting proxy:
//! `rbuild pull` and `FROM 127.0.0.1:PORT/busybox` when the proxy flips a byte of a layer,
//! truncates a blob, lies in Docker-Content-Digest, answers 500 then OK, 429 with Retry-After, or
//! stalls. rbuild either recovers or fails with an error naming the URL and the digest; it never
//! keeps a corrupt blob (the layer is absent and `rbuild fsck` is clean afterwards) and never runs
//! past its deadline (`RBUILD_REGISTRY_DEADLINE` / `RBUILD_REGISTRY_STALL_TIMEOUT`, small here).

mod common;
mod common_registry;

use common::{require_root, stderr, Env};
use common_registry::proxy::{Action, Proxy, Rule};
use common_registry::{have_registry, Registry};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The registry's view of the pushed busybox: its config and layer digests.
struct Pushed {
    config: String,
    layers: Vec<String>,
}

struct Setup {
    _reg: Registry,
    proxy: Proxy,
    pushed: Pushed,
}

fn setup() -> Option<Setup> {
    if !require_root(&[]) || !have_registry() {
        return None;
    }
    let reg = Registry::start(None);
    let seed = Env::with_busybox();
    let out = seed.rbuild(&[
        "push",
        "-q",
        "busybox",
        &format!("{}/busybox:latest", reg.host),
    ]);
    assert!(out.status.success(), "seed push failed: {}", stderr(&out));
    let pushed = registry_manifest(&reg.host, "busybox", "latest");
    assert!(!pushed.layers.is_empty(), "busybox has no layer");
    let proxy = Proxy::start(&reg.host);
    Some(Setup {
        _reg: reg,
        proxy,
        pushed,
    })
}

fn registry_manifest(host: &str, repo: &str, tag: &str) -> Pushed {
    let v: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("reading the pushed manifest");
    Pushed {
        config: v["config"]["digest"].as_str().unwrap().to_string(),
        layers: v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect(),
    }
}

/// Test knobs: give up on a silent transfer after 1s, and on a request after 4s.
fn client_cmd(env: &Env) -> Command {
    let mut c = env.cmd();
    std::fs::create_dir_all(env.path("docker")).unwrap();
    c.env("DOCKER_CONFIG", env.path("docker"))
        .env("RBUILD_REGISTRY_STALL_TIMEOUT", "1")
        .env("RBUILD_REGISTRY_DEADLINE", "4");
    c
}

/// Run with a hard wall-clock bound (the test's own guard against a hang: the process is killed
/// and the test fails). Returns the output and how long it took.
fn run_bounded(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "rbuild still ran after {limit:?} (its deadline is 4s); stderr:\n{}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    (child.wait_with_output().unwrap(), took)
}

/// Wall-clock bound for one rbuild run: the 4s deadline per request plus generous slack for a
/// loaded 2-core CI machine. A hang (no deadline) would blow through it.
const LIMIT: Duration = Duration::from_secs(45);

fn pull(s: &Setup, env: &Env) -> (Output, Duration) {
    let mut c = client_cmd(env);
    c.args(["pull", &format!("{}/busybox:latest", s.proxy.host)]);
    run_bounded(c, LIMIT)
}

fn has_blob(env: &Env, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    env.root.join("blobs/sha256").join(hex).exists()
}

/// The store holds nothing broken: fsck is clean, and the named layer is absent or whole.
fn assert_store_sound(env: &Env, what: &str) {
    let out = env.rbuild(&["fsck"]);
    assert!(
        out.status.success(),
        "{what}: fsck found problems:\n{}{}",
        common::stdout(&out),
        stderr(&out)
    );
}

fn assert_failed_naming(out: &Output, what: &str, needles: &[&str]) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: rbuild succeeded:\n{err}");
    for n in needles {
        assert!(
            err.contains(n),
            "{what}: the error does not name {n:?}:\n{err}"
        );
    }
    err
}

fn layer_rule(s: &Setup, action: Action, times: Option<u32>) -> String {
    let layer = s.pushed.layers[0].clone();
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        &format!("/blobs/{layer}"),
        action,
        times,
    ));
    layer
}

fn blob_url(s: &Setup, digest: &str) -> String {
    format!("http://{}/v2/busybox/blobs/{digest}", s.proxy.host)
}

#[test]
fn flipped_byte_in_a_layer_fails_naming_url_and_digest_and_stores_nothing() {
    let Some(s) = setup() else { return };
    let layer = layer_rule(&s, Action::FlipByte, None);
    let env = Env::empty();
    let (out, _) = pull(&s, &env);
    let err = assert_failed_naming(
        &out,
        "flipped byte",
        &[&blob_url(&s, &layer), &layer, "does not match its digest"],
    );
    assert!(
        !has_blob(&env, &layer),
        "the corrupt layer was stored:\n{err}"
    );
    assert_store_sound(&env, "flipped byte");
    // Nothing named: the image is not half-present under its name.
    let images = common::stdout(&env.rbuild(&["images"]));
    assert!(
        !images.contains("busybox"),
        "image named after a failed pull:\n{images}"
    );

    // The same through a build's FROM: the layer is needed by the RUN, and the build fails clearly.
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {}/busybox\nRUN echo hi > /hi\n", s.proxy.host),
        )],
    );
    let mut c = client_cmd(&env);
    c.args(["build", "--progress=plain", ctx.to_str().unwrap()]);
    let (out, _) = run_bounded(c, LIMIT);
    let err = assert_failed_naming(
        &out,
        "flipped byte (FROM)",
        &[&blob_url(&s, &layer), &layer, "does not match its digest"],
    );
    assert!(
        !has_blob(&env, &layer),
        "the corrupt layer was stored:\n{err}"
    );
    assert_store_sound(&env, "flipped byte (FROM)");

    // Once the registry path is healthy again, the same store pulls it whole.
    s.proxy.clear_rules();
    let (out, _) = pull(&s, &env);
    assert!(out.status.success(), "pull after repair: {}", stderr(&out));
    assert!(has_blob(&env, &layer));
    assert_store_sound(&env, "flipped byte, then a good pull");
}

#[test]
fn truncated_blob_is_resumed_or_refetched_and_truncation_every_time_fails_clearly() {
    let Some(s) = setup() else { return };
    // Once: recovered (Range resume or restart), the blob whole.
    let layer = layer_rule(&s, Action::Truncate, Some(1));
    let env = Env::empty();
    let (out, _) = pull(&s, &env);
    assert!(out.status.success(), "one truncation: {}", stderr(&out));
    assert!(has_blob(&env, &layer));
    assert!(
        s.proxy.count("GET", &format!("/blobs/{layer}")) >= 2,
        "the truncated layer was not fetched again: {:?}",
        s.proxy.seen()
    );
    assert_store_sound(&env, "one truncation");

    // Every time: a clear error within the deadline, nothing stored.
    s.proxy.clear_rules();
    layer_rule(&s, Action::Truncate, None);
    let env = Env::empty();
    let (out, _) = pull(&s, &env);
    let err = assert_failed_naming(&out, "always truncated", &[&blob_url(&s, &layer)]);
    assert!(
        err.contains(&layer),
        "the error does not name the digest:\n{err}"
    );
    assert!(
        !has_blob(&env, &layer),
        "a partial layer was stored:\n{err}"
    );
    assert_store_sound(&env, "always truncated");
}

#[test]
fn lying_docker_content_digest_on_the_manifest_is_refused_naming_both_digests() {
    let Some(s) = setup() else { return };
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        "/manifests/latest",
        Action::LieDigest,
        None,
    ));
    let env = Env::empty();
    let (out, _) = pull(&s, &env);
    let err = assert_failed_naming(
        &out,
        "lying digest",
        &[
            &format!("http://{}/v2/busybox/manifests/latest", s.proxy.host),
            "Docker-Content-Digest",
            &format!("sha256:{}", "0".repeat(64)),
        ],
    );
    assert!(!has_blob(&env, &s.pushed.config), "pulled on a lie:\n{err}");
    assert_store_sound(&env, "lying digest");

    // A lie on a blob's header does not matter: blobs are checked against the manifest's digest.
    s.proxy.clear_rules();
    layer_rule(&s, Action::LieDigest, None);
    let (out, _) = pull(&s, &env);
    assert!(out.status.success(), "lie on a blob: {}", stderr(&out));
    assert!(has_blob(&env, &s.pushed.layers[0]));
    assert_store_sound(&env, "lie on a blob header");
}

#[test]
fn server_error_then_ok_and_429_with_retry_after_recover() {
    let Some(s) = setup() else { return };
    // 500 on the manifest, then on the layer: both retried.
    s.proxy.add_rule(Rule::new(
        Some("GET"),
        "/manifests/latest",
        Action::Status(500, None),
        Some(1),
    ));
    let layer = layer_rule(&s, Action::Status(500, None), Some(1));
    let env = Env::empty();
    let (out, _) = pull(&s, &env);
    assert!(out.status.success(), "500 then OK: {}", stderr(&out));
    assert!(has_blob(&env, &layer));
    assert_eq!(
        s.proxy.count("GET", &format!("/blobs/{layer}")),
        2,
        "the layer should be fetched exactly twice (500, then 200)"
    );
    assert_store_sound(&env, "500 then OK");

    // 429 with Retry-After: 2 — rbuild waits at least that long (its own backoff would be ~0.2s).
    s.proxy.clear_rules();
    s.proxy.reset_counts();
    let layer = layer_rule(&s, Action::Status(429, Some(2)), Some(1));
    let env = Env::empty();
    let (out, took) = pull(&s, &env);
    assert!(out.status.success(), "429 then OK: {}", stderr(&out));
    assert!(has_blob(&env, &layer));
    assert!(
        took >= Duration::from_millis(1900),
        "Retry-After: 2 was not honoured (the pull took {took:?})"
    );
    assert_store_sound(&env, "429 then OK");
}

#[test]
fn persistent_server_errors_fail_within_the_deadline_naming_status_and_url() {
    let Some(s) = setup() else { return };
    let layer = layer_rule(&s, Action::Status(503, None), None);
    let env = Env::empty();
    let (out, _) = pull(&s, &env);
    let err = assert_failed_naming(&out, "always 503", &[&blob_url(&s, &layer), "503"]);
    assert!(!has_blob(&env, &layer), "{err}");
    assert!(
        s.proxy.count("GET", &format!("/blobs/{layer}")) >= 2,
        "a 503 was not retried"
    );
    assert_store_sound(&env, "always 503");
}

#[test]
fn stalled_layer_download_is_abandoned_after_the_stall_timeout() {
    let Some(s) = setup() else { return };
    // Once: retried (resumed) after the 1s stall timeout, and the pull succeeds.
    let layer = layer_rule(&s, Action::Stall, Some(1));
    let env = Env::empty();
    let (out, _) = pull(&s, &env);
    assert!(out.status.success(), "one stall: {}", stderr(&out));
    assert!(has_blob(&env, &layer));
    assert_store_sound(&env, "one stall");

    // Always: a build's FROM fails naming the URL, the digest and the stall, within the bound.
    s.proxy.clear_rules();
    layer_rule(&s, Action::Stall, None);
    let env = Env::empty();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {}/busybox\nRUN echo hi > /hi\n", s.proxy.host),
        )],
    );
    let mut c = client_cmd(&env);
    c.args(["build", "--progress=plain", ctx.to_str().unwrap()]);
    let (out, took) = run_bounded(c, LIMIT);
    let err = assert_failed_naming(
        &out,
        "always stalled",
        &[&blob_url(&s, &layer), &layer, "stalled"],
    );
    assert!(
        !has_blob(&env, &layer),
        "a partial layer was stored:\n{err}"
    );
    assert_store_sound(&env, "always stalled");
    eprintln!("always-stalled build gave up after {took:?}");
}

#[test]
fn bad_timeout_settings_are_usage_errors() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::empty();
    let out = env
        .cmd()
        .env("RBUILD_REGISTRY_DEADLINE", "soon")
        .args(["pull", "127.0.0.1:1/x:latest"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("RBUILD_REGISTRY_DEADLINE") && err.contains("seconds"),
        "{err}"
    );
}

#[test]
fn concurrent_pulls_on_one_store_download_each_layer_once() {
    let Some(s) = setup() else { return };
    // The layer answers slowly, so both processes want it at the same time.
    let layer = layer_rule(&s, Action::Delay(1500), None);
    let env = Env::empty();
    let spawn = || {
        let mut c = client_cmd(&env);
        // The delay is not a stall.
        c.env("RBUILD_REGISTRY_STALL_TIMEOUT", "10")
            .env("RBUILD_REGISTRY_DEADLINE", "20");
        c.args(["pull", &format!("{}/busybox:latest", s.proxy.host)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn rbuild pull")
    };
    let (p1, p2) = (spawn(), spawn());
    for p in [p1, p2] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent pull failed: {}",
            stderr(&out)
        );
    }
    for l in &s.pushed.layers {
        assert_eq!(
            s.proxy.count("GET", &format!("/blobs/{l}")),
            1,
            "layer {l} was downloaded more than once: {:?}",
            s.proxy.seen()
        );
    }
    assert!(has_blob(&env, &layer));
    assert_store_sound(&env, "concurrent pulls");
}

#[test]
fn a_crash_during_a_layer_download_leaves_a_sound_store_and_the_rebuild_completes() {
    let Some(s) = setup() else { return };
    let layer = s.pushed.layers[0].clone();
    let env = Env::empty();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {}/busybox\nRUN echo hi > /hi\n", s.proxy.host),
        )],
    );
    let build = |crash: bool| {
        let mut c = client_cmd(&env);
        if crash {
            c.env("RBUILD_CRASH_AT", "pull-layer");
        }
        c.args([
            "build",
            "--progress=plain",
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ]);
        run_bounded(c, LIMIT).0
    };
    let out = build(true);
    assert!(!out.status.success(), "the crash point was not reached");
    assert!(
        stderr(&out).contains("RBUILD_CRASH_AT=pull-layer"),
        "{}",
        stderr(&out)
    );
    assert!(!has_blob(&env, &layer), "a partial layer was committed");
    assert_store_sound(&env, "crash during a layer download");
    let out = build(false);
    assert!(
        out.status.success(),
        "rebuild after the crash: {}",
        stderr(&out)
    );
    assert!(has_blob(&env, &layer));
    assert_store_sound(&env, "rebuild after the crash");
}
