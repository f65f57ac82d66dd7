//! Build history: each `rbuild build` records itself (see `rbuild-history`) through a [`Tap`] on
//! its progress events (the full plain log and the steps' timings), and `rbuild history
//! ls|logs|inspect` shows the records. `rbuild history IMAGE` (any other first word) is the
//! image's layer history, as docker's.

use crate::progress::{Numbering, Plain};
use rbuild_history::{Record, Status, Step};
use rbuild_solver::Event;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::time::SystemTime;

/// What a running build's history record collects.
struct TapState {
    log: Option<std::fs::File>,
    plain: Plain,
    numbering: Numbering,
    t0: SystemTime,
    steps: BTreeMap<u32, Step>,
}

impl TapState {
    fn event(&mut self, t: SystemTime, mut ev: Event) {
        self.numbering.number(&mut ev);
        let v = crate::progress::vertex_of(&ev);
        let since = |a: SystemTime, b: SystemTime| {
            a.duration_since(b).unwrap_or_default().as_millis() as u64
        };
        let start_ms = since(t, self.t0);
        let step = self.steps.entry(v.number).or_insert_with(|| Step {
            number: v.number,
            name: v.name.clone(),
            outcome: "started".into(),
            start_ms,
            duration_ms: 0,
            cache_miss: None,
        });
        match &ev {
            Event::Cached { .. } => step.outcome = "cached".into(),
            Event::CacheMiss { reason, .. } => step.cache_miss = Some(reason.clone()),
            Event::Done { duration, .. } => {
                if step.outcome != "cached" {
                    step.outcome = "run".into();
                }
                step.duration_ms = duration.as_millis() as u64;
            }
            Event::Failed { duration, .. } => {
                step.outcome = "failed".into();
                step.duration_ms = duration.as_millis() as u64;
            }
            Event::Cancelled { .. } => step.outcome = "cancelled".into(),
            _ => {}
        }
        if let Some(f) = &mut self.log {
            self.plain.write(f, t, ev);
        }
    }
}

/// The history's view of a build's progress events.
#[derive(Clone)]
pub struct Tap(Arc<Mutex<TapState>>);

impl Tap {
    /// Feed every event of `rx` to the tap, then on to the returned receiver (the renderer).
    pub fn forward(
        self,
        rx: mpsc::Receiver<(SystemTime, Event)>,
    ) -> mpsc::Receiver<(SystemTime, Event)> {
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            for (t, ev) in rx {
                if let Ok(mut s) = self.0.lock() {
                    s.event(t, ev.clone());
                }
                // A renderer that went away does not stop the recording.
                let _ = tx.send((t, ev));
            }
        });
        out
    }
}

/// One build's record in the making; [`Recorder::finish`] writes it.
pub struct Recorder {
    root: PathBuf,
    record: Record,
    tap: Tap,
}

impl Recorder {
    /// Start the record of the build `args` asks for, in the store at `root`.
    pub fn start(root: &Option<PathBuf>, tags: &[String], target: Option<String>) -> Recorder {
        let root = root
            .clone()
            .unwrap_or_else(rbuild_store::Store::default_root);
        let request = rbuild_history::Request {
            args: std::env::args().skip(1).collect(),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            tags: tags.to_vec(),
            target,
        };
        let record = Record::start(request);
        // No log file until the store exists (a build refused before opening it makes none).
        let log = if root.is_dir() {
            rbuild_history::create_log(&root, &record.id).ok()
        } else {
            None
        };
        let tap = Tap(Arc::new(Mutex::new(TapState {
            log,
            plain: Plain::default(),
            numbering: Numbering::default(),
            t0: SystemTime::now(),
            steps: BTreeMap::new(),
        })));
        Recorder { root, record, tap }
    }

    pub fn tap(&self) -> Tap {
        self.tap.clone()
    }

    pub fn inputs(&mut self, inputs: &[(String, String)]) {
        self.record.inputs = inputs
            .iter()
            .map(|(n, d)| rbuild_history::Input {
                name: n.clone(),
                digest: d.clone(),
            })
            .collect();
    }

    /// Append what was printed after the progress (an error, warnings) to the log.
    pub fn log(&mut self, text: &str) {
        if let Ok(mut s) = self.tap.0.lock() {
            if let Some(f) = &mut s.log {
                let _ = f.write_all(text.as_bytes());
            }
        }
    }

