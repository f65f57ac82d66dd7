//! # rbuild-noop — rebuilds that change nothing, without loading the build engine
//!
//! `rbuild` is two programs. The one users run (`rbuild`, a small binary) answers one question
//! before anything else: is this exact build request one that an earlier build answered, with
//! every input unchanged since? If so it prints what the engine would print for a rebuild that
//! finds every step cached, and exits. Otherwise it hands its arguments, untouched, to the engine
//! (`rbuild-engine`, beside it), which does everything else. Cold, the engine binary is most of
//! a no-op rebuild's time: the kernel reads a 9 MB file to run it.
//!
//! The answer comes from a [`Record`] the engine wrote after the earlier build, under
//! `<store>/noop/<request key>.json`. The request key ([`Request::key`]) digests everything on
//! the command line and in the environment that can change what a build does, and the engine
//! binary's identity. The record holds what the build read, each with a way to see it unchanged:
//!
//! - the Dockerfile and the `.dockerignore` candidates: their bytes' digests (or "absent");
//! - every context selection a COPY/ADD (or bind mount) read: its stat fingerprint, the same
//!   [`rbuild_fileop::context_fingerprint`] the solver's own fast path trusts;
//! - the base images and the tags it wrote: the digests of their ref files' bytes;
//! - the image's blobs: present;
//! - the store's generation ([`bump_generation`]): anything that removes cache records, images or
//!   blobs, or replaces a cache record, changes it, so no record outlives what it relied on.
//!
//! All of it must hold; anything unreadable, malformed or missing is a miss, never an error. The
//! check is conservative by construction: it can only send a build to the engine that the engine
//! would also have found fully cached (a touched file with unchanged content, say), never the
//! other way round.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

mod request;
pub use request::{Mode, Request, CHECK_ENV, KEY_ENV, SUBCOMMANDS};

/// Records live in `<store>/noop/`.
pub const DIR: &str = "noop";
const GENERATION: &str = "generation";
const VERSION: u32 = 1;
/// Records are small; anything bigger is not ours.
const MAX_RECORD: u64 = 8 << 20;

/// `$RBUILD_ROOT`, else `/var/lib/rbuild` for root (root inside a user namespace of an ordinary
/// user, rootless, is not), else `$XDG_DATA_HOME/rbuild`
/// (`~/.local/share/rbuild`).
pub fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("RBUILD_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    if nix::unistd::geteuid().is_root() && rbuild_oci::host::in_initial_user_namespace() {
        return PathBuf::from("/var/lib/rbuild");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("rbuild");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/rbuild")
}

/// The store's current generation ("" before the first bump).
pub fn generation(root: &Path) -> String {
    std::fs::read_to_string(root.join(DIR).join(GENERATION)).unwrap_or_default()
}

