//! # rbuild-store — content-addressed blobs and the metadata database
//!
//! One [`Store`] is one root directory (`$RBUILD_ROOT`, see [`Store::default_root`]) that several
//! rbuild processes may use at once:
//!
//! ```text
//! blobs/sha256/<hex>   immutable blobs, named by their digest (read-only files)
//! ingest/              temp files of blobs being written (each flock'ed by its writer)
//! meta.db              SQLite (WAL): images, layer variants, cache records, checksums, leases
//! refs/images/         one JSON file per image name: the names survive a lost meta.db
//! locks/               lock files: one per live lease, `gc.lock` serializing prune and fsck
//! ```
//!
//! The surface follows containerd's content store, in three small parts:
//! - **read**: [`Store::has_blob`], [`Store::blob_size`], [`Store::open_blob`], [`Store::read_blob`]
//!   (size-capped and verified);
//! - **ingest**: [`Store::ingest`] gives a [`BlobWriter`]; [`BlobWriter::commit`] takes the expected
//!   digest and size and verifies them itself, then fsyncs and renames: a blob is whole or absent;
//! - **manage**: image names ([`ImageRecord`]), layer compression variants, build-cache records,
//!   the context checksum cache, [`Lease`]s, [`Store::prune`], [`Store::fsck`], [`Store::disk_usage`].
//!
//! Image id = config digest. Names are normalized (`busybox` is `busybox:latest`).
//!
//! What it is not: it does not parse Dockerfiles, build anything, talk to registries or own
//! snapshots (`snapshots/`, `mnt/`, `cache-mounts/` belong to other crates). It parses JSON only to
//! find which blobs a blob references (for prune and fsck), generically: any string in a
//! manifest, index, config or cache record that is a digest of a stored blob keeps that blob.

mod blobs;
mod checksums;
mod crash;
mod db;
mod error;
mod fsck;
mod gc;
mod generation;
mod images;
mod lease;
mod records;
mod refs;

pub use blobs::BlobWriter;
pub use checksums::{ChecksumEntry, ContextFingerprint, FileStat};
pub use crash::crash_point;
pub use error::{Result, StoreError};
pub use fsck::FsckReport;
pub use gc::{DiskUsage, PruneOptions, PruneReport};
pub use generation::GENERATION;
pub use images::{normalize_name, qualified_name, ImageRecord};
pub use lease::{Lease, KIND_BLOB, KIND_CACHE, KIND_SNAPSHOT};

