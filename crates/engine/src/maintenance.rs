//! `rbuild prune`, `rbuild df`, `rbuild fsck`: keeping a shared store tidy and whole. The
//! operations and their reports; the CLI asks for confirmation and prints them.
//!
//! These commands run beside builds (no daemon serializes anything), so each one only removes
//! what no running build can hold:
//! - blobs: the store's own rules (reachable from images, cache records, leases; anything written
//!   since the oldest live lease began is kept);
//! - cache records (`--all`): never one a running build looked up or wrote (its last use is newer
//!   than the oldest live lease), nor one used more recently than `--filter until=…`;
//! - snapshots: a committed snapshot is kept if a kept cache record names it, if it unpacks a
//!   layer of a named image (`layer-<chain id>`), if a lease holds it, if it was made after the
//!   oldest live lease began, or if a kept snapshot stacks on it. Active and view snapshots go only
//!   when their owner process is gone (the snapshotter's flocks). A snapshot directory that
//!   anything is mounted under (in this process's view) is never removed: removal must not cross
//!   into a host path.

use anyhow::{anyhow, Context, Result};
use rbuild_snapshotter::{Kind, Snapshotter};
use rbuild_store::{PruneOptions, Store, KIND_SNAPSHOT};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parse `--filter until=24h` (units s, m, h, d; Go-style `1h30m` too).
pub fn parse_filter(f: &str) -> Result<Duration> {
    let v = f.strip_prefix("until=").ok_or_else(|| {
        anyhow!("--filter {f:?}: only until=DURATION is supported (e.g. until=24h)")
    })?;
    parse_duration(v).ok_or_else(|| {
        anyhow!("--filter {f:?}: {v:?} is not a duration (e.g. 90s, 30m, 24h, 7d, 1h30m)")
    })
}

fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    if s.is_empty() {
        return None;
    }
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !num.is_empty() {
        return None; // a number without a unit
    }
    Some(Duration::from_secs(total))
}

/// One snapshotter per driver directory of the store (`snapshots`, `snapshots-native`).
fn open_snapshotters(store: &Store) -> Result<Vec<Snapshotter>> {
    crate::snapshots::open_existing(store.root())
}

/// Every mountpoint this process sees (octal escapes of /proc/self/mountinfo decoded).
fn mountpoints() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mountpoints at or under `dir`.
fn mounts_under<'a>(mounts: &'a [PathBuf], dir: &Path) -> Vec<&'a PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mounts.iter().filter(|m| m.starts_with(&dir)).collect()
}

/// The snapshot names of every named image's unpacked layers (the solver's `layer-<chain id>`).
fn image_snapshot_names(store: &Store) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for (_, rec) in store.list_images()? {
        let Ok(m) = rbuild_image::read_manifest(store, &rec.manifest) else {
            continue; // an index or a broken image: fsck's business
        };
        let Ok(config) = rbuild_image::read_config(store, &m.config.digest) else {
            continue;
        };
        out.extend(rbuild_solver::layout::layer_snapshot_names(
            &config.rootfs.diff_ids,
        ));
    }
    Ok(out)
}

/// The snapshot each cache record names (records that do not parse name none).
fn record_snapshot_names(store: &Store) -> Result<HashSet<String>> {
    Ok(store
        .cache_records()?
        .into_iter()
        .filter_map(|(_, v)| {
            serde_json::from_str::<rbuild_solver::record::CacheRecord>(&v)
                .ok()
                .map(|r| r.snapshot)
        })
        .collect())
}

/// Disk usage of a tree (allocated blocks, hardlinks counted once, one file system).
fn du(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue; // a mount: not ours to count
            }
            if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// What snapshot pruning did.
#[derive(Default)]
pub struct SnapPrune {
    pub removed: u64,
    pub bytes: u64,
    pub stale: u64,
    /// Snapshots kept because something is mounted inside them: (name, mountpoint).
    pub skipped_mounted: Vec<(String, PathBuf)>,
}

