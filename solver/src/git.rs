//! Git sources (`Source::Git`): pass 1 resolves each ref to the commit it names now (the content
//! key, so a moved branch makes a new key and a ref name never does), and realize checks the commit
//! out into a snapshot of its own. The git work itself is rbuild-git's (no host config, hooks or
//! file transport); its bare repositories live under `<store>/git/`.

use crate::record::ContentInfo;
use crate::state::{Realized, Run};
use crate::SolveError;
use rbuild_oci::Digest;
use rbuild_ops::{BuildDefinition, Op, Source, VertexId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The commit pass 1 resolved, per vertex content key (realize needs the commit itself, not its
/// digest).
static COMMITS: OnceLock<Mutex<HashMap<Digest, String>>> = OnceLock::new();

fn commits() -> &'static Mutex<HashMap<Digest, String>> {
    COMMITS.get_or_init(Default::default)
}

/// The content key of a commit.
pub(crate) fn commit_digest(commit: &str) -> Digest {
    Digest::sha256_of(format!("git-commit:{commit}").as_bytes())
}

fn git_for(store_root: &std::path::Path, ssh: &BTreeMap<String, PathBuf>) -> rbuild_git::Git {
    rbuild_git::Git::new(store_root.join("git")).with_ssh_agent(ssh.get("default").cloned())
}

/// Does `commit` satisfy `--checksum=<c>` (the full id, or a prefix of at least 7 hex digits)?
fn checksum_ok(commit: &str, want: &str) -> bool {
    let want = want.to_ascii_lowercase();
    want.len() >= 7 && want.bytes().all(|b| b.is_ascii_hexdigit()) && commit.starts_with(&want)
}

/// Pass 1 for git sources: resolve every ref (concurrently, on the blocking pool) and key the
/// vertex by the commit (content index 0).
pub(crate) async fn content_keys(
    store_root: PathBuf,
    ssh: BTreeMap<String, PathBuf>,
    def: &BuildDefinition,
    order: &[VertexId],
    content: &mut HashMap<VertexId, BTreeMap<usize, ContentInfo>>,
) -> Result<(), SolveError> {
    let mut handles = Vec::new();
    for &id in order {
        let v = def.graph.vertex(id);
        let Op::Source(Source::Git {
            remote,
            reference,
            subdir,
            checksum,
            ..
        }) = &v.op
        else {
            continue;
        };
        let r = rbuild_git::GitRef {
            remote: remote.clone(),
            transport: transport_of(remote),
            reference: reference.clone(),
            subdir: subdir.clone(),
        };
        let git = git_for(&store_root, &ssh);
        let checksum = checksum.clone();
        let (instruction, span) = (v.meta.instruction.clone(), v.meta.span.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            let step = |message: String| SolveError::Step {
                instruction: instruction.clone(),
                span: span.clone(),
                message,
            };
            let commit = git.resolve(&r).map_err(|e| step(e.to_string()))?;
            if let Some(want) = &checksum {
                if !checksum_ok(&commit, want) {
                    return Err(step(
                        rbuild_git::Error::Checksum {
                            remote: r.display_remote(),
                            want: want.clone(),
                            got: commit,
                        }
                        .to_string(),
                    ));
                }
            }
            Ok::<(VertexId, String), SolveError>((id, commit))
        }));
    }
    for h in handles {
        let (id, commit): (VertexId, String) = h
            .await
            .map_err(|e| SolveError::Internal(format!("git task failed: {e}")))??;
        let d = commit_digest(&commit);
        commits().lock().unwrap().insert(d.clone(), commit);
        content.entry(id).or_default().insert(
            0,
            ContentInfo {
                checksum: d,
                files: None,
            },
        );
    }
    Ok(())
}

fn transport_of(remote: &str) -> rbuild_git::Transport {
    rbuild_git::GitRef::parse(remote)
        .ok()
        .flatten()
        .map(|r| r.transport)
        .unwrap_or(rbuild_git::Transport::Https)
}

/// Realize a `Source::Git` vertex: a snapshot holding the commit's tree (or its subdirectory),
/// named by the vertex key and reused while it exists.
pub(crate) fn realize(
    run: &Run,
    node: &crate::state::Node,
    remote: &str,
    subdir: Option<&str>,
    keep_git_dir: bool,
) -> Result<Realized, String> {
    let snaps = &run.solver.snapshotter;
    let name = format!("git-{}", node.key.hex());
    if snaps.exists(&name) {
        return Ok(Realized::source(name));
    }
    let commit = node
        .explain
        .content
        .get(&0)
        .and_then(|c| commits().lock().unwrap().get(&c.checksum).cloned())
        .ok_or_else(|| {
            format!(
                "git source {}: the commit was not resolved",
                rbuild_git::redact(remote)
            )
        })?;
    let r = rbuild_git::GitRef {
        remote: remote.to_string(),
        transport: transport_of(remote),
        reference: Some(commit.clone()),
        subdir: subdir.map(str::to_string),
    };
    let git = git_for(run.solver.store.root(), &run.solver.opts.ssh);
    crate::apply::commit_filled(&**snaps, "git-active", None, &name, |upper, _key| {
        git.checkout(&r, &commit, upper, keep_git_dir)
            .map_err(|e| e.to_string())
    })?;
    Ok(Realized::source(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert!(checksum_ok(c, c));
        assert!(checksum_ok(c, "0123456"));
        assert!(checksum_ok(c, "0123456789ABCDEF"));
        assert!(!checksum_ok(c, "012345"), "too short");
        assert!(!checksum_ok(c, "1123456"));
        assert!(!checksum_ok(c, "0123456z"));
    }
}
