//! In-toto statements and BuildKit's attestation storage: an attestation manifest per image
//! manifest (config `unknown/unknown`, one `application/vnd.in-toto+json` layer per statement,
//! annotated with `in-toto.io/predicate-type`), listed in the image index after the image with
//! platform `unknown/unknown` and `vnd.docker.reference.type: attestation-manifest`,
//! `vnd.docker.reference.digest: <image manifest>`.
//!
//! Every document is canonical JSON, so the same attestations give the same digests.

use crate::error::{AttestError, Result};
use rbuild_oci::{
    canonical_json, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, RootFs,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::Store;
use serde_json::{json, Value};

pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";
/// in-toto Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md).
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// One in-toto statement, serialized.
#[derive(Clone, Debug)]
pub struct Statement {
    pub predicate_type: String,
    pub bytes: Vec<u8>,
}

/// A statement about the image manifest `subject` (named `subject_name`, a PURL as BuildKit
/// names it: `pkg:docker/app@1?platform=linux%2Famd64`).
pub fn statement(
    subject_name: &str,
    subject: &Digest,
    predicate_type: &str,
    predicate: Value,
) -> Statement {
    let v = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": subject_name,
            "digest": {subject.algorithm(): subject.hex()},
        }],
        "predicateType": predicate_type,
        "predicate": predicate,
    });
    Statement {
        predicate_type: predicate_type.to_string(),
        bytes: canonical_json(&v),
    }
}

/// BuildKit's subject name for an image: `pkg:docker/<repo>@<tag>?platform=<os>%2F<arch>`.
pub fn subject_name(image_name: Option<&str>, platform: &Platform) -> String {
    let plat = match &platform.variant {
        Some(v) => format!("{}%2F{}%2F{}", platform.os, platform.architecture, v),
        None => format!("{}%2F{}", platform.os, platform.architecture),
    };
    match image_name {
        Some(n) => {
            let m = crate::provenance::Material::image(n, &Digest::sha256_of(b""), "");
            format!("{}?platform={plat}", m.uri)
        }
        None => format!("pkg:docker/_?platform={plat}"),
    }
}

/// Write the attestation manifest for `image` (a manifest descriptor) holding `statements`.
/// Returns its descriptor as it goes into the index.
pub fn write_attestation_manifest(
    store: &Store,
    image: &Descriptor,
    statements: &[Statement],
) -> Result<Descriptor> {
    let mut layers = Vec::new();
    for s in statements {
        let d = store.put_blob(&s.bytes)?;
        let mut desc = Descriptor::new(MEDIA_TYPE_IN_TOTO, d, s.bytes.len() as u64);
        desc.annotations
            .insert(ANNOTATION_PREDICATE_TYPE.into(), s.predicate_type.clone());
        layers.push(desc);
    }
    let config = ImageConfig {
        architecture: "unknown".into(),
        os: "unknown".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
        },
        ..Default::default()
    };
    let config_bytes = canonical_json(&config);
    let config_d = store.put_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(MEDIA_TYPE_OCI_CONFIG, config_d, config_bytes.len() as u64),
        layers,
        subject: None,
        annotations: Default::default(),
    };
    let bytes = canonical_json(&manifest);
    let d = store.put_blob(&bytes)?;
    let mut desc = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, d, bytes.len() as u64);
    desc.platform = Some(Platform {
        architecture: "unknown".into(),
        os: "unknown".into(),
        variant: None,
        os_version: None,
    });
    desc.annotations.insert(
        ANNOTATION_REFERENCE_TYPE.into(),
        REFERENCE_TYPE_ATTESTATION.into(),
    );
    desc.annotations
        .insert(ANNOTATION_REFERENCE_DIGEST.into(), image.digest.to_string());
    Ok(desc)
}

/// Write an OCI index of `images` (manifest descriptors with their platforms), each followed
/// by its attestation manifest when it has statements. Returns the index digest.
pub fn write_index(store: &Store, images: &[(Descriptor, Vec<Statement>)]) -> Result<Digest> {
    let mut manifests: Vec<Descriptor> = images.iter().map(|(d, _)| d.clone()).collect();
    for (d, st) in images {
        if !st.is_empty() {
            manifests.push(write_attestation_manifest(store, d, st)?);
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.into()),
        manifests,
        annotations: Default::default(),
    };
    Ok(store.put_blob(&canonical_json(&index))?)
}

/// The attestation statements attached to an image in the store: for each image manifest of the
/// index `index`, the (predicate type, statement JSON) of its attestation manifest.
pub fn read_attestations(store: &Store, index: &Digest) -> Result<Vec<(Digest, String, Value)>> {
    let data = store.read_blob(index, rbuild_oci::MAX_MANIFEST_SIZE)?;
    let idx: Index = serde_json::from_slice(&data).map_err(|source| AttestError::Json {
        what: "image index",
        source,
    })?;
    let mut out = Vec::new();
    for d in &idx.manifests {
        if d.annotations
            .get(ANNOTATION_REFERENCE_TYPE)
            .map(String::as_str)
            != Some(REFERENCE_TYPE_ATTESTATION)
        {
            continue;
        }
        let Some(subject) = d
            .annotations
            .get(ANNOTATION_REFERENCE_DIGEST)
            .and_then(|s| s.parse::<Digest>().ok())
        else {
            continue;
        };
        let m = rbuild_image::read_manifest(store, &d.digest)?;
        for l in &m.layers {
            if l.media_type != MEDIA_TYPE_IN_TOTO {
                continue;
            }
            let bytes = store.read_blob(&l.digest, 256 << 20)?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|source| AttestError::Json {
                what: "in-toto statement",
                source,
            })?;
            let pt = v["predicateType"].as_str().unwrap_or_default().to_string();
            out.push((subject.clone(), pt, v));
        }
    }
    Ok(out)
}
