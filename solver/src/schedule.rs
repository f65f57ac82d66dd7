//! Pass 3, realizing: which vertex runs when. [`Run::layers`] asks only for a vertex's layers,
//! [`Run::materialize`] for its filesystem (once per vertex per build, whoever asks first);
//! [`realize`] dispatches on the op to the module that does the work. Inputs are realized
//! concurrently, executions are bounded by the `jobs` semaphore, and the first failure cancels
//! the rest.

use crate::events::Event;
use crate::state::{step_err, Node, Realized, Run};
use crate::SolveError;
use futures::future::{BoxFuture, FutureExt};
use rbuild_ops::{Op, Source, VertexId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl Run {
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
                                crate::image::image_layers(&run, &n, &r, &m)
                            })
                            .await
                            .map_err(|e| SolveError::Internal(format!("image task failed: {e}")))?
                            .map(Arc::new)
                        }
                        _ => self.clone().layers(b).await,
                    }
                };
                let (base, diff) = join2(base, self.clone().layers(d)).await?;
                let r = Arc::new(crate::merge::merge_layers(&self, &node, &base, &diff)?);
                let _ = node.layer_only.set(r.clone());
                return Ok(r);
            }
            // A COPY whose filesystem nothing reads: stream its layer instead of writing files.
            // (Not through `node.realized`: that holds materialized snapshots only.)
            if node.realized.get().is_none() && crate::stream_copy::eligible(&self, id) {
                let r = Arc::new(run_missed(self, id, true).await?);
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
                .get_or_try_init(|| async move { realize(this, id).await.map(Arc::new) })
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
        let mut out = Vec::new();
        let mut err = None;
        for r in futures::future::join_all(futs).await {
            match r {
                Ok(r) => out.push(r),
                Err(e) => err = Some(worse(err, e)),
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Of two failures, the one to report: a real failure beats "cancelled".
fn worse(a: Option<SolveError>, b: SolveError) -> SolveError {
    match a {
        Some(a) if !matches!(a, SolveError::Cancelled) => a,
        _ => b,
    }
}

/// Both results, waiting for both even when one fails (so nothing started is left running when
/// the failure reaches `solve`); a real failure beats "cancelled".
async fn join2<A, B>(
    a: impl std::future::Future<Output = Result<A, SolveError>>,
    b: impl std::future::Future<Output = Result<B, SolveError>>,
) -> Result<(A, B), SolveError> {
    match futures::future::join(a, b).await {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(worse(Some(a), b)),
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
            tokio::task::spawn_blocking(move || {
                crate::image::unpack_into(&r2, &node, &reference, &manifest)
            })
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
        Op::Source(Source::Git {
            remote,
            subdir,
            keep_git_dir,
            ..
        }) => {
            let (remote, subdir, keep) = (remote.clone(), subdir.clone(), *keep_git_dir);
            let r2 = run.clone();
            let n2 = node.clone();
            tokio::task::spawn_blocking(move || {
                crate::git::realize(&r2, &n2, &remote, subdir.as_deref(), keep)
                    .map_err(|e| step_err(&r2, n2.id, e))
            })
            .await
            .map_err(|e| SolveError::Internal(format!("git task failed: {e}")))?
        }
        Op::Merge(_) => realize_merge(run, node).await,
        Op::Exec(_) | Op::File(_) => {
            if let Some(rec) = node.record.clone() {
                // Cached: the snapshot may still be there; else rebuild it from the layer blob.
                if run.solver.snapshotter.exists(&rec.snapshot) {
                    run.report_cached(&node);
                    return Ok(Realized::recorded(&rec));
                }
                let inputs = run.inputs(id).await?;
                run.report_cached(&node);
                let r2 = run.clone();
                let parent = inputs[0].clone();
                let key = node.key.clone();
                return tokio::task::spawn_blocking(move || {
                    crate::step::rematerialize(&r2, &key, &rec, parent.snapshot.as_deref())
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
        crate::step::execute_locked(&r2, &n2, &inputs)
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
            // The first step to fail is the build's failure, whatever its siblings report.
            let _ = run.first_failure.set(e.clone());
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
        if run.solver.snapshotter.exists(&rec.snapshot) {
            return Ok(Realized::recorded(rec));
        }
    }
    let (base, diff) = join2(
        run.clone().materialize(base_id),
        run.clone().layers(diff_id),
    )
    .await?;
    run.check_cancelled()?;
    let r2 = run.clone();
    tokio::task::spawn_blocking(move || crate::merge::merge_locked(&r2, &node, &base, &diff))
        .await
        .map_err(|e| SolveError::Internal(format!("merge task failed: {e}")))?
}
