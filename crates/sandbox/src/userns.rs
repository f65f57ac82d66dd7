//! Rootless: the whole engine runs inside a user namespace of the invoking user, as root there.
//!
//! [`enter_user_namespace`] is called first thing in `main` (before any thread exists). For root in
//! the initial user namespace it does nothing. For anyone else it forks: the child unshares a user
//! namespace, the parent maps ids into it — with Debian's setuid `newuidmap`/`newgidmap` from the
//! user's `/etc/subuid` and `/etc/subgid` ranges (`0` → the user, `1..` → the range), or, without
//! a range or without `uidmap`, the user's own id alone (then a file owned by any other id cannot
//! be made; [`single_id_hint`] says how to add a range) — and the child becomes uid/gid 0 there and
//! goes on with `main`. The parent only waits, forwards termination signals, and exits as the
//! child did. Inside, the mount namespace the engine makes next belongs to this user namespace, so
//! overlay (kernel ≥ 5.11, with `userxattr`), bind mounts, and the sandbox's own namespaces work
//! without any privilege on the host; files keep their in-image owners (uid 0 inside is the user on
//! the host, uid 1000 inside is `range start + 999`).
//!
//! What it is not: no setuid helper of ours, no daemon, no cgroup set-up (a delegated cgroup v2
//! subtree is used by [`crate::run`] where one exists).

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, getegid, geteuid, ForkResult, Gid, Pid, Uid};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// How the ids of the user namespace are mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdMapping {
    /// Real root, or already root inside some user namespace: nothing done.
    Host,
    /// 0 → the user; 1.. → the subordinate range (newuidmap/newgidmap).
    Range {
        uid: u32,
        uid_start: u32,
        uid_count: u32,
        gid: u32,
        gid_start: u32,
        gid_count: u32,
    },
    /// 0 → the user, nothing else.
    Single { uid: u32, gid: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("rootless: cannot create a user namespace: {0}\nhint: user namespaces are disabled on this host (sysctl user.max_user_namespaces=0 or kernel.unprivileged_userns_clone=0); ask an administrator to enable them, or run rbuild as root")]
    Disabled(nix::Error),
    #[error("rootless: {what}: {detail}")]
    Map { what: String, detail: String },
    #[error("rootless: {what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The subordinate range of `user` (name or uid) in an `/etc/subuid`-format file: the first line
/// `name:start:count` or `uid:start:count` with a count of at least 1.
pub fn subid_range(file: &Path, user: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    let id = id.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != user && who != id {
            return None;
        }
        let start: u32 = start.parse().ok()?;
        let count: u32 = count.parse().ok()?;
        (count >= 1).then_some((start, count))
    })
}

/// The hint for a step that needs an id the single-id mapping does not have.
pub fn single_id_hint(user: &str) -> String {
    format!(
        "rootless with a single id: only files owned by your own user can be made; give {user} a subordinate id range (as root: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`, Debian's `uidmap` package) and run again"
    )
}

/// The name of host user `uid` (from /etc/passwd), else `$USER`, else the number.
pub fn user_name(uid: u32) -> String {
    if let Ok(pw) = std::fs::read_to_string("/etc/passwd") {
        for l in pw.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() > 2 && f[2] == uid.to_string() {
                return f[0].to_string();
            }
        }
    }
    rbuild_inputs::var("USER").unwrap_or_else(|| uid.to_string())
}

/// The mapping this user would get.
pub fn planned_mapping() -> IdMapping {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    if uid == 0 {
        return IdMapping::Host;
    }
    let name = user_name(uid);
    let have_tools = which("newuidmap") && which("newgidmap");
    match (
        have_tools,
        subid_range(Path::new("/etc/subuid"), &name, uid),
        subid_range(Path::new("/etc/subgid"), &name, uid),
    ) {
        (true, Some((us, uc)), Some((gs, gc))) => IdMapping::Range {
            uid,
            uid_start: us,
            uid_count: uc,
            gid,
            gid_start: gs,
            gid_count: gc,
        },
        _ => IdMapping::Single { uid, gid },
    }
}

