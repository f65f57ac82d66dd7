//! `RUN --mount`s as sandbox mounts, with everything that must outlive the step held in one place.

use crate::guard::Mounted;
use crate::mounts::{cache_dir, cache_name, CacheDir, CacheSeed, PinnedSource, RwScratch};
use crate::state::{step_err, Node, Realized, Run};
use crate::{SecretSource, SolveError};
use rbuild_ops::{Mount, MountKind, VertexId};
use rbuild_sandbox::SandboxMount;
use std::path::PathBuf;
use std::sync::Arc;

/// The sandbox mounts of one RUN and what backs them, released when the step is done. Fields drop
/// in declaration order: cache locks, then read-write scratch overlays (whose lower dirs are
/// pinned sources), then the pinned sources, secret files and views.
#[derive(Default)]
pub(crate) struct StepMounts {
    cache_dirs: Vec<CacheDir>,
    scratch: Vec<RwScratch>,
    pinned: Vec<PinnedSource>,
    secrets: Vec<tempfile::NamedTempFile>,
    views: Vec<Mounted>,
    /// Contexts with `.dockerignore` rules, as the filtered copies the step reads (by input
    /// index); last, as pinned sources and scratch overlays may sit on them.
    filtered: Vec<(usize, tempfile::TempDir)>,
    /// What the sandbox is given.
    pub mounts: Vec<SandboxMount>,
}

