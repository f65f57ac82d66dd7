//! # rbuild-git — git sources (`ADD <git url>`, a git URL as the build context, `--build-context`)
//!
//! Two steps, as BuildKit's git source: [`Git::resolve`] turns a ref into the commit it names
//! (`git ls-remote`; a full commit id is taken as is) — the commit, never the ref's name, is what
//! feeds a cache key — and [`Git::checkout`] writes that commit's tree (or a subdirectory of it)
//! into an empty directory, with its `.git` kept on request. Fetched objects are kept in one bare
//! repository per remote under the cache directory, so a second checkout of a known commit needs no
//! network.
//!
//! The host's git is run with nothing of the host's configuration: no system or global config, no
//! credential helpers, no terminal prompts, no hooks, only the http(s), ssh and git transports (no
//! `file://`, no `ext::`, so a repository cannot make rbuild read the host's files), no submodules,
//! ssh in batch mode through the agent socket the build was given (`--ssh`). Every command has a
//! deadline, and a transfer slower than 1 KiB/s for 30 s is cut (`GIT_HTTP_LOW_SPEED_*`). Passwords
//! and tokens in URLs never appear in messages.
//!
//! What it does not do: it does not copy into snapshots (the checkout is a plain directory the caller
//! copies from, fd-relative), and it does not decide cache keys beyond returning the commit.

mod url;

pub use url::{is_commit_id, redact, GitRef, Transport};

use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid git URL {0}")]
    Url(String),
    #[error("git ref {reference:?} not found in {remote}")]
    RefNotFound { remote: String, reference: String },
    #[error("git source {remote}: commit {got} does not match --checksum {want}")]
    Checksum {
        remote: String,
        want: String,
        got: String,
    },
    #[error("git {what} for {remote} failed: {detail}")]
    Command {
        what: String,
        remote: String,
        detail: String,
    },
    #[error("git {what} for {remote} did not finish within {secs} s")]
    Timeout {
        what: String,
        remote: String,
        secs: u64,
    },
    #[error("{remote} is an ssh git URL: give the build an SSH agent (`--ssh default`)")]
    NoSshAgent { remote: String },
    #[error("git source {remote}: subdirectory {subdir:?} {why}")]
    Subdir {
        remote: String,
        subdir: String,
        why: String,
    },
    #[error("git: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How to run git for one build.
#[derive(Clone, Debug)]
pub struct Git {
    /// Holds `repos/<sha256(remote)>` bare repositories and their lock files.
    cache_dir: PathBuf,
    /// The git program (found on the host's PATH by default).
    program: PathBuf,
    /// Deadline of one git command.
    timeout: Duration,
    /// `SSH_AUTH_SOCK` for ssh remotes (`--ssh default`).
    ssh_auth_sock: Option<PathBuf>,
    /// A known_hosts file for ssh remotes; without one, host keys are not checked (BuildKit's
    /// default without `--known-hosts`... but never written to the host's own known_hosts).
    known_hosts: Option<PathBuf>,
}

/// The default deadline of one git command; `RBUILD_GIT_TIMEOUT` (seconds) overrides it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

