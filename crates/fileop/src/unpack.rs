//! ADD's archive extraction: a local tar (plain, gzip, bzip2, xz or zstd, detected by content, not
//! by name) is unpacked into the destination directory instead of being copied.
//!
//! Extraction is ours, not the tar crate's `unpack`: the destination directory is treated as the
//! root of the archive (as Docker's chroot'ed untar does), so every member — including ones under
//! symlinks that earlier members planted — is resolved beneath it. Members with `..` are rejected;
//! entries, bytes and path depth have budgets that are on by default (docs/ARCHITECTURE.md, safety rule 7).

use crate::error::{FileOpError, Result};
use crate::root::{clean, join, split_parent, Follow, NewDir, Root};
use crate::write::{self, ApplyStats, DirHandle, Meta, ReaderSource};
use nix::sys::stat::SFlag;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// Budgets of one extraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Sum of member sizes.
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Path components of a member.
    pub max_depth: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_bytes: 64 << 30,
            max_entries: 1_000_000,
            max_depth: 256,
        }
    }
}

/// Compression of an archive, detected from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveCompression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The compression of a stream from its first bytes (at least 6 for every format).
pub fn sniff(head: &[u8]) -> ArchiveCompression {
    if head.starts_with(&[0x1f, 0x8b]) {
        ArchiveCompression::Gzip
    } else if head.starts_with(b"BZh") {
        ArchiveCompression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ArchiveCompression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveCompression::Zstd
    } else {
        ArchiveCompression::None
    }
}

/// The archive's decompressor, through the same expansion-ratio guard as image layers.
fn decoder<'a>(f: impl Read + 'a, c: ArchiveCompression) -> io::Result<Box<dyn Read + 'a>> {
    use rbuild_oci::expansion::{Counted, ExpansionGuard, ExpansionLimits};
    let (f, count) = Counted::new(f);
    let f = BufReader::new(f);
    let d: Box<dyn Read + 'a> = match c {
        ArchiveCompression::None => return Ok(Box::new(f)),
        ArchiveCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        ArchiveCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        ArchiveCompression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(f)),
        ArchiveCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(f)?),
    };
    Ok(Box::new(ExpansionGuard::new(
        d,
        count,
        ExpansionLimits::from_env_or_default(),
    )))
}

