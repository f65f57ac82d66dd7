//! `rbuild prune`, `rbuild df`, `rbuild fsck`: the engine's operations
//! ([`rbuild_engine::maintenance`]), the confirmation prompt and what is printed.

use anyhow::Result;
use rbuild_engine::maintenance::{self, FsckLine};
use rbuild_store::Store;
use std::path::Path;
use std::process::ExitCode;

use crate::progress::human_short as human;

pub fn prune(
    store: &Store,
    all: bool,
    filter: &[String],
    dry_run: bool,
    force: bool,
) -> Result<ExitCode> {
    let mut until = None;
    for f in filter {
        until = Some(maintenance::parse_filter(f)?);
    }
    if !force && !dry_run {
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() {
            eprint!(
                "WARNING! This will remove {}build cache not used by images. Are you sure you want to continue? [y/N] ",
                if all { "all " } else { "" }
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            if !matches!(line.trim(), "y" | "Y" | "yes") {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    let r = maintenance::prune(store, all, until, dry_run)?;
    for (name, m) in &r.snapshots.skipped_mounted {
        eprintln!(
            "warning: snapshot {name} kept: {} is mounted inside it",
            m.display()
        );
    }
    // The build history goes with the cache it describes.
    let (history, history_bytes) = crate::history::prune(store.root(), dry_run);
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb}: {} cache records, {} snapshots ({} stale), {} blobs, {} layer variants, {} temp files, {} lock files, {history} build history records",
        r.store.cache_records_removed,
        r.snapshots.removed,
        r.snapshots.stale,
        r.store.blobs_removed,
        r.store.layer_variants_removed,
        r.store.ingest_files_removed,
        r.locks
    );
    println!(
        "Total reclaimed space: {}",
        human(r.store.bytes_freed + r.snapshots.bytes + history_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn df(store: &Store) -> Result<ExitCode> {
    let usage = maintenance::df(store)?;
    let u = &usage.store;
    let row = |kind: &str, total: String, size: String, reclaimable: String| {
        println!("{kind:<16}{total:>8}{size:>14}{reclaimable:>14}");
    };
    row("TYPE", "TOTAL".into(), "SIZE".into(), "RECLAIMABLE".into());
    row(
        "Images",
        u.images.to_string(),
        human(u.image_bytes),
        "0B".into(),
    );
    row(
        "Build cache",
        u.cache_records.to_string(),
        human(u.cache_bytes),
        human(u.reclaimable_bytes),
    );
    row(
        "Snapshots",
        usage.snapshots.to_string(),
        human(usage.snapshot_bytes),
        "-".into(),
    );
    row(
        "Cache mounts",
        usage.cache_mounts.to_string(),
        human(usage.cache_mount_bytes),
        human(usage.cache_mount_bytes),
    );
    row(
        "Blobs (all)",
        u.blobs.to_string(),
        human(u.blob_bytes),
        human(u.reclaimable_bytes),
    );
    if u.ingest_bytes > 0 {
        row(
            "Temp (ingest)",
            "-".into(),
            human(u.ingest_bytes),
            human(u.ingest_bytes),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn fsck(root: &Path, repair: bool) -> Result<ExitCode> {
    let r = maintenance::fsck(root, repair)?;
    for l in &r.lines {
        match l {
            FsckLine::Problem(s) | FsckLine::Note(s) => println!("{s}"),
        }
    }
    let problems = r.problems();
    println!(
        "checked {} blobs, {} images, {} snapshots: {}",
        r.blobs_checked,
        r.images,
        r.snapshots_checked,
        match (problems, repair) {
            (0, _) => "clean".to_string(),
            (n, true) => format!("{n} problems, repaired"),
            (n, false) => format!("{n} problems (run `rbuild fsck --repair` to fix)"),
        }
    );
    Ok(if problems == 0 || repair {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
