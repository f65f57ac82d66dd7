//! A snapshot mounted for the length of a step: the one guard the solver mounts through.

use crate::naming::unique;
use crate::seam::Snapshots;
use crate::state::Run;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A temporary snapshot (an active one on top of a parent, or a read-only view) mounted under
/// `<store>/mnt/<key>`. On drop it is unmounted, its mountpoint removed, and the snapshot removed
/// unless it was committed ([`Mounted::committed`]).
pub(crate) struct Mounted {
    snaps: Arc<dyn Snapshots>,
    key: String,
    /// The mountpoint made for it.
    mnt: PathBuf,
    /// Where the filesystem is seen (the mountpoint, unless a fake puts it elsewhere).
    path: PathBuf,
    mounted: bool,
    committed: bool,
}

impl Mounted {
    /// A writable snapshot on `parent` (None: empty), mounted: a step's rootfs.
    pub(crate) fn active(run: &Run, parent: Option<&str>) -> Result<Mounted, String> {
        let key = unique("active");
        let specs = run
            .solver
            .snapshotter
            .prepare(&key, parent)
            .map_err(|e| format!("preparing snapshot: {e}"))?;
        Self::mount(run, key, &specs, "mounting rootfs")
    }

    /// A read-only view of the committed `snapshot`, mounted; scratch (None) is an empty active
    /// snapshot mounted read-only. For bind mounts and copy sources.
    pub(crate) fn view(run: &Run, snapshot: Option<&str>) -> Result<Mounted, String> {
        let snaps = &run.solver.snapshotter;
        let key = unique("view");
        let specs = match snapshot {
            Some(s) => snaps
                .view(&key, s)
                .map_err(|e| format!("view of {s}: {e}"))?,
            None => snaps
                .prepare(&key, None)
                .map_err(|e| format!("empty view: {e}"))?,
        };
        Self::mount(run, key, &specs, "mounting view")
    }

    fn mount(
        run: &Run,
        key: String,
        specs: &[rbuild_snapshotter::MountSpec],
        what: &str,
    ) -> Result<Mounted, String> {
        let mut m = Mounted {
            snaps: run.solver.snapshotter.clone(),
            mnt: run.solver.store.root().join("mnt").join(&key),
            path: PathBuf::new(),
            key,
            mounted: false,
            committed: false,
        };
        std::fs::create_dir_all(&m.mnt)
            .map_err(|e| format!("creating {}: {e}", m.mnt.display()))?;
        m.path = m
            .snaps
            .mount(specs, &m.mnt)
            .map_err(|e| format!("{what}: {e}"))?;
        m.mounted = true;
        Ok(m)
    }

    /// Where the filesystem is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot's key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Unmount now (before diffing or committing), reporting a failure.
    pub(crate) fn unmount(&mut self) -> Result<(), String> {
        if self.mounted {
            self.snaps
                .unmount(&self.mnt)
                .map_err(|e| format!("unmounting rootfs: {e}"))?;
            self.mounted = false;
            let _ = std::fs::remove_dir(&self.mnt);
        }
        Ok(())
    }

    /// The snapshot was committed under a name: dropping must not remove it.
    pub(crate) fn committed(&mut self) {
        self.committed = true;
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount();
        let _ = std::fs::remove_dir(&self.mnt);
        if !self.committed {
            let _ = self.snaps.remove(&self.key);
        }
    }
}
