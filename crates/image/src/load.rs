//! `load`: import images from an OCI layout directory, an OCI archive (tar of a layout) or a
//! docker-archive (`docker save`), any of them optionally gzip- or zstd-compressed.
//!
//! The archive is read once, as a stream: blobs and layer tars go straight into the store
//! (verified against their names where they have one), small JSON documents are kept in memory
//! under size caps. Nothing is unpacked to disk; entry names that are absolute or contain `..`
//! are refused. Everything loaded is held by a lease until the image names are registered.

use crate::compress::{decompressor, WriteTracker};
use crate::document::{check_present, image_record, pick_platform, resolve_manifest};
use crate::error::{ImageError, Result};
use crate::export_docker::DockerManifestEntry;
use crate::export_oci::ANNOTATION_CONTAINERD_NAME;
use rbuild_oci::{
    canonical_json, Compression, Descriptor, Digest, ImageConfig, Index, Manifest, Platform,
    Sha256Writer, ANNOTATION_REF_NAME, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::{normalize_name, Lease, Store};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path};

/// An image registered by [`load`] (one per name; `name` is `None` for an unnamed image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    pub name: Option<String>,
    pub manifest: Digest,
    pub config: Digest,
}

/// Archives with more entries than this are refused.
const MAX_ENTRIES: u64 = 1_000_000;
/// Nested indexes deeper than this are refused.
const MAX_DEPTH: usize = 4;

/// Import every image found at `src` into the store and name it. Detects the format.
pub fn load(store: &Store, src: &Path) -> Result<Vec<LoadedImage>> {
    let lease = store.lease("load")?;
    let meta = std::fs::metadata(src).map_err(io_err("stat", src))?;
    if meta.is_dir() {
        return load_layout_dir(store, &lease, src);
    }
    let reader = open_decompressed(src)?;
    let scanned = scan_tar(store, &lease, src, reader)?;
    if scanned.docs.contains_key("index.json") || scanned.docs.contains_key("oci-layout") {
        load_oci_archive(store, src, &scanned)
    } else if scanned.docs.contains_key("manifest.json") {
        load_docker_archive(store, &lease, src, &scanned)
    } else {
        Err(ImageError::NotAnImage {
            src: src.to_path_buf(),
            reason: "a tar without index.json (OCI) or manifest.json (docker-archive)".into(),
        })
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Compression told by the first bytes of a stream.
fn sniff(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    File::open(path)
        .and_then(|f| f.take(4).read_to_end(&mut head))
        .map_err(io_err("read", path))?;
    Ok(head)
}

fn open_decompressed(src: &Path) -> Result<Box<dyn Read>> {
    let c = sniff(&read_head(src)?);
    let f = File::open(src).map_err(io_err("open", src))?;
    decompressor(BufReader::with_capacity(1 << 20, f), c).map_err(io_err("decompress", src))
}

/// What one pass over an archive found.
#[derive(Default)]
struct Scanned {
    /// Small documents by entry name.
    docs: HashMap<String, Vec<u8>>,
    /// Other regular files, now blobs in the store: name → (digest, size).
    files: HashMap<String, (Digest, u64)>,
    /// Symlinks and hard links: name → target name (archive-relative).
    links: HashMap<String, String>,
}

impl Scanned {
    /// Follow links (a few hops) to a file entry name.
    fn resolve<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..8 {
            match self.links.get(name) {
                Some(t) => name = t,
                None => break,
            }
        }
        name
    }
}

/// An archive entry name as a clean relative path (`./a/b` → `a/b`); `None` for the root.
fn clean_name(src: &Path, raw: &Path) -> Result<Option<String>> {
    let unsafe_name = || ImageError::UnsafeEntryName {
        src: src.to_path_buf(),
        name: raw.to_string_lossy().chars().take(300).collect(),
    };
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().ok_or_else(unsafe_name)?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_name())
            }
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Resolve a symlink target relative to the link's directory, staying inside the archive.
fn link_target(name: &str, target: &str, hard: bool) -> Option<String> {
    let mut parts: Vec<&str> = if hard || target.starts_with('/') {
        Vec::new()
    } else {
        name.split('/').collect::<Vec<_>>()[..name.split('/').count() - 1].to_vec()
    };
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The size cap of a document entry, or `None` if the entry is not a document.
fn doc_cap(name: &str) -> Option<u64> {
    match name {
        "index.json" | "manifest.json" => Some(MAX_MANIFEST_SIZE),
        "oci-layout" | "repositories" => Some(MAX_MANIFEST_SIZE),
        _ if name.ends_with("/json") || name.ends_with("/VERSION") => Some(MAX_CONFIG_SIZE),
        _ if name.ends_with(".json") && !name.contains('/') => Some(MAX_CONFIG_SIZE),
        _ => None,
    }
}

/// `blobs/<alg>/<hex>` → the digest it names.
fn blob_name_digest(name: &str) -> Option<std::result::Result<Digest, ()>> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Some(format!("{alg}:{hex}").parse().map_err(|_| ()))
}

