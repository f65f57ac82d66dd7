//! # rbuild-inputs — everything the engine reads from outside the store, in one place
//!
//! A build's answer depends on its command line, its working directory, and what it reads: the
//! environment, files (the Dockerfile, `.dockerignore`, ref files, the store's generation),
//! whether a stream is a terminal. The no-op front (`rbuild-noop`) answers a rebuild from a
//! record of an earlier one only if every one of those reads would give the same value now, so
//! the record must hold *every* read, not a list someone keeps by hand.
//!
//! This crate is that list's only source: the process-wide recorder [`global`] notes each read
//! made through [`var`], [`var_os`], [`read`], [`is_file`], [`terminal`] (and reads made
//! elsewhere that a caller [`note`]s: ref files, blobs, the store's database). A test
//! (`tests/one_accessor.rs`) fails when any other source file of the workspace reads the
//! environment itself, so a new variable cannot be read without being recorded. A read that
//! cannot be recorded faithfully (a file that exists but cannot be read, no working directory)
//! [`taint`]s the process: its build writes no record. Environment values are kept as digests:
//! a record holds no secret.
//!
//! Recording is cheap (a mutex and a push per read; a file's bytes are hashed once) and never
//! changes what a read returns.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// One read and what it gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Read {
    /// An environment variable: the sha256 of its value (a record holds no secret), or None when
    /// unset.
    Env {
        name: String,
        sha256: Option<String>,
    },
    /// A file's bytes (their sha256, hex), or None: not a regular file (absent, a directory…).
    File {
        path: PathBuf,
        sha256: Option<String>,
    },
    /// Whether `path` is a regular file (symlinks followed), without its bytes.
    IsFile { path: PathBuf, is: bool },
    /// A file that only had to be there (a blob: its name is its content's digest).
    Present { path: PathBuf },
    /// A file's identity (`dev:ino:birth-time`): the same file, not one made anew in its place.
    Identity { path: PathBuf, id: String },
    /// Whether standard stream `fd` (0, 1, 2) is a terminal.
    Terminal { fd: i32, is: bool },
    /// What `path` resolves to (symlinks followed), or None: nothing.
    Resolves { path: PathBuf, to: Option<PathBuf> },
}

impl Read {
    /// What the read is of: two reads of the same thing have the same subject.
    fn subject(&self) -> (u8, &std::ffi::OsStr) {
        match self {
            Read::Env { name, .. } => (0, name.as_ref()),
            Read::File { path, .. } => (1, path.as_os_str()),
            Read::IsFile { path, .. } => (2, path.as_os_str()),
            Read::Present { path } => (3, path.as_os_str()),
            Read::Identity { path, .. } => (4, path.as_os_str()),
            Read::Resolves { path, .. } => (6, path.as_os_str()),
            Read::Terminal { fd, .. } => (
                5,
                match fd {
                    0 => "0".as_ref(),
                    1 => "1".as_ref(),
                    _ => "2".as_ref(),
                },
            ),
        }
    }

    /// Whether the same read now gives the same value. Only a regular file is read (a FIFO put
    /// in a file's place is "changed", never a read that blocks).
    pub fn holds(&self) -> bool {
        match self {
            Read::Env { name, sha256 } => {
                use std::os::unix::ffi::OsStrExt;
                std::env::var_os(name).map(|v| sha256_hex(v.as_bytes())) == *sha256
            }
            Read::File { path, sha256 } => file_digest(path).ok() == Some(sha256.clone()),
            Read::IsFile { path, is } => path.is_file() == *is,
            Read::Present { path } => path.is_file(),
            Read::Identity { path, id } => identity(path).as_ref() == Some(id),
            Read::Terminal { fd, is } => is_terminal(*fd) == *is,
            Read::Resolves { path, to } => path.canonicalize().ok() == *to,
        }
    }
}

/// Reads noted so far, first read of each subject only (a later read that gave another value
/// makes the record void, as it should: the build saw a moving target).
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    reads: Vec<Read>,
    taint: Option<String>,
}

impl Recorder {
    /// Note `r` (a relative path is made absolute against the working directory now, so the
    /// read can be checked from anywhere).
    pub fn note(&self, mut r: Read) {
        if let Read::File { path, .. }
        | Read::IsFile { path, .. }
        | Read::Present { path }
        | Read::Identity { path, .. }
        | Read::Resolves { path, .. } = &mut r
        {
            if path.is_relative() {
                match std::env::current_dir() {
                    Ok(cwd) => *path = cwd.join(&*path),
                    Err(e) => self.taint(format!("no working directory: {e}")),
                }
            }
        }
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !s.reads.iter().any(|o| o.subject() == r.subject()) {
            s.reads.push(r);
        }
    }

    pub fn taint(&self, why: impl Into<String>) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.taint.get_or_insert_with(|| why.into());
    }

    /// Every read so far, in order; or why no record can stand on them.
    pub fn reads(&self) -> Result<Vec<Read>, String> {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &s.taint {
            Some(why) => Err(why.clone()),
            None => Ok(s.reads.clone()),
        }
    }
}

/// The process's recorder.
pub fn global() -> &'static Recorder {
    static G: OnceLock<Recorder> = OnceLock::new();
    G.get_or_init(Recorder::default)
}

/// Note a read made elsewhere.
pub fn note(r: Read) {
    global().note(r)
}

/// Say that this process read something no record can stand on.
pub fn taint(why: impl Into<String>) {
    global().taint(why)
}

