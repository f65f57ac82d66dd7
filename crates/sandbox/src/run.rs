//! The supervising side of a run, in the caller's (possibly multithreaded) process: prepare the
//! rootfs and the cgroup, re-exec the init, stream output, enforce cancel and timeout, collect
//! the status, and clean up after the sandbox is gone.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::cancel::Cancel;
use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::protocol::{read_frame, write_frame, InitConfig, InitMessage, INIT_ARG};
use crate::rootfs::{self, components, Kind};
use crate::spec::{ExitKind, Network, OutputStream, RunOutcome, RunSpec, SandboxMount, Stdio};

/// Run `spec.args` in a sandbox on `spec.rootfs` and wait for it.
///
/// Output is passed to `on_output` as it arrives (with [`Stdio::Piped`]). A command that runs
/// and fails is `Ok` with its [`ExitKind`]; `Err` means the command could not run (bad spec,
/// setup failure, executable not found) or was cancelled or timed out. Whatever happens,
/// everything the command started has been killed when this returns, the cgroup is removed,
/// and mountpoints the sandbox had to create in the rootfs are removed again (when empty).
pub fn run(
    spec: &RunSpec,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    cancel: &Cancel,
) -> Result<RunOutcome, SandboxError> {
    run_with_console(spec, on_output, &mut |_| {}, cancel)
}

/// [`run`], and with [`Stdio::Tty`] the master end of the command's terminal is passed to
/// `on_console` before the command starts (the caller relays it to its own terminal; it reads
/// EIO once everything in the sandbox holding the terminal is gone).
pub fn run_with_console(
    spec: &RunSpec,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    on_console: &mut dyn FnMut(OwnedFd),
    cancel: &Cancel,
) -> Result<RunOutcome, SandboxError> {
    validate(spec)?;
    if cancel.is_cancelled() {
        return Err(SandboxError::Cancelled);
    }
    let root = rootfs::open_root(&spec.rootfs)?;
    let mut created = Vec::new();
    let mut cgroup = None;
    let result = run_in(
        spec,
        root.as_fd(),
        &mut created,
        &mut cgroup,
        on_output,
        on_console,
        cancel,
    );
    // The sandbox is gone here (run_in reaps it on every path); now clean up host-side.
    let mut result = match (result, &cgroup) {
        (Ok(status), Some(cg)) => {
            let oom = cg.oom_kills() > 0 && !status.success();
            Ok(RunOutcome {
                status: if oom { ExitKind::OomKilled } else { status },
                pids_limit_hit: cg.pids_limit_hit(),
            })
        }
        (Ok(status), None) => Ok(RunOutcome {
            status,
            pids_limit_hit: false,
        }),
        (Err(e), _) => Err(e),
    };
    if let Some(cg) = cgroup {
        if let Err(e) = cg.destroy() {
            result = result.and(Err(e));
        }
    }
    if let Err((path, source)) = rootfs::remove_created(root.as_fd(), &created) {
        result = result.and(Err(SandboxError::RootfsPath {
            rootfs: spec.rootfs.clone(),
            path,
            action: "remove mountpoint",
            source,
        }));
    }
    result
}

fn invalid(
    field: impl Into<String>,
    value: impl Into<String>,
    reason: &'static str,
) -> SandboxError {
    SandboxError::InvalidSpec {
        field: field.into(),
        value: value.into(),
        reason,
    }
}

