//! Asking the user at the terminal (for `rbuild login`): a line with echo, a password without.
//!
//! Prompts go to stderr (stdout carries only data); answers are read from stdin, which must be a
//! terminal: callers check [`stdin_is_terminal`] first and otherwise say which flag to use.

use anyhow::{bail, Context as _};
use std::io::{BufRead as _, IsTerminal as _, Write as _};

/// Whether stdin is a terminal someone can answer a prompt on.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Print `prompt` on stderr and read one line from stdin, without its line ending.
pub fn line(prompt: &str) -> anyhow::Result<String> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let mut s = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut s)
        .context("reading the answer from the terminal")?;
    if n == 0 {
        bail!("no answer: the terminal closed its input");
    }
    let s = s.strip_suffix('\n').unwrap_or(&s);
    Ok(s.strip_suffix('\r').unwrap_or(s).to_string())
}

/// Like [`line`], with the terminal's echo off while the answer is typed (the final newline is
/// still echoed), restored afterwards whatever happens — Ctrl-C included: SIGINT while the
/// echo is off puts the terminal back, ends the line and exits 130, as `docker login` restores
/// the terminal (moby/term's interrupt handler; docker exits 1).
pub fn password(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let saved = tcgetattr(std::io::stdin()).context("reading the terminal's settings")?;
    // The handler is in place before the echo goes off, so no Ctrl-C can slip between. Without
    // one (no thread or runtime to be had) the prompt still works, as it did before.
    let _ = watch_interrupts();
    let mut quiet = saved.clone();
    let _restore = crate::terminal::Held::new(saved);
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(std::io::stdin(), SetArg::TCSANOW, &quiet).context("turning the echo off")?;
    line(prompt)
}

/// Handle SIGINT from now on (once per process): a thread with its own small runtime waits for
/// it, restores the terminal if a prompt holds its settings ([`crate::terminal::Held`]), and exits 130. Once caught, SIGINT cannot
/// go back to its default action (tokio keeps the handler for the life of the process), so
/// outside a prompt it exits 130 just the same, as the default action would end the process.
fn watch_interrupts() -> Result<(), String> {
    static STARTED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let started = STARTED.get_or_init(|| {
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("sigint".into())
            .spawn(move || {
                use tokio::signal::unix::{signal, SignalKind};
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return ready_tx.send(Err(e.to_string())),
                };
                let _in_rt = rt.enter();
                let mut sigint = match signal(SignalKind::interrupt()) {
                    Ok(s) => s,
                    Err(e) => return ready_tx.send(Err(e.to_string())),
                };
                let _ = ready_tx.send(Ok(()));
                rt.block_on(sigint.recv());
                if crate::terminal::restore() {
                    // The next shell prompt starts on a line of its own.
                    eprintln!();
                }
                std::process::exit(130);
            });
        match spawned {
            Ok(_) => ready
                .recv()
                .unwrap_or_else(|_| Err("the signal thread ended".into())),
            Err(e) => Err(e.to_string()),
        }
    });
    started.clone()
}
