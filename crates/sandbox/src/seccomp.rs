//! The seccomp filter every sandboxed command gets (unless `--security=insecure`): Docker's
//! default profile as it applies to a container with Docker's default capabilities, compiled by
//! hand into a classic-BPF program.
//!
//! # The profile
//! Docker's profile (moby `profiles/seccomp/default.json`) is an allowlist with `EPERM` as the
//! default action; rules that depend on a capability are included only when the container has
//! it. With Docker's default capability set (the one the sandbox keeps, see `sys::DEFAULT_CAPS`)
//! that leaves:
//!
//! * the ordinary syscalls of its main list (about 300 on x86-64), plus `chroot` (`CAP_SYS_CHROOT` is kept),
//!   `ptrace`, `process_vm_readv` and `process_vm_writev` (Docker allows them on kernels ≥ 4.8,
//!   where seccomp can no longer be bypassed through ptrace; rbuild needs a newer kernel anyway),
//!   `name_to_handle_at` (allowed since Docker moved it out of the `CAP_SYS_ADMIN` group), and
//!   `adjtimex`/`clock_adjtime` (reading the clock state is harmless; changing it needs
//!   `CAP_SYS_TIME`, which is dropped), and on x86-64 `arch_prctl` and `modify_ldt`;
//! * `clone` only without namespace flags (`CLONE_NEWNS`, `NEWUTS`, `NEWIPC`, `NEWUSER`,
//!   `NEWPID`, `NEWNET`, `NEWCGROUP`), else `EPERM`;
//! * `clone3` always `ENOSYS`: its flags live in memory a filter cannot read, and `ENOSYS` makes
//!   glibc fall back to `clone`;
//! * `personality` only for the personas Docker allows (`PER_LINUX` 0, `PER_LINUX32` 8,
//!   `ADDR_NO_RANDOMIZE` 0x20000 with either, and the query 0xffffffff), else `EPERM`;
//! * `socket` except for `AF_VSOCK` (host/VM sockets), which gets `EPERM`.
//!
//! Every other syscall number up to the highest one the profile names gets `EPERM`. On x86-64
//! that denies, by number: `syslog`, `uselib`, `ustat`, `sysfs`, `vhangup`, `pivot_root`,
//! `_sysctl`, `acct`, `settimeofday`, `mount`, `umount2`, `swapon`, `swapoff`, `reboot`,
//! `sethostname`, `setdomainname`, `iopl`, `ioperm`, `create_module`, `init_module`,
//! `delete_module`, `get_kernel_syms`, `query_module`, `quotactl`, `nfsservctl`, `getpmsg`,
//! `putpmsg`, `afs_syscall`, `tuxcall`, `security`, `lookup_dcookie`, `clock_settime`,
//! `vserver`, `mbind`, `set_mempolicy`, `get_mempolicy`, `kexec_load`, `add_key`,
//! `request_key`, `keyctl`, `migrate_pages`, `unshare`, `move_pages`, `perf_event_open`,
//! `fanotify_init`, `open_by_handle_at`, `setns`, `kcmp`, `finit_module`, `kexec_file_load`,
//! `bpf`, `userfaultfd`, `open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`,
//! `pidfd_getfd`, `process_madvise`, `mount_setattr` and `quotactl_fd` — kernel keyrings (not
//! namespaced), BPF and perf (kernel attack surface), modules, kexec, reboot, swap, accounting,
//! clocks, quotas, mounts and namespaces (escape surface; most need the dropped
//! `CAP_SYS_ADMIN` anyway, the filter is the second wall), NUMA memory policy and page moving
//! (`CAP_SYS_NICE` is not kept), and obsolete syscalls nobody should call.
//!
//! Numbers *above* the highest one the profile names (syscalls newer than the profile, such as
//! `cachestat`, `fchmodat2`, `mseal`) get `ENOSYS`, as runc gives them under Docker: the kernel
//! might as well be older, and libc falls back to the older call.
//!
//! # Architectures
//! The filter checks `seccomp_data.arch` first and gives each ABI its own table, as Docker's
//! profile does for the sub-architectures it lists with each native one:
//!
//! * x86-64 gets the x86-64 table, and the i386 ABI (`AUDIT_ARCH_I386`: 32-bit binaries, or
//!   `int 0x80` from 64-bit code) an i386 table made of the same lists by name with the i386
//!   numbers ([`I386_ALLOWED`]). The x32 ABI (numbers with `__X32_SYSCALL_BIT`) gets `EPERM`:
//!   Docker lists it too, but most kernels are built without it and images ship no x32
//!   binaries.
//! * AArch64 gets the AArch64 table; AArch32 kills the process (Docker lists it; rbuild has
//!   no arm table, and does not let such a process reach the kernel through an unfiltered door).
//!
//! Any other ABI kills the process. On other architectures there is no profile and a RUN fails
//! unless it asks for `--security=insecure`.
//!
//! The i386 table is Docker's by name, so it differs from x86-64's where the names do. The
//! 32-bit variants in Docker's list (`chown32`, `_llseek`, `mmap2`, `clock_gettime64`,
//! `waitpid`, `sigreturn`, ...) are allowed. `arch_prctl` is in Docker's amd64/x32 rule only,
//! so i386 gets `EPERM` for it (`modify_ldt` and `set_thread_area` are allowed). What Docker's
//! list does not name is denied as on x86-64, which on i386 also covers the pre-`rt_` signal
//! calls (`signal`, `sigaction`, `sigsuspend`, `sigpending`), `nice`, `readdir`, `vm86` and the
//! `old*stat`/`old*uname` calls: no libc of this century makes them. The old multiplexers
//! `socketcall(2)` and `ipc(2)` are in Docker's list and allowed whatever call they carry
//! (older i386 libcs reach every socket and System V IPC call through them). That includes
//! `socketcall(SYS_SOCKET)` for `AF_VSOCK`, whose arguments lie in memory out of a filter's
//! reach: libseccomp turns Docker's `socket` rule into "`socketcall` with call `SYS_SOCKET`"
//! without the domain check (`abi_rule_add` in its `arch.c`), and the unconditional
//! `socketcall` entry allows it anyway, so Docker has the same gap. The direct `socket` (359)
//! gets the `AF_VSOCK` check. `clone` takes its flags in argument 0 on i386 as on x86-64 (only
//! s390 swaps the first two), so the same namespace rule applies.
//!
//! Argument checks read only the low 32 bits of an argument: `clone` flags, `personality` and
//! the `socket` domain are 32-bit values to the kernel, which ignores the upper half.
//!
//! # The program
//! One section per ABI, the native one first (so its syscalls pay one comparison of the arch).
//! In a section, syscall numbers are split into runs of equal treatment, and a balanced tree of
//! `JGE` comparisons finds a number's run in about log2(runs) ≈ 7 steps, so a permitted
//! syscall costs some 12 BPF instructions (JIT-compiled on every common kernel), not a scan of
//! 300 numbers.

