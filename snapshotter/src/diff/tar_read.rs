//! A streaming reader of tar entries, ours rather than the tar crate's `Archive`.
//!
//! The tar crate is used only to decode a 512-byte header. Framing, PAX records and GNU long names are
//! handled here so that every piece of metadata has a size cap (a hostile PAX header must not allocate
//! gigabytes), a PAX `size` that disagrees with the header is an error rather than a desync, and
//! header-only entry types (links, dirs, devices, fifos) carry no data whatever their size field says,
//! as Go's `archive/tar` reads them (Docker and BuildKit write layers with it).

use std::io::{self, Read};

/// Cap on one PAX extended header or GNU long-name record.
pub(crate) const MAX_META_RECORD: u64 = 1 << 20;
const BLOCK: u64 = 512;

/// Why the tar stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("reading the tar stream: {0}")]
    Io(#[from] io::Error),
    #[error("header checksum mismatch at offset {offset}")]
    Checksum { offset: u64 },
    #[error("malformed header at offset {offset}: {why}")]
    Header { offset: u64, why: String },
    #[error("{kind} record of {size} bytes at offset {offset} exceeds the cap of {MAX_META_RECORD} bytes")]
    MetaTooLarge {
        kind: &'static str,
        size: u64,
        offset: u64,
    },
    #[error("malformed PAX record at offset {offset}: {why}")]
    Pax { offset: u64, why: &'static str },
    #[error("entry {path:?}: PAX size {pax} disagrees with header size {header}")]
    SizeMismatch { path: String, pax: u64, header: u64 },
    #[error("unexpected end of stream inside an entry at offset {offset}")]
    Truncated { offset: u64 },
}

/// One member's metadata, with PAX and GNU extensions already folded in.
#[derive(Debug, Clone)]
pub(crate) struct EntryMeta {
    pub(crate) kind: u8,
    pub(crate) path: Vec<u8>,
    pub(crate) link: Option<Vec<u8>>,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: i64,
    pub(crate) dev_major: u32,
    pub(crate) dev_minor: u32,
    /// `SCHILY.xattr.*` records, in stream order.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Default)]
struct Pending {
    pax: Vec<(Vec<u8>, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// Reads members one at a time; the current member's data is read through `Read`.
pub(crate) struct TarReader<R> {
    inner: R,
    offset: u64,
    /// Data bytes of the current member not yet read.
    remaining: u64,
    /// Padding after the current member's data.
    padding: u64,
    ended: bool,
}

fn is_header_only(kind: u8) -> bool {
    matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

fn padding_of(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            ended: false,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Err(TarError::Truncated {
                    offset: self.offset,
                });
            }
            self.offset += got as u64;
            n -= got as u64;
        }
        Ok(())
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<bool, TarError> {
        // Returns false on a clean EOF before the first byte.
        let mut filled = 0;
        while filled < buf.len() {
            let n = match self.inner.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(TarError::Truncated {
                    offset: self.offset,
                });
            }
            filled += n;
            self.offset += n as u64;
        }
        Ok(true)
    }

    fn read_record(&mut self, kind: &'static str, size: u64) -> Result<Vec<u8>, TarError> {
        if size > MAX_META_RECORD {
            return Err(TarError::MetaTooLarge {
                kind,
                size,
                offset: self.offset,
            });
        }
        let mut data = vec![0u8; size as usize];
        if !self.read_exact_counted(&mut data)? && size > 0 {
            return Err(TarError::Truncated {
                offset: self.offset,
            });
        }
        self.skip(padding_of(size))?;
        Ok(data)
    }

    /// Advance to the next member, skipping whatever is left of the current one. `None` at the end.
    pub(crate) fn next_entry(&mut self) -> Result<Option<EntryMeta>, TarError> {
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        if self.ended {
            return Ok(None);
        }
        let mut pending = Pending::default();
        loop {
            let at = self.offset;
            let mut header = tar::Header::new_old();
            if !self.read_exact_counted(header.as_mut_bytes())? {
                if pending.pax.is_empty()
                    && pending.long_name.is_none()
                    && pending.long_link.is_none()
                {
                    self.ended = true;
                    return Ok(None);
                }
                return Err(TarError::Truncated { offset: at });
            }
            if header.as_bytes().iter().all(|b| *b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let sum: u32 = header.as_bytes()[..148]
                .iter()
                .chain(&header.as_bytes()[156..])
                .map(|b| u32::from(*b))
                .sum::<u32>()
                + 8 * 32;
            let cksum = header
                .cksum()
                .map_err(|_| TarError::Checksum { offset: at })?;
            if sum != cksum {
                return Err(TarError::Checksum { offset: at });
            }
            let bad = |why: String| TarError::Header { offset: at, why };
            let header_size = header
                .entry_size()
                .map_err(|e| bad(format!("size field: {e}")))?;
            let kind = header.entry_type().as_byte();
            match kind {
                b'x' => {
                    let data = self.read_record("PAX header", header_size)?;
                    parse_pax(&data, at, &mut pending.pax)?;
                    continue;
                }
                b'g' => {
                    // Global PAX headers carry nothing a layer applier honours.
                    self.read_record("PAX global header", header_size)?;
                    continue;
                }
                b'L' => {
                    let mut data = self.read_record("GNU long name", header_size)?;
                    strip_nuls(&mut data);
                    pending.long_name = Some(data);
                    continue;
                }
                b'K' => {
                    let mut data = self.read_record("GNU long link", header_size)?;
                    strip_nuls(&mut data);
                    pending.long_link = Some(data);
                    continue;
                }
                _ => {}
            }
            let mut meta = EntryMeta {
                kind,
                path: pending
                    .long_name
                    .take()
                    .unwrap_or_else(|| header.path_bytes().into_owned()),
                link: pending
                    .long_link
                    .take()
                    .or_else(|| header.link_name_bytes().map(|l| l.into_owned())),
                size: header_size,
                mode: lenient(header.mode(), &header.as_old().mode)
                    .map_err(|e| bad(format!("mode field: {e}")))?,
                uid: lenient(header.uid(), &header.as_old().uid)
                    .map_err(|e| bad(format!("uid field: {e}")))?,
                gid: lenient(header.gid(), &header.as_old().gid)
                    .map_err(|e| bad(format!("gid field: {e}")))?,
                mtime: lenient(header.mtime(), &header.as_old().mtime)
                    .map_err(|e| bad(format!("mtime field: {e}")))?
                    .min(i64::MAX as u64) as i64,
                dev_major: 0,
                dev_minor: 0,
                xattrs: Vec::new(),
            };
            if matches!(kind, b'3' | b'4') {
                meta.dev_major = header
                    .device_major()
                    .map_err(|e| bad(format!("device major: {e}")))?
                    .unwrap_or(0);
                meta.dev_minor = header
                    .device_minor()
                    .map_err(|e| bad(format!("device minor: {e}")))?
                    .unwrap_or(0);
            }
            let mut pax_size = None;
            for (key, value) in pending.pax.drain(..) {
                let num = |v: &[u8]| -> Result<i64, TarError> {
                    let s = std::str::from_utf8(v).map_err(|_| TarError::Pax {
                        offset: at,
                        why: "non-numeric value",
                    })?;
                    // mtime may carry a fraction; only whole seconds matter here.
                    let whole = s.split('.').next().unwrap_or("");
                    whole.parse::<i64>().map_err(|_| TarError::Pax {
                        offset: at,
                        why: "non-numeric value",
                    })
                };
                match key.as_slice() {
                    b"path" => meta.path = value,
                    b"linkpath" => meta.link = Some(value),
                    b"size" => {
                        let n = num(&value)?;
                        pax_size = Some(u64::try_from(n).map_err(|_| TarError::Pax {
                            offset: at,
                            why: "negative size",
                        })?);
                    }
                    b"uid" => meta.uid = u64::try_from(num(&value)?).unwrap_or(0),
                    b"gid" => meta.gid = u64::try_from(num(&value)?).unwrap_or(0),
                    b"mtime" => meta.mtime = num(&value)?,
                    k if k.starts_with(b"SCHILY.xattr.") => meta
                        .xattrs
                        .push((k[b"SCHILY.xattr.".len()..].to_vec(), value)),
                    _ => {}
                }
            }
            if let Some(p) = pax_size {
                if header_size != 0 && header_size != p {
                    return Err(TarError::SizeMismatch {
                        path: String::from_utf8_lossy(&meta.path).into_owned(),
                        pax: p,
                        header: header_size,
                    });
                }
                meta.size = p;
            }
            if is_header_only(kind) {
                meta.size = 0;
            }
            self.remaining = meta.size;
            self.padding = padding_of(meta.size);
            return Ok(Some(meta));
        }
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar stream ended inside an entry's data",
            ));
        }
        self.remaining -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }
}

