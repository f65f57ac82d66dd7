//! Inside the init (PID 1 of the new namespaces): build the sandbox's mount tree on the rootfs
//! and pivot_root into it.
//!
//! Every mount target is opened first, beneath the rootfs (`openat2` `RESOLVE_IN_ROOT`), and the
//! mount goes onto `/proc/self/fd/N`: a symlink in the image can never redirect a mount onto a
//! host path (the runc CVE-2021-30465 class). `/proc`, `/dev` and `/sys` may not be symlinks
//! at all.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fchmodat, fstat, makedev, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchdir, pivot_root, symlinkat};

use crate::error::InitError;
use crate::protocol::InitConfig;
use crate::rootfs::{components, open_in_root};
use crate::spec::SandboxMount;

/// Paths in /proc hidden from the sandbox (Docker's list).
const MASKED_PROC: &[&str] = &[
    "acpi",
    "asound",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "scsi",
    "timer_list",
    "timer_stats",
];
/// Paths in /sys hidden from the sandbox (Docker's list; powercap leaks energy counters).
const MASKED_SYS: &[&str] = &["firmware", "devices/virtual/powercap"];
/// Paths in /proc made read-only (Docker's list).
const READONLY_PROC: &[&str] = &["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Character devices in /dev: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

struct Ctx<'a> {
    root: BorrowedFd<'a>,
}

impl Ctx<'_> {
    /// Open an in-rootfs path (`/proc`, `etc/hosts`, ...) as a mount target.
    fn target(&self, path: &str, follow: bool) -> Result<OwnedFd, InitError> {
        let rel = components(path)
            .ok_or_else(|| InitError::BadConfig(format!("mount target {path:?} is not absolute")))?
            .join("/");
        open_in_root(self.root, &rel, follow)
            .map_err(|e| InitError::setup("open mount target", Some(path), e))
    }

    /// Mount a filesystem of type `fstype` at `path`.
    fn mount_fs(
        &self,
        path: &str,
        follow: bool,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), InitError> {
        let t = self.target(path, follow)?;
        mount(
            Some(fstype),
            fd_path(t.as_fd()).as_str(),
            Some(fstype),
            flags,
            data,
        )
        .map_err(|e| InitError::setup(format!("mount {fstype}"), Some(path), e))
    }

    /// Bind-mount the host path `source` at `path`.
    fn bind(
        &self,
        source: &str,
        path: &str,
        follow: bool,
        flags: MsFlags,
    ) -> Result<(), InitError> {
        let t = self.target(path, follow)?;
        mount(
            Some(source),
            fd_path(t.as_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | flags,
            None::<&str>,
        )
        .map_err(|e| InitError::setup(format!("bind {source}"), Some(path), e))
    }

    /// Remount the mount at `path` read-only (bind mounts need a second call for that).
    fn remount_ro(&self, path: &str, follow: bool, extra: MsFlags) -> Result<(), InitError> {
        let t = self.target(path, follow)?;
        mount(
            None::<&str>,
            fd_path(t.as_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra,
            None::<&str>,
        )
        .map_err(|e| InitError::setup("remount read-only", Some(path), e))
    }
}

/// Set up every mount and pivot_root into the rootfs. On return the process's root and cwd are
/// the new root and the old root is gone.
pub(crate) fn setup(cfg: &InitConfig) -> Result<(), InitError> {
    // Nothing we mount may propagate back to the parent's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| InitError::setup("make / private", None, e))?;
    let rootfs = cfg.rootfs.as_path();
    let rootfs_str = rootfs.to_string_lossy();
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| InitError::setup("bind rootfs", Some(&rootfs_str), e))?;
    let root = crate::rootfs::open_root(rootfs)
        .map_err(|_| InitError::setup("open rootfs", Some(&rootfs_str), Errno::ENOENT))?;
    let ctx = Ctx { root: root.as_fd() };

    mount_proc(&ctx, cfg.insecure)?;
    mount_dev(&ctx)?;
    mount_sys(&ctx, cfg.insecure)?;
    for (target, source) in &cfg.etc_files {
        let src = source.to_string_lossy();
        ctx.bind(&src, target, true, MsFlags::empty())?;
    }
    for m in &cfg.mounts {
        match m {
            SandboxMount::Bind {
                source,
                target,
                readonly,
            } => {
                let src = source.to_string_lossy();
                ctx.bind(&src, target, true, MsFlags::MS_REC)?;
                if *readonly {
                    ctx.remount_ro(target, true, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
                }
            }
            SandboxMount::Tmpfs { target, size } => {
                let data = match size {
                    Some(s) => format!("mode=1777,size={s}"),
                    None => "mode=1777".to_owned(),
                };
                ctx.mount_fs(
                    target,
                    true,
                    "tmpfs",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&data),
                )?;
            }
        }
    }
    pivot(root.as_fd(), &rootfs_str)
}