use libc::{c_long, sock_filter};

use crate::error::InitError;

/// `AUDIT_ARCH_*` of the native syscall ABI.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// `AUDIT_ARCH_I386`: 32-bit x86 syscalls on an x86-64 kernel.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// `__X32_SYSCALL_BIT`: x32 syscalls are x86-64 syscalls with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
const X32_SYSCALL_BIT: Option<u32> = None;

/// Namespace flags `clone` may not carry (Docker's mask, 0x7e020000).
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// The `personality` values Docker allows.
const PERSONAS: [u32; 5] = [0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `AF_VSOCK`, the one `socket` domain Docker denies.
const AF_VSOCK: u32 = libc::AF_VSOCK as u32;

/// Syscalls allowed without conditions on every supported architecture (Docker's main list,
/// less the names this architecture does not have).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[rustfmt::skip]
const ALLOWED_COMMON: &[c_long] = &[
    libc::SYS_accept, libc::SYS_accept4, libc::SYS_adjtimex, libc::SYS_bind, libc::SYS_brk,
    libc::SYS_capget, libc::SYS_capset, libc::SYS_chdir, libc::SYS_clock_adjtime,
    libc::SYS_clock_getres, libc::SYS_clock_gettime, libc::SYS_clock_nanosleep, libc::SYS_close,
    libc::SYS_close_range, libc::SYS_connect, libc::SYS_copy_file_range, libc::SYS_dup,
    libc::SYS_dup3, libc::SYS_epoll_create1, libc::SYS_epoll_ctl, libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2, libc::SYS_eventfd2, libc::SYS_execve, libc::SYS_execveat,
    libc::SYS_exit, libc::SYS_exit_group, libc::SYS_faccessat, libc::SYS_faccessat2,
    libc::SYS_fadvise64, libc::SYS_fallocate, libc::SYS_fanotify_mark, libc::SYS_fchdir,
    libc::SYS_fchmod, libc::SYS_fchmodat, libc::SYS_fchown, libc::SYS_fchownat, libc::SYS_fcntl,
    libc::SYS_fdatasync, libc::SYS_fgetxattr, libc::SYS_flistxattr, libc::SYS_flock,
    libc::SYS_fremovexattr, libc::SYS_fsetxattr, libc::SYS_fstat, libc::SYS_fstatfs,
    libc::SYS_fsync, libc::SYS_ftruncate, libc::SYS_futex, libc::SYS_futex_waitv,
    libc::SYS_get_robust_list, libc::SYS_getcpu, libc::SYS_getcwd, libc::SYS_getdents64,
    libc::SYS_getegid, libc::SYS_geteuid, libc::SYS_getgid, libc::SYS_getgroups,
    libc::SYS_getitimer, libc::SYS_getpeername, libc::SYS_getpgid, libc::SYS_getpid,
    libc::SYS_getppid, libc::SYS_getpriority, libc::SYS_getrandom, libc::SYS_getresgid,
    libc::SYS_getresuid, libc::SYS_getrlimit, libc::SYS_getrusage, libc::SYS_getsid,
    libc::SYS_getsockname, libc::SYS_getsockopt, libc::SYS_gettid, libc::SYS_gettimeofday,
    libc::SYS_getuid, libc::SYS_getxattr, libc::SYS_inotify_add_watch, libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch, libc::SYS_io_cancel, libc::SYS_io_destroy, libc::SYS_io_getevents,
    libc::SYS_io_setup, libc::SYS_io_submit, libc::SYS_io_uring_enter, libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup, libc::SYS_ioctl, libc::SYS_ioprio_get, libc::SYS_ioprio_set,
    libc::SYS_kill, libc::SYS_landlock_add_rule, libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self, libc::SYS_lgetxattr, libc::SYS_linkat, libc::SYS_listen,
    libc::SYS_listxattr, libc::SYS_llistxattr, libc::SYS_lremovexattr, libc::SYS_lseek,
    libc::SYS_lsetxattr, libc::SYS_madvise, libc::SYS_membarrier, libc::SYS_memfd_create,
    libc::SYS_memfd_secret, libc::SYS_mincore, libc::SYS_mkdirat, libc::SYS_mknodat,
    libc::SYS_mlock, libc::SYS_mlock2, libc::SYS_mlockall, libc::SYS_mmap, libc::SYS_mprotect,
    libc::SYS_mq_getsetattr, libc::SYS_mq_notify, libc::SYS_mq_open, libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend, libc::SYS_mq_unlink, libc::SYS_mremap, libc::SYS_msgctl,
    libc::SYS_msgget, libc::SYS_msgrcv, libc::SYS_msgsnd, libc::SYS_msync, libc::SYS_munlock,
    libc::SYS_munlockall, libc::SYS_munmap, libc::SYS_name_to_handle_at, libc::SYS_nanosleep,
    libc::SYS_newfstatat, libc::SYS_openat, libc::SYS_openat2, libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal, libc::SYS_pipe2, libc::SYS_pkey_alloc, libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect, libc::SYS_ppoll, libc::SYS_prctl, libc::SYS_pread64, libc::SYS_preadv,
    libc::SYS_preadv2, libc::SYS_prlimit64, libc::SYS_process_mrelease, libc::SYS_pselect6,
    libc::SYS_pwrite64, libc::SYS_pwritev, libc::SYS_pwritev2, libc::SYS_read, libc::SYS_readahead,
    libc::SYS_readlinkat, libc::SYS_readv, libc::SYS_recvfrom, libc::SYS_recvmmsg,
    libc::SYS_recvmsg, libc::SYS_remap_file_pages, libc::SYS_removexattr, libc::SYS_renameat,
    libc::SYS_renameat2, libc::SYS_restart_syscall, libc::SYS_rseq, libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending, libc::SYS_rt_sigprocmask, libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn, libc::SYS_rt_sigsuspend, libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo, libc::SYS_sched_get_priority_max, libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getaffinity, libc::SYS_sched_getattr, libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler, libc::SYS_sched_rr_get_interval, libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr, libc::SYS_sched_setparam, libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield, libc::SYS_seccomp, libc::SYS_semctl, libc::SYS_semget, libc::SYS_semop,
    libc::SYS_semtimedop, libc::SYS_sendfile, libc::SYS_sendmmsg, libc::SYS_sendmsg,
    libc::SYS_sendto, libc::SYS_set_robust_list, libc::SYS_set_tid_address, libc::SYS_setfsgid,
    libc::SYS_setfsuid, libc::SYS_setgid, libc::SYS_setgroups, libc::SYS_setitimer,
    libc::SYS_setpgid, libc::SYS_setpriority, libc::SYS_setregid, libc::SYS_setresgid,
    libc::SYS_setresuid, libc::SYS_setreuid, libc::SYS_setrlimit, libc::SYS_setsid,
    libc::SYS_setsockopt, libc::SYS_setuid, libc::SYS_setxattr, libc::SYS_shmat, libc::SYS_shmctl,
    libc::SYS_shmdt, libc::SYS_shmget, libc::SYS_shutdown, libc::SYS_sigaltstack,
    libc::SYS_signalfd4, libc::SYS_socketpair, libc::SYS_splice, libc::SYS_statfs, libc::SYS_statx,
    libc::SYS_symlinkat, libc::SYS_sync, libc::SYS_sync_file_range, libc::SYS_syncfs,
    libc::SYS_sysinfo, libc::SYS_tee, libc::SYS_tgkill, libc::SYS_timer_create,
    libc::SYS_timer_delete, libc::SYS_timer_getoverrun, libc::SYS_timer_gettime,
    libc::SYS_timer_settime, libc::SYS_timerfd_create, libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime, libc::SYS_times, libc::SYS_tkill, libc::SYS_truncate,
    libc::SYS_umask, libc::SYS_uname, libc::SYS_unlinkat, libc::SYS_utimensat, libc::SYS_vmsplice,
    libc::SYS_wait4, libc::SYS_waitid, libc::SYS_write, libc::SYS_writev,
    // Docker's kernel-version rule (≥ 4.8) and its CAP_SYS_CHROOT rule.
    libc::SYS_process_vm_readv, libc::SYS_process_vm_writev, libc::SYS_ptrace, libc::SYS_chroot,
];

/// Allowed syscalls only x86-64 has (legacy calls, and its `arch_prctl`/`modify_ldt` rule).
/// `io_pgetevents` (333) is missing from the libc crate.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED_ARCH: &[c_long] = &[
    libc::SYS_access, libc::SYS_alarm, libc::SYS_chmod, libc::SYS_chown, libc::SYS_creat,
    libc::SYS_dup2, libc::SYS_epoll_create, libc::SYS_epoll_ctl_old, libc::SYS_epoll_wait,
    libc::SYS_epoll_wait_old, libc::SYS_eventfd, libc::SYS_fork, libc::SYS_futimesat,
    libc::SYS_get_thread_area, libc::SYS_getdents, libc::SYS_getpgrp, libc::SYS_inotify_init,
    libc::SYS_lchown, libc::SYS_link, libc::SYS_lstat, libc::SYS_mkdir, libc::SYS_mknod,
    libc::SYS_open, libc::SYS_pause, libc::SYS_pipe, libc::SYS_poll, libc::SYS_readlink,
    libc::SYS_rename, libc::SYS_rmdir, libc::SYS_select, libc::SYS_set_thread_area,
    libc::SYS_signalfd, libc::SYS_stat, libc::SYS_symlink, libc::SYS_time, libc::SYS_unlink,
    libc::SYS_utime, libc::SYS_utimes, libc::SYS_vfork, libc::SYS_arch_prctl, libc::SYS_modify_ldt,
    333, // io_pgetevents
];
/// `io_pgetevents` (292) is missing from the libc crate.
#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[c_long] = &[292];

