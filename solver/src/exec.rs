//! Realizing one vertex: unpacking a base image, running a RUN in the sandbox, applying file
//! actions — each ending in a committed snapshot and (for steps) a layer blob.

use crate::events::{Event, Stream};
use crate::record::{CacheRecord, ContentInfo, LayerInfo};
use crate::solve::{Node, Run};
use crate::SolveError;
use rbuild_oci::{Digest, MEDIA_TYPE_OCI_LAYER};
use rbuild_ops::{ExecOp, FileOp, MountKind, NetworkMode, Op, SecurityMode, Source, VertexId};
use rbuild_snapshotter::{diff, mount};
use rbuild_store::Store;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A vertex's realized filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Realized {
    /// Committed snapshot name; None for scratch (the empty filesystem) or when only layers are known.
    pub snapshot: Option<String>,
    /// Layers of the filesystem, bottom first.
    pub chain: Vec<LayerInfo>,
    /// The layer this vertex added (steps only).
    pub layer: Option<LayerInfo>,
    /// For a local context source: its directory.
    pub context: Option<PathBuf>,
    /// When the layer was made (unix seconds): cached steps keep their original time, so a fully
    /// cached rebuild produces the same image id.
    pub created: Option<i64>,
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC from unix seconds (no chrono needed for this one format).
pub(crate) fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        y,
        m,
        d,
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A process-unique name for an active snapshot or a mountpoint.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        now_unix(),
        TMP_COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The chain id of a list of diff ids (OCI image-spec): the name of an unpacked base layer's snapshot.
fn chain_id(prev: Option<&Digest>, diff_id: &Digest) -> Digest {
    match prev {
        None => diff_id.clone(),
        Some(p) => Digest::sha256_of(format!("{p} {diff_id}").as_bytes()),
    }
}

fn step_err(run: &Run, id: VertexId, message: String) -> SolveError {
    let v = run.def.graph.vertex(id);
    SolveError::Step {
        instruction: v.meta.instruction.clone(),
        span: v.meta.span.clone(),
        message,
    }
}

/// `.dockerignore` rules as fileop's excluder.
pub(crate) use rbuild_fileop::IgnoreRules;

/// Checksum of a copy's selection out of a local context directory, and the per-file listing that
/// explains later misses; with the selection's stat fingerprint when the files held still while
/// they were read (see [`rbuild_fileop::context_fingerprint`]).
pub(crate) fn checksum_selection(
    store: &Arc<Store>,
    dir: &Path,
    sources: &[String],
    excludes: &[String],
    extra_excludes: &[String],
    parents: bool,
) -> Result<(ContentInfo, Option<Digest>), String> {
    let (root, sel) =
        rbuild_fileop::select_context(dir, sources, excludes, extra_excludes, parents)?;
    // Fast path: every selected file has the stats it had when this selection was last
    // checksummed, so the per-file checksum cache would return every digest unchanged. One row
    // replaces loading and checking one cache entry per file (20,000 on a big context).
    let selection = selection_key(dir, sources, excludes, extra_excludes, parents);
    let fingerprint = rbuild_fileop::stat_fingerprint(&sel);
    if let Ok(Some(known)) = store.context_fingerprint(&selection) {
        if known.fingerprint == fingerprint
            && known.files.as_ref().is_none_or(|f| store.has_blob(f))
        {
            return Ok((
                ContentInfo {
                    checksum: known.checksum,
                    files: known.files,
                },
                Some(fingerprint),
            ));
        }
    }
    let cache = StoreChecksums::load(store.clone(), dir);
    let (checksum, stats) =
        rbuild_fileop::checksum_with_stats(&root, &sel, &cache).map_err(|e| e.to_string())?;
    cache.flush();
    // The per-file listing: path -> "metadata-digest:content-digest".
    let seen = cache.seen.into_inner().unwrap_or_default();
    let mut files: Vec<(String, String)> = Vec::with_capacity(sel.len());
    for item in &sel.items {
        for e in &item.entries {
            let rel = if e.rel.is_empty() {
                item.path.clone()
            } else if item.path.is_empty() || item.path == "." {
                e.rel.clone()
            } else {
                format!("{}/{}", item.path, e.rel)
            };
            let meta = format!(
                "{}{:o}:{}:{}:{}",
                e.kind.tag() as char,
                e.mode,
                e.uid,
                e.gid,
                e.link_target.as_deref().unwrap_or("")
            );
            let content = seen
                .get(&dir.join(&rel))
                .map(|d| d.hex()[..16].to_string())
                .unwrap_or_default();
            // Metadata in clear (it is short) so a miss can say what changed: mode, owner, …
            files.push((rel, format!("{meta}:{content}")));
        }
    }
    let listing = serde_json::to_vec(&files).map_err(|e| e.to_string())?;
    // Unchanged selections give the same listing: skip the write (and its fsyncs) on rebuilds.
    let digest = Digest::sha256_of(&listing);
    let files = if store.has_blob(&digest) {
        Some(digest)
    } else {
        store.put_blob(&listing).ok()
    };
    // A file that changed while it was read may not match its stats: no fingerprint then.
    let stable = (stats.unstable == 0).then(|| fingerprint.clone());
    if stats.unstable == 0 {
        let _ = store.put_context_fingerprint(
            &selection,
            &rbuild_store::ContextFingerprint {
                fingerprint,
                checksum: checksum.clone(),
                files: files.clone(),
            },
        );
    }
    Ok((ContentInfo { checksum, files }, stable))
}

/// Names one selection out of one context directory: everything that decides which files a
/// copy reads, and how.
fn selection_key(
    dir: &Path,
    sources: &[String],
    excludes: &[String],
    extra_excludes: &[String],
    parents: bool,
) -> Digest {
    use std::os::unix::ffi::OsStrExt;
    let mut b = Vec::new();
    let mut field = |f: &[u8]| {
        b.extend_from_slice(&(f.len() as u64).to_le_bytes());
        b.extend_from_slice(f);
    };
    field(b"rbuild-solver/context-selection/v1");
    field(dir.as_os_str().as_bytes());
    for list in [sources, excludes, extra_excludes] {
        field(&(list.len() as u64).to_le_bytes());
        list.iter().for_each(|x| field(x.as_bytes()));
    }
    field(&[u8::from(parents)]);
    Digest::sha256_of(&b)
}

