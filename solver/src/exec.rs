//! A RUN: its user and environment, its `--mount`s ([`crate::run_mounts`]), run by the executor,
//! its output streamed as events and its last lines kept for the error.

use crate::events::{Event, Stream};
use crate::run_mounts::StepMounts;
use crate::state::{step_err, Node, Realized, Run};
use crate::SolveError;
use rbuild_ops::{ExecOp, NetworkMode, SecurityMode};
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
        env.insert(0, format!("PATH={}", rbuild_sandbox::DEFAULT_PATH));
    }
    let mut held = StepMounts::default();
    for m in &op.mounts {
        held.add(run, node, inputs, m, &mut env)?;
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
            NetworkMode::Host => rbuild_sandbox::Network::Host,
            // The default: a private namespace behind a user-mode stack (issue 14 item 1).
            _ => rbuild_sandbox::Network::Private,
        },
        mounts: std::mem::take(&mut held.mounts),
        limits: solver.opts.limits,
        insecure: op.security == SecurityMode::Insecure,
        stdio: rbuild_sandbox::Stdio::Piped,
        init_exe: solver.opts.init_exe.clone(),
        timeout: None,
    };
    run_streaming(run, node, &spec)
}

/// Run `spec` with the executor, cancellable through the run; each whole line of output becomes a
/// log event, and the last ten go into the error of a failing command.
fn run_streaming(run: &Run, node: &Node, spec: &rbuild_sandbox::RunSpec) -> Result<(), SolveError> {
    let solver = &run.solver;
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
    let outcome = solver.executor.run(spec, &mut on_output, &cancel);
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
