//! What to run and how: the [`RunSpec`] the caller fills in, and the [`RunOutcome`] it gets back.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Docker's default `PATH`, used to look up `args[0]` when the spec's env has no `PATH`.
pub use rbuild_oci::DEFAULT_PATH;

/// One command to run in a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// An already-mounted directory (usually an overlay) that becomes `/`.
    pub rootfs: PathBuf,
    /// argv. `args[0]` is looked up in the `PATH` of [`RunSpec::env`] (never the host's)
    /// unless it contains a `/`.
    pub args: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Absolute working directory inside the rootfs; created (owned by `uid:gid`) if missing.
    pub cwd: String,
    /// Numeric user the command runs as (names are resolved with `rbuild_fileop::resolve_user`).
    pub uid: u32,
    /// Numeric primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Hostname inside the sandbox (also written to `/etc/hostname` and `/etc/hosts`).
    pub hostname: String,
    /// Also bind-mount a generated `/etc/hostname` (containers, as `docker run`); build steps leave
    /// the image's file alone, as BuildKit does.
    pub etc_hostname: bool,
    /// Network namespace choice.
    pub network: Network,
    /// Extra mounts, applied after the system mounts, parents before children.
    pub mounts: Vec<SandboxMount>,
    /// cgroup limits.
    pub limits: Limits,
    /// `--security=insecure`: all capabilities, no no_new_privs, no seccomp filter, no masked
    /// /proc paths.
    pub insecure: bool,
    /// Where the command's stdio goes.
    pub stdio: Stdio,
    /// The binary re-executed as the sandbox init; it must call [`crate::init_if_requested`]
    /// first thing in `main`. Default: `/proc/self/exe`.
    pub init_exe: Option<PathBuf>,
    /// Kill the command and fail with [`crate::SandboxError::TimedOut`] after this long.
    pub timeout: Option<Duration>,
}

impl RunSpec {
    /// A spec with Docker-like defaults: root, cwd `/`, `PATH` only, host network, no limits,
    /// piped output.
    pub fn new(rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        RunSpec {
            rootfs: rootfs.into(),
            args,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".to_owned(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: "rbuildsandbox".to_owned(),
            etc_hostname: false,
            network: Network::Host,
            mounts: Vec::new(),
            limits: Limits::default(),
            insecure: false,
            stdio: Stdio::Piped,
            init_exe: None,
            timeout: None,
        }
    }
}

/// Network namespace of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (`RUN --network=host`, an entitlement of builds).
    Host,
    /// A new, empty network namespace with only `lo`, brought up.
    None,
    /// A new network namespace with `lo` and `tap0`, connected to the outside through a
    /// user-mode network stack (pasta or slirp4netns, see [`crate::choose_stack`]); the host's
    /// loopback and its own addresses are unreachable. The default of builds.
    Private,
}

/// An extra mount inside the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SandboxMount {
    /// Bind a host path (file or directory, recursively) to `target` inside the rootfs.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path inside the rootfs; created if missing (and removed again afterwards).
        target: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs at `target`.
    Tmpfs {
        /// Absolute path inside the rootfs.
        target: String,
        /// Size cap in bytes (`None`: the kernel default, half of RAM).
        size: Option<u64>,
    },
}

impl SandboxMount {
    /// The in-rootfs path the mount covers.
    pub fn target(&self) -> &str {
        match self {
            SandboxMount::Bind { target, .. } | SandboxMount::Tmpfs { target, .. } => target,
        }
    }
}

/// Resource limits, applied through a per-run cgroup. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (no swap on top).
    pub memory: Option<u64>,
    /// CPU quota in CPUs (e.g. `1.5`).
    pub cpus: Option<f64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

/// Where the command's standard streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// stdin is `/dev/null`; stdout and stderr go to the `on_output` callback of [`crate::run`].
    /// The sandbox gets no controlling terminal.
    Piped,
    /// stdout and stderr are the caller's, and stdin too when `stdin` is set (else `/dev/null`,
    /// as `docker run` without `-i`); the sandbox stays in the caller's session (for `rbuild run`).
    Inherit {
        /// Pass the caller's stdin on (`docker run -i`).
        stdin: bool,
    },
    /// A new pseudo-terminal of the sandbox's own devpts (so the command sees `/dev/pts/0`, as
    /// under runc) is the command's stdin, stdout, stderr and controlling terminal, starting with
    /// this window size; its master end goes to the `on_console` callback of
    /// [`crate::run_with_console`] (`docker run -t`).
    Tty(WindowSize),
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The command's stdout.
    Stdout,
    /// The command's stderr.
    Stderr,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitKind {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// The memory limit was hit and the kernel's OOM killer killed a process of the run
    /// (and the command did not exit 0).
    OomKilled,
}

impl ExitKind {
    /// True for `Exited(0)`.
    pub fn success(&self) -> bool {
        *self == ExitKind::Exited(0)
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Exited(c) => write!(f, "exit code: {c}"),
            ExitKind::Signaled(s) => write!(f, "killed by signal {s}"),
            ExitKind::OomKilled => write!(f, "killed: out of memory (memory limit reached)"),
        }
    }
}

/// The result of a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// How the command ended.
    pub status: ExitKind,
    /// The pids limit refused at least one fork during the run.
    pub pids_limit_hit: bool,
}
