//! Upper dir → OCI layer tar (the "compare" half of the diff module).
//!
//! The upper dir of an overlay snapshot already *is* the changeset, so writing a layer is one walk of
//! it: overlay whiteouts (char device 0/0) become `.wh.<name>` files and opaque directories
//! (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` member. The walk is fd-relative and never follows
//! a symlink; the output is deterministic (entries sorted by path, parents first; numeric ids, empty
//! user/group names; mtimes clamped to `source_date_epoch` when set) so the same tree always gives
//! the same diff_id.

use super::fsutil::{list_dir, open_dir_at, read_xattrs};
use super::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstatat, major, minor, FileStat, Mode, SFlag};
use rbuild_oci::{Digest, Sha256Writer};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// How to write a layer.
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// When set, every mtime later than this (seconds since the epoch) is clamped to it.
    pub source_date_epoch: Option<i64>,
}

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
    /// Tar members written (whiteouts and opaque markers included).
    pub entries: u64,
}

/// Why a layer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: extended attribute name {name:?} is not UTF-8, which a PAX record cannot carry"
    )]
    XattrName { path: PathBuf, name: String },
    #[error("writing the layer tar (at {path}): {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Walk `upper` (an overlay upper dir or any plain changeset dir) and write it as an OCI layer tar to
/// `out`, hashing the stream as it goes.
pub fn write_layer<W: Write>(
    upper: &Path,
    out: W,
    opts: &LayerOptions,
) -> Result<LayerStats, WriteError> {
    let root = File::open(upper).map_err(|source| WriteError::Io {
        op: "open upper dir",
        path: upper.to_path_buf(),
        source,
    })?;
    let mut w = Walker::new(upper, out, opts);
    w.walk_dir(&OwnedFd::from(root), b"")?;
    w.finish()
}

pub(super) struct Walker<'a, W: Write> {
    pub(super) root: &'a Path,
    builder: tar::Builder<Sha256Writer<W>>,
    opts: &'a LayerOptions,
    /// (dev, ino) of multiply-linked files already written → their member name.
    inodes: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    /// Directories entered but not written yet (comparing trees: an unchanged directory is written
    /// only if something beneath it is), outermost first: member name, stat, xattrs.
    pub(super) pending: Vec<(Vec<u8>, FileStat, Xattrs)>,
}

/// Extended attributes of one path, sorted by name.
pub(super) type Xattrs = Vec<(String, Vec<u8>)>;

use super::stream::{set_name, ustar_header, Exact, PaxRecords};

impl<'a, W: Write> Walker<'a, W> {
    pub(super) fn new(root: &'a Path, out: W, opts: &'a LayerOptions) -> Self {
        Walker {
            root,
            builder: tar::Builder::new(Sha256Writer::new(out)),
            opts,
            inodes: HashMap::new(),
            entries: 0,
            pending: Vec::new(),
        }
    }

    pub(super) fn finish(self) -> Result<LayerStats, WriteError> {
        let out = |source| WriteError::Output {
            path: self.root.to_path_buf(),
            source,
        };
        let hashing = self.builder.into_inner().map_err(out)?;
        let (diff_id, size, mut inner) = hashing.finish();
        inner.flush().map_err(out)?;
        Ok(LayerStats {
            diff_id,
            size,
            entries: self.entries,
        })
    }

