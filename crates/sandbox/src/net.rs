//! The private network of [`Network::Private`](crate::Network::Private): the sandbox gets a new
//! network namespace with `lo` and a tap device `tap0`, and a user-mode network stack on the host
//! (`pasta` from Debian's `passt`, or `slirp4netns`) carries its traffic to the outside through
//! ordinary sockets of the host.
//!
//! What the sandbox cannot reach: the host's loopback (pasta runs with no port forwarding in
//! either direction and `--no-map-gw`; slirp4netns with `--disable-host-loopback`), and the
//! host's own addresses on its other interfaces: the stack would connect to them from the host,
//! so the init adds an unreachable route for each of them inside the namespace before the
//! command starts (the command has no `CAP_NET_ADMIN` to remove them; `--security=insecure`
//! has, as in BuildKit, where insecure is trusted). DNS: `/etc/resolv.conf` names the stack's
//! forwarder, which asks the host's resolvers.
//!
//! Which stack: `RBUILD_NET_STACK=pasta|slirp4netns` forces one; otherwise pasta if it is
//! installed (faster on bulk transfers, see BENCHMARKS.md), else slirp4netns.

use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::SandboxError;

/// The environment variable that forces a stack.
pub const STACK_ENV: &str = "RBUILD_NET_STACK";

/// How long a stack may take to bring the namespace's network up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The tap device inside the sandbox.
pub(crate) const TAP: &str = "tap0";

/// Where pasta answers DNS (forwarded to the host's first nameserver): a link-local address
/// that is no host's, routed through the tap like everything else.
const PASTA_DNS: &str = "169.254.1.1";
/// slirp4netns's built-in DNS forwarder.
const SLIRP_DNS: &str = "10.0.2.3";

/// A user-mode network stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetStack {
    /// `pasta` (Debian package `passt`).
    Pasta,
    /// `slirp4netns` (Debian package `slirp4netns`).
    Slirp4netns,
}

impl NetStack {
    /// The program name.
    pub fn program(self) -> &'static str {
        match self {
            NetStack::Pasta => "pasta",
            NetStack::Slirp4netns => "slirp4netns",
        }
    }

    /// The stack's DNS forwarder, as seen from inside the namespace.
    pub fn nameserver(self) -> &'static str {
        match self {
            NetStack::Pasta => PASTA_DNS,
            NetStack::Slirp4netns => SLIRP_DNS,
        }
    }
}

impl std::fmt::Display for NetStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.program())
    }
}

/// The message when no stack can be used.
fn missing(why: String) -> SandboxError {
    SandboxError::NetworkStack(format!(
        "{why}; the default RUN network needs pasta (Debian package passt) or slirp4netns \
         (Debian package slirp4netns): install one (apt-get install passt), or build with \
         --network=none, or --network=host with --allow network.host"
    ))
}

/// Find `program` in the host's `PATH` (plus the sbin directories).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = rbuild_inputs::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The stack a private network uses here, and its binary: `RBUILD_NET_STACK` if set, else
/// pasta, else slirp4netns; an error naming the packages when none is installed.
pub fn choose_stack() -> Result<(NetStack, PathBuf), SandboxError> {
    let forced = rbuild_inputs::var(STACK_ENV).filter(|v| !v.is_empty());
    let order: Vec<NetStack> = match forced.as_deref() {
        None => vec![NetStack::Pasta, NetStack::Slirp4netns],
        Some("pasta") | Some("passt") => vec![NetStack::Pasta],
        Some("slirp4netns") => vec![NetStack::Slirp4netns],
        Some(other) => {
            return Err(SandboxError::NetworkStack(format!(
                "{STACK_ENV}={other}: expected pasta or slirp4netns"
            )))
        }
    };
    for s in &order {
        if let Some(p) = find_program(s.program()) {
            return Ok((*s, p));
        }
    }
    Err(missing(match forced {
        Some(f) => format!("{STACK_ENV}={f}, but {f} is not installed"),
        None => "neither pasta nor slirp4netns is installed".to_owned(),
    }))
}

