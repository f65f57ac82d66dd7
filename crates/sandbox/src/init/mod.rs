//! The sandbox init: what runs after the parent re-executes its binary with the hidden
//! subcommand. Three processes, each single-threaded:
//!
//! 1. **stage 0** (the process the parent spawned): takes the socket to the parent, closes
//!    every other inherited fd, reads the [`InitConfig`], unshares the mount, PID, UTS, IPC,
//!    cgroup (and for `--network=none` network) namespaces, forks, and waits.
//! 2. **init** (PID 1 of the new PID namespace, non-dumpable): builds the mount tree and
//!    pivot_roots, sets the hostname, brings `lo` up, forks the command, then reaps zombies and
//!    forwards signals until the command exits. It reports the command's status and exits,
//!    which makes the kernel kill everything left in the namespace.
//! 3. **command**: drops capabilities, sets no_new_privs, switches user, chdirs inside the new
//!    root, closes every fd but 0-2, and execs `args[0]` found in the image's `PATH`.
//!
//! Failures before the command's execve are sent to the parent as [`InitMessage::Failed`].

mod exec;
mod mounts;

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::InitError;
use crate::protocol::{read_frame, write_frame, InitConfig, InitMessage};
use crate::spec::{ExitKind, Network, WindowSize};

/// The fd number the socket to the parent is moved to.
const SOCK_FD: i32 = 3;

/// Entry point for `argv = [exe, INIT_ARG, <socket fd>, <parent pid>]`. Never returns.
pub(crate) fn main(args: Vec<OsString>) -> ! {
    let fd: Option<i32> = args.get(2).and_then(|a| a.to_str()?.parse().ok());
    let parent: Option<i32> = args.get(3).and_then(|a| a.to_str()?.parse().ok());
    let (Some(fd), Some(parent)) = (fd, parent) else {
        eprintln!("rbuild sandbox init: this subcommand is internal to rbuild");
        std::process::exit(125);
    };
    // If the parent dies, so do we (and with us the whole sandbox).
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || nix::unistd::getppid().as_raw() != parent
    {
        std::process::exit(125);
    }
    let Some(sock) = take_socket(fd) else {
        std::process::exit(125);
    };
    let _ = nix::sys::prctl::set_dumpable(false);
    let mut sock = UnixStream::from(sock);
    let cfg: InitConfig = match read_frame(&mut sock) {
        Ok(Some(cfg)) => cfg,
        // The parent went away or sent garbage: nothing to report to.
        _ => std::process::exit(125),
    };
    let err = stage0(&cfg, sock.try_clone().ok());
    let _ = write_frame(&mut sock, &InitMessage::Failed(err));
    std::process::exit(125)
}

/// Move the inherited socket to [`SOCK_FD`] (close-on-exec) and close every other fd above
/// stderr, so nothing of the parent's leaks any further.
fn take_socket(fd: i32) -> Option<OwnedFd> {
    if fd < SOCK_FD {
        return None;
    }
    // SAFETY: the parent passed us this fd number; nothing in this freshly exec'd process owns
    // it yet.
    let inherited = unsafe { crate::sys::owned_fd(fd) };
    let sock = if fd == SOCK_FD {
        nix::fcntl::fcntl(
            inherited.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .ok()?;
        inherited
    } else {
        // SAFETY: fd 3 is either unused or a stray inherited fd nothing in this process owns;
        // dup3 atomically replaces it with the socket.
        let r = unsafe { libc::dup3(inherited.as_raw_fd(), SOCK_FD, libc::O_CLOEXEC) };
        if r != SOCK_FD {
            return None;
        }
        drop(inherited);
        // SAFETY: fd 3 now is our socket, owned by nothing else.
        unsafe { crate::sys::owned_fd(SOCK_FD) }
    };
    crate::sys::close_range_from(SOCK_FD as u32 + 1, false).ok()?;
    Some(sock)
}

/// Unshare the namespaces and fork PID 1. Returns only on failure.
fn stage0(cfg: &InitConfig, sock: Option<UnixStream>) -> InitError {
    let Some(sock) = sock else {
        return InitError::setup("duplicate socket", None, Errno::EMFILE);
    };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if cfg.network != Network::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = unshare(flags) {
        return InitError::setup("unshare namespaces", None, e);
    }
    let mut sock = sock;
    if cfg.network == Network::Private {
        // The parent attaches the network stack to our (new) network namespace now; PID 1
        // waits for its answer before it starts the command.
        if let Err(e) = write_frame(&mut sock, &InitMessage::NetnsReady) {
            return InitError::setup("report the network namespace", None, errno_of(&e));
        }
    }
    // SAFETY: this process is single-threaded (a fresh exec that started no threads), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => InitError::setup("fork init", None, e),
        Ok(ForkResult::Child) => pid1(cfg, sock),
        Ok(ForkResult::Parent { child }) => {
            // Only the init and the command talk to the parent from here on; our copy of the
            // socket must not keep it open.
            drop(sock);
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => break c,
                    Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(_) => break 125,
                }
            };
            std::process::exit(code)
        }
    }
}

