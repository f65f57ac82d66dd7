//! # rbuild — the front
//!
//! The program users run. It answers one question itself: did an earlier run of this exact
//! command (same arguments, working directory and engine binary) leave a record whose every
//! input still reads the same (see `rbuild-noop`)? If so it replays that run's output and exits.
//! Everything else — every command without a record, every record with a changed input — it
//! hands, arguments untouched, to `rbuild-engine` beside it (the same process: `exec`), telling
//! the engine the command's key so it can record its answer. It knows no flag and no
//! subcommand: the engine decides what it can vouch for, and the record says what it read.
//!
//! This binary is small on purpose: after `drop_caches` a no-op rebuild's time is mostly the
//! kernel reading the program from disk, and the engine is 9 MB.
//!
//! `RBUILD_NOOP_CHECK=0` sends every command to the engine; `RBUILD_NOOP_CHECK=explain` says why
//! a command with a record went to the engine.

use rbuild_noop::{CHECK_ENV, KEY_ENV};
use std::ffi::OsString;
use std::io::Write;
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
    /// Not answered now: the engine records its answer under this key.
    Miss(String),
}

fn answer(argv: &[OsString], engine: &Path) -> Option<Answered> {
    let started = std::time::Instant::now();
    let check = rbuild_inputs::protocol_var(CHECK_ENV);
    if check.as_deref() == Some("0") {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let key = rbuild_noop::request_key(&engine_identity(engine)?, &cwd, &argv[1.min(argv.len())..]);
    // Records live in the default store (the engine writes none for another).
    let dir = rbuild_noop::records_dir(&rbuild_store::Store::default_root());
    let hit = match rbuild_noop::check(&dir, &key) {
        Ok(hit) => hit,
        Err(why) => {
            if check.as_deref() == Some("explain") {
                eprintln!("rbuild: no-op check: {why}; the engine runs");
            }
            return Some(Answered::Miss(key));
        }
    };
    let out = &hit.record.output;
    // The files first (as the engine, after the build): one that cannot be written is the
    // engine's to report.
    for f in &out.files {
        if std::fs::write(&f.path, &f.contents).is_err() {
            return Some(Answered::Miss(key));
        }
    }
    let elapsed = started.elapsed();
    let err = rbuild_noop::render(&out.stderr, hit.check_time, elapsed);
    let _ = std::io::stderr().write_all(err.as_bytes());
    let stdout = rbuild_noop::render(&out.stdout, hit.check_time, elapsed);
    let _ = std::io::stdout().write_all(stdout.as_bytes());
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
