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
//! The filter checks `seccomp_data.arch` first. The native ABI (x86-64 or AArch64) gets the
//! table; on x86-64 the x32 ABI (numbers with `__X32_SYSCALL_BIT`) gets `EPERM`. Any other ABI
//! — i386 through `int 0x80` on x86-64, AArch32 on AArch64 — kills the process: Docker keeps a
//! second table for these, rbuild does not run 32-bit binaries in RUN steps and does not let
//! them reach the kernel through an unfiltered door. On other architectures there is no
//! profile and a RUN fails unless it asks for `--security=insecure`.
//!
//! Argument checks read only the low 32 bits of an argument: `clone` flags, `personality` and
//! the `socket` domain are 32-bit values to the kernel, which ignores the upper half.
//!
//! # The program
//! Syscall numbers are split into runs of equal treatment, and a balanced tree of `JGE`
//! comparisons finds a number's run in about log2(runs) ≈ 7 steps, so a permitted syscall costs
//! some 12 BPF instructions (JIT-compiled on every common kernel), not a scan of 300 numbers.

use libc::{c_long, sock_filter};

use crate::error::InitError;

/// `AUDIT_ARCH_*` of the native syscall ABI.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

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

/// The rule of every syscall number from 0 to the highest one the profile names (the index is
/// the number); higher numbers get `ENOSYS`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn rules() -> Vec<Rule> {
    let special = [
        (libc::SYS_clone, Rule::Clone),
        (libc::SYS_clone3, Rule::Errno(libc::ENOSYS as u16)),
        (libc::SYS_personality, Rule::Personality),
        (libc::SYS_socket, Rule::Socket),
    ];
    let max = ALLOWED_COMMON
        .iter()
        .chain(ALLOWED_ARCH)
        .chain(special.iter().map(|(nr, _)| nr))
        .copied()
        .max()
        .unwrap_or(0);
    let mut rules = vec![Rule::Errno(libc::EPERM as u16); max as usize + 1];
    for nr in ALLOWED_COMMON.iter().chain(ALLOWED_ARCH) {
        rules[*nr as usize] = Rule::Allow;
    }
    for (nr, rule) in special {
        rules[nr as usize] = rule;
    }
    rules
}

/// The default filter as a BPF program, or an error on an architecture without a profile.
pub(crate) fn default_filter() -> Result<Vec<sock_filter>, InitError> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        Ok(compile(AUDIT_ARCH, X32_SYSCALL_BIT, &rules()))
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

/// Compile `rules` (indexed by syscall number) for the ABI `arch`.
fn compile(arch: u32, x32_bit: Option<u32>, rules: &[Rule]) -> Vec<sock_filter> {
    let eperm = ret_errno(libc::EPERM as u16);
    let mut prog = vec![
        load(OFF_ARCH),
        jump(libc::BPF_JEQ, arch, 1, 0),
        ret(RET_KILL),
        load(OFF_NR),
    ];
    if let Some(bit) = x32_bit {
        prog.extend([jump(libc::BPF_JGE, bit, 0, 1), ret(eperm)]);
    }
    let last = rules.len().saturating_sub(1) as u32;
    prog.extend([
        jump(libc::BPF_JGT, last, 0, 1),
        ret(ret_errno(libc::ENOSYS as u16)),
    ]);
    // Runs of equal rules: (first number, rule).
    let mut runs: Vec<(u32, Rule)> = Vec::new();
    for (nr, rule) in rules.iter().enumerate() {
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
    fn assert_every_number_gets_its_rule(prog: &[sock_filter], rules: &[Rule]) {
        for (nr, rule) in rules.iter().enumerate() {
            let want = match rule {
                Rule::Errno(e) => ret_errno(*e),
                _ => RET_ALLOW,
            };
            assert_eq!(run(prog, AUDIT_ARCH, nr as u32, 0), want, "syscall {nr}");
        }
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn every_number_gets_its_rule() {
        let rules = rules();
        let prog = default_filter().unwrap();
        assert!(prog.len() < 400, "{} instructions", prog.len());
        assert_every_number_gets_its_rule(&prog, &rules);
        for nr in [rules.len() as u32, 1000, 0x3fff_ffff] {
            assert_eq!(run(&prog, AUDIT_ARCH, nr, 0), ENOSYS, "syscall {nr}");
        }
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

    #[test]
    fn argument_rules() {
        let prog = default_filter().unwrap();
        let v = |nr: c_long, arg0: u64| run(&prog, AUDIT_ARCH, nr as u32, arg0);
        let sigchld = libc::SIGCHLD as u64;
        assert_eq!(v(libc::SYS_clone, sigchld), RET_ALLOW);
        let threads = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(v(libc::SYS_clone, threads), RET_ALLOW);
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(v(libc::SYS_clone, sigchld | ns as u64), EPERM, "{ns:#x}");
        }
        assert_eq!(v(libc::SYS_clone3, 0), ENOSYS);
        for p in PERSONAS {
            assert_eq!(v(libc::SYS_personality, u64::from(p)), RET_ALLOW, "{p:#x}");
        }
        for p in [0x0040_0000u64, 0x0001, 0x0800_0000, 0x0020_0000] {
            assert_eq!(v(libc::SYS_personality, p), EPERM, "{p:#x}");
        }
        assert_eq!(v(libc::SYS_socket, libc::AF_INET as u64), RET_ALLOW);
        assert_eq!(v(libc::SYS_socket, libc::AF_UNIX as u64), RET_ALLOW);
        assert_eq!(v(libc::SYS_socket, libc::AF_NETLINK as u64), RET_ALLOW);
        assert_eq!(v(libc::SYS_socket, libc::AF_VSOCK as u64), EPERM);
    }

    #[test]
    fn other_abis_are_killed_and_x32_denied() {
        let prog = default_filter().unwrap();
        for arch in [0x4000_0003u32, 0x4000_0028, 0, 0xc000_00f3] {
            if arch != AUDIT_ARCH {
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
        let prog = compile(AUDIT_ARCH, None, &rules);
        assert_every_number_gets_its_rule(&prog, &rules);
    }
}
