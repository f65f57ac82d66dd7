//! The no-op front's record of a build (see `rbuild-noop`): every input the build read — the
//! reads `rbuild_inputs` noted while it ran, plus the ref files, blobs and database it stood on
//! and the context selections it copied — and its exact output, for the front to replay while
//! every input still holds.

use crate::resolver::{Answer, StoreResolver};
use rbuild_noop::{Output, Part, Record, Step, Written};
use rbuild_store::{ImageRecord, Store};

/// The display's replay of a fully cached rebuild of `steps`: `(stdout, stderr)`.
type Replay<'a> = dyn FnOnce(&[Step]) -> Option<(Vec<Part>, Vec<Part>)> + 'a;

/// Write the record under the key the front gave (`RBUILD_NOOP_KEY`), if it gave one and the
/// build is one the front can answer. `files`: what the build wrote (`--iidfile`,
/// `--metadata-file`), written by the front before anything is printed. Never fails the build.
pub(crate) fn write<'a>(
    store: &Store,
    resolver: &StoreResolver,
    result: &rbuild_solver::SolveResult,
    image: &ImageRecord,
    tags: &[String],
    files: Vec<Written>,
    replay: impl FnOnce(&[Step]) -> Option<(Vec<Part>, Vec<Part>)> + 'a,
) {
    let Some(key) = rbuild_inputs::protocol_var(rbuild_noop::KEY_ENV) else {
        return;
    };
    let rec = match record(
        store,
        resolver,
        result,
        image,
        tags,
        files,
        Box::new(replay),
    ) {
        Ok(r) => r,
        Err(why) => {
            tracing::debug!("no no-op record: {why}");
            return;
        }
    };
    let dir = rbuild_noop::records_dir(store.root());
    if let Err(e) = rbuild_noop::write_record(&dir, &key, &rec) {
        tracing::debug!("writing the no-op record: {e}");
    }
}

fn record(
    store: &Store,
    resolver: &StoreResolver,
    result: &rbuild_solver::SolveResult,
    image: &ImageRecord,
    tags: &[String],
    files: Vec<Written>,
    replay: Box<Replay<'_>>,
) -> Result<Record, String> {
    use rbuild_inputs::Read;
    // The front looks for records in the default store only (it knows no `--root`).
    if store.root() != Store::default_root() {
        return Err("the store is not the default one (--root)".into());
    }
    let stamp = result
        .stamp
        .as_ref()
        .ok_or("an input is not a local context or image, or changed while read")?;
    let file = |path: std::path::PathBuf, bytes: &[u8]| {
        rbuild_inputs::note(Read::File {
            path,
            sha256: Some(rbuild_oci::sha256_hex(bytes)),
        })
    };
    let blob = |d: &rbuild_oci::Digest| rbuild_inputs::present(&store.blob_path(d));
    for answer in resolver.answers() {
        match answer {
            Answer::Named(name, image) => {
                let (path, bytes) = store.ref_file(&name, &image).map_err(|e| e.to_string())?;
                file(path, &bytes);
            }
            Answer::Pinned(d) => blob(&d),
            Answer::Other => return Err("a base image came from elsewhere than the store".into()),
        }
    }
    for t in tags {
        let (path, bytes) = store.ref_file(t, image).map_err(|e| e.to_string())?;
        file(path, &bytes);
    }
    // Every blob the engine would read for the same rebuild: the image's, each base image's
    // manifest and config, and every layer a step's cache record needs.
    for m in std::iter::once(&result.manifest).chain(stamp.images.iter().map(|(_, m)| m)) {
        let manifest = rbuild_image::read_manifest(store, m).map_err(|e| e.to_string())?;
        blob(m);
        blob(&manifest.config.digest);
        manifest.layers.iter().for_each(|l| blob(&l.digest));
    }
    stamp.blobs.iter().for_each(blob);
    if !rbuild_inputs::note_identity(store.database_path()) {
        return Err("the store has no database file".into());
    }
    let reads = rbuild_inputs::global().reads()?;
    let (stdout, stderr) = replay(&stamp.steps).ok_or("this display is not replayed")?;
    let output = Output {
        stdout,
        stderr,
        files,
    };
    let mut rec = Record::new(reads, stamp.selections.clone(), output);
    rec.keys = stamp.keys.iter().map(|k| k.to_string()).collect();
    Ok(rec)
}