    fn full(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    pub(super) fn io(&self, op: &'static str, rel: &[u8], source: io::Error) -> WriteError {
        WriteError::Io {
            op,
            path: self.full(rel),
            source,
        }
    }

    pub(super) fn mtime(&self, st: &FileStat) -> i64 {
        let m = st.st_mtime.max(0);
        match self.opts.source_date_epoch {
            Some(epoch) if m > epoch => epoch.max(0),
            _ => m,
        }
    }

    pub(super) fn stat(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<FileStat, WriteError> {
        fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.io("stat", rel, nix_io(e)))
    }

    pub(super) fn walk_dir(&mut self, dir: &OwnedFd, prefix: &[u8]) -> Result<(), WriteError> {
        let names = list_dir(dir).map_err(|e| self.io("read dir", prefix, nix_io(e)))?;
        for name in names {
            let mut rel = prefix.to_vec();
            rel.extend_from_slice(name.as_bytes());
            let st = self.stat(dir, &name, &rel)?;
            self.entry(dir, &name, prefix, rel, st)?;
        }
        Ok(())
    }

    /// Write `name` of `dir` (at `rel`, in directory `prefix`) and, for a directory, all beneath it.
    pub(super) fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        prefix: &[u8],
        rel: Vec<u8>,
        st: FileStat,
    ) -> Result<(), WriteError> {
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        // Overlay whiteout: a char device 0/0. Checked before hardlinks, since overlay shares one
        // whiteout inode between many names.
        if fmt == SFlag::S_IFCHR && st.st_rdev == 0 {
            let mut wh = prefix.to_vec();
            wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            wh.extend_from_slice(name.as_bytes());
            let mtime = self.mtime(&st);
            return self.marker(&wh, mtime);
        }
        let xattrs = self.xattrs(dir, name, &rel)?;
        match fmt {
            SFlag::S_IFDIR => {
                let opaque = xattrs
                    .iter()
                    .any(|(k, v)| k == super::opaque_xattr() && v.as_slice() == b"y");
                let mut dname = rel.clone();
                dname.push(b'/');
                let h = self.header(EntryType::Directory, &dname, &st, 0, None)?;
                self.append(h, &xattrs, io::empty(), &dname)?;
                if opaque {
                    let mut m = dname.clone();
                    m.extend_from_slice(OPAQUE_MARKER.as_bytes());
                    let mtime = self.mtime(&st);
                    self.marker(&m, mtime)?;
                }
                let sub =
                    open_dir_at(dir, name).map_err(|e| self.io("open dir", &rel, nix_io(e)))?;
                self.walk_dir(&sub, &dname)?;
            }
            SFlag::S_IFREG => {
                if self.linked(&st, &rel)? {
                    return Ok(());
                }
                let fd = openat(
                    dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io("open", &rel, nix_io(e)))?;
                let size = st.st_size.max(0) as u64;
                let h = self.header(EntryType::Regular, &rel, &st, size, None)?;
                let data = Exact {
                    inner: File::from(fd),
                    remaining: size,
                };
                self.append(h, &xattrs, data, &rel)?;
            }
            SFlag::S_IFLNK => {
                let target =
                    readlinkat(dir, name).map_err(|e| self.io("readlink", &rel, nix_io(e)))?;
                let h = self.header(EntryType::Symlink, &rel, &st, 0, Some(target.as_bytes()))?;
                self.append(h, &xattrs, io::empty(), &rel)?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                if self.linked(&st, &rel)? {
                    return Ok(());
                }
                let kind = match fmt {
                    SFlag::S_IFCHR => EntryType::Char,
                    SFlag::S_IFBLK => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut h = self.header(kind, &rel, &st, 0, None)?;
                if fmt != SFlag::S_IFIFO {
                    let dev = st.st_rdev;
                    let set =
                        h.0.set_device_major(major(dev) as u32)
                            .and_then(|()| h.0.set_device_minor(minor(dev) as u32));
                    set.map_err(|e| self.io("encode device numbers", &rel, e))?;
                    h.0.set_cksum();
                }
                self.append(h, &xattrs, io::empty(), &rel)?;
            }
            // Sockets are not image content (Docker skips them too).
            _ => {}
        }
        Ok(())
    }

    pub(super) fn xattrs(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<Vec<(String, Vec<u8>)>, WriteError> {
        let raw = read_xattrs(dir, name).map_err(|e| self.io("read xattrs", rel, e))?;
        let mut out = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let k = k.into_string().map_err(|k| WriteError::XattrName {
                path: self.full(rel),
                name: k.to_string_lossy().into_owned(),
            })?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// An empty marker member (`.wh.<name>` or `.wh..wh..opq`).
    pub(super) fn marker(&mut self, path: &[u8], mtime: i64) -> Result<(), WriteError> {
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(mtime as u64);
        let pax = set_name(&mut h, path);
        h.set_cksum();
        self.append((h, pax), &[], io::empty(), path)
    }

    /// A ustar header for `path`, plus the PAX records needed where ustar falls short.
    pub(super) fn header(
        &self,
        kind: EntryType,
        path: &[u8],
        st: &FileStat,
        size: u64,
        link: Option<&[u8]>,
    ) -> Result<(Header, PaxRecords), WriteError> {
        Ok(ustar_header(
            kind,
            path,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            size,
            self.mtime(st),
            link,
        ))
    }

    /// A second name of a multiply-linked file already written: write it as a hard link to the
    /// first and return true. Else remember it as the first.
    fn linked(&mut self, st: &FileStat, rel: &[u8]) -> Result<bool, WriteError> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let key = (st.st_dev, st.st_ino);
        if let Some(first) = self.inodes.get(&key).cloned() {
            let h = self.header(EntryType::Link, rel, st, 0, Some(&first))?;
            self.append(h, &[], io::empty(), rel)?;
            return Ok(true);
        }
        self.inodes.insert(key, rel.to_vec());
        Ok(false)
    }

    /// Write the directories entered but not written yet.
    pub(super) fn flush_pending(&mut self) -> Result<(), WriteError> {
        for (dname, st, x) in std::mem::take(&mut self.pending) {
            let h = self.header(EntryType::Directory, &dname, &st, 0, None)?;
            self.append(h, &x, io::empty(), &dname)?;
        }
        Ok(())
    }

    fn append<R: Read>(
        &mut self,
        (header, mut pax): (Header, PaxRecords),
        xattrs: &[(String, Vec<u8>)],
        data: R,
        path: &[u8],
    ) -> Result<(), WriteError> {
        self.flush_pending()?;
        for (k, v) in xattrs {
            // Overlay's own bookkeeping (opaque, origin, redirect…) is not image content.
            if super::is_overlay_xattr(k.as_bytes()) {
                continue;
            }
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        let full = self.full(path);
        let out = |source| WriteError::Output {
            path: full.clone(),
            source,
        };
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(out)?;
        }
        self.builder.append(&header, data).map_err(out)?;
        self.entries += 1;
        Ok(())
    }
}
