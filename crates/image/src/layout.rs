//! OCI image layout directories (image-spec `image-layout.md`): where a blob lives, reading
//! `index.json` and the documents it names (capped, verified against their digests), copying a
//! blob in (verified) or out, and writing `oci-layout` and `index.json` last, every file through a
//! temporary name. One implementation for `load`, the OCI exporter and the build cache's
//! `type=local` (`rbuild-engine`).

use crate::error::{ImageError, Result};
use rbuild_oci::{canonical_json, Descriptor, Digest, Index, MAX_MANIFEST_SIZE};
use rbuild_store::Store;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `oci-layout` file content.
pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Where blob `d` lives in the layout at `dir`: `blobs/<algorithm>/<hex>`.
pub fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Write `data` to `path` atomically (temp file + rename).
pub(crate) fn write_atomic(path: &Path, data: &mut dyn Read) -> Result<()> {
    let tmp = path.with_extension(format!("rbuild-tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::copy(data, &mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io_err("write", path))
}

/// Create `blobs/sha256/` under `dir`.
pub fn create_blob_dir(dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(io_err("create directory", &blobs))
}

/// Write blob `d` of `size` bytes from `data`, unless the layout has a file of that size for it
/// already (then `data` is not read). True when it was written.
pub fn write_blob(dir: &Path, d: &Digest, size: u64, data: &mut dyn Read) -> Result<bool> {
    let p = blob_path(dir, d);
    if std::fs::metadata(&p).is_ok_and(|m| m.len() == size) {
        return Ok(false);
    }
    write_atomic(&p, data)?;
    Ok(true)
}

/// Write a small document (config, manifest) as a blob; its descriptor's digest and size.
pub fn write_document(dir: &Path, bytes: &[u8]) -> Result<(Digest, u64)> {
    let d = Digest::sha256_of(bytes);
    write_blob(dir, &d, bytes.len() as u64, &mut &bytes[..])?;
    Ok((d, bytes.len() as u64))
}

/// Write `oci-layout`, then `index.json` (last: a reader sees the old layout or the whole new one).
pub fn write_index(dir: &Path, index: &Index) -> Result<()> {
    write_atomic(&dir.join("oci-layout"), &mut &OCI_LAYOUT[..])?;
    write_atomic(&dir.join("index.json"), &mut &canonical_json(index)[..])
}

/// Read a file of the layout, refusing one over `cap` bytes.
fn read_capped(dir: &Path, path: &Path, name: &str, cap: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(io_err("read", path))?;
    if meta.len() > cap {
        return Err(ImageError::DocumentTooLarge {
            src: dir.to_path_buf(),
            name: name.to_string(),
            size: meta.len(),
            max: cap,
        });
    }
    std::fs::read(path).map_err(io_err("read", path))
}

/// The layout's `index.json` (at most [`MAX_MANIFEST_SIZE`] bytes).
pub fn read_index(dir: &Path) -> Result<Index> {
    let path = dir.join("index.json");
    if !path.is_file() {
        return Err(ImageError::NotAnImage {
            src: dir.to_path_buf(),
            reason: "a directory without index.json (not an OCI image layout)".into(),
        });
    }
    let data = read_capped(dir, &path, "index.json", MAX_MANIFEST_SIZE)?;
    serde_json::from_slice(&data).map_err(|source| ImageError::BadArchiveDocument {
        src: dir.to_path_buf(),
        what: "index.json".into(),
        source,
    })
}

/// Document blob `d` of the layout (at most `cap` bytes), checked against its digest.
pub fn read_document(dir: &Path, d: &Digest, cap: u64) -> Result<Vec<u8>> {
    let data = read_capped(dir, &blob_path(dir, d), &d.to_string(), cap)?;
    let got = Digest::sha256_of(&data);
    if got != *d {
        return Err(ImageError::ArchiveBlob {
            src: dir.to_path_buf(),
            name: format!("blobs/{}/{}", d.algorithm(), d.hex()),
            source: Box::new(rbuild_store::StoreError::DigestMismatch {
                expected: d.clone(),
                actual: got,
                size: data.len() as u64,
            }),
        });
    }
    Ok(data)
}

/// Copy blob `desc` of the layout at `dir` into the store, verified against its digest and size,
/// unless the store has it already.
pub fn copy_blob_in(store: &Store, dir: &Path, desc: &Descriptor) -> Result<()> {
    if store.blob_size(&desc.digest)? == Some(desc.size) {
        return Ok(());
    }
    let p = blob_path(dir, &desc.digest);
    let mut f = std::fs::File::open(&p).map_err(io_err("open blob", &p))?;
    let name = format!("blobs/{}/{}", desc.digest.algorithm(), desc.digest.hex());
    crate::load::ingest_entry(store, dir, &name, &mut f, Some((&desc.digest, desc.size)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_are_verified() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        create_blob_dir(dir).unwrap();
        let (d, size) = write_document(dir, b"{\"a\":1}").unwrap();
        assert_eq!(size, 7);
        assert_eq!(read_document(dir, &d, 100).unwrap(), b"{\"a\":1}");
        assert!(matches!(
            read_document(dir, &d, 3),
            Err(ImageError::DocumentTooLarge { .. })
        ));
        std::fs::write(blob_path(dir, &d), b"{\"a\":2}").unwrap();
        assert!(matches!(
            read_document(dir, &d, 100),
            Err(ImageError::ArchiveBlob { .. })
        ));
        assert!(matches!(
            read_index(dir),
            Err(ImageError::NotAnImage { .. })
        ));
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: Vec::new(),
            annotations: Default::default(),
        };
        write_index(dir, &index).unwrap();
        assert_eq!(read_index(dir).unwrap().manifests.len(), 0);
        assert!(dir.join("oci-layout").is_file());
    }
}