/// Syscalls allowed without conditions in the i386 ABI: Docker's main list and the rules that
/// apply to x86 (see [`ALLOWED_COMMON`]), by name, in the profile's order for diffing against
/// `default.json`, with the kernel's i386 numbers (`arch/x86/entry/syscalls/syscall_32.tbl`,
/// as in `asm/unistd_32.h` and libseccomp's `arch-x86-syscalls.c`; the libc crate has no i386
/// constants when built for x86-64). Names of the list that i386 does not have: `accept`,
/// `epoll_ctl_old`, `epoll_wait_old`, `newfstatat`, `recv`, `send`, `semop`, `semtimedop`
/// (i386 programs reach the socket and IPC ones through `socketcall` and `ipc`).
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const I386_ALLOWED: &[(&str, u32)] = &[
    ("accept4", 364), ("access", 33), ("adjtimex", 124), ("alarm", 27), ("bind", 361), ("brk", 45),
    ("capget", 184), ("capset", 185), ("chdir", 12), ("chmod", 15), ("chown", 182),
    ("chown32", 212), ("clock_adjtime", 343), ("clock_adjtime64", 405), ("clock_getres", 266),
    ("clock_getres_time64", 406), ("clock_gettime", 265), ("clock_gettime64", 403),
    ("clock_nanosleep", 267), ("clock_nanosleep_time64", 407), ("close", 6), ("close_range", 436),
    ("connect", 362), ("copy_file_range", 377), ("creat", 8), ("dup", 41), ("dup2", 63),
    ("dup3", 330), ("epoll_create", 254), ("epoll_create1", 329), ("epoll_ctl", 255),
    ("epoll_pwait", 319), ("epoll_pwait2", 441), ("epoll_wait", 256), ("eventfd", 323),
    ("eventfd2", 328), ("execve", 11), ("execveat", 358), ("exit", 1), ("exit_group", 252),
    ("faccessat", 307), ("faccessat2", 439), ("fadvise64", 250), ("fadvise64_64", 272),
    ("fallocate", 324), ("fanotify_mark", 339), ("fchdir", 133), ("fchmod", 94), ("fchmodat", 306),
    ("fchown", 95), ("fchown32", 207), ("fchownat", 298), ("fcntl", 55), ("fcntl64", 221),
    ("fdatasync", 148), ("fgetxattr", 231), ("flistxattr", 234), ("flock", 143), ("fork", 2),
    ("fremovexattr", 237), ("fsetxattr", 228), ("fstat", 108), ("fstat64", 197), ("fstatat64", 300),
    ("fstatfs", 100), ("fstatfs64", 269), ("fsync", 118), ("ftruncate", 93), ("ftruncate64", 194),
    ("futex", 240), ("futex_time64", 422), ("futex_waitv", 449), ("futimesat", 299),
    ("getcpu", 318), ("getcwd", 183), ("getdents", 141), ("getdents64", 220), ("getegid", 50),
    ("getegid32", 202), ("geteuid", 49), ("geteuid32", 201), ("getgid", 47), ("getgid32", 200),
    ("getgroups", 80), ("getgroups32", 205), ("getitimer", 105), ("getpeername", 368),
    ("getpgid", 132), ("getpgrp", 65), ("getpid", 20), ("getppid", 64), ("getpriority", 96),
    ("getrandom", 355), ("getresgid", 171), ("getresgid32", 211), ("getresuid", 165),
    ("getresuid32", 209), ("getrlimit", 76), ("get_robust_list", 312), ("getrusage", 77),
    ("getsid", 147), ("getsockname", 367), ("getsockopt", 365), ("get_thread_area", 244),
    ("gettid", 224), ("gettimeofday", 78), ("getuid", 24), ("getuid32", 199), ("getxattr", 229),
    ("inotify_add_watch", 292), ("inotify_init", 291), ("inotify_init1", 332),
    ("inotify_rm_watch", 293), ("io_cancel", 249), ("ioctl", 54), ("io_destroy", 246),
    ("io_getevents", 247), ("io_pgetevents", 385), ("io_pgetevents_time64", 416),
    ("ioprio_get", 290), ("ioprio_set", 289), ("io_setup", 245), ("io_submit", 248),
    ("io_uring_enter", 426), ("io_uring_register", 427), ("io_uring_setup", 425), ("ipc", 117),
    ("kill", 37), ("landlock_add_rule", 445), ("landlock_create_ruleset", 444),
    ("landlock_restrict_self", 446), ("lchown", 16), ("lchown32", 198), ("lgetxattr", 230),
    ("link", 9), ("linkat", 303), ("listen", 363), ("listxattr", 232), ("llistxattr", 233),
    ("_llseek", 140), ("lremovexattr", 236), ("lseek", 19), ("lsetxattr", 227), ("lstat", 107),
    ("lstat64", 196), ("madvise", 219), ("membarrier", 375), ("memfd_create", 356),
    ("memfd_secret", 447), ("mincore", 218), ("mkdir", 39), ("mkdirat", 296), ("mknod", 14),
    ("mknodat", 297), ("mlock", 150), ("mlock2", 376), ("mlockall", 152), ("mmap", 90),
    ("mmap2", 192), ("mprotect", 125), ("mq_getsetattr", 282), ("mq_notify", 281), ("mq_open", 277),
    ("mq_timedreceive", 280), ("mq_timedreceive_time64", 419), ("mq_timedsend", 279),
    ("mq_timedsend_time64", 418), ("mq_unlink", 278), ("mremap", 163), ("msgctl", 402),
    ("msgget", 399), ("msgrcv", 401), ("msgsnd", 400), ("msync", 144), ("munlock", 151),
    ("munlockall", 153), ("munmap", 91), ("name_to_handle_at", 341), ("nanosleep", 162),
    ("_newselect", 142), ("open", 5), ("openat", 295), ("openat2", 437), ("pause", 29),
    ("pidfd_open", 434), ("pidfd_send_signal", 424), ("pipe", 42), ("pipe2", 331),
    ("pkey_alloc", 381), ("pkey_free", 382), ("pkey_mprotect", 380), ("poll", 168), ("ppoll", 309),
    ("ppoll_time64", 414), ("prctl", 172), ("pread64", 180), ("preadv", 333), ("preadv2", 378),
    ("prlimit64", 340), ("process_mrelease", 448), ("pselect6", 308), ("pselect6_time64", 413),
    ("pwrite64", 181), ("pwritev", 334), ("pwritev2", 379), ("read", 3), ("readahead", 225),
    ("readlink", 85), ("readlinkat", 305), ("readv", 145), ("recvfrom", 371), ("recvmmsg", 337),
    ("recvmmsg_time64", 417), ("recvmsg", 372), ("remap_file_pages", 257), ("removexattr", 235),
    ("rename", 38), ("renameat", 302), ("renameat2", 353), ("restart_syscall", 0), ("rmdir", 40),
    ("rseq", 386), ("rt_sigaction", 174), ("rt_sigpending", 176), ("rt_sigprocmask", 175),
    ("rt_sigqueueinfo", 178), ("rt_sigreturn", 173), ("rt_sigsuspend", 179),
    ("rt_sigtimedwait", 177), ("rt_sigtimedwait_time64", 421), ("rt_tgsigqueueinfo", 335),
    ("sched_getaffinity", 242), ("sched_getattr", 352), ("sched_getparam", 155),
    ("sched_get_priority_max", 159), ("sched_get_priority_min", 160), ("sched_getscheduler", 157),
    ("sched_rr_get_interval", 161), ("sched_rr_get_interval_time64", 423),
    ("sched_setaffinity", 241), ("sched_setattr", 351), ("sched_setparam", 154),
    ("sched_setscheduler", 156), ("sched_yield", 158), ("seccomp", 354), ("select", 82),
    ("semctl", 394), ("semget", 393), ("semtimedop_time64", 420), ("sendfile", 187),
    ("sendfile64", 239), ("sendmmsg", 345), ("sendmsg", 370), ("sendto", 369), ("setfsgid", 139),
    ("setfsgid32", 216), ("setfsuid", 138), ("setfsuid32", 215), ("setgid", 46), ("setgid32", 214),
    ("setgroups", 81), ("setgroups32", 206), ("setitimer", 104), ("setpgid", 57),
    ("setpriority", 97), ("setregid", 71), ("setregid32", 204), ("setresgid", 170),
    ("setresgid32", 210), ("setresuid", 164), ("setresuid32", 208), ("setreuid", 70),
    ("setreuid32", 203), ("setrlimit", 75), ("set_robust_list", 311), ("setsid", 66),
    ("setsockopt", 366), ("set_thread_area", 243), ("set_tid_address", 258), ("setuid", 23),
    ("setuid32", 213), ("setxattr", 226), ("shmat", 397), ("shmctl", 396), ("shmdt", 398),
    ("shmget", 395), ("shutdown", 373), ("sigaltstack", 186), ("signalfd", 321), ("signalfd4", 327),
    ("sigprocmask", 126), ("sigreturn", 119), ("socketcall", 102), ("socketpair", 360),
    ("splice", 313), ("stat", 106), ("stat64", 195), ("statfs", 99), ("statfs64", 268),
    ("statx", 383), ("symlink", 83), ("symlinkat", 304), ("sync", 36), ("sync_file_range", 314),
    ("syncfs", 344), ("sysinfo", 116), ("tee", 315), ("tgkill", 270), ("time", 13),
    ("timer_create", 259), ("timer_delete", 263), ("timer_getoverrun", 262), ("timer_gettime", 261),
    ("timer_gettime64", 408), ("timer_settime", 260), ("timer_settime64", 409),
    ("timerfd_create", 322), ("timerfd_gettime", 326), ("timerfd_gettime64", 410),
    ("timerfd_settime", 325), ("timerfd_settime64", 411), ("times", 43), ("tkill", 238),
    ("truncate", 92), ("truncate64", 193), ("ugetrlimit", 191), ("umask", 60), ("uname", 122),
    ("unlink", 10), ("unlinkat", 301), ("utime", 30), ("utimensat", 320), ("utimensat_time64", 412),
    ("utimes", 271), ("vfork", 190), ("vmsplice", 316), ("wait4", 114), ("waitid", 284),
    ("waitpid", 7), ("write", 4), ("writev", 146),
    // Docker's kernel-version rule (≥ 4.8), its CAP_SYS_CHROOT rule and its modify_ldt rule.
    ("process_vm_readv", 347), ("process_vm_writev", 348), ("ptrace", 26), ("chroot", 61),
    ("modify_ldt", 123),
];

