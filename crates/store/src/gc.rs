//! Garbage collection: what is reachable, `prune`, and `disk_usage`.
//!
//! Roots are image names (manifest and config), build-cache records (unless pruning `all`) and
//! whatever live leases hold. From the roots, every blob that is a JSON document (manifest, index,
//! config, cache artifact; read with a size cap) is scanned for strings that are digests of stored
//! blobs, and those are reachable too. A layer variant (a compressed copy of a layer) is kept
//! while its diff_id is referenced by something reachable.
//!
//! Races with running builds: a build holds a [`crate::Lease`]; besides what the lease names,
//! prune keeps every blob written (or re-committed) after the oldest live lease began, so a blob
//! a build has just written but not yet registered is safe.

use crate::error::Result;
use crate::lease::{Held, KIND_BLOB, KIND_CACHE};
use crate::records::compression_name;
use crate::Store;
use nix::fcntl::{Flock, FlockArg};
use rbuild_oci::{Compression, Digest, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Documents bigger than this are not scanned for references.
const MAX_DOCUMENT: u64 = if MAX_CONFIG_SIZE > MAX_MANIFEST_SIZE {
    MAX_CONFIG_SIZE
} else {
    MAX_MANIFEST_SIZE
};

/// An ingest temp file younger than this is never removed (its writer may not have locked it yet).
const INGEST_GRACE: Duration = Duration::from_secs(60);

/// (diff_id, compression) as stored in the layer_variants table.
type VariantKey = (String, String);

/// What to prune.
#[derive(Clone, Copy, Debug, Default)]
pub struct PruneOptions {
    /// Also remove build-cache records (not held by a live lease) and what only they keep.
    pub all: bool,
    /// Report what would be removed without removing anything.
    pub dry_run: bool,
    /// With `all`: only cache records last used longer ago than this (`--filter until=24h`).
    pub until: Option<Duration>,
}

/// What a prune removed (or would remove, for a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub cache_records_removed: u64,
    pub layer_variants_removed: u64,
    pub leases_expired: u64,
    pub ingest_files_removed: u64,
}

/// Space used by the store, for `rbuild df`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub images: u64,
    /// Bytes of blobs reachable from images (including their compressed layer variants).
    pub image_bytes: u64,
    pub cache_records: u64,
    /// Bytes of blobs kept only by build-cache records.
    pub cache_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// What `prune` (without `all`) would free.
    pub reclaimable_bytes: u64,
    /// Temp files of blobs being written (or left by crashed writers).
    pub ingest_bytes: u64,
}

/// Blobs reachable from a set of roots, and every digest string seen on the way.
#[derive(Default)]
struct Reach {
    reachable: HashSet<Digest>,
    referenced: HashSet<Digest>,
}

/// Every string in a JSON value that parses as a digest.
pub(crate) fn digests_in_json(v: &serde_json::Value, out: &mut Vec<Digest>) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(d) = s.parse::<Digest>() {
                out.push(d);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| digests_in_json(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| digests_in_json(x, out)),
        _ => {}
    }
}

