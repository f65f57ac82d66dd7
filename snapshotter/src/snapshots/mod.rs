//! The snapshotter: directories of layers on disk, their metadata, and the mount specs that stack them.
//!
//! # States and moves (containerd's vocabulary)
//!
//! A snapshot is in one of three states ([`Kind`]):
//! - **active**: writable, made by [`Snapshotter::prepare`] on top of a committed `parent` (or of
//!   nothing). It is named by its **key**. Its `fs` dir is the overlay upper: after the step it holds
//!   exactly the changeset.
//! - **view**: read-only, made by [`Snapshotter::view`] on a committed `parent`, named by its key.
//! - **committed**: immutable, made by [`Snapshotter::commit`] from an active snapshot, named by its
//!   **name**; only committed snapshots can be parents.
//!
//! Keys and names share one namespace. Legal moves: `prepare(key, parent?)` → active;
//! `view(key, parent)` → view; `commit(name, key)`: active → committed; `remove(key|name)` for any
//! state without children. Nothing here mounts or reads a tar: methods return [`MountSpec`]s for
//! [`crate::mount`], and the diff module is given plain directories ([`Snapshotter::upper_dir`]).
//!
//! # On disk
//!
//! `<root>/meta.db` (SQLite, WAL) and `<root>/<id>/{fs,work,lock}` with short numeric ids. A chain
//! may be as deep as overlay stacks (500 lowers; Docker caps images at 125 layers): options longer
//! than the page `mount(2)` takes are mounted by [`crate::mount`] with one `lowerdir+` per layer or
//! relative paths. [`Snapshotter::prepare`] refuses a deeper chain with
//! [`SnapshotError::ChainTooDeep`] rather than fail at mount.
//!
//! # Drivers
//!
//! [`Driver::Overlay`] (the default) is what the above describes. [`Driver::Native`] (containerd's
//! and buildah's name) serves hosts where overlay cannot be mounted: an active snapshot's `fs` is a
//! full copy of its parent's `fs` (made by `prepare`, outside the metadata transaction), mounted by a
//! bind; a view binds the parent's `fs` read-only; a committed `fs` is a whole root file system, so
//! its [`Snapshotter::layer_chain`] is that one dir. A layer applied into an active snapshot goes to
//! its `upper` dir, in overlay format like everywhere else, and `commit` folds it into `fs`; a layer
//! written from a snapshot compares `fs` with the parent's ([`Snapshotter::changes`]). Each driver
//! keeps its own root ([`Driver::dir_name`]): the layouts never mix.
//!
//! A process that creates an active or view snapshot holds an `flock` on its `lock` file until it
//! commits or removes it (or exits); [`Snapshotter::cleanup_stale`] removes only snapshots whose lock
//! is free, so a live owner's snapshot is never removed.

mod meta;
mod native;

use crate::MountSpec;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::Connection;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// How snapshots are stored: overlay layer dirs, or full copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    Overlay,
    Native,
}

