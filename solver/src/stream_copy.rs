//! Streamed COPY layers. Writing files is the expensive act of a big COPY (on the 20,000-file,
//! 419 MB bench context, `cp -a` takes about 6 s, nearly all kernel time, while read + tar + sha256
//! takes about 1.4 s), so a COPY out of the build context whose filesystem no later step reads (the
//! solver only needs its layer for the image) is never written out as files. Its layer tar is
//! produced straight from the context selection: one pass that reads each file, tars it with its
//! destination path and metadata, and hashes the stream (diff_id) into a store ingest. The cache
//! record names a snapshot that does not exist yet: when a later build needs the filesystem (a RUN
//! on top, a rootfs export), `rematerialize` applies the layer blob onto the parent and commits the
//! snapshot under that name.
//!
//! The result must be the layer the materializing path would write (same entries, modes, owners,
//! contents, links; only the mtimes of directories the copy creates or walks through may differ,
//! as they do between two materialized runs). So the semantics handled here are the simple ones,
//! and anything else falls back to the normal path: `--chown` by name (needs the rootfs's
//! /etc/passwd), `--parents`, ADD's archive extraction, sources that are not the build context,
//! special files, a destination path through a symlink or onto an existing non-directory, a copied
//! directory over an existing non-directory (or a file over a directory), and paths copied twice.
//!
//! Parent directories that exist below carry the parent filesystem's metadata, read from the
//! parent snapshot's layer dirs the way `diff::trim_unchanged_dirs` reads them (nearest layer
//! first, whiteouts and opaque directories honoured); directories the copy creates are `0755`,
//! owned by the `--chown` owner or 0:0.

use crate::checksum::IgnoreRules;
use crate::record::{CacheRecord, LayerInfo};
use crate::state::{Node, Realized, Run};
use crate::time::now_unix;
use crate::SolveError;
use rbuild_fileop::{EntryKind, Follow, ModeSpec, SelEntry, Selection};
use rbuild_oci::MEDIA_TYPE_OCI_LAYER;
use rbuild_ops::{Chown, FileAction, Op, Source, VertexId};
use rbuild_snapshotter::diff::{lower_entry, EntryMeta, LayerTarWriter, LowerEntry};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set to disable streaming (every COPY is materialized): for benchmarks and comparisons.
pub(crate) const DISABLE_ENV: &str = "RBUILD_NO_STREAM_COPY";

/// Whether vertex `id` is a COPY whose layer may be streamed, by its definition alone. The
/// filesystem-dependent checks happen in [`execute`], which can still decline.
pub(crate) fn eligible(run: &Run, id: VertexId) -> bool {
    if rbuild_inputs::var_os(DISABLE_ENV).is_some() {
        return false;
    }
    let v = run.def.graph.vertex(id);
    let Op::File(f) = &v.op else {
        return false;
    };
    let [FileAction::Copy {
        input,
        chown,
        chmod,
        unpack,
        parents,
        ..
    }] = f.actions.as_slice()
    else {
        return false;
    };
    if *unpack || *parents || *input == 0 {
        return false;
    }
    if chown.as_ref().is_some_and(|c| numeric_owner(c).is_none()) {
        return false;
    }
    if chmod.as_ref().is_some_and(|m| ModeSpec::parse(m).is_err()) {
        return false;
    }
    let inputs = run.def.graph.inputs(id);
    matches!(
        inputs.get(*input).map(|i| &run.def.graph.vertex(*i).op),
        Some(Op::Source(Source::Context { .. }))
    )
}

/// `--chown` when it needs no user database: numeric ids (or empty).
fn numeric_owner(c: &Chown) -> Option<(u32, u32)> {
    let (uid, mut gid) = if c.user.is_empty() {
        (0, 0)
    } else {
        let id: u32 = c.user.parse().ok()?;
        (id, id)
    };
    if let Some(g) = c.group.as_deref().filter(|g| !g.is_empty()) {
        gid = g.parse().ok()?;
    }
    Some((uid, gid))
}