/// The i386 numbers of the syscalls with a rule of their own.
#[cfg(target_arch = "x86_64")]
mod i386 {
    pub(super) const CLONE: u32 = 120;
    pub(super) const PERSONALITY: u32 = 136;
    pub(super) const SOCKET: u32 = 359;
    pub(super) const CLONE3: u32 = 435;
}

/// What the filter does with one syscall number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Allow,
    Errno(u16),
    /// Allow unless a namespace flag is set in argument 0.
    Clone,
    /// Allow only the personas of [`PERSONAS`].
    Personality,
    /// Allow unless the domain (argument 0) is `AF_VSOCK`.
    Socket,
}

/// One syscall ABI of the filter: its `AUDIT_ARCH_*` value and what happens to its numbers.
#[derive(Debug)]
struct Abi {
    arch: u32,
    /// Numbers with this bit set get `EPERM` (x32 on x86-64).
    x32_bit: Option<u32>,
    /// The rule of every number from 0 to the highest one the profile names (the index is the
    /// number); higher numbers get `ENOSYS`.
    rules: Vec<Rule>,
}

/// The rule table of one ABI: `allowed` unconditionally, `special` as given (`clone`, `clone3`,
/// `personality`, `socket`), every other number up to the highest of both `EPERM`.
fn rules(allowed: impl Iterator<Item = u32> + Clone, special: [(u32, Rule); 4]) -> Vec<Rule> {
    let max = allowed
        .clone()
        .chain(special.iter().map(|(nr, _)| *nr))
        .max()
        .unwrap_or(0);
    let mut rules = vec![Rule::Errno(libc::EPERM as u16); max as usize + 1];
    for nr in allowed {
        rules[nr as usize] = Rule::Allow;
    }
    for (nr, rule) in special {
        rules[nr as usize] = rule;
    }
    rules
}

