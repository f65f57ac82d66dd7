//! Merges (`COPY --link`): a base's filesystem plus a copy's layer, committed or known by
//! layers only.

use crate::naming::step_name;
use crate::record::CacheRecord;
use crate::state::{Node, Realized, Run};
use crate::step::{commit_name, lock_step, read_record, rematerialize};
use crate::time::now_unix;
use crate::SolveError;

/// Commit `step-<key>` as `base` plus `diff`'s layer, under the step lock (see [`execute_locked`]).
pub(crate) fn merge_locked(
    run: &Run,
    node: &Node,
    base: &Realized,
    diff: &Realized,
) -> Result<Realized, SolveError> {
    let store = &run.solver.store;
    let file = lock_step(store, &node.key)?;
    let name = commit_name(run, node);
    let exists = |n: &str| run.solver.snapshotter.exists(n);
    let mut chain = base.chain.clone();
    chain.extend(diff.layer.clone());
    let rec = match read_record(store, &node.key).filter(|r| r.chain == chain) {
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
            // holds exactly this content: the key fixes both the base and the layer (a re-run
            // merge has a name of its own, see `commit_name`).
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
    Ok(Realized::recorded(&rec))
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
        step_name(&node.key),
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
