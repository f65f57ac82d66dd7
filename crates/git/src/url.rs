//! BuildKit's git URL grammar (`gitutil.ParseGitRef`): which strings name a git repository, and
//! how `#ref:subdir` splits.

use crate::Error;

/// A git source as written: `https://host/repo.git#v1.2:app`, `git@host:org/repo.git#main`,
/// `ssh://git@host/repo.git`, `git://host/repo.git`, `github.com/org/repo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRef {
    /// The remote as git is given it (no fragment).
    pub remote: String,
    pub transport: Transport,
    /// The ref after `#` (branch, tag, `refs/...` or a commit); `None`: the remote's HEAD.
    pub reference: Option<String>,
    /// The directory after `#ref:`, relative to the repository's root; `None`: the whole tree.
    pub subdir: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Https,
    /// Plain http: allowed, as BuildKit does, but unencrypted.
    Http,
    /// `git://` (git daemon): unencrypted.
    Git,
    /// `ssh://` or the scp form `user@host:path`; needs an SSH agent (`--ssh default`).
    Ssh,
}

impl GitRef {
    /// Parse `s` as a git source. `Ok(None)`: not a git URL at all (a plain https URL of a file, a
    /// local path); `Err`: it is one, but malformed.
    pub fn parse(s: &str) -> Result<Option<GitRef>, Error> {
        if s.starts_with("./") || s.starts_with("../") || s.starts_with('/') {
            return Ok(None);
        }
        let (body, fragment) = match s.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (s, None),
        };
        let (remote, transport) = if let Some(rest) = body.strip_prefix("github.com/") {
            (format!("https://github.com/{rest}"), Transport::Https)
        } else if let Some((scheme, rest)) = split_scheme(body) {
            let transport = match scheme.to_ascii_lowercase().as_str() {
                "https" => Transport::Https,
                "http" => Transport::Http,
                "git" => Transport::Git,
                "ssh" => Transport::Ssh,
                _ => return Ok(None),
            };
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if matches!(transport, Transport::Https | Transport::Http) {
                // An http(s) URL is a git repository only when its path ends in `.git`.
                let path = path.split(['?']).next().unwrap_or("");
                if !path.ends_with(".git") {
                    return Ok(None);
                }
            }
            if host.is_empty() || host.rsplit('@').next().is_none_or(str::is_empty) {
                return Err(Error::Url(format!("{}: no host", redact(s))));
            }
            (body.to_string(), transport)
        } else if let Some((user_host, path)) = scp_form(body) {
            if path.is_empty() {
                return Err(Error::Url(format!("{}: no repository path", redact(s))));
            }
            let _ = user_host;
            (body.to_string(), Transport::Ssh)
        } else {
            return Ok(None);
        };
        let (reference, subdir) = match fragment {
            None => (None, None),
            Some(f) => {
                let (r, d) = match f.split_once(':') {
                    Some((r, d)) => (r, Some(d)),
                    None => (f, None),
                };
                let reference = (!r.is_empty()).then(|| r.to_string());
                if let Some(r) = &reference {
                    check_ref(r).map_err(|why| Error::Url(format!("{}: {why}", redact(s))))?;
                }
                let subdir = match d {
                    None => None,
                    Some(d) => normalize_subdir(d)
                        .map_err(|why| Error::Url(format!("{}: {why}", redact(s))))?,
                };
                (reference, subdir)
            }
        };
        Ok(Some(GitRef {
            remote,
            transport,
            reference,
            subdir,
        }))
    }

    /// The remote with any password or token removed, for messages and records.
    pub fn display_remote(&self) -> String {
        redact(&self.remote)
    }

    /// The last path element without `.git` (BuildKit's ShortName).
    pub fn short_name(&self) -> &str {
        let last = self
            .remote
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("");
        last.strip_suffix(".git").unwrap_or(last)
    }
}

/// Is `s` a full commit id (SHA-1 or SHA-256, hex)?
pub fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    (!scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some((scheme, rest))
}

/// `user@host:path` (scp-like ssh), as sshutil.ParseSCPStyleURL: a user part, a host without `/`,
/// then `:`. A bare `host:path` is not taken (it would swallow `C:` and `name:tag`).
fn scp_form(s: &str) -> Option<(&str, &str)> {
    let (user_host, path) = s.split_once(':')?;
    let (user, host) = user_host.split_once('@')?;
    if user.is_empty() || host.is_empty() || user_host.contains('/') {
        return None;
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return None;
    }
    Some((user_host, path))
}

