//! # rbuild-solver — from a build graph to an image
//!
//! The solver takes a [`rbuild_ops::BuildDefinition`] (never a Dockerfile: it does not import the
//! frontend) and produces an image in the store. It works in three passes:
//!
//! 1. **Keys.** Every vertex reachable from the target gets a cache key ([`key::vertex_key`]): its
//!    definition, its inputs' keys and, for copies out of a local context, the checksum of exactly
//!    the files copied. Keys need no execution, so a fully cached build runs nothing at all.
//! 2. **Lookup.** Each key is looked up in the store's cache records. A hit whose layers are still
//!    in the store is reused as it is; a miss is explained against the closest earlier record
//!    ([`record::explain_miss`]).
//! 3. **Realize.** Starting from the target, the solver realizes only what is needed: a missed
//!    vertex is executed (its inputs materialized first, in parallel), a hit is materialized only if
//!    a later executed step needs its filesystem. Independent vertices run at once, bounded by
//!    `jobs`; the first failure cancels the rest.
//!
//! Results are committed snapshots (one overlay layer directory per step) plus an uncompressed layer
//! blob per step; the final image is assembled from the chain of layers of the target.
//!
//! What it is not: no parsing, no terminal output (it emits [`events::Event`]s), no registry
//! protocol (base images come through [`BaseImages`], imported caches through [`RemoteCache`]).

mod apply;
mod checksum;
pub mod events;
mod exec;
mod file;
mod guard;
mod http;
mod image;
pub mod key;
mod merge;
mod miss;
mod mounts;
mod naming;
pub mod record;
pub mod remote;
mod schedule;
mod solve;
mod state;
mod step;
mod stream_copy;
mod time;

pub use events::{Event, EventSink, Stream, VertexRef};
pub use image::unpack_image;
pub use remote::{ExportRecord, RemoteCache, RemoteCaches, RemoteRecord};
pub use solve::{BuildStamp, SolveResult, StampedSelection};
pub use state::{BaseImages, LocalImages, SecretSource, SolveOptions, Solver};

use rbuild_ops::Span;

/// A build failure, carrying where in the Dockerfile it happened.
#[derive(Debug, thiserror::Error)]
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
