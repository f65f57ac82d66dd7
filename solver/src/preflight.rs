//! Refusals decided by the request and the Dockerfile alone, made before anything of the build
//! runs (issue 14 item 2): entitlements (`--network=host` without `--allow network.host`,
//! `--security=insecure` without `--allow security.insecure`), required secrets and ssh agents
//! that were not given, a secret file that cannot be read, and a RUN network the executor cannot
//! provide. Only steps the target needs are checked, as BuildKit does.

use crate::seam::Executor;
use crate::state::{SecretSource, SolveOptions};
use crate::SolveError;
use rbuild_ops::{BuildDefinition, MountKind, NetworkMode, Op, SecurityMode, VertexId};

fn refuse(def: &BuildDefinition, id: VertexId, message: String) -> SolveError {
    let v = def.graph.vertex(id);
    SolveError::Step {
        instruction: v.meta.instruction.clone(),
        span: v.meta.span.clone(),
        message,
    }
}

/// Check every step of `order` (the vertices the target needs); the first refusal is the error.
pub(crate) fn check(
    def: &BuildDefinition,
    order: &[VertexId],
    opts: &SolveOptions,
    executor: &dyn Executor,
) -> Result<(), SolveError> {
    let mut network_checked = false;
    for &id in order {
        let Op::Exec(op) = &def.graph.vertex(id).op else {
            continue;
        };
        if op.network == NetworkMode::Host && !opts.allow_network_host {
            return Err(refuse(
                def,
                id,
                "--network=host needs --allow network.host".into(),
            ));
        }
        if op.security == SecurityMode::Insecure && !opts.allow_insecure {
            return Err(refuse(
                def,
                id,
                "--security=insecure needs --allow security.insecure".into(),
            ));
        }
        for m in &op.mounts {
            match &m.kind {
                MountKind::Secret {
                    id: s, required, ..
                } => match opts.secrets.get(s) {
                    None if *required => {
                        return Err(refuse(
                            def,
                            id,
                            format!(
                                "secret {s} is required but was not given (--secret id={s},src=…)"
                            ),
                        ))
                    }
                    Some(SecretSource::File(p)) => {
                        if let Err(e) = std::fs::File::open(p) {
                            return Err(refuse(
                                def,
                                id,
                                format!("secret {s}: reading {}: {e}", p.display()),
                            ));
                        }
                    }
                    _ => {}
                },
                MountKind::Ssh {
                    id: s, required, ..
                } if *required && !opts.ssh.contains_key(s) => {
                    return Err(refuse(
                        def,
                        id,
                        format!("ssh agent {s} is required but was not given (--ssh {s}=…)"),
                    ));
                }
                _ => {}
            }
        }
        if op.network == NetworkMode::Default && !network_checked {
            network_checked = true;
            executor
                .check_network(rbuild_sandbox::Network::Private)
                .map_err(|e| refuse(def, id, e))?;
        }
    }
    Ok(())
}
