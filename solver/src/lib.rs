//! # rbuild-solver — from a build graph to an image
//!
//! The solver takes a [`rbuild_ops::BuildDefinition`] (never a Dockerfile: it does not import the
//! frontend) and produces an image in the store. It works in three passes:
//!
//! 1. **Keys.** Every vertex reachable from the target gets a cache key ([`key::vertex_key`]): its
//!    definition, its inputs' keys and, for reads of a local context (COPY/ADD sources and
//!    `RUN --mount=type=bind`), the checksum of exactly the files read; an `ADD <url>` without
//!    `--checksum` is downloaded now and keyed by its content. Keys need no execution, so a fully
//!    cached build runs nothing at all.
//! 2. **Lookup.** Each step's key is looked up in the store's cache records, then in the caches
//!    imported with `--cache-from` ([`remote`]). A hit whose layers are still in the store (or in
//!    the imported cache) is reused as it is; a miss is explained against the closest earlier record
//!    ([`record::explain_miss`]) when the step runs.
//! 3. **Realize.** Starting from the target, the solver realizes only what is needed: a missed
//!    vertex is executed (its inputs materialized first, concurrently), a hit is materialized only
//!    if a later executed step needs its filesystem (its snapshot, or its layer re-applied when the
//!    snapshot was pruned). A vertex reached from several stages is realized once. Independent
//!    vertices run at once, bounded by `jobs`; the first failure cancels the rest, and `solve`
//!    returns that failure once everything it started has stopped.
//!
//! A step's result is a committed snapshot (`step-<key>`) plus an uncompressed layer blob and a
//! cache record; a COPY out of the context whose filesystem nothing reads is streamed to a layer
//! without a snapshot (`stream_copy`), and a `COPY --link` is a merge known by its layers. Base
//! images are unpacked into snapshots named by chain id (shared with `rbuild run` through
//! [`unpack_image`]). The image is assembled from the target's chain of layers and its history.
//!
//! ## Modules, top down
//!
//! `solve` (passes 1–2, image assembly, the no-op stamp; `preflight` refuses what the request
//! cannot do before anything runs) → `schedule` (pass 3: which vertex runs when, op dispatch) →
//! the jobs: `step` (execute a step, diff it, commit and record it), `exec` (a
//! RUN in the executor) with `run_mounts` (its `--mount`s), `file` (file actions), `merge`, `image`
//! and `apply` (base images and layer application), `http` (downloads), `git` (git sources),
//! `stream_copy`, `checksum` (context checksums), `miss` (lookup and miss explanations) → `state`
//! (the shared types) and the leaves `seam`, `guard` (the one mounted-snapshot guard), `mounts`
//! (`RUN --mount` helpers), `layout` (the names other parts read: cache-mount dirs, base-layer
//! snapshots), `naming`, `time`, `key`, `record`, `remote`, `events`. Dependencies only point
//! down.
//!
//! ## The seam
//!
//! [`Solver::new`] drives the real snapshotter and sandbox. [`Solver::with_parts`] takes any
//! [`Snapshots`] and [`Executor`] ([`seam`]): `solver/tests/` runs the solver on in-memory fakes
//! (scheduling, dedup, cancellation, first failure, miss reasons) without root. The store is the
//! real one in those tests: it needs no privileges.
//!
//! What it is not: no parsing, no terminal output (it emits [`events::Event`]s), no registry
//! protocol (base images come through [`BaseImages`], imported caches through [`RemoteCache`]).

mod apply;
mod checksum;
pub mod events;
mod exec;
mod file;
mod git;
mod guard;
mod http;
mod image;
pub mod key;
pub mod layout;
mod merge;
mod miss;
mod mounts;
mod naming;
mod preflight;
pub mod record;
pub mod remote;
mod run_mounts;
mod schedule;
pub mod seam;
mod solve;
mod state;
mod step;
mod stream_copy;
mod time;

pub use events::{Event, EventSink, Stream, VertexRef};
pub use image::unpack_image;
pub use remote::{ExportRecord, RemoteCache, RemoteCaches, RemoteRecord};
pub use seam::{Executor, Sandbox, Snapshots};
pub use solve::{BuildStamp, SolveResult, StampedSelection};
pub use state::{BaseImages, LocalImages, Parts, SecretSource, SolveOptions, Solver};

use rbuild_ops::Span;

/// A build failure, carrying where in the Dockerfile it happened.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SolveError {
    /// A RUN exited non-zero (or was killed).
    #[error("{instruction}: {status}")]
    Exec {
        instruction: String,
        span: Option<Span>,
        status: String,
        exit_code: Option<i32>,
        /// The last lines of the step's output.
        tail: Vec<String>,
    },
    /// Any other failure of a step (a COPY source missing, a mount failing, …).
    #[error("{instruction}: {message}")]
    Step {
        instruction: String,
        span: Option<Span>,
        message: String,
    },
    /// The build was cancelled (Ctrl-C, or another step failed first).
    #[error("cancelled")]
    Cancelled,
    /// A failure not tied to one step (store, snapshotter).
    #[error("{0}")]
    Internal(String),
}

impl SolveError {
    pub fn span(&self) -> Option<&Span> {
        match self {
            SolveError::Exec { span, .. } | SolveError::Step { span, .. } => span.as_ref(),
            _ => None,
        }
    }
}