/// The store's checksum table as fileop's checksum cache: loaded in one query for the context,
/// new entries written back in one transaction. It also remembers every digest it saw, for the
/// per-file listing.
pub(crate) struct StoreChecksums {
    store: Arc<Store>,
    known: std::collections::HashMap<PathBuf, rbuild_store::ChecksumEntry>,
    fresh: std::sync::Mutex<Vec<(PathBuf, rbuild_store::ChecksumEntry)>>,
    seen: std::sync::Mutex<std::collections::HashMap<PathBuf, Digest>>,
}

impl StoreChecksums {
    fn load(store: Arc<Store>, dir: &Path) -> Self {
        let mut prefix = dir.as_os_str().to_owned();
        prefix.push("/");
        let known = store
            .checksums_under(Path::new(&prefix))
            .unwrap_or_default();
        StoreChecksums {
            store,
            known,
            fresh: Default::default(),
            seen: Default::default(),
        }
    }

    fn flush(&self) {
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap());
        if !fresh.is_empty() {
            let _ = self
                .store
                .put_checksums(fresh.iter().map(|(p, e)| (p.as_path(), e)));
        }
    }
}

fn file_stat(k: &rbuild_fileop::StatKey) -> rbuild_store::FileStat {
    rbuild_store::FileStat {
        dev: k.dev,
        ino: k.ino,
        size: k.size,
        mtime_ns: k.mtime_ns,
        ctime_ns: k.ctime_ns,
    }
}

impl rbuild_fileop::ChecksumCache for StoreChecksums {
    fn get(&self, path: &Path, stat: &rbuild_fileop::StatKey) -> Option<Digest> {
        let e = self.known.get(path)?;
        if e.stat != file_stat(stat) {
            return None;
        }
        self.seen
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), e.digest.clone());
        Some(e.digest.clone())
    }
    fn put(&self, path: &Path, stat: &rbuild_fileop::StatKey, digest: &Digest) {
        self.seen
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), digest.clone());
        self.fresh.lock().unwrap().push((
            path.to_path_buf(),
            rbuild_store::ChecksumEntry {
                stat: file_stat(stat),
                digest: digest.clone(),
            },
        ));
    }
}

/// Realize one vertex (called once per vertex per build).
pub(crate) async fn realize(run: Arc<Run>, id: VertexId) -> Result<Realized, SolveError> {
    run.check_cancelled()?;
    let node = run.nodes[&id].clone();
    let vertex = run.def.graph.vertex(id).clone();
    match &vertex.op {
        Op::Source(Source::Scratch) => Ok(Realized {
            snapshot: None,
            chain: vec![],
            layer: None,
            context: None,
            created: None,
        }),
        Op::Source(Source::Context { name, .. }) => {
            let dir = run.solver.opts.contexts.get(name).cloned().ok_or_else(|| {
                step_err(&run, id, format!("build context {name:?} was not provided"))
            })?;
            Ok(Realized {
                snapshot: None,
                chain: vec![],
                layer: None,
                context: Some(dir),
                created: None,
            })
        }
        Op::Source(Source::Image {
            reference,
            manifest,
        }) => {
            let (reference, manifest) = (reference.clone(), manifest.clone());
            let r2 = run.clone();
            tokio::task::spawn_blocking(move || unpack_image(&r2, &node, &reference, &manifest))
                .await
                .map_err(|e| SolveError::Internal(format!("unpack task failed: {e}")))?
        }
        Op::Source(Source::Http {
            url,
            checksum,
            filename,
        }) => {
            let (url, checksum, filename) = (url.clone(), checksum.clone(), filename.clone());
            let r2 = run.clone();
            let n2 = node.clone();
            tokio::task::spawn_blocking(move || {
                crate::http::realize(&r2, &n2, &url, checksum.as_ref(), &filename)
                    .map_err(|e| step_err(&r2, n2.id, e))
            })
            .await
            .map_err(|e| SolveError::Internal(format!("download task failed: {e}")))?
        }
        Op::Merge(_) => realize_merge(run, node).await,
        Op::Exec(_) | Op::File(_) => {
            if let Some(rec) = node.record.clone() {
                // Cached: the snapshot may still be there; else rebuild it from the layer blob.
                if run
                    .solver
                    .snapshotter
                    .stat(&rec.snapshot)
                    .ok()
                    .flatten()
                    .is_some()
                {
                    run.report_cached(&node);
                    return Ok(Realized {
                        snapshot: Some(rec.snapshot.clone()),
                        chain: rec.chain.clone(),
                        layer: rec.layer.clone(),
                        context: None,
                        created: Some(rec.created),
                    });
                }
                let inputs = run.inputs(id).await?;
                run.report_cached(&node);
                let r2 = run.clone();
                let parent = inputs[0].clone();
                let key = node.key.clone();
                return tokio::task::spawn_blocking(move || {
                    rematerialize(&r2, &key, &rec, parent.snapshot.as_deref())
                })
                .await
                .map_err(|e| SolveError::Internal(format!("task failed: {e}")))?;
            }
            run_missed(run, id, false).await
        }
    }
}

