//! [`Root`]: a directory that paths are resolved *beneath* (docs/ARCHITECTURE.md, safety rule 1).
//!
//! Every lookup starts from the root's fd. The kernel enforces containment: single-shot lookups use
//! `openat2(RESOLVE_IN_ROOT)` (an absolute symlink means "from this root", `..` stops at the root,
//! magic links are refused); walks that must create directories or learn the canonical path go one
//! component at a time with `O_NOFOLLOW` names relative to a directory fd, splicing symlink targets
//! in user space and treating `..` lexically on the already-canonical prefix. No path string is ever
//! checked for a prefix, and nothing is followed onto the host.

use crate::error::{FileOpError, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (Linux's own limit).
pub const MAX_SYMLINKS: usize = 40;

/// How the final component of a path is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Symlinks anywhere, including the final component, are followed (inside the root).
    All,
    /// Symlinks in the parents are followed; a final symlink is returned itself.
    NotFinal,
    /// The path must be canonical: any symlink on the way is an error (`ELOOP`), a final one is
    /// returned itself.
    Never,
}

/// A directory that paths are resolved beneath: an `O_PATH` directory fd plus its host path (for
/// messages only; the path is never used to reach anything inside).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Ownership, permissions and times given to directories a walk creates.
#[derive(Clone, Copy, Debug)]
pub struct NewDir {
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    /// Seconds since the epoch for atime and mtime; `None` leaves the kernel's "now".
    pub mtime: Option<i64>,
}

impl Default for NewDir {
    fn default() -> Self {
        NewDir {
            mode: 0o755,
            owner: None,
            mtime: None,
        }
    }
}

/// Lexically clean a path the way Go's `filepath.Clean` does, relative to a root: the result has no
/// leading or trailing `/`, no `.` and no `..` (which stops at the root); `""` is the root itself.
pub fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// Join two root-relative paths (either may be empty).
pub(crate) fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Split a cleaned, non-empty root-relative path into (parent, name).
pub(crate) fn split_parent(clean: &str) -> (&str, &str) {
    match clean.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", clean),
    }
}