/// PID 1 of the sandbox. Never returns.
fn pid1(cfg: &InitConfig, mut sock: UnixStream) -> ! {
    let fail = |sock: &mut UnixStream, e: InitError| -> ! {
        let _ = write_frame(sock, &InitMessage::Failed(e));
        std::process::exit(125)
    };
    // Our parent (stage 0) dying means the sandbox is being torn down.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // Non-dumpable: /proc/1/exe (this rbuild binary) cannot be opened from inside (the
    // CVE-2019-5736 class).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        fail(&mut sock, InitError::setup("set non-dumpable", None, e));
    }
    crate::sys::umask(0);
    if let Err(e) = mounts::setup(cfg) {
        fail(&mut sock, e);
    }
    if let Err(e) = nix::unistd::sethostname(&cfg.hostname) {
        fail(
            &mut sock,
            InitError::setup("sethostname", Some(&cfg.hostname), e),
        );
    }
    if cfg.network != Network::Host {
        if let Err(e) = crate::sys::loopback_up() {
            fail(
                &mut sock,
                InitError::setup("bring up loopback", Some("lo"), e),
            );
        }
    }
    if cfg.network == Network::Private {
        // The parent answers once the stack has configured tap0 (or kills us).
        match read_frame::<bool>(&mut sock) {
            Ok(Some(true)) => {}
            _ => std::process::exit(125),
        }
        for addr in &cfg.blocked {
            if let Err(e) = crate::sys::add_unreachable_route(*addr) {
                fail(
                    &mut sock,
                    InitError::setup("block the host address", Some(&addr.to_string()), e),
                );
            }
        }
    }
    if cfg.new_session {
        if let Err(e) = nix::unistd::setsid() {
            fail(&mut sock, InitError::setup("setsid", None, e));
        }
    }
    let console = match cfg.tty.map(|size| open_console(cfg, size, &sock)) {
        None => None,
        Some(Ok(slave)) => Some(slave),
        Some(Err(e)) => fail(&mut sock, e),
    };
    // Block every asynchronous signal: they are collected with sigwaitinfo below and
    // forwarded. Synchronous (fault) signals stay deliverable.
    let mut set = SigSet::all();
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGABRT,
        Signal::SIGSYS,
    ] {
        set.remove(s);
    }
    let mut old = SigSet::empty();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
        fail(&mut sock, InitError::setup("block signals", None, e));
    }
    // SAFETY: single-threaded process (see stage0).
    let child = match unsafe { fork() } {
        Err(e) => fail(&mut sock, InitError::setup("fork command", None, e)),
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            exec::exec_command(cfg, sock, console)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    // Only the command holds the terminal: its master reads EIO once the command's side is gone.
    drop(console);
    let status = supervise(child, &set);
    let _ = write_frame(&mut sock, &InitMessage::Exited(status));
    // Exiting as PID 1 kills everything still running in the namespace.
    std::process::exit(0)
}

/// The command's terminal, as runc's console: a pty of the sandbox's own devpts (so it is
/// `/dev/pts/0` inside), owned by the command's user, of the caller's window size. The master
/// end goes to the parent (SCM_RIGHTS with an [`InitMessage::Console`] frame) and is closed
/// here; the slave end is returned for the command.
fn open_console(
    cfg: &InitConfig,
    size: WindowSize,
    sock: &UnixStream,
) -> Result<OwnedFd, InitError> {
    use nix::fcntl::OFlag;
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags)
        .map_err(|e| InitError::setup("open", Some("/dev/ptmx"), e))?;
    nix::pty::grantpt(&master).map_err(|e| InitError::setup("grantpt", None, e))?;
    nix::pty::unlockpt(&master).map_err(|e| InitError::setup("unlockpt", None, e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| InitError::setup("ptsname", None, e))?;
    let slave = nix::fcntl::open(name.as_str(), flags, nix::sys::stat::Mode::empty())
        .map_err(|e| InitError::setup("open", Some(&name), e))?;
    nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(cfg.uid)), None)
        .map_err(|e| InitError::setup("chown", Some(&name), e))?;
    crate::sys::set_window_size(master.as_fd(), size)
        .map_err(|e| InitError::setup("set the window size", Some(&name), e))?;
    let mut frame = Vec::new();
    write_frame(&mut frame, &InitMessage::Console)
        .map_err(|_| InitError::setup("encode the console message", None, Errno::EINVAL))?;
    let fds = [master.as_raw_fd()];
    let sent = sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(&frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| InitError::setup("send the terminal to the parent", None, e))?;
    if sent < frame.len() {
        use std::io::Write as _;
        (&*sock)
            .write_all(&frame[sent..])
            .map_err(|e| InitError::setup("send the terminal to the parent", None, errno_of(&e)))?;
    }
    Ok(slave)
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Reap zombies and forward signals until `child` exits; return how it ended.
fn supervise(child: Pid, set: &SigSet) -> ExitKind {
    loop {
        // Reap everything that is already dead.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return ExitKind::Exited(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    return ExitKind::Signaled(sig as i32)
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                // ECHILD: nothing left (cannot happen before `child` is reaped).
                Err(_) => return ExitKind::Exited(255),
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = kill(child, sig);
            }
        }
    }
}