/// Execute a vertex that missed the cache (an Exec or File), with its progress events. `stream`:
/// only its layer is needed, so a simple COPY may be streamed ([`crate::stream_copy`]).
pub(crate) async fn run_missed(
    run: Arc<Run>,
    id: VertexId,
    stream: bool,
) -> Result<Realized, SolveError> {
    let node = run.nodes[&id].clone();
    let vertex = run.def.graph.vertex(id).clone();
    let inputs = run.inputs(id).await?;
    run.check_cancelled()?;
    let _permit = run
        .jobs
        .acquire()
        .await
        .map_err(|_| SolveError::Cancelled)?;
    run.check_cancelled()?;
    let vref = run.vref(&node);
    let reason = run.solver.explain(&node, vertex.meta.ignore_cache);
    run.solver.events.send(Event::Started {
        vertex: vref.clone(),
    });
    let details = if run.solver.opts.explain {
        run.solver.explain_full(&node)
    } else {
        Vec::new()
    };
    run.solver.events.send(Event::CacheMiss {
        vertex: vref.clone(),
        reason,
        details,
    });
    run.run_count.fetch_add(1, Ordering::SeqCst);
    let started = Instant::now();
    let r2 = run.clone();
    let n2 = node.clone();
    let res = tokio::task::spawn_blocking(move || {
        if stream {
            if let Some(r) = crate::stream_copy::execute(&r2, &n2, &inputs)? {
                return Ok(r);
            }
        }
        execute_locked(&r2, &n2, &inputs)
    })
    .await
    .map_err(|e| SolveError::Internal(format!("step task failed: {e}")))
    .and_then(|r| r);
    match &res {
        Ok(_) => run.solver.events.send(Event::Done {
            vertex: vref,
            duration: started.elapsed(),
        }),
        Err(SolveError::Cancelled) => run.solver.events.send(Event::Cancelled { vertex: vref }),
        Err(e) => {
            run.cancel_all();
            run.solver.events.send(Event::Failed {
                vertex: vref,
                duration: started.elapsed(),
                error: e.to_string(),
            })
        }
    }
    res
}

/// A merge (`COPY --link`): input 0's filesystem with input 1's layer applied on top. Only input 0
/// is materialized; input 1 is needed as a layer blob, so a cached link copy is never re-run or
/// re-applied to an empty filesystem.
async fn realize_merge(run: Arc<Run>, node: Arc<Node>) -> Result<Realized, SolveError> {
    let (base_id, diff_id) = match node.inputs[..] {
        [a, b] => (a, b),
        _ => {
            return Err(SolveError::Internal(format!(
                "a merge needs two inputs, it has {}",
                node.inputs.len()
            )))
        }
    };
    if let Some(rec) = &node.record {
        if run
            .solver
            .snapshotter
            .stat(&rec.snapshot)
            .ok()
            .flatten()
            .is_some()
        {
            return Ok(Realized {
                snapshot: Some(rec.snapshot.clone()),
                chain: rec.chain.clone(),
                layer: rec.layer.clone(),
                context: None,
                created: Some(rec.created),
            });
        }
    }
    let (base, diff) = futures::future::try_join(
        run.clone().materialize(base_id),
        run.clone().layers(diff_id),
    )
    .await?;
    run.check_cancelled()?;
    let r2 = run.clone();
    tokio::task::spawn_blocking(move || merge_locked(&r2, &node, &base, &diff))
        .await
        .map_err(|e| SolveError::Internal(format!("merge task failed: {e}")))?
}

/// Commit `step-<key>` as `base` plus `diff`'s layer, under the step lock (see [`execute_locked`]).
fn merge_locked(
    run: &Run,
    node: &Node,
    base: &Realized,
    diff: &Realized,
) -> Result<Realized, SolveError> {
    let store = &run.solver.store;
    let path = store.lock_path(&format!("step-{}", node.key.hex()));
    let file = store
        .lock_named(&format!("step-{}", node.key.hex()))
        .map_err(|e| SolveError::Internal(format!("locking {}: {e}", path.display())))?;
    let name = format!("step-{}", node.key.hex());
    let exists = |n: &str| run.solver.snapshotter.stat(n).ok().flatten().is_some();
    let mut chain = base.chain.clone();
    chain.extend(diff.layer.clone());
    let rec = match store
        .get_cache_record(&node.key)
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str::<CacheRecord>(&t).ok())
        .filter(|r| r.chain == chain)
    {
        // Another process merged it while we waited, or only the snapshot was pruned.
        Some(r) if exists(&r.snapshot) => r,
        Some(r) => {
            return rematerialize(run, &node.key, &r, base.snapshot.as_deref());
        }
        None => {
            let remote = &run.solver.opts.remote_cache;
            if !remote.is_empty() {
                remote
                    .ensure_blobs(store, diff.layer.iter())
                    .map_err(SolveError::Internal)?;
            }
            let rec = CacheRecord::new(
                name.clone(),
                diff.layer.clone(),
                chain,
                // The copy's time: a merge of a cached copy gives the same history.
                diff.created.unwrap_or_else(now_unix),
                node.explain.clone(),
            );
            // A snapshot under this key without a record (a merge interrupted before recording)
            // holds exactly this content: the key fixes both the base and the layer.
            if !exists(&name) {
                rematerialize(run, &node.key, &rec, base.snapshot.as_deref())?;
            }
            if let Ok(text) = serde_json::to_string(&rec) {
                store
                    .put_cache_record(&node.key, &text)
                    .map_err(|e| SolveError::Internal(format!("recording cache: {e}")))?;
            }
            rec
        }
    };
    drop(file);
    Ok(Realized {
        snapshot: Some(rec.snapshot.clone()),
        chain: rec.chain.clone(),
        layer: rec.layer.clone(),
        context: None,
        created: Some(rec.created),
    })
}

/// A merge known by its layers only (nothing reads its filesystem): `base`'s chain plus `diff`'s
/// layer, recorded under the name its snapshot gets if it is ever needed ([`rematerialize`] makes
/// it then).
pub(crate) fn merge_layers(
    run: &Run,
    node: &Node,
    base: &Realized,
    diff: &Realized,
) -> Result<Realized, SolveError> {
    let mut chain = base.chain.clone();
    chain.extend(diff.layer.clone());
    let created = diff.created.unwrap_or_else(now_unix);
    let rec = CacheRecord::new(
        format!("step-{}", node.key.hex()),
        diff.layer.clone(),
        chain.clone(),
        created,
        node.explain.clone(),
    );
    if let Ok(text) = serde_json::to_string(&rec) {
        run.solver
            .store
            .put_cache_record(&node.key, &text)
            .map_err(|e| SolveError::Internal(format!("recording cache: {e}")))?;
    }
    Ok(Realized {
        snapshot: None,
        chain,
        layer: diff.layer.clone(),
        context: None,
        created: Some(created),
    })
}

