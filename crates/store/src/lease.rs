//! Leases: what a running build holds, so that prune leaves it alone.
//!
//! A lease is a row in `leases` plus a lock file `locks/lease-<id>.lock` that the owning process
//! keeps `flock`ed. A lease whose lock file can be locked by someone else belongs to a process
//! that has died (the kernel drops flocks with the process): prune deletes such leases.

use crate::error::{Result, StoreError};
use crate::Store;
use nix::fcntl::{Flock, FlockArg};
use rbuild_oci::Digest;
use rusqlite::params;
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

static LEASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Resource kind for blobs.
pub const KIND_BLOB: &str = "blob";
/// Resource kind for build-cache records (name = cache key digest).
pub const KIND_CACHE: &str = "cache";
/// Resource kind for snapshots (name = snapshot name; consulted by the snapshotter's GC).
pub const KIND_SNAPSHOT: &str = "snapshot";

/// A held lease; released (row and lock file removed) when dropped.
pub struct Lease {
    store: Store,
    id: String,
    lock_path: PathBuf,
    lock: Option<Flock<File>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).finish()
    }
}

/// What live leases hold, by kind.
#[derive(Debug, Default, Clone)]
pub(crate) struct Held {
    pub by_kind: HashMap<String, BTreeSet<String>>,
    /// Creation time (ns) of the oldest live lease.
    pub oldest_ns: Option<i64>,
    /// Leases of dead processes that were removed.
    pub expired: usize,
}

impl Held {
    pub fn contains(&self, kind: &str, name: &str) -> bool {
        self.by_kind.get(kind).is_some_and(|s| s.contains(name))
    }
}

fn sanitize_hint(hint: &str) -> String {
    let s: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        "lease".to_string()
    } else {
        s
    }
}

impl Store {
    /// Take a new lease. `id_hint` (e.g. "build") becomes part of its id.
    pub fn lease(&self, id_hint: &str) -> Result<Lease> {
        let id = format!(
            "{}-{}-{}-{}",
            sanitize_hint(id_hint),
            std::process::id(),
            crate::db::now_ns(),
            LEASE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let lock_path = self.lock_path(&format!("lease-{id}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io_err("create lease lock file", &lock_path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            self.io_err("lock lease lock file", &lock_path, io::Error::from(errno))
        })?;
        let pid = i64::from(std::process::id());
        self.db(|c| {
            c.execute(
                "INSERT INTO leases (id, pid, created_ns) VALUES (?1, ?2, ?3)",
                params![id, pid, crate::db::now_ns()],
            )
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&lock_path);
        })?;
        Ok(Lease {
            store: self.clone(),
            id,
            lock_path,
            lock: Some(lock),
        })
    }

    /// What live leases hold; leases of dead processes are deleted on the way.
    pub(crate) fn held_by_leases(&self) -> Result<Held> {
        let leases: Vec<(String, i64)> = self.db(|c| {
            let mut stmt = c.prepare("SELECT id, created_ns FROM leases")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let mut held = Held::default();
        for (id, created) in leases {
            if self.lease_is_live(&id)? {
                held.oldest_ns = Some(held.oldest_ns.map_or(created, |o: i64| o.min(created)));
                let res: Vec<(String, String)> = self.db(|c| {
                    let mut stmt =
                        c.prepare("SELECT kind, name FROM lease_resources WHERE lease = ?1")?;
                    let rows = stmt
                        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok(rows)
                })?;
                for (kind, name) in res {
                    held.by_kind.entry(kind).or_default().insert(name);
                }
            } else {
                self.db(|c| c.execute("DELETE FROM leases WHERE id = ?1", [&id]))?;
                let _ = std::fs::remove_file(self.lock_path(&format!("lease-{id}")));
                held.expired += 1;
            }
        }
        Ok(held)
    }

    /// Names of the resources of `kind` that live leases hold (e.g. [`KIND_SNAPSHOT`] for the
    /// snapshotter's garbage collection).
    pub fn leased_resources(&self, kind: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .held_by_leases()?
            .by_kind
            .remove(kind)
            .unwrap_or_default())
    }

    /// When the oldest live lease began (`None`: no build or load is running). Anything a running
    /// build made is younger than this; maintenance uses it to leave such things alone.
    pub fn oldest_live_lease(&self) -> Result<Option<std::time::SystemTime>> {
        Ok(self
            .held_by_leases()?
            .oldest_ns
            .map(|ns| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64)))
    }