pub(crate) fn ingest_entry(
    store: &Store,
    src: &Path,
    name: &str,
    r: &mut dyn Read,
    expected: Option<(&Digest, u64)>,
) -> Result<(Digest, u64)> {
    if let Some((d, size)) = expected {
        if store.blob_size(d)? == Some(size) {
            // Already stored; its content was verified when it was written.
            io::copy(r, &mut io::sink()).map_err(|source| ImageError::Read {
                src: src.to_path_buf(),
                what: name.to_string(),
                source,
            })?;
            return Ok((d.clone(), size));
        }
    }
    let mut w = store.ingest()?;
    let mut t = WriteTracker {
        inner: &mut w,
        failed: false,
    };
    if let Err(e) = io::copy(r, &mut t) {
        if t.failed {
            return Err(w.error("load blob", e).into());
        }
        return Err(ImageError::Read {
            src: src.to_path_buf(),
            what: name.to_string(),
            source: e,
        });
    }
    w.commit(expected)
        .map_err(|source| ImageError::ArchiveBlob {
            src: src.to_path_buf(),
            name: name.to_string(),
            source: Box::new(source),
        })
}

fn scan_tar(store: &Store, lease: &Lease, src: &Path, reader: Box<dyn Read>) -> Result<Scanned> {
    let read_err = |what: &str| {
        let what = what.to_string();
        move |source| ImageError::Read {
            src: src.to_path_buf(),
            what,
            source,
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Scanned::default();
    let mut count = 0u64;
    for entry in archive.entries().map_err(read_err("archive"))? {
        let mut entry = entry.map_err(read_err("archive entry"))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(ImageError::TooManyEntries {
                src: src.to_path_buf(),
                max: MAX_ENTRIES,
            });
        }
        let raw = entry.path().map_err(read_err("entry name"))?.into_owned();
        let Some(name) = clean_name(src, &raw)? else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(read_err(&name))? {
                if let Some(t) = target
                    .to_str()
                    .and_then(|t| link_target(&name, t, kind.is_hard_link()))
                {
                    out.links.insert(name, t);
                }
            }
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let size = entry.size();
        if let Some(parsed) = blob_name_digest(&name) {
            let d = parsed.map_err(|()| ImageError::NotAnImage {
                src: src.to_path_buf(),
                reason: format!("{name} is not named by a valid digest"),
            })?;
            let got = ingest_entry(store, src, &name, &mut entry, Some((&d, size)))?;
            lease.add_blob(&got.0)?;
            out.files.insert(name, got);
        } else if let Some(cap) = doc_cap(&name) {
            if size > cap {
                return Err(ImageError::DocumentTooLarge {
                    src: src.to_path_buf(),
                    name,
                    size,
                    max: cap,
                });
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(cap)
                .read_to_end(&mut data)
                .map_err(read_err(&name))?;
            out.docs.insert(name, data);
        } else {
            let got = ingest_entry(store, src, &name, &mut entry, None)?;
            lease.add_blob(&got.0)?;
            out.files.insert(name, got);
        }
    }
    Ok(out)
}

fn parse_doc<T: serde::de::DeserializeOwned>(src: &Path, what: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|source| ImageError::BadArchiveDocument {
        src: src.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

/// The name an OCI index entry gives its image, if any.
fn entry_name(d: &Descriptor) -> Option<String> {
    d.annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| d.annotations.get(ANNOTATION_REF_NAME))
        .and_then(|n| normalize_name(n).ok())
}

/// Whether an index entry is for another platform than ours (entries without one are ours).
fn foreign_platform(d: &Descriptor, host: &Platform) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os != host.os || p.architecture != host.architecture)
}

fn register(
    store: &Store,
    manifest: &Digest,
    names: Vec<Option<String>>,
) -> Result<Vec<LoadedImage>> {
    let rec = image_record(store, manifest)?;
    let mut out = Vec::new();
    for name in names {
        if let Some(n) = &name {
            store.put_image(n, &rec)?;
        }
        out.push(LoadedImage {
            name,
            manifest: rec.manifest.clone(),
            config: rec.config.clone(),
        });
    }
    Ok(out)
}

/// Register the images of an OCI index whose blobs are all in the store already.
fn register_index(store: &Store, src: &Path, index: &Index) -> Result<Vec<LoadedImage>> {
    let host = Platform::host();
    let mut out = Vec::new();
    for d in &index.manifests {
        if foreign_platform(d, &host) {
            continue;
        }
        let (md, m) = resolve_manifest(store, &d.digest)?;
        check_present(store, &m.config, "config")?;
        for l in &m.layers {
            check_present(store, l, "layer")?;
        }
        out.extend(register(store, &md, vec![entry_name(d)])?);
    }
    if out.is_empty() {
        return Err(ImageError::NotAnImage {
            src: src.to_path_buf(),
            reason: format!(
                "its index has no image for {}/{}",
                host.os, host.architecture
            ),
        });
    }
    Ok(out)
}

fn load_oci_archive(store: &Store, src: &Path, scanned: &Scanned) -> Result<Vec<LoadedImage>> {
    let data = scanned
        .docs
        .get("index.json")
        .ok_or_else(|| ImageError::NotAnImage {
            src: src.to_path_buf(),
            reason: "an OCI layout without index.json".into(),
        })?;
    let index: Index = parse_doc(src, "index.json", data)?;
    register_index(store, src, &index)
}

/// Copy blob `d` from an OCI layout directory into the store (verified) unless already there.
fn copy_in(store: &Store, lease: &Lease, dir: &Path, d: &Descriptor) -> Result<()> {
    lease.add_blob(&d.digest)?;
    crate::layout::copy_blob_in(store, dir, d)
}

/// Copy an index or manifest and what the host platform needs of it.
fn copy_tree(store: &Store, lease: &Lease, dir: &Path, d: &Descriptor, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(ImageError::IndexTooDeep {
            index: d.digest.clone(),
        });
    }
    if d.size > MAX_MANIFEST_SIZE {
        return Err(ImageError::DocumentTooLarge {
            src: dir.to_path_buf(),
            name: d.digest.to_string(),
            size: d.size,
            max: MAX_MANIFEST_SIZE,
        });
    }
    copy_in(store, lease, dir, d)?;
    let data = store.read_blob(&d.digest, MAX_MANIFEST_SIZE)?;
    let is_index = matches!(
        d.media_type.as_str(),
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST
    ) || serde_json::from_slice::<serde_json::Value>(&data)
        .is_ok_and(|v| v.get("manifests").is_some());
    if is_index {
        let idx: Index = parse_doc(dir, &d.digest.to_string(), &data)?;
        let host = Platform::host();
        let child = pick_platform(&idx, &host).ok_or_else(|| ImageError::NoPlatformManifest {
            index: d.digest.clone(),
            platform: format!("{}/{}", host.os, host.architecture),
        })?;
        return copy_tree(store, lease, dir, child, depth + 1);
    }
    let m: Manifest = parse_doc(dir, &d.digest.to_string(), &data)?;
    if m.config.size > MAX_CONFIG_SIZE {
        return Err(ImageError::DocumentTooLarge {
            src: dir.to_path_buf(),
            name: m.config.digest.to_string(),
            size: m.config.size,
            max: MAX_CONFIG_SIZE,
        });
    }
    copy_in(store, lease, dir, &m.config)?;
    for l in &m.layers {
        copy_in(store, lease, dir, l)?;
    }
    Ok(())
}