impl StepMounts {
    /// Add the mount `m` of step `node` (inputs realized); a secret or ssh agent may add to `env`.
    pub(crate) fn add(
        &mut self,
        run: &Run,
        node: &Node,
        inputs: &[Arc<Realized>],
        m: &Mount,
        env: &mut Vec<String>,
    ) -> Result<(), SolveError> {
        let err = |e: String| step_err(run, node.id, e);
        let target = m.target.clone();
        match &m.kind {
            MountKind::Bind {
                input,
                source,
                readwrite,
            } => {
                let host = self.bind_source(run, node.id, inputs, *input, source)?;
                // rw: writes go to a scratch overlay (or copy) that is thrown away.
                let source = if *readwrite {
                    let s =
                        RwScratch::new(&run.solver.store.root().join("mnt"), &host).map_err(err)?;
                    let p = s.path.clone();
                    self.scratch.push(s);
                    p
                } else {
                    host
                };
                self.mounts.push(SandboxMount::Bind {
                    source,
                    target,
                    readonly: !readwrite,
                });
            }
            MountKind::Cache { readonly, .. } => {
                let source = self.cache(run, node, inputs, &m.kind)?;
                self.mounts.push(SandboxMount::Bind {
                    source,
                    target,
                    readonly: *readonly,
                });
            }
            MountKind::Tmpfs { size } => self.mounts.push(SandboxMount::Tmpfs {
                target,
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
                let value = match run.solver.opts.secrets.get(id) {
                    Some(SecretSource::File(p)) => std::fs::read(p)
                        .map_err(|e| err(format!("secret {id}: reading {}: {e}", p.display())))?,
                    Some(SecretSource::Env(v)) => v.clone().into_bytes(),
                    None if *required => {
                        return Err(err(format!(
                            "secret {id} is required but was not given (--secret id={id},src=…)"
                        )))
                    }
                    None => return Ok(()),
                };
                if let Some(name) = as_env {
                    env.push(format!("{name}={}", String::from_utf8_lossy(&value)));
                    return Ok(());
                }
                let f = tempfile::Builder::new()
                    .prefix("secret-")
                    .tempfile_in(run.solver.store.root())
                    .map_err(|e| err(format!("secret {id}: {e}")))?;
                std::fs::write(f.path(), &value).map_err(|e| err(format!("secret {id}: {e}")))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(*mode));
                let _ = std::os::unix::fs::chown(f.path(), Some(*uid), Some(*gid));
                self.mounts.push(SandboxMount::Bind {
                    source: f.path().to_path_buf(),
                    target,
                    readonly: true,
                });
                self.secrets.push(f);
            }
            MountKind::Ssh { id, required, .. } => match run.solver.opts.ssh.get(id) {
                Some(sock) => {
                    // As BuildKit: the first forwarded agent is $SSH_AUTH_SOCK.
                    if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                        env.push(format!("SSH_AUTH_SOCK={}", m.target));
                    }
                    self.mounts.push(SandboxMount::Bind {
                        source: sock.clone(),
                        target,
                        readonly: false,
                    })
                }
                None if *required => {
                    return Err(err(format!(
                        "ssh agent {id} is required but was not given (--ssh {id}=…)"
                    )))
                }
                None => {}
            },
        }
        Ok(())
    }

    /// The filesystem of input `i`: a context's directory, else a view of its snapshot (held);
    /// with whether owners are kept (views) or not (contexts).
    fn input_root(
        &mut self,
        run: &Run,
        id: VertexId,
        inputs: &[Arc<Realized>],
        i: usize,
        what: &str,
    ) -> Result<(PathBuf, bool), SolveError> {
        let r = inputs
            .get(i)
            .ok_or_else(|| SolveError::Internal(format!("{what} input {i} missing")))?;
        Ok(match &r.context {
            Some(d) => (self.context_selection(run, id, i, d)?, false),
            None => {
                let v =
                    Mounted::view(run, r.snapshot.as_deref()).map_err(|e| step_err(run, id, e))?;
                let p = v.path().to_path_buf();
                self.views.push(v);
                (p, true)
            }
        })
    }

    /// What a step may see of context input `i` at `dir`: the directory itself when it has no
    /// `.dockerignore` rules, else a copy of the selection the rules leave (the same selection
    /// COPY reads), made once per step. An excluded file never reaches a RUN, as with BuildKit,
    /// where it never leaves the client.
    fn context_selection(
        &mut self,
        run: &Run,
        id: VertexId,
        i: usize,
        dir: &std::path::Path,
    ) -> Result<PathBuf, SolveError> {
        let err = |e: String| step_err(run, id, e);
        if let Some((_, d)) = self.filtered.iter().find(|(j, _)| *j == i) {
            return Ok(d.path().to_path_buf());
        }
        let src = run.def.graph.inputs(id).get(i).copied();
        let excludes = match src.map(|v| &run.def.graph.vertex(v).op) {
            Some(rbuild_ops::Op::Source(rbuild_ops::Source::Context { excludes, .. })) => {
                excludes.clone()
            }
            _ => Vec::new(),
        };
        if excludes.is_empty() {
            return Ok(dir.to_path_buf());
        }
        let rules = rbuild_fileop::IgnoreRules(
            rbuild_ignore::Matcher::from_patterns(&excludes).map_err(|e| err(e.to_string()))?,
        );
        let parent = run.solver.store.root().join("mnt");
        std::fs::create_dir_all(&parent)
            .map_err(|e| err(format!("creating {}: {e}", parent.display())))?;
        let tmp = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(&parent)
            .map_err(|e| err(format!("creating a directory in {}: {e}", parent.display())))?;
        crate::mounts::copy_into(dir, "/", tmp.path(), &rules, false)
            .map_err(|e| err(format!("selecting the context (.dockerignore): {e}")))?;
        // The copy's root is the context's root (tempfile made it 0700).
        if let Ok(md) = std::fs::metadata(dir) {
            use std::os::unix::fs::PermissionsExt;
            let mode = md.permissions().mode() & 0o7777;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode));
        }
        let p = tmp.path().to_path_buf();
        self.filtered.push((i, tmp));
        Ok(p)
    }

    /// `source` of input `input`, resolved beneath its root and pinned by its fd: the sandbox
    /// binds a staging point rbuild owns, never a path string that could be swapped for a
    /// symlink.
    fn bind_source(
        &mut self,
        run: &Run,
        id: VertexId,
        inputs: &[Arc<Realized>],
        input: usize,
        source: &str,
    ) -> Result<PathBuf, SolveError> {
        let (base, _) = self.input_root(run, id, inputs, input, "bind mount")?;
        let src_root =
            rbuild_fileop::Root::open(&base).map_err(|e| step_err(run, id, e.to_string()))?;
        let fd = src_root
            .resolve(source, true)
            .map_err(|e| step_err(run, id, format!("--mount source {source}: {e}")))?;
        let pinned = PinnedSource::new(&run.solver.store.root().join("mnt"), &fd)
            .map_err(|e| step_err(run, id, format!("--mount source {source}: {e}")))?;
        let host = pinned.path.clone();
        self.pinned.push(pinned);
        Ok(host)
    }

    /// The directory of a cache mount (locked as its `sharing` says, held); `from=`: the cache
    /// starts as a copy of that input's `source`.
    fn cache(
        &mut self,
        run: &Run,
        node: &Node,
        inputs: &[Arc<Realized>],
        kind: &MountKind,
    ) -> Result<PathBuf, SolveError> {
        let MountKind::Cache {
            id,
            sharing,
            mode,
            uid,
            gid,
            from,
            source,
            ..
        } = kind
        else {
            return Err(SolveError::Internal(format!("not a cache mount: {kind:?}")));
        };
        let seed_root = match from {
            Some(i) => {
                let root = self.input_root(run, node.id, inputs, *i, "cache mount")?;
                let key = run
                    .def
                    .graph
                    .inputs(node.id)
                    .get(*i)
                    .map(|v| run.nodes[v].key.clone());
                key.map(|k| (root, k))
            }
            None => None,
        };
        let seed = seed_root
            .as_ref()
            .map(|((root, keep_owner), key)| CacheSeed {
                root,
                source,
                keep_owner: *keep_owner,
                key,
            });
        let name = cache_name(id, seed.as_ref());
        // The same cache mounted twice in one step shares one lock.
        if let Some(d) = self.cache_dirs.iter().find(|d| d.name == name) {
            return Ok(d.path.clone());
        }
        let dir = cache_dir(
            &crate::layout::cache_mounts_dir(run.solver.store.root()),
            id,
            *sharing,
            seed.as_ref(),
            *mode,
            *uid,
            *gid,
        )
        .map_err(|e| step_err(run, node.id, format!("cache mount {id}: {e}")))?;
        let p = dir.path.clone();
        self.cache_dirs.push(dir);
        Ok(p)
    }
}
