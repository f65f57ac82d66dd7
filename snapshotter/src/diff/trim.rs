//! Trimming copy-up noise from an upper dir before it is diffed.
//!
//! Overlay copies a directory up into the upper dir whenever something is created inside it —
//! also when the sandbox creates a mountpoint (`/etc/hosts`) and removes it again. The directory
//! then sits in the upper dir, empty and with the lower one's metadata, and would end up in the
//! step's layer as a spurious entry. [`trim_unchanged_dirs`] removes such directories: empty, not
//! opaque, and identical in mode, owner and mtime to the directory the lower layers show.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Remove directories of `upper` that only exist because of an overlay copy-up. `lowers` are the
/// layer dirs below, nearest first. Returns how many were removed.
pub fn trim_unchanged_dirs(upper: &Path, lowers: &[PathBuf]) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(upper) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            removed += trim_dir(upper, Path::new(&entry.file_name()), lowers)?;
        }
    }
    Ok(removed)
}

/// Post-order: children first, then the directory itself if it became empty and matches.
fn trim_dir(upper: &Path, rel: &Path, lowers: &[PathBuf]) -> io::Result<usize> {
    let dir = upper.join(rel);
    let mut removed = 0;
    let mut remaining = 0usize;
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            removed += trim_dir(upper, &child, lowers)?;
            if upper.join(&child).symlink_metadata().is_ok() {
                remaining += 1;
            }
        } else {
            remaining += 1;
        }
    }
    if remaining > 0 {
        return Ok(removed);
    }
    if xattr::get(&dir, super::opaque_xattr())
        .ok()
        .flatten()
        .is_some()
    {
        return Ok(removed);
    }
    let meta = dir.symlink_metadata()?;
    let Some(lower) = lower_entry(rel, lowers) else {
        return Ok(removed);
    };
    if lower.is_dir()
        && lower.mode() == meta.mode()
        && lower.uid() == meta.uid()
        && lower.gid() == meta.gid()
        && lower.mtime() == meta.mtime()
        && lower.mtime_nsec() == meta.mtime_nsec()
    {
        fs::remove_dir(&dir)?;
        removed += 1;
    }
    Ok(removed)
}

/// The metadata of `rel` as the lower layers show it: the nearest layer that has an entry there
/// (a whiteout — a 0/0 char device — means it does not exist). Parents made opaque or whited out in
/// a nearer layer are not consulted: when in doubt the directory is kept, which is always correct.
fn lower_entry(rel: &Path, lowers: &[PathBuf]) -> Option<fs::Metadata> {
    for l in lowers {
        if let Ok(m) = l.join(rel).symlink_metadata() {
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None;
            }
            return Some(m);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_unchanged_empty_copies() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        let upper = t.path().join("upper");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), "x").unwrap();
        fs::create_dir_all(lower.join("var/log")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("var/log")).unwrap();
        fs::create_dir_all(upper.join("new")).unwrap();
        fs::write(upper.join("var/file"), "y").unwrap();
        // Give the upper copies the lower's times, as overlay's copy-up does.
        for d in ["etc", "var/log", "var"] {
            let m = lower.join(d).symlink_metadata().unwrap();
            let ft = filetime_of(&m);
            set_mtime(&upper.join(d), ft);
        }
        let n = trim_unchanged_dirs(&upper, std::slice::from_ref(&lower)).unwrap();
        assert_eq!(n, 2, "etc and var/log removed");
        assert!(!upper.join("etc").exists());
        assert!(!upper.join("var/log").exists());
        assert!(upper.join("var/file").exists(), "real changes stay");
        assert!(upper.join("new").exists(), "dirs absent below stay");
    }

    fn filetime_of(m: &fs::Metadata) -> (i64, i64) {
        (m.mtime(), m.mtime_nsec())
    }

    fn set_mtime(p: &Path, (s, ns): (i64, i64)) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(s as u64, ns as u32);
        let f = fs::File::open(p).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }
}