/// Whether a 512-byte block is a tar header (valid checksum, not all zeros).
fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(s.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

/// If the file at canonical `path` in `src` is a tar archive (possibly compressed), its
/// compression; `None` for any other file (which ADD then copies as is).
pub fn detect(src: &Root, path: &str) -> Result<Option<ArchiveCompression>> {
    let mut f = src.open_file(path, Follow::Never)?;
    let mut head = [0u8; 6];
    let n = read_full(&mut f, &mut head)
        .map_err(|e| FileOpError::io("reading", src.path(), path, e))?;
    let c = sniff(&head[..n]);
    f.seek(SeekFrom::Start(0))
        .map_err(|e| FileOpError::io("reading", src.path(), path, e))?;
    let mut block = [0u8; 512];
    let ok = match decoder(&mut f, c) {
        Ok(mut d) => matches!(read_full(&mut d, &mut block), Ok(512)) && is_tar_header(&block),
        Err(_) => false,
    };
    Ok(ok.then_some(c))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A reader that fails once more than `limit` bytes went through (decompression bombs).
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::other(
                "decompressed stream exceeds the extraction budget",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Extract the archive `file` (compression `c`; `name` for messages) into `xroot`, the destination
/// directory treated as the archive's root. Owners come from the archive unless `owner` is given.
/// Members are files as written: a `.wh.` name is an ordinary file here, not a whiteout. A member
/// (or hard link target) with a `..` component is refused.
pub fn extract(
    file: impl Read,
    c: ArchiveCompression,
    name: &str,
    xroot: &Root,
    owner: Option<(u32, u32)>,
    limits: &ExtractLimits,
    stats: &mut ApplyStats,
) -> Result<()> {
    extract_with(file, c, name, xroot, owner, limits, stats, false)
}

/// [`extract`], but a `..` component stops at the archive's root instead of refusing the member
/// (`../a` is `a`), as Docker's chroot'ed untar of a build context does.
pub fn extract_clamped(
    file: impl Read,
    c: ArchiveCompression,
    name: &str,
    xroot: &Root,
    limits: &ExtractLimits,
    stats: &mut ApplyStats,
) -> Result<()> {
    extract_with(file, c, name, xroot, None, limits, stats, true)
}

#[allow(clippy::too_many_arguments)]
fn extract_with(
    file: impl Read,
    c: ArchiveCompression,
    name: &str,
    xroot: &Root,
    owner: Option<(u32, u32)>,
    limits: &ExtractLimits,
    stats: &mut ApplyStats,
    clamp_dotdot: bool,
) -> Result<()> {
    let arc_err = |source: io::Error| FileOpError::Archive {
        archive: name.to_string(),
        source,
    };
    let stream_cap = limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_mul(3 * 512))
        .saturating_add(1 << 20);
    let reader = Capped {
        inner: decoder(file, c).map_err(arc_err)?,
        left: stream_cap,
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries_seen = 0u64;
    let mut bytes = 0u64;
    let mut dir_times: Vec<(String, i64)> = Vec::new();
    let parents = NewDir {
        mode: 0o755,
        owner: Some(owner.unwrap_or((0, 0))),
        mtime: None,
    };
    for entry in archive.entries().map_err(arc_err)? {
        let mut entry = entry.map_err(arc_err)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(FileOpError::Budget {
                archive: name.to_string(),
                what: "number of entries",
                limit: limits.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason| FileOpError::UnsafeArchiveEntry {
            archive: name.to_string(),
            entry: shown.clone(),
            reason,
        };
        let Ok(path) = std::str::from_utf8(&raw) else {
            return Err(unsafe_entry("path is not UTF-8"));
        };
        if !clamp_dotdot && path.split('/').any(|c| c == "..") {
            return Err(unsafe_entry("path contains '..'"));
        }
        let rel = clean(path);
        if rel.split('/').count() > limits.max_depth {
            return Err(FileOpError::Budget {
                archive: name.to_string(),
                what: "path depth",
                limit: limits.max_depth as u64,
            });
        }
        let h = entry.header().clone();
        let size = h.entry_size().map_err(arc_err)?;
        bytes = bytes.saturating_add(size);
        if bytes > limits.max_bytes {
            return Err(FileOpError::Budget {
                archive: name.to_string(),
                what: "total size of members",
                limit: limits.max_bytes,
            });
        }
        let id = |v: io::Result<u64>| v.ok().and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        let meta = Meta {
            mode: h.mode().map_err(arc_err)? & 0o7777,
            owner: owner.unwrap_or((id(h.uid()), id(h.gid()))),
            mtime: Some((
                h.mtime()
                    .map(|m| m.min(i64::MAX as u64) as i64)
                    .unwrap_or(0),
                0,
            )),
        };
        let kind = h.entry_type();
        use tar::EntryType as T;
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            continue;
        }
        if kind == T::Directory {
            let (_, canon) = xroot.mkdir_all(&rel, &parents)?;
            let (p, n) = split_parent(&canon);
            let ph = DirHandle::open(xroot, p)?;
            let target_name = if canon.is_empty() { "." } else { n };
            let fd = if canon.is_empty() {
                xroot.dup()?
            } else {
                ph.fd
            };
            crate::root::set_meta_at(
                std::os::fd::AsFd::as_fd(&fd),
                target_name,
                meta.mode,
                Some(meta.owner),
                None,
            )
            .map_err(|e| FileOpError::io("setting metadata of", xroot.path(), &canon, e))?;
            stats.dirs += 1;
            dir_times.push((canon, meta.mtime.map(|m| m.0).unwrap_or(0)));
            continue;
        }
        if rel.is_empty() {
            return Err(unsafe_entry(
                "a non-directory member cannot replace the destination directory",
            ));
        }
        let (pfd, pcanon, fname) = xroot.parent_for_create(&rel, &parents)?;
        let dir = DirHandle {
            fd: pfd,
            path: pcanon,
        };
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                stats.bytes += write::write_file(
                    xroot,
                    &dir,
                    &fname,
                    &mut ReaderSource(&mut entry),
                    &meta,
                    true,
                )?;
                stats.files += 1;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                write::write_symlink(xroot, &dir, &fname, &target, &meta, true)?;
                stats.symlinks += 1;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                if !clamp_dotdot && target.split('/').any(|c| c == "..") {
                    return Err(unsafe_entry("hard link target contains '..'"));
                }
                let tclean = clean(&target);
                let (tp, tn) = split_parent(&tclean);
                let Some(tpc) = xroot.canonicalize(tp)? else {
                    return Err(unsafe_entry("hard link target does not exist"));
                };
                write::write_hardlink(xroot, &dir, &fname, &join(&tpc, tn), true)?;
                stats.hardlinks += 1;
            }
            T::Char | T::Block | T::Fifo => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let (sf, rdev) = match kind {
                    T::Char => (SFlag::S_IFCHR, libc::makedev(major, minor)),
                    T::Block => (SFlag::S_IFBLK, libc::makedev(major, minor)),
                    _ => (SFlag::S_IFIFO, 0),
                };
                write::write_special(xroot, &dir, &fname, sf, rdev, &meta, true)?;
                stats.specials += 1;
            }
            _ => {} // other member types (e.g. GNU volume headers) carry no files
        }
    }
    for (canon, mtime) in dir_times.iter().rev() {
        let (p, n) = split_parent(canon);
        let (fd, nm) = if canon.is_empty() {
            (xroot.dup()?, ".")
        } else {
            (DirHandle::open(xroot, p)?.fd, n)
        };
        crate::root::set_times_at(std::os::fd::AsFd::as_fd(&fd), nm, *mtime, 0)
            .map_err(|e| FileOpError::io("setting times of", xroot.path(), canon, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_compression() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), ArchiveCompression::Gzip);
        assert_eq!(sniff(b"BZh91"), ArchiveCompression::Bzip2);
        assert_eq!(
            sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            ArchiveCompression::Xz
        );
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), ArchiveCompression::Zstd);
        assert_eq!(sniff(b"hello"), ArchiveCompression::None);
        assert!(!is_tar_header(&[0u8; 512]));
        assert!(!is_tar_header(&[b'a'; 512]));
    }
}
