//! # rbuild-noop — rebuilds that change nothing, without loading the build engine
//!
//! `rbuild` is two programs. The one users run (`rbuild`, a small binary) first asks: did an
//! earlier run of exactly this command (same arguments, same working directory, same engine
//! binary) leave a [`Record`] whose every input still reads the same? If so it replays that
//! record's output and exits. Otherwise it hands its arguments, untouched, to the engine
//! (`rbuild-engine`, beside it), which does everything else. Cold, the engine binary is most of
//! a no-op rebuild's time: the kernel reads a 9 MB file to run it.
//!
//! The front knows no flag and no subcommand. The request key ([`request_key`]) is the engine's
//! identity, the working directory and the raw arguments. Everything else that can change an
//! answer is in the record, written by the engine for a build it can vouch for:
//!
//! - **inputs**: every read the engine made through [`rbuild_inputs`] (environment variables,
//!   the Dockerfile and `.dockerignore` candidates, ref files, the store's generation, the
//!   database's identity, the blobs it stands on, whether stderr is a terminal), plus the
//!   context selections it copied, each with its stat fingerprint
//!   ([`rbuild_fileop::context_fingerprint`], the same one the solver's fast path trusts);
//! - **output**: the bytes it would print for the rebuild (stdout, stderr — for the live view,
//!   its last frame), with the two times in them left as holes ([`Part`]), and the files it
//!   would write (`--iidfile`, `--metadata-file`).
//!
//! All inputs must hold; anything unreadable, malformed or missing is a miss, never an error.
//! The check is conservative by construction: it can only send a build to the engine that the
//! engine would also have found fully cached, never the other way round.
//!
//! Records live in `<store>/noop/<key>.json` ([`DIR`]); the store itself knows nothing of them.
//! They stand on the store's generation (a file the store bumps when it removes or replaces what
//! builds stand on), so a prune, `rmi` or replaced cache record voids them without telling this
//! crate.

use rbuild_inputs::Read;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Records live in `<store>/noop/`.
pub const DIR: &str = "noop";
const VERSION: u32 = 2;
/// Records are small; anything bigger is not ours.
const MAX_RECORD: u64 = 8 << 20;

/// The engine reads the request key the front computed from here, and writes its record under it.
pub const KEY_ENV: &str = "RBUILD_NOOP_KEY";

/// `0`: the front answers nothing; `explain`: it says on stderr why it did not answer.
pub const CHECK_ENV: &str = "RBUILD_NOOP_CHECK";

/// The key of one command: the engine binary's identity, the working directory, the arguments
/// (without the program name), each length-prefixed.
pub fn request_key<A: AsRef<OsStr>>(engine: &str, cwd: &Path, args: &[A]) -> String {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt;
    let mut h = sha2::Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(b"rbuild-noop/request/v2");
    field(engine.as_bytes());
    field(cwd.as_os_str().as_bytes());
    for a in args {
        field(a.as_ref().as_bytes());
    }
    hex::encode(h.finalize())
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

/// A step as a fully cached rebuild shows it (the solver's account of a build, from which the
/// engine renders the replayed output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// Shown CACHED; else shown DONE with the time the check took (the context load).
    pub cached: bool,
}

/// A piece of replayed output: bytes, or a time only the replay knows, shown as `{:.1}s`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Text(String),
    /// How long re-checking the context selections took (the context load's time).
    CheckTime,
    /// Time since the front started (the live view's total).
    Elapsed,
}

/// A file the build wrote, with its contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub path: PathBuf,
    pub contents: String,
}

/// What the command printed and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub stdout: Vec<Part>,
    pub stderr: Vec<Part>,
    /// Written before anything is printed, in order.
    pub files: Vec<Written>,
}

/// One input of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Read(Read),
    Selection(Selection),
}

/// What an earlier run of one command read, and what it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub inputs: Vec<Input>,
    pub output: Output,
    /// Cache keys of its steps: a no-op answered here counts as their use (see [`uses`]).
    pub keys: Vec<String>,
}

impl Record {
    /// A record of `reads` and `selections` answering `output`.
    pub fn new(reads: Vec<Read>, selections: Vec<Selection>, output: Output) -> Record {
        Record {
            version: VERSION,
            inputs: reads
                .into_iter()
                .map(Input::Read)
                .chain(selections.into_iter().map(Input::Selection))
                .collect(),
            output,
            keys: Vec::new(),
        }
    }
}

