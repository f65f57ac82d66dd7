//! Users and groups of a rootfs: `USER` for RUN and `--chown` for COPY/ADD/WORKDIR are resolved
//! through the root's own `/etc/passwd` and `/etc/group` (bounded reads, resolved inside the root),
//! never the host's. Numeric ids need no files.

use crate::error::{FileOpError, Result};
use crate::root::Root;
use rbuild_ops::Chown;

/// Largest passwd/group file read.
pub const MAX_ID_FILE: u64 = 4 << 20;

/// A user as a process runs as it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership), when no group was given explicitly.
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd, `/` when unknown.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_lines(root: &Root, path: &str) -> Result<Vec<Vec<String>>> {
    let data = root.read_bounded(path, MAX_ID_FILE)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&data)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

fn passwd(root: &Root) -> Result<Vec<PasswdEntry>> {
    Ok(read_lines(root, "/etc/passwd")?
        .into_iter()
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.clone(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).cloned().unwrap_or_default(),
            })
        })
        .collect())
}

fn groups(root: &Root) -> Result<Vec<GroupEntry>> {
    Ok(read_lines(root, "/etc/group")?
        .into_iter()
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.clone(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect())
}

fn unknown(what: &'static str, name: &str, root: &Root, file: &'static str) -> FileOpError {
    FileOpError::UnknownUser {
        what,
        name: name.to_string(),
        root: root.path().to_path_buf(),
        file,
        reason: "no matching entries",
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_id(s: &str, what: &'static str, root: &Root) -> Result<u32> {
    s.parse().map_err(|_| FileOpError::UnknownUser {
        what,
        name: s.to_string(),
        root: root.path().to_path_buf(),
        file: "",
        reason: "numeric id out of range",
    })
}

fn lookup_group(root: &Root, group: &str, groups: &[GroupEntry]) -> Result<u32> {
    if is_numeric(group) {
        return parse_id(group, "group", root);
    }
    groups
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| unknown("group", group, root, "/etc/group"))
}

/// Resolve a `USER` value (`name`, `uid`, `name:group`, `uid:gid`, empty = root) as runc and Docker
/// do: a numeric uid absent from passwd runs with gid 0 and home `/`; a name must exist; without an
/// explicit group the passwd group applies plus the groups listing the user as a member.
pub fn resolve_user(root: &Root, user: &str) -> Result<ResolvedUser> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let pw = passwd(root)?;
    let entry = if is_numeric(u) {
        let uid = parse_id(u, "user", root)?;
        pw.iter().find(|p| p.uid == uid)
    } else {
        Some(
            pw.iter()
                .find(|p| p.name == u)
                .ok_or_else(|| unknown("user", u, root, "/etc/passwd"))?,
        )
    };
    let mut out = match entry {
        Some(p) => ResolvedUser {
            uid: p.uid,
            gid: p.gid,
            additional_gids: Vec::new(),
            home: if p.home.is_empty() {
                "/".into()
            } else {
                p.home.clone()
            },
        },
        None => ResolvedUser {
            uid: parse_id(u, "user", root)?,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/".into(),
        },
    };
    match g {
        Some(g) if !g.is_empty() => {
            let grs = if is_numeric(g) {
                Vec::new()
            } else {
                groups(root)?
            };
            out.gid = lookup_group(root, g, &grs)?;
        }
        _ => {
            if let Some(p) = entry {
                let mut extra: Vec<u32> = groups(root)?
                    .iter()
                    .filter(|gr| gr.members.contains(&p.name))
                    .map(|gr| gr.gid)
                    .filter(|gid| *gid != out.gid)
                    .collect();
                extra.sort_unstable();
                extra.dedup();
                out.additional_gids = extra;
            }
        }
    }
    Ok(out)
}

/// Resolve a `--chown` as BuildKit does: a user name takes uid and primary gid from passwd, a
/// numeric user uses the same number as gid; a group (name or number) overrides the gid.
pub fn resolve_chown(root: &Root, chown: &Chown) -> Result<(u32, u32)> {
    let (uid, mut gid) = if chown.user.is_empty() {
        (0, 0)
    } else if is_numeric(&chown.user) {
        let id = parse_id(&chown.user, "user", root)?;
        (id, id)
    } else {
        let pw = passwd(root)?;
        let p = pw
            .iter()
            .find(|p| p.name == chown.user)
            .ok_or_else(|| unknown("user", &chown.user, root, "/etc/passwd"))?;
        (p.uid, p.gid)
    };
    if let Some(g) = chown.group.as_deref().filter(|g| !g.is_empty()) {
        let grs = if is_numeric(g) {
            Vec::new()
        } else {
            groups(root)?
        };
        gid = lookup_group(root, g, &grs)?;
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# c\napp:x:1000:1001:App:/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\nbroken:x:notanumber\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nappgrp:x:1001:\nwheel:x:10:app,other\ndocker:x:999:app\nnogroup:x:65534:\n",
        )
        .unwrap();
        let r = Root::open(d.path()).unwrap();
        (d, r)
    }

    #[test]
    fn users_and_groups() {
        let (_d, r) = sample();
        let u = resolve_user(&r, "app").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1001, "/home/app"));
        assert_eq!(u.additional_gids, vec![10, 999]);
        let u = resolve_user(&r, "app:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        assert!(u.additional_gids.is_empty());
        let u = resolve_user(&r, "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = resolve_user(&r, "1000:5").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 5));
        let u = resolve_user(&r, "").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert!(matches!(
            resolve_user(&r, "ghost"),
            Err(FileOpError::UnknownUser { .. })
        ));
        assert!(resolve_user(&r, "app:ghosts").is_err());
        // runc's rule: an empty group is no group.
        assert_eq!(
            resolve_user(&r, "app:").unwrap(),
            resolve_user(&r, "app").unwrap()
        );
        assert!(resolve_user(&r, "99999999999").is_err());

        let c = |u: &str, g: Option<&str>| Chown {
            user: u.into(),
            group: g.map(Into::into),
        };
        assert_eq!(resolve_chown(&r, &c("app", None)).unwrap(), (1000, 1001));
        assert_eq!(resolve_chown(&r, &c("55", None)).unwrap(), (55, 55));
        assert_eq!(
            resolve_chown(&r, &c("app", Some("docker"))).unwrap(),
            (1000, 999)
        );
        assert_eq!(resolve_chown(&r, &c("10", Some("11"))).unwrap(), (10, 11));
        let e = resolve_chown(&r, &c("ghost", None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ghost") && e.contains("/etc/passwd"), "{e}");
    }

    #[test]
    fn numeric_ids_need_no_files() {
        let d = tempfile::tempdir().unwrap();
        let r = Root::open(d.path()).unwrap();
        assert_eq!(resolve_user(&r, "7:8").unwrap().gid, 8);
        assert_eq!(
            resolve_chown(
                &r,
                &Chown {
                    user: "7".into(),
                    group: None
                }
            )
            .unwrap(),
            (7, 7)
        );
        assert!(resolve_user(&r, "app").is_err());
    }
}