/// `std::env::var_os`, recorded.
pub fn var_os(name: &str) -> Option<OsString> {
    let v = std::env::var_os(name);
    note(env_read(name, v.as_deref()));
    v
}

/// The read of variable `name` with value `value`.
pub fn env_read(name: &str, value: Option<&std::ffi::OsStr>) -> Read {
    use std::os::unix::ffi::OsStrExt;
    Read::Env {
        name: name.to_string(),
        sha256: value.map(|v| sha256_hex(v.as_bytes())),
    }
}

/// `std::env::var(name).ok()`, recorded (a value that is not UTF-8 reads as unset, as callers of
/// `std::env::var(..).ok()` had it).
pub fn var(name: &str) -> Option<String> {
    var_os(name).and_then(|v| v.into_string().ok())
}

/// A variable that is no input of any answer (the front's and the engine's protocol:
/// `RBUILD_NOOP_KEY`, `RBUILD_NOOP_CHECK`), read without recording it.
pub fn protocol_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `path.canonicalize()`, recorded.
pub fn canonicalize(path: &Path) -> std::io::Result<PathBuf> {
    let r = path.canonicalize();
    note(Read::Resolves {
        path: path.to_path_buf(),
        to: r.as_ref().ok().cloned(),
    });
    r
}

/// `std::fs::read`, recorded: the bytes' digest, or "not a file" when there is none.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => {
            note(Read::File {
                path: path.to_path_buf(),
                sha256: Some(sha256_hex(&b)),
            });
            Ok(b)
        }
        Err(e) => {
            if e.kind() == std::io::ErrorKind::NotFound {
                note(Read::File {
                    path: path.to_path_buf(),
                    sha256: None,
                });
            } else {
                taint(format!("reading {}: {e}", path.display()));
            }
            Err(e)
        }
    }
}

/// `std::fs::read_to_string`, recorded.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// `path.is_file()`, recorded.
pub fn is_file(path: &Path) -> bool {
    let is = path.is_file();
    note(Read::IsFile {
        path: path.to_path_buf(),
        is,
    });
    is
}

/// Whether standard stream `fd` (0 stdin, 1 stdout, 2 stderr) is a terminal, recorded.
pub fn terminal(fd: i32) -> bool {
    let is = is_terminal(fd);
    note(Read::Terminal { fd, is });
    is
}

fn is_terminal(fd: i32) -> bool {
    match fd {
        0 => std::io::stdin().is_terminal(),
        1 => std::io::stdout().is_terminal(),
        _ => std::io::stderr().is_terminal(),
    }
}

/// Note that `path` must stay a file (its name says what it holds).
pub fn present(path: &Path) {
    note(Read::Present {
        path: path.to_path_buf(),
    })
}

/// Note `path`'s identity (a file made anew in its place is another input); false when there is
/// no such file.
pub fn note_identity(path: &Path) -> bool {
    match identity(path) {
        Some(id) => {
            note(Read::Identity {
                path: path.to_path_buf(),
                id,
            });
            true
        }
        None => false,
    }
}

/// `dev:ino:birth-time` (a file made anew may get a freed inode number back).
pub fn identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Some(format!("{}:{}:{born}", m.dev(), m.ino()))
}

/// The sha256 of a regular file's bytes, None when it is not a regular file; an error when it
/// is one that cannot be read.
fn file_digest(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    let f = match std::fs::File::options()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Ok(None);
    }
    let mut b = Vec::new();
    (&f).read_to_end(&mut b)?;
    Ok(Some(sha256_hex(&b)))
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hold_until_what_they_read_changes() {
        let d = tempfile_dir();
        let p = d.join("f");
        std::fs::write(&p, "a").unwrap();
        let r = Recorder::default();
        r.note(Read::File {
            path: p.clone(),
            sha256: file_digest(&p).unwrap(),
        });
        r.note(Read::IsFile {
            path: d.join("g"),
            is: false,
        });
        r.note(Read::Identity {
            path: p.clone(),
            id: identity(&p).unwrap(),
        });
        // A second read of the same subject is not noted again.
        r.note(Read::File {
            path: p.clone(),
            sha256: None,
        });
        let reads = r.reads().unwrap();
        assert_eq!(reads.len(), 3);
        assert!(reads.iter().all(Read::holds));
        std::fs::write(&p, "b").unwrap();
        assert!(!reads[0].holds(), "new bytes");
        std::fs::write(d.join("g"), "").unwrap();
        assert!(!reads[1].holds(), "a file appeared");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "a").unwrap();
        assert!(reads[0].holds(), "same bytes again");
        // Same bytes, a file made anew: its identity differs (birth time, maybe the inode).
        assert!(env_read("RBUILD_INPUTS_TEST_UNSET_VARIABLE", None).holds());
        let path = std::env::var_os("PATH").unwrap();
        assert!(env_read("PATH", Some(&path)).holds());
        assert!(!env_read("PATH", Some("/nowhere".as_ref())).holds());
        assert!(!env_read("PATH", None).holds());
        r.taint("x");
        r.taint("y");
        assert_eq!(r.reads().unwrap_err(), "x");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_fifo_in_a_file_s_place_is_a_change_not_a_hang() {
        let d = tempfile_dir();
        let p = d.join("f");
        let ok = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP: mkfifo not available");
            return;
        }
        let r = Read::File {
            path: p,
            sha256: Some(sha256_hex(b"")),
        };
        assert!(!r.holds());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "rbuild-inputs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
