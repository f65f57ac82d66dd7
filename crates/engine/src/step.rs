//! Steps the engine runs outside the solve (exports, pushes), reported as vertices of their own on
//! the build's event sink, and the [`Summary`] of what a build produced.

use rbuild_solver::{Event, EventSink};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the build produced, for the end of the progress output (tty summary, json `result`).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Image id (config digest).
    pub id: String,
    /// Manifest digest.
    pub digest: String,
    /// Bytes of config and layers.
    pub size: u64,
}

/// A step the engine runs after the solve (an export, a push), shown as a vertex of its own:
/// started when made, byte progress per blob (at most 10 updates a second for each, plus the
/// last), then done or failed.
pub struct Step {
    sink: EventSink,
    vertex: rbuild_solver::VertexRef,
    started: Instant,
    /// When each id was last reported.
    last: Mutex<HashMap<String, Instant>>,
}

/// Least time between two progress events of one id.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

impl Step {
    pub fn start(sink: &EventSink, name: &str) -> Step {
        let vertex = rbuild_solver::VertexRef {
            number: 0,
            digest: String::new(),
            name: name.to_string(),
        };
        sink.send(Event::Started {
            vertex: vertex.clone(),
        });
        Step {
            sink: sink.clone(),
            vertex,
            started: Instant::now(),
            last: Mutex::default(),
        }
    }

    /// `current` of `total` bytes of `id` moved; throttled unless `done`.
    pub fn bytes(&self, id: &str, current: u64, total: Option<u64>, done: bool) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            // A whole blob not yet done: its done event follows at once.
            if !done && total == Some(current) {
                return;
            }
            match last.get(id) {
                Some(t) if !done && now.duration_since(*t) < PROGRESS_EVERY => return,
                _ => {}
            }
            if done {
                last.remove(id);
            } else {
                last.insert(id.to_string(), now);
            }
        }
        self.sink.send(Event::Progress {
            vertex: self.vertex.clone(),
            id: id.to_string(),
            current,
            total,
            done,
        });
    }

    /// An export's blob progress (see [`rbuild_image::ExportProgress`]).
    pub fn export(&self, p: rbuild_image::ExportProgress<'_>) {
        self.bytes(
            &format!("{} {}", p.what, p.digest),
            p.current,
            Some(p.total),
            p.done,
        );
    }

    /// Report the end of the step: done, or failed with `result`'s error.
    pub fn finish<T>(self, result: &anyhow::Result<T>) {
        let duration = self.started.elapsed();
        self.sink.send(match result {
            Ok(_) => Event::Done {
                vertex: self.vertex,
                duration,
            },
            Err(e) => Event::Failed {
                vertex: self.vertex,
                duration,
                error: format!("{e:#}"),
            },
        });
    }
}
