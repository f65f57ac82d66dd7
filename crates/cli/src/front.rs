//! # rbuild — the front
//!
//! The program users run. It answers one question itself: is this `rbuild build` a rebuild that
//! an earlier build already answered, with nothing it read changed since (see `rbuild-noop`)? If
//! so it prints what the engine would print for a fully cached rebuild and exits. Everything
//! else — every other command, every build it cannot answer — it hands, arguments untouched, to
//! `rbuild-engine` beside it (the same process: `exec`), telling the engine the request's key so
//! it can record its answer.
//!
//! This binary is small on purpose: after `drop_caches` a no-op rebuild's time is mostly the
//! kernel reading the program from disk, and the engine is 9 MB.
//!
//! `RBUILD_NOOP_CHECK=0` sends every build to the engine; `RBUILD_NOOP_CHECK=explain` says why a
//! build it could answer went to the engine.

use rbuild_noop::{Mode, Request, CHECK_ENV, KEY_ENV};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const ENGINE: &str = "rbuild-engine";

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let engine = engine_path();
    let mut cmd = std::process::Command::new(&engine);
    if let Some(a0) = argv.first() {
        cmd.arg0(a0);
    }
    cmd.args(argv.iter().skip(1)).env_remove(KEY_ENV);
    match answer(&argv, &engine) {
        Some(Answered::Hit) => return ExitCode::SUCCESS,
        Some(Answered::Miss(key)) => {
            cmd.env(KEY_ENV, key);
        }
        None => {}
    }
    let err = cmd.exec();
    eprintln!(
        "error: cannot run the build engine {}: {err}\nhint: rbuild-engine is installed beside rbuild (install both binaries)",
        engine.display()
    );
    ExitCode::from(1)
}

/// `rbuild-engine` in the directory of this program (symlinks resolved).
fn engine_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(ENGINE)))
        .unwrap_or_else(|| PathBuf::from(ENGINE))
}

enum Answered {
    Hit,
    /// A request the check can answer, not answered now: the engine records it under this key.
    Miss(String),
}

fn answer(argv: &[OsString], engine: &Path) -> Option<Answered> {
    let started = std::time::Instant::now();
    let check = std::env::var_os(CHECK_ENV);
    if check.as_ref().is_some_and(|v| v == "0") {
        return None;
    }
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_str().map(str::to_string))
        .collect::<Option<_>>()?;
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let env = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cwd = std::env::current_dir().ok()?;
    let req = Request::parse(&args, &env, &vars, &cwd, std::io::stderr().is_terminal())?;
    let key = req.key(&engine_identity(engine)?);
    let hit = match rbuild_noop::check(&req.root, &key) {
        Ok(hit) => hit,
        Err(why) => {
            if check.is_some_and(|v| v == "explain") {
                eprintln!("rbuild: no-op check: {why}; the engine builds");
            }
            return Some(Answered::Miss(key));
        }
    };
    // The files first (as the engine, after the build): one that cannot be written is the
    // engine's to report.
    if let Some(f) = &req.iidfile {
        if std::fs::write(f, &hit.record.id).is_err() {
            return Some(Answered::Miss(key));
        }
    }
    if let Some(f) = &req.metadata_file {
        if hit.record.manifest.is_empty() {
            return Some(Answered::Miss(key));
        }
        let meta = rbuild_noop::build_metadata(&hit.record.manifest, &hit.record.id, &req.tags);
        if std::fs::write(f, meta).is_err() {
            return Some(Answered::Miss(key));
        }
    }
    let progress = match req.mode {
        Mode::Plain => rbuild_noop::render_plain(&hit),
        Mode::Tty => {
            let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            rbuild_noop::render_tty(&hit, started.elapsed(), color)
        }
        Mode::Quiet => String::new(),
    };
    let _ = std::io::stderr().write_all(progress.as_bytes());
    let _ = writeln!(std::io::stdout(), "{}", hit.record.id);
    rbuild_noop::touch(&hit.path);
    Some(Answered::Hit)
}

/// The engine binary's identity: a rebuilt or reinstalled engine makes every key new.
fn engine_identity(engine: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(engine).ok()?;
    Some(format!(
        "{}:{}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}
