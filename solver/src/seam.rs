//! What the solver needs from the parts it drives, as traits, so a [`crate::Solver`] can run on
//! fakes ([`crate::Solver::with_parts`]; see `solver/tests/`):
//!
//! - [`Snapshots`]: the snapshot moves (containerd's vocabulary, see `rbuild_snapshotter`) and
//!   mounting their filesystems. [`rbuild_snapshotter::Snapshotter`] implements it with real
//!   overlay or bind mounts.
//! - [`Executor`]: running a RUN step's command. [`Sandbox`] runs it in the namespaced sandbox.
//!
//! The content store is not behind a trait: `rbuild_store::Store` is files and SQLite under one
//! directory and runs unprivileged on a temporary one, so tests use the real thing. The mounts of
//! `RUN --mount` (bind staging, read-write scratch overlays) mount directly; they are not part of
//! this seam.

use rbuild_sandbox::{Cancel, OutputStream, RunOutcome, RunSpec};
use rbuild_snapshotter::{mount, Changes, MountSpec, Snapshotter};
use std::path::{Path, PathBuf};

/// The snapshots a solve prepares, views, commits and removes, and mounting them. Keys name
/// active and view snapshots, names committed ones; they share one namespace.
pub trait Snapshots: Send + Sync {
    /// Whether a snapshot (of any state) is called `name`.
    fn exists(&self, name: &str) -> bool;
    /// A writable snapshot `key` on the committed `parent` (None: empty).
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<MountSpec>, String>;
    /// A read-only snapshot `key` of the committed `parent`.
    fn view(&self, key: &str, parent: &str) -> Result<Vec<MountSpec>, String>;
    /// Make the active snapshot `key` the committed snapshot `name`. When `name` is committed
    /// already (another build committed the same step first), `key` is discarded and `name` kept:
    /// a step's name fixes its content.
    fn commit(&self, name: &str, key: &str) -> Result<(), String>;
    /// Remove a snapshot that has no children.
    fn remove(&self, key_or_name: &str) -> Result<(), String>;
    /// Where a layer is applied into the active snapshot `key` (overlay format).
    fn upper_dir(&self, key: &str) -> Result<PathBuf, String>;
    /// What the layer of the active snapshot `key` is written from.
    fn changes(&self, key: &str) -> Result<Changes, String>;
    /// The layer dirs of the committed `name`, nearest first.
    fn layer_chain(&self, name: &str) -> Result<Vec<PathBuf>, String>;
    /// Mount `specs` at `target` (an empty directory); returns where the filesystem is then seen.
    fn mount(&self, specs: &[MountSpec], target: &Path) -> Result<PathBuf, String>;
    /// Undo [`Snapshots::mount`] at `target`.
    fn unmount(&self, target: &Path) -> Result<(), String>;
}

impl Snapshots for Snapshotter {
    fn exists(&self, name: &str) -> bool {
        self.stat(name).ok().flatten().is_some()
    }
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<MountSpec>, String> {
        Snapshotter::prepare(self, key, parent).map_err(|e| e.to_string())
    }
    fn view(&self, key: &str, parent: &str) -> Result<Vec<MountSpec>, String> {
        Snapshotter::view(self, key, parent).map_err(|e| e.to_string())
    }
    fn commit(&self, name: &str, key: &str) -> Result<(), String> {
        Snapshotter::commit(self, name, key).map_err(|e| e.to_string())
    }
    fn remove(&self, key_or_name: &str) -> Result<(), String> {
        Snapshotter::remove(self, key_or_name).map_err(|e| e.to_string())
    }
    fn upper_dir(&self, key: &str) -> Result<PathBuf, String> {
        Snapshotter::upper_dir(self, key).map_err(|e| e.to_string())
    }
    fn changes(&self, key: &str) -> Result<Changes, String> {
        Snapshotter::changes(self, key).map_err(|e| e.to_string())
    }
    fn layer_chain(&self, name: &str) -> Result<Vec<PathBuf>, String> {
        Snapshotter::layer_chain(self, name).map_err(|e| e.to_string())
    }
    fn mount(&self, specs: &[MountSpec], target: &Path) -> Result<PathBuf, String> {
        mount::mount_all(specs, target).map_err(|e| e.to_string())?;
        Ok(target.to_path_buf())
    }
    fn unmount(&self, target: &Path) -> Result<(), String> {
        mount::unmount(target).map_err(|e| e.to_string())
    }
}

/// Runs a RUN step's command: `spec.rootfs` is the mounted rootfs, output goes to `on_output` as
/// it comes, and `cancel` must stop the command promptly.
pub trait Executor: Send + Sync {
    fn run(
        &self,
        spec: &RunSpec,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
        cancel: &Cancel,
    ) -> Result<RunOutcome, String>;

    /// Whether RUN steps can have `network`; asked before any step runs.
    fn check_network(&self, _network: rbuild_sandbox::Network) -> Result<(), String> {
        Ok(())
    }
}

/// The namespaced sandbox of `rbuild_sandbox`.
pub struct Sandbox;

impl Executor for Sandbox {
    fn run(
        &self,
        spec: &RunSpec,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
        cancel: &Cancel,
    ) -> Result<RunOutcome, String> {
        rbuild_sandbox::run(spec, on_output, cancel).map_err(|e| e.to_string())
    }

    fn check_network(&self, network: rbuild_sandbox::Network) -> Result<(), String> {
        match network {
            rbuild_sandbox::Network::Private => rbuild_sandbox::choose_stack()
                .map(drop)
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }
}
