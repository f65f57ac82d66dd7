//! Progress events: what the solver tells whoever renders progress (the CLI). The solver never
//! formats anything for a terminal; it emits these, in order per vertex.

use serde::Serialize;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// A vertex as progress sees it: a small stable number (`#N`) and its label.
#[derive(Clone, Debug, Serialize)]
pub struct VertexRef {
    /// BuildKit-style `#N`, numbered in the order vertices are first reported. 0 for a vertex
    /// reported from outside the solve (an export, a push): the renderer numbers it after the
    /// solve's vertices (see the CLI's progress module).
    pub number: u32,
    /// The vertex's cache key (or definition digest before it is known), hex.
    pub digest: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The vertex began executing (not cached).
    Started { vertex: VertexRef },
    /// The vertex's result came from the cache.
    Cached { vertex: VertexRef },
    /// Why the vertex could not be reused.
    CacheMiss {
        vertex: VertexRef,
        reason: String,
        /// With `explain` on: every input that differs from the closest earlier record.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        details: Vec<String>,
    },
    /// A line of output (stdout or stderr) of a running step, without its newline.
    Log {
        vertex: VertexRef,
        stream: Stream,
        #[serde(serialize_with = "ser_secs")]
        elapsed: Duration,
        line: String,
    },
    /// Bytes moved (pull, push, export, layer commit) for `id` (e.g. `writing layer sha256:…`);
    /// `done` on the last event of that id.
    Progress {
        vertex: VertexRef,
        id: String,
        current: u64,
        total: Option<u64>,
        done: bool,
    },
    /// The vertex finished.
    Done {
        vertex: VertexRef,
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
    },
    /// The vertex failed; `error` is the full message.
    Failed {
        vertex: VertexRef,
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        error: String,
    },
    /// The vertex was cancelled because another one failed or the user interrupted.
    Cancelled { vertex: VertexRef },
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Where events go. Cloneable; sending never blocks and never fails the build (a renderer that went
/// away is not the build's problem).
#[derive(Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<(SystemTime, Event)>>,
}

impl EventSink {
    pub fn new(tx: mpsc::Sender<(SystemTime, Event)>) -> Self {
        EventSink { tx: Some(tx) }
    }
    /// A sink that drops everything (tests, `--progress=quiet` that still wants errors elsewhere).
    pub fn discard() -> Self {
        EventSink { tx: None }
    }
    pub fn send(&self, e: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((SystemTime::now(), e));
        }
    }
}
