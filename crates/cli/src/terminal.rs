//! Settings of the terminal on stdin that rbuild changes for a while (a password prompt's echo,
//! `rbuild run -it`'s raw mode) and puts back whatever happens: when the change's guard is
//! dropped, or first from a signal handler (moby/term's approach: restore, then end).

use nix::sys::termios::{tcsetattr, SetArg, Termios};
use std::sync::{Mutex, MutexGuard};

/// The settings to put back, while a [`Held`] exists.
static HELD: Mutex<Option<Termios>> = Mutex::new(None);

fn held() -> MutexGuard<'static, Option<Termios>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// stdin's terminal settings from before a change, put back when this is dropped (or earlier by
/// [`restore`]).
pub struct Held(());

impl Held {
    /// Hold `saved` (read before changing anything) to be put back.
    pub fn new(saved: Termios) -> Held {
        *held() = Some(saved);
        Held(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        restore();
    }
}

/// Put the held settings back now, if some are held; true if there were.
pub fn restore() -> bool {
    let saved = held().take();
    match saved {
        Some(saved) => {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &saved);
            true
        }
        None => false,
    }
}