fn validate(spec: &RunSpec) -> Result<(), SandboxError> {
    if spec.args.is_empty() {
        return Err(invalid("args", "", "must not be empty"));
    }
    if let Some(a) = spec.args.iter().find(|a| a.contains('\0')) {
        return Err(invalid("args", a.as_str(), "contains a NUL byte"));
    }
    if let Some(e) = spec.env.iter().find(|e| e.contains('\0')) {
        return Err(invalid("env", e.as_str(), "contains a NUL byte"));
    }
    if !spec.rootfs.is_absolute() {
        return Err(invalid(
            "rootfs",
            spec.rootfs.to_string_lossy(),
            "must be an absolute path",
        ));
    }
    if components(&spec.cwd).is_none() {
        return Err(invalid(
            "cwd",
            spec.cwd.as_str(),
            "must be an absolute path",
        ));
    }
    let h = &spec.hostname;
    if h.is_empty()
        || h.len() > 64
        || h.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(invalid(
            "hostname",
            h.as_str(),
            "must be 1-64 characters without spaces or '/'",
        ));
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        match components(m.target()) {
            Some(c) if !c.is_empty() => {}
            _ => {
                return Err(invalid(
                    format!("mounts[{i}].target"),
                    m.target(),
                    "must be an absolute path other than /",
                ));
            }
        }
        if let SandboxMount::Bind { source, .. } = m {
            if !source.is_absolute() {
                return Err(invalid(
                    format!("mounts[{i}].source"),
                    source.to_string_lossy(),
                    "must be an absolute host path",
                ));
            }
        }
    }
    Ok(())
}

fn run_in(
    spec: &RunSpec,
    root: BorrowedFd<'_>,
    created: &mut Vec<rootfs::Created>,
    cgroup: &mut Option<Cgroup>,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    on_console: &mut dyn FnMut(OwnedFd),
    cancel: &Cancel,
) -> Result<ExitKind, SandboxError> {
    let path_err = |path: &str, action: &'static str| {
        let rootfs = spec.rootfs.clone();
        let path = path.to_owned();
        move |e: nix::errno::Errno| SandboxError::RootfsPath {
            rootfs,
            path,
            action,
            source: e.into(),
        }
    };
    // The working directory is created like Docker does, owned by the user, and stays.
    let cwd = components(&spec.cwd).unwrap_or_default();
    rootfs::ensure_path(root, &cwd, Kind::Dir, Some((spec.uid, spec.gid)))
        .map_err(path_err(&spec.cwd, "create working directory"))?;

    // Files for /etc: generated on the host, bind-mounted by the init.
    let etc_dir = tempfile::Builder::new()
        .prefix("rbuild-sandbox-")
        .tempdir()
        .map_err(|source| SandboxError::Io {
            what: "create temporary directory",
            source,
        })?;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").ok();
    // A private network needs its stack: refuse before anything starts when none is installed.
    let stack = match spec.network {
        Network::Private => Some(crate::net::choose_stack()?),
        _ => None,
    };
    let resolv = match &stack {
        Some((s, _)) => private_resolv_conf(host_resolv.as_deref(), s.nameserver()),
        None => resolv_conf(host_resolv.as_deref(), spec.network),
    };
    let mut files = vec![
        ("/etc/hosts", "hosts", hosts_file(&spec.hostname)),
        ("/etc/resolv.conf", "resolv.conf", resolv),
    ];
    // BuildKit leaves a RUN step's /etc/hostname alone (a step may replace it); containers get one.
    if spec.etc_hostname {
        files.push(("/etc/hostname", "hostname", format!("{}\n", spec.hostname)));
    }
    let mut etc_files = Vec::new();
    for (target, name, content) in files {
        let path = etc_dir.path().join(name);
        fs::write(&path, content).map_err(|source| SandboxError::Io {
            what: "write generated /etc file",
            source,
        })?;
        etc_files.push((target.to_owned(), path));
    }

    // Mountpoints, created only if missing, and remembered for removal.
    let mut mounts = spec.mounts.clone();
    // Parents before children, like Docker; stable for equal depth.
    mounts.sort_by_key(|m| components(m.target()).map_or(0, |c| c.len()));
    let mut points: Vec<(String, Kind)> = ["/proc", "/dev", "/sys"]
        .iter()
        .map(|p| (p.to_string(), Kind::Dir))
        .collect();
    points.extend(etc_files.iter().map(|(t, _)| (t.clone(), Kind::File)));
    for m in &mounts {
        let kind = match m {
            SandboxMount::Bind { source, .. } => match fs::metadata(source) {
                Ok(md) if md.is_dir() => Kind::Dir,
                Ok(_) => Kind::File,
                Err(e) => {
                    return Err(SandboxError::RootfsPath {
                        rootfs: source.clone(),
                        path: String::new(),
                        action: "stat bind mount source",
                        source: e,
                    })
                }
            },
            SandboxMount::Tmpfs { .. } => Kind::Dir,
        };
        points.push((m.target().to_owned(), kind));
    }
    for (path, kind) in &points {
        let comps = components(path).unwrap_or_default();
        let new = rootfs::ensure_path(root, &comps, *kind, None)
            .map_err(path_err(path, "create mountpoint"))?;
        created.extend(new);
    }

    *cgroup = Cgroup::create(&spec.limits)?;

    let config = InitConfig {
        rootfs: spec.rootfs.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        uid: spec.uid,
        gid: spec.gid,
        additional_gids: spec.additional_gids.clone(),
        hostname: spec.hostname.clone(),
        network: spec.network,
        insecure: spec.insecure,
        new_session: !matches!(spec.stdio, Stdio::Inherit { .. }),
        tty: match spec.stdio {
            Stdio::Tty(size) => Some(size),
            _ => None,
        },
        etc_files,
        mounts,
        blocked: match spec.network {
            Network::Private => crate::net::host_addresses(),
            _ => Vec::new(),
        },
    };
    let (child, sock) = spawn_init(spec)?;
    let mut child = Reaper(child);
    let result = supervise(
        spec,
        stack.as_ref().map(|(s, p)| (*s, p.as_path())),
        &mut child.0,
        sock,
        cgroup.as_ref(),
        &config,
        on_output,
        on_console,
        cancel,
    );
    // Whatever happened, the init must be dead and reaped before anyone cleans up.
    drop(child);
    if let Some(cg) = cgroup.as_ref() {
        cg.kill_all(Duration::from_secs(5));
    }
    drop(etc_dir);
    result
}

