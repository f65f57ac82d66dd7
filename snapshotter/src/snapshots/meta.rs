//! Snapshot metadata in `<root>/meta.db` (SQLite, WAL): one row per snapshot.
//!
//! Active and view snapshots are rows named by their key; commit renames the row to the committed
//! name in one transaction, so keys and names share one namespace (as in containerd). Every change
//! runs in a `BEGIN IMMEDIATE` transaction, which serialises writers across rbuild processes.

use super::{Info, Kind, SnapshotError};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) parent: Option<i64>,
    pub(crate) kind: Kind,
    pub(crate) created: i64,
}

pub(crate) fn open(path: &Path) -> Result<Connection, SnapshotError> {
    let db = |source| SnapshotError::Db {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(db)?;
    conn.busy_timeout(Duration::from_secs(60)).map_err(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
    // As the store's database: keep the log between the short rbuild processes instead of
    // checkpointing and deleting it at every exit (rbuild-store's db.rs says why).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(db)?;
    // The schema exists once user_version says so: one tiny statement on every later open
    // instead of parsing the CREATE batch.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version >= SCHEMA_VERSION {
        return Ok(conn);
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS snapshots (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            name    TEXT NOT NULL UNIQUE,
            parent  INTEGER REFERENCES snapshots(id),
            kind    TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
            created INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);",
    )
    .map_err(db)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db)?;
    Ok(conn)
}

/// `PRAGMA user_version` once the schema above exists.
const SCHEMA_VERSION: i64 = 1;

pub(crate) fn immediate(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let kind: String = r.get(3)?;
    Ok(Row {
        id: r.get(0)?,
        name: r.get(1)?,
        parent: r.get(2)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Active),
        created: r.get(4)?,
    })
}

const COLS: &str = "id, name, parent, kind, created";

pub(crate) fn by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        &format!("SELECT {COLS} FROM snapshots WHERE name = ?1"),
        params![name],
        row,
    )
    .optional()
}

pub(crate) fn by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        &format!("SELECT {COLS} FROM snapshots WHERE id = ?1"),
        params![id],
        row,
    )
    .optional()
}

pub(crate) fn all(conn: &Connection) -> rusqlite::Result<Vec<Row>> {
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM snapshots ORDER BY id"))?;
    let rows = st.query_map([], row)?;
    rows.collect()
}

pub(crate) fn children(conn: &Connection, id: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM snapshots WHERE parent = ?1",
        params![id],
        |r| r.get(0),
    )
}

pub(crate) fn insert(
    conn: &Connection,
    name: &str,
    parent: Option<i64>,
    kind: Kind,
    created: i64,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO snapshots (name, parent, kind, created) VALUES (?1, ?2, ?3, ?4)",
        params![name, parent, kind.as_str(), created],
    )?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn rename_committed(conn: &Connection, id: i64, name: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE snapshots SET name = ?1, kind = 'committed' WHERE id = ?2",
        params![name, id],
    )?;
    Ok(())
}

pub(crate) fn delete(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM snapshots WHERE id = ?1", params![id])?;
    Ok(())
}

/// The ids of `id`'s committed ancestors, nearest first.
pub(crate) fn chain(conn: &Connection, mut parent: Option<i64>) -> rusqlite::Result<Vec<i64>> {
    let mut out = Vec::new();
    while let Some(p) = parent {
        if out.contains(&p) {
            break; // cannot happen through this API; never loop on a corrupt db
        }
        out.push(p);
        parent = by_id(conn, p)?.and_then(|r| r.parent);
    }
    Ok(out)
}

pub(crate) fn info(conn: &Connection, r: &Row) -> rusqlite::Result<Info> {
    let parent = match r.parent {
        Some(p) => by_id(conn, p)?.map(|p| p.name),
        None => None,
    };
    Ok(Info {
        name: r.name.clone(),
        parent,
        kind: r.kind,
        created: r.created,
        id: r.id,
    })
}
