//! Paths inside a rootfs, always resolved fd-relative beneath it (`openat2` with
//! `RESOLVE_IN_ROOT`): absolute symlinks mean "from the rootfs", `..` stops at its top, and
//! nothing is ever followed onto the host.
//!
//! The parent uses this to create missing mountpoints (and the working directory) before a run
//! and to remove the mountpoints it created after the run; the init uses [`open_in_root`] to
//! get mount targets as fds.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmodat, fstatat, mkdirat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::SandboxError;

/// What to create at the end of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Lexically clean an absolute in-rootfs path into components: empty and `.` parts dropped,
/// `..` pops (and stops at the top). `None` for a relative path or a NUL byte.
pub(crate) fn components(path: &str) -> Option<Vec<String>> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_owned()),
        }
    }
    Some(out)
}

/// Open the rootfs directory itself (`O_PATH`).
pub(crate) fn open_root(path: &Path) -> Result<OwnedFd, SandboxError> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::Rootfs {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Open `rel` (relative, already cleaned) beneath `root` as an `O_PATH` fd. `follow` allows
/// symlinks (re-rooted at `root`); without it any symlink is an error (`ELOOP`).
pub(crate) fn open_in_root(root: BorrowedFd<'_>, rel: &str, follow: bool) -> nix::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let resolve = if follow {
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
    } else {
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(resolve);
    loop {
        match openat2(root, rel, how) {
            // openat2 asks to retry when a rename raced with the lookup.
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// An entry [`ensure_path`] created, with the access and modification times its parent
/// directory had before, so that removing it can leave the parent as it was (a directory
/// whose times changed would show up in the step's layer).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Created {
    /// In-rootfs path, relative.
    pub path: String,
    parent_times: Option<(TimeSpec, TimeSpec)>,
}

fn times_of(fd: BorrowedFd<'_>) -> Option<(TimeSpec, TimeSpec)> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    Some((
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    ))
}

/// Make sure the path `comps` exists beneath `root`, creating missing directories (mode 0755)
/// and, for [`Kind::File`], an empty final file (0644). New entries get `owner` if given.
/// Returns the in-rootfs paths it created, parents first.
pub(crate) fn ensure_path(
    root: BorrowedFd<'_>,
    comps: &[String],
    kind: Kind,
    owner: Option<(u32, u32)>,
) -> nix::Result<Vec<Created>> {
    let mut created = Vec::new();
    let mut dir = open_in_root(root, "", true)?;
    for (i, name) in comps.iter().enumerate() {
        let prefix = comps[..=i].join("/");
        match open_in_root(root, &prefix, true) {
            Ok(fd) => dir = fd,
            Err(Errno::ENOENT) => {
                let parent_times = times_of(dir.as_fd());
                let last = i + 1 == comps.len();
                if last && kind == Kind::File {
                    let fd = nix::fcntl::openat(
                        dir.as_fd(),
                        name.as_str(),
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )?;
                    drop(fd);
                    fchmodat(
                        dir.as_fd(),
                        name.as_str(),
                        Mode::from_bits_truncate(0o644),
                        FchmodatFlags::FollowSymlink,
                    )?;
                } else {
                    mkdirat(dir.as_fd(), name.as_str(), Mode::from_bits_truncate(0o755))?;
                    fchmodat(
                        dir.as_fd(),
                        name.as_str(),
                        Mode::from_bits_truncate(0o755),
                        FchmodatFlags::FollowSymlink,
                    )?;
                }
                if let Some((uid, gid)) = owner {
                    fchownat(
                        dir.as_fd(),
                        name.as_str(),
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                }
                created.push(Created {
                    path: prefix.clone(),
                    parent_times,
                });
                dir = open_in_root(root, &prefix, true)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Remove what [`ensure_path`] created, children first: directories only when empty, files only
/// when still empty regular files. Paths that became symlinks (or moved) are left alone.
pub(crate) fn remove_created(
    root: BorrowedFd<'_>,
    created: &[Created],
) -> Result<(), (String, io::Error)> {
    for entry in created.iter().rev() {
        let path = &entry.path;
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", path.as_str()),
        };
        let pfd = match open_in_root(root, parent, false) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => continue,
            Err(e) => return Err((path.clone(), e.into())),
        };
        let st = match fstatat(pfd.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err((path.clone(), e.into())),
        };
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let res = if fmt == SFlag::S_IFDIR {
            unlinkat(pfd.as_fd(), name, UnlinkatFlags::RemoveDir)
        } else if fmt == SFlag::S_IFREG && st.st_size == 0 {
            unlinkat(pfd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
        } else {
            continue;
        };
        match res {
            Ok(()) => {
                if let Some((atime, mtime)) = entry.parent_times {
                    // Through /proc/self/fd: utimensat cannot take an O_PATH fd directly.
                    let here = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pfd));
                    let _ = utimensat(
                        nix::fcntl::AT_FDCWD,
                        here.as_str(),
                        &atime,
                        &mtime,
                        UtimensatFlags::FollowSymlink,
                    );
                }
            }
            Err(Errno::ENOENT) | Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {}
            Err(e) => return Err((path.clone(), e.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn paths(c: &[Created]) -> Vec<String> {
        c.iter().map(|c| c.path.clone()).collect()
    }

    #[test]
    fn removal_restores_the_parent_times() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let old = std::fs::metadata(root.path().join("etc"))
            .unwrap()
            .mtime_nsec();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let rfd = open_root(root.path()).unwrap();
        let mut all = Vec::new();
        for p in ["/etc/hosts", "/etc/resolv.conf"] {
            all.extend(
                ensure_path(rfd.as_fd(), &components(p).unwrap(), Kind::File, None).unwrap(),
            );
        }
        remove_created(rfd.as_fd(), &all).unwrap();
        assert_eq!(
            std::fs::metadata(root.path().join("etc"))
                .unwrap()
                .mtime_nsec(),
            old
        );
    }

    #[test]
    fn components_are_cleaned() {
        assert_eq!(
            components("/a//b/./c/"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(components("/../../etc/../x"), Some(vec!["x".into()]));
        assert_eq!(components("/"), Some(vec![]));
        assert_eq!(components("rel/path"), None);
        assert_eq!(components("/a\0b"), None);
    }

    #[test]
    fn ensure_and_remove_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // An absolute symlink inside the root must be re-rooted, not followed onto the host.
        symlink(outside.path(), root.path().join("escape")).unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let rfd = open_root(root.path()).unwrap();
        let comps = components("/escape/x/y").unwrap();
        let created = ensure_path(rfd.as_fd(), &comps, Kind::Dir, None);
        // `escape` points at an absolute host path, which inside the root does not exist, so the
        // creation fails (dangling symlink) rather than writing to the host.
        assert!(created.is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        let created = ensure_path(
            rfd.as_fd(),
            &components("/etc/hosts").unwrap(),
            Kind::File,
            None,
        )
        .unwrap();
        assert_eq!(paths(&created), vec!["etc/hosts".to_owned()]);
        let created2 = ensure_path(
            rfd.as_fd(),
            &components("/proc/a/b").unwrap(),
            Kind::Dir,
            None,
        )
        .unwrap();
        assert_eq!(
            paths(&created2),
            vec!["proc".to_owned(), "proc/a".into(), "proc/a/b".into()]
        );
        std::fs::write(root.path().join("proc/a/keep"), b"x").unwrap();
        remove_created(rfd.as_fd(), &created).unwrap();
        remove_created(rfd.as_fd(), &created2).unwrap();
        assert!(!root.path().join("etc/hosts").exists());
        assert!(root.path().join("etc").is_dir());
        assert!(!root.path().join("proc/a/b").exists());
        assert!(root.path().join("proc/a/keep").exists());
    }

    #[test]
    fn relative_symlinks_resolve_within_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("real")).unwrap();
        symlink("/real", root.path().join("link")).unwrap();
        let rfd = open_root(root.path()).unwrap();
        let created = ensure_path(
            rfd.as_fd(),
            &components("/link/dir").unwrap(),
            Kind::Dir,
            None,
        )
        .unwrap();
        assert_eq!(paths(&created), vec!["link/dir".to_owned()]);
        assert!(root.path().join("real/dir").is_dir());
        assert!(open_in_root(rfd.as_fd(), "link/dir", false).is_err());
        assert!(open_in_root(rfd.as_fd(), "link/dir", true).is_ok());
    }
}
