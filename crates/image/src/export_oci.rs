//! Export an image as an OCI image layout: a directory, or a tar of one (`oci-archive`).

use crate::compress::ensure_compressed_reporting;
use crate::document::{check_present, layer_blobs, read_config, resolve_manifest};
use crate::error::{ImageError, Result};
use crate::layout::OCI_LAYOUT;
use crate::progress::{no_export_progress, Counting, ExportProgressFn};
use crate::tarout::TarOut;
use rbuild_oci::{
    canonical_json, Compression, Descriptor, Digest, Index, Manifest, Platform,
    ANNOTATION_REF_NAME, MAX_MANIFEST_SIZE, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::{normalize_name, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

/// containerd's annotation with the full image name (the OCI ref.name holds the tag).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Where an OCI layout goes.
pub enum OciDest<'a> {
    /// A tar stream of the layout (`oci-archive:`), written deterministically.
    Tar(&'a mut dyn Write),
    /// A directory (created if needed; an existing layout keeps its other images).
    Dir(&'a Path),
}

/// An image ready to be written out: its manifest and every blob it needs.
pub(crate) struct Exportable {
    pub manifest: Digest,
    pub manifest_size: u64,
    pub platform: Platform,
    /// (digest, size, what it is), sorted and deduplicated: manifest, config and layers.
    pub blobs: Vec<(Digest, u64, &'static str)>,
}

/// Resolve `manifest` (or index) and, when `compression` is given, convert its layers (writing a
/// new manifest if anything changed).
pub(crate) fn prepare(
    store: &Store,
    manifest: &Digest,
    compression: Option<Compression>,
    level: Option<u32>,
    report: ExportProgressFn<'_>,
) -> Result<Exportable> {
    let (mut md, mut m) = resolve_manifest(store, manifest)?;
    if let Some(want) = compression {
        let layers = layer_blobs(store, &md)?;
        let mut new_layers = Vec::with_capacity(layers.len());
        for l in &layers {
            let mut d =
                ensure_compressed_reporting(store, &l.blob, &l.diff_id, want, level, report)?;
            d.media_type = want.oci_layer_media_type().to_string();
            d.annotations = l.blob.annotations.clone();
            new_layers.push(d);
        }
        let mut config = m.config.clone();
        config.media_type = MEDIA_TYPE_OCI_CONFIG.to_string();
        let changed = new_layers != m.layers
            || config != m.config
            || m.media_type.as_deref() != Some(MEDIA_TYPE_OCI_MANIFEST);
        if changed {
            m = Manifest {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
                artifact_type: None,
                config,
                layers: new_layers,
                subject: None,
                annotations: m.annotations.clone(),
            };
            md = store.put_blob(&canonical_json(&m))?;
        }
    }
    let cfg = read_config(store, &m.config.digest)?;
    check_present(store, &m.config, "config")?;
    for l in &m.layers {
        check_present(store, l, "layer")?;
    }
    let manifest_size = store.read_blob(&md, MAX_MANIFEST_SIZE)?.len() as u64;
    let mut blobs: BTreeSet<(Digest, u64, &'static str)> = BTreeSet::new();
    blobs.insert((md.clone(), manifest_size, "writing manifest"));
    blobs.insert((m.config.digest.clone(), m.config.size, "writing config"));
    for l in &m.layers {
        blobs.insert((l.digest.clone(), l.size, "writing layer"));
    }
    Ok(Exportable {
        manifest: md,
        manifest_size,
        platform: Platform {
            architecture: cfg.architecture,
            os: cfg.os,
            variant: cfg.variant,
            os_version: None,
        },
        blobs: blobs.into_iter().collect(),
    })
}

/// The tag part of a normalized name (`repo:tag` → `tag`; `repo@sha256:…` → the digest).
pub(crate) fn tag_of(name: &str) -> &str {
    if let Some((_, d)) = name.split_once('@') {
        return d;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':').map_or("latest", |(_, t)| t)
}

fn index_entries(ex: &Exportable, names: &[String], media_type: &str) -> Result<Vec<Descriptor>> {
    let base = {
        let mut d = Descriptor::new(media_type, ex.manifest.clone(), ex.manifest_size);
        d.platform = Some(ex.platform.clone());
        d
    };
    if names.is_empty() {
        return Ok(vec![base]);
    }
    names
        .iter()
        .map(|n| {
            let full = normalize_name(n)?;
            let mut d = base.clone();
            d.annotations
                .insert(ANNOTATION_REF_NAME.to_string(), tag_of(&full).to_string());
            d.annotations
                .insert(ANNOTATION_CONTAINERD_NAME.to_string(), full);
            Ok(d)
        })
        .collect()
}

/// Export the image `manifest` as an OCI image layout, naming it `names` in index.json
/// (`org.opencontainers.image.ref.name` = tag, `io.containerd.image.name` = full name).
/// With `compression`, layers are converted first (memoized in the store). Returns the digest
/// of the exported manifest (differs from `manifest` when layers were converted).
pub fn export_oci(
    store: &Store,
    manifest: &Digest,
    names: &[String],
    compression: Option<Compression>,
    dest: OciDest<'_>,
) -> Result<Digest> {
    export_oci_with_level(store, manifest, names, compression, None, dest)
}

/// [`export_oci`] with a compression level for the layers converted to `compression` (gzip 0–9,
/// zstd 1–22; `None` = the default; see [`ensure_compressed`](crate::ensure_compressed)).
pub fn export_oci_with_level(
    store: &Store,
    manifest: &Digest,
    names: &[String],
    compression: Option<Compression>,
    level: Option<u32>,
    dest: OciDest<'_>,
) -> Result<Digest> {
    export_oci_reporting(
        store,
        manifest,
        names,
        compression,
        level,
        dest,
        no_export_progress(),
    )
}

/// [`export_oci_with_level`], reporting the bytes of every blob (de)compressed (`exporting
/// layer`) and written (`writing layer|config|manifest`; a blob a layout dir already has is
/// reported done at once).
pub fn export_oci_reporting(
    store: &Store,
    manifest: &Digest,
    names: &[String],
    compression: Option<Compression>,
    level: Option<u32>,
    dest: OciDest<'_>,
    report: ExportProgressFn<'_>,
) -> Result<Digest> {
    let ex = prepare(store, manifest, compression, level, report)?;
    let entries = index_entries(&ex, names, MEDIA_TYPE_OCI_MANIFEST)?;
    match dest {
        OciDest::Tar(out) => {
            let index = Index {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
                manifests: entries,
                annotations: BTreeMap::new(),
            };
            let mut tar = TarOut::new(out, "OCI archive");
            tar.dir("blobs/")?;
            tar.dir("blobs/sha256/")?;
            for (d, size, what) in &ex.blobs {
                let mut f = Counting::new(store.open_blob(d)?, what, d, *size, report);
                tar.file(&format!("blobs/sha256/{}", d.hex()), *size, &mut f)?;
                f.done();
            }
            tar.bytes("index.json", &canonical_json(&index))?;
            tar.bytes("oci-layout", OCI_LAYOUT)?;
            tar.finish()?.flush().map_err(|source| ImageError::Write {
                what: "OCI archive".into(),
                source,
            })?;
        }
        OciDest::Dir(dir) => write_layout_dir(store, &ex, entries, dir, report)?,
    }
    Ok(ex.manifest)
}

fn write_layout_dir(
    store: &Store,
    ex: &Exportable,
    entries: Vec<Descriptor>,
    dir: &Path,
    report: ExportProgressFn<'_>,
) -> Result<()> {
    crate::layout::create_blob_dir(dir)?;
    for (d, size, what) in &ex.blobs {
        let mut f = Counting::new(std::io::empty(), what, d, *size, report);
        let p = crate::layout::blob_path(dir, d);
        if !std::fs::metadata(&p).is_ok_and(|m| m.len() == *size) {
            let mut blob = Counting::new(store.open_blob(d)?, what, d, *size, report);
            crate::layout::write_blob(dir, d, *size, &mut blob)?;
            f.current = blob.current;
        } else {
            f.current = *size;
        }
        f.done();
    }
    // Keep the other images of an existing layout, minus entries for the names we write.
    let index_path = dir.join("index.json");
    let mut manifests = Vec::new();
    if let Ok(data) = std::fs::read(&index_path) {
        if let Ok(old) = serde_json::from_slice::<Index>(&data) {
            let ours: BTreeSet<Option<&String>> = entries
                .iter()
                .map(|e| e.annotations.get(ANNOTATION_CONTAINERD_NAME))
                .collect();
            manifests.extend(old.manifests.into_iter().filter(|m| {
                let name = m.annotations.get(ANNOTATION_CONTAINERD_NAME);
                let replaced = match name {
                    Some(_) => ours.contains(&name),
                    None => m.digest == ex.manifest,
                };
                !replaced
            }));
        }
    }
    manifests.extend(entries);
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
        manifests,
        annotations: BTreeMap::new(),
    };
    crate::layout::write_index(dir, &index)
}