fn load_layout_dir(store: &Store, lease: &Lease, dir: &Path) -> Result<Vec<LoadedImage>> {
    let index = crate::layout::read_index(dir)?;
    let host = Platform::host();
    for d in &index.manifests {
        if !foreign_platform(d, &host) {
            copy_tree(store, lease, dir, d, 0)?;
        }
    }
    register_index(store, dir, &index)
}

/// The uncompressed digest of a stored layer blob.
fn diff_id_of(store: &Store, d: &Digest, c: Compression) -> Result<Digest> {
    if c == Compression::None {
        return Ok(d.clone());
    }
    let f = store.open_blob(d)?;
    let path = store.blob_path(d);
    let mut r = decompressor(f, c).map_err(io_err("decompress", &path))?;
    let mut h = Sha256Writer::new(io::sink());
    io::copy(&mut r, &mut h).map_err(io_err("decompress", &path))?;
    Ok(h.finish().0)
}

fn load_docker_archive(
    store: &Store,
    lease: &Lease,
    src: &Path,
    scanned: &Scanned,
) -> Result<Vec<LoadedImage>> {
    let entries: Vec<DockerManifestEntry> =
        parse_doc(src, "manifest.json", &scanned.docs["manifest.json"])?;
    let missing = |name: &str| ImageError::MissingArchiveFile {
        src: src.to_path_buf(),
        name: name.to_string(),
    };
    let mut out = Vec::new();
    for e in entries {
        let cfg_name = scanned.resolve(&e.config);
        let config_bytes = match (scanned.docs.get(cfg_name), scanned.files.get(cfg_name)) {
            (Some(b), _) => b.clone(),
            (None, Some((d, _))) => store.read_blob(d, MAX_CONFIG_SIZE)?,
            (None, None) => return Err(missing(&e.config)),
        };
        let config_d = store.put_blob(&config_bytes)?;
        lease.add_blob(&config_d)?;
        let stem = cfg_name
            .rsplit('/')
            .next()
            .unwrap_or(cfg_name)
            .trim_end_matches(".json");
        if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) && stem != config_d.hex()
        {
            return Err(ImageError::ConfigNameMismatch {
                src: src.to_path_buf(),
                config: config_d,
                named: stem.to_string(),
            });
        }
        let cfg: ImageConfig = parse_doc(src, &e.config, &config_bytes)?;
        if cfg.rootfs.diff_ids.len() != e.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                manifest: config_d,
                layers: e.layers.len(),
                diff_ids: cfg.rootfs.diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (lname, want) in e.layers.iter().zip(&cfg.rootfs.diff_ids) {
            let (d, size) = scanned
                .files
                .get(scanned.resolve(lname))
                .ok_or_else(|| missing(lname))?;
            let c = sniff(&read_head(&store.blob_path(d))?);
            let actual = diff_id_of(store, d, c)?;
            if &actual != want {
                return Err(ImageError::DiffIdMismatch {
                    layer: d.clone(),
                    expected: want.clone(),
                    actual,
                });
            }
            layers.push(Descriptor::new(c.oci_layer_media_type(), d.clone(), *size));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
            artifact_type: None,
            config: Descriptor::new(MEDIA_TYPE_OCI_CONFIG, config_d, config_bytes.len() as u64),
            layers,
            subject: None,
            annotations: Default::default(),
        };
        let md = store.put_blob(&canonical_json(&manifest))?;
        lease.add_blob(&md)?;
        let names: Vec<Option<String>> = if e.repo_tags.is_empty() {
            vec![None]
        } else {
            e.repo_tags
                .iter()
                .map(|t| normalize_name(t).map(Some))
                .collect::<Result<_, _>>()?
        };
        out.extend(register(store, &md, names)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        let src = Path::new("x.tar");
        assert_eq!(
            clean_name(src, Path::new("./a/b")).unwrap().as_deref(),
            Some("a/b")
        );
        assert_eq!(clean_name(src, Path::new("./")).unwrap(), None);
        assert!(clean_name(src, Path::new("../etc/passwd")).is_err());
        assert!(clean_name(src, Path::new("/etc/passwd")).is_err());
        assert!(clean_name(src, Path::new("a/../../b")).is_err());
    }

    #[test]
    fn link_targets() {
        assert_eq!(
            link_target("a/layer.tar", "../b/layer.tar", false).as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(link_target("a/layer.tar", "../../x", false), None);
        assert_eq!(
            link_target("a/layer.tar", "b/layer.tar", true).as_deref(),
            Some("b/layer.tar")
        );
    }

    #[test]
    fn sniffs() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"abc"), Compression::None);
    }

    #[test]
    fn blob_names() {
        let hex = "a".repeat(64);
        assert!(matches!(
            blob_name_digest(&format!("blobs/sha256/{hex}")),
            Some(Ok(_))
        ));
        assert!(matches!(blob_name_digest("blobs/sha256/zz"), Some(Err(()))));
        assert!(blob_name_digest("manifest.json").is_none());
    }
}
