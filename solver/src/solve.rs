//! The solve: pass 1 (keys) and 2 (lookup) over the graph, pass 3 handed to [`crate::schedule`],
//! then the image config and manifest, the records for cache export and the no-op stamp.

use crate::events::EventSink;
use crate::key::vertex_key;
use crate::record::{CacheRecord, Explain, LayerInfo};
use crate::seam::Sandbox;
use crate::state::{BaseImages, Node, Parts, Realized, Run, SolveOptions, Solver};
use crate::time::{now_unix, rfc3339};
use crate::SolveError;
use rbuild_oci::{Digest, History, ImageConfig};
use rbuild_ops::{BuildDefinition, Op, Source, VertexId};
use rbuild_snapshotter::Snapshotter;
use rbuild_store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, Semaphore};

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

impl Solver {
    pub fn new(
        store: Arc<Store>,
        snapshotter: Arc<Snapshotter>,
        images: Arc<dyn BaseImages>,
        events: EventSink,
        opts: SolveOptions,
    ) -> Self {
        Self::with_parts(
            Parts {
                store,
                snapshots: snapshotter,
                executor: Arc::new(Sandbox),
                images,
            },
            events,
            opts,
        )
    }

    /// A solver on any [`crate::Snapshots`] and [`crate::Executor`] (fakes, in tests).
    pub fn with_parts(parts: Parts, events: EventSink, opts: SolveOptions) -> Self {
        Solver {
            store: parts.store,
            snapshotter: parts.snapshots,
            executor: parts.executor,
            images: parts.images,
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
        // Refusals the request and the Dockerfile decide, before anything runs.
        crate::preflight::check(&def, &order, &self.opts, self.executor.as_ref())?;
        let mut nodes: HashMap<VertexId, Arc<Node>> = HashMap::new();
        let ctx_number = AtomicU32::new(0);
        let run_numbers = AtomicU32::new(1);

        // Pass 1: keys (context checksums run on the blocking pool, in parallel per selection).
        let (mut content, stamps) = self
            .context_checksums(&def, &order, &run_numbers, &ctx_number)
            .await?;
        // ADD <url> without --checksum: downloaded now and keyed by its content.
        crate::http::content_keys(&self.store, &def, &order, &mut content).await?;
        // Git sources: each ref resolved to its commit now, and keyed by it.
        crate::git::content_keys(
            self.store.root().to_path_buf(),
            self.opts.ssh.clone(),
            &def,
            &order,
            &mut content,
        )
        .await?;
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
            first_failure: Default::default(),
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
                    all_recorded
                        || crate::image::image_unpacked(&self.store, &*self.snapshotter, manifest)
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
                return Err(run.first_failure.get().cloned().unwrap_or(e));
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
                Op::Source(Source::Http { .. }) | Op::Source(Source::Git { .. }) => return None,
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
                created: Some(rfc3339(clamp(last))),
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
            (Some(e), _) => rfc3339(e),
            (None, false) => rfc3339(last),
            (None, true) => config.created.clone().unwrap_or_else(|| rfc3339(0)),
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
                r.created.unwrap_or_else(now_unix),
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
