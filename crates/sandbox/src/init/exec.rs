//! The command process (PID 2): credentials, capabilities, no_new_privs, working directory,
//! fds, `PATH` lookup, the seccomp filter, execve.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use nix::unistd::{execve, setgroups, setresgid, setresuid, Gid, Uid};

use crate::error::InitError;
use crate::protocol::{write_frame, InitConfig, InitMessage};
use crate::spec::DEFAULT_PATH;
use crate::sys;

/// Run the command; on any failure report it to the parent and exit 127. Never returns.
pub(super) fn exec_command(cfg: &InitConfig, mut sock: UnixStream, console: Option<OwnedFd>) -> ! {
    let err = match console.map(attach_console) {
        Some(Err(e)) => e,
        _ => prepare_and_exec(cfg),
    };
    let _ = write_frame(&mut sock, &InitMessage::Failed(err));
    // SAFETY: _exit skips atexit handlers and stdio flushing that belong to the init's image.
    unsafe { libc::_exit(127) }
}

/// Make `slave` the controlling terminal of a new session (so the command is its foreground
/// process group and gets ^C, ^Z and SIGWINCH from it) and the command's stdin, stdout, stderr.
fn attach_console(slave: OwnedFd) -> Result<(), InitError> {
    nix::unistd::setsid().map_err(|e| InitError::setup("setsid", None, e))?;
    sys::set_controlling_terminal(slave.as_fd())
        .map_err(|e| InitError::setup("make the terminal the controlling one", None, e))?;
    nix::unistd::dup2_stdin(&slave)
        .and_then(|()| nix::unistd::dup2_stdout(&slave))
        .and_then(|()| nix::unistd::dup2_stderr(&slave))
        .map_err(|e| InitError::setup("attach the terminal to stdio", None, e))
}

fn prepare_and_exec(cfg: &InitConfig) -> InitError {
    sys::reset_signal_dispositions();
    sys::umask(0o022);
    if let Err(e) = credentials(cfg) {
        return e;
    }
    if let Err(e) = nix::unistd::chdir(cfg.cwd.as_str()) {
        return InitError::Cwd {
            cwd: cfg.cwd.clone(),
            errno: e as i32,
        };
    }
    let Some(name) = cfg.args.first() else {
        return InitError::BadConfig("empty argv".into());
    };
    let path = match lookup(name, &cfg.env) {
        Some(p) => p,
        None => return InitError::ExecNotFound { name: name.clone() },
    };
    let cstrings = |v: &[String]| {
        v.iter()
            .map(|s| CString::new(s.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
    };
    let (Ok(argv), Ok(envp), Ok(cpath)) = (
        cstrings(&cfg.args),
        cstrings(&cfg.env),
        CString::new(path.as_bytes()),
    ) else {
        return InitError::BadConfig("NUL byte in argv or env".into());
    };
    // Last, so that nothing the sandbox setup needs is filtered: Docker's default seccomp
    // profile (after no_new_privs, which lets an unprivileged user install it).
    if !cfg.insecure {
        if let Err(e) = crate::seccomp::default_filter().and_then(|prog| {
            sys::seccomp_set_filter(&prog)
                .map_err(|e| InitError::setup("install the seccomp filter", None, e))
        }) {
            return e;
        }
    }
    // Everything but stdio is closed at exec (our socket included, so the parent knows the
    // exec happened when it sees EOF and no failure).
    if let Err(e) = sys::close_range_from(3, true) {
        return InitError::setup("close fds", None, e);
    }
    match execve(&cpath, &argv, &envp) {
        Err(e) => InitError::Exec {
            path,
            errno: e as i32,
        },
        Ok(never) => match never {},
    }
}

/// Capabilities (bounding, then the process sets), groups and ids, no_new_privs.
fn credentials(cfg: &InitConfig) -> Result<(), InitError> {
    let last = sys::last_cap();
    // Never more than we have: capset cannot raise, and rbuild itself may run with a reduced
    // set (in a container, or a VM agent that withholds some).
    let have = sys::permitted_caps().map_err(|e| InitError::setup("capget", None, e))?;
    let keep = have
        & if cfg.insecure {
            u64::MAX >> (63 - last)
        } else {
            sys::cap_mask(sys::DEFAULT_CAPS)
        };
    for cap in 0..=last {
        if keep & (1 << cap) == 0 {
            sys::capbset_drop(cap).map_err(|e| {
                InitError::setup(format!("drop capability {cap} from bounding set"), None, e)
            })?;
        }
    }
    sys::clear_ambient().map_err(|e| InitError::setup("clear ambient capabilities", None, e))?;
    nix::sys::prctl::set_keepcaps(true)
        .map_err(|e| InitError::setup("keep capabilities", None, e))?;
    let gids: Vec<Gid> = cfg
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    match setgroups(&gids) {
        Ok(()) => {}
        // Rootless with a single id: the user namespace was made with setgroups denied (the
        // kernel's rule for an unprivileged gid map); the groups stay as they are.
        Err(nix::errno::Errno::EPERM)
            if std::fs::read_to_string("/proc/self/setgroups")
                .is_ok_and(|s| s.trim() == "deny") => {}
        Err(e) => return Err(InitError::setup("setgroups", None, e)),
    }
    let gid = Gid::from_raw(cfg.gid);
    setresgid(gid, gid, gid)
        .map_err(|e| InitError::setup(format!("setgid {}", cfg.gid), None, e))?;
    let uid = Uid::from_raw(cfg.uid);
    setresuid(uid, uid, uid)
        .map_err(|e| InitError::setup(format!("setuid {}", cfg.uid), None, e))?;
    // Inheritable stays empty (CVE-2022-24769: a non-empty inheritable set lets file
    // capabilities of programs in the image grant more than the bounding set intends).
    sys::capset(keep, keep, 0).map_err(|e| InitError::setup("capset", None, e))?;
    nix::sys::prctl::set_keepcaps(false)
        .map_err(|e| InitError::setup("reset keep capabilities", None, e))?;
    if !cfg.insecure {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| InitError::setup("set no_new_privs", None, e))?;
    }
    Ok(())
}

/// Find `name` the way Docker/runc do: a name with a `/` is used as is, otherwise the first
/// regular file with an execute bit in the image's `PATH` (from `env`, else Docker's default).
/// Runs after pivot_root, so only the sandbox's files are looked at.
fn lookup(name: &str, env: &[String]) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        return Some(name.to_owned());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':').find_map(|dir| {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_uses_the_given_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let noexec = dir.path().join("data");
        std::fs::write(&noexec, b"x").unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];
        assert_eq!(
            lookup("tool", &env),
            Some(exe.to_string_lossy().into_owned())
        );
        assert_eq!(lookup("data", &env), None);
        assert_eq!(lookup("sh", &env), None, "the host PATH must never be used");
        assert_eq!(lookup("/x/y", &env), Some("/x/y".to_owned()));
        assert_eq!(lookup("", &env), None);
    }
}