fn prune_snapshots(
    store: &Store,
    snaps: &Snapshotter,
    until: Option<Duration>,
    dry_run: bool,
) -> Result<SnapPrune> {
    let mut out = SnapPrune::default();
    let mounts = mountpoints();
    let sroot = snaps.root().to_path_buf();
    if mounts_under(&mounts, &sroot).is_empty() {
        if !dry_run {
            let r = snaps.cleanup_stale().context("removing stale snapshots")?;
            out.stale = r.removed.len() as u64 + r.orphan_dirs;
        }
    } else {
        eprintln!(
            "warning: something is mounted under {}; stale snapshots are left alone",
            sroot.display()
        );
    }
    let list = snaps.list().context("listing snapshots")?;
    let mut keep: HashSet<String> = record_snapshot_names(store)?;
    keep.extend(image_snapshot_names(store)?);
    keep.extend(store.leased_resources(KIND_SNAPSHOT)?);
    let lease_start = store
        .oldest_live_lease()?
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64 - 1);
    let cutoff = until
        .and_then(|u| SystemTime::now().checked_sub(u))
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let by_name: HashMap<&str, &rbuild_snapshotter::Info> =
        list.iter().map(|i| (i.name.as_str(), i)).collect();
    for i in &list {
        let young =
            lease_start.is_some_and(|s| i.created >= s) || cutoff.is_some_and(|c| i.created >= c);
        if i.kind != Kind::Committed || young {
            keep.insert(i.name.clone());
        }
    }
    // Whatever a kept snapshot stacks on is kept too.
    let mut stack: Vec<String> = keep.iter().cloned().collect();
    while let Some(n) = stack.pop() {
        if let Some(p) = by_name.get(n.as_str()).and_then(|i| i.parent.clone()) {
            if keep.insert(p.clone()) {
                stack.push(p);
            }
        }
    }
    // Newest first: children before their parents.
    let mut doomed: Vec<&rbuild_snapshotter::Info> =
        list.iter().filter(|i| !keep.contains(&i.name)).collect();
    doomed.sort_by_key(|i| std::cmp::Reverse((i.created, i.id)));
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    for i in doomed {
        let dir = sroot.join(i.id.to_string());
        let under = mounts_under(&mounts, &dir);
        if let Some(m) = under.first() {
            out.skipped_mounted.push((i.name.clone(), (*m).clone()));
            // Its parents must stay: a child is still there.
            let mut p = i.parent.clone();
            while let Some(n) = p {
                blocked.insert(n.clone());
                p = by_name.get(n.as_str()).and_then(|x| x.parent.clone());
            }
            continue;
        }
        if blocked.contains(&i.name) {
            continue;
        }
        let size = du(&dir);
        if !dry_run {
            if let Err(e) = snaps.remove(&i.name) {
                eprintln!("warning: snapshot {}: {e}", i.name);
                continue;
            }
        }
        out.removed += 1;
        out.bytes += size;
    }
    Ok(out)
}

/// How many `locks/step-*.lock` files no process holds (what prune would remove).
/// Lock files taken per step (`step-<key>`) and per blob download (`pull-<digest>`): both kinds
/// are taken with `Store::lock_named`, which notices a lock file removed under it, so the ones no
/// process holds can go.
const PRUNABLE_LOCKS: [&str; 2] = ["step-", "pull-"];

fn unheld_step_locks(store: &Store) -> u64 {
    let Ok(rd) = std::fs::read_dir(store.root().join("locks")) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            PRUNABLE_LOCKS.iter().any(|p| n.starts_with(p)) && n.ends_with(".lock")
        })
        .filter(|e| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .is_ok_and(|f| f.try_lock().is_ok())
        })
        .count() as u64
}

/// What `prune` did (or, dry run, would do).
pub struct PruneReport {
    pub store: rbuild_store::PruneReport,
    pub snapshots: SnapPrune,
    /// Lock files no process held.
    pub locks: u64,
}

/// `rbuild prune`: records first (they decide which snapshots and blobs stay), then snapshots,
/// then blobs, then the lock files no process holds.
pub fn prune(
    store: &Store,
    all: bool,
    until: Option<Duration>,
    dry_run: bool,
) -> Result<PruneReport> {
    let all_snaps = open_snapshotters(store)?;
    // The no-op front's answers were uses of the cache records they stood on.
    let noop_records = rbuild_noop::records_dir(store.root());
    store
        .note_cache_uses(rbuild_noop::uses(&noop_records))
        .context("counting the no-op front's answers as uses")?;
    // Records first (they decide which snapshots and blobs stay), then snapshots, then blobs.
    let report = store
        .prune(PruneOptions {
            all,
            dry_run,
            until,
        })
        .with_context(|| format!("pruning the store at {}", store.root().display()))?;
    // The front's records the prune voided (it moved the store's generation), not left to pile up.
    if !dry_run {
        rbuild_noop::sweep(&noop_records);
    }
    let mut sp = SnapPrune::default();
    for snaps in &all_snaps {
        let p = prune_snapshots(store, snaps, until, dry_run)?;
        sp.removed += p.removed;
        sp.bytes += p.bytes;
        sp.stale += p.stale;
        sp.skipped_mounted.extend(p.skipped_mounted);
    }
    // Step and download lock files pile up: remove those no process holds.
    let locks = if dry_run {
        unheld_step_locks(store)
    } else {
        let mut n = 0;
        for prefix in PRUNABLE_LOCKS {
            n += store
                .remove_unheld_locks(prefix)
                .with_context(|| format!("pruning lock files in {}", store.root().display()))?;
        }
        n
    };
    Ok(PruneReport {
        store: report,
        snapshots: sp,
        locks,
    })
}

