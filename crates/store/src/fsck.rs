//! `fsck`: re-hash every blob, check every record against the blobs, and (with `repair`) remove
//! what is broken and rebuild a corrupt `meta.db`, re-registering image names from `refs/`.

use crate::error::{Result, StoreError};
use crate::gc::known_compression;
use crate::images::ImageRecord;
use crate::Store;
use rbuild_oci::{Digest, Index, Manifest, MAX_MANIFEST_SIZE};
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// What fsck found (and, with `repair`, fixed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    pub blobs_checked: u64,
    /// Blobs whose content does not match their name.
    pub corrupt_blobs: Vec<Digest>,
    /// Files under `blobs/` that are not blobs.
    pub stray_files: Vec<PathBuf>,
    /// `meta.db` failed its integrity check (the reason).
    pub db_problem: Option<String>,
    /// Where a corrupt `meta.db` was moved when it was rebuilt.
    pub db_moved_aside: Option<PathBuf>,
    /// Image names found only in `refs/` (re-registered with `repair`).
    pub names_restored: Vec<String>,
    /// Image names whose ref file was missing or stale (rewritten with `repair`).
    pub refs_rewritten: Vec<String>,
    /// Ref files that cannot be read (removed with `repair`).
    pub bad_ref_files: Vec<(PathBuf, String)>,
    /// Images whose manifest, config or layers are missing or corrupt (name, reason).
    pub broken_images: Vec<(String, String)>,
    /// Layer variant records pointing at a missing or corrupt blob (diff_id/compression, reason).
    pub broken_layer_variants: Vec<(String, String)>,
    /// Cache records that do not parse or whose listed `"blobs"` are missing (key, reason).
    pub broken_cache_records: Vec<(String, String)>,
    /// Whether the problems were repaired.
    pub repaired: bool,
}

impl FsckReport {
    /// No problem found.
    pub fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.stray_files.is_empty()
            && self.db_problem.is_none()
            && self.names_restored.is_empty()
            && self.refs_rewritten.is_empty()
            && self.bad_ref_files.is_empty()
            && self.broken_images.is_empty()
            && self.broken_layer_variants.is_empty()
            && self.broken_cache_records.is_empty()
    }
}

/// Move `meta.db` (and its `-wal`/`-shm`) to `meta.db.corrupt-<ns>`; returns the new db path.
pub(crate) fn move_db_aside(root: &Path, db_path: &Path) -> Result<PathBuf> {
    let stamp = crate::db::now_ns();
    let aside = root.join(format!("meta.db.corrupt-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db_path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::io(
                    "move corrupt database aside",
                    &from,
                    root,
                    e,
                ))
            }
        }
    }
    Ok(aside)
}

