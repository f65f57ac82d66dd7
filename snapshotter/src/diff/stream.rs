//! A layer tar written entry by entry, without a directory to walk: the writer behind streamed
//! COPY layers (the solver produces the entries straight from a build context selection).
//!
//! Headers are encoded exactly as [`write_layer`](super::write_layer) encodes them (the same
//! [`ustar_header`] function), so the same entries give the same bytes and the same diff_id. The
//! caller is responsible for the order (sorted by path, parents first, as `write_layer` walks).

use super::write::LayerStats;
use rbuild_oci::Sha256Writer;
use std::io::{self, Read, Write};
use tar::{EntryType, Header};

/// PAX records for one member: key, value.
pub(crate) type PaxRecords = Vec<(String, Vec<u8>)>;

/// Metadata of one member of a streamed layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (negative values are written as 0).
    pub mtime: i64,
}

/// Writes an OCI layer tar member by member, hashing the stream (diff_id) as it goes.
pub struct LayerTarWriter<W: Write> {
    builder: tar::Builder<Sha256Writer<W>>,
    source_date_epoch: Option<i64>,
    entries: u64,
}

impl<W: Write> LayerTarWriter<W> {
    /// `source_date_epoch`: every mtime later than it is clamped to it, as in `write_layer`.
    pub fn new(out: W, source_date_epoch: Option<i64>) -> Self {
        LayerTarWriter {
            builder: tar::Builder::new(Sha256Writer::new(out)),
            source_date_epoch,
            entries: 0,
        }
    }

    fn mtime(&self, m: i64) -> i64 {
        let m = m.max(0);
        match self.source_date_epoch {
            Some(epoch) if m > epoch => epoch.max(0),
            _ => m,
        }
    }

    fn append<R: Read>(
        &mut self,
        kind: EntryType,
        path: &[u8],
        meta: &EntryMeta,
        size: u64,
        link: Option<&[u8]>,
        data: R,
    ) -> io::Result<()> {
        let (h, pax) = ustar_header(
            kind,
            path,
            meta.mode,
            meta.uid,
            meta.gid,
            size,
            self.mtime(meta.mtime),
            link,
        );
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        self.builder.append(&h, data)?;
        self.entries += 1;
        Ok(())
    }

    /// A directory member; `path` without the trailing `/` (it is added).
    pub fn dir(&mut self, path: &str, meta: &EntryMeta) -> io::Result<()> {
        let mut p = path.as_bytes().to_vec();
        p.push(b'/');
        self.append(EntryType::Directory, &p, meta, 0, None, io::empty())
    }

    /// A regular file of exactly `size` bytes read from `data` (a shorter reader is an error).
    pub fn file<R: Read>(
        &mut self,
        path: &str,
        meta: &EntryMeta,
        size: u64,
        data: R,
    ) -> io::Result<()> {
        let exact = Exact {
            inner: data,
            remaining: size,
        };
        self.append(EntryType::Regular, path.as_bytes(), meta, size, None, exact)
    }

    pub fn symlink(&mut self, path: &str, meta: &EntryMeta, target: &[u8]) -> io::Result<()> {
        self.append(
            EntryType::Symlink,
            path.as_bytes(),
            meta,
            0,
            Some(target),
            io::empty(),
        )
    }

    /// A hard link to the member `first` written earlier in this layer.
    pub fn hardlink(&mut self, path: &str, meta: &EntryMeta, first: &str) -> io::Result<()> {
        self.append(
            EntryType::Link,
            path.as_bytes(),
            meta,
            0,
            Some(first.as_bytes()),
            io::empty(),
        )
    }

    /// End the archive; returns the diff_id, size and member count, and the inner writer.
    pub fn finish(self) -> io::Result<(LayerStats, W)> {
        let entries = self.entries;
        let hashing = self.builder.into_inner()?;
        let (diff_id, size, mut inner) = hashing.finish();
        inner.flush()?;
        Ok((
            LayerStats {
                diff_id,
                size,
                entries,
            },
            inner,
        ))
    }
}