    /// Write the record: how it ended, and the image when built. Never fails the build.
    pub fn finish(
        mut self,
        status: Status,
        image: Option<(String, String)>,
        error: Option<String>,
        exit_code: u8,
    ) {
        if !self.root.is_dir() {
            return;
        }
        let mut s = match self.tap.0.lock() {
            Ok(s) => s,
            Err(e) => e.into_inner(),
        };
        if s.log.is_none() {
            // The store was made by this build: its log starts here.
            s.log = rbuild_history::create_log(&self.root, &self.record.id).ok();
        }
        if let Some(f) = &mut s.log {
            let _ = f.flush();
        }
        self.record.steps = s.steps.values().cloned().collect();
        self.record.duration_ms = s.t0.elapsed().unwrap_or_default().as_millis() as u64;
        drop(s);
        self.record.status = status;
        if let Some((id, manifest)) = image {
            self.record.image = Some(id);
            self.record.manifest = Some(manifest);
        }
        self.record.error = error;
        self.record.exit_code = exit_code;
        if let Err(e) = rbuild_history::write(&self.root, &self.record) {
            tracing::debug!("writing the build's history record: {e}");
        }
        rbuild_history::bound(&self.root, rbuild_history::Limits::from_env());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `rbuild history WORDS…`: `ls`, `logs ID`, `inspect ID`, or an image.
pub fn history(
    root: &Option<PathBuf>,
    words: &[String],
    no_trunc: bool,
    format: Option<Format>,
) -> anyhow::Result<ExitCode> {
    let store_root = root
        .clone()
        .unwrap_or_else(rbuild_store::Store::default_root);
    let json = format == Some(Format::Json);
    let one = |what: &str| -> anyhow::Result<Record> {
        match words {
            [_, id] => rbuild_history::find(&store_root, id).map_err(anyhow::Error::new),
            _ => Err(crate::args::usage(format!(
                "rbuild history {what} needs one build id (rbuild history ls lists them)"
            ))),
        }
    };
    match words.first().map(String::as_str) {
        Some("ls") => {
            if words.len() > 1 {
                return Err(crate::args::usage("rbuild history ls takes no arguments"));
            }
            let all = rbuild_history::list(&store_root);
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", table(&all));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some("logs") => {
            let rec = one("logs")?;
            let path = rbuild_history::log_path(&store_root, &rec.id);
            let mut f = std::fs::File::open(&path).map_err(|e| {
                anyhow::anyhow!("build {}: its log {}: {e}", rec.id, path.display())
            })?;
            std::io::copy(&mut f, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Some("inspect") => {
            let rec = one("inspect")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rec)?);
            } else {
                print!("{}", inspect(&rec));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(image) => {
            if words.len() > 1 {
                return Err(crate::args::usage(format!(
                    "rbuild history {}: an image takes no more arguments (the build history: rbuild history ls|logs ID|inspect ID)",
                    words.join(" ")
                )));
            }
            if format.is_some() {
                return Err(crate::args::usage(
                    "--format is for rbuild history ls|inspect, not an image's history",
                ));
            }
            crate::images::history(&crate::open_store(root)?, image, no_trunc)
        }
        None => Err(crate::args::usage(
            "rbuild history needs IMAGE, or ls, logs ID, inspect ID",
        )),
    }
}

fn ref_of(r: &Record) -> String {
    if r.request.tags.is_empty() {
        "-".into()
    } else {
        r.request.tags.join(",")
    }
}

fn duration(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// `rbuild history ls`: newest first.
pub fn table(all: &[Record]) -> String {
    let mut rows = vec![[
        "BUILD ID".to_string(),
        "REF".into(),
        "STATUS".into(),
        "STARTED".into(),
        "DURATION".into(),
        "CACHED".into(),
        "RUN".into(),
    ]];
    for r in all {
        let (cached, ran) = r.counts();
        rows.push([
            r.id.clone(),
            ref_of(r),
            r.status.as_str().into(),
            utc(r.started),
            duration(r.duration_ms),
            cached.to_string(),
            ran.to_string(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (w, c)) in widths.iter().zip(row).enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `rbuild history inspect ID`.
pub fn inspect(r: &Record) -> String {
    let (cached, ran) = r.counts();
    let mut out = format!(
        "Build:     {}\nStatus:    {}\nStarted:   {}\nDuration:  {}\nRef:       {}\nCommand:   rbuild {}\nDirectory: {}\n",
        r.id,
        r.status.as_str(),
        utc(r.started),
        duration(r.duration_ms),
        ref_of(r),
        r.request.args.join(" "),
        r.request.cwd,
    );
    if let Some(t) = &r.request.target {
        out.push_str(&format!("Target:    {t}\n"));
    }
    if let Some(i) = &r.image {
        out.push_str(&format!("Image:     {i}\n"));
    }
    if let Some(m) = &r.manifest {
        out.push_str(&format!("Manifest:  {m}\n"));
    }
    if !r.inputs.is_empty() {
        out.push_str("Inputs:\n");
        for i in &r.inputs {
            out.push_str(&format!("  {}  {}\n", i.digest, i.name));
        }
    }
    out.push_str(&format!("Steps ({cached} cached, {ran} run):\n"));
    for s in &r.steps {
        let time = if s.outcome == "cached" {
            String::new()
        } else {
            format!(" {}", duration(s.duration_ms))
        };
        out.push_str(&format!(
            "  #{:<3} {:<9}{time:>7}  {}\n",
            s.number, s.outcome, s.name
        ));
        if let Some(m) = &s.cache_miss {
            out.push_str(&format!("        cache miss: {m}\n"));
        }
    }
    if let Some(e) = &r.error {
        out.push_str("Error:\n");
        for l in e.lines() {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}

/// Seconds since 1970 as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(secs: f64) -> String {
    let s = secs.max(0.0) as i64;
    let (days, rem) = (s.div_euclid(86400), s.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Whether the store at `root` keeps history (for `rbuild prune`'s report).
pub fn prune(root: &Path, dry_run: bool) -> (usize, u64) {
    rbuild_history::prune(root, dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_420_159.5), "2026-12-04 21:35:59 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
    }
}
