//! # rbuild-engine — what the commands do
//!
//! The library between the command line and the parts: [`build()`] takes a [`BuildRequest`] (the
//! flags already parsed) and drives the frontend, the solver and the exporters; the other modules
//! hold the other commands' operations on the store and the registry. The CLI (`crates/cli`) is
//! left with clap, the progress display and the printing of results and errors.
//!
//! - [`build`]: context → Dockerfile → plan and checks → solve → name, outputs, push, cache export.
//! - [`attest`]: `--provenance` / `--sbom`: the facts, and the index a push sends instead.
//! - [`context`]: the build context argument (directory, tar file, stdin).
//! - [`resolver`]: `FROM` references (store, then registry) and base-image layers on demand.
//! - [`registry`]: one registry client per command; push preparation (compression), push, pull.
//! - [`cache`]: `--cache-to` / `--cache-from`: the cache's wire form and its backends.
//! - [`outputs`]: `--output` exporters (oci, docker, local, tar).
//! - [`maintenance`]: prune (records, snapshots, blobs, locks), df, fsck.
//! - [`snapshots`]: which snapshotter a command uses.
//! - [`step`]: steps run outside the solve, reported as vertices of their own.
//! - `noop_record`: the no-op front's record of a build (every input it read, its output).
//!
//! Errors are `anyhow` errors with their context; a flag value the engine finds wrong is a
//! [`UsageError`] in the chain (the CLI exits 2 for those).

pub mod attest;
pub mod build;
pub mod cache;
pub mod context;
pub mod maintenance;
mod noop_record;
pub mod outputs;
pub mod registry;
pub mod resolver;
pub mod snapshots;
pub mod step;

pub use build::{build, BuildRequest, BuildUi, Outcome};
pub use step::Summary;

/// A bad flag value: the CLI reports it as a usage error (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error from a message.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Open the store at `root` (None: the default one), with a hint when running rootless.
pub fn open_store(root: &Option<std::path::PathBuf>) -> anyhow::Result<rbuild_store::Store> {
    let root = root
        .clone()
        .unwrap_or_else(rbuild_store::Store::default_root);
    rbuild_store::Store::open(&root).map_err(|e| {
        let mut msg = format!("opening the store at {}: {e}", root.display());
        if rbuild_oci::host::is_rootless() {
            msg.push_str(
                "\nhint: running rootless, the store must be a directory you can write: the default is $XDG_DATA_HOME/rbuild (~/.local/share/rbuild); set RBUILD_ROOT or --root to another",
            );
        }
        anyhow::anyhow!(msg)
    })
}