/// A base image's manifest and config, its blobs made present (pulled when a registry is
/// configured), checked to agree on the number of layers.
fn base_image(
    run: &Run,
    node: &Node,
    reference: &str,
    manifest: &Digest,
) -> Result<(rbuild_oci::Manifest, rbuild_oci::ImageConfig), SolveError> {
    let solver = &run.solver;
    solver
        .images
        .ensure(reference, manifest)
        .map_err(|e| step_err(run, node.id, e))?;
    let m = rbuild_image::read_manifest(&solver.store, manifest)
        .map_err(|e| step_err(run, node.id, format!("reading manifest {manifest}: {e}")))?;
    let config = rbuild_image::read_config(&solver.store, &m.config.digest).map_err(|e| {
        step_err(
            run,
            node.id,
            format!("reading config {}: {e}", m.config.digest),
        )
    })?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(step_err(
            run,
            node.id,
            format!(
                "image {reference}: manifest has {} layers but config lists {} diff_ids",
                m.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    Ok((m, config))
}

/// Record a finished step under its cache key.
pub(crate) fn put_record(store: &Store, key: &Digest, rec: &CacheRecord) -> Result<(), SolveError> {
    rbuild_store::crash_point("cache-record");
    if let Ok(text) = serde_json::to_string(rec) {
        store
            .put_cache_record(key, &text)
            .map_err(|e| SolveError::Internal(format!("recording cache: {e}")))?;
    }
    Ok(())
}

/// A base image's layers, its blobs made present, without unpacking it.
pub(crate) fn image_layers(
    run: &Run,
    node: &Node,
    reference: &str,
    manifest: &Digest,
) -> Result<Realized, SolveError> {
    let (m, config) = base_image(run, node, reference, manifest)?;
    run.report_cached(node);
    let chain = m
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| LayerInfo {
            diff_id: diff_id.clone(),
            blob: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
        })
        .collect();
    Ok(Realized {
        snapshot: None,
        chain,
        layer: None,
        context: None,
        created: None,
    })
}

/// Whether every layer of the image `manifest` is already unpacked (its top chain-id snapshot exists).
pub(crate) fn image_unpacked(
    store: &Store,
    snapshotter: &rbuild_snapshotter::Snapshotter,
    manifest: &Digest,
) -> bool {
    let Ok(m) = rbuild_image::read_manifest(store, manifest) else {
        return false;
    };
    let Ok(config) = rbuild_image::read_config(store, &m.config.digest) else {
        return false;
    };
    let mut prev: Option<Digest> = None;
    for d in &config.rootfs.diff_ids {
        prev = Some(chain_id(prev.as_ref(), d));
    }
    match prev {
        Some(c) => snapshotter
            .stat(&format!("layer-{}", c.hex()))
            .ok()
            .flatten()
            .is_some(),
        None => true,
    }
}

/// Unpack every layer of a base image into snapshots named by chain id (skipping those present).
fn unpack_image(
    run: &Run,
    node: &Node,
    reference: &str,
    manifest: &Digest,
) -> Result<Realized, SolveError> {
    let solver = &run.solver;
    let vref = run.vref(node);
    let started = Instant::now();
    let (m, config) = base_image(run, node, reference, manifest)?;
    let mut chain = Vec::new();
    let mut prev: Option<Digest> = None;
    let mut parent: Option<String> = None;
    let mut did_work = false;
    for (layer, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        let cid = chain_id(prev.as_ref(), diff_id);
        let name = format!("layer-{}", cid.hex());
        if solver.snapshotter.stat(&name).ok().flatten().is_none() {
            if !did_work {
                solver.events.send(Event::Started {
                    vertex: vref.clone(),
                });
                did_work = true;
            }
            apply_blob(run, &layer.digest, Some(diff_id), parent.as_deref(), &name)
                .map_err(|e| step_err(run, node.id, format!("image {reference}: {e}")))?;
        }
        chain.push(LayerInfo {
            diff_id: diff_id.clone(),
            blob: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
        });
        prev = Some(cid);
        parent = Some(name);
    }
    if did_work {
        solver.events.send(Event::Done {
            vertex: vref,
            duration: started.elapsed(),
        });
    } else {
        run.report_cached(node);
    }
    Ok(Realized {
        snapshot: parent,
        chain,
        layer: None,
        context: None,
        created: None,
    })
}

/// Apply the layer blob `blob` on top of snapshot `parent`, committing it as `name`.
fn apply_blob(
    run: &Run,
    blob: &Digest,
    diff_id: Option<&Digest>,
    parent: Option<&str>,
    name: &str,
) -> Result<(), String> {
    let snaps = &run.solver.snapshotter;
    let key = unique("apply");
    snaps
        .prepare(&key, parent)
        .map_err(|e| format!("preparing snapshot: {e}"))?;
    let res = (|| {
        let upper = snaps.upper_dir(&key).map_err(|e| e.to_string())?;
        let f = run
            .solver
            .store
            .open_blob(blob)
            .map_err(|e| format!("layer {blob}: {e}"))?;
        let reader = diff::decompress(std::io::BufReader::new(f))
            .map_err(|e| format!("layer {blob}: {e}"))?;
        let mut hashing = rbuild_oci::Sha256Writer::new(std::io::sink());
        let tee = TeeReader {
            inner: reader,
            hash: &mut hashing,
        };
        let budgets = diff::ApplyOptions::from_env().map_err(|e| format!("layer {blob}: {e}"))?;
        diff::apply_layer(tee, &upper, &budgets).map_err(|e| format!("layer {blob}: {e}"))?;
        rbuild_store::crash_point("layer-apply");
        let (got, _, _) = hashing.finish();
        if let Some(want) = diff_id {
            if &got != want {
                return Err(format!(
                    "layer {blob}: uncompressed digest {got} does not match the config's diff_id {want}"
                ));
            }
        }
        snaps
            .commit(name, &key)
            .map_err(|e| format!("committing snapshot: {e}"))
    })();
    if res.is_err() {
        let _ = snaps.remove(&key);
    }
    res
}

struct TeeReader<'a, R: std::io::Read> {
    inner: R,
    hash: &'a mut rbuild_oci::Sha256Writer<std::io::Sink>,
}

impl<R: std::io::Read> std::io::Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(self.hash, &buf[..n])?;
        Ok(n)
    }
}

