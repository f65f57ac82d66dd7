//! Writing entries into a destination root: every write is `*at(dir_fd, name)` with a single
//! component and `O_NOFOLLOW`/`O_EXCL`, where `dir_fd` was resolved beneath the root. An existing
//! entry is replaced by unlinking it first, so nothing is ever written *through* a symlink.

use crate::error::{display_path, FileOpError, Result};
use crate::root::{join, set_times_at, Follow, Root};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Counters of what file actions wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// FIFOs and device nodes.
    pub specials: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Archives extracted (ADD).
    pub archives: u64,
}

/// Metadata to give a written entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub mode: u32,
    pub owner: (u32, u32),
    pub mtime: Option<(i64, i64)>,
}

/// A directory of the destination, resolved beneath the root, with its canonical path.
pub(crate) struct DirHandle {
    pub fd: OwnedFd,
    pub path: String,
}

impl DirHandle {
    pub fn open(root: &Root, canon: &str) -> Result<DirHandle> {
        let fd = root
            .openat(canon, OFlag::O_PATH | OFlag::O_DIRECTORY, Follow::Never)
            .map_err(|e| FileOpError::io("opening directory", root.path(), canon, e))?;
        Ok(DirHandle {
            fd,
            path: canon.to_string(),
        })
    }
}

fn conflict(root: &Root, path: &str, reason: &str) -> FileOpError {
    FileOpError::Conflict {
        root: root.path().to_path_buf(),
        path: display_path(path),
        reason: reason.to_string(),
    }
}

/// Remove whatever is at `name` in `dir` so a new entry can take its place. A directory is removed
/// (recursively) only when `remove_dirs`; otherwise it is a conflict.
pub(crate) fn remove_existing(
    root: &Root,
    dir: &DirHandle,
    name: &str,
    remove_dirs: bool,
) -> Result<()> {
    let here = join(&dir.path, name);
    match nix::unistd::unlinkat(dir.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) if remove_dirs => remove_all(root, &here),
        Err(Errno::EISDIR) => Err(conflict(
            root,
            &here,
            "a directory is in the way of a non-directory",
        )),
        Err(e) => Err(FileOpError::io("removing", root.path(), &here, e)),
    }
}

/// Remove the directory tree at canonical path `canon` (never following symlinks).
pub(crate) fn remove_all(root: &Root, canon: &str) -> Result<()> {
    let fd = root
        .openat(canon, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never)
        .map_err(|e| FileOpError::io("opening directory", root.path(), canon, e))?;
    let mut names = Vec::new();
    {
        let mut d = nix::dir::Dir::from_fd(
            fd.try_clone()
                .map_err(|e| FileOpError::io("dup", root.path(), canon, e))?,
        )
        .map_err(|e| FileOpError::io("reading directory", root.path(), canon, e))?;
        for ent in d.iter() {
            let ent =
                ent.map_err(|e| FileOpError::io("reading directory", root.path(), canon, e))?;
            let b = ent.file_name().to_bytes();
            if b != b"." && b != b".." {
                names.push(ent.file_name().to_owned());
            }
        }
    }
    for n in names {
        match nix::unistd::unlinkat(fd.as_fd(), n.as_c_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) => {
                let child = join(canon, &n.to_string_lossy());
                remove_all(root, &child)?;
            }
            Err(e) => {
                return Err(FileOpError::io(
                    "removing",
                    root.path(),
                    &join(canon, &n.to_string_lossy()),
                    e,
                ))
            }
        }
    }
    let (parent, name) = crate::root::split_parent(canon);
    let p = DirHandle::open(root, parent)?;
    nix::unistd::unlinkat(p.fd.as_fd(), name, UnlinkatFlags::RemoveDir)
        .map_err(|e| FileOpError::io("removing directory", root.path(), canon, e))
}

fn chown_chmod_fd(fd: BorrowedFd<'_>, meta: &Meta) -> nix::Result<()> {
    nix::unistd::fchown(
        fd,
        Some(Uid::from_raw(meta.owner.0)),
        Some(Gid::from_raw(meta.owner.1)),
    )?;
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777))?;
    if let Some((s, ns)) = meta.mtime {
        let t = nix::sys::time::TimeSpec::new(s, ns);
        nix::sys::stat::futimens(fd, &t, &t)?;
    }
    Ok(())
}

/// Create a regular file `name` in `dir` (replacing what is there) and fill it from `data`.
/// Returns the bytes written.
pub(crate) fn write_file(
    root: &Root,
    dir: &DirHandle,
    name: &str,
    data: &mut dyn DataSource,
    meta: &Meta,
    remove_dirs: bool,
) -> Result<u64> {
    let here = join(&dir.path, name);
    remove_existing(root, dir, name, remove_dirs)?;
    let fd = nix::fcntl::openat(
        dir.fd.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| FileOpError::io("creating file", root.path(), &here, e))?;
    let mut out = File::from(fd);
    let n = data
        .copy_into(&mut out)
        .map_err(|e| FileOpError::io("writing", root.path(), &here, e))?;
    chown_chmod_fd(out.as_fd(), meta)
        .map_err(|e| FileOpError::io("setting metadata of", root.path(), &here, e))?;
    Ok(n)
}