impl Store {
    /// Digests referenced by a stored blob if it is a JSON document (`None` when it is not one).
    fn blob_references(&self, d: &Digest) -> Result<Option<Vec<Digest>>> {
        let Some(size) = self.blob_size(d)? else {
            return Ok(None);
        };
        if !(2..=MAX_DOCUMENT).contains(&size) {
            return Ok(None);
        }
        let p = self.blob_path(d);
        let mut first = [0u8; 1];
        let n = File::open(&p)
            .and_then(|mut f| f.read(&mut first))
            .map_err(|e| self.io_err("read blob", &p, e))?;
        if n == 0 || first[0] != b'{' {
            return Ok(None);
        }
        // A corrupt document (digest mismatch) is fsck's business; here it just has no references.
        let Ok(data) = self.read_blob(d, MAX_DOCUMENT) else {
            return Ok(None);
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        digests_in_json(&v, &mut out);
        Ok(Some(out))
    }

    fn walk(&self, roots: impl IntoIterator<Item = Digest>, reach: &mut Reach) -> Result<()> {
        let mut stack: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = stack.pop() {
            reach.referenced.insert(d.clone());
            if !reach.reachable.insert(d.clone()) {
                continue;
            }
            if let Some(refs) = self.blob_references(&d)? {
                for r in refs {
                    reach.referenced.insert(r.clone());
                    if !reach.reachable.contains(&r) && self.has_blob(&r) {
                        stack.push(r);
                    }
                }
            }
        }
        Ok(())
    }

    fn image_roots(&self) -> Result<Vec<Digest>> {
        Ok(self
            .list_images()?
            .into_iter()
            .flat_map(|(_, r)| [r.manifest, r.config])
            .collect())
    }

    fn cache_roots(&self, rows: &[(String, String)]) -> Vec<Digest> {
        let mut out = Vec::new();
        for (key, value) in rows {
            // The key itself is not a blob, but harmless as a root.
            if let Ok(k) = key.parse::<Digest>() {
                out.push(k);
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(value) {
                digests_in_json(&v, &mut out);
            }
        }
        out
    }

    fn held_blob_roots(held: &Held) -> Vec<Digest> {
        held.by_kind
            .get(KIND_BLOB)
            .into_iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// Layer variants to keep given what is referenced: returns (kept blob digests, rows to drop).
    fn sort_variants(&self, reach: &Reach) -> Result<(Vec<Digest>, Vec<VariantKey>)> {
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        for (diff_id, comp, digest, _size) in self.layer_variant_rows()? {
            let parsed = (diff_id.parse::<Digest>(), digest.parse::<Digest>());
            match parsed {
                (Ok(di), Ok(d)) if self.has_blob(&d) && reach.referenced.contains(&di) => {
                    keep.push(d)
                }
                _ => drop.push((diff_id, comp)),
            }
        }
        Ok((keep, drop))
    }

    /// Every blob file: (digest, size, mtime).
    fn list_blobs(&self) -> Result<Vec<(Digest, u64, SystemTime)>> {
        let dir = self.root().join("blobs").join("sha256");
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&dir).map_err(|e| self.io_err("list", &dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| self.io_err("list", &dir, e))?;
            let name = entry.file_name();
            let Some(d) = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
            else {
                continue; // not a blob name; fsck reports it
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("stat", &entry.path(), e)),
            };
            if !meta.is_file() {
                continue;
            }
            out.push((d, meta.len(), meta.modified().unwrap_or(UNIX_EPOCH)));
        }
        Ok(out)
    }

    /// Hold `locks/gc.lock` exclusively (serializes prune and fsck across processes).
    pub(crate) fn gc_lock(&self) -> Result<Flock<File>> {
        let p = self.lock_path("gc");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| self.io_err("open gc lock", &p, e))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, errno)| self.io_err("lock gc lock", &p, io::Error::from(errno)))
    }

    /// Remove what nothing keeps: blobs unreachable from images, cache records (all) and live
    /// leases; layer variants of unreferenced layers; cache records with `all`; leases of dead
    /// processes; stale ingest temp files.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        if opts.dry_run {
            return self.prune_locked(opts);
        }
        self.changing(|| self.prune_locked(opts))
    }

    fn prune_locked(&self, opts: PruneOptions) -> Result<PruneReport> {
        let _gc = self.gc_lock()?;
        let mut report = PruneReport::default();
        let held = self.held_by_leases()?;
        report.leases_expired = held.expired as u64;

        let mut cache_rows = self.cache_record_rows()?;
        if opts.all {
            // A record a running build looked up (or wrote) was used after its lease began: keep it.
            let used = self.cache_record_last_used()?;
            let cutoff = opts
                .until
                .and_then(|u| SystemTime::now().checked_sub(u))
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64);
            let (keep, remove): (Vec<_>, Vec<_>) = cache_rows.into_iter().partition(|(k, _)| {
                let last = used.get(k).copied().unwrap_or(i64::MAX);
                held.contains(KIND_CACHE, k)
                    || held.oldest_ns.is_some_and(|o| last >= o)
                    || cutoff.is_some_and(|c| last >= c)
            });
            for (k, _) in &remove {
                if !opts.dry_run {
                    self.remove_cache_record_row(k)?;
                }
                report.cache_records_removed += 1;
            }
            cache_rows = keep;
        }

        let mut reach = Reach::default();
        let mut roots = self.image_roots()?;
        roots.extend(self.cache_roots(&cache_rows));
        roots.extend(Self::held_blob_roots(&held));
        self.walk(roots, &mut reach)?;
        let (variant_blobs, drop_variants) = self.sort_variants(&reach)?;
        reach.reachable.extend(variant_blobs);
        for (diff_id, comp) in &drop_variants {
            if !opts.dry_run {
                self.remove_layer_variant_row(diff_id, comp)?;
            }
            report.layer_variants_removed += 1;
        }

        let window_start = held
            .oldest_ns
            .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64) - Duration::from_secs(1));
        let dir = self.root().join("blobs").join("sha256");
        for (d, size, mtime) in self.list_blobs()? {
            if reach.reachable.contains(&d) {
                continue;
            }
            if window_start.is_some_and(|w| mtime >= w) {
                continue;
            }
            if !opts.dry_run {
                let p = self.blob_path(&d);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.io_err("remove blob", &p, e)),
                }
            }
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }
        if report.blobs_removed > 0 && !opts.dry_run {
            crate::blobs::fsync_dir(&dir).map_err(|e| self.io_err("fsync directory", &dir, e))?;
        }
        report.ingest_files_removed = self.prune_ingest(opts.dry_run)?;
        Ok(report)
    }

    /// Remove temp files in `ingest/` whose writer is gone (unlocked and older than a minute).
    fn prune_ingest(&self, dry_run: bool) -> Result<u64> {
        let dir = self.root().join("ingest");
        let mut removed = 0;
        let rd = std::fs::read_dir(&dir).map_err(|e| self.io_err("list", &dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| self.io_err("list", &dir, e))?;
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if !meta.is_file() || age < INGEST_GRACE {
                continue;
            }
            let Ok(f) = File::open(&path) else { continue };
            // Locked means a live writer.
            let Ok(_lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            if !dry_run {
                let _ = std::fs::remove_file(&path);
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Space used by images, cache records and everything else.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let blobs = self.list_blobs()?;
        let sizes: HashMap<&Digest, u64> = blobs.iter().map(|(d, s, _)| (d, *s)).collect();
        let images = self.list_images()?;
        let cache_rows = self.cache_record_rows()?;
        let held = self.held_by_leases()?;

        let mut img = Reach::default();
        self.walk(
            images
                .iter()
                .flat_map(|(_, r)| [r.manifest.clone(), r.config.clone()]),
            &mut img,
        )?;
        let (img_variants, _) = self.sort_variants(&img)?;
        img.reachable.extend(img_variants);

        let mut all = Reach::default();
        let mut roots: Vec<Digest> = img.reachable.iter().cloned().collect();
        roots.extend(self.cache_roots(&cache_rows));
        roots.extend(Self::held_blob_roots(&held));
        self.walk(roots, &mut all)?;
        all.referenced.extend(img.referenced.iter().cloned());
        let (variants, _) = self.sort_variants(&all)?;
        all.reachable.extend(variants);

        let sum = |set: &mut dyn Iterator<Item = &Digest>| -> u64 {
            set.filter_map(|d| sizes.get(d)).sum()
        };
        let image_bytes = sum(&mut img.reachable.iter());
        let live_bytes = sum(&mut all.reachable.iter());
        let blob_bytes: u64 = blobs.iter().map(|(_, s, _)| s).sum();
        let ingest_dir = self.root().join("ingest");
        let ingest_bytes = std::fs::read_dir(&ingest_dir)
            .map_err(|e| self.io_err("list", &ingest_dir, e))?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        Ok(DiskUsage {
            images: images.len() as u64,
            image_bytes,
            cache_records: cache_rows.len() as u64,
            cache_bytes: live_bytes.saturating_sub(image_bytes),
            blobs: blobs.len() as u64,
            blob_bytes,
            reclaimable_bytes: blob_bytes.saturating_sub(live_bytes),
            ingest_bytes,
        })
    }
}

/// The compression names used in the layer_variants table (for fsck).
pub(crate) fn known_compression(name: &str) -> bool {
    [Compression::None, Compression::Gzip, Compression::Zstd]
        .into_iter()
        .any(|c| compression_name(c) == name)
}
