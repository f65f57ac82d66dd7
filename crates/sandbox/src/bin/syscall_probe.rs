//! Test payload for the seccomp tests: `rbuild-sandbox-syscall-probe NAME...` makes each named
//! syscall (with harmless arguments) in a child process of its own and prints `NAME=RESULT`,
//! RESULT being `ok`, the errno's name (`EPERM`, `ENOSYS`, ...) or `SIG<n>` when the child was
//! killed. On x86-64, `i386:NAME` makes the same syscall through the i386 ABI (`int 0x80`, with
//! the i386 number), as a 32-bit program would. Copied into a test rootfs with the shared
//! libraries it needs.
#![allow(unsafe_code)]

use libc::c_long;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// How the probe makes its syscalls, with memory for their arguments: below 4 GiB, where an
/// i386 syscall's 32-bit pointers can reach it.
struct Sys {
    i386: bool,
    arena: *mut u8,
    used: usize,
}

const ARENA: usize = 64 * 1024;

impl Sys {
    fn new(i386: bool) -> Sys {
        #[cfg(target_arch = "x86_64")]
        let low = libc::MAP_32BIT;
        #[cfg(not(target_arch = "x86_64"))]
        let low = 0;
        // SAFETY: a fresh anonymous mapping, owned by this struct for the life of the process.
        let arena = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ARENA,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | low,
                -1,
                0,
            )
        };
        assert_ne!(arena, libc::MAP_FAILED, "mmap: {}", Errno::last());
        Sys {
            i386,
            arena: arena.cast(),
            used: 0,
        }
    }

    /// `data` copied into the arena; its address.
    fn bytes(&mut self, data: &[u8]) -> usize {
        assert!(self.used + data.len() <= ARENA, "probe arena full");
        // SAFETY: the range is inside the mapping and not handed out before.
        unsafe {
            let p = self.arena.add(self.used);
            std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
            self.used += data.len().next_multiple_of(16);
            p as usize
        }
    }

    fn cstr(&mut self, s: &str) -> usize {
        self.bytes(format!("{s}\0").as_bytes())
    }

    fn zeroed(&mut self, len: usize) -> usize {
        self.bytes(&vec![0; len])
    }

    /// Make syscall `native` (or `i386` through the i386 ABI); the raw return value, negative
    /// with errno set on failure.
    ///
    /// # Safety
    /// The arguments must be valid for the syscall (integers, null or arena pointers).
    unsafe fn call(&self, native: c_long, i386: u32, args: &[usize]) -> c_long {
        if self.i386 {
            return call_i386(i386, args);
        }
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        libc::syscall(native, a(0), a(1), a(2), a(3), a(4), a(5))
    }
}

