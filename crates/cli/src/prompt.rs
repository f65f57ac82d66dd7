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
/// still echoed), restored afterwards whatever happens.
pub fn password(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg, Termios};
    struct Restore(Termios);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
        }
    }
    let saved = tcgetattr(std::io::stdin()).context("reading the terminal's settings")?;
    let _restore = Restore(saved.clone());
    let mut quiet = saved;
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(std::io::stdin(), SetArg::TCSANOW, &quiet).context("turning the echo off")?;
    line(prompt)
}