/// Refs reach git's command line: refuse what git could read as an option or a pathspec trick.
fn check_ref(r: &str) -> Result<(), String> {
    if r.starts_with('-') {
        return Err(format!("ref {r:?} starts with '-'"));
    }
    if r.contains("..")
        || r.contains(['\0', ' ', '~', '^', '?', '*', '[', '\\'])
        || r.ends_with('/')
    {
        return Err(format!("{r:?} is not a valid git ref"));
    }
    Ok(())
}

/// The subdirectory as clean relative components; `..` and absolute forms are refused.
fn normalize_subdir(d: &str) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for c in d.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("subdirectory {d:?} leaves the repository")),
            c if c.contains('\0') => return Err("subdirectory contains NUL".into()),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// `https://user:secret@host/x` → `https://user:xxxxx@host/x`; `https://token@host` → `https://xxxxx@host`.
pub fn redact(s: &str) -> String {
    let Some((scheme, rest)) = split_scheme(s) else {
        return s.to_string();
    };
    if scheme.eq_ignore_ascii_case("ssh") {
        return s.to_string(); // ssh user names are not secrets
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return s.to_string();
    };
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:xxxxx"),
        None => "xxxxx".to_string(),
    };
    format!("{scheme}://{masked}@{host}{}", &rest[authority_end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> GitRef {
        GitRef::parse(s)
            .unwrap()
            .unwrap_or_else(|| panic!("{s} is a git url"))
    }

    #[test]
    fn buildkit_forms() {
        let r = p("https://example.com/org/repo.git#v1.2:app/sub");
        assert_eq!(r.remote, "https://example.com/org/repo.git");
        assert_eq!(r.transport, Transport::Https);
        assert_eq!(r.reference.as_deref(), Some("v1.2"));
        assert_eq!(r.subdir.as_deref(), Some("app/sub"));
        assert_eq!(r.short_name(), "repo");

        let r = p("git@github.com:moby/buildkit.git#main");
        assert_eq!(r.transport, Transport::Ssh);
        assert_eq!(r.remote, "git@github.com:moby/buildkit.git");
        assert_eq!(r.short_name(), "buildkit");

        let r = p("github.com/moby/buildkit");
        assert_eq!(r.remote, "https://github.com/moby/buildkit");
        assert_eq!(r.reference, None);

        assert_eq!(p("git://127.0.0.1:9418/r.git").transport, Transport::Git);
        assert_eq!(
            p("ssh://git@h:22/r.git#:sub").subdir.as_deref(),
            Some("sub")
        );
        assert_eq!(p("ssh://git@h:22/r.git#:sub").reference, None);
        assert_eq!(
            p("http://h/r.git#main:./a//b/").subdir.as_deref(),
            Some("a/b")
        );
        assert_eq!(p("HTTPS://h/r.git").transport, Transport::Https);
    }

    #[test]
    fn not_git() {
        for s in [
            "https://example.com/file.tar.gz",
            "https://example.com/repo",
            "./repo.git",
            "/abs/repo.git",
            "busybox:latest",
            "docker-image://busybox",
            "ftp://h/r.git",
            "C:repo",
            "host:path",
            "dir/with:colon",
        ] {
            assert_eq!(GitRef::parse(s).unwrap(), None, "{s}");
        }
    }

    #[test]
    fn malformed() {
        for s in [
            "https://h/r.git#-uupload-pack=touch",
            "https://h/r.git#main:../../etc",
            "https://h/r.git#a..b",
            "https:///r.git",
            "git@host:",
        ] {
            assert!(GitRef::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("https://u:tok@h/r.git"), "https://u:xxxxx@h/r.git");
        assert_eq!(redact("https://tok@h/r.git"), "https://xxxxx@h/r.git");
        assert_eq!(redact("https://h/r.git"), "https://h/r.git");
        assert_eq!(
            p("https://u:secret@h/r.git").display_remote(),
            "https://u:xxxxx@h/r.git"
        );
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0".repeat(64)));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id(&"g".repeat(40)));
    }
}
