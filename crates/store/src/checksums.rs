//! The context checksum cache: (path, dev, inode, size, mtime, ctime) → content digest.
//!
//! A rebuild re-keys an unchanged context with `stat` alone: load every entry under the context
//! directory in one query ([`Store::checksums_under`]), compare stats, hash only what changed, and
//! write the new entries back in one transaction ([`Store::put_checksums`]).

use crate::error::Result;
use crate::Store;
use rbuild_oci::Digest;
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The stat fields that decide whether a cached checksum is still valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileStat {
    /// The fields of `meta` (from `symlink_metadata` or `metadata`).
    pub fn from_metadata(meta: &std::fs::Metadata) -> FileStat {
        FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }
}

/// A cached checksum: valid while the file's [`FileStat`] is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChecksumEntry {
    pub stat: FileStat,
    pub digest: Digest,
}

/// A row of the checksums table: path, dev, ino, size, mtime_ns, ctime_ns, digest.
type ChecksumRow = (Vec<u8>, i64, i64, i64, i64, i64, String);

/// The smallest byte string greater than every string starting with `prefix`
/// (`None` when there is none: the prefix is all 0xff).
fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut up = prefix.to_vec();
    while let Some(last) = up.pop() {
        if last < 0xff {
            up.push(last + 1);
            return Some(up);
        }
    }
    None
}

impl Store {
    /// Every cached entry whose path starts with `prefix` (byte-wise, so pass a directory with a
    /// trailing `/` to exclude siblings like `/ctx2`), in one query.
    pub fn checksums_under(&self, prefix: &Path) -> Result<HashMap<PathBuf, ChecksumEntry>> {
        let lo = prefix.as_os_str().as_bytes().to_vec();
        let hi = prefix_upper_bound(&lo);
        let rows: Vec<ChecksumRow> = self.db(|c| {
            let sql_all = "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM checksums
                           WHERE path >= ?1";
            let sql_range = "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM checksums
                             WHERE path >= ?1 AND path < ?2";
            let map = |r: &rusqlite::Row<'_>| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            };
            let rows = match &hi {
                Some(hi) => c
                    .prepare(sql_range)?
                    .query_map(params![lo, hi], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                None => c
                    .prepare(sql_all)?
                    .query_map(params![lo], map)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })?;
        let mut out = HashMap::with_capacity(rows.len());
        for (path, dev, ino, size, mtime_ns, ctime_ns, digest) in rows {
            // A row that does not parse is just a cache miss.
            let Ok(digest) = digest.parse::<Digest>() else {
                continue;
            };
            out.insert(
                PathBuf::from(OsString::from_vec(path)),
                ChecksumEntry {
                    stat: FileStat {
                        dev: dev as u64,
                        ino: ino as u64,
                        size: size as u64,
                        mtime_ns,
                        ctime_ns,
                    },
                    digest,
                },
            );
        }
        Ok(out)
    }

    /// Insert or replace entries, all in one transaction.
    pub fn put_checksums<'a, I>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a Path, &'a ChecksumEntry)>,
    {
        self.db(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO checksums (path, dev, ino, size, mtime_ns, ctime_ns, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (path, e) in entries {
                    stmt.execute(params![
                        path.as_os_str().as_bytes(),
                        e.stat.dev as i64,
                        e.stat.ino as i64,
                        e.stat.size as i64,
                        e.stat.mtime_ns,
                        e.stat.ctime_ns,
                        e.digest.to_string()
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// Forget every entry under `prefix`; returns how many were removed.
    pub fn remove_checksums_under(&self, prefix: &Path) -> Result<usize> {
        let lo = prefix.as_os_str().as_bytes().to_vec();
        let hi = prefix_upper_bound(&lo);
        self.db(|c| match hi {
            Some(hi) => c.execute(
                "DELETE FROM checksums WHERE path >= ?1 AND path < ?2",
                params![lo, hi],
            ),
            None => c.execute("DELETE FROM checksums WHERE path >= ?1", params![lo]),
        })
    }
}

/// What a context selection's files checksummed to when their stats had a given fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextFingerprint {
    /// Digest of every selected file's path, metadata and stat key, in selection order.
    pub fingerprint: Digest,
    /// The selection's content checksum.
    pub checksum: Digest,
    /// The blob holding the per-file listing, if one was stored.
    pub files: Option<Digest>,
}

impl Store {
    /// The last fingerprint stored for `selection` (a digest naming a context directory and the
    /// sources, excludes and options selected from it).
    pub fn context_fingerprint(&self, selection: &Digest) -> Result<Option<ContextFingerprint>> {
        let row: Option<(String, String, Option<String>)> = self.db(|c| {
            c.prepare_cached(
                "SELECT fingerprint, checksum, files FROM context_fingerprints WHERE selection = ?1",
            )?
            .query_row([selection.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })?;
        // A row that does not parse is treated as absent: it is only a cache.
        Ok(row.and_then(|(fp, sum, files)| {
            Some(ContextFingerprint {
                fingerprint: fp.parse().ok()?,
                checksum: sum.parse().ok()?,
                files: match files {
                    Some(f) => Some(f.parse().ok()?),
                    None => None,
                },
            })
        }))
    }

    /// Remember `fp` for `selection`, replacing the previous one.
    pub fn put_context_fingerprint(
        &self,
        selection: &Digest,
        fp: &ContextFingerprint,
    ) -> Result<()> {
        self.db(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO context_fingerprints
                    (selection, fingerprint, checksum, files, used_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                selection.to_string(),
                fp.fingerprint.to_string(),
                fp.checksum.to_string(),
                fp.files.as_ref().map(|d| d.to_string()),
                crate::db::now_ns()
            ])
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound() {
        assert_eq!(prefix_upper_bound(b"/ctx/"), Some(b"/ctx0".to_vec()));
        assert_eq!(prefix_upper_bound(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_upper_bound(b"\xff\xff"), None);
    }

    #[test]
    fn batch_put_and_get_20000() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let entries: Vec<(PathBuf, ChecksumEntry)> = (0..20_000u64)
            .map(|i| {
                (
                    PathBuf::from(format!("/ctx/dir{}/file{i}", i % 100)),
                    ChecksumEntry {
                        stat: FileStat {
                            dev: 1,
                            ino: i,
                            size: i * 3,
                            mtime_ns: i as i64,
                            ctime_ns: -(i as i64),
                        },
                        digest: Digest::sha256_of(&i.to_le_bytes()),
                    },
                )
            })
            .collect();
        let start = std::time::Instant::now();
        s.put_checksums(entries.iter().map(|(p, e)| (p.as_path(), e)))
            .unwrap();
        s.put_checksums([(Path::new("/ctx2/x"), &entries[0].1)])
            .unwrap();
        let got = s.checksums_under(Path::new("/ctx/")).unwrap();
        let took = start.elapsed();
        assert_eq!(got.len(), 20_000);
        assert_eq!(got[&entries[77].0], entries[77].1);
        assert!(took.as_secs() < 10, "20,000 checksums took {took:?}");
        assert_eq!(
            s.remove_checksums_under(Path::new("/ctx/dir1/")).unwrap(),
            200
        );
        // Byte-wise prefix: "/ctx" also covers "/ctx2/x".
        assert_eq!(s.checksums_under(Path::new("/ctx")).unwrap().len(), 19_801);
    }

    #[test]
    fn stat_of_real_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let st = FileStat::from_metadata(&std::fs::metadata(&p).unwrap());
        assert_eq!(st.size, 3);
        assert!(st.mtime_ns > 0);
    }
}
