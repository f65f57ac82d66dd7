//! A RUN: its user, environment and `--mount`s, run in the sandbox, its output streamed as events.

use crate::events::{Event, Stream};
use crate::guard::Mounted;
use crate::state::{step_err, Node, Realized, Run};
use crate::SolveError;
use rbuild_ops::{ExecOp, MountKind, NetworkMode, SecurityMode};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn run_exec(
    run: &Run,
    node: &Node,
    op: &ExecOp,
    rootfs: &Path,
    inputs: &[Arc<Realized>],
) -> Result<(), SolveError> {
    let solver = &run.solver;
    if op.network == NetworkMode::Host && !solver.opts.allow_network_host {
        return Err(step_err(
            run,
            node.id,
            "--network=host needs --allow network.host".into(),
        ));
    }
    if op.security == SecurityMode::Insecure && !solver.opts.allow_insecure {
        return Err(step_err(
            run,
            node.id,
            "--security=insecure needs --allow security.insecure".into(),
        ));
    }
    let root =
        rbuild_fileop::Root::open(rootfs).map_err(|e| step_err(run, node.id, e.to_string()))?;
    let user = rbuild_fileop::users::resolve_user(&root, &op.user)
        .map_err(|e| step_err(run, node.id, format!("USER {}: {e}", op.user)))?;
    drop(root);
    let mut env = op.env.clone();
    env.extend(op.unkeyed_env.iter().cloned());
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
    }
    let mut mounts = Vec::new();
    let mut _views = Vec::new();
    let mut _tmpfiles = Vec::new();
    // Declared before `_scratch`, so dropped after it: an rw overlay's lower dir is a pinned source.
    let mut _pinned = Vec::new();
    let mut _scratch = Vec::new();
    let mut _scratch_locks = Vec::new();
    for m in &op.mounts {
        match &m.kind {
            MountKind::Bind {
                input,
                source,
                readwrite,
            } => {
                let r = inputs.get(*input).ok_or_else(|| {
                    SolveError::Internal(format!("bind mount input {input} missing"))
                })?;
                let base = match &r.context {
                    Some(d) => d.clone(),
                    None => {
                        let v = Mounted::view(run, r.snapshot.as_deref())
                            .map_err(|e| step_err(run, node.id, e))?;
                        let p = v.path().to_path_buf();
                        _views.push(v);
                        p
                    }
                };
                let src_root = rbuild_fileop::Root::open(&base)
                    .map_err(|e| step_err(run, node.id, e.to_string()))?;
                // Resolved beneath its root and pinned by its fd: the sandbox binds a staging
                // point rbuild owns, never a path string that could be swapped for a symlink.
                let fd = src_root
                    .resolve(source, true)
                    .map_err(|e| step_err(run, node.id, format!("--mount source {source}: {e}")))?;
                let pinned =
                    crate::mounts::PinnedSource::new(&solver.store.root().join("mnt"), &fd)
                        .map_err(|e| {
                            step_err(run, node.id, format!("--mount source {source}: {e}"))
                        })?;
                drop(fd);
                let host = pinned.path.clone();
                _pinned.push(pinned);
                // rw: writes go to a scratch overlay (or copy) that is thrown away.
                let source = if *readwrite {
                    let s = crate::mounts::RwScratch::new(&solver.store.root().join("mnt"), &host)
                        .map_err(|e| step_err(run, node.id, e))?;
                    let p = s.path.clone();
                    _scratch.push(s);
                    p
                } else {
                    host
                };
                mounts.push(rbuild_sandbox::SandboxMount::Bind {
                    source,
                    target: m.target.clone(),
                    readonly: !readwrite,
                });
            }
            MountKind::Cache {
                id,
                sharing,
                readonly,
                mode,
                uid,
                gid,
                from,
                source,
            } => {
                // `from=`: the cache starts as a copy of that input's `source`.
                let seed_root = match from {
                    Some(i) => {
                        let r = inputs.get(*i).ok_or_else(|| {
                            SolveError::Internal(format!("cache mount input {i} missing"))
                        })?;
                        let key = run
                            .def
                            .graph
                            .inputs(node.id)
                            .get(*i)
                            .map(|v| &run.nodes[v].key);
                        let root = match &r.context {
                            Some(d) => (d.clone(), false),
                            None => {
                                let v = Mounted::view(run, r.snapshot.as_deref())
                                    .map_err(|e| step_err(run, node.id, e))?;
                                let p = v.path().to_path_buf();
                                _views.push(v);
                                (p, true)
                            }
                        };
                        key.map(|k| (root, k))
                    }
                    None => None,
                };
                let seed =
                    seed_root
                        .as_ref()
                        .map(|((root, keep_owner), key)| crate::mounts::CacheSeed {
                            root,
                            source,
                            keep_owner: *keep_owner,
                            key,
                        });
                let name = crate::mounts::cache_name(id, seed.as_ref());
                let held = _scratch_locks
                    .iter()
                    .find(|d: &&crate::mounts::CacheDir| d.name == name);
                let source = match held {
                    Some(d) => d.path.clone(),
                    None => {
                        let dir = crate::mounts::cache_dir(
                            &solver.store.root().join("cache-mounts"),
                            id,
                            *sharing,
                            seed.as_ref(),
                            *mode,
                            *uid,
                            *gid,
                        )
                        .map_err(|e| step_err(run, node.id, format!("cache mount {id}: {e}")))?;
                        let p = dir.path.clone();
                        _scratch_locks.push(dir);
                        p
                    }
                };
                mounts.push(rbuild_sandbox::SandboxMount::Bind {
                    source,
                    target: m.target.clone(),
                    readonly: *readonly,
                });
            }
            MountKind::Tmpfs { size } => mounts.push(rbuild_sandbox::SandboxMount::Tmpfs {
                target: m.target.clone(),
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
                let value = match solver.opts.secrets.get(id) {
                    Some(crate::SecretSource::File(p)) => std::fs::read(p).map_err(|e| {
                        step_err(
                            run,
                            node.id,
                            format!("secret {id}: reading {}: {e}", p.display()),
                        )
                    })?,
                    Some(crate::SecretSource::Env(v)) => v.clone().into_bytes(),
                    None if *required => {
                        return Err(step_err(
                            run,
                            node.id,
                            format!(
                            "secret {id} is required but was not given (--secret id={id},src=…)"
                        ),
                        ))
                    }
                    None => continue,
                };
                if let Some(name) = as_env {
                    env.push(format!("{name}={}", String::from_utf8_lossy(&value)));
                    continue;
                }
                let f = tempfile::Builder::new()
                    .prefix("secret-")
                    .tempfile_in(solver.store.root())
                    .map_err(|e| step_err(run, node.id, format!("secret {id}: {e}")))?;
                std::fs::write(f.path(), &value)
                    .map_err(|e| step_err(run, node.id, format!("secret {id}: {e}")))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(*mode));
                let _ = std::os::unix::fs::chown(f.path(), Some(*uid), Some(*gid));
                mounts.push(rbuild_sandbox::SandboxMount::Bind {
                    source: f.path().to_path_buf(),
                    target: m.target.clone(),
                    readonly: true,
                });
                _tmpfiles.push(f);
            }
            MountKind::Ssh { id, required, .. } => match solver.opts.ssh.get(id) {
                Some(sock) => {
                    // As BuildKit: the first forwarded agent is $SSH_AUTH_SOCK.
                    if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                        env.push(format!("SSH_AUTH_SOCK={}", m.target));
                    }
                    mounts.push(rbuild_sandbox::SandboxMount::Bind {
                        source: sock.clone(),
                        target: m.target.clone(),
                        readonly: false,
                    })
                }
                None if *required => {
                    return Err(step_err(
                        run,
                        node.id,
                        format!("ssh agent {id} is required but was not given (--ssh {id}=…)"),
                    ))
                }
                None => {}
            },
        }
    }
    let spec = rbuild_sandbox::RunSpec {
        rootfs: rootfs.to_path_buf(),
        args: op.args.clone(),
        env,
        cwd: op.cwd.clone(),
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids.clone(),
        hostname: "buildkitsandbox".to_string(),
        etc_hostname: false,
        network: match op.network {
            NetworkMode::None => rbuild_sandbox::Network::None,
            _ => rbuild_sandbox::Network::Host,
        },
        mounts,
        limits: solver.opts.limits,
        insecure: op.security == SecurityMode::Insecure,
        stdio: rbuild_sandbox::Stdio::Piped,
        init_exe: solver.opts.init_exe.clone(),
        timeout: None,
    };
    let cancel = rbuild_sandbox::Cancel::new();
    run.cancels.lock().unwrap().push(cancel.clone());
    run.check_cancelled()?;
    let vref = run.vref(node);
    let started = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut partial = [Vec::new(), Vec::new()];
    let events = solver.events.clone();
    let emit = |stream: Stream, line: &[u8], tail: &mut VecDeque<String>| {
        let text = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        if tail.len() == 10 {
            tail.pop_front();
        }
        tail.push_back(text.clone());
        events.send(Event::Log {
            vertex: vref.clone(),
            stream,
            elapsed: started.elapsed(),
            line: text,
        });
    };
    let mut on_output = |s: rbuild_sandbox::OutputStream, data: &[u8]| {
        let (stream, idx) = match s {
            rbuild_sandbox::OutputStream::Stdout => (Stream::Stdout, 0),
            rbuild_sandbox::OutputStream::Stderr => (Stream::Stderr, 1),
        };
        let buf = &mut partial[idx];
        buf.extend_from_slice(data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            emit(stream, &line[..line.len() - 1], &mut tail);
        }
        if buf.len() > 64 * 1024 {
            let line: Vec<u8> = std::mem::take(buf);
            emit(stream, &line, &mut tail);
        }
    };
    let outcome = solver.executor.run(&spec, &mut on_output, &cancel);
    for (idx, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
        if !partial[idx].is_empty() {
            let line = std::mem::take(&mut partial[idx]);
            emit(stream, &line, &mut tail);
        }
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if run.cancelled.load(Ordering::SeqCst) => {
            let _ = e;
            return Err(SolveError::Cancelled);
        }
        Err(e) => return Err(step_err(run, node.id, e.to_string())),
    };
    use rbuild_sandbox::ExitKind;
    let (status, code) = match outcome.status {
        ExitKind::Exited(0) => return Ok(()),
        ExitKind::Exited(c) => (
            format!("process did not complete successfully: exit code: {c}"),
            Some(c),
        ),
        ExitKind::Signaled(s) => (format!("process was killed by signal {s}"), None),
        ExitKind::OomKilled => (
            "process was killed for exceeding its memory limit (out of memory)".to_string(),
            None,
        ),
    };
    if run.cancelled.load(Ordering::SeqCst) {
        return Err(SolveError::Cancelled);
    }
    let status = if outcome.pids_limit_hit {
        format!("{status} (the pids limit refused a fork)")
    } else {
        status
    };
    let v = run.def.graph.vertex(node.id);
    Err(SolveError::Exec {
        instruction: v.meta.instruction.clone(),
        span: v.meta.span.clone(),
        status,
        exit_code: code,
        tail: tail.into_iter().collect(),
    })
}
