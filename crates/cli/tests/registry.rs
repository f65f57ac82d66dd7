//! rbuild against a real registry (Debian's docker-registry on 127.0.0.1): push checked by skopeo,
//! FROM a registry image on an empty store, the build cache through a registry, a local OCI layout
//! and inline in a pushed image — every step CACHED on a fresh store, the same image id, and no
//! layer downloaded that the build did not need — and the errors users see.

mod common;
mod common_registry;

use common::{require_root, stderr, stdout, Env};
use common_registry::{have_registry, Registry};
use std::collections::BTreeSet;
use std::process::Output;

/// A store with its own docker config dir (credentials never touch ~/.docker).
struct Client {
    env: Env,
}

impl Client {
    fn new(env: Env) -> Client {
        std::fs::create_dir_all(env.path("docker")).unwrap();
        Client { env }
    }
    fn run(&self, args: &[&str]) -> Output {
        self.env
            .cmd()
            .env("DOCKER_CONFIG", self.env.path("docker"))
            .args(args)
            .output()
            .expect("running rbuild")
    }
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rbuild {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        (stdout(&out), stderr(&out))
    }
    fn build(&self, dir: &std::path::Path, extra: &[&str]) -> (String, String) {
        let mut a = vec!["build", "--progress=plain"];
        a.extend_from_slice(extra);
        a.push(dir.to_str().unwrap());
        self.ok(&a)
    }
    /// The manifest digest `rbuild inspect` shows ("Digest"): what users compare across machines.
    fn digest(&self, image: &str) -> String {
        let (out, _) = self.ok(&["inspect", image]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v["Digest"]
            .as_str()
            .expect("inspect has a Digest")
            .to_string()
    }
    /// The layer digests of a stored image's manifest.
    fn layers(&self, image: &str) -> Vec<String> {
        let (out, _) = self.ok(&["inspect", image]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        let m = v.get("Manifest").expect("inspect has a Manifest");
        m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }
}

fn setup() -> Option<(Registry, Client)> {
    if !require_root(&["skopeo"]) || !have_registry() {
        return None;
    }
    let reg = Registry::start(None);
    // The base image lives in the registry: every build below starts from it.
    let seed = Client::new(Env::with_busybox());
    seed.ok(&[
        "push",
        "-q",
        "busybox",
        &format!("{}/busybox:latest", reg.host),
    ]);
    Some((reg, seed))
}

const MULTI_STAGE: &str = "FROM @HOST@/busybox AS build
RUN echo built > /out && echo only-in-the-build-stage > /extra && echo RUN-EXEC\"\"UTED-build
FROM @HOST@/busybox
COPY --from=build /out /out
RUN echo RUN-EXEC\"\"UTED-final && echo x > /x
";

fn multi_stage(c: &Client, reg: &Registry) -> std::path::PathBuf {
    c.env.context(
        "ctx",
        &[("Dockerfile", &MULTI_STAGE.replace("@HOST@", &reg.host))],
    )
}

fn id_of(out: &str) -> String {
    out.lines().last().unwrap_or("").trim().to_string()
}

fn assert_all_cached(err: &str) {
    assert!(!err.contains("RUN-EXECUTED"), "a RUN executed:\n{err}");
    assert!(
        !err.contains("CACHE MISS"),
        "a step missed the cache:\n{err}"
    );
    assert!(err.contains("CACHED"), "no step reported CACHED:\n{err}");
}

#[test]
fn push_is_a_real_image_and_a_second_push_moves_no_layer() {
    let Some((reg, seed)) = setup() else { return };
    let ctx = seed.env.context(
        "app",
        &[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")],
    );
    let target = format!("{}/app:1", reg.host);
    let (_, err) = seed.build(&ctx, &["-t", &target, "--push"]);
    let pushed = err
        .lines()
        .find_map(|l| l.strip_prefix(&format!("pushed {target}@")))
        .and_then(|l| l.split(':').take(2).collect::<Vec<_>>().join(":").into())
        .map(|s: String| s.trim().to_string())
        .unwrap_or_else(|| panic!("no pushed digest in:\n{err}"));
    // The push is a progress step after the build's (#3 after FROM and RUN), every blob done
    // with its bytes: the two layers and the config (the manifest is one PUT, no bytes shown).
    assert!(err.contains(&format!("\n#3 pushing {target}\n")), "{err}");
    let done = regex::Regex::new(
        r"(?m)^#3 pushing (layer|config|manifest) sha256:[0-9a-f]{64}( (\S+) / (\S+))? \d+\.\ds done$",
    )
    .unwrap();
    let kinds: Vec<&str> = done
        .captures_iter(&err)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "layer").count(), 2, "{err}");
    assert!(kinds.contains(&"config"), "{err}");
    for c in done.captures_iter(&err) {
        if let (Some(cur), Some(tot)) = (c.get(3), c.get(4)) {
            assert_eq!(cur.as_str(), tot.as_str(), "done when whole: {err}");
        }
    }
    assert!(err.contains("\n#3 DONE "), "{err}");
    let inspect = common::run_ok(
        std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{target}")),
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"].as_str(), Some(pushed.as_str()), "{inspect}");
    // Pushed layers are compressed; skopeo copies the image back into an OCI layout, verifying
    // every blob, and the manifest digest is the one we pushed.
    let layout = seed.env.path("copied");
    common::run_ok(
        std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{target}"))
            .arg(format!("oci:{}:app", layout.display())),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(pushed.as_str())
    );
    let layers = v["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);

    // Everything is there already: a second push (under another tag) uploads nothing.
    let uploads = reg.uploads();
    let (out, err) = seed.ok(&["push", &target, &format!("{}/app:again", reg.host)]);
    assert_eq!(out.trim(), pushed, "{err}");
    assert!(err.contains(": 0 bytes uploaded in 0 blobs"), "{err}");
    assert_eq!(reg.uploads(), uploads, "a blob was uploaded again");
}

/// `-o type=image,push=true` pushes as `--push` does, under `-t` or the output's `name=`, and so
/// does `type=registry`; `push=true` on an output that is written locally is refused before
/// anything runs (issue 14 item 11).
#[test]
fn output_push_true_pushes_and_is_refused_where_it_cannot() {
    let Some((reg, seed)) = setup() else { return };
    let ctx = seed.env.context(
        "outpush",
        &[("Dockerfile", "FROM busybox\nRUN echo MARKER\"\"=ran > /m\n")],
    );
    let inspect = |target: &str| {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{target}"))
            .output()
            .unwrap();
        out.status.success()
    };
    let a = format!("{}/outpush:a", reg.host);
    let (_, err) = seed.build(&ctx, &["-t", &a, "-o", "type=image,push=true"]);
    assert!(err.contains(&format!("pushed {a}@")), "{err}");
    assert!(inspect(&a), "{a} is not in the registry:\n{err}");

    let b = format!("{}/outpush:b", reg.host);
    let (_, err) = seed.build(&ctx, &["-o", &format!("type=image,name={b},push=true")]);
    assert!(err.contains(&format!("pushed {b}@")), "{err}");
    assert!(inspect(&b), "{b}:\n{err}");

    let c = format!("{}/outpush:c", reg.host);
    let (_, err) = seed.build(&ctx, &["-o", &format!("type=registry,name={c}")]);
    assert!(inspect(&c), "{c}:\n{err}");

    // push=false is no push.
    let d = format!("{}/outpush:d", reg.host);
    seed.build(&ctx, &["-o", &format!("type=image,name={d},push=false")]);
    assert!(!inspect(&d), "push=false pushed {d}");

    // Refused, before any step: push on a local output, a bad push value, push without a name.
    let dest = seed.env.path("o.tar");
    for (args, want) in [
        (
            vec![
                "-t".to_string(),
                format!("{}/outpush:e", reg.host),
                "-o".into(),
                format!("type=oci,dest={},push=true", dest.display()),
            ],
            "push=true applies to type=image only",
        ),
        (
            vec!["-o".into(), format!("type=image,name={c},push=maybe")],
            "push=maybe",
        ),
        (
            vec!["-o".into(), "type=image,push=true".into()],
            "needs a name",
        ),
        (
            vec![
                "-o".into(),
                format!("type=tar,dest={},unpack=true", dest.display()),
            ],
            "unknown key",
        ),
    ] {
        let mut a = vec!["build", "--progress=plain", "--no-cache"];
        a.extend(args.iter().map(String::as_str));
        a.push(ctx.to_str().unwrap());
        let out = seed.run(&a);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} must fail:\n{err}");
        assert!(err.contains(want), "{args:?}: {want:?}:\n{err}");
        assert!(!err.contains("MARKER=ran"), "{args:?}: a step ran:\n{err}");
        assert!(!dest.exists(), "{args:?} wrote {}", dest.display());
    }
    assert!(!inspect(&format!("{}/outpush:e", reg.host)));
}

#[test]
fn from_a_registry_image_on_an_empty_store() {
    let Some((reg, _seed)) = setup() else { return };
    let b = Client::new(Env::empty());
    let ctx = b.env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {}/busybox\nRUN echo from-registry > /f\n", reg.host),
        )],
    );
    let (out, _) = b.build(&ctx, &["-t", "app"]);
    assert!(id_of(&out).starts_with("sha256:"));
    // The base was pulled and named; a build pinned by its digest needs no registry.
    let (images, _) = b.ok(&["images"]);
    assert!(
        images.contains(&format!("{}/busybox", reg.host)),
        "{images}"
    );
    let (o, _) = b.ok(&["inspect", &format!("{}/busybox", reg.host)]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let digest = v["Digest"].as_str().expect("inspect Digest").to_string();
    let host = reg.host.clone();
    drop(reg);
    let pinned = b.env.context(
        "pinned",
        &[(
            "Dockerfile",
            &format!("FROM {host}/busybox@{digest}\nRUN echo pinned > /p\n"),
        )],
    );
    let out = b.run(&["build", "--progress=plain", pinned.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "a FROM pinned by a digest the store has must not need the (now stopped) registry: {}",
        stderr(&out)
    );
}

#[test]
fn registry_cache_max_makes_a_fresh_store_fully_cached_and_downloads_only_what_it_needs() {
    let Some((reg, _seed)) = setup() else { return };
    let cache = format!("{}/cache:main", reg.host);
    let a = Client::new(Env::empty());
    let (out_a, err_a) = a.build(
        &multi_stage(&a, &reg),
        &[
            "-t",
            "app",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    assert!(err_a.contains("RUN-EXECUTED-build"), "{err_a}");

    let b = Client::new(Env::empty());
    let before = reg.blob_gets().len();
    let (out_b, err_b) = b.build(
        &multi_stage(&b, &reg),
        &[
            "-t",
            "app",
            "--cache-from",
            &format!("type=registry,ref={cache}"),
        ],
    );
    assert_all_cached(&err_b);
    assert_eq!(id_of(&out_b), id_of(&out_a), "image ids differ");
    assert_eq!(b.digest("app"), a.digest("app"), "manifest digests differ");

    // What B downloaded: configs and the final image's layers, never the build stage's layer.
    // (B's image names the layers it built uncompressed, as A's does; what it fetched are their
    // compressed forms in the cache, one per image layer.)
    let fetched: BTreeSet<String> = reg.blob_gets()[before..].iter().cloned().collect();
    let image_layers = b.layers("app");
    let raw = common::run_ok(
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{cache}")),
    );
    let artifact: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let cached_layers: BTreeSet<String> = artifact["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let fetched_layers: BTreeSet<&String> = cached_layers.intersection(&fetched).collect();
    assert_eq!(
        fetched_layers.len(),
        image_layers.len(),
        "B should fetch exactly one cache layer per image layer: fetched {fetched_layers:?}, \
         image {image_layers:?}, cache {cached_layers:?}"
    );
    let unneeded: Vec<&String> = cached_layers
        .iter()
        .filter(|l| !fetched_layers.contains(l))
        .collect();
    assert!(
        !unneeded.is_empty(),
        "mode=max should export the build stage's layer too (B must not fetch it): \
         {cached_layers:?} vs fetched {fetched:?}"
    );
    // Every layer of B's image is whole in B's store.
    for l in &image_layers {
        let hex = l.strip_prefix("sha256:").unwrap();
        assert!(
            b.env.root.join("blobs/sha256").join(hex).exists(),
            "{l} missing"
        );
    }

    // B re-exports (mode=max, to a directory) the cache it imported, including the build stage's
    // layer it never fetched; a third store built from that is fully cached and identical too.
    let dir = b.env.path("re-export");
    b.build(
        &multi_stage(&b, &reg),
        &[
            "-t",
            "app",
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "--cache-to",
            &format!("type=local,dest={},mode=max", dir.display()),
        ],
    );
    let c = Client::new(Env::empty());
    let (out_c, err_c) = c.build(
        &multi_stage(&c, &reg),
        &[
            "-t",
            "app",
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
        ],
    );
    assert_all_cached(&err_c);
    assert_eq!(id_of(&out_c), id_of(&out_a));
    assert_eq!(c.digest("app"), a.digest("app"), "manifest digests differ");
    for s in [&b, &c] {
        let out = s.run(&["fsck"]);
        assert!(out.status.success(), "fsck: {}", stderr(&out));
    }
}

#[test]
fn local_cache_dir_makes_a_fresh_store_fully_cached() {
    let Some((reg, _seed)) = setup() else { return };
    let a = Client::new(Env::empty());
    let dir = a.env.path("cache-dir");
    let (out_a, _) = a.build(
        &multi_stage(&a, &reg),
        &[
            "-t",
            "app",
            "--cache-to",
            &format!("type=local,dest={},mode=max", dir.display()),
        ],
    );
    let b = Client::new(Env::empty());
    let (out_b, err_b) = b.build(
        &multi_stage(&b, &reg),
        &[
            "-t",
            "app",
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
        ],
    );
    assert_all_cached(&err_b);
    assert_eq!(id_of(&out_b), id_of(&out_a));
    assert_eq!(b.digest("app"), a.digest("app"), "manifest digests differ");
    // Pushed, they are the same manifest too (compression is deterministic).
    let pushed_a = a
        .ok(&["push", "-q", "app", &format!("{}/from-a:1", reg.host)])
        .0;
    let pushed_b = b
        .ok(&["push", "-q", "app", &format!("{}/from-b:1", reg.host)])
        .0;
    assert_eq!(
        pushed_a.trim(),
        pushed_b.trim(),
        "pushed manifest digests differ"
    );
    // Only the layers the image needs were copied into B's store.
    let needed: BTreeSet<String> = b.layers("app").into_iter().collect();
    let mut unneeded = 0;
    for e in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let hex = e.unwrap().file_name().to_string_lossy().to_string();
        let d = format!("sha256:{hex}");
        let size = std::fs::metadata(dir.join("blobs/sha256").join(&hex))
            .unwrap()
            .len();
        if !needed.contains(&d)
            && size > 1024
            && !b.env.root.join("blobs/sha256").join(&hex).exists()
        {
            unneeded += 1;
        }
        if !needed.contains(&d) && size > 1024 {
            assert!(
                !b.env.root.join("blobs/sha256").join(&hex).exists(),
                "B copied {d}, which it did not need"
            );
        }
    }
    assert!(
        unneeded > 0,
        "mode=max should have exported the build stage's layer"
    );
}

#[test]
fn inline_cache_travels_in_the_pushed_image() {
    let Some((reg, _seed)) = setup() else { return };
    let image = format!("{}/app:inline", reg.host);
    let a = Client::new(Env::empty());
    let ctx = a.env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!(
                "FROM {}/busybox\nRUN echo RUN-EXEC\"\"UTED && echo 1 > /one\nENV A=1\nRUN echo 2 > /two\n",
                reg.host
            ),
        )],
    );
    let (out_a, _) = a.build(&ctx, &["-t", &image, "--push", "--cache-to", "type=inline"]);
    let b = Client::new(Env::empty());
    let ctx_b = b.env.context(
        "ctx",
        &[(
            "Dockerfile",
            &std::fs::read_to_string(ctx.join("Dockerfile")).unwrap(),
        )],
    );
    let (out_b, err_b) = b.build(&ctx_b, &["-t", "app", "--cache-from", &image]);
    assert_all_cached(&err_b);
    assert_eq!(id_of(&out_b), id_of(&out_a));
    assert_eq!(b.digest("app"), a.digest(&image), "manifest digests differ");
}

