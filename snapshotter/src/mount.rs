//! Performing [`MountSpec`]s: the only place in this crate that mounts.
//!
//! Callers run inside rbuild's private mount namespace (docs/CONTRACTS.md), so nothing mounted here
//! outlives the process even if it never unmounts.
//!
//! # Deep overlays
//!
//! `mount(2)` takes overlay's options as one string of at most a page (4095 bytes and a NUL), which
//! holds about 100 absolute lower dirs of a store under `/var/lib/rbuild`. Overlay itself stacks up
//! to 500 lowers. An overlay whose options do not fit is mounted
//!
//! 1. with the new mount API (`fsopen("overlay")`, one `fsconfig(lowerdir+)` per layer,
//!    `fsmount`, `move_mount`; Linux ≥ 6.8), where each path is its own string; else
//! 2. with containerd's trick: paths relative to the directory they all share, mounted by a
//!    short-lived thread that unshares its fs context (`unshare(CLONE_FS)`), so its `chdir` there
//!    does not move the cwd of the rest of the process; else
//! 3. refused with [`MountError::TooManyLayers`].
//!
//! nix 0.30 has no wrappers of the new mount API; rustix's safe ones are used for those four
//! calls (no `unsafe` here, as the workspace lint requires).

use crate::MountSpec;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Component, Path, PathBuf};

/// The longest data string `mount(2)` passes on: one page minus the NUL.
pub const MAX_MOUNT_DATA: usize = 4095;

/// Why a mount or unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {kind} {source_path} on {target} (options {options}): {errno}")]
    Mount {
        kind: String,
        source_path: PathBuf,
        target: PathBuf,
        options: String,
        errno: Errno,
    },
    #[error(
        "overlay of {lowers} layers on {target}: its options take {bytes} bytes even as relative \
         paths, more than the {max} bytes mount(2) accepts, and this kernel lacks overlay's \
         lowerdir+ (Linux 6.8 or later); use a base image with fewer layers or merge RUN steps"
    )]
    TooManyLayers {
        lowers: usize,
        target: PathBuf,
        bytes: usize,
        max: usize,
    },
    #[error("unmount {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
    #[error("unknown mount kind {kind:?} (expected overlay or bind)")]
    UnknownKind { kind: String },
}

/// Split options into mount flags and the fs-specific data options.
fn split_options(options: &[String]) -> (MsFlags, Vec<&str>) {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            other => data.push(other),
        }
    }
    (flags, data)
}

/// Options for an error message: a long `lowerdir=` list is shown by its ends and length.
fn describe(options: &[String]) -> String {
    let short: Vec<String> = options
        .iter()
        .map(|o| match o.strip_prefix("lowerdir=") {
            Some(list) if list.split(':').count() > 4 => {
                let v: Vec<&str> = list.split(':').collect();
                format!(
                    "lowerdir={}:…({} layers)…:{}",
                    v[0],
                    v.len(),
                    v[v.len() - 1]
                )
            }
            _ => o.clone(),
        })
        .collect();
    short.join(",")
}

