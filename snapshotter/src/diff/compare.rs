//! A full tree compared with its parent tree → an OCI layer tar: the diff side of copy-based
//! ("native") snapshots, which have no upper dir holding the changeset.
//!
//! Both trees are walked side by side in the order [`write_layer`](super::write_layer) walks an
//! upper dir (sorted, parents first), and the members are what that upper dir would have held:
//! - a path only in the tree, or changed, is written (a new directory with all beneath it);
//! - a path only in the parent becomes a `.wh.<name>` whiteout;
//! - a directory in both is written if its own attributes changed or anything beneath it did.
//!
//! "Changed" is decided as containerd's native differ does: type, mode, owner, device numbers,
//! symlink target, xattrs, size and mtime with nanoseconds, plus a grown link count; when both
//! mtimes have no nanoseconds (files unpacked from a tar), same-sized contents are compared byte for
//! byte.
//!
//! One known difference from overlay: overlay (with `index=off`) copies up one name of a hard-linked
//! lower file and so breaks the link, while a copy keeps POSIX semantics — a chmod or write through
//! one name changes the others, and they all go into the layer.

use super::fsutil::{list_dir, open_dir_at};
use super::write::{LayerOptions, LayerStats, Walker, WriteError};
use super::WHITEOUT_PREFIX;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Write the changes from `parent` (a full tree, or nothing: then every path is new) to `tree` as
/// an OCI layer tar to `out`, hashing the stream as it goes.
pub fn write_tree_diff<W: Write>(
    tree: &Path,
    parent: Option<&Path>,
    out: W,
    opts: &LayerOptions,
) -> Result<LayerStats, WriteError> {
    let open = |p: &Path| {
        File::open(p)
            .map(OwnedFd::from)
            .map_err(|source| WriteError::Io {
                op: "open tree",
                path: p.to_path_buf(),
                source,
            })
    };
    let new = open(tree)?;
    let mut w = Walker::new(tree, out, opts);
    match parent {
        None => w.walk_dir(&new, b"")?,
        Some(p) => {
            let old = open(p)?;
            let st = nix::sys::stat::fstat(&new).map_err(|e| w.io("stat", b"", nix_io(e)))?;
            w.walk_cmp(&new, &old, b"", &st)?;
        }
    }
    w.finish()
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

impl<W: Write> Walker<'_, W> {
    /// Compare directory `new` (at `prefix`, with stat `dir_st`) with the parent's `old`.
    fn walk_cmp(
        &mut self,
        new: &OwnedFd,
        old: &OwnedFd,
        prefix: &[u8],
        dir_st: &FileStat,
    ) -> Result<(), WriteError> {
        let names = list_dir(new).map_err(|e| self.io("read dir", prefix, nix_io(e)))?;
        let old_names = list_dir(old).map_err(|e| self.io("read parent dir", prefix, nix_io(e)))?;
        let (mut i, mut j) = (0, 0);
        while i < names.len() || j < old_names.len() {
            let order = match (names.get(i), old_names.get(j)) {
                (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            if order == Ordering::Greater {
                // Gone: a whiteout, dated by the directory it left.
                let mut wh = prefix.to_vec();
                wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                wh.extend_from_slice(old_names[j].as_bytes());
                let mtime = self.mtime(dir_st);
                self.marker(&wh, mtime)?;
                j += 1;
                continue;
            }
            let name = &names[i];
            i += 1;
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.as_bytes());
            let st = self.stat(new, name, &rel)?;
            if order == Ordering::Less {
                self.entry(new, name, prefix, rel, st)?;
                continue;
            }
            j += 1;
            let old_st = self.stat(old, name, &rel)?;
            if kind(&st) == SFlag::S_IFDIR && kind(&old_st) == SFlag::S_IFDIR {
                self.dir_cmp(new, old, name, rel, st, &old_st)?;
            } else if !self.same(new, old, name, &rel, &st, &old_st)? {
                self.entry(new, name, prefix, rel, st)?;
            }
        }
        Ok(())
    }

    /// A directory in both trees: written if it changed, else only if something beneath it did.
    fn dir_cmp(
        &mut self,
        new: &OwnedFd,
        old: &OwnedFd,
        name: &OsStr,
        rel: Vec<u8>,
        st: FileStat,
        old_st: &FileStat,
    ) -> Result<(), WriteError> {
        let xattrs = self.xattrs(new, name, &rel)?;
        let changed = !same_attrs(&st, old_st) || xattrs != self.xattrs(old, name, &rel)?;
        let mut dname = rel.clone();
        dname.push(b'/');
        let depth = self.pending.len();
        self.pending.push((dname.clone(), st, xattrs));
        if changed {
            self.flush_pending()?;
        }
        let sub = open_dir_at(new, name).map_err(|e| self.io("open dir", &rel, nix_io(e)))?;
        let sub_old =
            open_dir_at(old, name).map_err(|e| self.io("open parent dir", &rel, nix_io(e)))?;
        self.walk_cmp(&sub, &sub_old, &dname, &st)?;
        // Nothing beneath it was written: it is not part of the layer.
        self.pending.truncate(depth);
        Ok(())
    }

    /// Whether non-directory `name` is unchanged from the parent's.
    fn same(
        &self,
        new: &OwnedFd,
        old: &OwnedFd,
        name: &OsStr,
        rel: &[u8],
        st: &FileStat,
        old_st: &FileStat,
    ) -> Result<bool, WriteError> {
        // A new link to a file makes overlay copy it up (to link the copy), so a link count that
        // grew is a change; one that shrank (a link removed elsewhere) is not.
        if !same_attrs(st, old_st) || st.st_nlink > old_st.st_nlink {
            return Ok(false);
        }
        let same = match kind(st) {
            SFlag::S_IFCHR | SFlag::S_IFBLK => st.st_rdev == old_st.st_rdev,
            SFlag::S_IFLNK => {
                let a = readlinkat(new, name).map_err(|e| self.io("readlink", rel, nix_io(e)))?;
                let b = readlinkat(old, name).map_err(|e| self.io("readlink", rel, nix_io(e)))?;
                a == b
            }
            SFlag::S_IFREG => {
                st.st_size == old_st.st_size
                    && (st.st_mtime_nsec != 0
                        || old_st.st_mtime_nsec != 0
                        || self.same_content(new, old, name, rel)?)
            }
            _ => true,
        };
        Ok(same && self.xattrs(new, name, rel)? == self.xattrs(old, name, rel)?)
    }

    fn same_content(
        &self,
        new: &OwnedFd,
        old: &OwnedFd,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<bool, WriteError> {
        let open = |dir: &OwnedFd| {
            openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map(File::from)
            .map_err(|e| self.io("open", rel, nix_io(e)))
        };
        let (mut a, mut b) = (open(new)?, open(old)?);
        let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        loop {
            let n = read_full(&mut a, &mut ba).map_err(|e| self.io("read", rel, e))?;
            let m = read_full(&mut b, &mut bb).map_err(|e| self.io("read", rel, e))?;
            if n != m || ba[..n] != bb[..m] {
                return Ok(false);
            }
            if n == 0 {
                return Ok(true);
            }
        }
    }
}

/// Type, mode, owner and mtime (with nanoseconds) agree.
fn same_attrs(a: &FileStat, b: &FileStat) -> bool {
    a.st_mode == b.st_mode
        && a.st_uid == b.st_uid
        && a.st_gid == b.st_gid
        && a.st_mtime == b.st_mtime
        && a.st_mtime_nsec == b.st_mtime_nsec
}

/// Fill `buf` unless the file ends first; the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
