//! What CI pipelines do with rbuild against a real registry (Debian's docker-registry on
//! 127.0.0.1): merge per-platform manifests with `rbuild imagetools create`, look at the result
//! with `rbuild imagetools inspect`, and the refusals a user meets on the way.

mod common;
mod common_registry;

use common::{require_root, stderr, stdout, Env};
use common_registry::{have_registry, Registry};
use std::process::Output;

struct Ci {
    env: Env,
    reg: Registry,
}

impl Ci {
    fn start() -> Option<Ci> {
        if !require_root(&[]) || !have_registry() {
            return None;
        }
        let env = Env::with_busybox();
        std::fs::create_dir_all(env.path("docker")).unwrap();
        Some(Ci {
            env,
            reg: Registry::start(None),
        })
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
    /// Build a one-RUN image and push it to `target`; the pushed manifest digest.
    fn build_push(&self, name: &str, marker: &str, target: &str) -> String {
        let ctx = self.env.context(
            name,
            &[(
                "Dockerfile",
                &format!("FROM busybox\nRUN echo {marker} > /marker\n"),
            )],
        );
        let (_, err) = self.ok(&[
            "build",
            "--progress=plain",
            "-t",
            target,
            "--push",
            ctx.to_str().unwrap(),
        ]);
        err.lines()
            .find_map(|l| l.strip_prefix(&format!("pushed {target}@")))
            .map(|l| {
                l.split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches(':')
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no pushed digest in:\n{err}"))
    }
}

#[test]
fn imagetools_create_and_inspect() {
    let Some(ci) = Ci::start() else { return };
    let repo = format!("{}/ci/app", ci.reg.host);
    let a = ci.build_push("a", "one", &format!("{repo}:a"));
    let b = ci.build_push("b", "two", &format!("{repo}:b"));
    assert_ne!(a, b);
    let multi = format!("{repo}:multi");
    let src_a = format!("{repo}@{a}");
    let src_b = format!("{repo}@{b}");

    // Both are this host's platform: refused, naming both, and nothing is tagged.
    let out = ci.run(&["imagetools", "create", "-t", &multi, &src_a, &src_b]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is in two sources"), "{err}");
    assert!(err.contains(&a) && err.contains(&b), "{err}");
    assert!(!ci.run(&["imagetools", "inspect", &multi]).status.success());

    // --dry-run prints the index and pushes nothing.
    let (json, _) = ci.ok(&[
        "imagetools",
        "create",
        "--dry-run",
        "--replace-platform",
        "-t",
        &multi,
        &src_a,
        &src_b,
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert!(!ci.run(&["imagetools", "inspect", &multi]).status.success());

    // With --replace-platform the later one stays; annotations on the index and descriptors.
    let (digest, _) = ci.ok(&[
        "imagetools",
        "create",
        "--replace-platform",
        "--annotation",
        "index:org.opencontainers.image.version=2.0",
        "--annotation",
        "manifest-descriptor:org.opencontainers.image.title=app",
        "-t",
        &multi,
        &src_a,
        &src_b,
    ]);
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let (raw, _) = ci.ok(&["imagetools", "inspect", "--raw", &multi]);
    let idx: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], b.as_str());
    assert_eq!(
        idx["annotations"]["org.opencontainers.image.version"],
        "2.0"
    );
    assert_eq!(
        idx["manifests"][0]["annotations"]["org.opencontainers.image.title"],
        "app"
    );
    assert_eq!(
        format!("sha256:{}", rbuild_sha256(raw.trim_end().as_bytes())),
        digest,
        "--raw prints the bytes the digest is of"
    );
    let (text, _) = ci.ok(&["imagetools", "inspect", &multi]);
    assert!(text.contains(&format!("Digest:    {digest}")), "{text}");
    assert!(
        text.contains("MediaType: application/vnd.oci.image.index.v1+json"),
        "{text}"
    );
    assert!(text.contains(&format!("Name:        {repo}@{b}")), "{text}");
    assert!(text.contains("Platform:    linux/"), "{text}");

    // A manifest: annotation is a usage error (exit 2) before anything is contacted.
    let out = ci.run(&[
        "imagetools",
        "create",
        "--annotation",
        "manifest:x=y",
        "-t",
        &multi,
        &src_a,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot change a manifest"));
    // A source on another registry is refused (nothing is downloaded to copy it).
    let out = ci.run(&[
        "imagetools",
        "create",
        "-t",
        &format!("{repo}:other"),
        &format!("127.0.0.1:1/x/y@{a}"),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

fn rbuild_sha256(data: &[u8]) -> String {
    rbuild_oci::sha256_hex(data)
}