/// Kills and reaps the init when dropped, also when a callback panics: killing stage 0 takes
/// the init (parent-death signal) and with it the whole PID namespace down.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Hosts file of the sandbox: localhost and the hostname.
pub(crate) fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// resolv.conf of the sandbox: the host's for host networking; otherwise the host's without
/// loopback nameservers (unreachable from another network namespace), or public resolvers when
/// nothing is left.
pub(crate) fn resolv_conf(host: Option<&str>, network: Network) -> String {
    const DEFAULT: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
    let Some(host) = host else {
        return DEFAULT.to_owned();
    };
    if network == Network::Host {
        return host.to_owned();
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            let loopback = addr
                .split('%')
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_none_or(|ip| ip.is_loopback());
            if loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(DEFAULT);
    }
    out
}

/// resolv.conf of a private network: the stack's DNS forwarder, with the host's search and
/// options lines.
pub(crate) fn private_resolv_conf(host: Option<&str>, nameserver: &str) -> String {
    let mut out = String::new();
    for line in host.unwrap_or("").lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search") | Some("domain") | Some("options")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!("nameserver {nameserver}\n"));
    out
}

/// Start the init: `init_exe __rbuild-sandbox-init <fd> <our pid>`, with the socket's child end
/// as the only extra inherited fd.
fn spawn_init(spec: &RunSpec) -> Result<(Child, UnixStream), SandboxError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SandboxError::Io {
        what: "create socket pair",
        source: e.into(),
    })?;
    let exe = spec
        .init_exe
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let mut cmd = Command::new(&exe);
    let child_fd = theirs.as_raw_fd();
    cmd.arg0("rbuild-sandbox-init")
        .arg(INIT_ARG)
        .arg(child_fd.to_string())
        .arg(std::process::id().to_string())
        .env_clear()
        .current_dir("/");
    match spec.stdio {
        Stdio::Piped => {
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                // Keep terminal signals (Ctrl-C) away from the sandbox; the caller cancels.
                .process_group(0);
        }
        Stdio::Inherit { stdin } => {
            cmd.stdin(if stdin {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit());
        }
        Stdio::Tty(_) => {
            // The command gets a terminal of its own; the caller relays it.
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0);
        }
    }
    // SAFETY: the closure runs between fork and exec in the child; it only calls fcntl, which is
    // async-signal-safe, on an fd number that is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|source| SandboxError::Spawn { exe, source })?;
    drop(theirs);
    Ok((child, UnixStream::from(ours)))
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    spec: &RunSpec,
    stack: Option<(crate::net::NetStack, &std::path::Path)>,
    child: &mut Child,
    mut sock: UnixStream,
    cgroup: Option<&Cgroup>,
    config: &InitConfig,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    on_console: &mut dyn FnMut(OwnedFd),
    cancel: &Cancel,
) -> Result<ExitKind, SandboxError> {
    if let Some(cg) = cgroup {
        // Before the init reads its config, so its namespaces (cgroup namespace included) are
        // created inside the run's cgroup.
        cg.add(child.id() as i32)?;
    }
    write_frame(&mut sock, config)
        .map_err(|e| SandboxError::Protocol(format!("sending the config to the init: {e}")))?;
    // Private network: attach the stack to the namespace stage 0 just made, then let the init
    // go on. Held until the sandbox is gone (dropping it kills the stack).
    let _net = match stack {
        Some((stack, program)) => Some(attach_network(&mut sock, child, stack, program)?),
        None => None,
    };

    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut sock_open = true;
    let mut inbox: Vec<u8> = Vec::new();
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut buf = vec![0u8; 64 * 1024];
    while sock_open || stdout.is_some() || stderr.is_some() {
        if cancel.is_cancelled() {
            return Err(SandboxError::Cancelled);
        }
        let mut wait_ms: u64 = if cancel.wake_fd().is_some() {
            60_000
        } else {
            50
        };
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SandboxError::TimedOut {
                    after: spec.timeout.unwrap_or_default(),
                });
            }
            wait_ms = wait_ms.min(left.as_millis() as u64 + 1);
        }
        let mut fds = Vec::with_capacity(4);
        let mut which = Vec::with_capacity(4);
        if sock_open {
            fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
            which.push(0);
        }
        if let Some(o) = &stdout {
            fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
            which.push(1);
        }
        if let Some(e) = &stderr {
            fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
            which.push(2);
        }
        if let Some(w) = cancel.wake_fd() {
            fds.push(PollFd::new(w, PollFlags::POLLIN));
            which.push(3);
        }
        match poll(
            &mut fds,
            PollTimeout::try_from(wait_ms as i32).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(SandboxError::Io {
                    what: "poll",
                    source: e.into(),
                })
            }
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&which)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, w)| *w)
            .collect();
        drop(fds);
        for w in ready {
            match w {
                0 => match crate::sys::recv_with_fds(sock.as_fd(), &mut buf) {
                    Ok((n, fds)) => {
                        // Only the init's console message carries an fd.
                        if let Some(fd) = fds.into_iter().next() {
                            on_console(fd);
                        }
                        if n == 0 {
                            sock_open = false;
                        }
                        inbox.extend_from_slice(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => sock_open = false,
                },
                1 => read_output(&mut stdout, &mut buf, OutputStream::Stdout, on_output),
                2 => read_output(&mut stderr, &mut buf, OutputStream::Stderr, on_output),
                _ => {}
            }
        }
    }
    let status = child.wait().map_err(|source| SandboxError::Io {
        what: "wait for the sandbox init",
        source,
    })?;
    // Decode the messages: a failure wins over a status.
    let mut reader = &inbox[..];
    let mut exited = None;
    loop {
        match read_frame::<InitMessage>(&mut reader) {
            Ok(None) => break,
            Ok(Some(InitMessage::Failed(e))) => return Err(SandboxError::Init(e)),
            Ok(Some(InitMessage::Exited(k))) => exited = Some(k),
            Ok(Some(InitMessage::Console)) | Ok(Some(InitMessage::NetnsReady)) => {}
            Err(e) => {
                return Err(SandboxError::Protocol(format!(
                    "bad message from the init: {e}"
                )))
            }
        }
    }
    exited.ok_or_else(|| {
        SandboxError::Protocol(format!(
            "the sandbox init ended ({status}) without reporting the command's status"
        ))
    })
}

