//! SLSA v1 provenance (https://slsa.dev/spec/v1.0/provenance) of a build, in BuildKit's layout
//! where the two meet (`externalParameters.configSource` / `request`, `resolvedDependencies` as
//! PURLs and URLs with digests, `internalParameters.builderPlatform`), so tools that read
//! BuildKit's provenance find the same fields.
//!
//! `mode=min` records the builder, the Dockerfile (path and digest), the request (build args,
//! labels, target), the resolved sources and base images with their digests. `mode=max` adds the
//! secrets' and SSH forwards' ids (never values), the Dockerfile's text and the full build
//! definition (every step of the plan as the solver received it).

use crate::error::{AttestError, Result};
use rbuild_oci::Digest;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The predicate type of SLSA v1 provenance.
pub const PREDICATE_SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// `buildDefinition.buildType`: what the fields below mean (documented in the README).
pub const BUILD_TYPE: &str = "urn:rbuild:dockerfile-build:v1";
/// The builder id when none is given.
pub const DEFAULT_BUILDER_ID: &str = "urn:rbuild:builder";

/// How much provenance to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvenanceMode {
    Min,
    Max,
}

/// `--provenance` as buildx spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenanceOpts {
    pub mode: ProvenanceMode,
    pub builder_id: Option<String>,
}

impl ProvenanceOpts {
    /// `true|1|false|0|min|max` or `mode=min|max[,builder-id=URI][,version=v1]`. `Ok(None)`:
    /// provenance off.
    pub fn parse(s: &str) -> Result<Option<ProvenanceOpts>> {
        let bad = |reason: String| AttestError::ProvenanceOption {
            value: s.to_string(),
            reason,
        };
        match s.trim() {
            "false" | "0" => return Ok(None),
            "true" | "1" | "min" => {
                return Ok(Some(ProvenanceOpts {
                    mode: ProvenanceMode::Min,
                    builder_id: None,
                }))
            }
            "max" => {
                return Ok(Some(ProvenanceOpts {
                    mode: ProvenanceMode::Max,
                    builder_id: None,
                }))
            }
            _ => {}
        }
        let mut opts = ProvenanceOpts {
            mode: ProvenanceMode::Min,
            builder_id: None,
        };
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
            match (k.trim(), v.trim()) {
                ("mode", "min") => opts.mode = ProvenanceMode::Min,
                ("mode", "max") => opts.mode = ProvenanceMode::Max,
                ("mode", m) => return Err(bad(format!("mode={m}: expected min or max"))),
                ("builder-id", id) if !id.is_empty() => opts.builder_id = Some(id.to_string()),
                ("version", "v1") => {}
                ("version", v) => return Err(bad(format!("version={v}: only SLSA v1 is written"))),
                ("disabled", "true") => return Ok(None),
                ("disabled", "false") => {}
                (k, _) => {
                    return Err(bad(format!(
                        "unknown key {k:?} (mode, builder-id, version, disabled)"
                    )))
                }
            }
        }
        Ok(Some(opts))
    }
}

/// Something the build read from outside, pinned by digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// A PURL for images (`pkg:docker/busybox@latest?platform=linux%2Famd64`), else a URL.
    pub uri: String,
    /// Algorithm → hex (`sha256`, or `sha1` for a git commit).
    pub digest: BTreeMap<String, String>,
}

impl Material {
    /// A base image: its name as written and the manifest digest it resolved to.
    pub fn image(name: &str, digest: &Digest, platform: &str) -> Material {
        let (repo, tag) = split_name(name);
        let mut uri = format!("pkg:docker/{repo}");
        if let Some(t) = tag {
            uri.push('@');
            uri.push_str(&t.replace(':', "%3A"));
        }
        if !platform.is_empty() {
            uri.push_str("?platform=");
            uri.push_str(&platform.replace('/', "%2F"));
        }
        Material {
            uri,
            digest: BTreeMap::from([(digest.algorithm().to_string(), digest.hex().to_string())]),
        }
    }
}