/// An i386 syscall through `int 0x80` (the kernel takes the low 32 bits of each register).
#[cfg(target_arch = "x86_64")]
unsafe fn call_i386(nr: u32, args: &[usize]) -> c_long {
    assert!(args.len() <= 5, "int 0x80 probes take at most 5 arguments");
    let a = |i: usize| args.get(i).copied().unwrap_or(0) as u64;
    let mut eax = u64::from(nr);
    // ebx is reserved by the compiler: swap the first argument in and out around the call.
    std::arch::asm!(
        "xchg {b}, rbx",
        "int 0x80",
        "xchg {b}, rbx",
        b = inout(reg) a(0) => _,
        inout("rax") eax,
        inout("rcx") a(1) => _,
        inout("rdx") a(2) => _,
        inout("rsi") a(3) => _,
        inout("rdi") a(4) => _,
        lateout("r8") _,
        lateout("r9") _,
        lateout("r10") _,
        lateout("r11") _,
        options(nostack),
    );
    let r = eax as u32 as i32;
    if r < 0 {
        *libc::__errno_location() = -r;
        -1
    } else {
        r.into()
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn call_i386(_nr: u32, _args: &[usize]) -> c_long {
    *libc::__errno_location() = libc::ENOSYS;
    -1
}

/// Run one probe; the raw return value of the syscall (negative means errno is set). The
/// second number of each call is the i386 one (`arch/x86/entry/syscalls/syscall_32.tbl`).
fn probe(sys: &mut Sys, name: &str) -> Option<c_long> {
    let null = 0usize;
    let neg = |n: isize| n as usize;
    // SAFETY (for every call below): the arguments are integers, null pointers or arena
    // pointers to memory of the right size; each call runs in a forked child that exits right
    // after.
    let r: c_long = unsafe {
        match name {
            "getpid" => sys.call(libc::SYS_getpid, 20, &[]),
            "unshare_user" => sys.call(libc::SYS_unshare, 310, &[libc::CLONE_NEWUSER as usize]),
            "clone_plain" | "clone_newuser" => {
                let ns = if name == "clone_newuser" {
                    libc::CLONE_NEWUSER
                } else {
                    0
                };
                let flags = (ns | libc::SIGCHLD) as usize;
                let pid = sys.call(libc::SYS_clone, 120, &[flags, 0, 0, 0, 0]);
                if pid == 0 {
                    libc::_exit(0);
                }
                if pid > 0 {
                    libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
                }
                pid
            }
            "clone3" => sys.call(libc::SYS_clone3, 435, &[null, 0]),
            "setns" => sys.call(libc::SYS_setns, 346, &[neg(-1), 0]),
            // KEYCTL_GET_KEYRING_ID of the session keyring.
            "keyctl" => sys.call(libc::SYS_keyctl, 288, &[0, neg(-3), 0]),
            "add_key" => {
                let (t, d, p) = (sys.cstr("user"), sys.cstr("rbuild-probe"), sys.cstr("x"));
                // KEY_SPEC_PROCESS_KEYRING: gone with the process.
                sys.call(libc::SYS_add_key, 286, &[t, d, p, 1, neg(-2)])
            }
            "request_key" => {
                let (t, d) = (sys.cstr("user"), sys.cstr("rbuild-probe-none"));
                sys.call(libc::SYS_request_key, 287, &[t, d, null, 0])
            }
            "bpf" => sys.call(libc::SYS_bpf, 357, &[9999, null, 0]),
            "perf_event_open" => sys.call(
                libc::SYS_perf_event_open,
                336,
                &[null, 0, neg(-1), neg(-1), 0],
            ),
            "userfaultfd" => sys.call(libc::SYS_userfaultfd, 374, &[1]), // UFFD_USER_MODE_ONLY
            "personality_query" => sys.call(libc::SYS_personality, 136, &[0xffff_ffff]),
            "personality_no_randomize" => sys.call(libc::SYS_personality, 136, &[0x2_0000]),
            "personality_read_implies_exec" => sys.call(libc::SYS_personality, 136, &[0x40_0000]),
            "socket_inet" | "socket_vsock" => {
                let domain = if name == "socket_inet" {
                    libc::AF_INET
                } else {
                    libc::AF_VSOCK
                };
                let args = [domain as usize, libc::SOCK_STREAM as usize, 0];
                sys.call(libc::SYS_socket, 359, &args)
            }
            // socketcall(SYS_SOCKET, {AF_INET, SOCK_STREAM, 0}): i386 only.
            "socketcall_inet" if sys.i386 => {
                let words = [libc::AF_INET as u32, libc::SOCK_STREAM as u32, 0];
                let args = sys.bytes(&words.map(u32::to_ne_bytes).concat());
                call_i386(102, &[1, args])
            }
            "clock_settime" => sys.call(libc::SYS_clock_settime, 264, &[999, null]),
            "adjtimex" => {
                // Zeroed (modes 0: only read), larger than the timex of either ABI.
                let t = sys.zeroed(512);
                sys.call(libc::SYS_adjtimex, 124, &[t])
            }
            "reboot" => sys.call(libc::SYS_reboot, 88, &[0, 0, 0, null]), // bad magic
            "swapon" => {
                let p = sys.cstr("/nonexistent");
                sys.call(libc::SYS_swapon, 87, &[p, 0])
            }
            "init_module" => {
                let p = sys.cstr("");
                sys.call(libc::SYS_init_module, 128, &[null, 0, p])
            }
            "mount" => {
                let (s, t, f) = (sys.cstr("none"), sys.cstr("/tmp"), sys.cstr("tmpfs"));
                sys.call(libc::SYS_mount, 21, &[s, t, f, 0, null])
            }
            "fsopen" => {
                let f = sys.cstr("tmpfs");
                sys.call(libc::SYS_fsopen, 430, &[f, 0])
            }
            "open_by_handle_at" => sys.call(libc::SYS_open_by_handle_at, 342, &[neg(-1), null, 0]),
            "name_to_handle_at" => {
                // handle_bytes 0: the kernel answers EOVERFLOW with the size it needs.
                let (p, handle, mount_id) = (sys.cstr("/"), sys.zeroed(160), sys.zeroed(4));
                let at_fdcwd = neg(libc::AT_FDCWD as isize);
                sys.call(
                    libc::SYS_name_to_handle_at,
                    341,
                    &[at_fdcwd, p, handle, mount_id, 0],
                )
            }
            "ptrace_traceme" => sys.call(
                libc::SYS_ptrace,
                26,
                &[libc::PTRACE_TRACEME as usize, 0, 0, 0],
            ),
            "chroot" => {
                let p = sys.cstr("/");
                sys.call(libc::SYS_chroot, 61, &[p])
            }
            "quotactl" => sys.call(libc::SYS_quotactl, 131, &[0, null, 0, null]),
            // Newer than Docker's profile (cachestat, 451 on every architecture).
            "cachestat" => sys.call(451, 451, &[neg(-1), null, null, 0]),
            "unknown_1000" => sys.call(1000, 1000, &[]),
            #[cfg(target_arch = "x86_64")]
            "iopl0" => sys.call(libc::SYS_iopl, 110, &[0]),
            #[cfg(target_arch = "x86_64")]
            "ioperm_off" => sys.call(libc::SYS_ioperm, 101, &[0x80, 1, 0]),
            #[cfg(target_arch = "x86_64")]
            "sysfs" => sys.call(libc::SYS_sysfs, 135, &[3]),
            #[cfg(target_arch = "x86_64")]
            "x32_getpid" if !sys.i386 => libc::syscall(0x4000_0000 | libc::SYS_getpid),
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
                let (i386, probe_name) = match name.strip_prefix("i386:") {
                    Some(rest) if cfg!(target_arch = "x86_64") => (true, rest),
                    _ => (false, name.as_str()),
                };
                let code = match probe(&mut Sys::new(i386), probe_name) {
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