/// Give the store a new generation: every record written before is void. Called after anything
/// that removes cache records, images or blobs, or replaces a cache record.
pub fn bump_generation(root: &Path) -> std::io::Result<()> {
    let dir = root.join(DIR);
    std::fs::create_dir_all(&dir)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let value = format!("{now}-{}", std::process::id());
    let path = dir.join(GENERATION);
    let tmp = dir.join(format!("{GENERATION}.tmp-{value}"));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Remove every record (they are void once the generation moves on; removing them keeps
/// `noop/` from growing with every request ever built). Best effort.
pub fn remove_records(root: &Path) {
    let Ok(dir) = std::fs::read_dir(root.join(DIR)) else {
        return;
    };
    for e in dir.flatten() {
        if e.file_name() != GENERATION {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A file whose bytes a build relied on: their sha256 (hex), or None for "not a file".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: PathBuf,
    pub sha256: Option<String>,
}

impl FileStamp {
    /// `path` holding exactly `bytes`.
    pub fn of_bytes(path: &Path, bytes: &[u8]) -> FileStamp {
        FileStamp {
            path: path.to_path_buf(),
            sha256: Some(rbuild_oci::sha256_hex(bytes)),
        }
    }

    /// `path` not being a file.
    pub fn absent(path: &Path) -> FileStamp {
        FileStamp {
            path: path.to_path_buf(),
            sha256: None,
        }
    }

    /// Whether the file is as stamped (`is_file` follows symlinks, as the engine's reads do).
    /// Only a regular file is read: a FIFO put in a stamped file's place is "changed", never a
    /// read that blocks.
    pub fn holds(&self) -> bool {
        use std::io::Read;
        let Some(want) = &self.sha256 else {
            return !self.path.is_file();
        };
        let Ok(f) = std::fs::File::options()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&self.path)
        else {
            return false;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return false;
        }
        let mut b = Vec::new();
        (&f).read_to_end(&mut b).is_ok() && rbuild_oci::sha256_hex(&b) == *want
    }
}

/// One context selection a build read, and its stat fingerprint
/// ([`rbuild_fileop::context_fingerprint`] of the same arguments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub dir: PathBuf,
    pub sources: Vec<String>,
    /// `.dockerignore` patterns.
    pub ignore: Vec<String>,
    /// The copy's `--exclude` patterns.
    pub exclude: Vec<String>,
    pub parents: bool,
    /// `sha256:<hex>`.
    pub fingerprint: String,
}

impl Selection {
    fn holds(&self) -> bool {
        rbuild_fileop::context_fingerprint(
            &self.dir,
            &self.sources,
            &self.ignore,
            &self.exclude,
            self.parents,
        )
        .is_ok_and(|f| f.to_string() == self.fingerprint)
    }
}

/// A step as a fully cached rebuild shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// Shown CACHED; else shown DONE with the time the check took (the context load).
    pub cached: bool,
}

/// What an earlier build of one request read, and what it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// [`generation`] when the build began.
    pub generation: String,
    /// `meta.db`'s identity: a database made anew holds none of the records.
    pub db: String,
    /// The Dockerfile and `.dockerignore` candidates.
    pub files: Vec<FileStamp>,
    pub selections: Vec<Selection>,
    /// Ref files of the base images it resolved by name and of the tags it wrote.
    pub refs: Vec<FileStamp>,
    /// Blobs (`sha256:<hex>`) the image needs.
    pub blobs: Vec<String>,
    /// Cache keys of its steps: a no-op answered here counts as their use (see [`uses`]).
    pub keys: Vec<String>,
    pub steps: Vec<Step>,
    /// The image id (config digest), printed on stdout.
    pub id: String,
    /// Bytes of config and layers (the live view's summary).
    pub size: u64,
    /// The image's manifest digest (`--metadata-file`).
    #[serde(default)]
    pub manifest: String,
}

impl Record {
    /// A record of a build that began at `generation`, for the store at `root`.
    pub fn new(root: &Path, generation: String) -> Record {
        Record {
            version: VERSION,
            generation,
            db: db_identity(root),
            files: Vec::new(),
            selections: Vec::new(),
            refs: Vec::new(),
            blobs: Vec::new(),
            keys: Vec::new(),
            steps: Vec::new(),
            id: String::new(),
            size: 0,
            manifest: String::new(),
        }
    }
}

/// `dev:ino:birth-time` of `meta.db` (a file made anew may get a freed inode number back).
fn db_identity(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(root.join("meta.db"))
        .map(|m| {
            let born = m
                .created()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}:{}:{born}", m.dev(), m.ino())
        })
        .unwrap_or_default()
}

fn record_path(root: &Path, key: &str) -> Option<PathBuf> {
    // The key is a hex digest; anything else never names a file.
    (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| root.join(DIR).join(format!("{key}.json")))
}

