//! The content checksum of a COPY's [`Selection`]: what a cache key covers.
//!
//! The digest is sha256 over a versioned, length-prefixed encoding of each item (source, name,
//! `--parents` path) and each entry (relative path, kind, mode, uid, gid, symlink target, device
//! number, and for regular files the sha256 of the content). Modification times are never part of
//! it, so touching a file does not invalidate the cache; the same tree gives the same digest on any
//! machine.
//!
//! File contents are hashed in parallel (rayon, bounded by the CPU count). A [`ChecksumCache`]
//! keyed by (host path, [`StatKey`]) lets an unchanged context be re-keyed with stats alone.

use crate::error::{FileOpError, Result};
use crate::root::{join, Follow, Root};
use crate::select::{EntryKind, SelEntry, Selection, StatKey};
use rayon::prelude::*;
use rbuild_oci::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A store of content digests of files, keyed by host path and [`StatKey`]. The solver implements
/// it over the store's checksum table; a hit means the file is not read.
pub trait ChecksumCache: Sync {
    fn get(&self, path: &Path, meta: &StatKey) -> Option<Digest>;
    fn put(&self, path: &Path, meta: &StatKey, digest: &Digest);
}

/// Remembers nothing: every file is read.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoChecksumCache;

impl ChecksumCache for NoChecksumCache {
    fn get(&self, _: &Path, _: &StatKey) -> Option<Digest> {
        None
    }
    fn put(&self, _: &Path, _: &StatKey, _: &Digest) {}
}

/// An in-memory [`ChecksumCache`] (for one process; the solver persists its own).
#[derive(Debug, Default)]
pub struct MemoryChecksumCache {
    map: Mutex<HashMap<(PathBuf, StatKey), Digest>>,
}

impl MemoryChecksumCache {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ChecksumCache for MemoryChecksumCache {
    fn get(&self, path: &Path, meta: &StatKey) -> Option<Digest> {
        self.map
            .lock()
            .ok()?
            .get(&(path.to_path_buf(), *meta))
            .cloned()
    }
    fn put(&self, path: &Path, meta: &StatKey, digest: &Digest) {
        if let Ok(mut m) = self.map.lock() {
            m.insert((path.to_path_buf(), *meta), digest.clone());
        }
    }
}

/// What a checksum run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksumStats {
    /// Regular files in the selection.
    pub files: usize,
    /// Files whose digest came from the cache (not read).
    pub cache_hits: usize,
    /// Bytes read and hashed.
    pub bytes_hashed: u64,
    /// Files whose stat changed while they were read (their digest was not cached).
    pub unstable: usize,
}

/// The content checksum of `sel`, read from `src`.
pub fn checksum(src: &Root, sel: &Selection, cache: &dyn ChecksumCache) -> Result<Digest> {
    checksum_with_stats(src, sel, cache).map(|(d, _)| d)
}

/// [`checksum`], also reporting how much was read.
pub fn checksum_with_stats(
    src: &Root,
    sel: &Selection,
    cache: &dyn ChecksumCache,
) -> Result<(Digest, ChecksumStats)> {
    // (item, entry) of every regular file, hashed in parallel.
    let files: Vec<(usize, usize)> = sel
        .items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| {
            it.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.kind == EntryKind::File)
                .map(move |(j, _)| (i, j))
        })
        .collect();
    // (digest, from the cache, stat changed while reading, bytes read).
    let results: Vec<Result<(Digest, bool, bool, u64)>> = files
        .par_iter()
        .map(|&(i, j)| {
            let item = &sel.items[i];
            let e = &item.entries[j];
            let rel = join(&item.path, &e.rel);
            let host = src.path().join(&rel);
            if let Some(d) = cache.get(&host, &e.stat) {
                return Ok((d, true, false, 0));
            }
            let (d, unchanged) = hash_file(src, &rel, &e.stat)?;
            if unchanged {
                cache.put(&host, &e.stat, &d);
            }
            Ok((d, false, !unchanged, e.size))
        })
        .collect();
    let mut digests: HashMap<(usize, usize), Digest> = HashMap::with_capacity(files.len());
    let mut stats = ChecksumStats {
        files: files.len(),
        ..Default::default()
    };
    for (k, r) in files.iter().zip(results) {
        let (d, hit, unstable, n) = r?;
        stats.cache_hits += usize::from(hit);
        stats.unstable += usize::from(unstable);
        stats.bytes_hashed += n;
        digests.insert(*k, d);
    }

    let mut h = Enc(Sha256::new());
    h.raw(b"rbuild-fileop/copy-selection/v1\n");
    encode_selection(&mut h, sel, false, |h, i, j, _| {
        match digests.get(&(i, j)) {
            Some(d) => h.str(d.hex()),
            None => h.str(""),
        }
    });
    Ok((Digest::from_sha256_bytes(h.0.finalize().into()), stats))
}