/// `reg/repo:tag` → (`reg/repo`, `tag`); `repo@sha256:…` → (`repo`, `sha256:…`).
fn split_name(name: &str) -> (&str, Option<&str>) {
    if let Some((r, d)) = name.split_once('@') {
        return (r, Some(d));
    }
    match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (name, None),
    }
}

/// Everything the provenance says about one build.
#[derive(Clone, Debug)]
pub struct BuildFacts {
    pub dockerfile_path: String,
    pub dockerfile: Vec<u8>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub secrets: Vec<String>,
    pub ssh: Vec<String>,
    /// Base images, git sources, URLs (`ADD`), remote contexts — each with its digest.
    pub materials: Vec<Material>,
    /// The plan the solver ran (mode=max), as JSON.
    pub build_definition: Option<Value>,
    /// `linux/amd64` …
    pub builder_platform: String,
    pub invocation_id: String,
    pub started_on: String,
    pub finished_on: String,
    /// No step could reach the network (no RUN, or every RUN with `--network=none`).
    pub hermetic: bool,
}

/// The SLSA v1 predicate.
pub fn predicate(opts: &ProvenanceOpts, f: &BuildFacts) -> Value {
    let max = opts.mode == ProvenanceMode::Max;
    let mut args = serde_json::Map::new();
    for (k, v) in &f.build_args {
        args.insert(format!("build-arg:{k}"), json!(v));
    }
    for (k, v) in &f.labels {
        args.insert(format!("label:{k}"), json!(v));
    }
    if let Some(t) = &f.target {
        args.insert("target".into(), json!(t));
    }
    let dockerfile_digest = Digest::sha256_of(&f.dockerfile);
    let mut request = json!({
        "frontend": "dockerfile.v0",
        "args": args,
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    });
    if max {
        request["secrets"] = f
            .secrets
            .iter()
            .map(|id| json!({"id": id}))
            .collect::<Vec<_>>()
            .into();
        request["ssh"] = f
            .ssh
            .iter()
            .map(|id| json!({"id": id}))
            .collect::<Vec<_>>()
            .into();
    }
    let mut internal = json!({"builderPlatform": f.builder_platform});
    if max {
        internal["buildConfig"] = json!({
            "dockerfile": String::from_utf8_lossy(&f.dockerfile),
            "definition": f.build_definition.clone().unwrap_or(Value::Null),
        });
    }
    let deps: Vec<Value> = f
        .materials
        .iter()
        .map(|m| json!({"uri": m.uri, "digest": m.digest}))
        .collect();
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": {
                    "path": f.dockerfile_path,
                    "digest": {"sha256": dockerfile_digest.hex()},
                },
                "request": request,
            },
            "internalParameters": internal,
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": opts.builder_id.as_deref().unwrap_or(DEFAULT_BUILDER_ID)},
            "metadata": {
                "invocationID": f.invocation_id,
                "startedOn": f.started_on,
                "finishedOn": f.finished_on,
                "rbuild_hermetic": f.hermetic,
                "rbuild_completeness": {
                    "request": max,
                    // A local context is not pinned by anything the provenance can name.
                    "resolvedDependencies": false,
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(ProvenanceOpts::parse("false").unwrap(), None);
        assert_eq!(
            ProvenanceOpts::parse("mode=max,builder-id=https://ci/run/1")
                .unwrap()
                .unwrap(),
            ProvenanceOpts {
                mode: ProvenanceMode::Max,
                builder_id: Some("https://ci/run/1".into())
            }
        );
        assert_eq!(
            ProvenanceOpts::parse("true").unwrap().unwrap().mode,
            ProvenanceMode::Min
        );
        let e = ProvenanceOpts::parse("mode=huge").unwrap_err().to_string();
        assert!(e.contains("mode=huge: expected min or max"), "{e}");
        assert!(ProvenanceOpts::parse("version=v0.2").is_err());
    }

    #[test]
    fn image_material() {
        let d = Digest::sha256_of(b"x");
        let m = Material::image("localhost:5000/base:1", &d, "linux/amd64");
        assert_eq!(
            m.uri,
            "pkg:docker/localhost:5000/base@1?platform=linux%2Famd64"
        );
    }
}
