//! Names the solver gives: temporary snapshot keys and mountpoints, and step snapshots (base-layer
//! snapshots and cache-mount directories are named in [`crate::layout`]).

use crate::time::now_unix;
use rbuild_oci::Digest;
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A process-unique name for an active snapshot or a mountpoint.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        now_unix(),
        TMP_COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The snapshot (and step lock) a step's result is committed under: named by its cache key.
pub(crate) fn step_name(key: &Digest) -> String {
    format!("step-{}", key.hex())
}
