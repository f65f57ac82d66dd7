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

/// A blob as the registry stored it (its filesystem driver's layout).
fn registry_blob(reg: &Registry, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let p = reg
        .dir
        .path()
        .join("storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The host's dpkg paragraph for `pkg` (this machine is Debian), for a test rootfs.
fn host_dpkg(pkg: &str) -> Option<String> {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").ok()?;
    status
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {pkg}")))
        .map(|p| format!("{p}\n"))
}

fn have(tool: &str) -> bool {
    common::which(tool).is_some()
}

/// Check an in-toto statement against the schema in crates/attest/testdata (python jsonschema).
fn schema_ok(statement: &[u8]) {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import jsonschema"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!("SKIP (schema check): python3 jsonschema not installed");
        return;
    }
    let schema =
        common::repo_root().join("crates/attest/testdata/in-toto-statement-v1.schema.json");
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sys,jsonschema\njsonschema.validate(json.load(sys.stdin), json.load(open(sys.argv[1])), format_checker=jsonschema.FormatChecker())",
        ])
        .arg(schema)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(statement).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn push_by_digest_with_provenance_and_sbom() {
    let Some(ci) = Ci::start() else { return };
    let Some(curl) = host_dpkg("curl") else {
        println!("SKIP: curl is not installed on this host (its dpkg entry is the fixture)");
        return;
    };
    let curl_version = curl
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_string();
    // A busybox image with a real dpkg database listing curl, as a Debian image with curl has.
    let ctx = ci.env.context(
        "deb",
        &[
            (
                "Dockerfile",
                "FROM busybox\nARG V\nCOPY status /var/lib/dpkg/status\nCOPY os-release /etc/os-release\nRUN echo $V > /v\n",
            ),
            ("status", &curl),
            ("os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
        ],
    );
    let repo = format!("{}/ci/deb", ci.reg.host);
    let meta = ci.env.path("meta.json");
    ci.ok(&[
        "build",
        "--progress=plain",
        "--build-arg",
        "V=7",
        "--provenance=mode=max,builder-id=https://ci.example/run/42",
        "--sbom=true",
        "--annotation",
        "org.opencontainers.image.source=https://example.com/repo",
        "-o",
        &format!("type=registry,name={repo},push-by-digest=true"),
        "--metadata-file",
        meta.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let digest = m["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(m["image.name"], repo.as_str());
    // No tag was made: the registry lists none for the repository.
    let (raw, _) = ci.ok(&[
        "imagetools",
        "inspect",
        "--raw",
        &format!("{repo}@{digest}"),
    ]);
    assert!(!ci
        .run(&["imagetools", "inspect", &format!("{repo}:latest")])
        .status
        .success());
    assert_eq!(
        format!("sha256:{}", rbuild_sha256(raw.trim_end().as_bytes())),
        digest
    );
    let idx: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let manifests = idx["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{raw}");
    let image = &manifests[0];
    let att = &manifests[1];
    assert_eq!(image["platform"]["os"], "linux");
    assert_eq!(att["platform"]["os"], "unknown");
    assert_eq!(att["platform"]["architecture"], "unknown");
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    // The image manifest carries the --annotation.
    let img_m: serde_json::Value =
        serde_json::from_slice(&registry_blob(&ci.reg, image["digest"].as_str().unwrap())).unwrap();
    assert_eq!(
        img_m["annotations"]["org.opencontainers.image.source"],
        "https://example.com/repo"
    );
    let att_m: serde_json::Value =
        serde_json::from_slice(&registry_blob(&ci.reg, att["digest"].as_str().unwrap())).unwrap();
    let layers = att_m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let mut seen = Vec::new();
    for l in layers {
        assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
        let pt = l["annotations"]["in-toto.io/predicate-type"]
            .as_str()
            .unwrap()
            .to_string();
        let bytes = registry_blob(&ci.reg, l["digest"].as_str().unwrap());
        schema_ok(&bytes);
        let st: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(st["predicateType"], pt.as_str());
        assert_eq!(
            format!(
                "sha256:{}",
                st["subject"][0]["digest"]["sha256"].as_str().unwrap()
            ),
            image["digest"].as_str().unwrap()
        );
        let p = &st["predicate"];
        if pt == "https://slsa.dev/provenance/v1" {
            let bd = &p["buildDefinition"];
            assert_eq!(
                bd["externalParameters"]["request"]["args"]["build-arg:V"],
                "7"
            );
            assert_eq!(
                p["runDetails"]["builder"]["id"],
                "https://ci.example/run/42"
            );
            let deps = bd["resolvedDependencies"].as_array().unwrap();
            assert!(
                deps.iter()
                    .any(|d| d["uri"].as_str().unwrap().starts_with("pkg:docker/")
                        && d["uri"].as_str().unwrap().contains("busybox")),
                "{deps:?}"
            );
            let df = std::fs::read(ctx.join("Dockerfile")).unwrap();
            assert_eq!(
                bd["externalParameters"]["configSource"]["digest"]["sha256"],
                rbuild_sha256(&df).as_str()
            );
            assert!(bd["internalParameters"]["buildConfig"]["definition"]
                .as_array()
                .is_some_and(|a| !a.is_empty()));
        } else {
            assert_eq!(pt, "https://spdx.dev/Document");
            let c = p["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == "curl")
                .unwrap_or_else(|| panic!("curl not in the SBOM: {p}"));
            assert_eq!(c["versionInfo"], curl_version.as_str());
            if have("pyspdxtools") {
                let f = ci.env.path("sbom.spdx.json");
                std::fs::write(&f, serde_json::to_vec(p).unwrap()).unwrap();
                let out = std::process::Command::new("pyspdxtools")
                    .arg("-i")
                    .arg(&f)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                println!("SKIP (SPDX validation): pyspdxtools not installed");
            }
        }
        seen.push(pt);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ]
    );

    // The merge job keeps the attestations of an index source.
    let (merged, _) = ci.ok(&[
        "imagetools",
        "create",
        "-t",
        &format!("{repo}:1"),
        &format!("{repo}@{digest}"),
    ]);
    assert_eq!(merged.trim(), digest, "the same index, re-tagged");

    // Bad flag values are usage errors before anything runs.
    for bad in [
        ["--provenance=mode=huge", "--sbom=false"],
        ["--sbom=generator=docker/scout", "--provenance=false"],
        ["--annotation=index:a=b", "--sbom=false"],
    ] {
        let out = ci.run(&["build", bad[0], bad[1], ctx.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    let out = ci.run(&["build", "-o", "type=registry", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn sbom_of_an_image_with_no_package_database_is_empty_and_valid() {
    let Some(ci) = Ci::start() else { return };
    let ctx = ci.env.context(
        "plain",
        &[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")],
    );
    let target = format!("{}/ci/plain:1", ci.reg.host);
    ci.ok(&[
        "build",
        "--progress=plain",
        "--sbom=true",
        "-t",
        &target,
        "--push",
        ctx.to_str().unwrap(),
    ]);
    let (raw, _) = ci.ok(&["imagetools", "inspect", "--raw", &target]);
    let idx: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let att = &idx["manifests"][1];
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&registry_blob(&ci.reg, att["digest"].as_str().unwrap())).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "only the SBOM was asked for");
    let st: serde_json::Value = serde_json::from_slice(&registry_blob(
        &ci.reg,
        layers[0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let doc = &st["predicate"];
    // Only the image itself: busybox has no package database.
    assert_eq!(doc["packages"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["relationships"][0]["relationshipType"], "DESCRIBES");
    if have("pyspdxtools") {
        let f = ci.env.path("empty.spdx.json");
        std::fs::write(&f, serde_json::to_vec(doc).unwrap()).unwrap();
        let out = std::process::Command::new("pyspdxtools")
            .arg("-i")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        println!("SKIP (SPDX validation): pyspdxtools not installed");
    }
}
