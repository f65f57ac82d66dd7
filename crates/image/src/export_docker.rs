//! Export an image in `docker save`'s format (docker-archive): `manifest.json`,
//! `<config hex>.json`, one uncompressed `<diff_id hex>.tar` per layer, and `repositories`.

use crate::compress::ensure_compressed_reporting;
use crate::document::{layer_blobs, resolve_manifest};
use crate::error::{ImageError, Result};
use crate::export_oci::tag_of;
use crate::progress::{no_export_progress, Counting, ExportProgressFn};
use crate::tarout::TarOut;
use rbuild_oci::{Compression, Digest, MAX_CONFIG_SIZE};
use rbuild_store::{normalize_name, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// One entry of a docker-archive's `manifest.json` (Docker's field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Write the image `manifest` as a docker-archive tar to `out`, tagged `names`.
/// Layers are written uncompressed (decompressed once and remembered in the store).
pub fn export_docker_archive(
    store: &Store,
    manifest: &Digest,
    names: &[String],
    out: impl Write,
) -> Result<()> {
    export_docker_archive_reporting(store, manifest, names, out, no_export_progress())
}

/// [`export_docker_archive`], reporting the bytes of layers decompressed (`exporting layer`) and
/// written (`writing layer`, named by diff_id).
pub fn export_docker_archive_reporting(
    store: &Store,
    manifest: &Digest,
    names: &[String],
    out: impl Write,
    report: ExportProgressFn<'_>,
) -> Result<()> {
    let (md, m) = resolve_manifest(store, manifest)?;
    let config_bytes = store.read_blob(&m.config.digest, MAX_CONFIG_SIZE)?;
    let mut layers = Vec::new();
    for l in layer_blobs(store, &md)? {
        let d = ensure_compressed_reporting(
            store,
            &l.blob,
            &l.diff_id,
            Compression::None,
            None,
            report,
        )?;
        layers.push((l.diff_id, d.size));
    }
    let names: Vec<String> = names
        .iter()
        .map(|n| normalize_name(n))
        .collect::<Result<_, _>>()?;
    let config_name = format!("{}.json", m.config.digest.hex());
    let entry = DockerManifestEntry {
        config: config_name.clone(),
        repo_tags: names.clone(),
        layers: layers
            .iter()
            .map(|(d, _)| format!("{}.tar", d.hex()))
            .collect(),
    };
    let manifest_json = serde_json::to_vec(&[entry]).map_err(|e| ImageError::Write {
        what: "manifest.json".into(),
        source: std::io::Error::other(e),
    })?;
    // repositories: {repo: {tag: <id of the top layer>}} (legacy; docker load uses manifest.json).
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    if let Some((top, _)) = layers.last() {
        for n in &names {
            if n.contains('@') {
                continue;
            }
            let tag = tag_of(n);
            let repo = &n[..n.len() - tag.len() - 1];
            repos
                .entry(repo.to_string())
                .or_default()
                .insert(tag.to_string(), top.hex().to_string());
        }
    }
    let repos_json = serde_json::to_vec(&repos).map_err(|e| ImageError::Write {
        what: "repositories".into(),
        source: std::io::Error::other(e),
    })?;

    // Sorted entry names; a layer used twice is written once.
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut tar = TarOut::new(out, "docker archive");
    let mut entries: Vec<(String, Option<(Digest, u64)>)> = vec![
        (config_name, None),
        ("manifest.json".to_string(), None),
        ("repositories".to_string(), None),
    ];
    for (d, size) in &layers {
        entries.push((format!("{}.tar", d.hex()), Some((d.clone(), *size))));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, layer) in entries {
        if !files.insert(name.clone()) {
            continue;
        }
        match (name.as_str(), layer) {
            (_, Some((d, size))) => {
                let mut f = Counting::new(store.open_blob(&d)?, "writing layer", &d, size, report);
                tar.file(&name, size, &mut f)?;
                f.done();
            }
            ("manifest.json", None) => tar.bytes(&name, &manifest_json)?,
            ("repositories", None) => tar.bytes(&name, &repos_json)?,
            (_, None) => tar.bytes(&name, &config_bytes)?,
        }
    }
    tar.finish()?.flush().map_err(|source| ImageError::Write {
        what: "docker archive".into(),
        source,
    })
}