fn dot(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

impl Root {
    /// Open `path` (a directory on the host) as a root.
    pub fn open(path: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FileOpError::OpenRoot {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// A root over an already open directory fd (e.g. a directory resolved inside another root);
    /// `path` is only used in messages.
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Root {
        Root { fd, path }
    }

    /// The host path this root was opened at (for messages and cache keys, never for access).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory's fd.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn dup(&self) -> Result<OwnedFd> {
        self.fd
            .try_clone()
            .map_err(|e| FileOpError::io("duplicating fd of", &self.path, "", e))
    }

    /// `openat2` beneath the root. Retries `EAGAIN` (a concurrent rename elsewhere on the system).
    pub(crate) fn openat(&self, path: &str, flags: OFlag, follow: Follow) -> nix::Result<OwnedFd> {
        let mut resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        let mut flags = flags | OFlag::O_CLOEXEC;
        match follow {
            Follow::All => {}
            Follow::NotFinal => flags |= OFlag::O_NOFOLLOW,
            Follow::Never => {
                flags |= OFlag::O_NOFOLLOW;
                resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
            }
        }
        let how = OpenHow::new().flags(flags).resolve(resolve);
        let mut tries = 0;
        loop {
            match openat2(self.fd.as_fd(), dot(path), how) {
                Err(Errno::EAGAIN) if tries < 16 => tries += 1,
                r => return r,
            }
        }
    }

    /// Resolve `path` beneath the root to an `O_PATH` fd. With `follow_final` a final symlink is
    /// followed (inside the root), otherwise the symlink itself is returned.
    pub fn resolve(&self, path: &str, follow_final: bool) -> Result<OwnedFd> {
        let follow = if follow_final {
            Follow::All
        } else {
            Follow::NotFinal
        };
        self.openat(&clean(path), OFlag::O_PATH, follow)
            .map_err(|e| FileOpError::io("resolving", &self.path, &clean(path), e))
    }

    /// Open a file beneath the root for reading.
    pub fn open_file(&self, path: &str, follow: Follow) -> Result<File> {
        let p = clean(path);
        self.openat(&p, OFlag::O_RDONLY, follow)
            .map(File::from)
            .map_err(|e| FileOpError::io("opening", &self.path, &p, e))
    }

    /// Stat a path beneath the root; `Ok(None)` when it does not exist.
    pub fn stat(&self, path: &str, follow: Follow) -> Result<Option<FileStat>> {
        let p = clean(path);
        match self.openat(&p, OFlag::O_PATH, follow) {
            Ok(fd) => fstat(&fd)
                .map(Some)
                .map_err(|e| FileOpError::io("stat", &self.path, &p, e)),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(FileOpError::io("resolving", &self.path, &p, e)),
        }
    }

    /// Read a whole file beneath the root, at most `limit` bytes (more is an error); `Ok(None)` if
    /// it does not exist.
    pub fn read_bounded(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let p = clean(path);
        let f = match self.openat(&p, OFlag::O_RDONLY, Follow::All) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(FileOpError::io("opening", &self.path, &p, e)),
        };
        let mut buf = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FileOpError::io("reading", &self.path, &p, e))?;
        if buf.len() as u64 > limit {
            return Err(FileOpError::io(
                "reading",
                &self.path,
                &p,
                std::io::Error::other(format!("file is larger than {limit} bytes")),
            ));
        }
        Ok(Some(buf))
    }

    /// The canonical (symlink-free, cleaned) root-relative path of `path`, following every symlink
    /// inside the root, including a final one. `Ok(None)` when it (or its target) does not exist.
    pub fn canonicalize(&self, path: &str) -> Result<Option<String>> {
        Ok(self.walk(path, None)?.map(|(_, p)| p))
    }

    /// Create the directory `path` and any missing parents (like `mkdir -p`), following symlinks
    /// inside the root (a dangling one gets its target created). Returns an `O_PATH` fd of the
    /// directory and its canonical path.
    pub fn mkdir_all(&self, path: &str, new: &NewDir) -> Result<(OwnedFd, String)> {
        match self.walk(path, Some(new))? {
            Some(r) => Ok(r),
            None => Err(FileOpError::io(
                "creating directory",
                &self.path,
                &clean(path),
                Errno::ENOENT,
            )),
        }
    }

    /// Resolve component by component from the root. With `create`, missing directories are made.
    fn walk(&self, path: &str, create: Option<&NewDir>) -> Result<Option<(OwnedFd, String)>> {
        let mut todo: VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut out: Vec<String> = Vec::new();
        let mut cur = self.dup()?;
        let mut links = 0usize;
        let orig = clean(path);
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    out.pop();
                    cur = self
                        .openat(
                            &out.join("/"),
                            OFlag::O_PATH | OFlag::O_DIRECTORY,
                            Follow::Never,
                        )
                        .map_err(|e| FileOpError::io("resolving", &self.path, &out.join("/"), e))?;
                    continue;
                }
                _ => {}
            }
            let here = join(&out.join("/"), &c);
            let fd = match openat(
                cur.as_fd(),
                c.as_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => match create {
                    None => return Ok(None),
                    Some(new) => {
                        match nix::sys::stat::mkdirat(
                            cur.as_fd(),
                            c.as_str(),
                            Mode::from_bits_truncate(0o700),
                        ) {
                            Ok(()) => {
                                set_meta_at(cur.as_fd(), &c, new.mode, new.owner, new.mtime)
                                    .map_err(|e| {
                                        FileOpError::io("setting metadata of", &self.path, &here, e)
                                    })?;
                            }
                            Err(Errno::EEXIST) => {}
                            Err(e) => {
                                return Err(FileOpError::io(
                                    "creating directory",
                                    &self.path,
                                    &here,
                                    e,
                                ))
                            }
                        }
                        todo.push_front(c);
                        continue;
                    }
                },
                Err(Errno::ENOTDIR) if create.is_none() => return Ok(None),
                Err(e) => return Err(FileOpError::io("resolving", &self.path, &here, e)),
            };
            let st = fstat(&fd).map_err(|e| FileOpError::io("stat", &self.path, &here, e))?;
            match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
                SFlag::S_IFDIR => {
                    cur = fd;
                    out.push(c);
                }
                SFlag::S_IFLNK => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FileOpError::SymlinkLoop {
                            root: self.path.clone(),
                            path: crate::error::display_path(&orig),
                        });
                    }
                    let target = read_link_fd(&fd)
                        .map_err(|e| FileOpError::io("reading symlink", &self.path, &here, e))?;
                    if target.starts_with('/') {
                        out.clear();
                        cur = self.dup()?;
                    }
                    for t in target.split('/').filter(|t| !t.is_empty()).rev() {
                        todo.push_front(t.to_string());
                    }
                }
                _ => {
                    if todo.iter().any(|t| t != ".") || create.is_some() {
                        if create.is_some() {
                            return Err(FileOpError::Conflict {
                                root: self.path.clone(),
                                path: crate::error::display_path(&here),
                                reason: "exists and is not a directory".into(),
                            });
                        }
                        return Ok(None);
                    }
                    cur = fd;
                    out.push(c);
                }
            }
        }
        Ok(Some((cur, out.join("/"))))
    }

    /// The parent directory of `path` (created with `new` if missing, when given) and the final
    /// name. `path` must not be the root.
    pub(crate) fn parent_for_create(
        &self,
        path: &str,
        new: &NewDir,
    ) -> Result<(OwnedFd, String, String)> {
        let p = clean(path);
        if p.is_empty() {
            return Err(FileOpError::Conflict {
                root: self.path.clone(),
                path: "/".into(),
                reason: "the root directory cannot be replaced".into(),
            });
        }
        let (parent, name) = split_parent(&p);
        let (fd, canon) = self.mkdir_all(parent, new)?;
        Ok((fd, canon, name.to_string()))
    }
}