/// `<root>/noop`.
pub fn records_dir(root: &Path) -> PathBuf {
    root.join(DIR)
}

fn record_path(dir: &Path, key: &str) -> Option<PathBuf> {
    // The key is a hex digest; anything else never names a file.
    (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| dir.join(format!("{key}.json")))
}

/// Write `rec` as the record of request `key` in `dir` (unless it is already there). Not synced:
/// a record lost in a crash only makes the next no-op take the engine's way.
pub fn write_record(dir: &Path, key: &str, rec: &Record) -> std::io::Result<()> {
    let path = record_path(dir, key)
        .ok_or_else(|| std::io::Error::other(format!("bad request key {key:?}")))?;
    let body = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    if std::fs::read(&path).is_ok_and(|old| old == body) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let res = std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A record whose every input still holds.
#[derive(Debug)]
pub struct Hit {
    pub record: Record,
    pub path: PathBuf,
    /// How long re-reading the context selections took (shown as the context load's time).
    pub check_time: Duration,
}

/// The record of request `key` in `dir` if everything it read is unchanged; else why not (the
/// first input that does not hold). Reads first (cheap), context selections last (a walk).
pub fn check(dir: &Path, key: &str) -> Result<Hit, String> {
    let path = record_path(dir, key).ok_or("not a request key")?;
    let rec = read_record(&path).ok_or_else(|| format!("no readable record {}", path.display()))?;
    if rec.version != VERSION {
        return Err("the record is of another version".into());
    }
    for i in &rec.inputs {
        if let Input::Read(r) = i {
            if !r.holds() {
                return Err(format!("{} changed", describe(r)));
            }
        }
    }
    let started = Instant::now();
    for i in &rec.inputs {
        if let Input::Selection(s) = i {
            if !s.holds() {
                return Err(format!(
                    "files of {:?} in {} changed",
                    s.sources,
                    s.dir.display()
                ));
            }
        }
    }
    Ok(Hit {
        record: rec,
        path,
        check_time: started.elapsed(),
    })
}

fn describe(r: &Read) -> String {
    match r {
        Read::Env { name, .. } => format!("${name}"),
        Read::File { path, .. } | Read::IsFile { path, .. } | Read::Identity { path, .. } => {
            path.display().to_string()
        }
        Read::Present { path } => format!("{} (present)", path.display()),
        Read::Terminal { fd, .. } => format!("whether fd {fd} is a terminal"),
        Read::Resolves { path, .. } => format!("where {} leads", path.display()),
    }
}

fn read_record(path: &Path) -> Option<Record> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).ok()?;
    let mut body = Vec::new();
    f.take(MAX_RECORD).read_to_end(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The output parts as bytes, the holes filled.
pub fn render(parts: &[Part], check_time: Duration, elapsed: Duration) -> String {
    let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.clone(),
            Part::CheckTime => secs(check_time),
            Part::Elapsed => secs(elapsed),
        })
        .collect()
}

/// Mark a record used now (its mtime), for [`uses`].
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// The last use (ns since the epoch) of each cache key that no-op answers in `dir` answered for:
/// prune counts it as the cache record's use.
pub fn uses(dir: &Path) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
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

/// Remove the records in `dir` that can no longer answer: unreadable ones, those of another
/// version, and those a file they read (the store's generation, a blob, a Dockerfile) no longer
/// matches. Environment and terminal inputs are not looked at (another shell may match them),
/// nor context selections (a walk each). Best effort; returns how many were removed.
pub fn sweep(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale_tmp = name.contains(".tmp-");
        let void = stale_tmp
            || (p.extension().is_some_and(|x| x == "json")
                && read_record(&p).is_none_or(|rec| {
                    rec.version != VERSION
                        || rec.inputs.iter().any(|i| match i {
                            Input::Read(
                                r @ (Read::File { .. }
                                | Read::IsFile { .. }
                                | Read::Present { .. }
                                | Read::Identity { .. }
                                | Read::Resolves { .. }),
                            ) => !r.holds(),
                            _ => false,
                        })
                }));
        if void && std::fs::remove_file(&p).is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests;