/// Wait for stage 0's [`InitMessage::NetnsReady`], attach `stack` to its network namespace, and
/// tell the init the network is up.
fn attach_network(
    sock: &mut UnixStream,
    child: &Child,
    stack: crate::net::NetStack,
    program: &std::path::Path,
) -> Result<crate::net::Attached, SandboxError> {
    let io = |what: &'static str| move |source| SandboxError::Io { what, source };
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io("set a socket timeout"))?;
    match read_frame::<InitMessage>(&mut *sock) {
        Ok(Some(InitMessage::NetnsReady)) => {}
        Ok(Some(InitMessage::Failed(e))) => return Err(SandboxError::Init(e)),
        Ok(other) => {
            return Err(SandboxError::Protocol(format!(
                "expected the network namespace from the init, got {other:?}"
            )))
        }
        Err(e) => {
            return Err(SandboxError::Protocol(format!(
                "waiting for the init's network namespace: {e}"
            )))
        }
    }
    sock.set_read_timeout(None)
        .map_err(io("set a socket timeout"))?;
    let attached = crate::net::attach(stack, program, child.id())?;
    write_frame(&mut *sock, &true)
        .map_err(|e| SandboxError::Protocol(format!("telling the init the network is up: {e}")))?;
    Ok(attached)
}

