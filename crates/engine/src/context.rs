//! The build context argument: a directory, a local tar file (plain, gzip or zstd), `-` (a tar
//! on stdin, or a lone Dockerfile on stdin with an empty context, as `docker build - < Dockerfile`),
//! a git URL (`https://host/repo.git#ref:subdir`, `git@host:repo.git`, BuildKit's forms: the ref is
//! resolved and its tree checked out by rbuild-git), or an http(s) URL of a tar archive.
//! Archives are unpacked into a private temporary directory with fileop's extractor (ADD's), which
//! resolves every member beneath the directory, refuses `..` and keeps budgets — never with tar's
//! own unpack, and never with the layer applier (a context's `.wh.` file is a file, not a whiteout).

use anyhow::{anyhow, bail, Context as _};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A resolved context. Keep it alive for the whole build: it owns the temporary directory.
pub struct ResolvedContext {
    pub dir: PathBuf,
    /// Set when stdin held a Dockerfile rather than a tar.
    pub stdin_dockerfile: Option<String>,
    tmp: Option<tempfile::TempDir>,
    /// For a git context: the bare repository git fetched into.
    _git_cache: Option<tempfile::TempDir>,
}

impl ResolvedContext {
    /// The context came from an archive (or stdin), not a directory of the user's.
    pub fn is_archive(&self) -> bool {
        self.tmp.is_some()
    }
}

pub fn resolve(arg: &Path) -> anyhow::Result<ResolvedContext> {
    if let Some(remote) = resolve_url(&arg.to_string_lossy())? {
        return Ok(remote);
    }
    if arg.as_os_str() == "-" {
        let mut stdin = std::io::stdin();
        let mut head = Vec::with_capacity(512);
        (&mut stdin)
            .take(512)
            .read_to_end(&mut head)
            .context("reading the build context from stdin")?;
        let tmp = temp_dir()?;
        if looks_like_archive(&head) {
            let reader = std::io::Cursor::new(head).chain(stdin);
            unpack(reader, tmp.path()).context("unpacking the build context from stdin")?;
            return Ok(ResolvedContext {
                dir: tmp.path().to_path_buf(),
                stdin_dockerfile: None,
                tmp: Some(tmp),
                _git_cache: None,
            });
        }
        let mut rest = Vec::new();
        stdin
            .read_to_end(&mut rest)
            .context("reading the Dockerfile from stdin")?;
        head.extend_from_slice(&rest);
        let text = String::from_utf8(head)
            .map_err(|_| anyhow!("stdin is neither a tar archive nor a UTF-8 Dockerfile"))?;
        return Ok(ResolvedContext {
            dir: tmp.path().to_path_buf(),
            stdin_dockerfile: Some(text),
            tmp: Some(tmp),
            _git_cache: None,
        });
    }
    let meta = std::fs::metadata(arg).map_err(|e| {
        anyhow!(
            "build context {}: {}",
            arg.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                "is not a directory (no such file or directory)".to_string()
            } else {
                e.to_string()
            }
        )
    })?;
    if meta.is_dir() {
        return Ok(ResolvedContext {
            dir: arg.to_path_buf(),
            stdin_dockerfile: None,
            tmp: None,
            _git_cache: None,
        });
    }
    if !meta.is_file() {
        bail!(
            "build context {} is not a directory, a tar file or -",
            arg.display()
        );
    }
    let mut f = std::fs::File::open(arg)
        .with_context(|| format!("opening the build context {}", arg.display()))?;
    let mut head = Vec::with_capacity(512);
    (&mut f)
        .take(512)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", arg.display()))?;
    if !looks_like_archive(&head) {
        bail!(
            "build context {} is not a directory, and not a tar archive (plain, gzip or zstd)",
            arg.display()
        );
    }
    let tmp = temp_dir()?;
    let reader = std::io::Cursor::new(head).chain(f);
    unpack(reader, tmp.path())
        .with_context(|| format!("unpacking the build context {}", arg.display()))?;
    Ok(ResolvedContext {
        dir: tmp.path().to_path_buf(),
        stdin_dockerfile: None,
        tmp: Some(tmp),
        _git_cache: None,
    })
}

