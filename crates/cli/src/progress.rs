//! Rendering solver events: `plain` (BuildKit's `#N` lines, for CI and pipes), `json` (one object
//! per line) and `tty` (a live view). Everything goes to stderr; stdout carries only data.

use rbuild_engine::Summary;
use rbuild_solver::{Event, EventSink};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Json,
    Tty,
    Quiet,
}

/// Set by [`Progress::finish_with`] before the renderer's channel closes.
pub(crate) type SummarySlot = Arc<Mutex<Option<Summary>>>;

/// A running renderer: feed it through [`Progress::sink`], then [`Progress::finish`].
pub struct Progress {
    sink: EventSink,
    handle: Option<JoinHandle<()>>,
    tx: Option<mpsc::Sender<(SystemTime, Event)>>,
    summary: SummarySlot,
}

impl Progress {
    /// Render in `mode`; with a `tap`, every event is also written to the build's history.
    pub fn start(mode: Mode, tap: Option<crate::history::Tap>) -> Progress {
        let (tx, rx) = mpsc::channel::<(SystemTime, Event)>();
        let rx = match tap {
            Some(tap) => tap.forward(rx),
            None => rx,
        };
        let summary: SummarySlot = Arc::default();
        let slot = summary.clone();
        let handle = std::thread::spawn(move || match mode {
            Mode::Plain => plain(rx),
            Mode::Tty => crate::tty::render(rx, slot),
            Mode::Json => json(rx, slot),
            Mode::Quiet => for _ in rx {},
        });
        Progress {
            sink: EventSink::new(tx.clone()),
            handle: Some(handle),
            tx: Some(tx),
            summary,
        }
    }

    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// Wait until every event has been rendered, then show what was built.
    pub fn finish_with(self, summary: Summary) {
        if let Ok(mut g) = self.summary.lock() {
            *g = Some(summary);
        }
        self.finish();
    }

    /// Wait until every event has been rendered.
    pub fn finish(mut self) {
        self.tx.take();
        self.sink = EventSink::discard();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Numbers the vertices reported from outside the solve (number 0: exports, pushes) after every
/// vertex seen so far. Events arrive in order, so the solve's vertices all come before.
#[derive(Default)]
pub(crate) struct Numbering {
    max: u32,
    outside: HashMap<String, u32>,
}

impl Numbering {
    /// Give `ev` its number; true when its vertex came from outside the solve.
    pub(crate) fn number(&mut self, ev: &mut Event) -> bool {
        let v = vertex_of_mut(ev);
        if v.number != 0 {
            self.max = self.max.max(v.number);
            return false;
        }
        let next = self.max + 1;
        let n = *self.outside.entry(v.name.clone()).or_insert(next);
        self.max = self.max.max(n);
        v.number = n;
        true
    }
}

fn plain(rx: mpsc::Receiver<(SystemTime, Event)>) {
    let stderr = std::io::stderr();
    let mut plain = Plain::default();
    for (t, ev) in rx {
        plain.write(&mut stderr.lock(), t, ev);
    }
}

/// The `plain` rendering's state: the live display on stderr and the history's log alike.
#[derive(Default)]
pub(crate) struct Plain {
    last: Option<u32>,
    announced: HashSet<u32>,
    numbering: Numbering,
    // When each (vertex, id) of byte progress was first seen, for BuildKit's elapsed column.
    first_seen: HashMap<(u32, String), SystemTime>,
}

impl Plain {
    pub(crate) fn write(&mut self, out: &mut dyn Write, t: SystemTime, mut ev: Event) {
        self.numbering.number(&mut ev);
        let v = vertex_of(&ev);
        let n = v.number;
        if self.last != Some(n) && self.last.is_some() {
            let _ = writeln!(out);
        }
        self.last = Some(n);
        if self.announced.insert(n) {
            let _ = writeln!(out, "#{n} {}", v.name);
        }
        let _ = match &ev {
            Event::Started { .. } => Ok(()),
            Event::Cached { .. } => writeln!(out, "#{n} CACHED"),
            Event::CacheMiss {
                reason, details, ..
            } => writeln!(out, "#{n} CACHE MISS: {reason}").and_then(|_| {
                // `--explain`: the full comparison, one differing input per line.
                details
                    .iter()
                    .try_for_each(|d| writeln!(out, "#{n}   - {d}"))
            }),
            Event::Log { elapsed, line, .. } => {
                writeln!(out, "#{n} {:.3} {line}", elapsed.as_secs_f64())
            }
            Event::Progress {
                id,
                current,
                total,
                done,
                ..
            } => {
                // BuildKit's status line: `#N <id> <current> / <total> <elapsed>s[ done]`.
                let since = *self.first_seen.entry((n, id.clone())).or_insert(t);
                let elapsed = t.duration_since(since).unwrap_or_default();
                // As BuildKit, no byte counts before the first byte (`… already exists done`).
                let bytes = match (current, total) {
                    (0, _) => String::new(),
                    (c, Some(t)) => format!(" {} / {}", human(*c), human(*t)),
                    (c, None) => format!(" {}", human(*c)),
                };
                let done = if *done { " done" } else { "" };
                writeln!(out, "#{n} {id}{bytes} {:.1}s{done}", elapsed.as_secs_f64())
            }
            Event::Done { duration, .. } => writeln!(out, "#{n} DONE {}", secs(*duration)),
            Event::Failed { error, .. } => writeln!(out, "#{n} ERROR: {error}"),
            Event::Cancelled { .. } => writeln!(out, "#{n} CANCELED"),
        };
    }
}

fn json(rx: mpsc::Receiver<(SystemTime, Event)>, summary: SummarySlot) {
    let stderr = std::io::stderr();
    let mut numbering = Numbering::default();
    for (t, mut ev) in rx {
        numbering.number(&mut ev);
        let mut v = serde_json::to_value(&ev).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            let ts = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            o.insert("time".into(), serde_json::json!(ts));
        }
        let mut out = stderr.lock();
        let _ = writeln!(out, "{v}");
    }
    let result = summary.lock().ok().and_then(|mut g| g.take());
    if let Some(r) = result {
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let v = serde_json::json!({
            "type": "result", "time": ts, "id": r.id, "digest": r.digest, "size": r.size,
        });
        let _ = writeln!(stderr.lock(), "{v}");
    }
}

pub(crate) fn vertex_of(e: &Event) -> &rbuild_solver::VertexRef {
    match e {
        Event::Started { vertex }
        | Event::Cached { vertex }
        | Event::CacheMiss { vertex, .. }
        | Event::Log { vertex, .. }
        | Event::Progress { vertex, .. }
        | Event::Done { vertex, .. }
        | Event::Failed { vertex, .. }
        | Event::Cancelled { vertex } => vertex,
    }
}

fn vertex_of_mut(e: &mut Event) -> &mut rbuild_solver::VertexRef {
    match e {
        Event::Started { vertex }
        | Event::Cached { vertex }
        | Event::CacheMiss { vertex, .. }
        | Event::Log { vertex, .. }
        | Event::Progress { vertex, .. }
        | Event::Done { vertex, .. }
        | Event::Failed { vertex, .. }
        | Event::Cancelled { vertex } => vertex,
    }
}

/// Bytes as the progress output shows them (`5.10MB`).
pub fn human(n: u64) -> String {
    scaled(n, |v| format!("{v:.2}"))
}

/// Bytes as `df` and `prune` show them, trailing zeros dropped (`5.1MB`, `2MB`).
pub fn human_short(n: u64) -> String {
    scaled(n, |v| {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    })
}

/// `n` in decimal units (B, kB, MB, GB, TB), the number above a byte written by `number`.
fn scaled(n: u64, number: impl Fn(f64) -> String) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut f = n as f64;
    let mut i = 0;
    while f >= 1000.0 && i < U.len() - 1 {
        f /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{}{}", number(f), U[i])
    }
}

