//! Unpacking an image's layers into snapshots outside a build (for `rbuild run`).

use rbuild_oci::Digest;
use rbuild_snapshotter::{diff, Snapshotter};
use rbuild_store::Store;
use std::io::Read;

/// Unpack every layer of the image `manifest` (already in `store`) into committed snapshots named
/// `layer-<chain id>` — the names builds use, so both share them — skipping those present, and
/// verifying each layer's diff_id. Returns the top snapshot's name (`None` for an image without
/// layers).
pub fn unpack_image(
    store: &Store,
    snapshotter: &Snapshotter,
    manifest: &Digest,
) -> Result<Option<String>, String> {
    let m = rbuild_image::read_manifest(store, manifest)
        .map_err(|e| format!("reading manifest {manifest}: {e}"))?;
    let config = rbuild_image::read_config(store, &m.config.digest)
        .map_err(|e| format!("reading config {}: {e}", m.config.digest))?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(format!(
            "manifest {manifest} has {} layers but its config lists {} diff_ids",
            m.layers.len(),
            config.rootfs.diff_ids.len()
        ));
    }
    let mut prev: Option<Digest> = None;
    let mut parent: Option<String> = None;
    for (layer, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        let cid = match &prev {
            None => diff_id.clone(),
            Some(p) => Digest::sha256_of(format!("{p} {diff_id}").as_bytes()),
        };
        let name = format!("layer-{}", cid.hex());
        if snapshotter.stat(&name).ok().flatten().is_none() {
            apply(
                store,
                snapshotter,
                &layer.digest,
                diff_id,
                parent.as_deref(),
                &name,
            )?;
        }
        prev = Some(cid);
        parent = Some(name);
    }
    Ok(parent)
}

fn apply(
    store: &Store,
    snaps: &Snapshotter,
    blob: &Digest,
    diff_id: &Digest,
    parent: Option<&str>,
    name: &str,
) -> Result<(), String> {
    let key = format!("unpack-{}-{}", std::process::id(), &name[6..]);
    snaps
        .prepare(&key, parent)
        .map_err(|e| format!("preparing snapshot: {e}"))?;
    let res = (|| {
        let upper = snaps.upper_dir(&key).map_err(|e| e.to_string())?;
        let f = store
            .open_blob(blob)
            .map_err(|e| format!("layer {blob}: {e}"))?;
        let mut reader = diff::decompress(std::io::BufReader::new(f))
            .map_err(|e| format!("layer {blob}: {e}"))?;
        let mut hashing = rbuild_oci::Sha256Writer::new(std::io::sink());
        {
            let tee = Tee {
                inner: &mut reader,
                hash: &mut hashing,
            };
            let opts = diff::ApplyOptions::from_env().map_err(|e| format!("layer {blob}: {e}"))?;
            diff::apply_layer(tee, &upper, &opts).map_err(|e| format!("layer {blob}: {e}"))?;
        }
        // Hash trailing padding the tar reader did not consume.
        std::io::copy(&mut reader, &mut hashing).map_err(|e| format!("layer {blob}: {e}"))?;
        let (got, _, _) = hashing.finish();
        if &got != diff_id {
            return Err(format!(
                "layer {blob}: uncompressed digest {got} does not match the config's diff_id {diff_id}"
            ));
        }
        snaps
            .commit(name, &key)
            .map_err(|e| format!("committing snapshot: {e}"))
    })();
    if res.is_err() {
        let _ = snaps.remove(&key);
        if snaps.stat(name).ok().flatten().is_some() {
            return Ok(()); // committed by a concurrent unpack
        }
    }
    res
}

struct Tee<'a, R: Read> {
    inner: &'a mut R,
    hash: &'a mut rbuild_oci::Sha256Writer<std::io::Sink>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(self.hash, &buf[..n])?;
        Ok(n)
    }
}
