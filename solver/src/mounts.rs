//! Helpers for `RUN --mount`: bind sources pinned by fd, read-write binds whose writes are
//! discarded, and the directories of
//! `type=cache` mounts (sharing, seeding from another input, first-use mode and owner).

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

/// A bind source resolved beneath its root, pinned: the object the O_PATH fd names is bind-mounted
/// (through `/proc/self/fd/N`, which is the object itself, not a path walk) on a private staging
/// point under the store. The sandbox then binds the staging point, whose path rbuild owns, so a
/// component of the source path swapped for a symlink after it was resolved cannot redirect the
/// mount (the TOCTOU window of binding by path string).
pub(crate) struct PinnedSource {
    /// The staging point: what to bind into the sandbox (or to use as an overlay lower dir).
    pub path: PathBuf,
    mounted: bool,
    dir: Option<tempfile::TempDir>,
}

impl PinnedSource {
    pub(crate) fn new(staging_parent: &Path, fd: &std::os::fd::OwnedFd) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        // stat through the magic link: the object itself.
        let meta = std::fs::metadata(&proc_path).map_err(|e| format!("stat: {e}"))?;
        std::fs::create_dir_all(staging_parent)
            .map_err(|e| format!("creating {}: {e}", staging_parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("bindsrc-")
            .tempdir_in(staging_parent)
            .map_err(|e| format!("staging dir for a bind: {e}"))?;
        let point = dir.path().join("src");
        if meta.is_dir() {
            std::fs::create_dir(&point)
        } else {
            std::fs::File::create(&point).map(drop)
        }
        .map_err(|e| format!("creating {}: {e}", point.display()))?;
        let spec = MountSpec {
            kind: MountSpec::BIND.to_string(),
            source: proc_path,
            options: vec!["rbind".to_string()],
        };
        mount::mount_all(&[spec], &point).map_err(|e| format!("pinning the source: {e}"))?;
        Ok(PinnedSource {
            path: point,
            mounted: true,
            dir: Some(dir),
        })
    }
}

impl Drop for PinnedSource {
    fn drop(&mut self) {
        if self.mounted && mount::unmount(&self.path).is_err() {
            // Still mounted: leak the staging dir rather than delete through the bind.
            if let Some(d) = self.dir.take() {
                let _ = d.keep();
            }
        }
    }
}

/// Where a cache mount is seeded from (`from=` and `source=`): the root of the `from` input, the
/// path inside it, whether owners are kept (another stage or an image: yes; a context: no) and a
/// digest naming that input (its cache key), so a different seed is a different cache.
pub(crate) struct CacheSeed<'a> {
    pub root: &'a Path,
    pub source: &'a str,
    pub keep_owner: bool,
    pub key: &'a rbuild_oci::Digest,
}

/// A cache mount's directory, with the lock that gives it to this step.
pub(crate) struct CacheDir {
    /// The cache's name under `cache-mounts` (see [`cache_name`]).
    pub name: String,
    pub path: PathBuf,
    _lock: std::fs::File,
}

/// Most private instances of one cache id (`sharing=private` with that many concurrent users).
const PRIVATE_INSTANCES: usize = 64;

/// The directory of `RUN --mount=type=cache` `id` under `parent` (the store's `cache-mounts`),
/// created on first use with `mode`/`uid`/`gid` and, with `seed`, the contents of `from`'s `source`.
/// Its name is a digest (of the id and the seed), so no id can reach outside `parent`.
///
/// Sharing, across every rbuild process on the store: `shared` holds a shared lock (any number of
/// users at once), `locked` an exclusive one (waits for every other user), `private` the first
/// instance (`<name>`, `<name>-1`, …) no one else holds, creating a fresh (empty, or seeded) one
/// when all are busy, as BuildKit does. Departure: `shared` and `locked` always use `<name>` and
/// wait while a `locked` or `private` user holds it, where BuildKit would hand them another free
/// instance; so every shared user of an id sees the same files.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cache_dir(
    parent: &Path,
    id: &str,
    sharing: rbuild_ops::CacheSharing,
    seed: Option<&CacheSeed<'_>>,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<CacheDir, String> {
    use rbuild_ops::CacheSharing;
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let name = cache_name(id, seed);
    let open_lock = |dir: &Path| -> Result<std::fs::File, String> {
        open_lock_file(&crate::layout::lock_path(dir))
    };
    let (path, lock) = match sharing {
        CacheSharing::Shared | CacheSharing::Locked => {
            let path = parent.join(&name);
            let f = open_lock(&path)?;
            let r = if sharing == CacheSharing::Shared {
                f.lock_shared()
            } else {
                f.lock()
            };
            r.map_err(|e| format!("locking {}: {e}", path.display()))?;
            (path, f)
        }
        CacheSharing::Private => {
            let mut found = None;
            for i in 0..PRIVATE_INSTANCES {
                let path = if i == 0 {
                    parent.join(&name)
                } else {
                    parent.join(format!("{name}-{i}"))
                };
                let f = open_lock(&path)?;
                match f.try_lock() {
                    Ok(()) => {
                        found = Some((path, f));
                        break;
                    }
                    Err(std::fs::TryLockError::WouldBlock) => continue,
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(format!("locking {}: {e}", path.display()))
                    }
                }
            }
            found.ok_or_else(|| {
                format!("more than {PRIVATE_INSTANCES} steps use private cache {id:?} at once")
            })?
        }
    };
    if !path.is_dir() {
        // First use: one creator at a time (shared users may arrive together).
        let mut p = path.as_os_str().to_owned();
        p.push(".init");
        let init = open_lock_file(&p)?;
        init.lock()
            .map_err(|e| format!("locking {}: {e}", Path::new(&p).display()))?;
        if !path.is_dir() {
            create_cache_dir(parent, &path, seed, mode, uid, gid)?;
        }
    }
    Ok(CacheDir {
        name,
        path,
        _lock: lock,
    })
}