/// A reader that must yield exactly `remaining` bytes (a file that shrank mid-read would otherwise
/// desync the tar stream).
pub(crate) struct Exact<R> {
    pub(crate) inner: R,
    pub(crate) remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being written into the layer",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A ustar header for `path`, plus the PAX records needed where ustar falls short (long names and
/// link targets, big ids and sizes). `mtime` is written as given (already clamped).
#[allow(clippy::too_many_arguments)]
pub(crate) fn ustar_header(
    kind: EntryType,
    path: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    link: Option<&[u8]>,
) -> (Header, PaxRecords) {
    const USTAR_ID_MAX: u64 = 0o7777777;
    const USTAR_SIZE_MAX: u64 = 0o77777777777;
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    let mut pax = set_name(&mut h, path);
    let (uid, gid) = (u64::from(uid), u64::from(gid));
    if uid > USTAR_ID_MAX {
        pax.push(("uid".into(), uid.to_string().into_bytes()));
        h.set_uid(0);
    } else {
        h.set_uid(uid);
    }
    if gid > USTAR_ID_MAX {
        pax.push(("gid".into(), gid.to_string().into_bytes()));
        h.set_gid(0);
    } else {
        h.set_gid(gid);
    }
    if size > USTAR_SIZE_MAX {
        pax.push(("size".into(), size.to_string().into_bytes()));
    }
    h.set_size(size);
    h.set_mtime(mtime.max(0) as u64);
    if let Some(link) = link {
        let ustar = h.as_ustar_mut().expect("new_ustar header is ustar");
        if link.len() <= ustar.linkname.len() {
            ustar.linkname[..link.len()].copy_from_slice(link);
        } else {
            pax.push(("linkpath".into(), link.to_vec()));
            let n = ustar.linkname.len();
            ustar.linkname.copy_from_slice(&link[..n]);
        }
    }
    h.set_cksum();
    (h, pax)
}

/// Put `path` into the ustar name field, or into a PAX `path` record when it does not fit.
pub(crate) fn set_name(h: &mut Header, path: &[u8]) -> PaxRecords {
    let ustar = h.as_ustar_mut().expect("new_ustar header is ustar");
    let n = ustar.name.len();
    if path.len() <= n {
        ustar.name[..path.len()].copy_from_slice(path);
        Vec::new()
    } else {
        ustar.name.copy_from_slice(&path[..n]);
        vec![("path".into(), path.to_vec())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_entries_equal_the_walked_layer() {
        // The same tree written by write_layer and by LayerTarWriter gives the same bytes.
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("up");
        std::fs::create_dir_all(up.join("a/b")).unwrap();
        std::fs::write(up.join("a/b/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("../x", up.join("a/l")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (p, m) in [("a", 0o755), ("a/b", 0o700), ("a/b/f", 0o640)] {
            std::fs::set_permissions(up.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        let epoch = Some(1000);
        let mut walked = Vec::new();
        let ws = crate::diff::write_layer(
            &up,
            &mut walked,
            &crate::diff::LayerOptions {
                source_date_epoch: epoch,
            },
        )
        .unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let m = |mode| EntryMeta {
            mode,
            uid,
            gid,
            mtime: 5000,
        };
        let mut w = LayerTarWriter::new(Vec::new(), epoch);
        w.dir("a", &m(0o755)).unwrap();
        w.dir("a/b", &m(0o700)).unwrap();
        w.file("a/b/f", &m(0o640), 5, &b"hello"[..]).unwrap();
        w.symlink("a/l", &m(0o777), b"../x").unwrap();
        let (ss, streamed) = w.finish().unwrap();
        assert_eq!(ss, ws);
        assert_eq!(streamed, walked);
    }

    #[test]
    fn short_file_is_an_error() {
        let mut w = LayerTarWriter::new(Vec::new(), None);
        let m = EntryMeta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        assert!(w.file("f", &m, 10, &b"abc"[..]).is_err());
    }
}
