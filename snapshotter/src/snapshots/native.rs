//! The copy-based ("native") snapshots' file work: a full copy of a tree, and folding a changeset
//! in overlay format into a tree.
//!
//! Both walk fd-relative and never follow a symlink. A copy is a real copy — no reflink, no
//! hardlink to the parent (its files are mutable in the child) — that keeps file types, modes,
//! owners, xattrs, mtimes (with nanoseconds, which is what the diff side compares), symlink
//! targets, device numbers and the hardlinks inside the tree.

use crate::diff::fsutil::{list_dir, open_dir_at, read_xattrs, remove_all_at, set_xattr};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmodat, fstatat, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, Gid, Uid};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A failure with the path it happened at.
fn at(op: &'static str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Owner, xattrs, mode and times of `name` beneath `dir`, from `st` and `xattrs` (in that order:
/// chown clears set-id bits and file capabilities).
fn set_meta(
    dir: &OwnedFd,
    name: &OsStr,
    st: &FileStat,
    xattrs: &[(OsString, Vec<u8>)],
) -> io::Result<()> {
    let symlink = kind(st) == SFlag::S_IFLNK;
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(errno)?;
    for (k, v) in xattrs {
        if !crate::diff::is_overlay_xattr(k.as_bytes()) {
            set_xattr(dir, name, k, v)?;
        }
    }
    if !symlink {
        // Not a symlink (we made it, or stat said so), so following it is safe.
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink).map_err(errno)?;
    }
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(errno)
}

/// Copy the contents of directory `src` into the empty directory `dst`, and `src`'s own metadata
/// onto `dst`.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let open = |p: &Path| {
        File::open(p)
            .map(OwnedFd::from)
            .map_err(|e| at("open", p, e))
    };
    let (s, d) = (open(src)?, open(dst)?);
    let mut c = Copier {
        src,
        dst_root: &d,
        links: HashMap::new(),
        buf: vec![0; 256 * 1024],
    };
    c.copy_dir(&s, &d, Path::new(""))?;
    let st = nix::sys::stat::fstat(&s).map_err(|e| at("stat", src, errno(e)))?;
    let x = read_xattrs(&s, OsStr::new(".")).map_err(|e| at("read xattrs", src, e))?;
    set_meta(&d, OsStr::new("."), &st, &x).map_err(|e| at("set metadata", dst, e))
}

struct Copier<'a> {
    src: &'a Path,
    dst_root: &'a OwnedFd,
    /// (dev, ino) of multiply-linked non-directories copied so far → their path in the copy.
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
}

impl Copier<'_> {
    fn copy_dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> io::Result<()> {
        let fail = |op, rel: &Path, e| at(op, &self.src.join(rel), e);
        let names = list_dir(src).map_err(|e| fail("read dir", rel, errno(e)))?;
        for name in names {
            let child = rel.join(&name);
            let st = stat_at(src, &name).map_err(|e| fail("stat", &child, errno(e)))?;
            let fmt = kind(&st);
            if fmt != SFlag::S_IFDIR && st.st_nlink > 1 {
                if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) {
                    linkat(
                        self.dst_root,
                        first.as_path(),
                        dst,
                        name.as_os_str(),
                        AtFlags::empty(),
                    )
                    .map_err(|e| fail("link", &child, errno(e)))?;
                    continue;
                }
                self.links.insert((st.st_dev, st.st_ino), child.clone());
            }
            let perm = Mode::from_bits_truncate(0o600);
            match fmt {
                SFlag::S_IFDIR => {
                    mkdirat(dst, name.as_os_str(), Mode::from_bits_truncate(0o700))
                        .map_err(|e| fail("mkdir", &child, errno(e)))?;
                    let s = open_dir_at(src, &name).map_err(|e| fail("open", &child, errno(e)))?;
                    let d = open_dir_at(dst, &name).map_err(|e| fail("open", &child, errno(e)))?;
                    self.copy_dir(&s, &d, &child)?;
                }
                SFlag::S_IFREG => {
                    let flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                    let from = openat(
                        src,
                        name.as_os_str(),
                        flags | OFlag::O_RDONLY,
                        Mode::empty(),
                    )
                    .map_err(|e| fail("open", &child, errno(e)))?;
                    let create = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
                    let to = openat(dst, name.as_os_str(), flags | create, perm)
                        .map_err(|e| fail("create copy of", &child, errno(e)))?;
                    self.copy_bytes(File::from(from), File::from(to))
                        .map_err(|e| fail("copy", &child, e))?;
                }
                SFlag::S_IFLNK => {
                    let target = readlinkat(src, name.as_os_str())
                        .map_err(|e| fail("readlink", &child, errno(e)))?;
                    symlinkat(target.as_os_str(), dst, name.as_os_str())
                        .map_err(|e| fail("symlink", &child, errno(e)))?;
                }
                SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO | SFlag::S_IFSOCK => {
                    mknodat(dst, name.as_os_str(), fmt, perm, st.st_rdev)
                        .map_err(|e| fail("mknod", &child, errno(e)))?;
                }
                _ => continue,
            }
            let x = read_xattrs(src, &name).map_err(|e| fail("read xattrs", &child, e))?;
            set_meta(dst, &name, &st, &x)
                .map_err(|e| fail("set metadata of copy of", &child, e))?;
        }
        Ok(())
    }

    /// A plain read/write copy: `std::io::copy` between files would use `copy_file_range`, which
    /// may share extents (reflink) on btrfs and XFS.
    fn copy_bytes(&mut self, mut from: File, mut to: File) -> io::Result<()> {
        loop {
            let n = match from.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            to.write_all(&self.buf[..n])?;
        }
    }
}

