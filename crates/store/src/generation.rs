//! The store's generation: a file (`<root>/generation`) given a new value before and after every
//! change that removes cache records, images or blobs, or replaces a cache record
//! ([`Store::changing`]). Anything that caches answers derived from the store (the no-op front's
//! records) reads it when it derives them and compares it when it uses them; the store knows
//! nothing of those caches.

use crate::{Result, Store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The generation file's name under the store root.
pub const GENERATION: &str = "generation";

impl Store {
    /// `<root>/generation` (absent before the first change).
    pub fn generation_path(&self) -> PathBuf {
        self.root().join(GENERATION)
    }

    /// Run `f`, a change that removes cache records, images or blobs or replaces a cache record,
    /// between two bumps of the generation: nothing derived before the first bump matches after
    /// it, and nothing derived while `f` ran (reading the first bump's value) matches after the
    /// second. The first bump must succeed. A new store operation of that kind must use this.
    pub(crate) fn changing<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let root = self.root();
        bump(root)
            .map_err(|e| self.io_err("bump the store's generation", &root.join(GENERATION), e))?;
        let out = f();
        let _ = bump(root);
        out
    }
}

/// Write a new value (time and process id) atomically and durably.
fn bump(root: &Path) -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let value = format!("{now}-{}", std::process::id());
    let path = root.join(GENERATION);
    let tmp = root.join(format!("{GENERATION}.tmp-{value}"));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(root)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