#[test]
fn wrong_credentials_and_missing_repositories_are_clear_errors() {
    if !require_root(&[]) || !have_registry() {
        return;
    }
    let reg = Registry::start(Some(("alice", "right")));
    let c = Client::new(Env::empty());
    let out = c
        .env
        .cmd()
        .env("DOCKER_CONFIG", c.env.path("docker"))
        .args(["login", "-u", "alice", "--password-stdin", &reg.host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write as _;
            ch.stdin.take().unwrap().write_all(b"wrong\n")?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&reg.host), "{err}");
    assert!(
        err.to_lowercase().contains("unauthorized")
            || err.to_lowercase().contains("credentials")
            || err.contains("401"),
        "{err}"
    );
    assert!(
        !err.contains("wrong"),
        "the password leaked into the error: {err}"
    );

    let (_, ok) = c.ok(&["login", "-u", "alice", "-p", "right", &reg.host]);
    assert!(ok.contains("Login Succeeded"), "{ok}");
    let missing = c.run(&["pull", &format!("{}/nope:1", reg.host)]);
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(err.contains("nope"), "{err}");
    assert!(
        err.to_lowercase().contains("not found") || err.to_lowercase().contains("unknown"),
        "{err}"
    );
    let (_, out) = c.ok(&["logout", &reg.host]);
    assert!(out.contains("Removing login credentials"), "{out}");
}

