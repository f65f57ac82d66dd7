//! fd-relative file system helpers shared by the layer writer and applier.
//!
//! Every lookup here is one path component relative to an already-open directory fd, with
//! `O_NOFOLLOW`, so a symlink is never followed. Extended attributes are reached through
//! `/proc/self/fd/<dirfd>/<name>` with the `l*xattr` calls: the directory is the exact inode we hold,
//! and the last component is not followed.

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Open the directory `name` (one component) beneath `dir`, never following a symlink.
pub(crate) fn open_dir_at<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The `/proc/self/fd/<dirfd>/<name>` path of `name` in the directory we hold open.
pub(crate) fn proc_path<Fd: AsRawFd>(dir: &Fd, name: &OsStr) -> PathBuf {
    let mut p = OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
    p.push(name);
    PathBuf::from(p)
}

/// All extended attributes of `name` (not following a final symlink), sorted by name.
pub(crate) fn read_xattrs<Fd: AsRawFd>(
    dir: &Fd,
    name: &OsStr,
) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let path = proc_path(dir, name);
    let mut out = Vec::new();
    let names = match xattr::list(&path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for attr in names {
        match xattr::get(&path, &attr) {
            Ok(Some(v)) => out.push((attr, v)),
            Ok(None) => {}
            // Removed between list and get, or a namespace we may not read.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::EPERM)) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// Set one extended attribute on `name` beneath `dir` (not following a final symlink).
pub(crate) fn set_xattr<Fd: AsRawFd>(
    dir: &Fd,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
) -> io::Result<()> {
    xattr::set(proc_path(dir, name), attr, value)
}

/// Remove `name` beneath `dir`, recursively if it is a directory; never follows symlinks.
/// A missing entry is not an error.
pub(crate) fn remove_all_at<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<()> {
    match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    let sub = match open_dir_at(dir.as_fd(), name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    for child in list_dir(&sub)? {
        remove_all_at(&sub, &child)?;
    }
    drop(sub);
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The names in an open directory, without `.` and `..`, sorted bytewise.
pub(crate) fn list_dir<Fd: AsFd>(dir: Fd) -> nix::Result<Vec<OsString>> {
    // A fresh open file description (not a dup) so the directory offset starts at 0.
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(n).to_owned());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}
