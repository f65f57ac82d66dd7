//! What a chain of layer dirs (an overlay lowerdir stack) shows at one path, without mounting it.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

/// What the merged view of a layer chain has at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LowerEntry {
    Absent,
    /// A directory, with its permission bits, owner and mtime (seconds).
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
    },
    /// A symlink at the path or at one of its parents.
    Symlink,
    /// Any other non-directory.
    Other,
}

/// `rel` (cleaned, relative, non-empty) in the merged view of `lowers` (layer dirs, nearest first):
/// the nearest layer with an entry there decides; a whiteout (char device 0/0) removes it; an
/// opaque directory (`trusted.overlay.opaque=y`) or a non-directory on the way hides the layers
/// below.
pub fn lower_entry(lowers: &[PathBuf], rel: &str) -> io::Result<LowerEntry> {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() {
        return Ok(LowerEntry::Absent);
    }
    for layer in lowers {
        let mut path = layer.clone();
        let mut hides_below = false;
        for (i, c) in comps.iter().enumerate() {
            path.push(c);
            let m = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            let ft = m.file_type();
            if ft.is_char_device() && m.rdev() == 0 {
                return Ok(LowerEntry::Absent);
            }
            if ft.is_symlink() {
                return Ok(LowerEntry::Symlink);
            }
            if i + 1 == comps.len() {
                return Ok(if ft.is_dir() {
                    LowerEntry::Dir {
                        mode: m.mode() & 0o7777,
                        uid: m.uid(),
                        gid: m.gid(),
                        mtime: m.mtime(),
                    }
                } else {
                    LowerEntry::Other
                });
            }
            if !ft.is_dir() {
                return Ok(LowerEntry::Absent);
            }
            if xattr::get(&path, super::opaque_xattr())
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
            {
                hides_below = true;
            }
        }
        if hides_below {
            return Ok(LowerEntry::Absent);
        }
    }
    Ok(LowerEntry::Absent)
}

/// What the merged view of a layer chain has at a path, for resolving a path through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LowerSeen {
    Absent,
    /// A directory: permission bits, owner.
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A symlink at the path itself, with its target.
    Symlink(Vec<u8>),
    Other,
}

/// `comps` in the merged view of `lowers` (nearest first), as overlay looks it up: every proper
/// prefix of `comps` is expected to be a directory in the merged view (the caller resolved it), so a
/// layer with a non-directory or a whiteout at a proper prefix hides itself and every layer below
/// it; an opaque directory hides the layers below it.
pub(crate) fn lower_lookup(lowers: &[PathBuf], comps: &[OsString]) -> io::Result<LowerSeen> {
    if comps.is_empty() {
        return Ok(LowerSeen::Absent);
    }
    'layers: for layer in lowers {
        let mut path = layer.clone();
        let mut hides_below = false;
        for (i, c) in comps.iter().enumerate() {
            path.push(c);
            let m = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if hides_below {
                        return Ok(LowerSeen::Absent);
                    }
                    continue 'layers;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(LowerSeen::Absent),
                Err(e) => return Err(e),
            };
            let ft = m.file_type();
            let whiteout = ft.is_char_device() && m.rdev() == 0;
            if i + 1 == comps.len() {
                return Ok(if whiteout {
                    LowerSeen::Absent
                } else if ft.is_symlink() {
                    LowerSeen::Symlink(std::fs::read_link(&path)?.into_os_string().into_vec())
                } else if ft.is_dir() {
                    LowerSeen::Dir {
                        mode: m.mode() & 0o7777,
                        uid: m.uid(),
                        gid: m.gid(),
                    }
                } else {
                    LowerSeen::Other
                });
            }
            if !ft.is_dir() {
                return Ok(LowerSeen::Absent);
            }
            if xattr::get(&path, super::opaque_xattr())
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y")
            {
                hides_below = true;
            }
        }
    }
    Ok(LowerSeen::Absent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn nearest_layer_whiteouts_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let (near, far) = (t.path().join("near"), t.path().join("far"));
        fs::create_dir_all(far.join("a/b")).unwrap();
        fs::create_dir_all(far.join("c")).unwrap();
        fs::write(far.join("f"), "x").unwrap();
        std::os::unix::fs::symlink("/a", far.join("l")).unwrap();
        fs::create_dir_all(near.join("a")).unwrap();
        fs::write(near.join("c"), "now a file").unwrap();
        let lowers = vec![near, far];
        assert!(matches!(
            lower_entry(&lowers, "a/b").unwrap(),
            LowerEntry::Dir { .. }
        ));
        assert_eq!(lower_entry(&lowers, "c").unwrap(), LowerEntry::Other);
        assert_eq!(lower_entry(&lowers, "f").unwrap(), LowerEntry::Other);
        assert_eq!(lower_entry(&lowers, "l/x").unwrap(), LowerEntry::Symlink);
        assert_eq!(lower_entry(&lowers, "nope").unwrap(), LowerEntry::Absent);
        assert_eq!(lower_entry(&lowers, "f/below").unwrap(), LowerEntry::Absent);
    }
}
