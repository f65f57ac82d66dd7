//! Byte-level progress of blob transfers, reported through a callback.

use rbuild_oci::Digest;

/// One step of a blob transfer. Events for different blobs interleave (blobs move in parallel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A transfer starts (or restarts from `offset` after an interruption).
    Started {
        digest: Digest,
        total: u64,
        offset: u64,
    },
    /// `done` of `total` bytes of this blob have moved.
    Bytes {
        digest: Digest,
        done: u64,
        total: u64,
    },
    /// Nothing to move: the destination already had it.
    Skipped { digest: Digest },
    /// The registry mounted it from another repository: no bytes moved.
    Mounted { digest: Digest, from: String },
    /// The blob is complete and verified.
    Done { digest: Digest, total: u64 },
}

/// The callback type: called from the transferring tasks, so it must be cheap and thread-safe.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// A callback that ignores everything.
pub fn no_progress() -> ProgressFn<'static> {
    &|_| {}
}
