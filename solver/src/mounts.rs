//! Helpers for `RUN --mount`: read-write binds whose writes are discarded, and the lock behind
//! `type=cache,sharing=locked`.

use rbuild_snapshotter::{mount, MountSpec};
use std::path::{Path, PathBuf};

/// A writable stand-in for a bind source (`RUN --mount=type=bind,rw`): an overlay with the source
/// as its lower dir for a directory, a private copy for a file. Writes land in a scratch dir that
/// is thrown away on drop; the source is never written.
pub(crate) struct RwScratch {
    /// What to bind into the sandbox.
    pub path: PathBuf,
    mounted: bool,
    dir: Option<tempfile::TempDir>,
}

impl RwScratch {
    pub(crate) fn new(scratch_parent: &Path, source: &Path) -> Result<RwScratch, String> {
        std::fs::create_dir_all(scratch_parent)
            .map_err(|e| format!("creating {}: {e}", scratch_parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("rwbind-")
            .tempdir_in(scratch_parent)
            .map_err(|e| format!("scratch dir for a rw bind: {e}"))?;
        let meta = std::fs::metadata(source)
            .map_err(|e| format!("bind source {}: {e}", source.display()))?;
        if !meta.is_dir() {
            let copy = dir.path().join("file");
            std::fs::copy(source, &copy)
                .map_err(|e| format!("copying bind source {}: {e}", source.display()))?;
            return Ok(RwScratch {
                path: copy,
                mounted: false,
                dir: Some(dir),
            });
        }
        let (upper, work, merged) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let spec = MountSpec {
            kind: MountSpec::OVERLAY.to_string(),
            source: PathBuf::from("overlay"),
            options: vec![
                format!("lowerdir={}", source.display()),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ],
        };
        mount::mount_all(&[spec], &merged)
            .map_err(|e| format!("overlay for a rw bind of {}: {e}", source.display()))?;
        Ok(RwScratch {
            path: merged,
            mounted: true,
            dir: Some(dir),
        })
    }
}

impl Drop for RwScratch {
    fn drop(&mut self) {
        if self.mounted {
            // Unmounted before the TempDir is removed: removal never reaches the source.
            if mount::unmount(&self.path).is_err() {
                // Still mounted: leak the scratch dir rather than delete through the overlay.
                if let Some(d) = self.dir.take() {
                    let _ = d.keep();
                }
            }
        }
    }
}

/// Hold an exclusive lock on a cache mount dir for the life of the returned file
/// (`sharing=locked`): every rbuild process on the store waits for it.
pub(crate) fn lock_cache_dir(dir: &Path) -> Result<std::fs::File, String> {
    let mut p = dir.as_os_str().to_owned();
    p.push(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| format!("opening {}: {e}", Path::new(&p).display()))?;
    f.lock()
        .map_err(|e| format!("locking {}: {e}", Path::new(&p).display()))?;
    Ok(f)
}
