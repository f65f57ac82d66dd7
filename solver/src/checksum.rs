//! Pass 1's context checksums: the exact files each step reads out of a local context, summed
//! through the store's per-file checksum cache, with the stat fingerprint the no-op check uses.

use crate::events::{Event, VertexRef};
use crate::record::ContentInfo;
use crate::state::Solver;
use crate::SolveError;
use rbuild_noop::Selection as StampedSelection;
use rbuild_oci::Digest;
use rbuild_ops::{BuildDefinition, FileAction, Op, Source, VertexId};
use rbuild_store::Store;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One read of a local context by a step: (content index, input, sources, excludes, parents).
type ContextRead = (usize, usize, Vec<String>, Vec<String>, bool);

/// Content indexes of `RUN --mount=type=bind` context reads start here (copy actions use their
/// action index below it).
const BIND_CONTENT_BASE: usize = 1 << 20;

/// Context checksums by vertex and content index, and each selection's stamp (None: unstable).
pub(crate) type ContextChecksums = (
    HashMap<VertexId, BTreeMap<usize, ContentInfo>>,
    Vec<Option<StampedSelection>>,
);

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

impl Solver {
    pub(crate) async fn context_checksums(
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
                checksum_selection(&store, &dir, &sources, &excludes, &exclude, parents)
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
}
