//! # rbuild-ops — the build graph, as frontends write it and the solver reads it
//!
//! This is rbuild's LLB: a small vocabulary of [`Op`]s joined into a [`BuildGraph`] (a petgraph DAG).
//! The Dockerfile frontend produces a [`BuildDefinition`]; the solver consumes one and never imports
//! the frontend, so the solver is tested with hand-built graphs and another frontend could drive it.
//!
//! ## What feeds a cache key and what is only a hint
//! Everything inside an [`Op`] is *definition*: it is encoded canonically (sorted-key JSON through
//! [`rbuild_oci::canonical_json`]) into the vertex's definition digest, and the solver's cache key is
//! the digest of that definition plus its inputs' keys (and, for context sources, the content
//! checksum of the selected files). [`VertexMeta`] is *hint only*: display names, source spans and
//! progress labels never change a key.
//!
//! ## Results
//! Every vertex yields a filesystem: a [`Source`] its contents, an [`ExecOp`] its rootfs input after the
//! command ran, a [`FileOp`] its destination input after the copies, a [`MergeOp`] input 0 with
//! input 1's layer on top. Input 0 of an `Exec` or `File`
//! op is always the filesystem it modifies (its rootfs); further inputs are read-only sources (copy
//! sources, bind-mount sources).
//!
//! What it is not: no I/O, no parsing of Dockerfiles, no execution.

use petgraph::graph::{DiGraph, NodeIndex};
use rbuild_oci::{Digest, ImageConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Index of a vertex in a [`BuildGraph`].
pub type VertexId = NodeIndex<u32>;

/// The DAG: nodes are vertices, an edge `a -> b` with weight `i` means "`a` is input `i` of `b`".
pub type Graph = DiGraph<Vertex, usize, u32>;

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Source(Source),
    Exec(ExecOp),
    File(FileOp),
    Merge(MergeOp),
}

/// `COPY --link` / `ADD --link` (BuildKit's MergeOp, two inputs): the filesystem of input 0 with the
/// *layer* of input 1 (the changes input 1 made to its own input 0) applied on top of it, as a layer
/// is applied: paths are replaced, never resolved through symlinks of input 0.
///
/// The Dockerfile frontend makes input 1 a [`FileOp`] whose input 0 is [`Source::Scratch`], so the
/// copy's key does not depend on the stage it lands in: changing an earlier step re-keys the merge
/// (which only re-applies the cached layer) but leaves the copy cached, with the same layer blob.
/// The merge adds exactly input 1's layer to input 0's layer chain; it runs nothing and is not shown
/// as a step of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOp {}

/// Where a filesystem comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The empty filesystem.
    Scratch,
    /// An image, resolved by the frontend's [`ImageResolver`] to a manifest digest.
    Image {
        /// The reference as resolved (normalized), e.g. `docker.io/library/busybox:latest` or a local name.
        reference: String,
        /// Manifest digest; this, not the reference, is what feeds the cache key.
        manifest: Digest,
    },
    /// A local directory given to the build: `"context"` for the main context, or a
    /// `--build-context NAME=DIR` name. The selection (which paths of it are read) is given by the
    /// consumer's [`FileAction::Copy`] sources, so the solver can key only what is read.
    Context {
        name: String,
        /// `.dockerignore` patterns (Docker's rules, see the `rbuild-ignore` crate), in file order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        excludes: Vec<String>,
    },
    /// A git repository at a commit (`ADD <git url>`, a git build context): the tree of the
    /// commit `reference` names (or `subdir` of it), with `.git` when `keep_git_dir`. Keyed by the
    /// remote (credentials removed), `subdir`, `keep_git_dir` and the *resolved commit* (the
    /// solver's content key), never by the ref's name: `#main` and the commit it names share
    /// records, and a moved branch makes a new key.
    Git {
        /// As git is given it (`https://host/repo.git`, `git@host:repo.git`, `git://…`).
        remote: String,
        /// Branch, tag, `refs/…` or commit; `None`: the remote's HEAD.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdir: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_git_dir: bool,
        /// `ADD --checksum=<commit>`: the resolved commit must be this one (or start with it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
    },
    /// A remote file (ADD URL).
    Http {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<Digest>,
        /// File name to write in the resulting filesystem's root.
        filename: String,
    },
}