/// Copy `source` out of the directory `from` into the root of `to`, as `COPY <source> /` would
/// (resolved beneath `from`, through `ignore`, owners kept or not).
pub(crate) fn copy_into(
    from: &Path,
    source: &str,
    to: &Path,
    ignore: &dyn rbuild_fileop::Excluder,
    keep_owner: bool,
) -> Result<(), String> {
    let src = rbuild_fileop::Root::open(from).map_err(|e| e.to_string())?;
    let dest = rbuild_fileop::Root::open(to).map_err(|e| e.to_string())?;
    let action = rbuild_ops::FileAction::Copy {
        input: 1,
        sources: vec![source.to_string()],
        dest: "/".into(),
        chown: None,
        chmod: None,
        unpack: false,
        parents: false,
        exclude: vec![],
        link: false,
    };
    let sources = [
        None,
        Some(rbuild_fileop::CopySource {
            root: &src,
            ignore,
            keep_owner,
        }),
    ];
    rbuild_fileop::apply(&dest, &[action], &sources, &Default::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The name of cache `id` (seeded by `seed`) under `cache-mounts`: a digest, so no id reaches
/// outside it. One step that mounts the same cache twice (any sharing) gets the directory it
/// already holds for both, as BuildKit does; taking a second lock would wait for itself.
pub(crate) fn cache_name(id: &str, seed: Option<&CacheSeed<'_>>) -> String {
    match seed {
        None => rbuild_oci::Digest::sha256_of(id.as_bytes())
            .hex()
            .to_string(),
        Some(s) => {
            rbuild_oci::Digest::sha256_of(format!("{id}\0{}\0{}", s.key, s.source).as_bytes())
                .hex()
                .to_string()
        }
    }
}

fn open_lock_file(p: &std::ffi::OsStr) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(|e| format!("opening {}: {e}", Path::new(p).display()))
}

/// Make `path` complete under a temporary name and rename it into place, so a crash or a
/// concurrent first use never leaves a half-seeded cache.
fn create_cache_dir(
    parent: &Path,
    path: &Path,
    seed: Option<&CacheSeed<'_>>,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)
        .map_err(|e| format!("creating a cache dir in {}: {e}", parent.display()))?;
    if let Some(s) = seed {
        copy_into(
            s.root,
            s.source,
            tmp.path(),
            &rbuild_fileop::NoExcludes,
            s.keep_owner,
        )
        .map_err(|e| format!("seeding from {}: {e}", s.source))?;
    }
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| format!("chmod {}: {e}", tmp.path().display()))?;
    std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", tmp.path().display()))?;
    let tmp = tmp.keep();
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        format!("creating {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn root_can_mount() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }

    #[test]
    fn pinned_source_is_the_resolved_object_not_the_path() {
        if !root_can_mount() {
            eprintln!("skipping: needs root to mount");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (ctx, host, staging) = (
            t.path().join("ctx"),
            t.path().join("host"),
            t.path().join("mnt"),
        );
        std::fs::create_dir_all(ctx.join("a")).unwrap();
        std::fs::write(ctx.join("a/mine"), "ctx").unwrap();
        std::fs::write(ctx.join("f"), "file").unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("host-secret"), "host").unwrap();
        let root = rbuild_fileop::Root::open(&ctx).unwrap();
        let dir_fd = root.resolve("a", true).unwrap();
        let file_fd = root.resolve("f", true).unwrap();
        // After resolution, the path is swapped for a symlink to a host directory.
        std::fs::rename(ctx.join("a"), ctx.join("b")).unwrap();
        std::os::unix::fs::symlink(&host, ctx.join("a")).unwrap();
        let pinned = PinnedSource::new(&staging, &dir_fd).unwrap();
        let names: Vec<String> = std::fs::read_dir(&pinned.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["mine".to_string()]);
        let f = PinnedSource::new(&staging, &file_fd).unwrap();
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), "file");
        let (p1, p2) = (pinned.path.clone(), f.path.clone());
        drop(pinned);
        drop(f);
        // Unmounted and removed on drop; the source is untouched.
        assert!(!p1.exists() && !p2.exists());
        assert_eq!(std::fs::read_to_string(ctx.join("b/mine")).unwrap(), "ctx");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(staging.to_str().unwrap()), "{mounts}");
    }
}