/// The native ABI's table.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn native_rules() -> Vec<Rule> {
    let nr = |n: c_long| n as u32;
    rules(
        ALLOWED_COMMON.iter().chain(ALLOWED_ARCH).map(|n| nr(*n)),
        [
            (nr(libc::SYS_clone), Rule::Clone),
            (nr(libc::SYS_clone3), Rule::Errno(libc::ENOSYS as u16)),
            (nr(libc::SYS_personality), Rule::Personality),
            (nr(libc::SYS_socket), Rule::Socket),
        ],
    )
}

/// The i386 ABI's table.
#[cfg(target_arch = "x86_64")]
fn i386_rules() -> Vec<Rule> {
    rules(
        I386_ALLOWED.iter().map(|(_, nr)| *nr),
        [
            (i386::CLONE, Rule::Clone),
            (i386::CLONE3, Rule::Errno(libc::ENOSYS as u16)),
            (i386::PERSONALITY, Rule::Personality),
            (i386::SOCKET, Rule::Socket),
        ],
    )
}

/// Every ABI the filter lets through, the native one first.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn abis() -> Vec<Abi> {
    let native = Abi {
        arch: AUDIT_ARCH,
        x32_bit: X32_SYSCALL_BIT,
        rules: native_rules(),
    };
    #[cfg(target_arch = "x86_64")]
    {
        let i386 = Abi {
            arch: AUDIT_ARCH_I386,
            x32_bit: None,
            rules: i386_rules(),
        };
        vec![native, i386]
    }
    #[cfg(not(target_arch = "x86_64"))]
    vec![native]
}

/// The default filter as a BPF program, or an error on an architecture without a profile.
pub(crate) fn default_filter() -> Result<Vec<sock_filter>, InitError> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        Ok(compile(&abis()))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Err(InitError::setup(
            format!(
                "seccomp filter: no profile for the {} architecture (only RUN --security=insecure runs here)",
                std::env::consts::ARCH
            ),
            None,
            nix::errno::Errno::ENOSYS,
        ))
    }
}

// Offsets in `struct seccomp_data`: nr (u32), arch (u32), instruction_pointer (u64), args[6].
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const OFF_ARG0_LO: u32 = 16;
#[cfg(target_endian = "big")]
const OFF_ARG0_LO: u32 = 20;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn ret_errno(errno: u16) -> u32 {
    libc::SECCOMP_RET_ERRNO | u32::from(errno)
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn load(offset: u32) -> sock_filter {
    stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(k: u32) -> sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, k)
}