fn which(prog: &str) -> bool {
    rbuild_inputs::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Enter the user namespace (see the module docs). Returns the mapping in effect in the process
/// that goes on; the parent of a rootless fork never returns (it exits as its child did).
///
/// Must be called while the process has one thread.
pub fn enter_user_namespace() -> Result<IdMapping, UsernsError> {
    if geteuid().is_root() {
        return Ok(IdMapping::Host);
    }
    let mapping = planned_mapping();
    let (mut parent_end, mut child_end) =
        UnixStream::pair().map_err(|source| UsernsError::Sys {
            what: "socket pair",
            source,
        })?;
    let parent_pid = nix::unistd::getpid();
    // SAFETY: called before any thread exists (documented contract), so the child may run
    // arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| UsernsError::Sys {
        what: "fork",
        source: e.into(),
    })? {
        ForkResult::Child => {
            drop(parent_end);
            // The parent only waits for us: if it is killed (SIGKILL from a CI runner, say), we
            // go with it, and so does everything we started.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if nix::unistd::getppid() != parent_pid {
                std::process::exit(1);
            }
            let r = unshare(CloneFlags::CLONE_NEWUSER);
            let ok = r.is_ok();
            let _ = child_end.write_all(if ok { b"u" } else { b"e" });
            if let Err(e) = r {
                return Err(UsernsError::Disabled(e));
            }
            let mut b = [0u8; 1];
            match child_end.read_exact(&mut b) {
                Ok(()) if b[0] == b'm' => {}
                _ => {
                    // The parent failed to map us; it prints why.
                    std::process::exit(1);
                }
            }
            drop(child_end);
            let zero_g = Gid::from_raw(0);
            let zero_u = Uid::from_raw(0);
            nix::unistd::setresgid(zero_g, zero_g, zero_g).map_err(|e| UsernsError::Sys {
                what: "setresgid(0) in the user namespace",
                source: e.into(),
            })?;
            if matches!(mapping, IdMapping::Range { .. }) {
                let _ = nix::unistd::setgroups(&[]);
            }
            nix::unistd::setresuid(zero_u, zero_u, zero_u).map_err(|e| UsernsError::Sys {
                what: "setresuid(0) in the user namespace",
                source: e.into(),
            })?;
            Ok(mapping)
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            let mut b = [0u8; 1];
            let unshared = parent_end.read_exact(&mut b).is_ok() && b[0] == b'u';
            if !unshared {
                // The child reports the error and exits; we exit as it does.
                exit_as(wait_child(child));
            }
            match map_ids(child, &mapping) {
                Ok(()) => {
                    let _ = parent_end.write_all(b"m");
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    let _ = parent_end.write_all(b"x");
                    let _ = wait_child(child);
                    std::process::exit(1);
                }
            }
            drop(parent_end);
            CHILD.store(child.as_raw(), Ordering::Relaxed);
            // SAFETY: installing plain handlers / SIG_IGN; `forward` only calls kill.
            unsafe {
                for s in [Signal::SIGTERM, Signal::SIGHUP] {
                    let _ = nix::sys::signal::signal(s, SigHandler::Handler(forward));
                }
                // The terminal sends these to the whole process group, child included: the
                // parent stays to report the child's end.
                for s in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
                    let _ = nix::sys::signal::signal(s, SigHandler::SigIgn);
                }
            }
            exit_as(wait_child(child))
        }
    }
}

fn map_ids(child: Pid, m: &IdMapping) -> Result<(), UsernsError> {
    let pid = child.as_raw().to_string();
    match m {
        IdMapping::Host => Ok(()),
        IdMapping::Range {
            uid,
            uid_start,
            uid_count,
            gid,
            gid_start,
            gid_count,
        } => {
            run_map(
                "newuidmap",
                &[
                    &pid,
                    "0",
                    &uid.to_string(),
                    "1",
                    "1",
                    &uid_start.to_string(),
                    &uid_count.to_string(),
                ],
            )?;
            run_map(
                "newgidmap",
                &[
                    &pid,
                    "0",
                    &gid.to_string(),
                    "1",
                    "1",
                    &gid_start.to_string(),
                    &gid_count.to_string(),
                ],
            )
        }
        IdMapping::Single { uid, gid } => {
            let proc = Path::new("/proc").join(&pid);
            let w = |file: &str, data: String| {
                std::fs::write(proc.join(file), data).map_err(|e| UsernsError::Map {
                    what: format!("write /proc/{pid}/{file}"),
                    detail: e.to_string(),
                })
            };
            w("uid_map", format!("0 {uid} 1\n"))?;
            w("setgroups", "deny\n".to_string())?;
            w("gid_map", format!("0 {gid} 1\n"))
        }
    }
}

fn run_map(prog: &str, args: &[&str]) -> Result<(), UsernsError> {
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| UsernsError::Map {
            what: prog.to_string(),
            detail: format!("{e} (install Debian's uidmap)"),
        })?;
    if !out.status.success() {
        return Err(UsernsError::Map {
            what: format!("{prog} {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn wait_child(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

fn exit_as(code: i32) -> ! {
    if code > 128 {
        // Die of the same signal, as a shell would see it.
        if let Ok(sig) = Signal::try_from(code - 128) {
            // SAFETY: restoring the default action before re-raising.
            unsafe {
                let _ = nix::sys::signal::signal(sig, SigHandler::SigDfl);
            }
            let _ = kill(Pid::this(), sig);
        }
    }
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_ranges() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("subuid");
        std::fs::write(&f, "alice:100000:65536\n1001:300000:10\nbob:200000:0\n").unwrap();
        assert_eq!(subid_range(&f, "alice", 1000), Some((100000, 65536)));
        assert_eq!(subid_range(&f, "carol", 1001), Some((300000, 10)), "by uid");
        assert_eq!(subid_range(&f, "bob", 1002), None, "empty range");
        assert_eq!(subid_range(&f, "dave", 1003), None);
        assert_eq!(subid_range(&d.path().join("missing"), "alice", 1000), None);
    }

    #[test]
    fn hint_names_the_command() {
        assert!(single_id_hint("ci").contains("usermod --add-subuids"));
    }
}