#[test]
fn tls_registry_through_certs_d_and_registry_ca() {
    if !require_root(&["openssl"]) || !have_registry() {
        return;
    }
    let reg = Registry::start_tls();
    let ca = reg.ca_file.clone().expect("TLS registry has a CA");
    let seed = Client::new(Env::with_busybox());
    let certs = seed.env.path("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    let target = format!("{}/tls/busybox:1", reg.host);
    let run = |c: &Client, args: &[&str]| {
        c.env
            .cmd()
            .env("DOCKER_CONFIG", c.env.path("docker"))
            .env("RBUILD_CERTS_DIR", &certs)
            .env("RBUILD_REGISTRY_DEADLINE", "5")
            .args(args)
            .output()
            .expect("running rbuild")
    };

    // No certs.d entry: a loopback registry is plain HTTP, which the TLS server refuses.
    let out = run(&seed, &["push", "-q", "busybox", &target]);
    assert!(!out.status.success(), "plain HTTP to a TLS registry worked");
    let err = stderr(&out);
    assert!(err.contains(&format!("http://{}/v2/", reg.host)), "{err}");

    // certs.d/HOST/ (no ca.crt): HTTPS, but the CA is unknown — a certificate error naming the URL.
    let host_dir = certs.join(&reg.host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let out = run(&seed, &["push", "-q", "busybox", &target]);
    assert!(
        !out.status.success(),
        "an untrusted certificate was accepted"
    );
    let err = stderr(&out);
    assert!(err.contains(&format!("https://{}/v2/", reg.host)), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // --registry-ca trusts it.
    let ca_arg = ca.to_str().unwrap();
    let out = run(
        &seed,
        &["--registry-ca", ca_arg, "push", "-q", "busybox", &target],
    );
    assert!(
        out.status.success(),
        "push with --registry-ca: {}",
        stderr(&out)
    );

    // certs.d/HOST/ca.crt alone: a fresh store builds FROM the TLS registry.
    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
    let b = Client::new(Env::empty());
    let ctx = b.env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {target}\nRUN echo tls > /tls\n"),
        )],
    );
    let out = run(
        &b,
        &[
            "build",
            "--progress=plain",
            "-t",
            "app",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "build FROM a TLS registry: {}",
        stderr(&out)
    );
    assert!(run(&b, &["fsck"]).status.success());
    // A bad --registry-ca file is a clear error naming it.
    let bogus = b.env.path("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let out = run(
        &b,
        &["--registry-ca", bogus.to_str().unwrap(), "pull", &target],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(bogus.to_str().unwrap()), "{err}");
}

/// Access-log request lines (`METHOD PATH STATUS`) of the registry.
fn requests(reg: &Registry) -> Vec<String> {
    reg.log()
        .lines()
        .filter_map(|l| {
            let req = l.split('"').nth(1)?;
            let status = l.split('"').nth(2)?.split_whitespace().next()?;
            Some(format!("{req} {status}"))
        })
        .collect()
}

#[test]
fn push_mounts_layers_from_another_repository_and_uploads_when_refused() {
    let Some((reg, _seed)) = setup() else { return };
    // Another process pulled the base: the hint comes from the store's image names.
    let c = Client::new(Env::empty());
    c.ok(&["pull", "-q", &format!("{}/busybox:latest", reg.host)]);
    let base_layers = c.layers(&format!("{}/busybox:latest", reg.host));
    let ctx = c.env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM {}/busybox\nRUN echo m > /m\n", reg.host),
        )],
    );
    c.build(&ctx, &["-t", "app"]);
    let before = requests(&reg).len();
    let (_, err) = c.ok(&["push", "app", &format!("{}/app:1", reg.host)]);
    let log = requests(&reg)[before..].to_vec();
    for l in &base_layers {
        let hex = l.strip_prefix("sha256:").unwrap();
        assert!(
            log.iter()
                .any(|r| r.starts_with("POST /v2/app/blobs/uploads/")
                    && r.contains(hex)
                    && r.contains("mount=")
                    && r.ends_with(" 201")),
            "no accepted mount of {l}:\n{}\n{err}",
            log.join("\n")
        );
        assert!(
            !log.iter()
                .any(|r| (r.starts_with("PUT ") || r.starts_with("PATCH ")) && r.contains(hex)),
            "{l} was uploaded although it was mounted:\n{}",
            log.join("\n")
        );
    }
    assert!(err.contains("mounted from busybox"), "{err}");

    // A stale hint (a local name for a repository that lacks the blob) is refused: upload instead.
    c.ok(&[
        "tag",
        &format!("{}/busybox:latest", reg.host),
        &format!("{}/aaa-stale:1", reg.host),
    ]);
    let before = requests(&reg).len();
    c.ok(&["push", "app", &format!("{}/app2:1", reg.host)]);
    let log = requests(&reg)[before..].to_vec();
    let hex = base_layers[0].strip_prefix("sha256:").unwrap();
    assert!(
        log.iter()
            .any(|r| r.starts_with("POST /v2/app2/blobs/uploads/")
                && r.contains("from=aaa-stale")
                && r.ends_with(" 202")),
        "the stale mount was not tried and refused:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter()
            .any(|r| r.starts_with("PUT /v2/app2/blobs/uploads/") && r.contains(hex)),
        "the refused layer was not uploaded:\n{}",
        log.join("\n")
    );
    // And the result is a whole image: a fresh store pulls it.
    let d = Client::new(Env::empty());
    d.ok(&["pull", "-q", &format!("{}/app2:1", reg.host)]);
}