/// Mount `specs` on `target`, in order (each on top of the previous). On failure, what was mounted
/// is unmounted again.
pub fn mount_all(specs: &[MountSpec], target: &Path) -> Result<(), MountError> {
    for (i, spec) in specs.iter().enumerate() {
        if let Err(e) = mount_one(spec, target) {
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(spec: &MountSpec, target: &Path) -> Result<(), MountError> {
    let (flags, data) = split_options(&spec.options);
    let err = |errno| MountError::Mount {
        kind: spec.kind.clone(),
        source_path: spec.source.clone(),
        target: target.to_path_buf(),
        options: describe(&spec.options),
        errno,
    };
    match spec.kind.as_str() {
        MountSpec::BIND => {
            let bind = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
            mount(Some(&spec.source), target, None::<&str>, bind, None::<&str>).map_err(err)?;
            // A bind mount ignores ro/nosuid/nodev/noexec until remounted with them.
            let extra = flags
                & (MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC);
            if !extra.is_empty() {
                let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra;
                if let Err(e) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
                    let _ = umount2(target, MntFlags::MNT_DETACH);
                    return Err(err(e));
                }
            }
            Ok(())
        }
        MountSpec::OVERLAY => {
            let flags = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
            let joined = data.join(",");
            if joined.len() <= MAX_MOUNT_DATA {
                return mount(
                    Some(&spec.source),
                    target,
                    Some("overlay"),
                    flags,
                    Some(joined.as_str()),
                )
                .map_err(err);
            }
            match overlay_by_fsconfig(&data, flags, target) {
                Err(Fsconfig::Unsupported) => overlay_relative(&spec.source, &data, flags, target),
                Err(Fsconfig::Failed(e)) => Err(err(e)),
                Ok(()) => Ok(()),
            }
        }
        other => Err(MountError::UnknownKind {
            kind: other.to_string(),
        }),
    }
}

enum Fsconfig {
    /// No new mount API, or an overlay without `lowerdir+` (Linux < 6.8).
    Unsupported,
    Failed(Errno),
}

/// Mount an overlay with the new mount API, one `lowerdir+` per layer: no length limit but
/// overlay's own (500 lowers).
fn overlay_by_fsconfig(data: &[&str], flags: MsFlags, target: &Path) -> Result<(), Fsconfig> {
    use rustix::io::Errno as RErrno;
    use rustix::mount as m;
    let failed = |e: RErrno| Fsconfig::Failed(Errno::from_raw(e.raw_os_error()));
    let fs = m::fsopen("overlay", m::FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
        RErrno::NOSYS | RErrno::PERM => Fsconfig::Unsupported,
        e => failed(e),
    })?;
    for opt in data {
        if let Some(list) = opt.strip_prefix("lowerdir=") {
            for (j, lower) in list.split(':').enumerate() {
                match m::fsconfig_set_string(&fs, "lowerdir+", lower) {
                    // An unknown key is EINVAL: this overlay predates lowerdir+.
                    Err(RErrno::INVAL) if j == 0 => return Err(Fsconfig::Unsupported),
                    r => r.map_err(failed)?,
                }
            }
        } else if let Some((key, value)) = opt.split_once('=') {
            m::fsconfig_set_string(&fs, key, value).map_err(failed)?;
        } else {
            m::fsconfig_set_flag(&fs, *opt).map_err(failed)?;
        }
    }
    m::fsconfig_create(&fs).map_err(failed)?;
    let mut attrs = m::MountAttrFlags::empty();
    for (ms, attr) in [
        (MsFlags::MS_RDONLY, m::MountAttrFlags::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, m::MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, m::MountAttrFlags::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, m::MountAttrFlags::MOUNT_ATTR_NOEXEC),
    ] {
        if flags.contains(ms) {
            attrs |= attr;
        }
    }
    let mnt = m::fsmount(&fs, m::FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(failed)?;
    m::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        m::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed)
}

/// The deepest directory containing every path in `paths` (all absolute).
fn common_dir<'a>(paths: impl Iterator<Item = &'a str>) -> PathBuf {
    let mut common: Option<Vec<Component<'a>>> = None;
    for p in paths {
        let comps: Vec<Component<'a>> = Path::new(p).components().collect();
        common = Some(match common {
            None => comps[..comps.len().saturating_sub(1)].to_vec(),
            Some(c) => c
                .iter()
                .zip(&comps)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    common.unwrap_or_default().iter().collect()
}

/// The overlay's data options with every dir relative to `base`, and how many lowers it has.
fn relative_data(data: &[&str], base: &Path) -> (String, usize) {
    let rel = |p: &str| -> String {
        match Path::new(p).strip_prefix(base) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_string_lossy().into_owned(),
            _ => p.to_string(),
        }
    };
    let mut lowers = 0;
    let out: Vec<String> = data
        .iter()
        .map(|o| {
            if let Some(list) = o.strip_prefix("lowerdir=") {
                let v: Vec<String> = list.split(':').map(rel).collect();
                lowers = v.len();
                format!("lowerdir={}", v.join(":"))
            } else if let Some(p) = o.strip_prefix("upperdir=") {
                format!("upperdir={}", rel(p))
            } else if let Some(p) = o.strip_prefix("workdir=") {
                format!("workdir={}", rel(p))
            } else {
                o.to_string()
            }
        })
        .collect();
    (out.join(","), lowers)
}

/// Mount an overlay with its dirs relative to the directory they share (containerd's trick), from
/// a thread whose cwd is its own.
fn overlay_relative(
    source: &Path,
    data: &[&str],
    flags: MsFlags,
    target: &Path,
) -> Result<(), MountError> {
    let dirs = data.iter().flat_map(|o| {
        let list = o
            .strip_prefix("lowerdir=")
            .or_else(|| o.strip_prefix("upperdir="))
            .or_else(|| o.strip_prefix("workdir="))
            .unwrap_or("");
        list.split(':').filter(|p| p.starts_with('/'))
    });
    let base = common_dir(dirs);
    let (rel, lowers) = relative_data(data, &base);
    let target = std::path::absolute(target).unwrap_or_else(|_| target.to_path_buf());
    let err = |errno| MountError::Mount {
        kind: MountSpec::OVERLAY.into(),
        source_path: source.to_path_buf(),
        target: target.clone(),
        options: format!("relative to {}: {} bytes", base.display(), rel.len()),
        errno,
    };
    if rel.len() > MAX_MOUNT_DATA {
        return Err(MountError::TooManyLayers {
            lowers,
            target,
            bytes: rel.len(),
            max: MAX_MOUNT_DATA,
        });
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // This thread's cwd becomes its own, so the chdir moves no other thread.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(&base)?;
            mount(
                Some(source),
                &target,
                Some("overlay"),
                flags,
                Some(rel.as_str()),
            )
        })
        .join()
        .unwrap_or(Err(Errno::EIO))
    })
    .map_err(err)
}