/// The host's own addresses (every interface's but loopback and IPv6 link-local ones, which the
/// stacks never reach), to be made unreachable inside the namespace.
pub(crate) fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let skip = match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        if !skip && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// A running stack attached to a sandbox's network namespace: our child (in the foreground, with
/// a parent-death signal, so it never outlives rbuild); killed and reaped when dropped.
pub(crate) struct Attached {
    child: Child,
    /// slirp4netns exits when this (the write end of its exit pipe) is closed.
    _exit_pipe: Option<OwnedFd>,
    _dir: tempfile::TempDir,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> SandboxError {
    move |source| SandboxError::Io { what, source }
}

fn stack_failed(stack: NetStack, what: &str, log: &Path) -> SandboxError {
    let mut text = String::new();
    let _ = File::open(log).and_then(|f| f.take(4096).read_to_string(&mut text));
    let text: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Failed to send") && !l.contains("Changing to"))
        .collect();
    let tun_hint = if text.iter().any(|l| l.contains("tun")) {
        "\nhint: the network stack needs /dev/net/tun usable by this user (Debian's udev makes it \
         0666; `chmod 0666 /dev/net/tun`), or build with --network=none"
    } else {
        ""
    };
    SandboxError::NetworkStack(format!(
        "{stack} {what}{}{tun_hint}",
        if text.is_empty() {
            String::new()
        } else {
            format!(": {}", text.join("; "))
        }
    ))
}

/// Attach `stack` to the network namespace of process `pid` (the sandbox's stage 0, after it
/// unshared it) and wait until `tap0` is configured.
pub(crate) fn attach(stack: NetStack, program: &Path, pid: u32) -> Result<Attached, SandboxError> {
    let dir = tempfile::Builder::new()
        .prefix("rbuild-net-")
        .tempdir()
        .map_err(io_err("create temporary directory"))?;
    let log = dir.path().join("log");
    let logf = File::create(&log).map_err(io_err("create the network stack's log"))?;
    // The namespace is handed over as an fd: opening /proc/<pid>/ns/net needs ptrace access to
    // the (non-dumpable) init, which pasta, having dropped capabilities, lacks.
    let ns =
        File::open(format!("/proc/{pid}/ns/net")).map_err(io_err("open the sandbox's netns"))?;
    const NS_FD: RawFd = 3;
    const READY_FD: RawFd = 4;
    const EXIT_FD: RawFd = 5;
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone().map_err(io_err("dup the log"))?)
        .stderr(logf)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .process_group(0);
    let mut inherit: Vec<(RawFd, RawFd)> = vec![(ns.as_raw_fd(), NS_FD)];
    let mut ready_read = None;
    let mut exit_write = None;
    let pidfile = dir.path().join("pid");
    match stack {
        NetStack::Pasta => {
            cmd.args([
                "--config-net",
                "--quiet",
                "--runas",
                "0:0",
                "--ns-ifname",
                TAP,
            ])
            // No port forwarding in either direction: "auto" would forward every port bound
            // on the host's loopback into the namespace.
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            // The gateway address is not the host.
            .arg("--no-map-gw")
            .args(["--dns-forward", PASTA_DNS])
            // In the foreground: our child, so the parent-death signal and Drop's kill reach
            // pasta itself (daemonized, one pasta per RUN outlived every build: ~28 MB each).
            .arg("--foreground")
            .arg("--no-netns-quit")
            .arg("--pid")
            .arg(&pidfile)
            .arg("--log-file")
            .arg(dir.path().join("pasta.log"))
            .args(["--netns", "/proc/self/fd/3"]);
        }
        NetStack::Slirp4netns => {
            let (r, w) = nix::unistd::pipe().map_err(|e| SandboxError::Io {
                what: "create pipe",
                source: e.into(),
            })?;
            let (er, ew) = nix::unistd::pipe().map_err(|e| SandboxError::Io {
                what: "create pipe",
                source: e.into(),
            })?;
            inherit.push((w.as_raw_fd(), READY_FD));
            inherit.push((er.as_raw_fd(), EXIT_FD));
            cmd.args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                "--ready-fd=4",
                "--exit-fd=5",
                "--netns-type=path",
                "/proc/self/fd/3",
                TAP,
            ]);
            ready_read = Some((r, w, er));
            exit_write = Some(ew);
        }
    }
    // SAFETY: runs between fork and exec; dup2 and fcntl are async-signal-safe, and the source
    // fds are open in the child (inherited copies of ours).
    unsafe {
        cmd.pre_exec(move || {
            // The stack dies with rbuild, however rbuild ends.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Move the sources out of the way first, so a target number never clobbers one.
            let mut moved = Vec::new();
            for (src, _) in &inherit {
                let d = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 10);
                if d < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved.push(d);
            }
            for (d, (_, target)) in moved.iter().zip(&inherit) {
                if libc::dup2(*d, *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| missing(format!("cannot start {}: {e}", program.display())))?;
    drop(ns);
    let deadline = Instant::now() + READY_TIMEOUT;
    match stack {
        NetStack::Pasta => {
            let mut attached = Attached {
                child,
                _exit_pipe: None,
                _dir: dir,
            };
            loop {
                let written = std::fs::read_to_string(&pidfile)
                    .ok()
                    .is_some_and(|s| !s.trim().is_empty());
                if written {
                    return Ok(attached);
                }
                match attached.child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Ok(None) => {
                        return Err(stack_failed(stack, "did not start in time", &log));
                    }
                    Ok(Some(status)) => {
                        let mut msg = stack_failed(stack, &format!("failed ({status})"), &log);
                        if let SandboxError::NetworkStack(m) = &mut msg {
                            let more =
                                std::fs::read_to_string(attached._dir.path().join("pasta.log"))
                                    .unwrap_or_default();
                            if let Some(l) = more.lines().rev().find(|l| !l.trim().is_empty()) {
                                m.push_str(&format!("; {}", l.trim()));
                            }
                        }
                        return Err(msg);
                    }
                    Err(e) => {
                        return Err(SandboxError::Io {
                            what: "wait for the network stack",
                            source: e,
                        })
                    }
                }
            }
        }
        NetStack::Slirp4netns => {
            let (r, w, er) = ready_read.expect("slirp4netns has a ready pipe");
            drop(w);
            drop(er);
            let attached = Attached {
                child,
                _exit_pipe: exit_write,
                _dir: dir,
            };
            // slirp4netns writes "1" to the ready fd once tap0 is configured.
            let mut buf = [0u8; 1];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut fds = [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&r),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                match nix::poll::poll(&mut fds, ms) {
                    Ok(0) => return Err(stack_failed(stack, "did not start in time", &log)),
                    Ok(_) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        return Err(SandboxError::Io {
                            what: "poll",
                            source: e.into(),
                        })
                    }
                }
            }
            match nix::unistd::read(&r, &mut buf) {
                Ok(1) if buf[0] == b'1' => Ok(attached),
                _ => Err(stack_failed(
                    stack,
                    "exited before the network was up",
                    &log,
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_unknown_stack_is_an_error() {
        // Only the parsing: the environment is process-wide, so read the logic via a helper.
        let e = missing("x".into()).to_string();
        assert!(e.contains("passt") && e.contains("slirp4netns"), "{e}");
        assert!(e.contains("--network=none"), "{e}");
    }

    #[test]
    fn host_addresses_skip_loopback_and_link_local() {
        for a in host_addresses() {
            assert!(!a.is_loopback(), "{a}");
            if let IpAddr::V6(v6) = a {
                assert_ne!(v6.segments()[0] & 0xffc0, 0xfe80, "{a}");
            }
        }
    }
}
