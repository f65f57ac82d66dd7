//! Errors of the sandbox: [`SandboxError`] for the caller, [`InitError`] for failures inside the
//! sandbox init that travel back to the parent as typed messages.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a run failed (as opposed to the command failing, which is a [`crate::RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec cannot be run as given.
    #[error("invalid sandbox spec: {field} {value:?}: {reason}")]
    InvalidSpec {
        /// The offending field (`args`, `cwd`, `mounts[2].target`, ...).
        field: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The rootfs directory cannot be opened.
    #[error("cannot open rootfs {path}: {source}")]
    Rootfs {
        /// The rootfs path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Preparing or cleaning a path inside the rootfs failed.
    #[error("rootfs {rootfs}: cannot {action} {path:?}: {source}")]
    RootfsPath {
        /// The rootfs.
        rootfs: PathBuf,
        /// The in-rootfs path.
        path: String,
        /// What was being done (`create mountpoint`, `create working directory`, ...).
        action: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A cgroup operation failed.
    #[error("cgroup {path}: cannot {action}: {source}")]
    Cgroup {
        /// The cgroup directory or file.
        path: PathBuf,
        /// What was being done (`create`, `write 67108864 to memory.limit_in_bytes`, ...).
        action: String,
        /// The cause.
        source: io::Error,
    },
    /// A limit was requested but the controller it needs is not available.
    #[error("cannot apply the {limit} limit: cgroup controller {controller:?} is not available on this host")]
    ControllerMissing {
        /// `memory`, `cpus` or `pids`.
        limit: &'static str,
        /// The cgroup controller.
        controller: &'static str,
    },
    /// Rootless, a limit was requested but no cgroup subtree is delegated to the user.
    #[error("cannot apply the {limit} limit rootless: {why}\nhint: limits need a cgroup v2 subtree delegated to your user (systemd: `Delegate=yes` for user@.service, then run rbuild in that session), or run rbuild as root")]
    NotDelegated {
        /// `memory`, `cpus` or `pids`.
        limit: &'static str,
        /// What was found instead.
        why: String,
    },
    /// Starting the init process failed.
    #[error("cannot start sandbox init {exe}: {source}")]
    Spawn {
        /// The init executable.
        exe: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An I/O failure in the supervising parent (pipes, polling, temp files).
    #[error("sandbox supervisor: {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The init process broke the parent/init protocol (it died before reporting a status, or
    /// sent garbage).
    #[error("sandbox init protocol error: {0}")]
    Protocol(String),
    /// The sandbox init reported a failure before the command could start.
    #[error(transparent)]
    Init(#[from] InitError),
    /// The user-mode network stack of a private network is missing or failed.
    #[error("RUN network: {0}")]
    NetworkStack(String),
    /// The run was cancelled; everything it started has been killed.
    #[error("cancelled")]
    Cancelled,
    /// The run took longer than its timeout; everything it started has been killed.
    #[error("timed out after {after:?}")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
}

/// A failure inside the sandbox, before the command was executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum InitError {
    /// `args[0]` was not found in the image's `PATH`.
    #[error("exec: {name:?}: executable file not found in $PATH")]
    ExecNotFound {
        /// The program name.
        name: String,
    },
    /// `execve` failed.
    #[error("exec {path}: {}", errno_desc(*errno))]
    Exec {
        /// The resolved program path.
        path: String,
        /// The errno.
        errno: i32,
    },
    /// The working directory cannot be entered.
    #[error("cannot change to working directory {cwd:?}: {}", errno_desc(*errno))]
    Cwd {
        /// The working directory.
        cwd: String,
        /// The errno.
        errno: i32,
    },
    /// A setup step (namespace, mount, pivot_root, credentials, ...) failed.
    #[error("sandbox setup: {step}{}: {}", path.as_deref().map(|p| format!(" {p:?}")).unwrap_or_default(), errno_desc(*errno))]
    Setup {
        /// The step (`unshare namespaces`, `mount proc`, `pivot_root`, ...).
        step: String,
        /// The path involved, if any.
        path: Option<String>,
        /// The errno.
        errno: i32,
    },
    /// The configuration the init received is unusable.
    #[error("sandbox init: bad configuration: {0}")]
    BadConfig(String),
}

impl InitError {
    pub(crate) fn setup(
        step: impl Into<String>,
        path: Option<&str>,
        errno: nix::errno::Errno,
    ) -> Self {
        InitError::Setup {
            step: step.into(),
            path: path.map(str::to_owned),
            errno: errno as i32,
        }
    }
}

fn errno_desc(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}