/// A numeric field left empty (all NULs or spaces) reads as 0, as Go's archive/tar reads it.
fn lenient<T: Default>(parsed: io::Result<T>, raw: &[u8]) -> io::Result<T> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        other => other,
    }
}

fn strip_nuls(data: &mut Vec<u8>) {
    while data.last() == Some(&0) {
        data.pop();
    }
}

/// Parse `"<len> <key>=<value>\n"` records.
fn parse_pax(
    mut data: &[u8],
    offset: u64,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), TarError> {
    let err = |why| TarError::Pax { offset, why };
    while !data.is_empty() {
        // Some writers pad the record block with NULs.
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| err("missing length"))?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("bad length"))?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(err("length out of range"));
        }
        let record = &data[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| err("missing '='"))?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_parse() {
        let mut out = Vec::new();
        parse_pax(b"11 path=ab\n18 SCHILY.xattr.=\n", 0, &mut out).unwrap();
        assert_eq!(out[0], (b"path".to_vec(), b"ab".to_vec()));
        assert!(parse_pax(b"99 path=ab\n", 0, &mut Vec::new()).is_err());
        assert!(parse_pax(b"x path=ab\n", 0, &mut Vec::new()).is_err());
        assert!(parse_pax(b"5 a\n", 0, &mut Vec::new()).is_err());
    }

    #[test]
    fn empty_stream_is_empty_archive() {
        let mut r = TarReader::new(&[][..]);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let junk = vec![0x41u8; 2048];
        let mut r = TarReader::new(&junk[..]);
        assert!(r.next_entry().is_err());
    }
}
