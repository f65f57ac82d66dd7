//! Executing one step (an Exec or a File op) into a committed snapshot, a layer blob and a cache
//! record; and rebuilding a cached step's snapshot from its layer.

use crate::apply::apply_blob;
use crate::guard::Mounted;
use crate::naming::{step_name, unique};
use crate::record::{CacheRecord, LayerInfo};
use crate::state::{step_err, Node, Realized, Run};
use crate::time::now_unix;
use crate::SolveError;
use rbuild_oci::{Digest, MEDIA_TYPE_OCI_LAYER};
use rbuild_ops::Op;
use rbuild_snapshotter::diff;
use rbuild_store::Store;
use std::sync::Arc;

/// The lock one step's execution holds, shared by every rbuild process on the store: when two
/// builds reach the same step, one writes it and the other waits, then reuses its record. Held
/// until the step is committed; prune may delete unheld step locks (`Store::lock_named`).
pub(crate) fn lock_step(store: &Store, key: &Digest) -> Result<std::fs::File, SolveError> {
    let name = step_name(key);
    store.lock_named(&name).map_err(|e| {
        SolveError::Internal(format!("locking {}: {e}", store.lock_path(&name).display()))
    })
}

/// The snapshot a step executed in this build is committed as: `step-<key>`, unless the step
/// re-runs whatever the cache holds (`--no-cache`, or an input that re-runs) and that name is
/// taken. The snapshot there may hold other files (a RUN need not make the same files twice, and
/// its input's may differ), so the new one gets a name of its own, and its record names it.
pub(crate) fn commit_name(run: &Run, node: &Node) -> String {
    let name = step_name(&node.key);
    if node.rebuilt_by.is_some() && run.solver.snapshotter.exists(&name) {
        unique(&name)
    } else {
        name
    }
}

/// The cache record stored under `key`, if any (and readable).
pub(crate) fn read_record(store: &Store, key: &Digest) -> Option<CacheRecord> {
    let text = store.get_cache_record(key).ok()??;
    serde_json::from_str(&text).ok()
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

/// A cache hit whose snapshot is gone: re-apply its layer on its parent.
pub(crate) fn rematerialize(
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
        apply_blob(
            &run.solver.store,
            &*run.solver.snapshotter,
            &l.blob,
            &l.diff_id,
            parent,
            &rec.snapshot,
        )
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
    Ok(Realized::recorded(rec))
}

/// [`execute`] under a per-cache-key file lock shared by every rbuild process on the store: when
/// two builds reach the same step, one runs it and the other waits, then reuses its record (same
/// layer, same image id, each blob written once).
pub(crate) fn execute_locked(
    run: &Run,
    node: &Node,
    inputs: &[Arc<Realized>],
) -> Result<Realized, SolveError> {
    let file = lock_step(&run.solver.store, &node.key)?;
    if node.rebuilt_by.is_none() {
        let done = read_record(&run.solver.store, &node.key)
            .filter(|r| run.solver.snapshotter.exists(&r.snapshot));
        if let Some(rec) = done {
            // Another process built this step while we waited.
            return Ok(Realized::recorded(&rec));
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
        Mounted::active(run, rootfs.snapshot.as_deref()).map_err(|e| step_err(run, node.id, e))?;
    match &vertex.op {
        Op::Exec(e) => crate::exec::run_exec(run, node, e, active.path(), inputs)?,
        Op::File(f) => crate::file::run_file(run, node, f, active.path(), inputs)?,
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
        .changes(active.key())
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
    let name = commit_name(run, node);
    rbuild_store::crash_point("snapshot-commit");
    snaps
        .commit(&name, active.key())
        .map_err(|e| SolveError::Internal(format!("committing snapshot: {e}")))?;
    active.committed();
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