use rusqlite::Connection;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A store at a root directory. Cheap to clone (shared handle); `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    db_path: PathBuf,
    conn: Mutex<Connection>,
    /// Cache records read since the last flush, whose `last_used_ns` is still to be written:
    /// one transaction for all of them ([`Store::flush_record_uses`], and on drop) instead of
    /// one per cache hit.
    used_records: Mutex<Vec<(String, i64)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let used = std::mem::take(
            self.used_records
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()),
        );
        // Best effort: a lost last-used time only makes prune's LRU order a little older.
        if let Ok(tx) = conn.transaction() {
            if records::write_record_uses(&tx, &used).is_ok() {
                let _ = tx.commit();
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .finish()
    }
}

const SUBDIRS: &[&str] = &[
    "blobs",
    "blobs/sha256",
    "ingest",
    "locks",
    "refs",
    "refs/images",
];

impl Store {
    /// Open the store at `root`, creating it (mode 0700) and its database if needed.
    pub fn open(root: &Path) -> Result<Store> {
        Self::create_layout(root)?;
        let db_path = root.join("meta.db");
        let conn = Self::open_db(root, &db_path)?;
        let store = Store {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                db_path,
                conn: Mutex::new(conn),
                used_records: Mutex::new(Vec::new()),
            }),
        };
        // Names stored before they were normalized as docker does get their key (best effort: a
        // read-only store keeps them, and lookups find both forms).
        let _ = store.migrate_image_names();
        Ok(store)
    }

    /// Open `meta.db`, serialized with other processes opening the same store (`locks/open.lock`):
    /// switching a new database to WAL and migrating its schema need the database to themselves,
    /// and SQLite answers a second opener "database is locked" without waiting. A busy answer
    /// from a process closing the database at that moment is retried for a few seconds.
    fn open_db(root: &Path, db_path: &Path) -> Result<rusqlite::Connection> {
        let lock_path = root.join("locks").join("open.lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io("open lock file", &lock_path, root, e))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| {
                StoreError::io("lock", &lock_path, root, std::io::Error::from(errno))
            })?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match db::open(db_path) {
                Err(StoreError::Db {
                    source: rusqlite::Error::SqliteFailure(e, _),
                    ..
                }) if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Like [`Store::open`], but a `meta.db` that cannot be opened is moved aside
    /// (`meta.db.corrupt-<time>`) and a fresh one created; run [`Store::fsck`] with `repair`
    /// afterwards to re-register image names from `refs/`. For `rbuild fsck --repair`.
    pub fn open_for_repair(root: &Path) -> Result<(Store, Option<PathBuf>)> {
        match Self::open(root) {
            Ok(s) => Ok((s, None)),
            Err(StoreError::Db { .. }) => {
                let db_path = root.join("meta.db");
                let aside = fsck::move_db_aside(root, &db_path)?;
                Ok((Self::open(root)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    fn create_layout(root: &Path) -> Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(root)
            .map_err(|e| StoreError::io("create store root", root, root, e))?;
        // An existing root keeps its mode unless it is looser than 0700 for group/other writes.
        let meta = std::fs::metadata(root)
            .map_err(|e| StoreError::io("stat store root", root, root, e))?;
        if meta.permissions().mode() & 0o022 != 0 {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::io("chmod store root", root, root, e))?;
        }
        for sub in SUBDIRS {
            let p = root.join(sub);
            b.create(&p)
                .map_err(|e| StoreError::io("create store directory", &p, root, e))?;
        }
        Ok(())
    }

    /// `$RBUILD_ROOT`, else `/var/lib/rbuild` for root (root inside a user namespace of an
    /// ordinary user, rootless, is not), else `$XDG_DATA_HOME/rbuild` (`~/.local/share/rbuild`).
    /// The variables are read through [`rbuild_inputs`] (a no-op record stands on them).
    pub fn default_root() -> PathBuf {
        if let Some(r) = rbuild_inputs::var_os("RBUILD_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        if nix::unistd::geteuid().is_root() && rbuild_oci::host::in_initial_user_namespace() {
            return PathBuf::from("/var/lib/rbuild");
        }
        if let Some(x) = rbuild_inputs::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("rbuild");
        }
        let home = rbuild_inputs::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".local/share/rbuild")
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The metadata database's file (`meta.db`): a database made anew in its place holds none
    /// of the cache records and images of the old one.
    pub fn database_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// Path of the lock file `locks/<name>.lock` (for other crates' named locks).
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.inner.root.join("locks").join(format!("{name}.lock"))
    }

    /// Hold the named lock `locks/<name>.lock` exclusively (blocking), until the file is dropped.
    ///
    /// Lock files that nobody holds may be deleted at any time by [`Store::remove_unheld_locks`]
    /// (prune), so a lock is only ours once the path still names the very file we locked: if it
    /// was unlinked (or replaced) while we waited, we try again on the new file.
    pub fn lock_named(&self, name: &str) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::MetadataExt;
        let path = self.lock_path(name);
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            let ours = file.metadata()?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok(file),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Delete the lock files `locks/<prefix>*.lock` that no process holds (taken with
    /// [`Store::lock_named`]); returns how many. Each is unlinked while we hold it, so a process
    /// that was waiting for it notices and locks the new file instead.
    pub fn remove_unheld_locks(&self, prefix: &str) -> Result<u64> {
        let dir = self.inner.root.join("locks");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(self.io_err("list locks", &dir, e)),
        };
        let mut removed = 0;
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(prefix) || !name.ends_with(".lock") {
                continue;
            }
            let path = entry.path();
            let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => {
                    if std::fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
                Err(_) => continue, // held (or cannot tell): keep it
            }
        }
        Ok(removed)
    }

    /// Run `f` with the database connection; SQLite errors name the database file.
    pub(crate) fn db<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn();
        f(&mut conn).map_err(|source| self.db_err(source))
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection inconsistent: SQLite rolls
        // back an unfinished transaction when it is dropped.
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn db_err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self.inner.db_path.clone(),
            source,
        }
    }

    pub(crate) fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    pub(crate) fn io_err(&self, op: &'static str, path: &Path, e: std::io::Error) -> StoreError {
        StoreError::io(op, path, &self.inner.root, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_kept_between_opens_but_never_replayed_into_a_new_database() {
        let t = tempfile::tempdir().unwrap();
        let k = rbuild_oci::Digest::sha256_of(b"k");
        let s = Store::open(t.path()).unwrap();
        s.put_cache_record(&k, "{}").unwrap();
        drop(s);
        // Closing did not checkpoint: the log holds the record and survives the process.
        assert!(t.path().join("meta.db-wal").exists());
        let s = Store::open(t.path()).unwrap();
        assert!(s.get_cache_record(&k).unwrap().is_some());
        drop(s);
        // meta.db alone deleted: the old log must not leak into the new database.
        std::fs::remove_file(t.path().join("meta.db")).unwrap();
        let s = Store::open(t.path()).unwrap();
        assert_eq!(s.get_cache_record(&k).unwrap(), None);
        assert_eq!(db::quick_check(&s.conn()).unwrap(), None);
    }

    #[test]
    fn open_creates_layout_0700() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        let s = Store::open(&root).unwrap();
        assert_eq!(s.root(), root);
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for sub in SUBDIRS {
            assert!(root.join(sub).is_dir(), "{sub}");
        }
        assert!(root.join("meta.db").is_file());
        drop(s);
        // Reopen: migrations are idempotent.
        Store::open(&root).unwrap();
    }

    #[test]
    fn store_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }
}