/// Run a command (Dockerfile RUN). Input 0 is the rootfs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// argv: `SHELL + [cmd]` for shell form, the array for exec form.
    pub args: Vec<String>,
    /// Effective environment, `K=V`, in the order docker would set it (image env, then build args).
    pub env: Vec<String>,
    /// Absolute working directory inside the rootfs.
    pub cwd: String,
    /// The user as written (`name`, `uid`, `name:group`, `uid:gid`); resolved in the rootfs at run time.
    /// Empty means root.
    pub user: String,
    pub network: NetworkMode,
    pub security: SecurityMode,
    /// Extra mounts (`RUN --mount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Environment variables that are present at run time but excluded from the cache key and
    /// history (proxy build args). Definition-excluded: the solver must skip this field when keying.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unkeyed_env: Vec<String>,
    /// The platform the command's programs are for, when it is not the host's (they then run
    /// under binfmt_misc emulation). Part of the key: the same command on another platform is
    /// another step. `None` (the host's platform) keeps host builds' keys as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<rbuild_oci::Platform>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The builder's default: a private network namespace with outbound access through a
    /// user-mode network stack (pasta or slirp4netns); the host's loopback and addresses are
    /// unreachable.
    #[default]
    Default,
    /// A new network namespace with only loopback.
    None,
    /// The host's network namespace; needs `--allow network.host`.
    Host,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    /// All capabilities; needs `--allow security.insecure`.
    Insecure,
}

/// A `RUN --mount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the rootfs.
    pub target: String,
    pub kind: MountKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// Bind a path of another vertex's result (input index `input`) or of the context.
    Bind {
        input: usize,
        source: String,
        readwrite: bool,
    },
    /// A persistent cache directory in the store; never part of a layer.
    Cache {
        id: String,
        sharing: CacheSharing,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<usize>,
        source: String,
        mode: u32,
        uid: u32,
        gid: u32,
        readonly: bool,
    },
    Tmpfs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// A secret as a file at `target` (or as env var `env`). Its value never feeds a key.
    Secret {
        id: String,
        required: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// File operations (COPY, ADD, WORKDIR's mkdir, heredoc files) applied in order to input 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    pub actions: Vec<FileAction>,
}

/// Owner for created files: names are resolved through the *destination's* /etc/passwd and /etc/group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A `--chmod` value: octal, or symbolic (`u+x,g-w`) applied per file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chmod {
    Octal(u32),
    Symbolic(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// Copy `sources` (paths relative to the root of input `input`; may contain wildcards) to `dest`
    /// (absolute). Docker semantics: a directory source copies its contents; several sources, a
    /// wildcard or a trailing `/` make `dest` a directory.
    Copy {
        input: usize,
        sources: Vec<String>,
        dest: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<Chown>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chmod: Option<Chmod>,
        /// Extract local tar archives (ADD).
        unpack: bool,
        /// `--parents`: keep the source's relative directory structure.
        parents: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
        /// `--link`.
        link: bool,
    },
    /// Create a file with literal content (`COPY <<EOF /dest`).
    Mkfile {
        path: String,
        data: String,
        mode: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<Chown>,
    },
    /// Create a directory and its parents if missing (WORKDIR).
    Mkdir {
        path: String,
        mode: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<Chown>,
    },
}

/// A location in a source file. Lines and columns are 1-based; `end_*` is inclusive of the last line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start_line: u32,
    pub start_col: u32,
    pub end_line: u32,
    pub end_col: u32,
}

/// Hints: never part of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexMeta {
    /// Progress label, BuildKit-style: `[stage-0 2/4] RUN make`, `[internal] load build context`.
    pub name: String,
    /// Where in the Dockerfile this came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// The stage (by index) this vertex belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<usize>,
    /// The stage's name (or `stage-N`), for `--no-cache-filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_name: Option<String>,
    /// Instruction text for error messages (`RUN make`).
    #[serde(default)]
    pub instruction: String,
    /// `--no-cache` or a matching `--no-cache-filter`: never reuse a cache record for this vertex.
    #[serde(default)]
    pub ignore_cache: bool,
    /// For an [`ExecOp`]: the names in its `env` that come from an `ARG` (not an `ENV`), sorted,
    /// so a cache miss can say `build arg VERSION changed`. A hint for explanations only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arg_names: Vec<String>,
}

/// A node of the build graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    pub op: Op,
    pub meta: VertexMeta,
}

impl Vertex {
    /// Digest of the op's canonical encoding, without inputs. Identical definitions with identical
    /// inputs are one vertex (the frontend dedups through [`BuildGraph::add`]).
    pub fn definition_digest(&self) -> Digest {
        rbuild_oci::canonical_digest(&self.op)
    }
}

