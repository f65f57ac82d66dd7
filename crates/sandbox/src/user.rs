//! Resolve a Dockerfile `USER` (`name`, `uid`, `name:group`, `uid:gid`, ...) to numeric ids
//! through the image's own `/etc/passwd` and `/etc/group`, read beneath the rootfs (never the
//! host's), with the semantics of runc/moby's `GetExecUser`.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

/// Files larger than this are refused.
const MAX_FILE: u64 = 8 << 20;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (the groups of `/etc/group` listing the user, when no group was
    /// given explicitly).
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd` (`/` when the user has no entry), for `HOME`.
    pub home: String,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A user name with no entry in the image's `/etc/passwd`.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    NoUser {
        /// The name.
        name: String,
    },
    /// A group name with no entry in the image's `/etc/group`.
    #[error("unable to find group {name}: no matching entries in group file")]
    NoGroup {
        /// The name.
        name: String,
    },
    /// The user spec is malformed (empty, or an id out of range).
    #[error("invalid user {spec:?}")]
    Invalid {
        /// The spec.
        spec: String,
    },
    /// Reading `/etc/passwd` or `/etc/group` of the rootfs failed.
    #[error("cannot read {file} in rootfs {rootfs}: {source}")]
    Read {
        /// The rootfs.
        rootfs: PathBuf,
        /// `/etc/passwd` or `/etc/group`.
        file: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Passwd {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Group {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn read_in_root(rootfs: &Path, file: &'static str) -> Result<String, UserError> {
    let err = |source: std::io::Error| UserError::Read {
        rootfs: rootfs.to_owned(),
        file,
        source,
    };
    let root = crate::rootfs::open_root(rootfs).map_err(|e| match e {
        crate::SandboxError::Rootfs { source, .. } => err(source),
        other => err(std::io::Error::other(other.to_string())),
    })?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(root.as_fd(), file.trim_start_matches('/'), how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(err(e.into())),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(text)
}

/// Resolve `spec` (a Dockerfile `USER` value; empty means root) in `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    if group == Some("") {
        return Err(UserError::Invalid {
            spec: spec.to_owned(),
        });
    }
    let passwd = parse_passwd(&read_in_root(rootfs, "/etc/passwd")?);
    let numeric_uid: Option<u32> = user.parse().ok();
    if numeric_uid.is_none() && user.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UserError::Invalid {
            spec: spec.to_owned(),
        });
    }
    let entry = passwd
        .iter()
        .find(|p| Some(p.uid) == numeric_uid || p.name == user);
    let (uid, mut gid, home, name) = match (entry, numeric_uid) {
        (Some(p), _) => (p.uid, p.gid, p.home.clone(), Some(p.name.clone())),
        (None, Some(uid)) => (uid, 0, "/".to_owned(), None),
        (None, None) => {
            return Err(UserError::NoUser {
                name: user.to_owned(),
            })
        }
    };
    let mut additional_gids = Vec::new();
    if group.is_some() || name.is_some() {
        let groups = parse_group(&read_in_root(rootfs, "/etc/group")?);
        match group {
            Some(g) => {
                gid = match g.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => groups
                        .iter()
                        .find(|e| e.name == g)
                        .map(|e| e.gid)
                        .ok_or_else(|| UserError::NoGroup { name: g.to_owned() })?,
                };
            }
            None => {
                let name = name.unwrap_or_default();
                for g in groups.iter().filter(|g| g.members.contains(&name)) {
                    if !additional_gids.contains(&g.gid) {
                        additional_gids.push(g.gid);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() {
            "/".to_owned()
        } else {
            home
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbroken line\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,root\naudio:x:29:app\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn names_and_ids() {
        let r = rootfs();
        let u = resolve_user(r.path(), "app").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone(), u.home.as_str()),
            (1000, 1000, vec![10, 29], "/home/app")
        );
        let u = resolve_user(r.path(), "app:wheel").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.len()), (1000, 10, 0));
        let u = resolve_user(r.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = resolve_user(r.path(), "4242:77").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 77));
        let u = resolve_user(r.path(), "").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn errors() {
        let r = rootfs();
        assert!(matches!(
            resolve_user(r.path(), "nobody"),
            Err(UserError::NoUser { .. })
        ));
        assert!(matches!(
            resolve_user(r.path(), "app:nogroup"),
            Err(UserError::NoGroup { .. })
        ));
        assert!(matches!(
            resolve_user(r.path(), "app:"),
            Err(UserError::Invalid { .. })
        ));
        assert!(matches!(
            resolve_user(r.path(), "99999999999"),
            Err(UserError::Invalid { .. })
        ));
    }

    #[test]
    fn symlinked_passwd_stays_in_the_rootfs() {
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        // Points at the host's /etc/passwd by absolute path: must resolve inside the rootfs.
        std::os::unix::fs::symlink("/etc/passwd", r.path().join("etc/passwd2")).unwrap();
        std::os::unix::fs::symlink("/host-passwd", r.path().join("etc/passwd")).unwrap();
        assert!(matches!(
            resolve_user(r.path(), "root"),
            Err(UserError::NoUser { .. })
        ));
    }
}