impl<R: std::io::Read> Drop for TeeReader<'_, R> {
    fn drop(&mut self) {
        // Hash whatever trailing bytes the tar reader did not consume (padding after the end
        // marker), so the digest covers the whole uncompressed stream.
        let _ = std::io::copy(&mut self.inner, self.hash);
    }
}

/// A cache hit whose snapshot is gone: re-apply its layer on its parent.
fn rematerialize(
    run: &Run,
    key: &Digest,
    rec: &CacheRecord,
    parent: Option<&str>,
) -> Result<Realized, SolveError> {
    // A hit from an imported cache: its layer is fetched now, when its filesystem is needed.
    let remote = &run.solver.opts.remote_cache;
    if !remote.is_empty() {
        remote
            .ensure_blobs(&run.solver.store, rec.layer.iter())
            .map_err(SolveError::Internal)?;
    }
    if let Some(l) = &rec.layer {
        apply_blob(run, &l.blob, Some(&l.diff_id), parent, &rec.snapshot)
            .map_err(SolveError::Internal)?;
    } else {
        // No layer: the snapshot is its parent's filesystem; an empty commit keeps names uniform.
        let key = unique("empty");
        run.solver
            .snapshotter
            .prepare(&key, parent)
            .and_then(|_| run.solver.snapshotter.commit(&rec.snapshot, &key))
            .map_err(|e| SolveError::Internal(e.to_string()))?;
    }
    // Remember an imported hit locally once all its layers are here: the next build hits locally.
    let store = &run.solver.store;
    if !remote.is_empty()
        && rec.chain.iter().all(|l| store.has_blob(&l.blob))
        && store.get_cache_record(key).ok().flatten().is_none()
    {
        if let Ok(text) = serde_json::to_string(rec) {
            let _ = store.put_cache_record(key, &text);
        }
    }
    Ok(Realized {
        snapshot: Some(rec.snapshot.clone()),
        chain: rec.chain.clone(),
        layer: rec.layer.clone(),
        context: None,
        created: Some(rec.created),
    })
}

/// A mounted active snapshot; unmounts (and removes the active snapshot unless committed) on drop.
struct Active<'a> {
    run: &'a Run,
    key: String,
    mnt: PathBuf,
    mounted: bool,
    committed: bool,
}

impl<'a> Active<'a> {
    fn prepare(run: &'a Run, parent: Option<&str>) -> Result<Active<'a>, String> {
        let snaps = &run.solver.snapshotter;
        let key = unique("active");
        let specs = snaps
            .prepare(&key, parent)
            .map_err(|e| format!("preparing snapshot: {e}"))?;
        let mnt = run.solver.store.root().join("mnt").join(&key);
        let mut a = Active {
            run,
            key,
            mnt,
            mounted: false,
            committed: false,
        };
        std::fs::create_dir_all(&a.mnt)
            .map_err(|e| format!("creating {}: {e}", a.mnt.display()))?;
        mount::mount_all(&specs, &a.mnt).map_err(|e| format!("mounting rootfs: {e}"))?;
        a.mounted = true;
        Ok(a)
    }

    fn unmount(&mut self) -> Result<(), String> {
        if self.mounted {
            mount::unmount(&self.mnt).map_err(|e| format!("unmounting rootfs: {e}"))?;
            self.mounted = false;
            let _ = std::fs::remove_dir(&self.mnt);
        }
        Ok(())
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let _ = self.unmount();
        if !self.committed {
            let _ = self.run.solver.snapshotter.remove(&self.key);
        }
    }
}

/// A read-only view of a committed snapshot, mounted; for bind mounts and copy sources.
struct View {
    mnt: PathBuf,
    key: String,
    snaps: Arc<rbuild_snapshotter::Snapshotter>,
}

impl View {
    fn open(run: &Run, snapshot: Option<&str>) -> Result<View, String> {
        let snaps = run.solver.snapshotter.clone();
        let key = unique("view");
        let specs = match snapshot {
            Some(s) => snaps
                .view(&key, s)
                .map_err(|e| format!("view of {s}: {e}"))?,
            // Scratch: an empty active snapshot mounted read-only is the empty filesystem.
            None => snaps
                .prepare(&key, None)
                .map_err(|e| format!("empty view: {e}"))?,
        };
        let mnt = run.solver.store.root().join("mnt").join(&key);
        std::fs::create_dir_all(&mnt).map_err(|e| format!("creating {}: {e}", mnt.display()))?;
        let v = View { mnt, key, snaps };
        mount::mount_all(&specs, &v.mnt).map_err(|e| format!("mounting view: {e}"))?;
        Ok(v)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let _ = mount::unmount(&self.mnt);
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = self.snaps.remove(&self.key);
    }
}

/// [`execute`] under a per-cache-key file lock shared by every rbuild process on the store: when
/// two builds reach the same step, one runs it and the other waits, then reuses its record (same
/// layer, same image id, each blob written once).
fn execute_locked(
    run: &Run,
    node: &Node,
    inputs: &[Arc<Realized>],
) -> Result<Realized, SolveError> {
    // Held until the step is committed; prune may delete unheld step locks (Store::lock_named).
    let path = run
        .solver
        .store
        .lock_path(&format!("step-{}", node.key.hex()));
    let file = run
        .solver
        .store
        .lock_named(&format!("step-{}", node.key.hex()))
        .map_err(|e| SolveError::Internal(format!("locking {}: {e}", path.display())))?;
    if !run.def.graph.vertex(node.id).meta.ignore_cache {
        let done = run
            .solver
            .store
            .get_cache_record(&node.key)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<CacheRecord>(&t).ok())
            .filter(|r| {
                run.solver
                    .snapshotter
                    .stat(&r.snapshot)
                    .ok()
                    .flatten()
                    .is_some()
            });
        if let Some(rec) = done {
            // Another process built this step while we waited.
            return Ok(Realized {
                snapshot: Some(rec.snapshot.clone()),
                chain: rec.chain.clone(),
                layer: rec.layer.clone(),
                context: None,
                created: Some(rec.created),
            });
        }
    }
    let res = execute(run, node, inputs);
    drop(file);
    res
}

