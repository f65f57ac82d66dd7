//! A crash hook for the crash tests: `RBUILD_CRASH_AT=<point>[:n]` makes the process abort at the
//! `n`th (default first) time it reaches the named point. Inert (one env lookup, cached) without
//! the variable. Points: `layer-apply`, `blob-before-rename`, `blob-after-rename`,
//! `snapshot-commit`, `copy`, `run`, `cache-record`, `export`, `tag`, `pull-layer` (after a chunk
//! of a layer download is written, before the blob is committed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Abort the process (as `kill -9` would end it: no destructors, no cleanup) if `RBUILD_CRASH_AT`
/// names `point` and this is its `n`th hit.
pub fn crash_point(point: &str) {
    let target = TARGET.get_or_init(|| {
        let v = rbuild_inputs::var("RBUILD_CRASH_AT")?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n.max(1)))
    });
    if let Some((name, n)) = target {
        if name == point && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("rbuild: RBUILD_CRASH_AT={point}: aborting");
            std::process::abort();
        }
    }
}