/// A digest of everything [`checksum`] encodes about `sel` except file contents, plus each
/// entry's [`StatKey`] and canonical path: when two selections of the same root have equal
/// fingerprints, every file's stat is unchanged and a checksum cache keyed by stats would return
/// every digest unchanged, so the earlier checksum still holds. It lets a caller re-key an
/// unchanged context from one stored row instead of one cache lookup per file.
pub fn stat_fingerprint(sel: &Selection) -> Digest {
    let mut h = Enc(Sha256::new());
    h.raw(b"rbuild-fileop/stat-fingerprint/v1\n");
    encode_selection(&mut h, sel, true, |h, _, _, e| {
        h.u64(e.size);
        h.u64(e.stat.dev);
        h.u64(e.stat.ino);
        h.u64(e.stat.size);
        h.u64(e.stat.mtime_ns as u64);
        h.u64(e.stat.ctime_ns as u64);
    });
    Digest::from_sha256_bytes(h.0.finalize().into())
}

/// The encoding [`checksum_with_stats`] and [`stat_fingerprint`] share: every item and every
/// entry's metadata, in selection order; `with_path` adds each item's canonical path, and
/// `entry_tail` what one of them adds after an entry's metadata (given item and entry index).
/// Changing what it writes changes every cache key: bump the callers' version tags.
fn encode_selection(
    h: &mut Enc,
    sel: &Selection,
    with_path: bool,
    mut entry_tail: impl FnMut(&mut Enc, usize, usize, &SelEntry),
) {
    h.u64(sel.several as u64);
    h.u64(sel.items.len() as u64);
    for (i, item) in sel.items.iter().enumerate() {
        h.raw(b"I");
        h.str(&item.source);
        if with_path {
            h.str(&item.path);
        }
        h.str(&item.name);
        h.str(&item.parents_rel);
        h.u64(item.entries.len() as u64);
        for (j, e) in item.entries.iter().enumerate() {
            h.raw(b"E");
            h.str(&e.rel);
            h.raw(&[e.kind.tag()]);
            h.u64(e.mode as u64);
            h.u64(e.uid as u64);
            h.u64(e.gid as u64);
            h.str(e.link_target.as_deref().unwrap_or(""));
            h.u64(e.rdev);
            entry_tail(h, i, j, e);
        }
    }
}

/// sha256 of a file's content; the flag says whether its stat still matches `key` afterwards
/// (only then may the digest be cached under `key`).
fn hash_file(src: &Root, rel: &str, key: &StatKey) -> Result<(Digest, bool)> {
    let mut f = src.open_file(rel, Follow::Never)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileOpError::io("reading", src.path(), rel, e)),
        };
        hasher.update(&buf[..n]);
    }
    let st = nix::sys::stat::fstat(f.as_fd())
        .map_err(|e| FileOpError::io("stat", src.path(), rel, e))?;
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    let now = StatKey {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
        ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
    };
    Ok((
        Digest::from_sha256_bytes(hasher.finalize().into()),
        now == *key,
    ))
}

struct Enc(Sha256);

impl Enc {
    fn raw(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    fn u64(&mut self, v: u64) {
        self.0.update(v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.update(s.as_bytes());
    }
}
