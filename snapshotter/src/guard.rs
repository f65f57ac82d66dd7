//! A snapshot mounted for as long as a value lives: the RAII guard the engine mounts through
//! (exports of a build's filesystem, `rbuild run`'s container). The solver keeps a guard of its own
//! over its `Snapshots` seam, so that its tests can fake the snapshotter.
//!
//! Made: a view of a committed snapshot, or an active snapshot on a parent, under a key the caller
//! chooses, mounted at `<mnt_root>/<key>`. Dropped: unmounted, the mountpoint removed, and the
//! snapshot removed — whatever happened in between (an error, a panic unwinding).

use crate::mount::{mount_all, unmount, MountError};
use crate::{SnapshotError, Snapshotter};
use std::path::{Path, PathBuf};

/// Why a snapshot could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("creating {path}: {source}")]
    Mountpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Mount(#[from] MountError),
}

/// A temporary snapshot, mounted (see the module docs).
pub struct MountedSnapshot<'a> {
    snaps: &'a Snapshotter,
    key: String,
    mnt: PathBuf,
    mounted: bool,
}

impl<'a> MountedSnapshot<'a> {
    /// A read-only view of committed snapshot `parent`.
    pub fn view(
        snaps: &'a Snapshotter,
        key: &str,
        parent: &str,
        mnt_root: &Path,
    ) -> Result<MountedSnapshot<'a>, GuardError> {
        let specs = snaps.view(key, parent)?;
        Self::mount(snaps, key, &specs, mnt_root)
    }

    /// A writable snapshot on `parent` (None: empty).
    pub fn active(
        snaps: &'a Snapshotter,
        key: &str,
        parent: Option<&str>,
        mnt_root: &Path,
    ) -> Result<MountedSnapshot<'a>, GuardError> {
        let specs = snaps.prepare(key, parent)?;
        Self::mount(snaps, key, &specs, mnt_root)
    }

    fn mount(
        snaps: &'a Snapshotter,
        key: &str,
        specs: &[crate::MountSpec],
        mnt_root: &Path,
    ) -> Result<MountedSnapshot<'a>, GuardError> {
        // From here on the snapshot exists: dropping the guard removes it, on any error below.
        let mut g = MountedSnapshot {
            snaps,
            key: key.to_string(),
            mnt: mnt_root.join(key),
            mounted: false,
        };
        std::fs::create_dir_all(&g.mnt).map_err(|source| GuardError::Mountpoint {
            path: g.mnt.clone(),
            source,
        })?;
        mount_all(specs, &g.mnt)?;
        g.mounted = true;
        Ok(g)
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The snapshot's key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for MountedSnapshot<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = unmount(&self.mnt);
        }
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = self.snaps.remove(&self.key);
    }
}