fn mount_proc(ctx: &Ctx<'_>, insecure: bool) -> Result<(), InitError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    ctx.mount_fs("/proc", false, "proc", flags, None)?;
    if insecure {
        return Ok(());
    }
    let proc_fd = ctx.target("/proc", false)?;
    for name in MASKED_PROC {
        let fd = match open_in_root(proc_fd.as_fd(), name, false) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(InitError::setup(
                    "open masked path",
                    Some(&format!("/proc/{name}")),
                    e,
                ))
            }
        };
        mask(fd.as_fd(), &format!("/proc/{name}"))?;
    }
    for name in READONLY_PROC {
        let path = format!("/proc/{name}");
        let fd = match open_in_root(proc_fd.as_fd(), name, false) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(InitError::setup("open read-only path", Some(&path), e)),
        };
        let here = fd_path(fd.as_fd());
        mount(
            Some(here.as_str()),
            here.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| InitError::setup("bind", Some(&path), e))?;
        ctx.remount_ro(
            &path,
            false,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// Hide a path: an empty read-only tmpfs over a directory, /dev/null over anything else.
fn mask(fd: BorrowedFd<'_>, shown: &str) -> Result<(), InitError> {
    let st = fstat(fd).map_err(|e| InitError::setup("stat masked path", Some(shown), e))?;
    let target = fd_path(fd);
    let res = if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
        mount(
            Some("tmpfs"),
            target.as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
    } else {
        mount(
            Some("/dev/null"),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.map_err(|e| InitError::setup("mask", Some(shown), e))
}

fn mount_dev(ctx: &Ctx<'_>) -> Result<(), InitError> {
    ctx.mount_fs(
        "/dev",
        false,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    let dev = ctx.target("/dev", false)?;
    let step = |what: &'static str, name: &str, e: Errno| {
        InitError::setup(what, Some(&format!("/dev/{name}")), e)
    };
    for (name, major, minor) in DEVICES {
        let mode = Mode::from_bits_truncate(0o666);
        match mknodat(
            dev.as_fd(),
            *name,
            SFlag::S_IFCHR,
            mode,
            makedev(*major, *minor),
        ) {
            Ok(()) => {}
            // In a user namespace (rootless) no device node can be made: bind the host's own
            // node onto an empty file instead, as rootless podman and runc do.
            Err(Errno::EPERM) => {
                nix::fcntl::openat(
                    dev.as_fd(),
                    *name,
                    nix::fcntl::OFlag::O_CREAT
                        | nix::fcntl::OFlag::O_EXCL
                        | nix::fcntl::OFlag::O_WRONLY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    mode,
                )
                .map_err(|e| step("create", name, e))?;
                ctx.bind(
                    &format!("/dev/{name}"),
                    &format!("/dev/{name}"),
                    false,
                    MsFlags::empty(),
                )?;
                continue;
            }
            Err(e) => return Err(step("mknod", name, e)),
        }
        fchmodat(dev.as_fd(), *name, mode, FchmodatFlags::FollowSymlink)
            .map_err(|e| step("chmod", name, e))?;
    }
    for (dir, mode) in [("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o1777)] {
        mkdirat(dev.as_fd(), dir, Mode::from_bits_truncate(mode))
            .map_err(|e| step("mkdir", dir, e))?;
    }
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let pts = ctx.mount_fs(
        "/dev/pts",
        false,
        "devpts",
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    );
    if pts.is_err() {
        // Rootless with a single id: group 5 (tty) does not exist in the user namespace.
        ctx.mount_fs(
            "/dev/pts",
            false,
            "devpts",
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
    }
    ctx.mount_fs(
        "/dev/shm",
        false,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    ctx.mount_fs(
        "/dev/mqueue",
        false,
        "mqueue",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        symlinkat(target, dev.as_fd(), name).map_err(|e| step("symlink", name, e))?;
    }
    Ok(())
}

fn mount_sys(ctx: &Ctx<'_>, insecure: bool) -> Result<(), InitError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
    if let Err(first) = ctx.mount_fs("/sys", false, "sysfs", flags, None) {
        // sysfs cannot always be mounted (e.g. when the network namespace is not ours to
        // own); a read-only recursive bind of the host's /sys is the fallback.
        ctx.bind("/sys", "/sys", false, MsFlags::MS_REC)
            .map_err(|_| first)?;
        ctx.remount_ro(
            "/sys",
            false,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    if !insecure {
        let sys = ctx.target("/sys", false)?;
        for name in MASKED_SYS {
            let shown = format!("/sys/{name}");
            match open_in_root(sys.as_fd(), name, false) {
                Ok(fd) => mask(fd.as_fd(), &shown)?,
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(InitError::setup("open masked path", Some(&shown), e)),
            }
        }
    }
    Ok(())
}

/// pivot_root into `root` and detach the old root (the runc `pivot_root(".", ".")` idiom: the
/// old root ends up stacked on the new one and is lazily unmounted).
fn pivot(root: BorrowedFd<'_>, shown: &str) -> Result<(), InitError> {
    fchdir(root).map_err(|e| InitError::setup("chdir to rootfs", Some(shown), e))?;
    pivot_root(".", ".").map_err(|e| InitError::setup("pivot_root", Some(shown), e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| InitError::setup("detach old root", None, e))?;
    nix::unistd::chdir(Path::new("/")).map_err(|e| InitError::setup("chdir", Some("/"), e))?;
    Ok(())
}
