//! Small keyed records: layer compression variants and build-cache records.

use crate::error::{Result, StoreError};
use crate::Store;
use rbuild_oci::{Compression, Digest};
use rusqlite::{params, OptionalExtension};

pub(crate) fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

impl Store {
    /// Remember that the layer with `diff_id`, compressed with `compression`, is blob
    /// `digest` of `size` bytes (so it is never compressed twice).
    pub fn put_layer_variant(
        &self,
        diff_id: &Digest,
        compression: Compression,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        self.db(|c| {
            c.execute(
                "INSERT INTO layer_variants (diff_id, compression, digest, size)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(diff_id, compression) DO UPDATE SET digest=excluded.digest,
                   size=excluded.size",
                params![
                    diff_id.to_string(),
                    compression_name(compression),
                    digest.to_string(),
                    size.min(i64::MAX as u64) as i64
                ],
            )
        })?;
        Ok(())
    }

    /// The blob holding the layer `diff_id` compressed with `compression`, if known *and present*.
    pub fn get_layer_variant(
        &self,
        diff_id: &Digest,
        compression: Compression,
    ) -> Result<Option<(Digest, u64)>> {
        let row: Option<(String, i64)> = self.db(|c| {
            c.query_row(
                "SELECT digest, size FROM layer_variants WHERE diff_id = ?1 AND compression = ?2",
                params![diff_id.to_string(), compression_name(compression)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        let Some((d, size)) = row else {
            return Ok(None);
        };
        let digest: Digest = d.parse().map_err(|e| StoreError::CorruptRecord {
            table: "layer_variants",
            key: diff_id.to_string(),
            path: self.db_path().to_path_buf(),
            reason: format!("{e}"),
        })?;
        match self.blob_size(&digest)? {
            Some(actual) if actual as i64 == size => Ok(Some((digest, actual))),
            _ => Ok(None),
        }
    }

    /// All layer variants: (diff_id, compression, blob digest, size). Rows that do not parse are
    /// returned with `Err` text so fsck can report them.
    pub(crate) fn layer_variant_rows(&self) -> Result<Vec<(String, String, String, i64)>> {
        self.db(|c| {
            let mut stmt =
                c.prepare("SELECT diff_id, compression, digest, size FROM layer_variants")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub(crate) fn remove_layer_variant_row(&self, diff_id: &str, compression: &str) -> Result<()> {
        self.db(|c| {
            c.execute(
                "DELETE FROM layer_variants WHERE diff_id = ?1 AND compression = ?2",
                params![diff_id, compression],
            )
        })?;
        Ok(())
    }

    /// Store a build-cache record: `value` is the solver's JSON. Convention: digests of blobs the
    /// record needs appear as strings in it (ideally in a top-level `"blobs"` array); prune keeps
    /// every stored blob whose digest appears in a kept record.
    pub fn put_cache_record(&self, key: &Digest, value: &str) -> Result<()> {
        let now = crate::db::now_ns();
        let write = || {
            self.db(|c| {
                c.execute(
                    "INSERT INTO cache_records (key, value, created_ns, last_used_ns)
                     VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT(key) DO UPDATE SET value=excluded.value, last_used_ns=excluded.last_used_ns",
                    params![key.to_string(), value, now],
                )
            })
        };
        // Replacing a record (`--no-cache` re-ran the step) changes what a rebuild would produce.
        let old: Option<String> = self.db(|c| {
            c.prepare_cached("SELECT value FROM cache_records WHERE key = ?1")?
                .query_row([key.to_string()], |r| r.get(0))
                .optional()
        })?;
        if old.is_some_and(|o| o != value) {
            self.changing(write)?;
        } else {
            write()?;
        }
        Ok(())
    }

    /// The record for `key` (and mark it used now: written with the other uses of this process
    /// by [`Store::flush_record_uses`] or when the store is dropped).
    pub fn get_cache_record(&self, key: &Digest) -> Result<Option<String>> {
        let k = key.to_string();
        let v: Option<String> = self.db(|c| {
            c.prepare_cached("SELECT value FROM cache_records WHERE key = ?1")?
                .query_row([&k], |r| r.get(0))
                .optional()
        })?;
        if v.is_some() {
            self.inner
                .used_records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((k, crate::db::now_ns()));
        }
        Ok(v)
    }

    /// The cache-record uses not written yet, taken (the caller writes them).
    pub(crate) fn take_record_uses(&self) -> Vec<(String, i64)> {
        std::mem::take(
            &mut *self
                .inner
                .used_records
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Count `(key, time)` as uses of those cache records (answers given from elsewhere, such as
    /// the no-op front's, that prune must see), and write every use noted so far.
    pub fn note_cache_uses(&self, uses: impl IntoIterator<Item = (String, i64)>) -> Result<()> {
        self.inner
            .used_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(uses);
        self.flush_record_uses()
    }

    /// Write the cache-record uses noted so far.
    pub fn flush_record_uses(&self) -> Result<()> {
        let used = self.take_record_uses();
        self.db(|c| {
            let tx = c.transaction()?;
            write_record_uses(&tx, &used)?;
            tx.commit()
        })
    }

    /// All cache records, sorted by key.
    pub fn cache_records(&self) -> Result<Vec<(Digest, String)>> {
        let rows: Vec<(String, String)> = self.db(|c| {
            let mut stmt = c.prepare("SELECT key, value FROM cache_records ORDER BY key")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(k, v)| {
                let d = k.parse().map_err(|e| StoreError::CorruptRecord {
                    table: "cache_records",
                    key: k.clone(),
                    path: self.db_path().to_path_buf(),
                    reason: format!("{e}"),
                })?;
                Ok((d, v))
            })
            .collect()
    }

    /// Remove a cache record; `false` if there was none.
    pub fn remove_cache_record(&self, key: &Digest) -> Result<bool> {
        let n = self.changing(|| {
            self.db(|c| {
                c.execute(
                    "DELETE FROM cache_records WHERE key = ?1",
                    [key.to_string()],
                )
            })
        })?;
        Ok(n > 0)
    }

    /// Raw cache record rows (key text, value), for gc and fsck.
    pub(crate) fn cache_record_rows(&self) -> Result<Vec<(String, String)>> {
        self.db(|c| {
            let mut stmt = c.prepare("SELECT key, value FROM cache_records")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// key -> last_used_ns of every cache record.
    pub(crate) fn cache_record_last_used(&self) -> Result<std::collections::HashMap<String, i64>> {
        let rows: std::collections::HashMap<String, i64> = self.db(|c| {
            let mut stmt = c.prepare("SELECT key, last_used_ns FROM cache_records")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })?;
        Ok(rows)
    }

    pub(crate) fn remove_cache_record_row(&self, key: &str) -> Result<()> {
        self.db(|c| c.execute("DELETE FROM cache_records WHERE key = ?1", [key]))?;
        Ok(())
    }
}

/// `UPDATE last_used_ns` for each `(key, time)`; callers wrap it in a transaction.
pub(crate) fn write_record_uses(
    conn: &rusqlite::Connection,
    used: &[(String, i64)],
) -> rusqlite::Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE cache_records SET last_used_ns = max(last_used_ns, ?2) WHERE key = ?1",
    )?;
    for (k, t) in used {
        stmt.execute(params![k, t])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_variants_need_their_blob() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let diff = Digest::sha256_of(b"layer");
        let gz = s.put_blob(b"compressed").unwrap();
        s.put_layer_variant(&diff, Compression::Gzip, &gz, 10)
            .unwrap();
        assert_eq!(
            s.get_layer_variant(&diff, Compression::Gzip).unwrap(),
            Some((gz.clone(), 10))
        );
        assert_eq!(s.get_layer_variant(&diff, Compression::Zstd).unwrap(), None);
        // Missing blob: no variant.
        let other = Digest::sha256_of(b"nothing");
        s.put_layer_variant(&diff, Compression::Zstd, &other, 3)
            .unwrap();
        assert_eq!(s.get_layer_variant(&diff, Compression::Zstd).unwrap(), None);
    }

    #[test]
    fn cache_records_roundtrip() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let k = Digest::sha256_of(b"key");
        assert_eq!(s.get_cache_record(&k).unwrap(), None);
        s.put_cache_record(&k, r#"{"a":1}"#).unwrap();
        assert_eq!(
            s.get_cache_record(&k).unwrap().as_deref(),
            Some(r#"{"a":1}"#)
        );
        s.put_cache_record(&k, r#"{"a":2}"#).unwrap();
        assert_eq!(
            s.cache_records().unwrap(),
            vec![(k.clone(), r#"{"a":2}"#.to_string())]
        );
        assert!(s.remove_cache_record(&k).unwrap());
        assert!(!s.remove_cache_record(&k).unwrap());
    }

    #[test]
    fn record_uses_are_written_on_flush_lease_release_and_drop() {
        let t = tempfile::tempdir().unwrap();
        let used = |s: &Store, k: &Digest| s.cache_record_last_used().unwrap()[&k.to_string()];
        let k = Digest::sha256_of(b"key");
        let s = Store::open(t.path()).unwrap();
        s.put_cache_record(&k, "{}").unwrap();
        let t0 = used(&s, &k);
        // Read, flushed explicitly.
        s.get_cache_record(&k).unwrap();
        assert_eq!(used(&s, &k), t0, "a read alone writes nothing yet");
        s.flush_record_uses().unwrap();
        let t1 = used(&s, &k);
        assert!(t1 > t0);
        // Read under a lease: written when the lease is released.
        let lease = s.lease("build").unwrap();
        s.get_cache_record(&k).unwrap();
        lease.release().unwrap();
        let t2 = used(&s, &k);
        assert!(t2 > t1);
        // Read, then the store is dropped: written on drop.
        s.get_cache_record(&k).unwrap();
        drop(s);
        let s = Store::open(t.path()).unwrap();
        assert!(used(&s, &k) > t2);
    }
}
