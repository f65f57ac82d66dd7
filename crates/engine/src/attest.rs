//! `--provenance` and `--sbom`: what the build records about itself, attached to the pushed image
//! as BuildKit does (an index holding the image and its attestation manifest; see
//! `rbuild-attest`).
//!
//! The facts are gathered in two moments: before the solve (the plan's sources, the request) and
//! after it (the SBOM, read from the built image's layers in the store). The statements are made
//! per pushed manifest, whose digest (layers compressed for the registry) is their subject.

use anyhow::Context as _;
use rbuild_attest::attach::{self, Statement};
use rbuild_attest::provenance::{self, BuildFacts, Material, ProvenanceOpts};
use rbuild_attest::sbom::Inventory;
use rbuild_attest::spdx::{self, SbomSubject};
use rbuild_oci::{Descriptor, Digest, Platform, MEDIA_TYPE_OCI_MANIFEST};
use rbuild_ops::{Op, Source};
use rbuild_store::Store;
use serde_json::{json, Value};

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct AttestRequest {
    pub provenance: Option<ProvenanceOpts>,
    pub sbom: bool,
}

impl AttestRequest {
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom
    }
}

/// The images a plan reads (resolved to digests, for `platform`), its git and URL sources when
/// pinned, and (for mode=max) its steps as JSON.
pub fn plan_facts(
    graph: &rbuild_ops::BuildGraph,
    platform: &Platform,
) -> (Vec<Material>, Value, bool) {
    let host = platform.format();
    let mut materials: Vec<Material> = Vec::new();
    let mut steps = Vec::new();
    let mut hermetic = true;
    for idx in graph.graph.node_indices() {
        let v = &graph.graph[idx];
        match &v.op {
            Op::Source(Source::Image {
                reference,
                manifest,
            }) => {
                let m = Material::image(reference, manifest, &host);
                if !materials.contains(&m) {
                    materials.push(m);
                }
            }
            Op::Source(Source::Git {
                remote,
                reference,
                checksum: Some(commit),
                ..
            }) => materials.push(Material {
                uri: match reference {
                    Some(r) => format!("{remote}#{r}"),
                    None => remote.clone(),
                },
                digest: [("sha1".to_string(), commit.clone())].into(),
            }),
            Op::Source(Source::Http {
                url,
                checksum: Some(d),
                ..
            }) => materials.push(Material {
                uri: url.clone(),
                digest: [(d.algorithm().to_string(), d.hex().to_string())].into(),
            }),
            Op::Exec(_) => hermetic = false,
            _ => {}
        }
        let mut inputs: Vec<(usize, String)> = graph
            .graph
            .edges_directed(idx, petgraph::Direction::Incoming)
            .map(|e| {
                (
                    *e.weight(),
                    format!("step{}", petgraph::visit::EdgeRef::source(&e).index()),
                )
            })
            .collect();
        inputs.sort();
        steps.push(json!({
            "id": format!("step{}", idx.index()),
            "op": v.op,
            "inputs": inputs.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        }));
    }
    (materials, Value::Array(steps), hermetic)
}

/// Everything needed to make the statements once the pushed manifest's digest is known.
pub struct Attestations {
    pub provenance: Option<(ProvenanceOpts, BuildFacts)>,
    pub sbom: Option<Inventory>,
    /// `created` of the SBOM (SOURCE_DATE_EPOCH when set).
    pub created: String,
}

impl Attestations {
    /// The statements about `manifest` (pushed as `name`, an image for `platform`).
    pub fn statements(
        &self,
        manifest: &Digest,
        name: Option<&str>,
        platform: &Platform,
    ) -> Vec<Statement> {
        let subject = attach::subject_name(name, platform);
        let mut out = Vec::new();
        if let Some((opts, facts)) = &self.provenance {
            out.push(attach::statement(
                &subject,
                manifest,
                provenance::PREDICATE_SLSA_V1,
                provenance::predicate(opts, facts),
            ));
        }
        if let Some(inv) = &self.sbom {
            let doc = spdx::document(
                inv,
                &SbomSubject {
                    name: name.unwrap_or("image").to_string(),
                    digest: Some(manifest.clone()),
                    created: self.created.clone(),
                },
            );
            out.push(attach::statement(
                &subject,
                manifest,
                spdx::PREDICATE_SPDX,
                doc,
            ));
        }
        out
    }

    /// An index of the pushed manifest `manifest` and its attestation manifest, written to the
    /// store; its digest (what is pushed instead of the manifest).
    pub fn index_for(
        &self,
        store: &Store,
        manifest: &Digest,
        name: Option<&str>,
    ) -> anyhow::Result<Digest> {
        let size = store
            .blob_size(manifest)?
            .with_context(|| format!("the manifest to push {manifest} is not in the store"))?;
        // The image's own platform (its config's), which `--platform` may make another than ours.
        let m = rbuild_image::read_manifest(store, manifest)?;
        let cfg = rbuild_image::read_config(store, &m.config.digest)?;
        let platform = Platform {
            architecture: cfg.architecture,
            os: cfg.os,
            variant: cfg.variant,
            os_version: None,
        };
        let mut desc = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, manifest.clone(), size);
        desc.platform = Some(platform.clone());
        let st = self.statements(manifest, name, &platform);
        Ok(attach::write_index(store, &[(desc, st)])?)
    }
}

/// The SBOM of the built image: its layers read from the store.
pub fn scan(store: &Store, manifest: &Digest) -> anyhow::Result<Inventory> {
    rbuild_attest::sbom::scan_layers(store, manifest)
        .with_context(|| format!("reading the packages of image {manifest} for its SBOM"))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