impl Driver {
    /// The name users select it by (`--snapshotter`, `RBUILD_SNAPSHOTTER`).
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Overlay => "overlayfs",
            Driver::Native => "native",
        }
    }

    /// `overlayfs` (or `overlay`) or `native`.
    pub fn parse(s: &str) -> Option<Driver> {
        match s {
            "overlayfs" | "overlay" => Some(Driver::Overlay),
            "native" => Some(Driver::Native),
            _ => None,
        }
    }

    /// The directory of a store root that holds this driver's snapshots.
    pub fn dir_name(self) -> &'static str {
        match self {
            Driver::Overlay => "snapshots",
            Driver::Native => "snapshots-native",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the layer of an active snapshot is written from ([`Snapshotter::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Overlay: the upper dir is the changeset; `lowers` are the parent chain's layer dirs,
    /// nearest first (to trim copy-up noise against).
    Upper {
        upper: PathBuf,
        lowers: Vec<PathBuf>,
    },
    /// Native: the whole tree, to compare with the parent's tree (none: everything is new).
    Tree {
        tree: PathBuf,
        parent: Option<PathBuf>,
    },
}

/// The state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "active" => Some(Kind::Active),
            "view" => Some(Kind::View),
            "committed" => Some(Kind::Committed),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Snapshotter::stat`] and [`Snapshotter::list`] tell about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (active, view) or name (committed).
    pub name: String,
    /// The committed parent's name.
    pub parent: Option<String>,
    pub kind: Kind,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The numeric id naming its directory.
    pub id: i64,
}

/// What [`Snapshotter::cleanup_stale`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Keys of active/view snapshots whose owner process is gone.
    pub removed: Vec<String>,
    /// Directories with no metadata row (left by a crash mid-prepare or mid-remove).
    pub orphan_dirs: u64,
}

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {key:?} not found")]
    NotFound { key: String },
    #[error("snapshot {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("snapshot {key:?} is {actual}, expected {expected}")]
    WrongKind {
        key: String,
        actual: Kind,
        expected: &'static str,
    },
    #[error("snapshot {key:?} has {children} child snapshot(s); remove them first")]
    HasChildren { key: String, children: i64 },
    #[error("invalid snapshot key {key:?}: {why}")]
    InvalidKey { key: String, why: &'static str },
    #[error("snapshot root {path}: {why}")]
    InvalidRoot { path: PathBuf, why: &'static str },
    #[error(
        "parent chain of {key:?} has {depth} layers; overlayfs stacks at most {max}: use a base \
         image with fewer layers, or merge RUN/COPY steps (each makes a layer)"
    )]
    ChainTooDeep {
        key: String,
        depth: usize,
        max: usize,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot metadata {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// The most lower dirs one overlay stacks (the kernel's `OVL_MAX_STACK`).
pub const MAX_LOWERS: usize = 500;
const MAX_KEY_LEN: usize = 1024;

/// Snapshots under one root. Cheap to share between threads (`&Snapshotter` is `Sync`).
pub struct Snapshotter {
    root: PathBuf,
    db_path: PathBuf,
    /// Opened on first use: a fully cached build never reads the snapshot table, and skips a
    /// second database's open, schema parse and close.
    db: OnceLock<Mutex<Connection>>,
    /// [`Snapshotter::cleanup_stale_on_first_use`] was asked for and has not run yet.
    cleanup_pending: AtomicBool,
    /// Locks held on the active/view snapshots this instance created, by id.
    locks: Mutex<HashMap<i64, Flock<File>>>,
    /// Whether overlay knows `redirect_dir=` and `metacopy=` (kernel ≥ 4.19).
    overlay_knobs: bool,
    driver: Driver,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Snapshotter {
    /// Open (creating if needed) the overlay snapshot store at `root` (`$RBUILD_ROOT/snapshots`).
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        Self::open_with(root, Driver::Overlay)
    }

    /// Open (creating if needed) the snapshot store of `driver` at `root`
    /// (`$RBUILD_ROOT/<driver.dir_name()>`).
    pub fn open_with(root: &Path, driver: Driver) -> Result<Self, SnapshotError> {
        let bad = |why| SnapshotError::InvalidRoot {
            path: root.to_path_buf(),
            why,
        };
        if !root.is_absolute() {
            return Err(bad("must be an absolute path"));
        }
        let s = root.to_str().ok_or_else(|| bad("must be UTF-8"))?;
        if s.contains([':', ',', '\n', '\\']) {
            return Err(bad(
                "must not contain ':', ',', '\\' or a newline (overlay option separators)",
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|source| SnapshotError::Io {
                op: "create snapshot root",
                path: root.to_path_buf(),
                source,
            })?;
        let db_path = root.join("meta.db");
        Ok(Snapshotter {
            root: root.to_path_buf(),
            db_path,
            db: OnceLock::new(),
            cleanup_pending: AtomicBool::new(false),
            locks: Mutex::new(HashMap::new()),
            overlay_knobs: Path::new("/sys/module/overlay/parameters/redirect_dir").exists(),
            driver,
        })
    }

    /// The metadata database, opened (and created) on first use.
    fn conn(&self) -> Result<MutexGuard<'_, Connection>, SnapshotError> {
        if let Some(m) = self.db.get() {
            return Ok(lock(m));
        }
        let opened = meta::open(&self.db_path)?;
        // Two threads may open at once; one connection wins, the other is dropped.
        let _ = self.db.set(Mutex::new(opened));
        if self.cleanup_pending.swap(false, Ordering::SeqCst) {
            // Best effort, as at a build's start before: a failure leaves stale snapshots for
            // the next build or `rbuild prune`.
            let _ = self.cleanup_stale();
        }
        let m = self.db.get().ok_or_else(|| SnapshotError::Io {
            op: "open snapshot metadata",
            path: self.db_path.clone(),
            source: io::Error::other("not initialised"),
        })?;
        Ok(lock(m))
    }

    /// Run [`Snapshotter::cleanup_stale`] when the database is first needed rather than now: a
    /// build that reuses every step never opens it, and leaves stale snapshots (of crashed
    /// builds) to the next build that runs something, or to `rbuild prune`.
    pub fn cleanup_stale_on_first_use(&self) {
        self.cleanup_pending.store(true, Ordering::SeqCst);
    }

    /// How this store keeps snapshots.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    fn dir(&self, id: i64) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn fs_dir(&self, id: i64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// Create an active snapshot `key` on top of committed `parent` (or of nothing), and return the
    /// mounts of its root file system.
    pub fn prepare(
        &self,
        key: &str,
        parent: Option<&str>,
    ) -> Result<Vec<MountSpec>, SnapshotError> {
        self.create(key, parent, Kind::Active)
    }

    /// Create a read-only view `key` of committed `parent`, and return its mounts.
    pub fn view(&self, key: &str, parent: &str) -> Result<Vec<MountSpec>, SnapshotError> {
        self.create(key, Some(parent), Kind::View)
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<MountSpec>, SnapshotError> {
        validate_key(key)?;
        let mut conn = self.conn()?;
        let tx = meta::immediate(&mut conn).map_err(self.db_err())?;
        let parent_row = match parent {
            Some(p) => {
                let r = meta::by_name(&tx, p)
                    .map_err(self.db_err())?
                    .ok_or_else(|| SnapshotError::NotFound { key: p.to_string() })?;
                if r.kind != Kind::Committed {
                    return Err(SnapshotError::WrongKind {
                        key: p.to_string(),
                        actual: r.kind,
                        expected: "committed (only committed snapshots can be parents)",
                    });
                }
                Some(r)
            }
            None => None,
        };
        if meta::by_name(&tx, key).map_err(self.db_err())?.is_some() {
            return Err(SnapshotError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let id = meta::insert(&tx, key, parent_row.as_ref().map(|r| r.id), kind, now())
            .map_err(self.db_err())?;
        let chain = meta::chain(&tx, parent_row.as_ref().map(|r| r.id)).map_err(self.db_err())?;
        let specs = self.specs(key, id, kind, &chain)?;
        let held = self.make_dir(id, kind)?;
        if let Err(e) = tx.commit() {
            drop(held);
            let _ = fs::remove_dir_all(self.dir(id));
            return Err(self.db_err()(e));
        }
        lock(&self.locks).insert(id, held);
        if self.driver == Driver::Native && kind == Kind::Active {
            if let Some(p) = chain.first() {
                // Outside the transaction: a long copy must not hold other processes' writes up.
                let (from, to) = (self.fs_dir(*p), self.fs_dir(id));
                if let Err(source) = native::copy_tree(&from, &to) {
                    let _ = self.remove(key);
                    return Err(SnapshotError::Io {
                        op: "copy the parent snapshot",
                        path: from,
                        source,
                    });
                }
            }
        }
        Ok(specs)
    }

    /// `<root>/<id>/{lock,fs[,work]}`, with the lock held. An orphan dir of the same id (a crash after
    /// mkdir and before the metadata commit) is cleared first: the id is ours inside this transaction.
    fn make_dir(&self, id: i64, kind: Kind) -> Result<Flock<File>, SnapshotError> {
        let dir = self.dir(id);
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { op, path, source }
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io("remove orphan dir", &dir))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("create snapshot dir", &dir))?;
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("create lock file", &lock_path))?;
        let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            SnapshotError::Io {
                op: "lock",
                path: lock_path.clone(),
                source: io::Error::from_raw_os_error(e as i32),
            }
        })?;
        let fs_dir = dir.join("fs");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&fs_dir)
            .map_err(io("create fs dir", &fs_dir))?;
        if kind == Kind::Active {
            let work = dir.join(match self.driver {
                Driver::Overlay => "work",
                Driver::Native => "upper",
            });
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&work)
                .map_err(io("create work dir", &work))?;
        }
        Ok(held)
    }

    fn specs(
        &self,
        key: &str,
        id: i64,
        kind: Kind,
        chain: &[i64],
    ) -> Result<Vec<MountSpec>, SnapshotError> {
        let lowers: Vec<String> = chain
            .iter()
            .map(|p| self.fs_dir(*p).to_string_lossy().into_owned())
            .collect();
        let native = self.driver == Driver::Native;
        let spec = match (kind, lowers.len()) {
            (Kind::Active, n) if n == 0 || native => MountSpec {
                kind: MountSpec::BIND.into(),
                source: self.fs_dir(id),
                options: vec!["bind".into(), "rw".into()],
            },
            (Kind::View, n) if n == 1 || (native && n > 0) => MountSpec {
                kind: MountSpec::BIND.into(),
                source: PathBuf::from(&lowers[0]),
                options: vec!["bind".into(), "ro".into()],
            },
            (Kind::Committed, _) => {
                return Err(SnapshotError::WrongKind {
                    key: key.to_string(),
                    actual: kind,
                    expected: "active or view (committed snapshots are not mounted)",
                })
            }
            (_, 0) => {
                return Err(SnapshotError::InvalidKey {
                    key: key.to_string(),
                    why: "a view needs a parent",
                })
            }
            _ if lowers.len() > MAX_LOWERS => {
                return Err(SnapshotError::ChainTooDeep {
                    key: key.to_string(),
                    depth: lowers.len(),
                    max: MAX_LOWERS,
                })
            }
            _ => {
                let mut options = vec!["index=off".to_string()];
                let rootless = rbuild_oci::host::is_rootless();
                if rootless {
                    // Overlay in a user namespace keeps its bookkeeping in user.overlay.* xattrs
                    // (and then never follows redirects; `redirect_dir=off` is refused with it).
                    options.push("userxattr".into());
                }
                if self.overlay_knobs {
                    if !rootless {
                        options.push("redirect_dir=off".into());
                    }
                    options.push("metacopy=off".into());
                }
                options.push(format!("lowerdir={}", lowers.join(":")));
                if kind == Kind::Active {
                    let dir = self.dir(id);
                    options.push(format!("upperdir={}", dir.join("fs").display()));
                    options.push(format!("workdir={}", dir.join("work").display()));
                } else {
                    options.push("ro".into());
                }
                MountSpec {
                    kind: MountSpec::OVERLAY.into(),
                    source: PathBuf::from("overlay"),
                    options,
                }
            }
        };
        Ok(vec![spec])
    }

    /// The row of `key`, which must be of `kind`.
    fn row_of(&self, conn: &Connection, key: &str, kind: Kind) -> Result<meta::Row, SnapshotError> {
        let row = meta::by_name(conn, key)
            .map_err(self.db_err())?
            .ok_or_else(|| SnapshotError::NotFound {
                key: key.to_string(),
            })?;
        if row.kind != kind {
            return Err(SnapshotError::WrongKind {
                key: key.to_string(),
                actual: row.kind,
                expected: kind.as_str(),
            });
        }
        Ok(row)
    }

    /// The mounts of active or view snapshot `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<MountSpec>, SnapshotError> {
        let conn = self.conn()?;
        let row = meta::by_name(&conn, key)
            .map_err(self.db_err())?
            .ok_or_else(|| SnapshotError::NotFound {
                key: key.to_string(),
            })?;
        let chain = meta::chain(&conn, row.parent).map_err(self.db_err())?;
        self.specs(key, row.id, row.kind, &chain)
    }

    /// The changeset dir of active snapshot `key` (its overlay upper): what the diff module writes a
    /// layer from, or applies a layer into. Unmount the snapshot before reading it.
    pub fn upper_dir(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        let conn = self.conn()?;
        let row = self.row_of(&conn, key, Kind::Active)?;
        Ok(match self.driver {
            Driver::Overlay => self.fs_dir(row.id),
            Driver::Native => self.dir(row.id).join("upper"),
        })
    }

    /// Where the layer of active snapshot `key` is written from, after its mount changed it.
    /// Unmount the snapshot first.
    pub fn changes(&self, key: &str) -> Result<Changes, SnapshotError> {
        let conn = self.conn()?;
        let row = self.row_of(&conn, key, Kind::Active)?;
        let chain = meta::chain(&conn, row.parent).map_err(self.db_err())?;
        Ok(match self.driver {
            Driver::Overlay => Changes::Upper {
                upper: self.fs_dir(row.id),
                lowers: chain.iter().map(|id| self.fs_dir(*id)).collect(),
            },
            Driver::Native => Changes::Tree {
                tree: self.fs_dir(row.id),
                parent: chain.first().map(|id| self.fs_dir(*id)),
            },
        })
    }

    /// The layer dir of committed snapshot `name`: its changeset in overlay format (native: its
    /// whole tree). Read-only by contract: children are stacked on it.
    pub fn layer_dir(&self, name: &str) -> Result<PathBuf, SnapshotError> {
        let conn = self.conn()?;
        let row = self.row_of(&conn, name, Kind::Committed)?;
        Ok(self.fs_dir(row.id))
    }

    /// The layer dirs of committed snapshot `name` and its ancestors, nearest first (the overlay
    /// lowerdir order), e.g. to export a rootfs or compare against. Native: its one whole tree.
    pub fn layer_chain(&self, name: &str) -> Result<Vec<PathBuf>, SnapshotError> {
        let conn = self.conn()?;
        let row = self.row_of(&conn, name, Kind::Committed)?;
        let mut ids = vec![row.id];
        if self.driver == Driver::Overlay {
            ids.extend(meta::chain(&conn, row.parent).map_err(self.db_err())?);
        }
        Ok(ids.into_iter().map(|id| self.fs_dir(id)).collect())
    }

    /// Commit active snapshot `key` as `name`. Atomic: the snapshot is either still active under `key`
    /// or committed under `name`. If `name` is already committed (another process built the same
    /// thing first), ours is dropped and the call succeeds. The snapshot must be unmounted.
    pub fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        validate_key(name)?;
        let mut upper = self.upper_dir(key)?;
        if self.driver == Driver::Native {
            // A layer applied into the snapshot: fold it into the tree.
            let tree = upper.with_file_name("fs");
            native::merge_changeset(&upper, &tree).map_err(|source| SnapshotError::Io {
                op: "fold the applied layer into",
                path: tree.clone(),
                source,
            })?;
            upper = tree;
        }
        // Make the changeset durable before the metadata says it is a layer.
        let f = File::open(&upper).map_err(|source| SnapshotError::Io {
            op: "open for syncfs",
            path: upper.clone(),
            source,
        })?;
        nix::unistd::syncfs(&f).map_err(|e| SnapshotError::Io {
            op: "syncfs",
            path: upper.clone(),
            source: io::Error::from_raw_os_error(e as i32),
        })?;
        let mut conn = self.conn()?;
        let tx = meta::immediate(&mut conn).map_err(self.db_err())?;
        let row = meta::by_name(&tx, key)
            .map_err(self.db_err())?
            .ok_or_else(|| SnapshotError::NotFound {
                key: key.to_string(),
            })?;
        if row.kind != Kind::Active {
            return Err(SnapshotError::WrongKind {
                key: key.to_string(),
                actual: row.kind,
                expected: "active",
            });
        }
        let lost_race = match meta::by_name(&tx, name).map_err(self.db_err())? {
            Some(existing) if existing.kind == Kind::Committed => true,
            Some(_) => {
                return Err(SnapshotError::AlreadyExists {
                    key: name.to_string(),
                })
            }
            None => false,
        };
        if lost_race {
            meta::delete(&tx, row.id).map_err(self.db_err())?;
        } else {
            meta::rename_committed(&tx, row.id, name).map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())?;
        drop(conn);
        let dir = self.dir(row.id);
        if lost_race {
            self.trash(&dir);
        } else {
            // The work (native: upper) dir and the lock are for the active life only.
            let _ = fs::remove_dir_all(dir.join("work"));
            let _ = fs::remove_dir_all(dir.join("upper"));
            let _ = fs::remove_file(dir.join("lock"));
        }
        lock(&self.locks).remove(&row.id);
        Ok(())
    }

    /// Remove a snapshot in any state, by key or name. Refused while it has children.
    pub fn remove(&self, key_or_name: &str) -> Result<(), SnapshotError> {
        let mut conn = self.conn()?;
        let tx = meta::immediate(&mut conn).map_err(self.db_err())?;
        let row = meta::by_name(&tx, key_or_name)
            .map_err(self.db_err())?
            .ok_or_else(|| SnapshotError::NotFound {
                key: key_or_name.to_string(),
            })?;
        let children = meta::children(&tx, row.id).map_err(self.db_err())?;
        if children > 0 {
            return Err(SnapshotError::HasChildren {
                key: key_or_name.to_string(),
                children,
            });
        }
        meta::delete(&tx, row.id).map_err(self.db_err())?;
        tx.commit().map_err(self.db_err())?;
        drop(conn);
        self.trash(&self.dir(row.id));
        lock(&self.locks).remove(&row.id);
        Ok(())
    }

    /// Move `dir` out of the id namespace, then delete it. A crash in between leaves it in `trash/`,
    /// which [`Snapshotter::cleanup_stale`] empties.
    fn trash(&self, dir: &Path) {
        let trash = self.root.join("trash");
        let _ = fs::DirBuilder::new().mode(0o700).create(&trash);
        let unique = format!(
            "{}-{}-{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let to = trash.join(unique);
        match fs::rename(dir, &to) {
            Ok(()) => {
                let _ = fs::remove_dir_all(&to);
            }
            Err(_) => {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }

    /// Metadata of the snapshot named (or keyed) `name`, if any.
    pub fn stat(&self, name: &str) -> Result<Option<Info>, SnapshotError> {
        let conn = self.conn()?;
        match meta::by_name(&conn, name).map_err(self.db_err())? {
            Some(r) => Ok(Some(meta::info(&conn, &r).map_err(self.db_err())?)),
            None => Ok(None),
        }
    }

    /// All snapshots, oldest first.
    pub fn list(&self) -> Result<Vec<Info>, SnapshotError> {
        let conn = self.conn()?;
        let rows = meta::all(&conn).map_err(self.db_err())?;
        rows.iter()
            .map(|r| meta::info(&conn, r).map_err(self.db_err()))
            .collect()
    }

    /// Remove active and view snapshots whose owner process is gone (their lock is free), directories
    /// with no metadata, and leftover trash. A snapshot whose owner is alive — in this process or
    /// another — is never touched.
    pub fn cleanup_stale(&self) -> Result<CleanupReport, SnapshotError> {
        let mut report = CleanupReport::default();
        let mut doomed = Vec::new();
        {
            let mut conn = self.conn()?;
            let tx = meta::immediate(&mut conn).map_err(self.db_err())?;
            let rows = meta::all(&tx).map_err(self.db_err())?;
            let known: std::collections::HashSet<i64> = rows.iter().map(|r| r.id).collect();
            let ours: std::collections::HashSet<i64> = lock(&self.locks).keys().copied().collect();
            for r in rows.iter().filter(|r| r.kind != Kind::Committed) {
                if ours.contains(&r.id) || !self.owner_gone(r.id) {
                    continue;
                }
                if meta::children(&tx, r.id).map_err(self.db_err())? > 0 {
                    continue;
                }
                meta::delete(&tx, r.id).map_err(self.db_err())?;
                report.removed.push(r.name.clone());
                doomed.push(self.dir(r.id));
            }
            // Inside the write transaction no prepare is half done, so an unknown id dir is an orphan.
            let entries = fs::read_dir(&self.root).map_err(|source| SnapshotError::Io {
                op: "read snapshot root",
                path: self.root.clone(),
                source,
            })?;
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(id) = name.to_str().and_then(|n| n.parse::<i64>().ok()) else {
                    continue;
                };
                if !known.contains(&id) {
                    report.orphan_dirs += 1;
                    doomed.push(e.path());
                }
            }
            tx.commit().map_err(self.db_err())?;
        }
        for d in doomed {
            self.trash(&d);
        }
        if let Ok(entries) = fs::read_dir(self.root.join("trash")) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(report)
    }

    /// Whether nobody holds the lock of snapshot `id`.
    fn owner_gone(&self, id: i64) -> bool {
        let path = self.dir(id).join("lock");
        let Ok(file) = File::open(&path) else {
            return true; // no lock file: never fully created
        };
        Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
    }
}

fn validate_key(key: &str) -> Result<(), SnapshotError> {
    let bad = |why| SnapshotError::InvalidKey {
        key: key.chars().take(200).collect(),
        why,
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad("longer than 1024 bytes"));
    }
    if key.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    Ok(())
}
