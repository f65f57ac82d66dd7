//! The two ways into a filesystem: a directory, or an image's layers read as tar streams.

use super::{assemble, classify, read_candidate, Candidate, Found, Inventory};
use crate::error::{AttestError, Result};
use rbuild_oci::Digest;
use rbuild_snapshotter::diff::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use rbuild_store::Store;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Read at most `size` bytes of a candidate (its size was checked against the caps already).
fn read_all(r: impl Read, size: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size.min(1 << 24) as usize);
    r.take(size).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Inventory of the filesystem under `root` (symlinks are not followed; nothing outside `root`
/// is read).
pub fn scan_dir(root: &Path) -> Result<Inventory> {
    let mut found = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.map_err(|source| AttestError::Walk {
            path: root.to_path_buf(),
            source,
        })?;
        if !e.file_type().is_file() {
            continue;
        }
        let Ok(rel) = e.path().strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        let md = e.metadata().map_err(|source| AttestError::Walk {
            path: e.path().to_path_buf(),
            source,
        })?;
        let Some(kind) = classify(&rel, md.permissions().mode(), md.len()) else {
            continue;
        };
        let read = |p: &Path| -> std::io::Result<Vec<u8>> {
            if kind == Candidate::Executable {
                // Only ELF files are read whole.
                let mut f = std::fs::File::open(p)?;
                let mut magic = [0u8; 4];
                if f.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
                    return Ok(Vec::new());
                }
            }
            read_all(std::fs::File::open(p)?, md.len())
        };
        let data = read(e.path()).map_err(|source| AttestError::ReadFile {
            path: e.path().to_path_buf(),
            source,
        })?;
        if let Some(f) = read_candidate(kind, &rel, &data) {
            found.insert(rel, f);
        }
    }
    Ok(assemble(found))
}

/// `./a/b` and `/a/b` → `a/b`.
fn clean(path: &Path) -> String {
    let s = path.to_string_lossy();
    let s = s.trim_start_matches("./").trim_start_matches('/');
    s.trim_end_matches('/').to_string()
}

/// One layer's effect on the paths we track.
#[derive(Default)]
struct LayerChanges {
    /// Paths removed (with everything beneath): whiteouts.
    removed: Vec<String>,
    /// Directories whose lower contents are hidden: opaque markers.
    opaque: Vec<String>,
    /// Paths this layer writes: what the reader found there (`None`: nothing of interest, which
    /// still hides a lower file at that path).
    written: BTreeMap<String, Option<Found>>,
}

fn remove_tree(found: &mut BTreeMap<String, Found>, path: &str) {
    found.remove(path);
    let prefix = format!("{path}/");
    found.retain(|k, _| !k.starts_with(&prefix));
}

/// Inventory of an image in the store, read from its layers bottom to top as an overlay would
/// stack them, without unpacking anything.
pub fn scan_layers(store: &Store, manifest: &Digest) -> Result<Inventory> {
    let layers = rbuild_image::layer_blobs(store, manifest)?;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for l in &layers {
        let digest = &l.blob.digest;
        let io = |source| AttestError::ReadLayer {
            digest: digest.clone(),
            source,
        };
        let f = store.open_blob(digest)?;
        let r =
            rbuild_snapshotter::diff::decompress(f).map_err(|source| AttestError::Decompress {
                digest: digest.clone(),
                source,
            })?;
        let ch = read_layer(r, &found).map_err(io)?;
        for p in &ch.removed {
            remove_tree(&mut found, p);
        }
        for d in &ch.opaque {
            let prefix = format!("{d}/");
            found.retain(|k, _| !k.starts_with(&prefix));
        }
        for (p, f) in ch.written {
            match f {
                Some(f) => {
                    found.insert(p, f);
                }
                None => {
                    found.remove(&p);
                }
            }
        }
    }
    Ok(assemble(found))
}

fn read_layer(r: impl Read, lower: &BTreeMap<String, Found>) -> std::io::Result<LayerChanges> {
    let mut ch = LayerChanges::default();
    let mut ar = tar::Archive::new(r);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let path = clean(&entry.path()?);
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), path.clone()),
        };
        if name == OPAQUE_MARKER {
            ch.opaque.push(dir);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            ch.removed.push(if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            });
            continue;
        }
        let ty = entry.header().entry_type();
        let result = if ty.is_file() {
            let mode = entry.header().mode()?;
            let size = entry.size();
            match classify(&path, mode, size) {
                Some(kind) => {
                    let mut data = read_all(&mut entry, size)?;
                    if kind == Candidate::Executable && !data.starts_with(b"\x7fELF") {
                        data.clear();
                    }
                    read_candidate(kind, &path, &data)
                }
                None => None,
            }
        } else if ty.is_hard_link() {
            let target = entry.link_name()?.map(|t| clean(&t)).unwrap_or_default();
            ch.written
                .get(&target)
                .cloned()
                .flatten()
                .or_else(|| lower.get(&target).cloned())
                .map(|f| relabel(f, &path))
        } else {
            None
        };
        ch.written.insert(path, result);
    }
    Ok(ch)
}

/// A hard link's packages are the target's, found at the link's path.
fn relabel(f: Found, path: &str) -> Found {
    match f {
        Found::Packages(mut p) => {
            for p in &mut p {
                p.source = path.to_string();
            }
            Found::Packages(p)
        }
        other => other,
    }
}
