//! Test payload for the seccomp tests: `rbuild-sandbox-syscall-probe NAME...` makes each named
//! syscall (with harmless arguments) in a child process of its own and prints `NAME=RESULT`,
//! RESULT being `ok`, the errno's name (`EPERM`, `ENOSYS`, ...) or `SIG<n>` when the child was
//! killed. Copied into a test rootfs with the shared libraries it needs.
#![allow(unsafe_code)]

use std::ffi::CString;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Run one probe; the raw return value of the syscall (negative means errno is set).
fn probe(name: &str) -> Option<libc::c_long> {
    let c = |s: &str| CString::new(s).unwrap();
    let null = std::ptr::null::<libc::c_void>();
    // SAFETY (for every call below): the arguments are integers, null pointers or pointers to
    // live locals of the right size; each call runs in a forked child that exits right after.
    let r: libc::c_long = unsafe {
        match name {
            "getpid" => libc::syscall(libc::SYS_getpid),
            "unshare_user" => libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
            "clone_plain" | "clone_newuser" => {
                let ns = if name == "clone_newuser" {
                    libc::CLONE_NEWUSER
                } else {
                    0
                };
                let flags = (ns | libc::SIGCHLD) as libc::c_ulong;
                let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
                if pid == 0 {
                    libc::_exit(0);
                }
                if pid > 0 {
                    libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
                }
                pid
            }
            "clone3" => libc::syscall(libc::SYS_clone3, null, 0),
            "setns" => libc::syscall(libc::SYS_setns, -1, 0),
            "keyctl" => libc::syscall(libc::SYS_keyctl, 0, -3, 0), // KEYCTL_GET_KEYRING_ID, session
            "add_key" => {
                let (t, d) = (c("user"), c("rbuild-probe"));
                // KEY_SPEC_PROCESS_KEYRING: gone with the process.
                libc::syscall(
                    libc::SYS_add_key,
                    t.as_ptr(),
                    d.as_ptr(),
                    b"x".as_ptr(),
                    1,
                    -2,
                )
            }
            "request_key" => {
                let (t, d) = (c("user"), c("rbuild-probe-none"));
                libc::syscall(libc::SYS_request_key, t.as_ptr(), d.as_ptr(), null, 0)
            }
            "bpf" => libc::syscall(libc::SYS_bpf, 9999, null, 0),
            "perf_event_open" => libc::syscall(libc::SYS_perf_event_open, null, 0, -1, -1, 0),
            "userfaultfd" => libc::syscall(libc::SYS_userfaultfd, 1), // UFFD_USER_MODE_ONLY
            "personality_query" => libc::syscall(libc::SYS_personality, 0xffff_ffffu32),
            "personality_no_randomize" => libc::syscall(libc::SYS_personality, 0x2_0000),
            "personality_read_implies_exec" => libc::syscall(libc::SYS_personality, 0x40_0000),
            "socket_inet" => libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0),
            "socket_vsock" => libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0),
            "clock_settime" => libc::syscall(libc::SYS_clock_settime, 999, null),
            "adjtimex" => {
                let mut t: libc::timex = std::mem::zeroed();
                libc::syscall(libc::SYS_adjtimex, &mut t as *mut libc::timex)
            }
            "reboot" => libc::syscall(libc::SYS_reboot, 0, 0, 0, null), // bad magic
            "swapon" => {
                let p = c("/nonexistent");
                libc::syscall(libc::SYS_swapon, p.as_ptr(), 0)
            }
            "init_module" => libc::syscall(libc::SYS_init_module, null, 0, c"".as_ptr()),
            "mount" => {
                let (s, t, f) = (c("none"), c("/tmp"), c("tmpfs"));
                libc::syscall(libc::SYS_mount, s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, null)
            }
            "fsopen" => {
                let f = c("tmpfs");
                libc::syscall(libc::SYS_fsopen, f.as_ptr(), 0)
            }
            "open_by_handle_at" => libc::syscall(libc::SYS_open_by_handle_at, -1, null, 0),
            "name_to_handle_at" => {
                // handle_bytes 0: the kernel answers EOVERFLOW with the size it needs.
                let mut handle = [0u32; 40];
                let mut mount_id = 0i32;
                let p = c("/");
                libc::syscall(
                    libc::SYS_name_to_handle_at,
                    libc::AT_FDCWD,
                    p.as_ptr(),
                    handle.as_mut_ptr(),
                    &mut mount_id as *mut i32,
                    0,
                )
            }
            "ptrace_traceme" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
            "chroot" => {
                let p = c("/");
                libc::syscall(libc::SYS_chroot, p.as_ptr())
            }
            "quotactl" => libc::syscall(libc::SYS_quotactl, 0, null, 0, null),
            // Newer than Docker's profile (cachestat, 451 on every architecture).
            "cachestat" => libc::syscall(451, -1, null, null, 0),
            "unknown_1000" => libc::syscall(1000),
            #[cfg(target_arch = "x86_64")]
            "iopl0" => libc::syscall(libc::SYS_iopl, 0),
            #[cfg(target_arch = "x86_64")]
            "ioperm_off" => libc::syscall(libc::SYS_ioperm, 0x80, 1, 0),
            #[cfg(target_arch = "x86_64")]
            "sysfs" => libc::syscall(libc::SYS_sysfs, 3),
            #[cfg(target_arch = "x86_64")]
            "x32_getpid" => libc::syscall(0x4000_0000 | libc::SYS_getpid),
            #[cfg(target_arch = "x86_64")]
            "i386_getpid" => {
                let mut eax: i32 = 20; // __NR_getpid of i386
                std::arch::asm!("int 0x80", inout("eax") eax, options(nostack));
                if eax < 0 {
                    *libc::__errno_location() = -eax;
                    -1
                } else {
                    eax.into()
                }
            }
            _ => return None,
        }
    };
    Some(r)
}

fn main() {
    for name in std::env::args().skip(1) {
        // SAFETY: single-threaded; the child only makes syscalls and exits.
        let result = match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let code = match probe(&name) {
                    None => 255,
                    Some(r) if r < 0 => Errno::last_raw().clamp(1, 254),
                    Some(_) => 0,
                };
                // SAFETY: leaves the child without running the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => "ok".to_owned(),
                Ok(WaitStatus::Exited(_, 255)) => "unknown-probe".to_owned(),
                Ok(WaitStatus::Exited(_, e)) => format!("{:?}", Errno::from_raw(e)),
                Ok(WaitStatus::Signaled(_, sig, _)) => format!("{sig:?}"),
                other => format!("wait: {other:?}"),
            },
            Err(e) => format!("fork: {e}"),
        };
        println!("{name}={result}");
    }
}
