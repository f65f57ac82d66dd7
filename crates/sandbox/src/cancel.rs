//! [`Cancel`]: a token another thread uses to stop a run.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

/// A cancellation token, shared by clones. [`Cancel::cancel`] makes every [`crate::run`] that
/// holds a clone kill everything its command started and return
/// [`crate::SandboxError::Cancelled`]. One token may serve many runs (a whole build); once
/// cancelled it stays cancelled.
#[derive(Clone, Debug)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cancelled: AtomicBool,
    /// Becomes (and stays) readable on cancel, so a supervisor's poll() wakes up. `None` if the
    /// eventfd could not be created; supervisors then poll the flag on a short timer.
    wake: Option<EventFd>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A fresh, not cancelled token.
    pub fn new() -> Self {
        let wake =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok();
        Cancel {
            inner: Arc::new(Inner {
                cancelled: AtomicBool::new(false),
                wake,
            }),
        }
    }

    /// Cancel every run using this token (now and in the future).
    pub fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::SeqCst) {
            if let Some(fd) = &self.inner.wake {
                // Never read back: the eventfd stays readable for every poller. A failed write
                // only means pollers notice through their timer.
                let _ = fd.write(1);
            }
        }
    }

    /// True once [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    pub(crate) fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.wake.as_ref().map(|f| f.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_shared_and_sticky() {
        let a = Cancel::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        a.cancel();
        a.cancel();
        assert!(b.is_cancelled());
        let fd = b.wake_fd().expect("eventfd");
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap();
        assert_eq!(n, 1);
    }
}