/// Compile the sections of `abis`, in order; any other ABI kills the process.
fn compile(abis: &[Abi]) -> Vec<sock_filter> {
    let mut prog = vec![load(OFF_ARCH)];
    for abi in abis {
        let section = section(abi);
        // The arch matches: skip the jump over the section.
        prog.extend([
            jump(libc::BPF_JEQ, abi.arch, 1, 0),
            stmt(libc::BPF_JMP | libc::BPF_JA, section.len() as u32),
        ]);
        prog.extend(section);
    }
    prog.push(ret(RET_KILL));
    prog
}

/// The instructions deciding a syscall of one ABI (every path ends in a return).
fn section(abi: &Abi) -> Vec<sock_filter> {
    let mut prog = vec![load(OFF_NR)];
    if let Some(bit) = abi.x32_bit {
        prog.extend([
            jump(libc::BPF_JGE, bit, 0, 1),
            ret(ret_errno(libc::EPERM as u16)),
        ]);
    }
    let last = abi.rules.len().saturating_sub(1) as u32;
    prog.extend([
        jump(libc::BPF_JGT, last, 0, 1),
        ret(ret_errno(libc::ENOSYS as u16)),
    ]);
    // Runs of equal rules: (first number, rule).
    let mut runs: Vec<(u32, Rule)> = Vec::new();
    for (nr, rule) in abi.rules.iter().enumerate() {
        if runs.last().map(|(_, r)| r) != Some(rule) {
            runs.push((nr as u32, *rule));
        }
    }
    prog.extend(tree(&runs));
    prog
}

/// A search tree over `runs` (the accumulator holds the syscall number).
fn tree(runs: &[(u32, Rule)]) -> Vec<sock_filter> {
    match runs {
        [] => vec![ret(ret_errno(libc::EPERM as u16))],
        [(_, rule)] => leaf(*rule),
        _ => {
            let mid = runs.len() / 2;
            let (left, right) = (tree(&runs[..mid]), tree(&runs[mid..]));
            let mut out = Vec::with_capacity(left.len() + right.len() + 2);
            // nr >= the first number of the right half: skip the left subtree.
            match u8::try_from(left.len()) {
                Ok(skip) => out.push(jump(libc::BPF_JGE, runs[mid].0, skip, 0)),
                Err(_) => {
                    out.push(jump(libc::BPF_JGE, runs[mid].0, 0, 1));
                    out.push(stmt(libc::BPF_JMP | libc::BPF_JA, left.len() as u32));
                }
            }
            out.extend(left);
            out.extend(right);
            out
        }
    }
}

