//! Raw syscalls nix does not wrap (capset, close_range, seccomp, bringing `lo` up, resetting
//! signal dispositions, terminal ioctls, taking fds received over a socket). Every `unsafe` block of the crate outside the init's fork points is here.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

/// Linux capability numbers of Docker's default set.
pub(crate) const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Bit mask of a list of capabilities.
pub(crate) fn cap_mask(caps: &[u32]) -> u64 {
    caps.iter()
        .filter(|c| **c < 64)
        .fold(0, |m, c| m | (1u64 << c))
}

/// The highest capability number the kernel knows (probes the bounding set).
pub(crate) fn last_cap() -> u32 {
    let mut last = 0;
    for cap in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ only reads the calling thread's bounding set; it takes an
        // integer argument and touches no memory.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            break;
        }
        last = cap;
    }
    last
}

/// Drop `cap` from the bounding set.
pub(crate) fn capbset_drop(cap: u32) -> nix::Result<()> {
    // SAFETY: integer-only prctl on the calling thread.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    Errno::result(r).map(drop)
}

/// Clear the ambient capability set.
pub(crate) fn clear_ambient() -> nix::Result<()> {
    // SAFETY: integer-only prctl on the calling thread.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Errno::result(r).map(drop)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Set the effective, permitted and inheritable sets of the calling thread.
pub(crate) fn capset(effective: u64, permitted: u64, inheritable: u64) -> nix::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and data are valid, properly laid out (`#[repr(C)]`) structs for
    // _LINUX_CAPABILITY_VERSION_3, which takes exactly two data elements; the kernel only reads
    // them for capset.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Errno::result(r).map(drop)
}

/// The permitted set of the calling thread.
pub(crate) fn permitted_caps() -> nix::Result<u64> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header is valid and data has room for the two elements version 3 writes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    Errno::result(r)?;
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

/// close_range(first, u32::MAX, flags).
pub(crate) fn close_range_from(first: u32, cloexec: bool) -> nix::Result<()> {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC
    } else {
        0
    };
    // SAFETY: close_range takes integers only. Closing fds here is sound because the callers
    // (the init, single-threaded) own every fd >= `first` and hold no Rust objects on them
    // except those they re-create afterwards from fds below `first`.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) };
    Errno::result(r).map(drop)
}

/// Take ownership of an fd number inherited from the parent.
///
/// # Safety
/// `fd` must be open and not owned by anything else in this process.
pub(crate) unsafe fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The window size of the terminal `fd` (TIOCGWINSZ); `None` if it is not a terminal.
pub(crate) fn window_size(fd: BorrowedFd<'_>) -> Option<crate::spec::WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize to the pointer, which points to one.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(crate::spec::WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Set the window size of the terminal `fd` (TIOCSWINSZ; the kernel sends SIGWINCH to its
/// foreground process group when it changes).
pub(crate) fn set_window_size(
    fd: BorrowedFd<'_>,
    size: crate::spec::WindowSize,
) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize from the pointer, which points to one.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Errno::result(r).map(drop)
}

/// Make the terminal `fd` the controlling terminal of the calling process, which must be a
/// session leader without one (TIOCSCTTY, not stealing it from another session).
pub(crate) fn set_controlling_terminal(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument by value and touches no memory of ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(r).map(drop)
}

/// Read from a Unix stream socket like `read`, also taking any fds passed with the data
/// (SCM_RIGHTS; they arrive close-on-exec).
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds in this process for this message;
            // nothing else knows their numbers.
            fds.extend(raw.into_iter().map(|fd| unsafe { owned_fd(fd) }));
        }
    }
    Ok((msg.bytes, fds))
}

/// Bring the loopback interface up (in the current network namespace).
pub(crate) fn loopback_up() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface named in `req` and writes ifr_flags in it; `req`
    // is a valid, writable ifreq for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(r)?;
    // SAFETY: the kernel filled ifr_ifru as flags for SIOCGIFFLAGS, so reading that union
    // member is reading initialized data.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) };
    Errno::result(r).map(drop)
}

/// Reset every catchable signal to its default disposition (Rust's runtime ignores SIGPIPE, and
/// ignored dispositions survive execve).
pub(crate) fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code; failures (for signals reserved by
        // libc) are harmless and ignored.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Install a seccomp filter on the calling thread (`seccomp(SECCOMP_SET_MODE_FILTER)`). Needs
/// no_new_privs (or CAP_SYS_ADMIN); the filter stays for the life of the process and its
/// children, across execve.
pub(crate) fn seccomp_set_filter(prog: &[libc::sock_filter]) -> nix::Result<()> {
    let len = u16::try_from(prog.len()).map_err(|_| Errno::E2BIG)?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `len` valid instructions that outlive the call; the kernel
    // copies the program and never writes through the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    Errno::result(r).map(drop)
}

/// Set the process umask.
pub(crate) fn umask(mask: u32) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}

/// The kernel's `struct in6_rtmsg` (libc's has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// Add an unreachable host route to `addr` (in the current network namespace): connecting to it
/// fails at once with `EHOSTUNREACH`/`ENETUNREACH`, whatever device would have carried it.
pub(crate) fn add_unreachable_route(addr: std::net::IpAddr) -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    match addr {
        std::net::IpAddr::V4(v4) => {
            let sock = socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            // SAFETY: rtentry is plain old data; all-zero is a valid value.
            let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(v4).to_be(),
                },
                sin_zero: [0; 8],
            };
            let mask = libc::sockaddr_in {
                sin_addr: libc::in_addr { s_addr: u32::MAX },
                ..sin
            };
            // SAFETY: sockaddr_in and sockaddr have the same size; both are plain old data.
            unsafe {
                rt.rt_dst = std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin);
                rt.rt_genmask = std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(mask);
            }
            rt.rt_flags = libc::RTF_UP | libc::RTF_HOST | libc::RTF_REJECT;
            // SAFETY: SIOCADDRT reads a valid rtentry (rt_dev null: no device) for the call's
            // duration.
            let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) };
            match Errno::result(r) {
                Ok(_) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        std::net::IpAddr::V6(v6) => {
            let sock = socket(
                AddressFamily::Inet6,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            let rt = In6Rtmsg {
                dst: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                src: libc::in6_addr { s6_addr: [0; 16] },
                gateway: libc::in6_addr { s6_addr: [0; 16] },
                kind: libc::RTN_UNREACHABLE as u32,
                dst_len: 128,
                src_len: 0,
                metric: 1,
                info: 0,
                flags: u32::from(libc::RTF_UP | libc::RTF_HOST | libc::RTF_REJECT),
                // IPv6 reject routes hang off the loopback device.
                ifindex: nix::net::if_::if_nametoindex("lo")? as libc::c_int,
            };
            // SAFETY: SIOCADDRT on an AF_INET6 socket reads a valid in6_rtmsg for the call's
            // duration.
            let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &rt) };
            match Errno::result(r) {
                Ok(_) | Err(Errno::EEXIST) => Ok(()),
                // No IPv6 in this kernel/namespace: nothing to reach it by either.
                Err(Errno::EAFNOSUPPORT) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_cap_mask() {
        assert_eq!(cap_mask(DEFAULT_CAPS), 0xa804_25fb);
    }

    #[test]
    fn last_cap_is_plausible() {
        let last = last_cap();
        assert!((36..64).contains(&last), "{last}");
    }
}
