//! The metadata database (`meta.db`): SQLite in WAL mode, shared by every rbuild process that uses
//! the store. Schema changes are numbered migrations recorded in `PRAGMA user_version`.

use crate::error::{Result, StoreError};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// How long a writer waits for another process's write transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The write-ahead log is checkpointed into `meta.db` when it reaches this many pages, and only
/// then: a closing connection does not checkpoint (see [`open`]), so the log persists between
/// processes and the next opener re-reads it. Small, so that re-read stays a fraction of a
/// millisecond; a no-op build appends about ten pages.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 128;

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE images (
        name TEXT PRIMARY KEY,
        manifest TEXT NOT NULL,
        config TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        created TEXT,
        updated_ns INTEGER NOT NULL
     );
     CREATE INDEX images_config ON images(config);
     CREATE TABLE layer_variants (
        diff_id TEXT NOT NULL,
        compression TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (diff_id, compression)
     ) WITHOUT ROWID;
     CREATE TABLE cache_records (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        last_used_ns INTEGER NOT NULL
     );
     CREATE TABLE checksums (
        path BLOB PRIMARY KEY,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        digest TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        created_ns INTEGER NOT NULL
     );
     CREATE TABLE lease_resources (
        lease TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (lease, kind, name)
     ) WITHOUT ROWID;",
    // 1 -> 2: one row per context selection (a COPY's sources out of one context directory):
    // the fingerprint of all its files' stats, and the checksum and listing computed for them.
    "CREATE TABLE context_fingerprints (
        selection TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        checksum TEXT NOT NULL,
        files TEXT,
        used_ns INTEGER NOT NULL
     ) WITHOUT ROWID;",
];

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Open (creating if needed) and migrate the database at `path`.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    let err = |source| StoreError::Db {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    // journal_mode returns the resulting mode as a row.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn_not_wal(path, &mode);
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    // Every rbuild command is a short process. By default the last one to close the database
    // checkpoints the log into it (two fsyncs) and deletes it, and the next one re-creates it
    // (two more): about 3 ms of a 10 ms no-op build. Keep the log instead; it is checkpointed
    // when it grows past WAL_AUTOCHECKPOINT_PAGES, and a crash loses nothing either way (WAL
    // recovery replays committed frames on the next open). A log left beside a database that
    // was deleted is discarded by SQLite itself when it finds the database empty.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(err)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(err)?;
    migrate(conn, path)
}

fn warn_not_wal(path: &Path, mode: &str) {
    // No logging dependency in this crate; WAL can be refused on some filesystems (e.g. network
    // ones). The store still works, with readers blocking writers.
    eprintln!(
        "warning: {} could not switch to WAL mode (journal_mode={mode})",
        path.display()
    );
}

fn migrate(mut conn: Connection, path: &Path) -> Result<Connection> {
    let err = |source| StoreError::Db {
        path: path.to_path_buf(),
        source,
    };
    // The common case, an up-to-date store, needs no write lock.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version == SCHEMA_VERSION {
        return Ok(conn);
    }
    loop {
        // Check and bump the version inside one IMMEDIATE transaction so two processes opening a
        // fresh store at once do not both run a migration.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            tx.commit().map_err(err)?;
            return Ok(conn);
        }
        tx.execute_batch(MIGRATIONS[version as usize])
            .map_err(err)?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
}

/// `PRAGMA quick_check`: `Ok(None)` when the database is sound, `Ok(Some(problem))` otherwise.
pub(crate) fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(None)
    } else {
        Ok(Some(rows.join("; ")))
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}