fn read_output<R: Read>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
    stream: OutputStream,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) {
    if let Some(p) = pipe {
        match p.read(buf) {
            Ok(0) => *pipe = None,
            Ok(n) => on_output(stream, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => *pipe = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_without_host_network() {
        let host =
            "search example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n";
        assert_eq!(resolv_conf(Some(host), Network::Host), host);
        assert_eq!(
            resolv_conf(Some(host), Network::None),
            "search example.com\nnameserver 10.0.0.2\noptions edns0\n"
        );
        let only_lo = "nameserver 127.0.0.1\nnameserver ::1\n";
        assert_eq!(
            resolv_conf(Some(only_lo), Network::None),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert!(resolv_conf(None, Network::Host).contains("8.8.8.8"));
    }

    #[test]
    fn hosts_has_localhost_and_hostname() {
        let h = hosts_file("box");
        assert!(h.starts_with("127.0.0.1\tlocalhost box\n"));
        assert!(h.contains("::1\tlocalhost"));
    }

    #[test]
    fn validation_rejects_bad_specs() {
        let ok = RunSpec::new("/tmp", vec!["true".into()]);
        assert!(validate(&ok).is_ok());
        let mut s = ok.clone();
        s.args.clear();
        assert!(validate(&s).is_err());
        let mut s = ok.clone();
        s.cwd = "relative".into();
        assert!(validate(&s).is_err());
        let mut s = ok.clone();
        s.hostname = "a b".into();
        assert!(validate(&s).is_err());
        let mut s = ok.clone();
        s.env.push("A=\0".into());
        assert!(validate(&s).is_err());
        let mut s = ok.clone();
        s.mounts.push(SandboxMount::Tmpfs {
            target: "/".into(),
            size: None,
        });
        assert!(validate(&s).is_err());
        let mut s = ok;
        s.mounts.push(SandboxMount::Bind {
            source: "rel".into(),
            target: "/x".into(),
            readonly: true,
        });
        assert!(validate(&s).is_err());
    }
}
