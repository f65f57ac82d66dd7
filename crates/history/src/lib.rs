//! # rbuild-history — what every build left behind
//!
//! Each build the engine runs leaves a [`Record`] (the
//! request, its inputs' digests, per-step timings and cache outcome, the status and the error)
//! and its full plain log, never truncated, under `<store>/history/`:
//! `<id>.json` and `<id>.log`. Ids are time-ordered (`{millis:012x}{nonce:04x}`), so the
//! directory's order is the builds' order.
//!
//! The history is bounded as a whole, never by cutting a log: after each record is written the
//! oldest records are removed while there are more than [`Limits::builds`] of them or their
//! files take more than [`Limits::bytes`] (the newest one is always kept). `rbuild prune` removes
//! it all ([`prune`]).
//!
//! Light on purpose (serde only), so that the front could record its no-op answers too (it does
//! not yet).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The history's directory under the store root.
pub const DIR: &str = "history";
/// `RBUILD_HISTORY_MAX_BUILDS` / `RBUILD_HISTORY_MAX_BYTES` override [`Limits::default`].
pub const MAX_BUILDS_ENV: &str = "RBUILD_HISTORY_MAX_BUILDS";
pub const MAX_BYTES_ENV: &str = "RBUILD_HISTORY_MAX_BYTES";

/// How a build ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Built, outputs written.
    Succeeded,
    /// A step failed.
    Failed,
    /// The Dockerfile does not parse or plan, or `check=error=true` refused it.
    Invalid,
    /// Interrupted.
    Cancelled,
    /// The engine's own error (a file, the store, an export, a push).
    Error,
    /// Still running, or the process died (no end was written).
    Running,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Invalid => "invalid",
            Status::Cancelled => "cancelled",
            Status::Error => "error",
            Status::Running => "running",
        }
    }
}

/// One step as the build's progress showed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The progress display's `#N`.
    pub number: u32,
    pub name: String,
    /// `cached`, `run`, `failed`, `cancelled`, or `started` (no end seen).
    pub outcome: String,
    /// Milliseconds from the build's start to the step's first event.
    pub start_ms: u64,
    /// How long it ran (0 when cached).
    pub duration_ms: u64,
    /// Why it could not be reused, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_miss: Option<String>,
}

/// An input and its digest (the Dockerfile, each base image).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub name: String,
    pub digest: String,
}

/// What was asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The command line (without the program name).
    pub args: Vec<String>,
    pub cwd: String,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Seconds since 1970 (with milliseconds).
    pub started: f64,
    pub duration_ms: u64,
    pub status: Status,
    pub request: Request,
    #[serde(default)]
    pub inputs: Vec<Input>,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// The image id (config digest), when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's manifest digest, when built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The error as printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process's exit code.
    #[serde(default)]
    pub exit_code: u8,
}

impl Record {
    /// A new record with a fresh id, started now.
    pub fn start(request: Request) -> Record {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Record {
            id: new_id(now),
            started: (now.as_millis() as f64) / 1000.0,
            duration_ms: 0,
            status: Status::Running,
            request,
            inputs: Vec::new(),
            steps: Vec::new(),
            image: None,
            manifest: None,
            error: None,
            exit_code: 0,
        }
    }

    /// Steps taken from the cache, and steps that ran (or failed).
    pub fn counts(&self) -> (usize, usize) {
        let cached = self.steps.iter().filter(|s| s.outcome == "cached").count();
        let ran = self
            .steps
            .iter()
            .filter(|s| s.outcome == "run" || s.outcome == "failed")
            .count();
        (cached, ran)
    }
}

fn new_id(now: std::time::Duration) -> String {
    // Two builds in the same millisecond differ in the nonce (pid and nanoseconds).
    let nonce = (std::process::id() ^ now.subsec_nanos().rotate_left(7)) & 0xffff;
    format!(
        "{:012x}{nonce:04x}",
        now.as_millis() as u64 & 0xffff_ffff_ffff
    )
}

/// The history's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// At most this many records.
    pub builds: usize,
    /// At most this many bytes of records and logs together (the newest is always kept).
    pub bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            builds: 100,
            bytes: 64 << 20,
        }
    }
}

impl Limits {
    /// The defaults, or the environment's overrides.
    pub fn from_env() -> Limits {
        let d = Limits::default();
        let get = |k: &str| {
            // Through the one recorded accessor (a no-op record must know what was read).
            rbuild_inputs::var(k).and_then(|v| v.trim().parse::<u64>().ok())
        };
        Limits {
            builds: get(MAX_BUILDS_ENV)
                .map(|n| n.max(1) as usize)
                .unwrap_or(d.builds),
            bytes: get(MAX_BYTES_ENV).unwrap_or(d.bytes),
        }
    }
}

pub fn dir(root: &Path) -> PathBuf {
    root.join(DIR)
}

fn record_path(root: &Path, id: &str) -> PathBuf {
    dir(root).join(format!("{id}.json"))
}

/// Where the full log of build `id` is.
pub fn log_path(root: &Path, id: &str) -> PathBuf {
    dir(root).join(format!("{id}.log"))
}

/// Write (or rewrite) `rec`, atomically.
pub fn write(root: &Path, rec: &Record) -> std::io::Result<()> {
    let d = dir(root);
    std::fs::create_dir_all(&d)?;
    let tmp = d.join(format!(".{}.json.tmp", rec.id));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?)?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, record_path(root, &rec.id))
}

/// Create the log file of build `id` (its directory too).
pub fn create_log(root: &Path, id: &str) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir(root))?;
    std::fs::File::create(log_path(root, id))
}