/// Fold `upper` (a changeset in overlay format: whiteouts are char devices 0/0, opaque dirs carry
/// `trusted.overlay.opaque=y`) into the full tree `tree`, moving its entries there: afterwards
/// `tree` is what an overlay of `upper` on `tree` showed, and `upper` is left with empty dirs.
pub(crate) fn merge_changeset(upper: &Path, tree: &Path) -> io::Result<()> {
    let open = |p: &Path| {
        File::open(p)
            .map(OwnedFd::from)
            .map_err(|e| at("open", p, e))
    };
    let (u, t) = (open(upper)?, open(tree)?);
    merge_dir(&u, &t, tree, Path::new(""))
}

fn merge_dir(up: &OwnedFd, tree: &OwnedFd, root: &Path, rel: &Path) -> io::Result<()> {
    let fail = |op, rel: &Path, e| at(op, &root.join(rel), e);
    for name in list_dir(up).map_err(|e| fail("read dir", rel, errno(e)))? {
        let child = rel.join(&name);
        let st = stat_at(up, &name).map_err(|e| fail("stat", &child, errno(e)))?;
        let fmt = kind(&st);
        if fmt == SFlag::S_IFCHR && st.st_rdev == 0 {
            remove_all_at(tree, &name).map_err(|e| fail("remove", &child, errno(e)))?;
            continue;
        }
        if fmt != SFlag::S_IFDIR {
            remove_all_at(tree, &name).map_err(|e| fail("replace", &child, errno(e)))?;
            renameat(up, name.as_os_str(), tree, name.as_os_str())
                .map_err(|e| fail("move into place", &child, errno(e)))?;
            continue;
        }
        let xattrs = read_xattrs(up, &name).map_err(|e| fail("read xattrs", &child, e))?;
        let opaque = xattrs
            .iter()
            .any(|(k, v)| k == crate::diff::opaque_xattr() && v.as_slice() == b"y");
        match stat_at(tree, &name) {
            Ok(t) if kind(&t) == SFlag::S_IFDIR => {}
            Ok(_) => {
                remove_all_at(tree, &name).map_err(|e| fail("replace", &child, errno(e)))?;
                mkdirat(tree, name.as_os_str(), Mode::from_bits_truncate(0o700))
                    .map_err(|e| fail("mkdir", &child, errno(e)))?;
            }
            Err(Errno::ENOENT) => {
                mkdirat(tree, name.as_os_str(), Mode::from_bits_truncate(0o700))
                    .map_err(|e| fail("mkdir", &child, errno(e)))?;
            }
            Err(e) => return Err(fail("stat", &child, errno(e))),
        }
        let sub_tree = open_dir_at(tree, &name).map_err(|e| fail("open", &child, errno(e)))?;
        if opaque {
            for old in list_dir(&sub_tree).map_err(|e| fail("read dir", &child, errno(e)))? {
                remove_all_at(&sub_tree, &old)
                    .map_err(|e| fail("clear opaque dir", &child, errno(e)))?;
            }
        }
        let sub_up = open_dir_at(up, &name).map_err(|e| fail("open", &child, errno(e)))?;
        merge_dir(&sub_up, &sub_tree, root, &child)?;
        // The dir's attributes are the changeset's: drop xattrs it no longer has.
        let old = read_xattrs(tree, &name).map_err(|e| fail("read xattrs", &child, e))?;
        for (k, _) in old {
            if !xattrs.iter().any(|(n, _)| *n == k) {
                let _ = xattr::remove(crate::diff::fsutil::proc_path(tree, &name), &k);
            }
        }
        set_meta(tree, &name, &st, &xattrs).map_err(|e| fail("set metadata", &child, e))?;
    }
    Ok(())
}