/// Execute an Exec or File vertex on its materialized inputs.
fn execute(run: &Run, node: &Node, inputs: &[Arc<Realized>]) -> Result<Realized, SolveError> {
    let vertex = run.def.graph.vertex(node.id);
    let rootfs = inputs
        .first()
        .ok_or_else(|| SolveError::Internal("step without a rootfs input".into()))?;
    let mut active =
        Active::prepare(run, rootfs.snapshot.as_deref()).map_err(|e| step_err(run, node.id, e))?;
    match &vertex.op {
        Op::Exec(e) => run_exec(run, node, e, &active.mnt, inputs)?,
        Op::File(f) => run_file(run, node, f, &active.mnt, inputs)?,
        Op::Source(_) | Op::Merge(_) => unreachable!("sources and merges are realized elsewhere"),
    }
    rbuild_store::crash_point(if matches!(vertex.op, Op::Exec(_)) {
        "run"
    } else {
        "copy"
    });
    active.unmount().map_err(|e| step_err(run, node.id, e))?;
    run.check_cancelled()?;

    // Diff the step's changes into an uncompressed layer blob: overlay's upper dir is the
    // changeset; a copy-based snapshot is compared with its parent's tree.
    let snaps = &run.solver.snapshotter;
    let changes = snaps
        .changes(&active.key)
        .map_err(|e| SolveError::Internal(e.to_string()))?;
    let store = &run.solver.store;
    let mut w = store
        .ingest()
        .map_err(|e| SolveError::Internal(format!("writing layer: {e}")))?;
    let opts = diff::LayerOptions {
        source_date_epoch: run.solver.opts.source_date_epoch,
    };
    let stats = match changes {
        rbuild_snapshotter::Changes::Upper { upper, lowers } => {
            // Directories overlay copied up only because a mountpoint was made in them are not
            // changes.
            diff::trim_unchanged_dirs(&upper, &lowers)
                .map_err(|e| SolveError::Internal(format!("trimming {}: {e}", upper.display())))?;
            diff::write_layer(&upper, &mut w, &opts)
        }
        rbuild_snapshotter::Changes::Tree { tree, parent } => {
            diff::write_tree_diff(&tree, parent.as_deref(), &mut w, &opts)
        }
    }
    .map_err(|e| SolveError::Internal(format!("writing layer: {e}")))?;
    let layer = if stats.entries == 0 {
        drop(w);
        None
    } else {
        let (blob, size) = w
            .commit(Some((&stats.diff_id, stats.size)))
            .map_err(|e| SolveError::Internal(format!("storing layer: {e}")))?;
        Some(LayerInfo {
            diff_id: stats.diff_id.clone(),
            blob,
            media_type: MEDIA_TYPE_OCI_LAYER.to_string(),
            size,
        })
    };
    let name = format!("step-{}", node.key.hex());
    rbuild_store::crash_point("snapshot-commit");
    snaps
        .commit(&name, &active.key)
        .map_err(|e| SolveError::Internal(format!("committing snapshot: {e}")))?;
    active.committed = true;
    let mut chain = rootfs.chain.clone();
    chain.extend(layer.clone());
    let created = now_unix();
    let rec = CacheRecord::new(
        name.clone(),
        layer.clone(),
        chain.clone(),
        created,
        node.explain.clone(),
    );
    put_record(store, &node.key, &rec)?;
    Ok(Realized {
        snapshot: Some(name),
        chain,
        layer,
        context: None,
        created: Some(created),
    })
}

fn run_file(
    run: &Run,
    node: &Node,
    op: &FileOp,
    rootfs: &Path,
    inputs: &[Arc<Realized>],
) -> Result<(), SolveError> {
    let dest =
        rbuild_fileop::Root::open(rootfs).map_err(|e| step_err(run, node.id, e.to_string()))?;
    // Open every source input: contexts are directories (with their .dockerignore); other
    // vertices are mounted read-only views.
    let mut views = Vec::new();
    let mut roots: Vec<Option<(rbuild_fileop::Root, Option<IgnoreRules>)>> = Vec::new();
    for (i, r) in inputs.iter().enumerate() {
        if i == 0 {
            roots.push(None);
            continue;
        }
        let (dir, ignore) = match &r.context {
            Some(d) => {
                let src = run.def.graph.inputs(node.id)[i];
                let excludes = match &run.def.graph.vertex(src).op {
                    Op::Source(Source::Context { excludes, .. }) => excludes.clone(),
                    _ => vec![],
                };
                let m = rbuild_ignore::Matcher::from_patterns(&excludes)
                    .map_err(|e| step_err(run, node.id, e.to_string()))?;
                (d.clone(), Some(IgnoreRules(m)))
            }
            None => {
                let v = View::open(run, r.snapshot.as_deref())
                    .map_err(|e| step_err(run, node.id, e))?;
                let p = v.mnt.clone();
                views.push(v);
                (p, None)
            }
        };
        roots.push(Some((
            rbuild_fileop::Root::open(&dir).map_err(|e| step_err(run, node.id, e.to_string()))?,
            ignore,
        )));
    }
    let sources: Vec<Option<rbuild_fileop::CopySource<'_>>> = roots
        .iter()
        .map(|r| {
            r.as_ref().map(|(root, ignore)| rbuild_fileop::CopySource {
                root,
                ignore: match ignore {
                    Some(i) => i as &dyn rbuild_fileop::Excluder,
                    None => &rbuild_fileop::NoExcludes,
                },
                keep_owner: ignore.is_none(),
            })
        })
        .collect();
    // ADD's archive budgets: the layer budgets' environment variables, when set, apply too.
    let layer_limits = rbuild_snapshotter::diff::ApplyOptions::from_env()
        .map_err(|e| step_err(run, node.id, e))?;
    let mut limits = rbuild_fileop::ExtractLimits::default();
    let set = |v: &str| std::env::var_os(v).is_some();
    if set("RBUILD_MAX_LAYER_BYTES") {
        limits.max_bytes = layer_limits.max_bytes;
    }
    if set("RBUILD_MAX_LAYER_ENTRIES") {
        limits.max_entries = layer_limits.max_entries;
    }
    if set("RBUILD_MAX_LAYER_DEPTH") {
        limits.max_depth = layer_limits.max_depth;
    }
    let ctx = rbuild_fileop::ApplyContext {
        source_date_epoch: run.solver.opts.source_date_epoch,
        limits,
    };
    rbuild_fileop::apply(&dest, &op.actions, &sources, &ctx)
        .map_err(|e| step_err(run, node.id, e.to_string()))?;
    drop(sources);
    drop(roots);
    drop(views);
    Ok(())
}

