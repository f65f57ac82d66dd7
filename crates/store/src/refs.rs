//! `refs/images/<sha256 of name>.json`: a second, file-based record of every image name, so the
//! names survive a lost or corrupt `meta.db` (fsck --repair re-registers them).

use crate::blobs::fsync_dir;
use crate::error::Result;
use crate::images::ImageRecord;
use crate::Store;
use rbuild_oci::sha256_hex;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::PathBuf;

/// Ref files are tiny; anything bigger is not ours.
const MAX_REF_FILE: u64 = 64 * 1024;

/// An unreadable ref file and why.
pub(crate) type BadRefFile = (PathBuf, String);

#[derive(Serialize, Deserialize)]
pub(crate) struct RefFile {
    pub name: String,
    pub record: ImageRecord,
}

impl Store {
    fn refs_dir(&self) -> PathBuf {
        self.root().join("refs").join("images")
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        self.refs_dir()
            .join(format!("{}.json", sha256_hex(name.as_bytes())))
    }

    /// Atomically write the ref file of `name` (temp file, fsync, rename, fsync dir).
    pub(crate) fn write_ref(&self, name: &str, rec: &ImageRecord) -> Result<()> {
        let path = self.ref_path(name);
        let tmp = path.with_extension(format!(
            "tmp-{}-{}",
            std::process::id(),
            crate::db::now_ns()
        ));
        let body = self.ref_body(name, rec)?;
        // Unchanged (a no-op rebuild re-tags the same image): leave the file, skip two fsyncs.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == body.len() as u64)
            && std::fs::read(&path).is_ok_and(|old| old == body)
        {
            return Ok(());
        }
        let res = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            fsync_dir(&self.refs_dir())
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io_err("write ref file", &path, e));
        }
        Ok(())
    }

    fn ref_body(&self, name: &str, rec: &ImageRecord) -> Result<Vec<u8>> {
        serde_json::to_vec(&RefFile {
            name: name.to_string(),
            record: rec.clone(),
        })
        .map_err(|e| self.io_err("encode ref file", &self.ref_path(name), io::Error::other(e)))
    }

    /// The ref file of image name `name`, and the bytes it holds while the name points at `rec`
    /// (the no-op check's stamp of a name).
    pub fn ref_file(&self, name: &str, rec: &ImageRecord) -> Result<(PathBuf, Vec<u8>)> {
        let name = crate::images::normalize_name(name)?;
        Ok((self.ref_path(&name), self.ref_body(&name, rec)?))
    }

    pub(crate) fn remove_ref(&self, name: &str) -> Result<()> {
        let path = self.ref_path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err("remove ref file", &path, e)),
        }
    }

    /// Every readable ref file; unreadable ones are returned as paths with the reason.
    pub(crate) fn read_refs(&self) -> Result<(Vec<RefFile>, Vec<BadRefFile>)> {
        let dir = self.refs_dir();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| self.io_err("list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io_err("list", &dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                bad.push((path, "not a ref file (leftover temp file?)".to_string()));
                continue;
            }
            let parsed = (|| -> std::result::Result<RefFile, String> {
                let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
                if meta.len() > MAX_REF_FILE {
                    return Err(format!("{} bytes is too large for a ref file", meta.len()));
                }
                let data = std::fs::read(&path).map_err(|e| e.to_string())?;
                let rf: RefFile = serde_json::from_slice(&data).map_err(|e| e.to_string())?;
                if self.ref_path(&rf.name) != path {
                    return Err(format!("file name does not match the name {:?}", rf.name));
                }
                Ok(rf)
            })();
            match parsed {
                Ok(rf) => good.push(rf),
                Err(reason) => bad.push((path, reason)),
            }
        }
        good.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((good, bad))
    }
}
