//! File ops (COPY, ADD, and the other file actions) applied onto a mounted rootfs.

use crate::checksum::IgnoreRules;
use crate::guard::Mounted;
use crate::state::{step_err, Node, Realized, Run};
use crate::SolveError;
use rbuild_ops::{FileOp, Op, Source};
use std::path::Path;
use std::sync::Arc;

pub(crate) fn run_file(
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
                let v = Mounted::view(run, r.snapshot.as_deref())
                    .map_err(|e| step_err(run, node.id, e))?;
                let p = v.path().to_path_buf();
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
    let set = |v: &str| rbuild_inputs::var_os(v).is_some();
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