/// Where file data comes from: a file (copied with `copy_file_range`) or any reader.
pub(crate) trait DataSource {
    fn copy_into(&mut self, out: &mut File) -> std::io::Result<u64>;
}

impl DataSource for File {
    fn copy_into(&mut self, out: &mut File) -> std::io::Result<u64> {
        let mut total = 0u64;
        loop {
            match nix::fcntl::copy_file_range(self.as_fd(), None, out.as_fd(), None, 1 << 30) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(Errno::EINTR) => {}
                Err(
                    Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EPERM,
                ) if total == 0 => {
                    return std::io::copy(self, out);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Any reader as a data source.
pub(crate) struct ReaderSource<R>(pub R);

impl<R: Read> DataSource for ReaderSource<R> {
    fn copy_into(&mut self, out: &mut File) -> std::io::Result<u64> {
        let n = std::io::copy(&mut self.0, out)?;
        out.flush()?;
        Ok(n)
    }
}

/// Create the symlink `name -> target` in `dir` (replacing what is there).
pub(crate) fn write_symlink(
    root: &Root,
    dir: &DirHandle,
    name: &str,
    target: &str,
    meta: &Meta,
    remove_dirs: bool,
) -> Result<()> {
    let here = join(&dir.path, name);
    remove_existing(root, dir, name, remove_dirs)?;
    nix::unistd::symlinkat(target, dir.fd.as_fd(), name)
        .map_err(|e| FileOpError::io("creating symlink", root.path(), &here, e))?;
    nix::unistd::fchownat(
        dir.fd.as_fd(),
        name,
        Some(Uid::from_raw(meta.owner.0)),
        Some(Gid::from_raw(meta.owner.1)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| FileOpError::io("chown", root.path(), &here, e))?;
    if let Some((s, ns)) = meta.mtime {
        set_times_at(dir.fd.as_fd(), name, s, ns)
            .map_err(|e| FileOpError::io("setting times of", root.path(), &here, e))?;
    }
    Ok(())
}

/// Create a FIFO or device node.
pub(crate) fn write_special(
    root: &Root,
    dir: &DirHandle,
    name: &str,
    kind: SFlag,
    rdev: u64,
    meta: &Meta,
    remove_dirs: bool,
) -> Result<()> {
    let here = join(&dir.path, name);
    remove_existing(root, dir, name, remove_dirs)?;
    nix::sys::stat::mknodat(
        dir.fd.as_fd(),
        name,
        kind,
        Mode::from_bits_truncate(0o600),
        rdev,
    )
    .map_err(|e| FileOpError::io("creating node", root.path(), &here, e))?;
    crate::root::set_meta_at(dir.fd.as_fd(), name, meta.mode, Some(meta.owner), None)
        .map_err(|e| FileOpError::io("setting metadata of", root.path(), &here, e))?;
    if let Some((s, ns)) = meta.mtime {
        set_times_at(dir.fd.as_fd(), name, s, ns)
            .map_err(|e| FileOpError::io("setting times of", root.path(), &here, e))?;
    }
    Ok(())
}

/// Make sure `name` in `dir` is a directory: create it (with `meta`, times left for later), or use
/// the directory (or symlink to a directory, inside the root) that is there. Returns its canonical
/// path and whether it was created.
pub(crate) fn ensure_dir(
    root: &Root,
    dir: &DirHandle,
    name: &str,
    meta: &Meta,
) -> Result<(String, bool)> {
    let here = join(&dir.path, name);
    match nix::sys::stat::mkdirat(dir.fd.as_fd(), name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {
            crate::root::set_meta_at(dir.fd.as_fd(), name, meta.mode, Some(meta.owner), None)
                .map_err(|e| FileOpError::io("setting metadata of", root.path(), &here, e))?;
            Ok((here, true))
        }
        Err(Errno::EEXIST) => match root.canonicalize(&here)? {
            Some(canon) => match root.stat(&canon, Follow::Never)? {
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok((canon, false)),
                _ => Err(conflict(root, &here, "exists and is not a directory")),
            },
            None => Err(conflict(
                root,
                &here,
                "is a dangling symlink where a directory is needed",
            )),
        },
        Err(e) => Err(FileOpError::io("creating directory", root.path(), &here, e)),
    }
}

/// Hard-link `name` in `dir` to the existing entry at canonical `existing`.
pub(crate) fn write_hardlink(
    root: &Root,
    dir: &DirHandle,
    name: &str,
    existing: &str,
    remove_dirs: bool,
) -> Result<()> {
    let here = join(&dir.path, name);
    let (ep, en) = crate::root::split_parent(existing);
    let edir = DirHandle::open(root, ep)?;
    remove_existing(root, dir, name, remove_dirs)?;
    nix::unistd::linkat(edir.fd.as_fd(), en, dir.fd.as_fd(), name, AtFlags::empty())
        .map_err(|e| FileOpError::io("creating hard link", root.path(), &here, e))
}
