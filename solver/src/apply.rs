//! Making committed snapshots by filling a fresh one: applying a layer blob (verifying its
//! diff_id), or writing a download or a git checkout ([`commit_filled`]).

use crate::naming::unique;
use crate::seam::Snapshots;
use rbuild_oci::Digest;
use rbuild_snapshotter::{diff, Changes};
use rbuild_store::Store;
use std::path::Path;

/// Apply the layer blob `blob` on top of snapshot `parent`, committing it as `name`; its
/// uncompressed stream must hash to `diff_id`. When another build or process commits `name` first,
/// that snapshot is used (the name fixes its content).
pub(crate) fn apply_blob(
    store: &Store,
    snaps: &dyn Snapshots,
    blob: &Digest,
    diff_id: &Digest,
    parent: Option<&str>,
    name: &str,
) -> Result<(), String> {
    commit_filled(snaps, "apply", parent, name, |upper, key| {
        let f = store
            .open_blob(blob)
            .map_err(|e| format!("layer {blob}: {e}"))?;
        let (reader, compressed) = diff::decompress_counted(std::io::BufReader::new(f))
            .map_err(|e| format!("layer {blob}: {e}"))?;
        let mut hashing = rbuild_oci::Sha256Writer::new(std::io::sink());
        let tee = TeeReader {
            inner: reader,
            hash: &mut hashing,
        };
        let mut budgets =
            diff::ApplyOptions::from_env().map_err(|e| format!("layer {blob}: {e}"))?;
        budgets.compressed_bytes = Some(compressed);
        // What the layers below show: parent symlinks there are followed (within the rootfs).
        budgets.lowers = match snaps.changes(key)? {
            Changes::Upper { lowers, .. } => lowers,
            Changes::Tree { tree, .. } => vec![tree],
        };
        diff::apply_layer(tee, upper, &budgets).map_err(|e| format!("layer {blob}: {e}"))?;
        rbuild_store::crash_point("layer-apply");
        let (got, _, _) = hashing.finish();
        if &got != diff_id {
            return Err(format!(
                "layer {blob}: uncompressed digest {got} does not match the config's diff_id {diff_id}"
            ));
        }
        Ok(())
    })
}

/// Commit `name` as a new snapshot on `parent` (None: empty) whose changes `fill` writes into
/// the upper dir it is given (overlay format; with the active snapshot's key). On failure the active snapshot is removed; when
/// another build or process committed `name` meanwhile, that snapshot is used (the name fixes
/// its content). `prefix` names the temporary active snapshot.
pub(crate) fn commit_filled(
    snaps: &dyn Snapshots,
    prefix: &str,
    parent: Option<&str>,
    name: &str,
    fill: impl FnOnce(&Path, &str) -> Result<(), String>,
) -> Result<(), String> {
    let key = unique(prefix);
    snaps
        .prepare(&key, parent)
        .map_err(|e| format!("preparing snapshot: {e}"))?;
    let res = snaps
        .upper_dir(&key)
        .and_then(|upper| fill(&upper, &key))
        .and_then(|()| {
            snaps
                .commit(name, &key)
                .map_err(|e| format!("committing snapshot: {e}"))
        });
    if res.is_err() {
        let _ = snaps.remove(&key);
        if snaps.exists(name) {
            return Ok(());
        }
    }
    res
}

struct TeeReader<'a, R: std::io::Read> {
    inner: R,
    hash: &'a mut rbuild_oci::Sha256Writer<std::io::Sink>,
}

impl<R: std::io::Read> std::io::Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(self.hash, &buf[..n])?;
        Ok(n)
    }
}

impl<R: std::io::Read> Drop for TeeReader<'_, R> {
    fn drop(&mut self) {
        // Hash whatever trailing bytes the tar reader did not consume (padding after the end
        // marker), so the digest covers the whole uncompressed stream.
        let _ = std::io::copy(&mut self.inner, self.hash);
    }
}