/// The build graph: a DAG of vertices, deduplicated by (definition, inputs).
#[derive(Clone, Debug, Default)]
pub struct BuildGraph {
    pub graph: Graph,
    dedup: BTreeMap<(Digest, Vec<u32>), VertexId>,
}

impl BuildGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a vertex with `inputs` (in order). A vertex with the same definition and the same inputs
    /// already present is returned instead of adding a duplicate.
    pub fn add(&mut self, vertex: Vertex, inputs: &[VertexId]) -> VertexId {
        let key = (
            vertex.definition_digest(),
            inputs.iter().map(|i| i.index() as u32).collect::<Vec<_>>(),
        );
        if let Some(&id) = self.dedup.get(&key) {
            return id;
        }
        let id = self.graph.add_node(vertex);
        for (i, input) in inputs.iter().enumerate() {
            self.graph.add_edge(*input, id, i);
        }
        self.dedup.insert(key, id);
        id
    }

    /// The inputs of `id`, in input order.
    pub fn inputs(&self, id: VertexId) -> Vec<VertexId> {
        let mut v: Vec<(usize, VertexId)> = self
            .graph
            .edges_directed(id, petgraph::Direction::Incoming)
            .map(|e| {
                use petgraph::visit::EdgeRef;
                (*e.weight(), e.source())
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }

    pub fn vertex(&self, id: VertexId) -> &Vertex {
        &self.graph[id]
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }
}

/// One history entry of the image being built. A non-empty entry names the vertex whose layer it
/// records; the solver turns that vertex's changeset into a layer (or marks the entry empty if the
/// step changed nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryStep {
    pub created_by: String,
    pub comment: Option<String>,
    /// `None` for metadata-only instructions (ENV, CMD, …): `empty_layer: true`.
    pub vertex: Option<VertexId>,
}

/// The image a build produces from its target vertex.
#[derive(Clone, Debug)]
pub struct ImageTarget {
    /// The vertex whose filesystem is the image's rootfs.
    pub root: VertexId,
    /// The config, with base image's history and diff_ids already in it (inherited);
    /// the solver appends the new layers' diff_ids and the new history entries.
    pub config: ImageConfig,
    /// The history of the steps of the target stage after its FROM, in order.
    pub history: Vec<HistoryStep>,
}

/// Everything a frontend hands the solver.
#[derive(Clone, Debug)]
pub struct BuildDefinition {
    pub graph: BuildGraph,
    pub target: ImageTarget,
    /// The Dockerfile (name and text), so errors can quote the line a [`Span`] points at.
    pub source: Option<SourceFile>,
}

#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
}

/// A base image as an [`ImageResolver`] reports it.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// Normalized reference.
    pub reference: String,
    pub manifest: Digest,
    pub config: ImageConfig,
}

/// How a frontend learns a base image's digest and config (BuildKit's ResolveImageConfig). The
/// caller implements it over the local store and, when configured, a registry.
pub trait ImageResolver: Send + Sync {
    /// The image for the host's platform.
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ResolveError>;

    /// The image for `platform` (an index narrowed to it, as containerd's `platforms.Only`
    /// matches). Resolvers that know only one platform answer [`ImageResolver::resolve`].
    fn resolve_for(
        &self,
        reference: &str,
        platform: &rbuild_oci::Platform,
    ) -> Result<ResolvedImage, ResolveError> {
        let _ = platform;
        self.resolve(reference)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("image {reference:?} not found{}", hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    NotFound {
        reference: String,
        hint: Option<String>,
    },
    #[error("resolving image {reference:?}: {message}")]
    Failed { reference: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> Vertex {
        Vertex {
            op: Op::Source(Source::Scratch),
            meta: VertexMeta::default(),
        }
    }

    #[test]
    fn identical_vertices_are_one() {
        let mut g = BuildGraph::new();
        let a = g.add(scratch(), &[]);
        let mut m = scratch();
        m.meta.name = "other label".into();
        let b = g.add(m, &[]);
        assert_eq!(a, b, "meta must not affect identity");
        let mk = Vertex {
            op: Op::File(FileOp {
                actions: vec![FileAction::Mkdir {
                    path: "/app".into(),
                    mode: 0o755,
                    chown: None,
                }],
            }),
            meta: VertexMeta::default(),
        };
        let c = g.add(mk.clone(), &[a]);
        let d = g.add(mk, &[a]);
        assert_eq!(c, d);
        assert_eq!(g.len(), 2);
        assert_eq!(g.inputs(c), vec![a]);
    }
}