/// A context named by URL: `Ok(None)` when `s` is not one (a local path).
pub fn resolve_url(s: &str) -> anyhow::Result<Option<ResolvedContext>> {
    if let Some(r) = rbuild_git::GitRef::parse(s)? {
        let cache = tempfile::Builder::new()
            .prefix("rbuild-git-")
            .tempdir()
            .context("creating a temporary directory for git")?;
        let git = rbuild_git::Git::new(cache.path())
            .with_ssh_agent(rbuild_inputs::var_os("SSH_AUTH_SOCK").map(PathBuf::from));
        let commit = git.resolve(&r)?;
        let tmp = temp_dir()?;
        git.checkout(&r, &commit, tmp.path(), false)?;
        return Ok(Some(ResolvedContext {
            dir: tmp.path().to_path_buf(),
            stdin_dockerfile: None,
            tmp: Some(tmp),
            _git_cache: Some(cache),
        }));
    }
    if s.starts_with("https://") || s.starts_with("http://") {
        let tmp = temp_dir()?;
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .timeout(std::time::Duration::from_secs(600))
            .build()?;
        let resp = client
            .get(s)
            .send()
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("downloading the build context {s}"))?;
        let mut body = std::io::BufReader::new(resp);
        let head = std::io::BufRead::fill_buf(&mut body)
            .with_context(|| format!("downloading the build context {s}"))?
            .to_vec();
        if !looks_like_archive(&head) && head.len() >= 262 {
            bail!(
                "build context {s} is not a git repository or a tar archive (plain, gzip or zstd)"
            );
        }
        unpack(body, tmp.path()).with_context(|| format!("unpacking the build context {s}"))?;
        return Ok(Some(ResolvedContext {
            dir: tmp.path().to_path_buf(),
            stdin_dockerfile: None,
            tmp: Some(tmp),
            _git_cache: None,
        }));
    }
    Ok(None)
}

fn temp_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("rbuild-context-")
        .tempdir()
        .context("creating a temporary directory for the build context")
}

/// gzip or zstd magic, or a ustar/GNU tar header (magic at offset 257).
fn looks_like_archive(head: &[u8]) -> bool {
    if rbuild_snapshotter::diff::detect(head).is_some() {
        return true;
    }
    head.len() >= 262 && &head[257..262] == b"ustar"
}

/// Unpack a context archive with fileop's extractor (ADD's): the directory is the archive's root,
/// every member is resolved beneath it (`..` stops at the root, as Docker's untar), budgets hold,
/// and a member is a file as written — a `.wh.` name is an ordinary file of the user's, not a
/// layer's whiteout.
fn unpack<R: Read>(reader: R, dest: &Path) -> anyhow::Result<()> {
    let mut reader = std::io::BufReader::new(reader);
    let head = std::io::BufRead::fill_buf(&mut reader)?;
    let compression = rbuild_fileop::unpack::sniff(head);
    let root = rbuild_fileop::Root::open(dest).map_err(|e| anyhow!("{e}"))?;
    rbuild_fileop::unpack::extract_clamped(
        reader,
        compression,
        "the build context",
        &root,
        &rbuild_fileop::ExtractLimits::default(),
        &mut rbuild_fileop::ApplyStats::default(),
    )
    .map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context tar is the user's files: `.wh.` names (a layer's whiteouts) are ordinary files
    /// here, unpacked as they are; and a member cannot climb out (`../out` lands at the root).
    #[test]
    fn whiteout_names_are_ordinary_files() {
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("Dockerfile", &b"FROM scratch\n"[..]),
            (".wh.keep", b"not a whiteout"),
            ("dir/.wh..wh..opq", b"opaque? no"),
            ("dir/a", b"a"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(uid.into());
            h.set_gid(gid.into());
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        unpack(std::io::Cursor::new(bytes), tmp.path()).unwrap();
        let read = |p: &str| std::fs::read(tmp.path().join(p)).unwrap();
        assert_eq!(read(".wh.keep"), b"not a whiteout");
        assert_eq!(read("dir/.wh..wh..opq"), b"opaque? no");
        assert_eq!(read("dir/a"), b"a");
        assert_eq!(read("Dockerfile"), b"FROM scratch\n");

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..6].copy_from_slice(b"../out");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let inner = tmp.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        unpack(std::io::Cursor::new(bytes), &inner).unwrap();
        assert!(!tmp.path().join("out").exists());
        assert_eq!(std::fs::read(inner.join("out")).unwrap(), b"x");
    }

    #[test]
    fn sniffs_archives() {
        assert!(looks_like_archive(&[0x1f, 0x8b, 8, 0]));
        assert!(looks_like_archive(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        let mut hdr = vec![0u8; 512];
        hdr[257..262].copy_from_slice(b"ustar");
        assert!(looks_like_archive(&hdr));
        assert!(!looks_like_archive(b"FROM busybox\nRUN true\n"));
        assert!(!looks_like_archive(b""));
    }
}