/// Stream the layer of COPY vertex `node` (inputs realized: `[rootfs, …, context, …]`) into the
/// store and record it. `Ok(None)`: the copy is not simple enough; use the materializing path.
pub(crate) fn execute(
    run: &Run,
    node: &Node,
    inputs: &[Arc<Realized>],
) -> Result<Option<Realized>, SolveError> {
    let vertex = run.def.graph.vertex(node.id);
    let Op::File(f) = &vertex.op else {
        return Ok(None);
    };
    let [action @ FileAction::Copy {
        input,
        dest,
        chown,
        chmod,
        ..
    }] = f.actions.as_slice()
    else {
        return Ok(None);
    };
    let Some(parent) = inputs.first() else {
        return Ok(None);
    };
    let Some(ctx_dir) = inputs.get(*input).and_then(|r| r.context.clone()) else {
        return Ok(None);
    };
    let src_vertex = run.def.graph.inputs(node.id)[*input];
    let Op::Source(Source::Context { excludes, .. }) = &run.def.graph.vertex(src_vertex).op else {
        return Ok(None);
    };
    let owner = match chown {
        Some(c) => match numeric_owner(c) {
            Some(o) => Some(o),
            None => return Ok(None),
        },
        None => None,
    };
    let mode = match chmod.as_ref().map(ModeSpec::parse).transpose() {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    let snaps = &run.solver.snapshotter;
    let lowers = match parent.snapshot.as_deref() {
        Some(s) => snaps
            .layer_chain(s)
            .map_err(|e| SolveError::Internal(e.to_string()))?,
        None if parent.chain.is_empty() => Vec::new(),
        None => return Ok(None),
    };
    let Ok(root) = rbuild_fileop::Root::open(&ctx_dir) else {
        return Ok(None);
    };
    let Ok(matcher) = rbuild_ignore::Matcher::from_patterns(excludes) else {
        return Ok(None);
    };
    let rules = IgnoreRules(matcher);
    let src = rbuild_fileop::CopySource {
        root: &root,
        ignore: &rules,
        keep_owner: false,
    };
    // A selection error (missing source, …) is reported by the materializing path, word for word.
    let sel = match rbuild_fileop::select_for_copy(action, &src) {
        Ok(Some(s)) if !s.is_empty() => s,
        _ => return Ok(None),
    };
    let now = now_unix();
    let planner = Planner {
        lowers: &lowers,
        owner,
        mode: mode.as_ref(),
        now,
        outs: Vec::new(),
        index: HashMap::new(),
        new_dirs: HashSet::new(),
    };
    let outs = match planner
        .plan(&sel, dest)
        .map_err(|e| SolveError::Internal(format!("reading the parent filesystem: {e}")))?
    {
        Some(o) => o,
        None => return Ok(None),
    };

    // One process writes a step at a time (as `execute_locked` does): a concurrent build that
    // finished it meanwhile left a record to reuse.
    let store = &run.solver.store;
    let lock = crate::step::lock_step(store, &node.key)?;
    if node.rebuilt_by.is_none() {
        let done = crate::step::read_record(store, &node.key)
            .filter(|r| r.chain.iter().all(|l| store.has_blob(&l.blob)));
        if let Some(rec) = done {
            return Ok(Some(Realized {
                snapshot: None,
                chain: rec.chain.clone(),
                layer: rec.layer.clone(),
                context: None,
                created: Some(rec.created),
            }));
        }
    }

    let mut ingest = store
        .ingest()
        .map_err(|e| SolveError::Internal(format!("writing layer: {e}")))?;
    let stats = write_members(run, &root, &ctx_dir, &outs, &mut ingest)?;
    let (blob, size) = ingest
        .commit(Some((&stats.diff_id, stats.size)))
        .map_err(|e| SolveError::Internal(format!("storing layer: {e}")))?;
    let layer = LayerInfo {
        diff_id: stats.diff_id,
        blob,
        media_type: MEDIA_TYPE_OCI_LAYER.to_string(),
        size,
    };
    let mut chain = parent.chain.clone();
    chain.push(layer.clone());
    // The snapshot is named but not created: `rematerialize` makes it from the layer when needed.
    let rec = CacheRecord::new(
        crate::naming::step_name(&node.key),
        Some(layer.clone()),
        chain.clone(),
        now,
        node.explain.clone(),
    );
    crate::step::put_record(store, &node.key, &rec)?;
    drop(lock);
    Ok(Some(Realized {
        snapshot: None,
        chain,
        layer: Some(layer),
        context: None,
        created: Some(now),
    }))
}

/// Threads reading the context's files ahead of the tar writer: a cold page cache is read with
/// several requests in flight instead of one file at a time.
const PREFETCH_THREADS: usize = 4;

/// Write `outs` as a layer tar to `out`, reading file contents from `root`.
fn write_members(
    run: &Run,
    root: &rbuild_fileop::Root,
    ctx_dir: &std::path::Path,
    outs: &[Out],
    out: &mut rbuild_store::BlobWriter,
) -> Result<rbuild_snapshotter::diff::LayerStats, SolveError> {
    let files: Vec<&str> = outs
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::File { src, .. } => Some(src.as_str()),
            _ => None,
        })
        .collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        for t in 0..PREFETCH_THREADS {
            let (files, stop) = (&files, &stop);
            sc.spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                for f in files.iter().skip(t).step_by(PREFETCH_THREADS) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Only warms the page cache: errors are the writer's to report.
                    if let Ok(mut fh) = root.open_file(f, Follow::Never) {
                        while matches!(fh.read(&mut buf), Ok(n) if n > 0) {}
                    }
                }
            });
        }
        let res = (|| {
            let mut w = LayerTarWriter::new(&mut *out, run.solver.opts.source_date_epoch);
            let werr = |path: &str, e: io::Error| {
                SolveError::Internal(format!("writing layer ({path}): {e}"))
            };
            for (i, o) in outs.iter().enumerate() {
                if i % 256 == 0 {
                    run.check_cancelled()?;
                }
                match &o.kind {
                    Kind::Dir => w.dir(&o.path, &o.meta).map_err(|e| werr(&o.path, e))?,
                    Kind::File { src, .. } => {
                        let file = root.open_file(src, Follow::Never).map_err(|e| {
                            SolveError::Internal(format!(
                                "reading {}: {e}",
                                ctx_dir.join(src).display()
                            ))
                        })?;
                        w.file(
                            &o.path,
                            &o.meta,
                            o.size,
                            std::io::BufReader::with_capacity(1 << 17, file),
                        )
                        .map_err(|e| werr(&o.path, e))?;
                    }
                    Kind::Link(first) => w
                        .hardlink(&o.path, &o.meta, first)
                        .map_err(|e| werr(&o.path, e))?,
                    Kind::Symlink(target) => w
                        .symlink(&o.path, &o.meta, target.as_bytes())
                        .map_err(|e| werr(&o.path, e))?,
                }
            }
            w.finish()
                .map(|(stats, _)| stats)
                .map_err(|e| werr("end", e))
        })();
        stop.store(true, Ordering::Relaxed);
        res
    })
}