/// What `mode` leaves on stderr for a rebuild that finds every step cached — the steps as the
/// solver reported them, the context load's and the total time left as holes — for the no-op
/// front to replay. None for json (its events carry times and digests of their own).
pub fn noop_replay(
    mode: Mode,
    steps: &[rbuild_noop::Step],
    summary: &Summary,
) -> Option<Vec<rbuild_noop::Part>> {
    use rbuild_noop::Part;
    let text = |s: String| Part::Text(s);
    let mut out = Vec::new();
    match mode {
        Mode::Json => return None,
        Mode::Quiet => {}
        Mode::Plain => {
            // As [`plain`]: a blank line between vertices, `#N name`, then its state.
            for (i, s) in steps.iter().enumerate() {
                let n = i + 1;
                let sep = if i > 0 { "\n" } else { "" };
                if s.cached {
                    out.push(text(format!("{sep}#{n} {}\n#{n} CACHED\n", s.name)));
                } else {
                    out.push(text(format!("{sep}#{n} {}\n#{n} DONE ", s.name)));
                    out.push(Part::CheckTime);
                    out.push(text("\n".into()));
                }
            }
        }
        Mode::Tty => {
            // As the live view's last frame ([`crate::tty::render`]).
            let paint = crate::tty::painter();
            let (mut cached, mut ran) = (0, 0);
            for s in steps {
                if s.cached {
                    cached += 1;
                    out.push(text(format!("{} {}\n", paint("34", "CACHED"), s.name)));
                } else {
                    ran += 1;
                    out.push(text(format!("{} {} ", paint("32", "DONE"), s.name)));
                    out.push(Part::CheckTime);
                    out.push(text("\n".into()));
                }
            }
            out.push(text(format!("{} in ", paint("1", "Finished"))));
            out.push(Part::Elapsed);
            out.push(text(format!(
                " ({cached} cached, {ran} run) image {} size {}\n",
                summary.id,
                human(summary.size)
            )));
        }
    }
    Some(out)
}