fn run_exec(
    run: &Run,
    node: &Node,
    op: &ExecOp,
    rootfs: &Path,
    inputs: &[Arc<Realized>],
) -> Result<(), SolveError> {
    let solver = &run.solver;
    if op.network == NetworkMode::Host && !solver.opts.allow_network_host {
        return Err(step_err(
            run,
            node.id,
            "--network=host needs --allow network.host".into(),
        ));
    }
    if op.security == SecurityMode::Insecure && !solver.opts.allow_insecure {
        return Err(step_err(
            run,
            node.id,
            "--security=insecure needs --allow security.insecure".into(),
        ));
    }
    let root =
        rbuild_fileop::Root::open(rootfs).map_err(|e| step_err(run, node.id, e.to_string()))?;
    let user = rbuild_fileop::users::resolve_user(&root, &op.user)
        .map_err(|e| step_err(run, node.id, format!("USER {}: {e}", op.user)))?;
    drop(root);
    let mut env = op.env.clone();
    env.extend(op.unkeyed_env.iter().cloned());
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
    }
    let mut mounts = Vec::new();
    let mut _views = Vec::new();
    let mut _tmpfiles = Vec::new();
    // Declared before `_scratch`, so dropped after it: an rw overlay's lower dir is a pinned source.
    let mut _pinned = Vec::new();
    let mut _scratch = Vec::new();
    let mut _scratch_locks = Vec::new();
    for m in &op.mounts {
        match &m.kind {
            MountKind::Bind {
                input,
                source,
                readwrite,
            } => {
                let r = inputs.get(*input).ok_or_else(|| {
                    SolveError::Internal(format!("bind mount input {input} missing"))
                })?;
                let base = match &r.context {
                    Some(d) => d.clone(),
                    None => {
                        let v = View::open(run, r.snapshot.as_deref())
                            .map_err(|e| step_err(run, node.id, e))?;
                        let p = v.mnt.clone();
                        _views.push(v);
                        p
                    }
                };
                let src_root = rbuild_fileop::Root::open(&base)
                    .map_err(|e| step_err(run, node.id, e.to_string()))?;
                // Resolved beneath its root and pinned by its fd: the sandbox binds a staging
                // point rbuild owns, never a path string that could be swapped for a symlink.
                let fd = src_root
                    .resolve(source, true)
                    .map_err(|e| step_err(run, node.id, format!("--mount source {source}: {e}")))?;
                let pinned =
                    crate::mounts::PinnedSource::new(&solver.store.root().join("mnt"), &fd)
                        .map_err(|e| {
                            step_err(run, node.id, format!("--mount source {source}: {e}"))
                        })?;
                drop(fd);
                let host = pinned.path.clone();
                _pinned.push(pinned);
                // rw: writes go to a scratch overlay (or copy) that is thrown away.
                let source = if *readwrite {
                    let s = crate::mounts::RwScratch::new(&solver.store.root().join("mnt"), &host)
                        .map_err(|e| step_err(run, node.id, e))?;
                    let p = s.path.clone();
                    _scratch.push(s);
                    p
                } else {
                    host
                };
                mounts.push(rbuild_sandbox::SandboxMount::Bind {
                    source,
                    target: m.target.clone(),
                    readonly: !readwrite,
                });
            }
            MountKind::Cache {
                id,
                sharing,
                readonly,
                mode,
                uid,
                gid,
                from,
                source,
            } => {
                // `from=`: the cache starts as a copy of that input's `source`.
                let seed_root = match from {
                    Some(i) => {
                        let r = inputs.get(*i).ok_or_else(|| {
                            SolveError::Internal(format!("cache mount input {i} missing"))
                        })?;
                        let key = run
                            .def
                            .graph
                            .inputs(node.id)
                            .get(*i)
                            .map(|v| &run.nodes[v].key);
                        let root = match &r.context {
                            Some(d) => (d.clone(), false),
                            None => {
                                let v = View::open(run, r.snapshot.as_deref())
                                    .map_err(|e| step_err(run, node.id, e))?;
                                let p = v.mnt.clone();
                                _views.push(v);
                                (p, true)
                            }
                        };
                        key.map(|k| (root, k))
                    }
                    None => None,
                };
                let seed =
                    seed_root
                        .as_ref()
                        .map(|((root, keep_owner), key)| crate::mounts::CacheSeed {
                            root,
                            source,
                            keep_owner: *keep_owner,
                            key,
                        });
                let name = crate::mounts::cache_name(id, seed.as_ref());
                let held = _scratch_locks
                    .iter()
                    .find(|d: &&crate::mounts::CacheDir| d.name == name);
                let source = match held {
                    Some(d) => d.path.clone(),
                    None => {
                        let dir = crate::mounts::cache_dir(
                            &solver.store.root().join("cache-mounts"),
                            id,
                            *sharing,
                            seed.as_ref(),
                            *mode,
                            *uid,
                            *gid,
                        )
                        .map_err(|e| step_err(run, node.id, format!("cache mount {id}: {e}")))?;
                        let p = dir.path.clone();
                        _scratch_locks.push(dir);
                        p
                    }
                };
                mounts.push(rbuild_sandbox::SandboxMount::Bind {
                    source,
                    target: m.target.clone(),
                    readonly: *readonly,
                });
            }
            MountKind::Tmpfs { size } => mounts.push(rbuild_sandbox::SandboxMount::Tmpfs {
                target: m.target.clone(),
                size: *size,
            }),
            MountKind::Secret {
                id,
                required,
                env: as_env,
                mode,
                uid,
                gid,
            } => {
                let value = match solver.opts.secrets.get(id) {
                    Some(crate::SecretSource::File(p)) => std::fs::read(p).map_err(|e| {
                        step_err(
                            run,
                            node.id,
                            format!("secret {id}: reading {}: {e}", p.display()),
                        )
                    })?,
                    Some(crate::SecretSource::Env(v)) => v.clone().into_bytes(),
                    None if *required => {
                        return Err(step_err(
                            run,
                            node.id,
                            format!(
                            "secret {id} is required but was not given (--secret id={id},src=…)"
                        ),
                        ))
                    }
                    None => continue,
                };
                if let Some(name) = as_env {
                    env.push(format!("{name}={}", String::from_utf8_lossy(&value)));
                    continue;
                }
                let f = tempfile::Builder::new()
                    .prefix("secret-")
                    .tempfile_in(solver.store.root())
                    .map_err(|e| step_err(run, node.id, format!("secret {id}: {e}")))?;
                std::fs::write(f.path(), &value)
                    .map_err(|e| step_err(run, node.id, format!("secret {id}: {e}")))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(*mode));
                let _ = std::os::unix::fs::chown(f.path(), Some(*uid), Some(*gid));
                mounts.push(rbuild_sandbox::SandboxMount::Bind {
                    source: f.path().to_path_buf(),
                    target: m.target.clone(),
                    readonly: true,
                });
                _tmpfiles.push(f);
            }
            MountKind::Ssh { id, required, .. } => match solver.opts.ssh.get(id) {
                Some(sock) => {
                    // As BuildKit: the first forwarded agent is $SSH_AUTH_SOCK.
                    if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                        env.push(format!("SSH_AUTH_SOCK={}", m.target));
                    }
                    mounts.push(rbuild_sandbox::SandboxMount::Bind {
                        source: sock.clone(),
                        target: m.target.clone(),
                        readonly: false,
                    })
                }
                None if *required => {
                    return Err(step_err(
                        run,
                        node.id,
                        format!("ssh agent {id} is required but was not given (--ssh {id}=…)"),
                    ))
                }
                None => {}
            },
        }
    }
    let spec = rbuild_sandbox::RunSpec {
        rootfs: rootfs.to_path_buf(),
        args: op.args.clone(),
        env,
        cwd: op.cwd.clone(),
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids.clone(),
        hostname: "buildkitsandbox".to_string(),
        etc_hostname: false,
        network: match op.network {
            NetworkMode::None => rbuild_sandbox::Network::None,
            _ => rbuild_sandbox::Network::Host,
        },
        mounts,
        limits: solver.opts.limits,
        insecure: op.security == SecurityMode::Insecure,
        stdio: rbuild_sandbox::Stdio::Piped,
        init_exe: solver.opts.init_exe.clone(),
        timeout: None,
    };
    let cancel = rbuild_sandbox::Cancel::new();
    run.cancels.lock().unwrap().push(cancel.clone());
    run.check_cancelled()?;
    let vref = run.vref(node);
    let started = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut partial = [Vec::new(), Vec::new()];
    let events = solver.events.clone();
    let emit = |stream: Stream, line: &[u8], tail: &mut VecDeque<String>| {
        let text = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        if tail.len() == 10 {
            tail.pop_front();
        }
        tail.push_back(text.clone());
        events.send(Event::Log {
            vertex: vref.clone(),
            stream,
            elapsed: started.elapsed(),
            line: text,
        });
    };
    let mut on_output = |s: rbuild_sandbox::OutputStream, data: &[u8]| {
        let (stream, idx) = match s {
            rbuild_sandbox::OutputStream::Stdout => (Stream::Stdout, 0),
            rbuild_sandbox::OutputStream::Stderr => (Stream::Stderr, 1),
        };
        let buf = &mut partial[idx];
        buf.extend_from_slice(data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            emit(stream, &line[..line.len() - 1], &mut tail);
        }
        if buf.len() > 64 * 1024 {
            let line: Vec<u8> = std::mem::take(buf);
            emit(stream, &line, &mut tail);
        }
    };
    let outcome = rbuild_sandbox::run(&spec, &mut on_output, &cancel);
    for (idx, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
        if !partial[idx].is_empty() {
            let line = std::mem::take(&mut partial[idx]);
            emit(stream, &line, &mut tail);
        }
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if run.cancelled.load(Ordering::SeqCst) => {
            let _ = e;
            return Err(SolveError::Cancelled);
        }
        Err(e) => return Err(step_err(run, node.id, e.to_string())),
    };
    use rbuild_sandbox::ExitKind;
    let (status, code) = match outcome.status {
        ExitKind::Exited(0) => return Ok(()),
        ExitKind::Exited(c) => (
            format!("process did not complete successfully: exit code: {c}"),
            Some(c),
        ),
        ExitKind::Signaled(s) => (format!("process was killed by signal {s}"), None),
        ExitKind::OomKilled => (
            "process was killed for exceeding its memory limit (out of memory)".to_string(),
            None,
        ),
    };
    if run.cancelled.load(Ordering::SeqCst) {
        return Err(SolveError::Cancelled);
    }
    let status = if outcome.pids_limit_hit {
        format!("{status} (the pids limit refused a fork)")
    } else {
        status
    };
    let v = run.def.graph.vertex(node.id);
    Err(SolveError::Exec {
        instruction: v.meta.instruction.clone(),
        span: v.meta.span.clone(),
        status,
        exit_code: code,
        tail: tail.into_iter().collect(),
    })
}