/// Write `rec` as the record of request `key` (unless it is already there). Not synced: a record
/// lost in a crash only makes the next no-op take the engine's way.
pub fn write_record(root: &Path, key: &str, rec: &Record) -> std::io::Result<()> {
    let path = record_path(root, key)
        .ok_or_else(|| std::io::Error::other(format!("bad request key {key:?}")))?;
    let body = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    if std::fs::read(&path).is_ok_and(|old| old == body) {
        return Ok(());
    }
    std::fs::create_dir_all(root.join(DIR))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A record whose every stamp still holds.
#[derive(Debug)]
pub struct Hit {
    pub record: Record,
    pub path: PathBuf,
    /// How long re-reading the context selections took (shown as the context load's time).
    pub context_time: Duration,
}

/// The record of request `key` if everything it relied on is unchanged; else why not (the
/// first stamp that does not hold).
pub fn check(root: &Path, key: &str) -> Result<Hit, String> {
    let path = record_path(root, key).ok_or("not a request key")?;
    let rec = read_record(&path).ok_or_else(|| format!("no readable record {}", path.display()))?;
    if rec.version != VERSION || rec.id.is_empty() {
        return Err("the record is of another version".into());
    }
    if rec.generation != generation(root) {
        return Err("the store changed since (prune, rmi, fsck or a replaced cache record)".into());
    }
    if rec.db.is_empty() || rec.db != db_identity(root) {
        return Err("the store's database was made anew".into());
    }
    if let Some(f) = rec.files.iter().chain(&rec.refs).find(|f| !f.holds()) {
        return Err(format!("{} changed", f.path.display()));
    }
    let blobs = root.join("blobs").join("sha256");
    for b in &rec.blobs {
        let hex = b
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| format!("bad blob digest {b:?}"))?;
        if !blobs.join(hex).is_file() {
            return Err(format!("blob {b} is missing"));
        }
    }
    let started = Instant::now();
    if let Some(s) = rec.selections.iter().find(|s| !s.holds()) {
        return Err(format!(
            "files of {:?} in {} changed",
            s.sources,
            s.dir.display()
        ));
    }
    Ok(Hit {
        record: rec,
        path,
        context_time: started.elapsed(),
    })
}

fn read_record(path: &Path) -> Option<Record> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut body = Vec::new();
    f.take(MAX_RECORD).read_to_end(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// Mark a record used now (its mtime), for [`uses`].
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// The last use (ns since the epoch) of each cache key that no-op checks answered for: prune
/// counts it as the record's use.
pub fn uses(root: &Path) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(root.join(DIR)) else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(rec) = read_record(&p) else { continue };
        let Some(ns) = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        else {
            continue;
        };
        for k in rec.keys {
            let v = out.entry(k).or_insert(ns);
            *v = (*v).max(ns);
        }
    }
    out
}

/// What the engine's plain progress shows for a rebuild that finds every step cached.
pub fn render_plain(hit: &Hit) -> String {
    let mut out = String::new();
    for (i, s) in hit.record.steps.iter().enumerate() {
        let n = i + 1;
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("#{n} {}\n", s.name));
        if s.cached {
            out.push_str(&format!("#{n} CACHED\n"));
        } else {
            out.push_str(&format!(
                "#{n} DONE {:.1}s\n",
                hit.context_time.as_secs_f64()
            ));
        }
    }
    out
}

/// What the engine's live view leaves on the terminal for a rebuild that finds every step
/// cached (its last frame: one line per step, then the summary). `color`: ANSI colours.
pub fn render_tty(hit: &Hit, elapsed: Duration, color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let (mut cached, mut ran) = (0, 0);
    for s in &hit.record.steps {
        if s.cached {
            cached += 1;
            out.push_str(&format!("{} {}\n", paint("34", "CACHED"), s.name));
        } else {
            ran += 1;
            out.push_str(&format!(
                "{} {} {:.1}s\n",
                paint("32", "DONE"),
                s.name,
                hit.context_time.as_secs_f64()
            ));
        }
    }
    out.push_str(&format!(
        "{} in {:.1}s ({cached} cached, {ran} run) image {} size {}\n",
        paint("1", "Finished"),
        elapsed.as_secs_f64(),
        hit.record.id,
        human(hit.record.size)
    ));
    out
}

/// What `--metadata-file` holds after a build (BuildKit's keys).
pub fn build_metadata(manifest: &str, id: &str, tags: &[String]) -> Vec<u8> {
    let meta = serde_json::json!({
        "containerimage.digest": manifest,
        "containerimage.config.digest": id,
        "image.name": tags.join(","),
    });
    serde_json::to_vec_pretty(&meta).unwrap_or_default()
}

/// Bytes as the progress output shows them (`5.10MB`).
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut f = n as f64;
    let mut i = 0;
    while f >= 1000.0 && i < U.len() - 1 {
        f /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{f:.2}{}", U[i])
    }
}

#[cfg(test)]
mod tests;