/// `readlink` of an `O_PATH` fd of a symlink.
pub(crate) fn read_link_fd(fd: &OwnedFd) -> nix::Result<String> {
    let t = nix::fcntl::readlinkat(fd.as_fd(), "")?;
    Ok(String::from_utf8_lossy(t.as_bytes()).into_owned())
}

/// chown (if asked), then chmod (chown clears set-id bits), then times, of `name` in `dir`
/// (never following a symlink).
pub(crate) fn set_meta_at(
    dir: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: Option<i64>,
) -> nix::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    nix::sys::stat::fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(mode & 0o7777),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )?;
    if let Some(t) = mtime {
        set_times_at(dir, name, t, 0)?;
    }
    Ok(())
}

/// Set atime and mtime of `name` in `dir` without following a symlink.
pub(crate) fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &str,
    sec: i64,
    nsec: i64,
) -> nix::Result<()> {
    let ts = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(
        dir,
        name,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_go_like() {
        for (i, o) in [
            ("/", ""),
            ("", ""),
            ("/a/b/", "a/b"),
            ("a/./b", "a/b"),
            ("../../a", "a"),
            ("/a/../../b/..//c", "c"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }

    #[test]
    fn resolution_stays_inside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/secret"), "inside").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etclink")).unwrap();
        let root = Root::open(r).unwrap();
        // absolute link to a host dir: resolved from the root, where it does not exist
        assert!(root.stat("abs/secret", Follow::All).unwrap().is_none());
        assert_eq!(root.canonicalize("abs/secret").unwrap(), None);
        // `..` stops at the root
        assert_eq!(
            root.canonicalize("rel/secret").unwrap().as_deref(),
            Some("etc/secret")
        );
        assert_eq!(
            root.canonicalize("etclink/secret").unwrap().as_deref(),
            Some("etc/secret")
        );
        let data = root
            .read_bounded("/../../etclink/secret", 100)
            .unwrap()
            .unwrap();
        assert_eq!(data, b"inside");
        assert!(root.read_bounded("etc/secret", 2).is_err());
        // mkdir through a dangling absolute link creates inside the root
        std::os::unix::fs::symlink("/opt/app", r.join("app")).unwrap();
        let (_, canon) = root.mkdir_all("/app/sub", &NewDir::default()).unwrap();
        assert_eq!(canon, "opt/app/sub");
        assert!(r.join("opt/app/sub").is_dir());
        // a loop is an error, not a hang
        std::os::unix::fs::symlink("loop2", r.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", r.join("loop2")).unwrap();
        assert!(matches!(
            root.canonicalize("loop1/x"),
            Err(FileOpError::SymlinkLoop { .. })
        ));
    }
}