/// What `df` measures.
pub struct Usage {
    pub store: rbuild_store::DiskUsage,
    pub snapshots: usize,
    pub snapshot_bytes: u64,
    pub cache_mounts: usize,
    pub cache_mount_bytes: u64,
}

/// `rbuild df`.
pub fn df(store: &Store) -> Result<Usage> {
    let u = store
        .disk_usage()
        .with_context(|| format!("measuring the store at {}", store.root().display()))?;
    let (mut snap_count, mut snap_bytes) = (0, 0);
    for snaps in open_snapshotters(store)? {
        snap_count += snaps.list().context("listing snapshots")?.len();
        snap_bytes += du(snaps.root());
    }
    let cm = rbuild_solver::layout::cache_mounts_dir(store.root());
    let cm_count = std::fs::read_dir(&cm).map(|d| d.count()).unwrap_or(0);
    Ok(Usage {
        store: u,
        snapshots: snap_count,
        snapshot_bytes: snap_bytes,
        cache_mounts: cm_count,
        cache_mount_bytes: du(&cm),
    })
}

/// Snapshot problems fsck looks for.
#[derive(Default)]
struct SnapFsck {
    checked: usize,
    /// Committed snapshots whose layer dir is gone.
    missing_dirs: Vec<String>,
    /// Active/view snapshots whose owner is gone, and dirs without metadata.
    stale: Vec<String>,
    /// Names of the snapshots there.
    names: HashSet<String>,
}

fn fsck_snapshots(snaps: &Snapshotter) -> Result<SnapFsck> {
    let mut out = SnapFsck::default();
    let list = snaps.list().context("listing snapshots")?;
    out.checked = list.len();
    let ids: HashSet<i64> = list.iter().map(|i| i.id).collect();
    out.names = list.iter().map(|i| i.name.clone()).collect();
    for i in &list {
        let dir = snaps.root().join(i.id.to_string());
        match i.kind {
            Kind::Committed => {
                if !dir.join("fs").is_dir() {
                    out.missing_dirs.push(i.name.clone());
                }
            }
            Kind::Active | Kind::View => {
                let gone = match std::fs::File::open(dir.join("lock")) {
                    Err(_) => true,
                    // flock, as the snapshotter's owners hold it.
                    Ok(f) => f.try_lock().is_ok(),
                };
                if gone {
                    out.stale.push(i.name.clone());
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(snaps.root()) {
        for e in rd.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) {
                if !ids.contains(&id) {
                    out.stale.push(format!("directory {}", e.path().display()));
                }
            }
        }
    }
    Ok(out)
}

/// One line of fsck's report, in order.
pub enum FsckLine {
    /// Damage (counted; `--repair` fixes it).
    Problem(String),
    /// Information: what was moved aside, garbage a later command removes.
    Note(String),
}

/// What `fsck` found.
pub struct FsckReport {
    pub lines: Vec<FsckLine>,
    pub blobs_checked: u64,
    pub images: usize,
    pub snapshots_checked: usize,
}

impl FsckReport {
    pub fn problems(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l, FsckLine::Problem(_)))
            .count()
    }
}