impl Git {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Git {
        let timeout = rbuild_inputs::var("RBUILD_GIT_TIMEOUT")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        Git {
            cache_dir: cache_dir.into(),
            program: PathBuf::from("git"),
            timeout,
            ssh_auth_sock: None,
            known_hosts: None,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Git {
        self.timeout = timeout;
        self
    }

    pub fn with_ssh_agent(mut self, sock: Option<PathBuf>) -> Git {
        self.ssh_auth_sock = sock;
        self
    }

    pub fn with_known_hosts(mut self, file: Option<PathBuf>) -> Git {
        self.known_hosts = file;
        self
    }

    /// The commit `r` names now. A full commit id is returned as is (lowercase), without asking
    /// the remote; a branch, tag (annotated tags peeled) or `refs/...` name is looked up with
    /// `git ls-remote`; no ref means the remote's HEAD.
    pub fn resolve(&self, r: &GitRef) -> Result<String> {
        if let Some(c) = r.reference.as_deref().filter(|c| is_commit_id(c)) {
            return Ok(c.to_ascii_lowercase());
        }
        let home = self.scratch_home()?;
        let out = self.run(r, "ls-remote", home.path(), &["ls-remote", "--", &r.remote])?;
        let text = String::from_utf8_lossy(&out);
        let wanted = r.reference.as_deref().unwrap_or("HEAD");
        pick_ref(&text, wanted).ok_or_else(|| Error::RefNotFound {
            remote: r.display_remote(),
            reference: wanted.to_string(),
        })
    }

    /// Write the tree of `commit` (from `r`'s remote), or `r.subdir` of it, into `dst`, which must
    /// be an empty directory. With `keep_git_dir`, `dst/.git` is a repository whose HEAD is
    /// `commit` (detached) with `origin` set to the remote (credentials removed), as
    /// `ADD --keep-git-dir` gives. Without a subdirectory the result does not contain `.git`.
    pub fn checkout(&self, r: &GitRef, commit: &str, dst: &Path, keep_git_dir: bool) -> Result<()> {
        if !is_commit_id(commit) {
            return Err(Error::Url(format!("{commit:?} is not a commit id")));
        }
        let bare = self.fetch(r, commit)?;
        let home = self.scratch_home()?;
        // The whole tree goes into a staging dir beside dst; the subdir (or all of it) moves into dst.
        let parent = dst.parent().unwrap_or(Path::new("/"));
        let stage = tempfile::Builder::new()
            .prefix(".rbuild-git-")
            .tempdir_in(parent)?;
        let work = stage.path().join("tree");
        fs::create_dir(&work)?;
        let work_s = work.to_string_lossy().into_owned();
        let bare_s = bare.to_string_lossy().into_owned();
        if keep_git_dir {
            self.run(r, "init", home.path(), &["init", "-q", &work_s])?;
            let local = ["-c", "protocol.file.allow=always"];
            let mut args: Vec<&str> = local.to_vec();
            args.extend([
                "-C",
                &work_s,
                "fetch",
                "-q",
                "--no-tags",
                "--depth=1",
                "--",
                &bare_s,
                commit,
            ]);
            self.run(r, "fetch", home.path(), &args)?;
            self.run(
                r,
                "checkout",
                home.path(),
                &["-C", &work_s, "checkout", "-q", "--detach", commit],
            )?;
            let origin = r.display_remote();
            self.run(
                r,
                "remote add",
                home.path(),
                &["-C", &work_s, "remote", "add", "origin", &origin],
            )?;
        } else {
            let index = stage.path().join("index");
            let env_index = [("GIT_INDEX_FILE", index.as_os_str())];
            self.run_env(
                r,
                "checkout",
                home.path(),
                &env_index,
                &[
                    "--git-dir",
                    &bare_s,
                    "--work-tree",
                    &work_s,
                    "checkout",
                    "-q",
                    "-f",
                    commit,
                    "--",
                    ".",
                ],
            )?;
        }
        let src = match &r.subdir {
            None => work.clone(),
            Some(sub) => resolve_subdir(r, &work, sub)?,
        };
        // dst is empty: move each entry of src into it.
        for e in fs::read_dir(&src)? {
            let e = e?;
            if r.subdir.is_some() && !keep_git_dir && e.file_name() == ".git" {
                continue;
            }
            fs::rename(e.path(), dst.join(e.file_name()))?;
        }
        if r.subdir.is_some() && keep_git_dir && !dst.join(".git").exists() {
            // BuildKit keeps the repository's .git at the root of what it returns.
            fs::rename(work.join(".git"), dst.join(".git"))?;
        }
        Ok(())
    }

    /// The bare repository of `r`'s remote, holding `commit` (fetched when missing).
    fn fetch(&self, r: &GitRef, commit: &str) -> Result<PathBuf> {
        let repos = self.cache_dir.join("repos");
        fs::create_dir_all(&repos)?;
        let name = hex::encode(Sha256::digest(r.remote.as_bytes()));
        let bare = repos.join(&name);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(repos.join(format!("{name}.lock")))?;
        lock.lock()?; // held until `lock` drops: one fetch per remote at a time
        let home = self.scratch_home()?;
        let bare_s = bare.to_string_lossy().into_owned();
        if !bare.join("HEAD").exists() {
            let tmp = repos.join(format!("{name}.init"));
            let _ = fs::remove_dir_all(&tmp);
            let tmp_s = tmp.to_string_lossy().into_owned();
            self.run(r, "init", home.path(), &["init", "-q", "--bare", &tmp_s])?;
            fs::rename(&tmp, &bare)?;
        }
        if self.has_commit(r, &bare_s, home.path(), commit) {
            return Ok(bare);
        }
        // Fetch the commit itself (protocol v2 servers allow any reachable commit); when the server
        // refuses a bare id, fetch the named ref, and failing that everything, and look again.
        let mut attempts: Vec<Vec<&str>> = vec![vec!["--no-tags", "--depth=1", commit]];
        if let Some(reference) = r.reference.as_deref().filter(|x| !is_commit_id(x)) {
            attempts.push(vec!["--no-tags", "--depth=1", reference]);
        }
        attempts.push(vec![
            "+refs/heads/*:refs/rbuild/heads/*",
            "+refs/tags/*:refs/rbuild/tags/*",
        ]);
        let mut last = None;
        for extra in attempts {
            let (opts, refspecs): (Vec<&str>, Vec<&str>) =
                extra.into_iter().partition(|a| a.starts_with("--"));
            let mut args = vec!["--git-dir", bare_s.as_str(), "fetch", "-q"];
            args.extend(opts);
            args.push("--");
            args.push(&r.remote);
            args.extend(refspecs);
            let res = self.run(r, "fetch", home.path(), &args);
            if res.is_ok() && self.has_commit(r, &bare_s, home.path(), commit) {
                return Ok(bare);
            }
            last = res.err().or(last);
        }
        Err(last.unwrap_or_else(|| Error::RefNotFound {
            remote: r.display_remote(),
            reference: commit.to_string(),
        }))
    }

    fn has_commit(&self, r: &GitRef, bare: &str, home: &Path, commit: &str) -> bool {
        let obj = format!("{commit}^{{commit}}");
        self.run(
            r,
            "cat-file",
            home,
            &["--git-dir", bare, "cat-file", "-e", &obj],
        )
        .is_ok()
    }

    /// An empty HOME for git: nothing of the user's ~/.gitconfig, ~/.ssh/config or credentials.
    fn scratch_home(&self) -> Result<tempfile::TempDir> {
        fs::create_dir_all(&self.cache_dir)?;
        Ok(tempfile::Builder::new()
            .prefix("home-")
            .tempdir_in(&self.cache_dir)?)
    }

    fn run(&self, r: &GitRef, what: &str, home: &Path, args: &[&str]) -> Result<Vec<u8>> {
        self.run_env(r, what, home, &[], args)
    }

    fn run_env(
        &self,
        r: &GitRef,
        what: &str,
        home: &Path,
        extra_env: &[(&str, &std::ffi::OsStr)],
        args: &[&str],
    ) -> Result<Vec<u8>> {
        let mut cmd = Command::new(&self.program);
        cmd.env_clear();
        if let Some(path) = rbuild_inputs::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", home)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1024")
            .env("GIT_HTTP_LOW_SPEED_TIME", "30")
            .env("GIT_PROTOCOL_FROM_USER", "0");
        if r.transport == Transport::Ssh {
            let Some(sock) = &self.ssh_auth_sock else {
                return Err(Error::NoSshAgent {
                    remote: r.display_remote(),
                });
            };
            cmd.env("SSH_AUTH_SOCK", sock);
            let hosts = match &self.known_hosts {
                Some(f) => format!(
                    "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                    shell_quote(&f.to_string_lossy())
                ),
                None => "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no".to_string(),
            };
            cmd.env(
                "GIT_SSH_COMMAND",
                format!("ssh -F /dev/null -o BatchMode=yes -o ConnectTimeout=30 -o LogLevel=ERROR {hosts}"),
            );
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        // Only network transports; core.hooksPath and fsmonitor so nothing in a repository runs.
        cmd.args([
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.https.allow=always",
            "-c",
            "protocol.http.allow=always",
            "-c",
            "protocol.ssh.allow=always",
            "-c",
            "protocol.git.allow=always",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "credential.helper=",
            "-c",
            "submodule.recurse=false",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "init.defaultBranch=main",
        ]);
        cmd.args(args);
        cmd.stdin(Stdio::null());
        // Output goes to files, so a chatty git can never block on a full pipe while we wait.
        let mut out = tempfile::tempfile_in(&self.cache_dir)?;
        let mut err = tempfile::tempfile_in(&self.cache_dir)?;
        cmd.stdout(out.try_clone()?).stderr(err.try_clone()?);
        let mut child = cmd.spawn().map_err(|e| Error::Command {
            what: what.to_string(),
            remote: r.display_remote(),
            detail: format!("cannot run {}: {e}", self.program.display()),
        })?;
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    what: what.to_string(),
                    remote: r.display_remote(),
                    secs: self.timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = Vec::new();
        use std::io::Seek;
        out.seek(std::io::SeekFrom::Start(0))?;
        out.read_to_end(&mut stdout)?;
        if !status.success() {
            let mut stderr = String::new();
            err.seek(std::io::SeekFrom::Start(0))?;
            err.take(64 * 1024).read_to_string(&mut stderr).ok();
            let detail = stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| scrub(l, &r.remote))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::Command {
                what: what.to_string(),
                remote: r.display_remote(),
                detail: if detail.is_empty() {
                    format!("exit status {status}")
                } else {
                    detail
                },
            });
        }
        Ok(stdout)
    }
}

