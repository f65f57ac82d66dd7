//! The three passes: keys, lookup, realize. See the crate docs.

use crate::events::{Event, EventSink, VertexRef};
use crate::exec::{self, Realized};
use crate::key::vertex_key;
use crate::record::{
    explain_all, explain_miss, CacheRecord, ContentInfo, Explain, FileListing, LayerInfo,
};
use crate::SolveError;
use futures::future::{BoxFuture, FutureExt};
use rbuild_oci::{Digest, History, ImageConfig};
use rbuild_ops::{BuildDefinition, FileAction, Op, Source, VertexId};
use rbuild_snapshotter::Snapshotter;
use rbuild_store::Store;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OnceCell, Semaphore};

/// One read of a local context by a step: (content index, input, sources, excludes, parents).
type ContextRead = (usize, usize, Vec<String>, Vec<String>, bool);

/// Content indexes of `RUN --mount=type=bind` context reads start here (copy actions use their
/// action index below it).
const BIND_CONTENT_BASE: usize = 1 << 20;

/// Where a secret's value comes from (`--secret id=…,src=…|env=…`).
#[derive(Clone, Debug)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// How the build may behave; none of it feeds a cache key.
#[derive(Clone, Debug, Default)]
pub struct SolveOptions {
    /// Local directories by context name (`context` is the main build context).
    pub contexts: BTreeMap<String, PathBuf>,
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--ssh id=socket`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Maximum concurrently executing steps; None = unbounded (BuildKit runs independent stages at
    /// once even on two cores: RUN steps mostly wait).
    pub jobs: Option<usize>,
    pub allow_network_host: bool,
    pub allow_insecure: bool,
    /// SOURCE_DATE_EPOCH: clamps config/history `created` and layer mtimes.
    pub source_date_epoch: Option<i64>,
    /// Materialize the target's filesystem (for rootfs exports) even when everything is cached.
    pub materialize_target: bool,
    /// The sandbox init binary (default: /proc/self/exe).
    pub init_exe: Option<PathBuf>,
    pub limits: rbuild_sandbox::Limits,
    /// `--explain`: cache-miss events carry the full comparison with the closest earlier record.
    pub explain: bool,
    /// Caches imported with `--cache-from`, consulted after the local records (see [`crate::remote`]).
    pub remote_cache: crate::remote::RemoteCaches,
}

/// Makes a base image's blobs present in the store (pulling them when a registry is configured).
pub trait BaseImages: Send + Sync {
    /// Ensure the manifest, config and every layer blob of `manifest` are in the store.
    fn ensure(&self, reference: &str, manifest: &Digest) -> Result<(), String>;
}

/// Base images from the local store only.
pub struct LocalImages(pub Arc<Store>);

impl BaseImages for LocalImages {
    fn ensure(&self, reference: &str, manifest: &Digest) -> Result<(), String> {
        let m = rbuild_image::read_manifest(&self.0, manifest).map_err(|e| {
            format!("image {reference} ({manifest}) is not in the local store: {e}")
        })?;
        for d in std::iter::once(&m.config).chain(m.layers.iter()) {
            if !self.0.has_blob(&d.digest) {
                return Err(format!(
                    "image {reference}: blob {} is missing from the local store",
                    d.digest
                ));
            }
        }
        Ok(())
    }
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct SolveResult {
    pub manifest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// The committed snapshot holding the target's filesystem (when materialized).
    pub target_snapshot: Option<String>,
    pub steps_cached: usize,
    pub steps_run: usize,
    /// Every step executed or cached in this build, for `--cache-to` (see [`crate::remote`]).
    pub cache: Vec<crate::remote::ExportRecord>,
    /// For the no-op check of later rebuilds; None when this build cannot have one.
    pub stamp: Option<BuildStamp>,
}

/// One context selection a build read, with its stat fingerprint.
pub use rbuild_noop::Selection as StampedSelection;

/// What decides that a rebuild of the same request would find every step cached and produce the
/// same image: the context selections read (with their stat fingerprints) and the base images.
/// With it the steps such a rebuild shows and the cache keys it would use.
#[derive(Clone, Debug, Default)]
pub struct BuildStamp {
    pub selections: Vec<StampedSelection>,
    /// Base images as resolved: (reference, manifest).
    pub images: Vec<(String, Digest)>,
    /// Cache keys of every step (exec, file and merge).
    pub keys: Vec<Digest>,
    /// Every layer blob of every step's chain: a cache record is used only while all are here.
    pub blobs: Vec<Digest>,
    /// The steps a fully cached rebuild shows, in its order (the context load is reported done,
    /// the others CACHED).
    pub steps: Vec<rbuild_noop::Step>,
}

/// Context checksums by vertex and content index, and each selection's stamp (None: unstable).
type ContextChecksums = (
    HashMap<VertexId, BTreeMap<usize, ContentInfo>>,
    Vec<Option<StampedSelection>>,
);

pub struct Solver {
    pub(crate) store: Arc<Store>,
    pub(crate) snapshotter: Arc<Snapshotter>,
    pub(crate) images: Arc<dyn BaseImages>,
    pub(crate) events: EventSink,
    pub(crate) opts: SolveOptions,
    /// Earlier cache records (creation time, explanation), read once per build to explain misses.
    pub(crate) earlier: std::sync::OnceLock<Vec<(i64, Explain)>>,
    /// Solves in progress, for [`Solver::cancel`].
    pub(crate) runs: Mutex<Vec<std::sync::Weak<Run>>>,
    pub(crate) cancel_requested: AtomicBool,
}

/// Per-vertex state of one solve.
pub(crate) struct Node {
    pub id: VertexId,
    pub key: Digest,
    pub inputs: Vec<VertexId>,
    pub record: Option<CacheRecord>,
    pub explain: Explain,
    pub number: AtomicU32,
    pub realized: OnceCell<Arc<Realized>>,
    /// The result of a streamed COPY (`stream_copy`): layers only, no snapshot. Kept apart from
    /// `realized` so a later `materialize` of the vertex still makes its filesystem.
    pub layer_only: std::sync::OnceLock<Arc<Realized>>,
    pub reported_cached: AtomicBool,
    /// Why this step must run whatever the cache holds (`--no-cache`, `--no-cache-filter`, or an
    /// input that must).
    pub rebuilt_by: Option<String>,
}

impl Node {
    /// What this build made of the vertex: its materialized result, else its streamed layer.
    pub(crate) fn result(&self) -> Option<&Arc<Realized>> {
        self.realized.get().or_else(|| self.layer_only.get())
    }
}

pub(crate) struct Run {
    pub solver: Arc<Solver>,
    pub def: Arc<BuildDefinition>,
    pub nodes: HashMap<VertexId, Arc<Node>>,
    pub next_number: AtomicU32,
    pub jobs: Semaphore,
    pub cancelled: AtomicBool,
    pub cancels: Mutex<Vec<rbuild_sandbox::Cancel>>,
    pub run_count: AtomicU32,
    pub cached_count: AtomicU32,
}

impl Solver {
    pub fn new(
        store: Arc<Store>,
        snapshotter: Arc<Snapshotter>,
        images: Arc<dyn BaseImages>,
        events: EventSink,
        opts: SolveOptions,
    ) -> Self {
        Solver {
            store,
            snapshotter,
            images,
            events,
            opts,
            earlier: Default::default(),
            runs: Default::default(),
            cancel_requested: AtomicBool::new(false),
        }
    }

    /// Cancel every solve in progress (Ctrl-C): running sandboxes are killed, no new step starts,
    /// and `solve` returns [`SolveError::Cancelled`] once everything it started has been cleaned up.
    pub fn cancel(&self) {
        self.cancel_requested.store(true, Ordering::SeqCst);
        for r in self.runs.lock().unwrap().iter().filter_map(|w| w.upgrade()) {
            r.cancel_all();
        }
    }

    /// Build `def` into an image in the store (not tagged: the caller names it).
    pub async fn solve(self: Arc<Self>, def: BuildDefinition) -> Result<SolveResult, SolveError> {
        let def = Arc::new(def);
        let order = reachable_topo(&def, def.target.root);
        let mut nodes: HashMap<VertexId, Arc<Node>> = HashMap::new();
        let ctx_number = AtomicU32::new(0);
        let run_numbers = AtomicU32::new(1);

        // Pass 1: keys (context checksums run on the blocking pool, in parallel per selection).
        let (mut content, stamps) = self
            .context_checksums(&def, &order, &run_numbers, &ctx_number)
            .await?;
        // ADD <url> without --checksum: downloaded now and keyed by its content.
        crate::http::content_keys(&self, &def, &order, &mut content).await?;
        for &id in &order {
            let v = def.graph.vertex(id);
            let inputs = def.graph.inputs(id);
            let input_keys: Vec<Digest> = inputs.iter().map(|i| nodes[i].key.clone()).collect();
            let c: Vec<(usize, Digest)> = content
                .get(&id)
                .map(|m| m.iter().map(|(i, ci)| (*i, ci.checksum.clone())).collect())
                .unwrap_or_default();
            let key = match &v.op {
                // A context's key is its name only: every consumer keys the exact files it reads
                // (after .dockerignore), so a .dockerignore edit that changes no selection
                // changes no key.
                Op::Source(Source::Context { name, .. }) => vertex_key(
                    &Op::Source(Source::Context {
                        name: name.clone(),
                        excludes: vec![],
                    }),
                    &input_keys,
                    &c,
                ),
                _ => vertex_key(&v.op, &input_keys, &c),
            };
            let explain = Explain {
                stage: v.meta.stage_name.clone().unwrap_or_default(),
                instruction: v.meta.instruction.clone(),
                line: v.meta.span.as_ref().map(|s| s.start_line).unwrap_or(0),
                op: serde_json::to_value(&v.op).unwrap_or_default(),
                inputs: inputs
                    .iter()
                    .map(|i| (nodes[i].key.clone(), def.graph.vertex(*i).meta.name.clone()))
                    .collect(),
                content: content.get(&id).cloned().unwrap_or_default(),
                args: v.meta.arg_names.clone(),
            };
            // Pass 2: lookup.
            // A step fed by a step that must re-run (`--no-cache-filter`) re-runs too: its
            // input's content will be new even though its key is not.
            let rebuilt_input = inputs.iter().find(|i| nodes[*i].rebuilt_by.is_some());
            let rebuilt_by = match &v.op {
                Op::Exec(_) | Op::File(_) | Op::Merge(_) if v.meta.ignore_cache => {
                    Some("cache disabled for this step (--no-cache)".to_string())
                }
                _ => rebuilt_input.map(|i| {
                    format!(
                        "parent step re-runs with the cache disabled: {}",
                        def.graph.vertex(*i).meta.name
                    )
                }),
            };
            let record = match &v.op {
                Op::Exec(_) | Op::File(_) | Op::Merge(_) if rebuilt_by.is_none() => {
                    self.lookup(&key)
                }
                _ => None,
            };
            nodes.insert(
                id,
                Arc::new(Node {
                    id,
                    key,
                    inputs,
                    record,
                    explain,
                    number: AtomicU32::new(0),
                    realized: OnceCell::new(),
                    layer_only: Default::default(),
                    reported_cached: AtomicBool::new(false),
                    rebuilt_by,
                }),
            );
        }

        let run = Arc::new(Run {
            solver: self.clone(),
            def: def.clone(),
            nodes,
            next_number: AtomicU32::new(run_numbers.load(Ordering::SeqCst)),
            jobs: Semaphore::new(self.opts.jobs.unwrap_or(Semaphore::MAX_PERMITS).max(1)),
            cancelled: AtomicBool::new(false),
            cancels: Mutex::new(Vec::new()),
            run_count: AtomicU32::new(0),
            cached_count: AtomicU32::new(0),
        });
        self.runs.lock().unwrap().push(Arc::downgrade(&run));
        if self.cancel_requested.load(Ordering::SeqCst) {
            run.cancel_all();
        }

        // Everything with a usable record is cached; say so in build order, as BuildKit does.
        // A base image is cached when it is unpacked, or when nothing will need its files: every
        // step has a record and no rootfs is asked for (then the snapshot table is not even read).
        let all_recorded = !self.opts.materialize_target
            && order.iter().all(|id| match &def.graph.vertex(*id).op {
                Op::Exec(_) | Op::File(_) | Op::Merge(_) => run.nodes[id].record.is_some(),
                _ => true,
            });
        for id in &order {
            let node = &run.nodes[id];
            let cached = match &def.graph.vertex(*id).op {
                Op::Exec(_) | Op::File(_) => node.record.is_some(),
                Op::Source(Source::Image { manifest, .. }) => {
                    all_recorded || exec::image_unpacked(&self.store, &self.snapshotter, manifest)
                }
                _ => false,
            };
            if cached {
                run.report_cached(node);
            }
        }

        // Pass 3: realize what the image needs.
        let root = def.target.root;
        let result = if self.opts.materialize_target {
            run.clone().materialize(root).await
        } else {
            run.clone().layers(root).await
        };
        let realized = match result {
            Ok(r) => r,
            Err(e) => {
                run.cancel_all();
                return Err(e);
            }
        };
        // Layers named by remote cache hits are fetched now: the image needs them in the store.
        if !self.opts.remote_cache.is_empty() {
            let (solver, chain) = (self.clone(), realized.chain.clone());
            tokio::task::spawn_blocking(move || {
                solver.opts.remote_cache.ensure_blobs(&solver.store, &chain)
            })
            .await
            .map_err(|e| SolveError::Internal(format!("cache fetch task failed: {e}")))?
            .map_err(SolveError::Internal)?;
        }
        let (manifest, config_digest, config) = self.assemble(&run, &realized)?;
        let cache = export_records(&run);
        let stamp = self.stamp(&def, &order, &run, stamps);
        Ok(SolveResult {
            manifest,
            config_digest,
            config,
            target_snapshot: realized.snapshot.clone(),
            steps_cached: run.cached_count.load(Ordering::SeqCst) as usize,
            steps_run: run.run_count.load(Ordering::SeqCst) as usize,
            cache,
            stamp,
        })
    }

    /// What a later no-op check needs (see [`BuildStamp`]); None when some input is not a local
    /// context or image, or a context file changed while it was read.
    fn stamp(
        &self,
        def: &BuildDefinition,
        order: &[VertexId],
        run: &Run,
        selections: Vec<Option<StampedSelection>>,
    ) -> Option<BuildStamp> {
        if !self.opts.remote_cache.is_empty() || self.opts.materialize_target {
            return None;
        }
        let selections: Vec<StampedSelection> = selections.into_iter().collect::<Option<_>>()?;
        let mut stamp = BuildStamp {
            steps: Vec::new(),
            keys: Vec::new(),
            blobs: Vec::new(),
            images: Vec::new(),
            selections,
        };
        if !stamp.selections.is_empty() {
            stamp.steps.push(rbuild_noop::Step {
                name: "[internal] load build context".to_string(),
                cached: false,
            });
        }
        for id in order {
            let v = def.graph.vertex(*id);
            let node = &run.nodes[id];
            match &v.op {
                Op::Source(Source::Http { .. }) => return None,
                Op::Source(Source::Image {
                    reference,
                    manifest,
                }) => {
                    stamp.images.push((reference.clone(), manifest.clone()));
                    stamp.steps.push(rbuild_noop::Step {
                        name: v.meta.name.clone(),
                        cached: true,
                    });
                }
                Op::Source(_) => {}
                Op::Exec(_) | Op::File(_) | Op::Merge(_) => {
                    // A step neither found in the cache nor run here: nothing to stand on.
                    let chain = match (&node.record, node.result()) {
                        (Some(r), _) => &r.chain,
                        (None, Some(r)) => &r.chain,
                        (None, None) => return None,
                    };
                    stamp.blobs.extend(chain.iter().map(|l| l.blob.clone()));
                    stamp.keys.push(node.key.clone());
                    if !matches!(v.op, Op::Merge(_)) {
                        stamp.steps.push(rbuild_noop::Step {
                            name: v.meta.name.clone(),
                            cached: true,
                        });
                    }
                }
            }
        }
        Some(stamp)
    }

    fn lookup(&self, key: &Digest) -> Option<CacheRecord> {
        self.lookup_local(key).or_else(|| {
            // Then the imported caches: a hit names layers, it downloads nothing yet.
            self.opts
                .remote_cache
                .lookup(key)
                .map(|r| r.to_cache_record(key))
        })
    }

    fn lookup_local(&self, key: &Digest) -> Option<CacheRecord> {
        let text = self.store.get_cache_record(key).ok()??;
        let rec: CacheRecord = serde_json::from_str(&text).ok()?;
        // A record is only as good as its layers: every blob of the chain must still be here.
        if rec.chain.iter().all(|l| self.store.has_blob(&l.blob)) {
            Some(rec)
        } else {
            None
        }
    }

    /// The closest earlier record for the same step: among records of the same stage with the same
    /// instruction (else the same line), the one with the fewest differing inputs
    /// ([`crate::record::distance`]); among equals, the fewest differing files, then the newest.
    /// The records are read once per build.
    fn closest_record(&self, now: &Explain, files: &FileListing<'_>) -> Option<Explain> {
        let all = self.earlier.get_or_init(|| {
            self.store
                .cache_records()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(_, text)| serde_json::from_str::<CacheRecord>(&text).ok())
                .map(|r| (r.created, r.explain))
                .collect()
        });
        let mut cands: Vec<(u8, usize, i64, &Explain)> = Vec::new();
        let kind = |v: &serde_json::Value| v.as_object().and_then(|o| o.keys().next().cloned());
        for (created, e) in all {
            // A `COPY --link` is two vertices with one instruction: compare a copy with copies.
            if e.stage != now.stage || kind(&e.op) != kind(&now.op) {
                continue;
            }
            let rank = if e.instruction == now.instruction {
                2
            } else if e.line == now.line && now.line != 0 {
                1
            } else {
                continue;
            };
            cands.push((rank, crate::record::distance(now, e), *created, e));
        }
        cands.sort_by(|a, b| (b.0, a.1, b.2).cmp(&(a.0, b.1, a.2)));
        let first = cands.first()?;
        let top: Vec<_> = cands
            .iter()
            .take_while(|c| (c.0, c.1) == (first.0, first.1))
            .take(16)
            .collect();
        if top.len() == 1 || now.content.is_empty() {
            return Some(first.3.clone());
        }
        // Same distance: the record whose files differ least (reads the per-file listings).
        top.iter()
            .min_by_key(|c| {
                (
                    explain_all(now, Some(c.3), files).len(),
                    std::cmp::Reverse(c.2),
                )
            })
            .map(|c| c.3.clone())
    }

    /// Every difference between `node`'s inputs and the closest earlier record (`--explain`).
    pub(crate) fn explain_full(&self, node: &Node) -> Vec<String> {
        if let Some(why) = &node.rebuilt_by {
            return vec![why.clone()];
        }
        let store = self.store.clone();
        let files = move |d: &Digest| -> Option<Vec<(String, String)>> {
            let bytes = store.read_blob(d, 256 << 20).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let earlier = self.closest_record(&node.explain, &files);
        explain_all(&node.explain, earlier.as_ref(), &files)
    }

    pub(crate) fn explain(&self, node: &Node, ignore_cache: bool) -> String {
        if let Some(why) = &node.rebuilt_by {
            return why.clone();
        }
        if ignore_cache {
            return "cache disabled for this step (--no-cache)".to_string();
        }
        let store = self.store.clone();
        let files = move |d: &Digest| -> Option<Vec<(String, String)>> {
            let bytes = store.read_blob(d, 256 << 20).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let earlier = self.closest_record(&node.explain, &files);
        explain_miss(&node.explain, earlier.as_ref(), &files)
    }

    async fn context_checksums(
        &self,
        def: &Arc<BuildDefinition>,
        order: &[VertexId],
        numbers: &AtomicU32,
        _ctx: &AtomicU32,
    ) -> Result<ContextChecksums, SolveError> {
        let mut jobs = Vec::new();
        for &id in order {
            let v = def.graph.vertex(id);
            let inputs = def.graph.inputs(id);
            // Every read of a local context: (content index, input, sources, excludes, parents).
            let reads: Vec<ContextRead> = match &v.op {
                Op::File(f) => f
                    .actions
                    .iter()
                    .enumerate()
                    .filter_map(|(ai, a)| match a {
                        FileAction::Copy {
                            input,
                            sources,
                            exclude,
                            parents,
                            ..
                        } => Some((ai, *input, sources.clone(), exclude.clone(), *parents)),
                        _ => None,
                    })
                    .collect(),
                // `RUN --mount=type=bind` of a context path: the files it sees feed the key.
                Op::Exec(e) => e
                    .mounts
                    .iter()
                    .enumerate()
                    .filter_map(|(mi, m)| match &m.kind {
                        rbuild_ops::MountKind::Bind { input, source, .. } => Some((
                            BIND_CONTENT_BASE + mi,
                            *input,
                            vec![source.clone()],
                            vec![],
                            false,
                        )),
                        _ => None,
                    })
                    .collect(),
                Op::Source(_) | Op::Merge(_) => continue,
            };
            for (ai, input, sources, exclude, parents) in reads {
                let Some(src) = inputs.get(input) else {
                    continue;
                };
                let Op::Source(Source::Context { name, excludes }) = &def.graph.vertex(*src).op
                else {
                    continue;
                };
                let Some(dir) = self.opts.contexts.get(name).cloned() else {
                    return Err(SolveError::Step {
                        instruction: v.meta.instruction.clone(),
                        span: v.meta.span.clone(),
                        message: format!("build context {name:?} was not provided"),
                    });
                };
                jobs.push((
                    id,
                    ai,
                    dir,
                    sources,
                    excludes.clone(),
                    exclude,
                    parents,
                    v.meta.instruction.clone(),
                    v.meta.span.clone(),
                ));
            }
        }
        if jobs.is_empty() {
            return Ok((HashMap::new(), Vec::new()));
        }
        let vref = VertexRef {
            number: numbers.fetch_add(1, Ordering::SeqCst),
            digest: String::new(),
            name: "[internal] load build context".to_string(),
        };
        let started = Instant::now();
        self.events.send(Event::Started {
            vertex: vref.clone(),
        });
        let mut handles = Vec::new();
        for (id, ai, dir, sources, excludes, exclude, parents, instr, span) in jobs {
            let store = self.store.clone();
            handles.push(tokio::task::spawn_blocking(move || {
                exec::checksum_selection(&store, &dir, &sources, &excludes, &exclude, parents)
                    .map(|(ci, fingerprint)| {
                        let stamp = fingerprint.map(|fingerprint| StampedSelection {
                            dir,
                            sources,
                            ignore: excludes,
                            exclude,
                            parents,
                            fingerprint: fingerprint.to_string(),
                        });
                        (id, ai, ci, stamp)
                    })
                    .map_err(|message| SolveError::Step {
                        instruction: instr,
                        span,
                        message,
                    })
            }));
        }
        let mut out: HashMap<VertexId, BTreeMap<usize, ContentInfo>> = HashMap::new();
        let mut stamps = Vec::new();
        let mut first_err = None;
        for h in handles {
            match h.await {
                Ok(Ok((id, ai, ci, stamp))) => {
                    out.entry(id).or_default().insert(ai, ci);
                    stamps.push(stamp);
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(SolveError::Internal(format!(
                        "context checksum task failed: {e}"
                    )));
                }
            }
        }
        if let Some(e) = first_err {
            self.events.send(Event::Failed {
                vertex: vref,
                duration: started.elapsed(),
                error: e.to_string(),
            });
            return Err(e);
        }
        self.events.send(Event::Done {
            vertex: vref,
            duration: started.elapsed(),
        });
        Ok((out, stamps))
    }

    /// Write the image config and manifest for the target.
    fn assemble(
        &self,
        run: &Run,
        target: &Realized,
    ) -> Result<(Digest, Digest, ImageConfig), SolveError> {
        let def = &run.def;
        let mut config = def.target.config.clone();
        // History times: a layer step keeps the time its layer was made (cached steps keep theirs,
        // so a fully cached rebuild gives the same image id); a metadata step takes the time of the
        // step before it. SOURCE_DATE_EPOCH clamps everything.
        let step_time = |v: Option<VertexId>| -> Option<i64> {
            let n = run.nodes.get(&v?)?;
            n.result()
                .and_then(|r| r.created)
                .or_else(|| n.record.as_ref().map(|r| r.created))
        };
        let layer_times: Vec<i64> = def
            .target
            .history
            .iter()
            .filter_map(|h| step_time(h.vertex))
            .collect();
        let mut last = layer_times.first().copied().unwrap_or(0);
        let clamp = |t: i64| self.opts.source_date_epoch.unwrap_or(t);
        // Base layers are those of the chain below the first history step's vertex.
        let base_len = config.rootfs.diff_ids.len();
        let mut descriptors: Vec<rbuild_oci::Descriptor> = target
            .chain
            .iter()
            .take(base_len)
            .map(layer_descriptor)
            .collect();
        if target.chain.len() < base_len {
            return Err(SolveError::Internal(format!(
                "target has {} layers but its base image declares {}",
                target.chain.len(),
                base_len
            )));
        }
        for step in &def.target.history {
            if let Some(t) = step_time(step.vertex) {
                last = t;
            }
            let mut h = History {
                created: Some(exec::rfc3339(clamp(last))),
                created_by: Some(step.created_by.clone()),
                comment: step.comment.clone(),
                ..Default::default()
            };
            let layer = step.vertex.and_then(|v| run.nodes.get(&v)).and_then(|n| {
                n.result()
                    .and_then(|r| r.layer.clone())
                    .or_else(|| n.record.as_ref().and_then(|r| r.layer.clone()))
            });
            match layer {
                Some(l) => {
                    config.rootfs.diff_ids.push(l.diff_id.clone());
                    descriptors.push(layer_descriptor(&l));
                }
                None => h.empty_layer = true,
            }
            config.history.push(h);
        }
        let created = match (self.opts.source_date_epoch, def.target.history.is_empty()) {
            (Some(e), _) => exec::rfc3339(e),
            (None, false) => exec::rfc3339(last),
            (None, true) => config.created.clone().unwrap_or_else(|| exec::rfc3339(0)),
        };
        // The chain of the target must be exactly base + the layers the history names.
        let chain_ids: Vec<&Digest> = target.chain.iter().map(|l| &l.diff_id).collect();
        let cfg_ids: Vec<&Digest> = config.rootfs.diff_ids.iter().collect();
        if chain_ids != cfg_ids {
            return Err(SolveError::Internal(format!(
                "layer chain of the target ({} layers) does not match its history ({} layers)",
                chain_ids.len(),
                cfg_ids.len()
            )));
        }
        config.created = Some(created);
        let (manifest, config_digest) =
            rbuild_image::write_image(&self.store, &config, &descriptors)
                .map_err(|e| SolveError::Internal(format!("writing the image: {e}")))?;
        Ok((manifest, config_digest, config))
    }
}

/// The result of every executed or cached step of `run`, for cache export; steps of the target's
/// own history are marked `in_image`.
fn export_records(run: &Run) -> Vec<crate::remote::ExportRecord> {
    let in_image: std::collections::HashSet<VertexId> = run
        .def
        .target
        .history
        .iter()
        .filter_map(|h| h.vertex)
        .collect();
    let mut out = Vec::new();
    for (id, node) in &run.nodes {
        if !matches!(
            run.def.graph.vertex(*id).op,
            Op::Exec(_) | Op::File(_) | Op::Merge(_)
        ) {
            continue;
        }
        let mut explain = node.explain.clone();
        // Per-file listings are blobs of this store only.
        for c in explain.content.values_mut() {
            c.files = None;
        }
        let record = match (node.result(), &node.record) {
            (Some(r), _) => CacheRecord::new(
                r.snapshot
                    .clone()
                    .unwrap_or_else(|| crate::remote::step_snapshot_name(&node.key)),
                r.layer.clone(),
                r.chain.clone(),
                r.created.unwrap_or_else(exec::now_unix),
                explain,
            ),
            (None, Some(rec)) => CacheRecord::new(
                rec.snapshot.clone(),
                rec.layer.clone(),
                rec.chain.clone(),
                rec.created,
                explain,
            ),
            (None, None) => continue,
        };
        out.push(crate::remote::ExportRecord {
            key: node.key.clone(),
            record,
            in_image: in_image.contains(id),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

pub(crate) fn layer_descriptor(l: &LayerInfo) -> rbuild_oci::Descriptor {
    rbuild_oci::Descriptor::new(l.media_type.clone(), l.blob.clone(), l.size)
}

/// Vertices reachable from `root`, inputs before their consumers.
fn reachable_topo(def: &BuildDefinition, root: VertexId) -> Vec<VertexId> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Iterative post-order DFS.
    let mut stack = vec![(root, false)];
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            out.push(id);
            continue;
        }
        if !seen.insert(id) {
            continue;
        }
        stack.push((id, true));
        for i in def.graph.inputs(id).into_iter().rev() {
            if !seen.contains(&i) {
                stack.push((i, false));
            }
        }
    }
    out
}

impl Run {
    pub(crate) fn vref(&self, node: &Node) -> VertexRef {
        let mut n = node.number.load(Ordering::SeqCst);
        if n == 0 {
            let fresh = self.next_number.fetch_add(1, Ordering::SeqCst);
            n = match node
                .number
                .compare_exchange(0, fresh, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => fresh,
                Err(existing) => existing,
            };
        }
        VertexRef {
            number: n,
            digest: node.key.to_string(),
            name: self.def.graph.vertex(node.id).meta.name.clone(),
        }
    }

    pub(crate) fn cancel_all(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        for c in self.cancels.lock().unwrap().iter() {
            c.cancel();
        }
    }

    pub(crate) fn check_cancelled(&self) -> Result<(), SolveError> {
        if self.cancelled.load(Ordering::SeqCst) {
            Err(SolveError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The layers of `id`'s filesystem, without materializing it when a cache record has them.
    pub(crate) fn layers(
        self: Arc<Self>,
        id: VertexId,
    ) -> BoxFuture<'static, Result<Arc<Realized>, SolveError>> {
        async move {
            let node = self.nodes[&id].clone();
            if let Some(rec) = &node.record {
                self.report_cached(&node);
                return Ok(Arc::new(Realized {
                    snapshot: None,
                    chain: rec.chain.clone(),
                    layer: rec.layer.clone(),
                    context: None,
                    created: Some(rec.created),
                }));
            }
            // A merge (`COPY --link`) whose filesystem nothing reads: its layers are its base's
            // plus its copy's; a base image is not even unpacked for it.
            if let (Op::Merge(_), None, &[b, d]) = (
                &self.def.graph.vertex(id).op,
                node.realized.get(),
                &node.inputs[..],
            ) {
                let base = async {
                    match &self.def.graph.vertex(b).op {
                        Op::Source(Source::Image {
                            reference,
                            manifest,
                        }) => {
                            let (run, n) = (self.clone(), self.nodes[&b].clone());
                            let (r, m) = (reference.clone(), manifest.clone());
                            tokio::task::spawn_blocking(move || {
                                exec::image_layers(&run, &n, &r, &m)
                            })
                            .await
                            .map_err(|e| SolveError::Internal(format!("image task failed: {e}")))?
                            .map(Arc::new)
                        }
                        _ => self.clone().layers(b).await,
                    }
                };
                let (base, diff) = futures::future::try_join(base, self.clone().layers(d)).await?;
                let r = Arc::new(exec::merge_layers(&self, &node, &base, &diff)?);
                let _ = node.layer_only.set(r.clone());
                return Ok(r);
            }
            // A COPY whose filesystem nothing reads: stream its layer instead of writing files.
            // (Not through `node.realized`: that holds materialized snapshots only.)
            if node.realized.get().is_none() && crate::stream_copy::eligible(&self, id) {
                let r = Arc::new(exec::run_missed(self, id, true).await?);
                // Streamed: layers only. Declined (materialized instead): an ordinary result.
                if r.snapshot.is_none() {
                    let _ = node.layer_only.set(r.clone());
                } else {
                    let _ = node.realized.set(r.clone());
                }
                return Ok(r);
            }
            self.materialize(id).await
        }
        .boxed()
    }

    pub(crate) fn report_cached(&self, node: &Node) {
        // A merge (`COPY --link`) is not a step of its own: its copy is the step shown.
        if matches!(self.def.graph.vertex(node.id).op, Op::Merge(_)) {
            return;
        }
        if !node.reported_cached.swap(true, Ordering::SeqCst) {
            self.cached_count.fetch_add(1, Ordering::SeqCst);
            self.solver.events.send(Event::Cached {
                vertex: self.vref(node),
            });
        }
    }

    /// Make `id`'s filesystem exist as a committed snapshot (executing it if needed). Runs once per
    /// vertex per build, whoever asks first; the others wait for that result.
    pub(crate) fn materialize(
        self: Arc<Self>,
        id: VertexId,
    ) -> BoxFuture<'static, Result<Arc<Realized>, SolveError>> {
        async move {
            let node = self.nodes[&id].clone();
            let this = self.clone();
            node.realized
                .get_or_try_init(|| async move { exec::realize(this, id).await.map(Arc::new) })
                .await
                .cloned()
        }
        .boxed()
    }

    /// Materialize all inputs of `id` concurrently.
    pub(crate) async fn inputs(
        self: &Arc<Self>,
        id: VertexId,
    ) -> Result<Vec<Arc<Realized>>, SolveError> {
        let node = self.nodes[&id].clone();
        let futs = node
            .inputs
            .iter()
            .map(|i| self.clone().materialize(*i))
            .collect::<Vec<_>>();
        let res = futures::future::join_all(futs).await;
        let mut out = Vec::new();
        let mut err = None;
        for r in res {
            match r {
                Ok(r) => out.push(r),
                Err(SolveError::Cancelled) => {
                    err.get_or_insert(SolveError::Cancelled);
                }
                Err(e) => {
                    // A real failure beats "cancelled".
                    if matches!(err, None | Some(SolveError::Cancelled)) {
                        err = Some(e);
                    }
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