/// `rbuild fsck [--repair]`: every blob, record and snapshot of the store at `root`.
pub fn fsck(root: &Path, repair: bool) -> Result<FsckReport> {
    let mut lines = Vec::new();
    let (store, moved) = if repair {
        Store::open_for_repair(root)
            .with_context(|| format!("opening the store at {} for repair", root.display()))?
    } else {
        (
            Store::open(root).with_context(|| {
                format!(
                    "opening the store at {} (run `rbuild fsck --repair` to rebuild a broken database)",
                    root.display()
                )
            })?,
            None,
        )
    };
    if let Some(m) = &moved {
        lines.push(FsckLine::Note(format!(
            "meta.db could not be opened; moved aside to {}",
            m.display()
        )));
    }
    let r = store
        .fsck(repair)
        .with_context(|| format!("checking the store at {}", root.display()))?;
    if let Some(p) = &r.db_problem {
        problem(&mut lines, format!("database: {p}"));
    }
    if let Some(p) = &r.db_moved_aside {
        lines.push(FsckLine::Note(format!(
            "database moved aside to {}",
            p.display()
        )));
    }
    for d in &r.corrupt_blobs {
        problem(
            &mut lines,
            format!("blob {d}: content does not match its digest"),
        );
    }
    for p in &r.stray_files {
        problem(&mut lines, format!("stray file {}", p.display()));
    }
    for n in &r.names_restored {
        problem(
            &mut lines,
            format!("image {n}: known only from refs/ (re-registered by --repair)"),
        );
    }
    for n in &r.refs_rewritten {
        problem(&mut lines, format!("image {n}: ref file missing or stale"));
    }
    for (p, why) in &r.bad_ref_files {
        problem(&mut lines, format!("ref file {}: {why}", p.display()));
    }
    for (n, why) in &r.broken_images {
        problem(&mut lines, format!("image {n}: {why}"));
    }
    for (k, why) in &r.broken_layer_variants {
        problem(&mut lines, format!("layer variant {k}: {why}"));
    }
    for (k, why) in &r.broken_cache_records {
        problem(&mut lines, format!("cache record {k}: {why}"));
    }

    // Snapshots, of every driver directory the store has: a broken snapshot db is moved aside
    // with --repair (snapshots are a cache: every one can be made again from the blobs).
    let mut snap_checked = 0;
    let mut snap_names = HashSet::new();
    for driver in crate::snapshots::present_drivers(store.root()) {
        let sroot = store.root().join(driver.dir_name());
        let snaps = match Snapshotter::open_with(&sroot, driver) {
            Ok(s) => Some(s),
            Err(e) => {
                problem(&mut lines, format!("{}: {e}", driver.dir_name()));
                if repair {
                    let aside = store.root().join(format!(
                        "{}.corrupt-{}",
                        driver.dir_name(),
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_nanos())
                            .unwrap_or(0)
                    ));
                    std::fs::rename(&sroot, &aside).with_context(|| {
                        format!("moving {} aside to {}", sroot.display(), aside.display())
                    })?;
                    lines.push(FsckLine::Note(format!(
                        "{} moved aside to {}",
                        driver.dir_name(),
                        aside.display()
                    )));
                    Some(crate::snapshots::open(store.root(), driver)?)
                } else {
                    None
                }
            }
        };
        let Some(snaps) = snaps else { continue };
        let sf = fsck_snapshots(&snaps)?;
        snap_checked += sf.checked;
        snap_names.extend(sf.names.iter().cloned());
        for n in &sf.missing_dirs {
            problem(
                &mut lines,
                format!("snapshot {n}: its layer directory is missing"),
            );
        }
        // Leftovers of a process that died are garbage, not damage: the next build removes them.
        for n in &sf.stale {
            lines.push(FsckLine::Note(format!("note: snapshot {n}: left by a process that is gone (removed by --repair, prune or the next build)")));
        }
        if repair {
            let mounts = mountpoints();
            if !sf.stale.is_empty() {
                if mounts_under(&mounts, snaps.root()).is_empty() {
                    snaps.cleanup_stale().context("removing stale snapshots")?;
                } else {
                    eprintln!(
                        "warning: something is mounted under {}; stale snapshots left",
                        snaps.root().display()
                    );
                }
            }
            if !sf.missing_dirs.is_empty() {
                // Remove the broken ones and everything stacked on them, newest first.
                let list = snaps.list()?;
                let mut bad: HashSet<String> = sf.missing_dirs.iter().cloned().collect();
                let mut sorted: Vec<_> = list.iter().collect();
                sorted.sort_by_key(|i| (i.created, i.id));
                for i in &sorted {
                    if i.parent.as_ref().is_some_and(|p| bad.contains(p)) {
                        bad.insert(i.name.clone());
                    }
                }
                for i in sorted.iter().rev().filter(|i| bad.contains(&i.name)) {
                    snaps
                        .remove(&i.name)
                        .with_context(|| format!("removing broken snapshot {}", i.name))?;
                }
            }
        }
    }
    // A record's snapshot may be in either driver's directory.
    let records_without_snapshot = record_snapshot_names(&store)?
        .iter()
        .filter(|n| !snap_names.contains(*n))
        .count();
    if records_without_snapshot > 0 {
        lines.push(FsckLine::Note(format!(
            "note: {records_without_snapshot} cache records name a snapshot that is gone (it is rebuilt from its layer when used)"
        )));
    }
    Ok(FsckReport {
        lines,
        blobs_checked: r.blobs_checked,
        images: store.list_images().map(|l| l.len()).unwrap_or(0),
        snapshots_checked: snap_checked,
    })
}

fn problem(lines: &mut Vec<FsckLine>, what: String) {
    lines.push(FsckLine::Problem(what));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("5x"), None);
        assert!(parse_filter("until=24h").is_ok());
        assert!(parse_filter("label=x").is_err());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/x\\"), r"/x\\");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