enum Kind {
    Dir,
    File {
        src: String,
        /// (dev, inode) of a source file with several links.
        link_key: Option<(u64, u64)>,
    },
    /// A hard link to the member named (an earlier file of this layer).
    Link(String),
    Symlink(String),
}

struct Out {
    path: String,
    kind: Kind,
    meta: EntryMeta,
    size: u64,
}

/// What the parent filesystem has at a path.
enum Lower {
    Absent,
    Dir(EntryMeta),
    /// A symlink here or at an ancestor: the copy's target would be resolved through it.
    Symlink,
    Other,
}

struct Planner<'a> {
    lowers: &'a [PathBuf],
    owner: Option<(u32, u32)>,
    mode: Option<&'a ModeSpec>,
    now: i64,
    outs: Vec<Out>,
    /// path → index in `outs`.
    index: HashMap<String, usize>,
    /// Directories this copy creates (nothing below them exists in the parent).
    new_dirs: HashSet<String>,
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map(|(a, _)| a).unwrap_or("")
}

impl Planner<'_> {
    /// The sorted entries of the layer, or `None` when the copy is not simple.
    fn plan(mut self, sel: &Selection, dest_path: &str) -> io::Result<Option<Vec<Out>>> {
        let dest_clean = rbuild_fileop::root::clean(dest_path);
        let trailing = dest_path.is_empty()
            || dest_path.ends_with('/')
            || dest_path.ends_with("/.")
            || dest_path == "."
            || dest_clean.is_empty();
        let dest_is_dir = trailing || sel.several;
        for item in &sel.items {
            let Some(top) = item.entries.first() else {
                continue;
            };
            if top.kind == EntryKind::Dir {
                if !self.ensure_dirs(&dest_clean)? {
                    return Ok(None);
                }
                for e in &item.entries[1..] {
                    let p = join(&dest_clean, &e.rel);
                    let ok = if e.kind == EntryKind::Dir {
                        self.dir_entry(&p, e)?
                    } else {
                        self.leaf(&p, &join(&item.path, &e.rel), e)?
                    };
                    if !ok {
                        return Ok(None);
                    }
                }
            } else {
                let target = if dest_is_dir {
                    if !self.ensure_dirs(&dest_clean)? {
                        return Ok(None);
                    }
                    join(&dest_clean, &item.name)
                } else {
                    match self.lookup(&dest_clean)? {
                        Lower::Dir(_) => join(&dest_clean, &item.name),
                        Lower::Absent => dest_clean.clone(),
                        Lower::Symlink | Lower::Other => return Ok(None),
                    }
                };
                if !self.ensure_dirs(parent_of(&target))? || !self.leaf(&target, &item.path, top)? {
                    return Ok(None);
                }
            }
        }
        let mut outs = self.outs;
        // The order `write_layer` walks a directory tree in: component by component, by bytes.
        outs.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
        // Hard links: the first copy (in layer order) is the file, the others link to it.
        let mut firsts: HashMap<(u64, u64), String> = HashMap::new();
        for o in outs.iter_mut() {
            if let Kind::File {
                link_key: Some(k), ..
            } = &o.kind
            {
                match firsts.get(k) {
                    Some(first) => {
                        o.kind = Kind::Link(first.clone());
                        o.size = 0;
                    }
                    None => {
                        firsts.insert(*k, o.path.clone());
                    }
                }
            }
        }
        Ok(Some(outs))
    }

    fn push(&mut self, out: Out) {
        self.index.insert(out.path.clone(), self.outs.len());
        self.outs.push(out);
    }

    fn below_new_dir(&self, p: &str) -> bool {
        let par = parent_of(p);
        !par.is_empty() && self.new_dirs.contains(par)
    }

    /// `path` and its parents as directories (existing ones with their metadata from below,
    /// missing ones created). False: a component is not a directory (or is a symlink).
    fn ensure_dirs(&mut self, path: &str) -> io::Result<bool> {
        if path.is_empty() {
            return Ok(true);
        }
        let mut cur = String::new();
        for c in path.split('/') {
            cur = join(&cur, c);
            if let Some(&i) = self.index.get(&cur) {
                if !matches!(self.outs[i].kind, Kind::Dir) {
                    return Ok(false);
                }
                continue;
            }
            let lower = if self.below_new_dir(&cur) {
                Lower::Absent
            } else {
                self.lookup(&cur)?
            };
            let meta = match lower {
                Lower::Dir(m) => m,
                Lower::Absent => {
                    self.new_dirs.insert(cur.clone());
                    let (uid, gid) = self.owner.unwrap_or((0, 0));
                    EntryMeta {
                        mode: 0o755,
                        uid,
                        gid,
                        mtime: self.now,
                    }
                }
                Lower::Symlink | Lower::Other => return Ok(false),
            };
            self.push(Out {
                path: cur.clone(),
                kind: Kind::Dir,
                meta,
                size: 0,
            });
        }
        Ok(true)
    }

    fn meta(&self, e: &SelEntry) -> EntryMeta {
        let mode = match (self.mode, e.kind) {
            (_, EntryKind::Symlink) => 0o777,
            (Some(m), k) => m.apply(e.mode, k == EntryKind::Dir),
            (None, _) => e.mode,
        };
        let (uid, gid) = self.owner.unwrap_or((e.uid, e.gid));
        EntryMeta {
            mode: mode & 0o7777,
            uid,
            gid,
            mtime: e.mtime.0,
        }
    }

    /// A directory below a copied directory: an existing one is left as it is (the first copy of
    /// it wins, as `ensure_dir` does), a new one gets the source's metadata.
    fn dir_entry(&mut self, p: &str, e: &SelEntry) -> io::Result<bool> {
        if let Some(&i) = self.index.get(p) {
            return Ok(matches!(self.outs[i].kind, Kind::Dir));
        }
        let lower = if self.below_new_dir(p) {
            Lower::Absent
        } else {
            self.lookup(p)?
        };
        let meta = match lower {
            Lower::Dir(m) => m,
            Lower::Absent => {
                self.new_dirs.insert(p.to_string());
                self.meta(e)
            }
            Lower::Symlink | Lower::Other => return Ok(false),
        };
        self.push(Out {
            path: p.to_string(),
            kind: Kind::Dir,
            meta,
            size: 0,
        });
        Ok(true)
    }

    /// A file or symlink at `p`, read from `src` (context-relative).
    fn leaf(&mut self, p: &str, src: &str, e: &SelEntry) -> io::Result<bool> {
        if self.index.contains_key(p) {
            return Ok(false);
        }
        if !self.below_new_dir(p) && matches!(self.lookup(p)?, Lower::Dir(_) | Lower::Symlink) {
            // Over a directory, or below a symlink: not simple. (A file or symlink there is
            // simply replaced; a layer entry does that.)
            return Ok(false);
        }
        let meta = self.meta(e);
        let kind = match e.kind {
            EntryKind::File => Kind::File {
                src: src.to_string(),
                link_key: (e.nlink > 1).then_some((e.stat.dev, e.stat.ino)),
            },
            EntryKind::Symlink => Kind::Symlink(e.link_target.clone().unwrap_or_default()),
            _ => return Ok(false),
        };
        let size = if e.kind == EntryKind::File { e.size } else { 0 };
        self.push(Out {
            path: p.to_string(),
            kind,
            meta,
            size,
        });
        Ok(true)
    }

    /// `rel` in the parent filesystem.
    fn lookup(&self, rel: &str) -> io::Result<Lower> {
        Ok(match lower_entry(self.lowers, rel)? {
            LowerEntry::Absent => Lower::Absent,
            LowerEntry::Dir {
                mode,
                uid,
                gid,
                mtime,
            } => Lower::Dir(EntryMeta {
                mode,
                uid,
                gid,
                mtime,
            }),
            LowerEntry::Symlink => Lower::Symlink,
            LowerEntry::Other => Lower::Other,
        })
    }
}
