//! The solver's shared types: its options, the state of one solve ([`Run`], one [`Node`] per
//! vertex) and what realizing a vertex gives ([`Realized`]). Every other module of the crate builds
//! on these; this one depends on none of them but the data modules (events, records, remote).

use crate::events::{Event, EventSink, VertexRef};
use crate::record::{CacheRecord, Explain, LayerInfo};
use crate::seam::{Executor, Snapshots};
use crate::SolveError;
use rbuild_oci::Digest;
use rbuild_ops::{BuildDefinition, Op, VertexId};
use rbuild_store::Store;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OnceCell, Semaphore};

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

/// What a [`Solver`] drives: the content store, the snapshots, the executor of RUN steps and the
/// source of base images.
pub struct Parts {
    pub store: Arc<Store>,
    pub snapshots: Arc<dyn Snapshots>,
    pub executor: Arc<dyn Executor>,
    pub images: Arc<dyn BaseImages>,
}

/// Builds images: see the crate docs. One `Solver` may run several solves at once.
pub struct Solver {
    pub(crate) store: Arc<Store>,
    pub(crate) snapshotter: Arc<dyn Snapshots>,
    pub(crate) executor: Arc<dyn Executor>,
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
    /// The error of the first step that failed in this solve (not counting cancellations).
    pub first_failure: std::sync::OnceLock<SolveError>,
    pub cached_count: AtomicU32,
}

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

impl Realized {
    /// A source's filesystem (a download, a git checkout): a snapshot that is no layer of the
    /// image by itself.
    pub(crate) fn source(snapshot: String) -> Realized {
        Realized {
            snapshot: Some(snapshot),
            chain: vec![],
            layer: None,
            context: None,
            created: None,
        }
    }

    /// A step's result as its cache record names it (snapshot, layers, time).
    pub(crate) fn recorded(rec: &CacheRecord) -> Realized {
        Realized {
            snapshot: Some(rec.snapshot.clone()),
            chain: rec.chain.clone(),
            layer: rec.layer.clone(),
            context: None,
            created: Some(rec.created),
        }
    }
}

pub(crate) fn step_err(run: &Run, id: VertexId, message: String) -> SolveError {
    let v = run.def.graph.vertex(id);
    SolveError::Step {
        instruction: v.meta.instruction.clone(),
        span: v.meta.span.clone(),
        message,
    }
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
}
