//! Performing [`MountSpec`]s: the only place in this crate that mounts (nix::mount).
//!
//! Callers run inside rbuild's private mount namespace (docs/CONTRACTS.md), so nothing mounted here
//! outlives the process even if it never unmounts.

use crate::MountSpec;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

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
    #[error("unmount {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
    #[error("unknown mount kind {kind:?} (expected overlay or bind)")]
    UnknownKind { kind: String },
}

/// Split options into mount flags and the fs-specific data string.
fn split_options(options: &[String]) -> (MsFlags, String) {
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
    (flags, data.join(","))
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
        options: spec.options.join(","),
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
        MountSpec::OVERLAY => mount(
            Some(&spec.source),
            target,
            Some("overlay"),
            flags & !(MsFlags::MS_BIND | MsFlags::MS_REC),
            Some(data.as_str()),
        )
        .map_err(err),
        other => Err(MountError::UnknownKind {
            kind: other.to_string(),
        }),
    }
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
        assert_eq!(data, "index=off,lowerdir=/a:/b");
    }
}