impl Store {
    /// Check the whole store; with `repair`, fix what can be fixed (see [`FsckReport`]).
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        if repair {
            return self.changing(|| self.fsck_locked(true));
        }
        self.fsck_locked(false)
    }

    fn fsck_locked(&self, repair: bool) -> Result<FsckReport> {
        let _gc = self.gc_lock()?;
        let mut report = FsckReport {
            repaired: repair,
            ..Default::default()
        };
        self.fsck_db(repair, &mut report)?;
        let corrupt = self.fsck_blobs(repair, &mut report)?;
        self.fsck_refs(repair, &corrupt, &mut report)?;
        self.fsck_images(repair, &corrupt, &mut report)?;
        self.fsck_layer_variants(repair, &corrupt, &mut report)?;
        self.fsck_cache_records(repair, &corrupt, &mut report)?;
        if repair {
            self.held_by_leases()?; // drops leases of dead processes
        }
        Ok(report)
    }

    fn fsck_db(&self, repair: bool, report: &mut FsckReport) -> Result<()> {
        let problem = {
            let conn = self.conn();
            match crate::db::quick_check(&conn) {
                Ok(p) => p,
                Err(e) => Some(e.to_string()),
            }
        };
        let Some(problem) = problem else {
            return Ok(());
        };
        report.db_problem = Some(problem);
        if repair {
            let mut conn = self.conn();
            // Close the old connection before moving its files.
            let placeholder = rusqlite::Connection::open_in_memory().map_err(|e| self.db_err(e))?;
            drop(std::mem::replace(&mut *conn, placeholder));
            report.db_moved_aside = Some(move_db_aside(self.root(), self.db_path())?);
            *conn = crate::db::open(self.db_path())?;
        }
        Ok(())
    }

    fn fsck_blobs(&self, repair: bool, report: &mut FsckReport) -> Result<HashSet<Digest>> {
        let dir = self.root().join("blobs").join("sha256");
        let mut corrupt = HashSet::new();
        let rd = std::fs::read_dir(&dir).map_err(|e| self.io_err("list", &dir, e))?;
        let mut entries: Vec<_> = rd
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| self.io_err("list", &dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let digest = entry
                .file_name()
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok());
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            let Some(d) = digest.filter(|_| is_file) else {
                report.stray_files.push(path.clone());
                if repair && is_file {
                    std::fs::remove_file(&path).map_err(|e| self.io_err("remove", &path, e))?;
                }
                continue;
            };
            report.blobs_checked += 1;
            if self.verify_blob(&d)?.is_some() {
                report.corrupt_blobs.push(d.clone());
                if repair {
                    std::fs::remove_file(&path)
                        .map_err(|e| self.io_err("remove corrupt blob", &path, e))?;
                }
                corrupt.insert(d);
            }
        }
        Ok(corrupt)
    }

    /// Why an image record is broken, if it is.
    fn image_problem(
        &self,
        rec: &ImageRecord,
        corrupt: &HashSet<Digest>,
    ) -> Result<Option<String>> {
        let ok = |d: &Digest| !corrupt.contains(d) && self.has_blob(d);
        if !ok(&rec.manifest) {
            return Ok(Some(format!(
                "manifest {} is missing or corrupt",
                rec.manifest
            )));
        }
        let data = match self.read_blob(&rec.manifest, MAX_MANIFEST_SIZE) {
            Ok(d) => d,
            Err(e) => return Ok(Some(format!("manifest {}: {e}", rec.manifest))),
        };
        if let Ok(m) = serde_json::from_slice::<Manifest>(&data) {
            if m.config.digest != rec.config {
                return Ok(Some(format!(
                    "manifest {} names config {}, the record says {}",
                    rec.manifest, m.config.digest, rec.config
                )));
            }
            for d in std::iter::once(&m.config).chain(&m.layers) {
                if !ok(&d.digest) {
                    return Ok(Some(format!("blob {} is missing or corrupt", d.digest)));
                }
            }
            return Ok(None);
        }
        if let Ok(idx) = serde_json::from_slice::<Index>(&data) {
            if idx.manifests.iter().any(|m| ok(&m.digest)) {
                return Ok(None);
            }
            return Ok(Some(format!(
                "no manifest of index {} is present",
                rec.manifest
            )));
        }
        Ok(Some(format!(
            "blob {} is not a manifest or index",
            rec.manifest
        )))
    }

    fn fsck_refs(
        &self,
        repair: bool,
        corrupt: &HashSet<Digest>,
        report: &mut FsckReport,
    ) -> Result<()> {
        let (refs, bad) = self.read_refs()?;
        for (path, reason) in bad {
            if repair {
                let _ = std::fs::remove_file(&path);
            }
            report.bad_ref_files.push((path, reason));
        }
        let in_db: BTreeMap<String, ImageRecord> = self.list_images()?.into_iter().collect();
        let in_refs: BTreeMap<&str, &ImageRecord> =
            refs.iter().map(|r| (r.name.as_str(), &r.record)).collect();
        for (name, rec) in &in_db {
            if in_refs.get(name.as_str()) != Some(&rec) {
                report.refs_rewritten.push(name.clone());
                if repair {
                    self.write_ref(name, rec)?;
                }
            }
        }
        for (name, rec) in in_refs {
            if in_db.contains_key(name) {
                continue;
            }
            match self.image_problem(rec, corrupt)? {
                None => {
                    report.names_restored.push(name.to_string());
                    if repair {
                        self.put_image_row(name, rec)?;
                    }
                }
                Some(reason) => {
                    report.broken_images.push((name.to_string(), reason));
                    if repair {
                        self.remove_ref(name)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn fsck_images(
        &self,
        repair: bool,
        corrupt: &HashSet<Digest>,
        report: &mut FsckReport,
    ) -> Result<()> {
        for (name, rec) in self.list_images()? {
            if let Some(reason) = self.image_problem(&rec, corrupt)? {
                report.broken_images.push((name.clone(), reason));
                if repair {
                    self.remove_image(&name)?;
                }
            }
        }
        Ok(())
    }

    fn fsck_layer_variants(
        &self,
        repair: bool,
        corrupt: &HashSet<Digest>,
        report: &mut FsckReport,
    ) -> Result<()> {
        for (diff_id, comp, digest, size) in self.layer_variant_rows()? {
            let problem = match (diff_id.parse::<Digest>(), digest.parse::<Digest>()) {
                (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
                _ if !known_compression(&comp) => Some(format!("unknown compression {comp:?}")),
                (Ok(_), Ok(d)) if corrupt.contains(&d) => Some(format!("blob {d} is corrupt")),
                (Ok(_), Ok(d)) => match self.blob_size(&d)? {
                    None => Some(format!("blob {d} is missing")),
                    Some(s) if s as i64 != size => {
                        Some(format!("blob {d} is {s} bytes, the record says {size}"))
                    }
                    Some(_) => None,
                },
            };
            if let Some(reason) = problem {
                report
                    .broken_layer_variants
                    .push((format!("{diff_id}/{comp}"), reason));
                if repair {
                    self.remove_layer_variant_row(&diff_id, &comp)?;
                }
            }
        }
        Ok(())
    }

    fn fsck_cache_records(
        &self,
        repair: bool,
        corrupt: &HashSet<Digest>,
        report: &mut FsckReport,
    ) -> Result<()> {
        for (key, value) in self.cache_record_rows()? {
            let problem = if let Err(e) = key.parse::<Digest>() {
                Some(e.to_string())
            } else {
                match serde_json::from_str::<serde_json::Value>(&value) {
                    Err(e) => Some(format!("value is not JSON: {e}")),
                    Ok(v) => {
                        let mut listed = Vec::new();
                        if let Some(blobs) = v.get("blobs") {
                            crate::gc::digests_in_json(blobs, &mut listed);
                        }
                        listed
                            .into_iter()
                            .find(|d| corrupt.contains(d) || !self.has_blob(d))
                            .map(|d| format!("blob {d} is missing or corrupt"))
                    }
                }
            };
            if let Some(reason) = problem {
                report.broken_cache_records.push((key.clone(), reason));
                if repair {
                    self.remove_cache_record_row(&key)?;
                }
            }
        }
        Ok(())
    }
}
