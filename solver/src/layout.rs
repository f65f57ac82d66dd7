//! What the solver leaves in the store that other parts read, named in one place: the directory of
//! `RUN --mount=type=cache` contents (its names and locks: `--cache-to …,cache-mounts=true` exports
//! them) and the snapshots of unpacked base-image layers (snapshot GC keeps those of named images).

use rbuild_oci::Digest;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The store's directory of cache mounts.
pub fn cache_mounts_dir(store_root: &Path) -> PathBuf {
    store_root.join("cache-mounts")
}

/// A cache mount directory name as the solver makes one for an id (a lowercase sha256 hex):
/// `-N` private instances and temporary names are not.
pub fn is_cache_mount_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The lock file of the cache mount directory `dir` (`<dir>.lock`).
pub(crate) fn lock_path(dir: &Path) -> OsString {
    let mut p = dir.as_os_str().to_owned();
    p.push(".lock");
    p
}

/// Hold cache mount `name` as a `sharing=shared` user does: no `locked` or `private` user
/// changes it while the returned file is open.
pub fn lock_cache_mount_shared(store_root: &Path, name: &str) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(&cache_mounts_dir(store_root).join(name)))?;
    f.lock_shared()?;
    Ok(f)
}

/// The snapshot holding an unpacked base-image layer: `layer-<chain id>`.
pub fn layer_snapshot_name(chain_id: &Digest) -> String {
    format!("layer-{}", chain_id.hex())
}

/// The snapshot names of an image's layers (its config's diff ids), bottom first.
pub fn layer_snapshot_names(diff_ids: &[Digest]) -> Vec<String> {
    Digest::chain_ids(diff_ids)
        .iter()
        .map(layer_snapshot_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount_names_are_the_solver_s() {
        let made = crate::mounts::cache_name("go-build", None);
        assert!(is_cache_mount_name(&made));
        assert!(!is_cache_mount_name(&format!("{made}-1")));
        assert!(!is_cache_mount_name(&made.to_ascii_uppercase()));
        assert!(!is_cache_mount_name(".import-x"));
    }

    #[test]
    fn layer_names_use_chain_ids() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let names = layer_snapshot_names(&[a.clone(), b.clone()]);
        assert_eq!(names[0], format!("layer-{}", a.hex()));
        assert_eq!(
            names[1],
            format!("layer-{}", Digest::chain_id(Some(&a), &b).hex())
        );
    }
}
