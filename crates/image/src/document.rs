//! Image documents in the store: read manifests and configs, write a new image, resolve an index
//! to the host platform's manifest.

use crate::error::{ImageError, Result};
use rbuild_oci::{
    canonical_json, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::{ImageRecord, Store};
use serde::Deserialize;

/// A layer as stored: its uncompressed digest and the blob that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    pub diff_id: Digest,
    pub blob: Descriptor,
}

/// Nested indexes deeper than this are refused.
const MAX_INDEX_DEPTH: usize = 4;

/// Read and parse a manifest blob (size-capped, verified).
pub fn read_manifest(store: &Store, d: &Digest) -> Result<Manifest> {
    let data = store.read_blob(d, MAX_MANIFEST_SIZE)?;
    serde_json::from_slice(&data).map_err(|source| ImageError::BadDocument {
        digest: d.clone(),
        what: "image manifest",
        source,
    })
}

/// Read and parse an image config blob (size-capped, verified).
pub fn read_config(store: &Store, d: &Digest) -> Result<ImageConfig> {
    let data = store.read_blob(d, MAX_CONFIG_SIZE)?;
    serde_json::from_slice(&data).map_err(|source| ImageError::BadDocument {
        digest: d.clone(),
        what: "image config",
        source,
    })
}

/// Just enough of a manifest-or-index to tell them apart.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

/// Whether the stored document `d` is an index (OCI index or Docker manifest list).
fn is_index(data: &[u8], d: &Digest) -> Result<bool> {
    let p: Probe = serde_json::from_slice(data).map_err(|source| ImageError::BadDocument {
        digest: d.clone(),
        what: "manifest or index",
        source,
    })?;
    Ok(match p.media_type.as_deref() {
        Some(MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST) => true,
        Some(_) => false,
        None => p.manifests.is_some(),
    })
}

/// Pick the descriptor for `platform` from an index (containerd's `platforms.Only` order: the
/// platform itself, then what also runs on it, such as arm/v6 for arm/v7).
pub(crate) fn pick_platform<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    rbuild_oci::Matcher::only(platform).best(index).or_else(|| {
        // An index whose only entry has no platform (e.g. written by `skopeo copy oci:`) means
        // "this image".
        match index.manifests.as_slice() {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        }
    })
}

/// Resolve `d` (a manifest, or an index of them) to the host platform's manifest.
pub fn resolve_manifest(store: &Store, d: &Digest) -> Result<(Digest, Manifest)> {
    resolve_manifest_for(store, d, &Platform::host())
}

/// Resolve `d` (a manifest, or an index of them) to `platform`'s manifest (containerd's
/// `platforms.Only` order). A lone manifest is returned as it is, whatever its platform.
pub fn resolve_manifest_for(
    store: &Store,
    d: &Digest,
    platform: &Platform,
) -> Result<(Digest, Manifest)> {
    let mut cur = d.clone();
    for _ in 0..MAX_INDEX_DEPTH {
        let data = store.read_blob(&cur, MAX_MANIFEST_SIZE)?;
        if !is_index(&data, &cur)? {
            let m = serde_json::from_slice(&data).map_err(|source| ImageError::BadDocument {
                digest: cur.clone(),
                what: "image manifest",
                source,
            })?;
            return Ok((cur, m));
        }
        let idx: Index =
            serde_json::from_slice(&data).map_err(|source| ImageError::BadDocument {
                digest: cur.clone(),
                what: "image index",
                source,
            })?;
        let next = pick_platform(&idx, platform).ok_or_else(|| ImageError::NoPlatformManifest {
            index: cur.clone(),
            platform: format!(
                "{} (it has {})",
                platform.normalized(),
                rbuild_oci::index_platforms(&idx).join(", ")
            ),
        })?;
        cur = next.digest.clone();
    }
    Err(ImageError::IndexTooDeep { index: d.clone() })
}

/// Check that a descriptor's blob is in the store with the right size.
pub(crate) fn check_present(store: &Store, d: &Descriptor, what: &'static str) -> Result<()> {
    match store.blob_size(&d.digest)? {
        None => Err(ImageError::MissingBlob {
            digest: d.digest.clone(),
            what,
        }),
        Some(s) if s != d.size => Err(ImageError::SizeMismatch {
            digest: d.digest.clone(),
            expected: d.size,
            actual: s,
        }),
        Some(_) => Ok(()),
    }
}

/// Write `config` and an OCI manifest over `layers` (already in the store) into the store.
/// Returns (manifest digest, config digest). Every document is canonical JSON.
pub fn write_image(
    store: &Store,
    config: &ImageConfig,
    layers: &[Descriptor],
) -> Result<(Digest, Digest)> {
    let config_bytes = canonical_json(config);
    let config_d = rbuild_oci::Digest::sha256_of(&config_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::new(
            MEDIA_TYPE_OCI_CONFIG,
            config_d.clone(),
            config_bytes.len() as u64,
        ),
        layers: layers.to_vec(),
        subject: None,
        annotations: Default::default(),
    };
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(ImageError::LayerCountMismatch {
            manifest: rbuild_oci::canonical_digest(&manifest),
            layers: layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    for l in layers {
        check_present(store, l, "layer")?;
    }
    store.put_blob(&config_bytes)?;
    let manifest_d = store.put_blob(&canonical_json(&manifest))?;
    Ok((manifest_d, config_d))
}

/// The [`ImageRecord`] for a stored manifest (resolving an index to the host platform): sizes
/// summed from the manifest, `created` from the config.
pub fn image_record(store: &Store, manifest: &Digest) -> Result<ImageRecord> {
    let (md, m) = resolve_manifest(store, manifest)?;
    let config = read_config(store, &m.config.digest)?;
    Ok(ImageRecord {
        manifest: md,
        config: m.config.digest.clone(),
        media_type: m
            .media_type
            .clone()
            .unwrap_or_else(|| MEDIA_TYPE_OCI_MANIFEST.to_string()),
        size: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
        created: config.created,
    })
}

/// The layers of a manifest paired with the diff_ids of its config.
pub fn layer_blobs(store: &Store, manifest: &Digest) -> Result<Vec<LayerBlob>> {
    let m = read_manifest(store, manifest)?;
    let config = read_config(store, &m.config.digest)?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(ImageError::LayerCountMismatch {
            manifest: manifest.clone(),
            layers: m.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    Ok(m.layers
        .into_iter()
        .zip(config.rootfs.diff_ids)
        .map(|(blob, diff_id)| LayerBlob { diff_id, blob })
        .collect())
}