/// The instructions deciding one rule.
fn leaf(rule: Rule) -> Vec<sock_filter> {
    let eperm = ret_errno(libc::EPERM as u16);
    match rule {
        Rule::Allow => vec![ret(RET_ALLOW)],
        Rule::Errno(e) => vec![ret(ret_errno(e))],
        Rule::Clone => vec![
            load(OFF_ARG0_LO),
            jump(libc::BPF_JSET, CLONE_NS_FLAGS, 0, 1),
            ret(eperm),
            ret(RET_ALLOW),
        ],
        Rule::Socket => vec![
            load(OFF_ARG0_LO),
            jump(libc::BPF_JEQ, AF_VSOCK, 0, 1),
            ret(eperm),
            ret(RET_ALLOW),
        ],
        Rule::Personality => {
            let mut out = vec![load(OFF_ARG0_LO)];
            let n = PERSONAS.len();
            for (i, p) in PERSONAS.iter().enumerate() {
                // On a match jump over the remaining comparisons and the EPERM to the ALLOW.
                out.push(jump(libc::BPF_JEQ, *p, (n - i) as u8, 0));
            }
            out.extend([ret(eperm), ret(RET_ALLOW)]);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a program returns for one `seccomp_data`: a small interpreter of the instructions
    /// [`compile`] emits, checking every jump stays inside the program.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[16..24].copy_from_slice(&arg0.to_ne_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = prog.get(pc).expect("jump out of the program");
            let code = u32::from(ins.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let o = ins.k as usize;
                    acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
                }
                c if c == libc::BPF_RET | libc::BPF_K => return ins.k,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += ins.k as usize,
                c if c & 0x07 == libc::BPF_JMP => {
                    let taken = match c & 0xf0 {
                        op if op == libc::BPF_JEQ => acc == ins.k,
                        op if op == libc::BPF_JGE => acc >= ins.k,
                        op if op == libc::BPF_JGT => acc > ins.k,
                        op if op == libc::BPF_JSET => acc & ins.k != 0,
                        _ => panic!("unexpected jump {c:#x}"),
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                _ => panic!("unexpected instruction {code:#x}"),
            }
        }
    }

    /// With argument 0 zero, every conditional rule allows.
    fn assert_every_number_gets_its_rule(prog: &[sock_filter], arch: u32, rules: &[Rule]) {
        for (nr, rule) in rules.iter().enumerate() {
            let want = match rule {
                Rule::Errno(e) => ret_errno(*e),
                _ => RET_ALLOW,
            };
            assert_eq!(
                run(prog, arch, nr as u32, 0),
                want,
                "arch {arch:#x} syscall {nr}"
            );
        }
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn every_number_gets_its_rule() {
        let prog = default_filter().unwrap();
        let abis = abis();
        assert!(
            prog.len() < 400 * abis.len(),
            "{} instructions for {} ABIs",
            prog.len(),
            abis.len()
        );
        for abi in &abis {
            assert_every_number_gets_its_rule(&prog, abi.arch, &abi.rules);
            for nr in [abi.rules.len() as u32, 1000, 0x3fff_ffff] {
                assert_eq!(run(&prog, abi.arch, nr, 0), ENOSYS, "syscall {nr}");
            }
        }
    }

    /// The native section comes first: a native syscall pays one comparison of the arch.
    #[test]
    fn the_native_abi_is_checked_first() {
        let prog = default_filter().unwrap();
        assert_eq!(prog[1].k, AUDIT_ARCH);
        assert_eq!(
            u32::from(prog[1].code),
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K
        );
    }

    #[test]
    fn docker_denies_these_and_allows_those() {
        let prog = default_filter().unwrap();
        let verdict = |nr: c_long| run(&prog, AUDIT_ARCH, nr as u32, 0);
        let denied = [
            libc::SYS_add_key,
            libc::SYS_keyctl,
            libc::SYS_request_key,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
            libc::SYS_open_by_handle_at,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_delete_module,
            libc::SYS_swapon,
            libc::SYS_swapoff,
            libc::SYS_reboot,
            libc::SYS_acct,
            libc::SYS_lookup_dcookie,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_move_mount,
            libc::SYS_fsopen,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fspick,
            libc::SYS_open_tree,
            libc::SYS_mount_setattr,
            libc::SYS_pivot_root,
            libc::SYS_settimeofday,
            libc::SYS_clock_settime,
            libc::SYS_userfaultfd,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_quotactl,
            libc::SYS_quotactl_fd,
            libc::SYS_nfsservctl,
            libc::SYS_sethostname,
            libc::SYS_setdomainname,
            libc::SYS_syslog,
            libc::SYS_kcmp,
            libc::SYS_pidfd_getfd,
            libc::SYS_process_madvise,
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_move_pages,
        ];
        for nr in denied {
            assert_eq!(verdict(nr), EPERM, "syscall {nr} must be denied");
        }
        #[cfg(target_arch = "x86_64")]
        for nr in [
            libc::SYS_iopl,
            libc::SYS_ioperm,
            libc::SYS_uselib,
            libc::SYS_ustat,
            libc::SYS_sysfs,
            libc::SYS__sysctl,
            174, // create_module
            177, // get_kernel_syms
            178, // query_module
        ] {
            assert_eq!(verdict(nr), EPERM, "syscall {nr} must be denied");
        }
        let allowed = [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_wait4,
            libc::SYS_adjtimex,
            libc::SYS_clock_adjtime,
            libc::SYS_name_to_handle_at,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_chroot,
            libc::SYS_seccomp,
            libc::SYS_io_uring_setup,
            libc::SYS_futex_waitv,
        ];
        for nr in allowed {
            assert_eq!(verdict(nr), RET_ALLOW, "syscall {nr} must be allowed");
        }
        // Newer than the profile: ENOSYS, so libc falls back.
        assert_eq!(verdict(libc::SYS_fchmodat2), ENOSYS);
        assert_eq!(verdict(libc::SYS_mseal), ENOSYS);
    }

    /// The x86-64 numbers Docker's profile denies with the default capabilities (computed from
    /// moby's `default.json` and the kernel's `unistd_64.h`: every number up to 449 whose name
    /// is in none of the rules that apply), the list in the module documentation.
    #[cfg(target_arch = "x86_64")]
    #[rustfmt::skip]
    const DOCKER_DENIED_X86_64: &[u32] = &[
        103, 134, 136, 139, 153, 155, 156, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173,
        174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 212, 227, 236, 237, 238, 239,
        246, 248, 249, 250, 256, 272, 279, 298, 300, 304, 308, 312, 313, 320, 321, 323, 428, 429,
        430, 431, 432, 433, 438, 440, 442, 443,
    ];

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_denies_exactly_what_docker_denies() {
        let prog = default_filter().unwrap();
        // 335..=423 are unallocated (uretprobe at 335 is only ever called by the kernel's own
        // trampoline, which seccomp lets through), so leave them out of the comparison.
        let denied: Vec<u32> = (0..=334)
            .chain(424..=449)
            .filter(|nr| run(&prog, AUDIT_ARCH, *nr, 0) == EPERM)
            .collect();
        assert_eq!(denied, DOCKER_DENIED_X86_64);
        assert_eq!(
            run(&prog, AUDIT_ARCH, 450, 0),
            ENOSYS,
            "first number above the profile"
        );
    }

    /// The argument rules of one ABI, given its numbers of `clone`, `clone3`, `personality`
    /// and `socket`.
    fn assert_argument_rules(arch: u32, [clone, clone3, personality, socket]: [u32; 4]) {
        let prog = default_filter().unwrap();
        let v = |nr: u32, arg0: u64| run(&prog, arch, nr, arg0);
        let sigchld = libc::SIGCHLD as u64;
        assert_eq!(v(clone, sigchld), RET_ALLOW);
        let threads = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(v(clone, threads), RET_ALLOW);
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(v(clone, sigchld | ns as u64), EPERM, "{ns:#x}");
        }
        assert_eq!(v(clone3, 0), ENOSYS);
        for p in PERSONAS {
            assert_eq!(v(personality, u64::from(p)), RET_ALLOW, "{p:#x}");
        }
        for p in [0x0040_0000u64, 0x0001, 0x0800_0000, 0x0020_0000] {
            assert_eq!(v(personality, p), EPERM, "{p:#x}");
        }
        assert_eq!(v(socket, libc::AF_INET as u64), RET_ALLOW);
        assert_eq!(v(socket, libc::AF_UNIX as u64), RET_ALLOW);
        assert_eq!(v(socket, libc::AF_NETLINK as u64), RET_ALLOW);
        assert_eq!(v(socket, libc::AF_VSOCK as u64), EPERM);
    }

    #[test]
    fn argument_rules() {
        let nr = |n: c_long| n as u32;
        assert_argument_rules(
            AUDIT_ARCH,
            [
                nr(libc::SYS_clone),
                nr(libc::SYS_clone3),
                nr(libc::SYS_personality),
                nr(libc::SYS_socket),
            ],
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_argument_rules() {
        assert_argument_rules(
            AUDIT_ARCH_I386,
            [i386::CLONE, i386::CLONE3, i386::PERSONALITY, i386::SOCKET],
        );
        // socketcall carries its arguments in memory: allowed whatever the call, as by Docker.
        let prog = default_filter().unwrap();
        for call in [1u64, 2, 3, 5, 17, 20] {
            assert_eq!(
                run(&prog, AUDIT_ARCH_I386, 102, call),
                RET_ALLOW,
                "socketcall {call}"
            );
        }
    }

    /// The i386 numbers Docker's profile denies with the default capabilities (computed from
    /// moby's `default.json` and the kernel's `unistd_32.h` as [`DOCKER_DENIED_X86_64`]).
    #[cfg(target_arch = "x86_64")]
    #[rustfmt::skip]
    const DOCKER_DENIED_I386: &[u32] = &[
        17, 18, 21, 22, 25, 28, 31, 32, 34, 35, 44, 48, 51, 52, 53, 56, 58, 59, 62, 67, 68, 69, 72,
        73, 74, 79, 84, 86, 87, 88, 89, 98, 101, 103, 109, 110, 111, 112, 113, 115, 121, 127, 128,
        129, 130, 131, 134, 135, 137, 149, 166, 167, 169, 188, 189, 217, 253, 264, 273, 274, 275,
        276, 283, 286, 287, 288, 294, 310, 317, 336, 338, 342, 346, 349, 350, 357, 374, 384, 404,
        428, 429, 430, 431, 432, 433, 438, 440, 442, 443,
    ];
    /// i386 numbers below the highest named one that no syscall has: denied like the others,
    /// as by Docker (libseccomp's default action).
    #[cfg(target_arch = "x86_64")]
    const UNALLOCATED_I386: &[u32] = &[222, 223, 251, 285, 387, 388, 389, 390, 391, 392, 415];

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_denies_exactly_what_docker_denies() {
        let prog = default_filter().unwrap();
        let denied: Vec<u32> = (0..=449)
            .filter(|nr| run(&prog, AUDIT_ARCH_I386, *nr, 0) == EPERM)
            .collect();
        let mut want = [DOCKER_DENIED_I386, UNALLOCATED_I386].concat();
        want.sort_unstable();
        assert_eq!(denied, want);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, 450, 0), ENOSYS);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, 451, 0), ENOSYS, "cachestat");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_numbers_are_i386_numbers() {
        let prog = default_filter().unwrap();
        let x86_64 = |nr: u32| run(&prog, AUDIT_ARCH, nr, 0);
        let i386 = |nr: u32| run(&prog, AUDIT_ARCH_I386, nr, 0);
        // The same number, another syscall: each ABI has its own table.
        assert_eq!((x86_64(21), i386(21)), (RET_ALLOW, EPERM), "access / mount");
        assert_eq!(
            (x86_64(165), i386(165)),
            (EPERM, RET_ALLOW),
            "mount / getresuid"
        );
        assert_eq!(
            (x86_64(101), i386(101)),
            (RET_ALLOW, EPERM),
            "ptrace / ioperm"
        );
        assert_eq!(
            (x86_64(26), i386(26)),
            (RET_ALLOW, RET_ALLOW),
            "msync / ptrace"
        );
        let nr_of = |n: &str| {
            I386_ALLOWED
                .iter()
                .find(|(name, _)| *name == n)
                .map(|e| e.1)
        };
        // What 32-bit programs need, and names Docker lists only for 32-bit ABIs.
        for n in [
            "read",
            "write",
            "open",
            "close",
            "execve",
            "exit_group",
            "brk",
            "mmap2",
            "_llseek",
            "fstat64",
            "stat64",
            "fcntl64",
            "getdents64",
            "set_thread_area",
            "modify_ldt",
            "socketcall",
            "ipc",
            "waitpid",
            "sigreturn",
            "sigprocmask",
            "rt_sigaction",
            "clock_gettime64",
            "futex_time64",
            "chown32",
            "getuid32",
            "ugetrlimit",
            "_newselect",
            "ptrace",
            "chroot",
            "process_vm_readv",
            "name_to_handle_at",
            "futex_waitv",
        ] {
            let nr = nr_of(n).unwrap_or_else(|| panic!("{n} missing from the i386 table"));
            assert_eq!(i386(nr), RET_ALLOW, "{n} ({nr})");
        }
        // Denied: not in Docker's list for x86 (its arch_prctl rule is amd64/x32 only), behind
        // a dropped capability, or obsolete.
        for (n, nr) in [
            ("arch_prctl", 384),
            ("mount", 21),
            ("umount", 22),
            ("umount2", 52),
            ("stime", 25),
            ("settimeofday", 79),
            ("clock_settime", 264),
            ("clock_settime64", 404),
            ("iopl", 110),
            ("ioperm", 101),
            ("vm86old", 113),
            ("vm86", 166),
            ("unshare", 310),
            ("setns", 346),
            ("keyctl", 288),
            ("add_key", 286),
            ("bpf", 357),
            ("perf_event_open", 336),
            ("userfaultfd", 374),
            ("open_by_handle_at", 342),
            ("init_module", 128),
            ("kexec_load", 283),
            ("reboot", 88),
            ("swapon", 87),
            ("syslog", 103),
            ("sigaction", 67),
            ("signal", 48),
            ("nice", 34),
            ("fsopen", 430),
        ] {
            assert_eq!(nr_of(n), None, "{n} in the i386 table");
            assert_eq!(i386(nr), EPERM, "{n} ({nr})");
        }
    }

    #[test]
    fn other_abis_are_killed_and_x32_denied() {
        let prog = default_filter().unwrap();
        let known: Vec<u32> = abis().iter().map(|abi| abi.arch).collect();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(known, [AUDIT_ARCH, AUDIT_ARCH_I386]);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(known, [AUDIT_ARCH]);
        // i386, ARM, none, RISC-V 64, x86-64, AArch64.
        for arch in [
            0x4000_0003u32,
            0x4000_0028,
            0,
            0xc000_00f3,
            0xc000_003e,
            0xc000_00b7,
        ] {
            if !known.contains(&arch) {
                assert_eq!(run(&prog, arch, 0, 0), RET_KILL, "arch {arch:#x}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        for nr in [0x4000_0000u32 | 39, 0x4000_0000 | 0x200, u32::MAX] {
            assert_eq!(run(&prog, AUDIT_ARCH, nr, 0), EPERM, "x32 syscall {nr:#x}");
        }
    }

    #[test]
    fn long_subtrees_use_a_long_jump() {
        // 600 alternating runs make subtrees longer than a conditional jump can skip.
        let rules: Vec<Rule> = (0..600)
            .map(|i| {
                if i % 2 == 0 {
                    Rule::Allow
                } else {
                    Rule::Errno(1)
                }
            })
            .collect();
        let abi = Abi {
            arch: AUDIT_ARCH,
            x32_bit: None,
            rules,
        };
        // Two such sections: the jump over the first is longer than 255 too.
        let other = Abi {
            arch: 0x4000_0003,
            x32_bit: None,
            rules: abi.rules.iter().rev().copied().collect(),
        };
        let prog = compile(&[abi, other]);
        assert!(prog.len() > 512);
        for (arch, n) in [(AUDIT_ARCH, 0), (0x4000_0003, 1)] {
            for nr in 0..600u32 {
                let want = if (nr + n) % 2 == 0 {
                    RET_ALLOW
                } else {
                    ret_errno(1)
                };
                assert_eq!(run(&prog, arch, nr, 0), want, "arch {arch:#x} syscall {nr}");
            }
        }
    }
}
