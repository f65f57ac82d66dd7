//! The live progress view on a terminal (indicatif): one line per step with its state and timer,
//! the last lines of output of running steps, byte progress (pulls, exports, layer commits), and a
//! summary at the end: total time, steps cached and run, image id and size. `NO_COLOR` turns the
//! colours off.

use crate::progress::{human, secs, vertex_of, SummarySlot};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_solver::Event;
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

struct Step {
    bar: ProgressBar,
    name: String,
    started: Instant,
    logs: VecDeque<String>,
    /// Byte progress by id: (current, total).
    bytes: BTreeMap<String, (u64, Option<u64>)>,
    running: bool,
    done: bool,
}

/// `paint(code, text)`: `text` in ANSI colour `code`, unless `NO_COLOR` is set and not empty
/// (https://no-color.org).
pub(crate) fn painter() -> impl Fn(&str, &str) -> String {
    let color = rbuild_inputs::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    move |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

pub fn render(rx: mpsc::Receiver<(SystemTime, Event)>, summary: SummarySlot) {
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let running = ProgressStyle::with_template("{spinner:.blue} {msg}").unwrap();
    let finished = ProgressStyle::with_template("{msg}").unwrap();
    let paint = painter();
    let mut steps: BTreeMap<u32, Step> = BTreeMap::new();
    let start = Instant::now();
    let (mut cached, mut ran) = (0, 0);
    let mut numbering = crate::progress::Numbering::default();
    loop {
        let ev = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((_, ev)) => Some(ev),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(mut ev) = ev {
            // Exports and pushes are shown as steps but not counted as build steps.
            let outside = numbering.number(&mut ev);
            let v = vertex_of(&ev).clone();
            let step = steps.entry(v.number).or_insert_with(|| {
                let bar = mp.add(ProgressBar::new_spinner());
                bar.set_style(running.clone());
                Step {
                    bar,
                    name: v.name.clone(),
                    started: Instant::now(),
                    logs: VecDeque::new(),
                    bytes: BTreeMap::new(),
                    running: false,
                    done: false,
                }
            });
            match ev {
                Event::Started { .. } => {
                    step.started = Instant::now();
                    step.running = true;
                }
                Event::Cached { .. } => {
                    cached += 1;
                    step.done = true;
                    step.bar.set_style(finished.clone());
                    step.bar.finish_with_message(format!(
                        "{} {}",
                        paint("34", "CACHED"),
                        step.name
                    ));
                }
                Event::Log { line, .. } => {
                    if step.logs.len() == 6 {
                        step.logs.pop_front();
                    }
                    step.logs.push_back(line);
                }
                Event::Done { duration, .. } => {
                    if !outside {
                        ran += 1;
                    }
                    step.done = true;
                    step.bar.set_style(finished.clone());
                    step.bar.finish_with_message(format!(
                        "{} {} {}",
                        paint("32", "DONE"),
                        step.name,
                        secs(duration)
                    ));
                }
                Event::Failed { error, .. } => {
                    step.done = true;
                    step.bar.set_style(finished.clone());
                    let tail: Vec<String> =
                        step.logs.iter().map(|l| format!("\n  > {l}")).collect();
                    step.bar.finish_with_message(format!(
                        "{} {}: {error}{}",
                        paint("31", "ERROR"),
                        step.name,
                        tail.concat()
                    ));
                }
                Event::Cancelled { .. } => {
                    step.done = true;
                    step.bar.set_style(finished.clone());
                    step.bar.finish_with_message(format!(
                        "{} {}",
                        paint("33", "CANCELED"),
                        step.name
                    ));
                }
                Event::Progress {
                    id,
                    current,
                    total,
                    done,
                    ..
                } => {
                    step.running = true;
                    if done {
                        step.bytes.remove(&id);
                    } else {
                        step.bytes.insert(id, (current, total));
                    }
                }
                Event::CacheMiss { .. } => {}
            }
        }
        for s in steps.values() {
            if s.done {
                continue;
            }
            if !s.running {
                s.bar
                    .set_message(format!("{} {}", paint("2", "waiting"), s.name));
                s.bar.tick();
                continue;
            }
            let bytes: Vec<String> = s
                .bytes
                .iter()
                .map(|(id, (cur, tot))| match tot {
                    Some(t) => format!("\n    {id} {}/{}", human(*cur), human(*t)),
                    None => format!("\n    {id} {}", human(*cur)),
                })
                .collect();
            let tail: Vec<String> = s.logs.iter().map(|l| format!("\n    {l}")).collect();
            s.bar.set_message(format!(
                "{} {}{}{}",
                s.name,
                secs(s.started.elapsed()),
                bytes.concat(),
                tail.concat()
            ));
            s.bar.tick();
        }
    }
    let _ = mp.clear();
    for s in steps.values() {
        if let Some(m) = s.bar.message().lines().next() {
            eprintln!("{m}");
        }
    }
    let result = summary.lock().ok().and_then(|mut g| g.take());
    match result {
        Some(r) => eprintln!(
            "{} in {} ({} cached, {} run) image {} size {}",
            paint("1", "Finished"),
            secs(start.elapsed()),
            cached,
            ran,
            r.id,
            human(r.size)
        ),
        None => eprintln!(
            "{} after {} ({} cached, {} run)",
            paint("1;31", "Failed"),
            secs(start.elapsed()),
            cached,
            ran
        ),
    }
}