/// Write `rec` and its whole `log`, then keep the history within `limits`.
pub fn write_with_log(
    root: &Path,
    rec: &Record,
    log: &[u8],
    limits: Limits,
) -> std::io::Result<()> {
    create_log(root, &rec.id)?.write_all(log)?;
    write(root, rec)?;
    bound(root, limits);
    Ok(())
}

/// Every record, newest first (records that cannot be read are skipped).
pub fn list(root: &Path) -> Vec<Record> {
    let mut ids = ids(root);
    ids.reverse();
    ids.iter().filter_map(|id| read(root, id)).collect()
}

fn ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir(root))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?;
            (!id.starts_with('.')).then(|| id.to_string())
        })
        .collect();
    ids.sort();
    ids
}

fn read(root: &Path, id: &str) -> Option<Record> {
    let bytes = std::fs::read(record_path(root, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Why an id names no single record.
#[derive(Debug, PartialEq, Eq)]
pub enum FindError {
    Unknown(String),
    Ambiguous(String, Vec<String>),
}

impl std::fmt::Display for FindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FindError::Unknown(id) => write!(
                f,
                "no build {id} in the history (rbuild history ls lists the builds kept)"
            ),
            FindError::Ambiguous(id, all) => write!(
                f,
                "build id {id} is ambiguous: {} match; give more of it",
                all.join(", ")
            ),
        }
    }
}

impl std::error::Error for FindError {}

/// The record whose id is `id` or starts with it; `last` (or `latest`) is the newest.
pub fn find(root: &Path, id: &str) -> Result<Record, FindError> {
    let ids = ids(root);
    let matches: Vec<&String> = if id == "last" || id == "latest" {
        ids.last().into_iter().collect()
    } else if id.is_empty() {
        Vec::new()
    } else {
        ids.iter().filter(|i| i.starts_with(id)).collect()
    };
    match matches.as_slice() {
        [] => Err(FindError::Unknown(id.to_string())),
        [one] => read(root, one).ok_or_else(|| FindError::Unknown(id.to_string())),
        many => Err(FindError::Ambiguous(
            id.to_string(),
            many.iter().map(|s| s.to_string()).collect(),
        )),
    }
}

/// Remove the oldest records (and their logs) beyond `limits`.
pub fn bound(root: &Path, limits: Limits) {
    let ids = ids(root);
    let size = |id: &str| {
        let m = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        m(record_path(root, id)) + m(log_path(root, id))
    };
    let mut kept = 0usize;
    let mut bytes = 0u64;
    for id in ids.iter().rev() {
        let s = size(id);
        if kept == 0 || (kept < limits.builds && bytes + s <= limits.bytes) {
            kept += 1;
            bytes += s;
        } else {
            remove(root, id);
        }
    }
    // Logs whose record was never written (a build killed midway) and are not the newest's.
    if let Ok(rd) = std::fs::read_dir(dir(root)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_suffix(".log") {
                let newer = ids.last().is_none_or(|last| id > last.as_str());
                if !newer && !ids.iter().any(|i| i == id) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

fn remove(root: &Path, id: &str) {
    let _ = std::fs::remove_file(record_path(root, id));
    let _ = std::fs::remove_file(log_path(root, id));
}

/// `rbuild prune`: remove every record and log. Returns how many records and bytes (or would,
/// with `dry_run`).
pub fn prune(root: &Path, dry_run: bool) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    if let Ok(rd) = std::fs::read_dir(dir(root)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".json") && !name.starts_with('.') {
                n += 1;
            }
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    (n, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> Record {
        let mut r = Record::start(Request::default());
        r.id = format!("{n:016x}");
        r
    }

    #[test]
    fn find_by_prefix_last_and_unknown() {
        let d = tempfile::tempdir().unwrap();
        for n in [0x10, 0x11, 0x20] {
            write_with_log(d.path(), &rec(n), b"log\n", Limits::default()).unwrap();
        }
        assert_eq!(find(d.path(), "last").unwrap().id, format!("{:016x}", 0x20));
        assert_eq!(
            find(d.path(), "00000000000000020").unwrap_err(),
            FindError::Unknown("00000000000000020".into())
        );
        assert!(matches!(
            find(d.path(), "000000000000001"),
            Err(FindError::Ambiguous(_, v)) if v.len() == 2
        ));
        assert_eq!(
            find(d.path(), "0000000000000011").unwrap().id,
            format!("{:016x}", 0x11)
        );
        assert_eq!(list(d.path()).len(), 3);
        assert_eq!(list(d.path())[0].id, format!("{:016x}", 0x20));
    }

    #[test]
    fn bounded_by_count_and_bytes_never_cutting_a_log() {
        let d = tempfile::tempdir().unwrap();
        let lim = Limits {
            builds: 2,
            bytes: 1 << 20,
        };
        for n in 1..=4 {
            write_with_log(d.path(), &rec(n), b"x\n", lim).unwrap();
        }
        let ids: Vec<String> = list(d.path()).into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![format!("{:016x}", 4), format!("{:016x}", 3)]);
        // A log bigger than the whole budget: kept whole as the newest, alone.
        let big = vec![b'y'; 4096];
        let lim = Limits {
            builds: 10,
            bytes: 1000,
        };
        write_with_log(d.path(), &rec(5), &big, lim).unwrap();
        let all = list(d.path());
        assert_eq!(all.len(), 1);
        assert_eq!(std::fs::read(log_path(d.path(), &all[0].id)).unwrap(), big);
        assert_eq!(prune(d.path(), true).0, 1);
        assert_eq!(prune(d.path(), false).0, 1);
        assert!(list(d.path()).is_empty());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = new_id(std::time::Duration::from_millis(1000));
        let b = new_id(std::time::Duration::from_millis(1001));
        assert!(a < b && a.len() == 16);
    }
}