/// Whether an overlay can be mounted here: one is mounted for real on a scratch dir made under
/// `parent` (on the file system the snapshots will use), then unmounted and removed. The error
/// says why not (ENODEV: no overlayfs; EPERM: not allowed here; EINVAL: an upper file system overlay
/// does not take, e.g. overlay itself).
pub fn overlay_usable(parent: &Path) -> Result<(), MountError> {
    let io = |e: std::io::Error| MountError::Mount {
        kind: MountSpec::OVERLAY.into(),
        source_path: PathBuf::from("overlay"),
        target: parent.to_path_buf(),
        options: "probe".into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    std::fs::create_dir_all(parent).map_err(io)?;
    let dir = tempfile_dir(parent).map_err(io)?;
    let sub = |n: &str| dir.join(n);
    let res = (|| {
        for n in ["lower", "upper", "work", "merged"] {
            std::fs::create_dir(sub(n)).map_err(io)?;
        }
        let spec = MountSpec {
            kind: MountSpec::OVERLAY.into(),
            source: PathBuf::from("overlay"),
            options: vec![
                format!("lowerdir={}", sub("lower").display()),
                format!("upperdir={}", sub("upper").display()),
                format!("workdir={}", sub("work").display()),
            ],
        };
        mount_all(&[spec], &sub("merged"))?;
        unmount(&sub("merged"))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// A fresh directory under `parent` named for this process.
fn tempfile_dir(parent: &Path) -> std::io::Result<PathBuf> {
    for i in 0..100u32 {
        let d = parent.join(format!(".overlay-probe-{}-{i}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
}

/// Unmount the top mount on `target` (not following a symlink at `target`).
///
/// EBUSY is retried for a short while: a sandbox being forked for a concurrent step briefly holds
/// copies of every fd of the process (until its exec closes them), which can pin this mount. If it
/// stays busy, the mount is detached (`MNT_DETACH`): it leaves this namespace now and the kernel
/// frees it when the last holder lets go.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    let mut delay = std::time::Duration::from_millis(2);
    for _ in 0..8 {
        match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Err(nix::errno::Errno::EBUSY) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            r => {
                return r.map_err(|errno| MountError::Unmount {
                    target: target.to_path_buf(),
                    errno,
                })
            }
        }
    }
    umount2(target, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH).map_err(|errno| {
        MountError::Unmount {
            target: target.to_path_buf(),
            errno,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "nosuid", "index=off", "lowerdir=/a:/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = split_options(&opts);
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, ["index=off", "lowerdir=/a:/b"]);
    }

    #[test]
    fn relative_options_are_relative_to_the_shared_dir() {
        let data = [
            "index=off",
            "lowerdir=/s/12/fs:/s/3/fs",
            "upperdir=/s/40/fs",
            "workdir=/s/40/work",
        ];
        let dirs = ["/s/12/fs", "/s/3/fs", "/s/40/fs", "/s/40/work"];
        let base = common_dir(dirs.into_iter());
        assert_eq!(base, Path::new("/s"));
        let (rel, lowers) = relative_data(&data, &base);
        assert_eq!(lowers, 2);
        assert_eq!(
            rel,
            "index=off,lowerdir=12/fs:3/fs,upperdir=40/fs,workdir=40/work"
        );
        assert_eq!(common_dir(["/a/b"].into_iter()), Path::new("/a"));
    }

    #[test]
    fn long_lowerdir_lists_are_shortened_in_messages() {
        let list: Vec<String> = (0..300).map(|i| format!("/s/{i}/fs")).collect();
        let opts = vec![
            "index=off".to_string(),
            format!("lowerdir={}", list.join(":")),
        ];
        assert_eq!(
            describe(&opts),
            "index=off,lowerdir=/s/0/fs:…(300 layers)…:/s/299/fs"
        );
    }

    /// The relative fallback (used where the kernel lacks `lowerdir+`) mounts a stack whose
    /// absolute options would not fit a page, and leaves this thread's cwd alone.
    #[test]
    fn relative_fallback_mounts_a_deep_stack() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: relative_fallback_mounts_a_deep_stack needs root for overlay mounts");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        // A long base dir, so that absolute paths would overflow the page.
        let base = t
            .path()
            .join("a-rather-long-directory-name-for-the-snapshot-root-of-a-store");
        let n = 150;
        let mut lowers = Vec::new();
        for i in 0..n {
            let d = base.join(i.to_string()).join("fs");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
            std::fs::write(d.join("top"), i.to_string()).unwrap();
            lowers.push(d.to_string_lossy().into_owned());
        }
        lowers.reverse(); // nearest first
        let (upper, work) = (base.join("up/fs"), base.join("up/work"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let lowerdir = format!("lowerdir={}", lowers.join(":"));
        let upperdir = format!("upperdir={}", upper.display());
        let workdir = format!("workdir={}", work.display());
        let data = ["index=off", lowerdir.as_str(), &upperdir, &workdir];
        assert!(data.join(",").len() > MAX_MOUNT_DATA);
        let mnt = t.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let source = Path::new("overlay");
        overlay_relative(source, &data, MsFlags::empty(), &mnt).unwrap();
        let seen = (
            std::fs::read_to_string(mnt.join("f0")),
            std::fs::read_to_string(mnt.join(format!("f{}", n - 1))),
            std::fs::read_to_string(mnt.join("top")),
            std::fs::write(mnt.join("new"), "x"),
        );
        unmount(&mnt).unwrap();
        assert_eq!(std::env::current_dir().unwrap(), cwd);
        assert_eq!(seen.0.unwrap(), "0");
        assert_eq!(seen.1.unwrap(), (n - 1).to_string());
        assert_eq!(
            seen.2.unwrap(),
            (n - 1).to_string(),
            "the nearest lower wins"
        );
        seen.3.unwrap();
        assert!(upper.join("new").exists());

        // Far too many lowers for one page even relative: a clear error, nothing mounted.
        let many: Vec<String> = (0..1000)
            .map(|i| format!("{}/{i}/fs", base.display()))
            .collect();
        let lowerdir = format!("lowerdir={}", many.join(":"));
        match overlay_relative(source, &["index=off", &lowerdir], MsFlags::empty(), &mnt) {
            Err(MountError::TooManyLayers { lowers: 1000, .. }) => {}
            other => panic!("expected TooManyLayers, got {other:?}"),
        }
    }
}