#[test]
fn cache_mounts_travel_with_cache_mounts_true() {
    if !require_root(&[]) {
        return;
    }
    let a = Client::new(Env::with_busybox());
    let dir = a.env.path("cache-dir");
    let ctx = a.env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=cache,id=dl,target=/c echo from-A > /c/seed\n",
        )],
    );
    a.build(
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},cache-mounts=true", dir.display()),
        ],
    );
    // Another store, another step using the same cache id: it sees A's cache contents.
    let reader = "FROM busybox\nRUN --mount=type=cache,id=dl,target=/c cp /c/seed /got\n";
    let b = Client::new(Env::with_busybox());
    let ctx_b = b.env.context("ctx", &[("Dockerfile", reader)]);
    let out_dir = b.env.path("out");
    b.build(
        &ctx_b,
        &[
            "--cache-from",
            &format!("type=local,src={}", dir.display()),
            "-o",
            &format!("type=local,dest={}", out_dir.display()),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("got")).unwrap(),
        "from-A\n"
    );
    assert!(b.run(&["fsck"]).status.success());
    // Without the import the cache is empty and the same step fails: the content came from A.
    let c = Client::new(Env::with_busybox());
    let ctx_c = c.env.context("ctx", &[("Dockerfile", reader)]);
    let out = c.run(&["build", "--progress=plain", ctx_c.to_str().unwrap()]);
    assert!(!out.status.success(), "the cache mount was not empty on C");
}
