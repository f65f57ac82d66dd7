//! Test helpers: a fake image resolver with a few base images, and a text dump of a plan.

#![allow(dead_code)]

use rbuild_oci::{Digest, History, ImageConfig};
use rbuild_ops::{BuildDefinition, ImageResolver, ResolveError, ResolvedImage};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Resolves a fixed set of images; records every call.
pub struct FakeResolver {
    pub images: BTreeMap<String, ImageConfig>,
    pub calls: Mutex<Vec<String>>,
}

fn cfg(json: serde_json::Value) -> ImageConfig {
    serde_json::from_value(json).expect("valid test image config")
}

impl FakeResolver {
    pub fn new() -> Self {
        let mut images = BTreeMap::new();
        let base_hist = serde_json::json!([{"created_by": "/bin/sh -c #(nop) ADD file:abc in / "}]);
        let diff = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        images.insert(
            "busybox".to_string(),
            cfg(serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [diff]},
                "history": base_hist,
            })),
        );
        images.insert(
            "armimage".to_string(),
            cfg(serde_json::json!({
                "architecture": "arm64", "os": "linux", "variant": "v8",
                "config": {"Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [diff]},
            })),
        );
        images.insert(
            "alpine".to_string(),
            cfg(serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [diff]},
                "history": base_hist,
            })),
        );
        images.insert(
            "onbuild-base".to_string(),
            cfg(serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Env": ["PATH=/bin"], "WorkingDir": "/src",
                           "OnBuild": ["COPY . /src/", "RUN make", "ENV BUILT=yes"]},
                "rootfs": {"type": "layers", "diff_ids": [diff]},
            })),
        );
        images.insert(
            "rich".to_string(),
            cfg(serde_json::json!({
                "architecture": "amd64", "os": "linux", "author": "base author",
                "config": {"Env": ["PATH=/bin", "LANG=C.UTF-8", "HOME=/home/app"], "User": "app",
                           "WorkingDir": "/home/app", "Entrypoint": ["/entry"], "Cmd": ["serve"],
                           "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/data": {}},
                           "Labels": {"base": "yes", "version": "1"}, "StopSignal": "SIGINT",
                           "Shell": ["/bin/bash", "-c"],
                           "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 30000000000_i64}},
                "rootfs": {"type": "layers", "diff_ids": [diff, "sha256:2222222222222222222222222222222222222222222222222222222222222222"]},
                "history": [{"created_by": "a"}, {"created_by": "b"}, {"created_by": "c", "empty_layer": true}],
            })),
        );
        images.insert(
            "nopath".to_string(),
            cfg(serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff]}})),
        );
        FakeResolver {
            images,
            calls: Mutex::new(Vec::new()),
        }
    }
}

/// `busybox`, `busybox:latest`, `docker.io/library/busybox:1` → `busybox`.
fn short_name(r: &str) -> String {
    let r = r.rsplit('/').next().unwrap_or(r);
    let r = r.split('@').next().unwrap_or(r);
    r.split(':').next().unwrap_or(r).to_string()
}

impl ImageResolver for FakeResolver {
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ResolveError> {
        self.calls.lock().unwrap().push(reference.to_string());
        let key = if self.images.contains_key(reference) {
            reference.to_string()
        } else {
            short_name(reference)
        };
        let Some(config) = self.images.get(&key) else {
            return Err(ResolveError::NotFound {
                reference: reference.to_string(),
                hint: Some("rbuild load it first".into()),
            });
        };
        let tag = if reference.contains(':') || reference.contains('@') {
            ""
        } else {
            ":latest"
        };
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}{tag}"),
            manifest: Digest::sha256_of(reference.as_bytes()),
            config: config.clone(),
        })
    }

    fn resolve_for(
        &self,
        reference: &str,
        platform: &rbuild_oci::Platform,
    ) -> Result<ResolvedImage, ResolveError> {
        resolve_for_platform(self, reference, platform)
    }
}

impl FakeResolver {
    /// The platforms a fake image has: `busybox` and `alpine` are indexes of linux/amd64,
    /// linux/arm64 and linux/arm/v7; `armimage` is linux/arm64 only; the rest linux/amd64 only.
    fn platforms_of(name: &str) -> &'static [&'static str] {
        match name {
            "busybox" | "alpine" => &["linux/amd64", "linux/arm64", "linux/arm/v7"],
            "armimage" => &["linux/arm64"],
            _ => &["linux/amd64"],
        }
    }
}

/// [`ImageResolver::resolve_for`] as a store of multi-platform images answers it: the manifest of
/// the wanted platform (its digest differs per platform), or an error listing what there is.
fn resolve_for_platform(
    r: &FakeResolver,
    reference: &str,
    platform: &rbuild_oci::Platform,
) -> Result<ResolvedImage, ResolveError> {
    let mut img = r.resolve(reference)?;
    let have: Vec<rbuild_oci::Platform> = FakeResolver::platforms_of(&short_name(reference))
        .iter()
        .map(|s| rbuild_oci::Platform::parse(s).unwrap().normalized())
        .collect();
    let m = rbuild_oci::Matcher::only(platform);
    let Some(p) = have
        .iter()
        .filter(|h| m.matches(h))
        .min_by_key(|h| m.rank(h))
    else {
        return Err(ResolveError::Failed {
            reference: reference.to_string(),
            message: format!(
                "no manifest for {} (it has {})",
                platform.normalized(),
                have.iter()
                    .map(|p| p.format())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    img.config.architecture = p.architecture.clone();
    img.config.os = p.os.clone();
    img.config.variant = p.variant.clone();
    img.manifest = Digest::sha256_of(format!("{reference}@{p}").as_bytes());
    Ok(img)
}

/// Every vertex (index order) with its name, op and inputs, then the history.
pub fn dump_plan(def: &BuildDefinition) -> String {
    let mut out = String::new();
    for id in def.graph.graph.node_indices() {
        let v = def.graph.vertex(id);
        let inputs: Vec<String> = def
            .graph
            .inputs(id)
            .iter()
            .map(|i| format!("#{}", i.index()))
            .collect();
        let op = String::from_utf8(rbuild_oci::canonical_json(&v.op)).unwrap();
        out.push_str(&format!(
            "#{} {}\n  inputs: [{}]{}\n  op: {}\n",
            id.index(),
            v.meta.name,
            inputs.join(", "),
            if v.meta.ignore_cache {
                " ignore_cache"
            } else {
                ""
            },
            op
        ));
    }
    out.push_str(&format!("root: #{}\nhistory:\n", def.target.root.index()));
    for h in &def.target.history {
        let v = h
            .vertex
            .map(|v| format!("#{}", v.index()))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!("  {v} {}\n", h.created_by));
    }
    out
}

pub fn _unused(_: History) {}
