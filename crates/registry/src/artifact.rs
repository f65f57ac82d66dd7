//! The build cache as an OCI artifact: a manifest whose `artifactType` is [`CACHE_ARTIFACT_TYPE`],
//! whose config blob ([`CacheConfig`]) maps cache keys to layer descriptors, and whose layers are
//! the referenced blobs. Importing reads the manifest and the config only; layers are fetched on
//! demand with [`Client::fetch_blob`], and recorded as known locations so a later push to the same
//! registry mounts them instead of downloading and re-uploading.

use crate::error::{Error, Result};
use crate::progress::ProgressFn;
use crate::push::PushReport;
use crate::{Client, Reference};
use rbuild_oci::{
    canonical_json, Descriptor, Digest, Manifest, MAX_CONFIG_SIZE, MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `artifactType` of an rbuild cache manifest.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.rbuild.cache.v1+json";
/// Media type of the cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The cache config blob: cache key (hex of the key digest) → the layer descriptors that key's
/// result is made of. `extra` is free for the caller (image config pieces, schema notes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub records: BTreeMap<String, Vec<Descriptor>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl CacheConfig {
    pub fn new() -> CacheConfig {
        CacheConfig {
            schema_version: 1,
            ..Default::default()
        }
    }
    /// Every distinct layer referenced, in key order (the artifact's `layers`).
    pub fn layers(&self) -> Vec<Descriptor> {
        let mut seen = std::collections::BTreeSet::new();
        self.records
            .values()
            .flatten()
            .filter(|d| seen.insert(d.digest.clone()))
            .cloned()
            .collect()
    }
}

/// An artifact to push: its type, its config blob and the layers it references.
#[derive(Clone, Copy, Debug)]
pub struct Artifact<'a> {
    pub artifact_type: &'a str,
    pub config_media_type: &'a str,
    pub config: &'a [u8],
    pub layers: &'a [Descriptor],
}

/// An artifact read back: its manifest and its config bytes (already in the store too).
#[derive(Clone, Debug)]
pub struct PulledArtifact {
    /// The reference pinned to the manifest digest.
    pub resolved: Reference,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: Vec<u8>,
}

impl PulledArtifact {
    /// The config parsed as a [`CacheConfig`].
    pub fn cache_config(&self) -> Result<CacheConfig> {
        serde_json::from_slice(&self.config).map_err(|e| Error::InvalidResponse {
            url: self.resolved.to_string(),
            what: "cache config",
            reason: e.to_string(),
        })
    }
}

impl Client {
    /// Push an artifact to `target`: its config (bytes, stored and uploaded with the artifact's
    /// `config_media_type`) and `layers`, which must be in the store or already in a repository of
    /// the target registry (known location, e.g. from [`Client::pull_artifact`]). Returns the push
    /// report; the manifest digest is in it.
    pub async fn push_artifact(
        &self,
        store: &Store,
        target: &Reference,
        artifact: &Artifact<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<PushReport> {
        let Artifact {
            artifact_type,
            config_media_type,
            config,
            layers,
        } = *artifact;
        let config_digest = store.put_blob(config).map_err(|source| Error::Store {
            operation: "put artifact config",
            digest: Digest::sha256_of(config).to_string(),
            source: Box::new(source),
        })?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
            artifact_type: Some(artifact_type.to_string()),
            config: Descriptor::new(config_media_type, config_digest, config.len() as u64),
            layers: layers.to_vec(),
            subject: None,
            annotations: BTreeMap::new(),
        };
        let bytes = canonical_json(&manifest);
        let digest = store.put_blob(&bytes).map_err(|source| Error::Store {
            operation: "put artifact manifest",
            digest: Digest::sha256_of(&bytes).to_string(),
            source: Box::new(source),
        })?;
        self.push(store, &digest, target, progress).await
    }

    /// Push a [`CacheConfig`] as an rbuild cache artifact.
    pub async fn push_cache(
        &self,
        store: &Store,
        target: &Reference,
        cache: &CacheConfig,
        progress: ProgressFn<'_>,
    ) -> Result<PushReport> {
        let config = canonical_json(cache);
        let layers = cache.layers();
        let artifact = Artifact {
            artifact_type: CACHE_ARTIFACT_TYPE,
            config_media_type: CACHE_CONFIG_MEDIA_TYPE,
            config: &config,
            layers: &layers,
        };
        self.push_artifact(store, target, &artifact, progress).await
    }

    /// Read an artifact's manifest and config (into `store` too), not its layers. Its layers are
    /// recorded as known locations of `r`'s repository.
    pub async fn pull_artifact(&self, store: &Store, r: &Reference) -> Result<PulledArtifact> {
        let resolved = self.resolve(r).await?;
        if resolved.is_index() {
            return Err(Error::UnsupportedMediaType {
                url: r.to_string(),
                what: "artifact (an image index, not a manifest)",
                media_type: resolved.media_type,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&resolved.bytes).map_err(|e| Error::InvalidResponse {
                url: r.to_string(),
                what: "artifact manifest",
                reason: e.to_string(),
            })?;
        if manifest.config.size > MAX_CONFIG_SIZE {
            return Err(Error::TooLarge {
                url: r.to_string(),
                what: "artifact config".into(),
                limit: MAX_CONFIG_SIZE,
            });
        }
        self.fetch_blob(store, r, &manifest.config, crate::no_progress())
            .await?;
        let config = store
            .read_blob(&manifest.config.digest, MAX_CONFIG_SIZE)
            .map_err(|source| Error::Store {
                operation: "read artifact config",
                digest: manifest.config.digest.to_string(),
                source: Box::new(source),
            })?;
        store
            .put_blob(&resolved.bytes)
            .map_err(|source| Error::Store {
                operation: "put artifact manifest",
                digest: resolved.digest.to_string(),
                source: Box::new(source),
            })?;
        for l in &manifest.layers {
            self.known_locations().add(&l.digest, r);
        }
        Ok(PulledArtifact {
            resolved: r.with_digest(resolved.digest.clone()),
            manifest_digest: resolved.digest,
            manifest,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_config_layers_are_distinct_and_json_is_stable() {
        let a = Descriptor::new(
            rbuild_oci::MEDIA_TYPE_OCI_LAYER_GZIP,
            Digest::sha256_of(b"a"),
            1,
        );
        let b = Descriptor::new(
            rbuild_oci::MEDIA_TYPE_OCI_LAYER_GZIP,
            Digest::sha256_of(b"b"),
            1,
        );
        let mut c = CacheConfig::new();
        c.records.insert("k2".into(), vec![a.clone(), b.clone()]);
        c.records.insert("k1".into(), vec![a.clone()]);
        assert_eq!(c.layers(), vec![a, b]);
        let j = canonical_json(&c);
        let back: CacheConfig = serde_json::from_slice(&j).unwrap();
        assert_eq!(back, c);
        assert_eq!(canonical_json(&back), j);
    }
}