    fn lease_is_live(&self, id: &str) -> Result<bool> {
        let path = self.lock_path(&format!("lease-{id}"));
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_err("open lease lock file", &path, e)),
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // We got the lock: its owner is gone. Dropping the Flock unlocks it again.
            Ok(_lock) => Ok(false),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
            Err((_, errno)) => {
                Err(self.io_err("test lease lock file", &path, io::Error::from(errno)))
            }
        }
    }
}

impl Lease {
    /// The lease id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Hold a blob.
    pub fn add_blob(&self, d: &Digest) -> Result<()> {
        self.add_resource(KIND_BLOB, &d.to_string())
    }

    /// Hold a resource of `kind` (`blob`, `cache`, `snapshot`, or another crate's own kind).
    pub fn add_resource(&self, kind: &str, name: &str) -> Result<()> {
        if kind.is_empty()
            || !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(StoreError::InvalidLeaseKind {
                kind: kind.to_string(),
            });
        }
        self.store.db(|c| {
            c.execute(
                "INSERT OR IGNORE INTO lease_resources (lease, kind, name) VALUES (?1, ?2, ?3)",
                params![self.id, kind, name],
            )
        })?;
        Ok(())
    }

    /// Release explicitly (also done on drop), reporting errors.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        // The cache records this build used are marked in the same transaction.
        let used = self.store.take_record_uses();
        let res = self.store.db(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM leases WHERE id = ?1", [&self.id])?;
            crate::records::write_record_uses(&tx, &used)?;
            tx.commit()
        });
        // Remove the file while still holding the lock, then unlock.
        let _ = std::fs::remove_file(&self.lock_path);
        self.lock = None;
        res.map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lifecycle() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let l = s.lease("build 1/2").unwrap();
        assert!(l.id().starts_with("build_1_2-"));
        l.add_resource(KIND_SNAPSHOT, "abc").unwrap();
        l.add_resource(KIND_SNAPSHOT, "abc").unwrap();
        assert!(l.add_resource("Bad Kind", "x").is_err());
        assert_eq!(
            s.leased_resources(KIND_SNAPSHOT)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["abc".to_string()]
        );
        drop(l);
        assert!(s.leased_resources(KIND_SNAPSHOT).unwrap().is_empty());
        let n: i64 = s
            .db(|c| c.query_row("SELECT count(*) FROM lease_resources", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn dead_process_lease_expires() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        // Simulate a crashed process: a lease row whose lock file nobody holds.
        s.db(|c| {
            c.execute(
                "INSERT INTO leases (id, pid, created_ns) VALUES ('dead-1', 999999, 1)",
                [],
            )?;
            c.execute(
                "INSERT INTO lease_resources (lease, kind, name) VALUES ('dead-1', 'blob', 'x')",
                [],
            )
        })
        .unwrap();
        std::fs::write(s.lock_path("lease-dead-1"), b"").unwrap();
        let live = s.lease("live").unwrap();
        live.add_blob(&Digest::sha256_of(b"y")).unwrap();
        let held = s.held_by_leases().unwrap();
        assert_eq!(held.expired, 1);
        assert!(!held.contains(KIND_BLOB, "x"));
        assert!(held.contains(KIND_BLOB, &Digest::sha256_of(b"y").to_string()));
        assert!(!s.lock_path("lease-dead-1").exists());
    }
}