/// Pick the commit for `wanted` out of `git ls-remote` output: an exact ref name, else a tag
/// (peeled `^{}` first, so an annotated tag gives its commit), else a branch.
fn pick_ref(ls_remote: &str, wanted: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = ls_remote
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(id, _)| is_commit_id(id))
        .collect();
    let find = |name: &str| {
        refs.iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.to_string())
    };
    if wanted == "HEAD" {
        return find("HEAD");
    }
    if wanted.starts_with("refs/") {
        return find(&format!("{wanted}^{{}}")).or_else(|| find(wanted));
    }
    find(&format!("refs/tags/{wanted}^{{}}"))
        .or_else(|| find(&format!("refs/tags/{wanted}")))
        .or_else(|| find(&format!("refs/heads/{wanted}")))
}

/// The subdirectory inside the checkout, walked one component at a time: a symlink anywhere on the
/// way is refused (it could point outside the repository, at the host).
fn resolve_subdir(r: &GitRef, work: &Path, sub: &str) -> Result<PathBuf> {
    let mut p = work.to_path_buf();
    for c in sub.split('/') {
        p.push(c);
        let err = |why: &str| Error::Subdir {
            remote: r.display_remote(),
            subdir: sub.to_string(),
            why: why.to_string(),
        };
        let md = fs::symlink_metadata(&p).map_err(|_| err("does not exist in the repository"))?;
        if md.file_type().is_symlink() {
            return Err(err("is (or passes through) a symbolic link"));
        }
        if !md.is_dir() {
            return Err(err("is not a directory"));
        }
    }
    Ok(p)
}

/// Remove credentials of `remote` from a line git printed.
fn scrub(line: &str, remote: &str) -> String {
    let red = redact(remote);
    if red == remote {
        line.to_string()
    } else {
        line.replace(remote, &red)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_refs() {
        let c1 = "1".repeat(40);
        let c2 = "2".repeat(40);
        let c3 = "3".repeat(40);
        let ls = format!(
            "{c1}\tHEAD\n{c1}\trefs/heads/main\n{c2}\trefs/tags/v1\n{c3}\trefs/tags/v1^{{}}\n{c2}\trefs/heads/v2\n"
        );
        assert_eq!(pick_ref(&ls, "HEAD"), Some(c1.clone()));
        assert_eq!(pick_ref(&ls, "main"), Some(c1.clone()));
        assert_eq!(
            pick_ref(&ls, "v1"),
            Some(c3.clone()),
            "annotated tag is peeled"
        );
        assert_eq!(pick_ref(&ls, "refs/tags/v1"), Some(c3));
        assert_eq!(pick_ref(&ls, "v2"), Some(c2));
        assert_eq!(pick_ref(&ls, "nope"), None);
        assert_eq!(pick_ref(&ls, "refs/heads/nope"), None);
    }
}
