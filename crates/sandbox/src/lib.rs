//! rbuild-sandbox: run one command (a Dockerfile `RUN` step, or `rbuild run`) in a sandbox as
//! strong as runc's — and the only crate of rbuild with `unsafe` code and raw syscalls.
//!
//! # Use
//! * [`init_if_requested`] first thing in `main`, before any thread exists: the sandbox
//!   re-executes the current binary (`/proc/self/exe`, or [`RunSpec::init_exe`]) with a hidden
//!   subcommand, and this call turns that process into the sandbox init (it never returns then).
//! * [`enter_private_mount_namespace`] right after, so every mount rbuild makes vanishes when it
//!   exits.
//! * [`run`] a [`RunSpec`]; output streams to a callback; a [`Cancel`] token stops it from
//!   another thread; the result is a [`RunOutcome`] (exit code, signal, OOM kill) or a
//!   [`SandboxError`] (including typed [`InitError`]s from inside the sandbox, such as
//!   `exec: "foo": executable file not found in $PATH`).
//! * [`run_with_console`] with [`Stdio::Tty`] gives the command a terminal (a pty of the
//!   sandbox's own devpts, its controlling terminal, as runc's console) and hands its master end
//!   to the caller; [`window_size`] and [`set_window_size`] carry the caller's size over.
//! * A [`RunSpec`] takes numeric ids: a Dockerfile `USER` is resolved through the image's own
//!   `/etc/passwd` and `/etc/group` by `rbuild_fileop::resolve_user`, not here.
//!
//! # What the sandbox is
//! The command runs as the child of a PID-1 init in new mount, PID, UTS, IPC and cgroup
//! namespaces (plus a network namespace: only `lo` for [`Network::None`], `lo` and a tap to a
//! user-mode network stack for [`Network::Private`]), pivot_root'ed
//! into the rootfs with its own `/proc` (Docker's masked and read-only paths), a minimal `/dev`
//! (tmpfs with null, zero, full, random, urandom, tty, devpts, shm, mqueue), a read-only
//! `/sys`, and generated `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`. Capabilities are
//! cut to Docker's default set (bounding 0xa80425fb), no_new_privs is set, Docker's default
//! seccomp profile is applied (denied syscalls get `EPERM`; see `seccomp.rs` for the list and
//! why), and only fds 0-2 survive the execve. [`RunSpec::insecure`] keeps every capability and
//! applies neither no_new_privs nor the seccomp filter, as BuildKit's `security.insecure`.
//! The init is non-dumpable, so `/proc/1/exe` cannot be used to overwrite the rbuild binary. Memory, CPU and pids limits go through a per-run cgroup (v2, or v1 on
//! hybrid hosts); a limit that cannot be applied is an error. When the command ends — or is
//! cancelled, or times out — everything it started is killed, the cgroup is removed, and
//! mountpoints the sandbox had to create in the rootfs are removed again so they do not show up
//! in the step's layer.
//!
//! The design (re-exec rather than code between fork and exec in a multithreaded parent; mount
//! targets opened with `openat2(RESOLVE_IN_ROOT)` and mounted through `/proc/self/fd`; chdir
//! only after pivot_root) follows runc and its CVE history (CVE-2019-5736, CVE-2021-30465,
//! CVE-2024-21626).
//!
//! # What it is not
//! Not a container runtime: no OCI runtime spec, no user namespaces (rootless), no custom
//! seccomp profiles, no AppArmor/SELinux, no layers or snapshots (the caller
//! mounts the rootfs and diffs it afterwards).
#![allow(unsafe_code)]

pub mod binfmt;
mod cancel;
mod cgroup;
mod error;
mod init;
mod net;
mod protocol;
mod rootfs;
mod run;
mod seccomp;
mod spec;
mod sys;
pub mod userns;

pub use cancel::Cancel;
pub use cgroup::{check_limits, delegated_cgroup};
pub use error::{InitError, SandboxError};
pub use net::{choose_stack, NetStack, STACK_ENV};
pub use run::{run, run_with_console};
pub use spec::{
    ExitKind, Limits, Network, OutputStream, RunOutcome, RunSpec, SandboxMount, Stdio, WindowSize,
    DEFAULT_PATH,
};

use nix::mount::{mount, MsFlags};
use std::os::fd::AsFd;

/// The window size of the terminal `fd`, if it is one.
pub fn window_size(fd: impl AsFd) -> Option<WindowSize> {
    sys::window_size(fd.as_fd())
}

/// Set the window size of the terminal `fd` (the master end from [`run_with_console`]: the
/// command gets SIGWINCH).
pub fn set_window_size(fd: impl AsFd, size: WindowSize) -> std::io::Result<()> {
    sys::set_window_size(fd.as_fd(), size).map_err(Into::into)
}
use nix::sched::{unshare, CloneFlags};

/// If this process was started as the sandbox init (argv[1] is the hidden subcommand), run the
/// init and never return; otherwise return at once. Call it first thing in `main`, before any
/// thread is started.
pub fn init_if_requested() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(4).collect();
    if args.get(1).is_some_and(|a| a == protocol::INIT_ARG) {
        init::main(args)
    }
}

/// Move the calling process into a new mount namespace whose mounts are all private, so every
/// mount made afterwards (overlay rootfs of steps, ...) is invisible to the host and disappears
/// when the process exits. Call it before any thread is started: the new namespace applies to
/// the calling thread and to threads and children created afterwards.
pub fn enter_private_mount_namespace() -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| SandboxError::Io {
        what: "unshare the mount namespace",
        source: e.into(),
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SandboxError::Io {
        what: "make / recursively private",
        source: e.into(),
    })
}
