//! Base images: their manifest and config, their layers, and unpacking them into snapshots named
//! by chain id (shared by builds and `rbuild run`, see [`unpack_image`]).

use crate::apply::apply_blob;
use crate::events::Event;
use crate::record::LayerInfo;
use crate::seam::Snapshots;
use crate::state::{step_err, Node, Realized, Run};
use crate::SolveError;
use rbuild_oci::Digest;
use rbuild_snapshotter::Snapshotter;
use rbuild_store::Store;
use std::time::Instant;

/// The manifest and config of the image `manifest` in `store`, checked to agree on the number of
/// layers.
fn read_image(
    store: &Store,
    manifest: &Digest,
) -> Result<(rbuild_oci::Manifest, rbuild_oci::ImageConfig), String> {
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
    Ok((m, config))
}

/// A base image's manifest and config, its blobs made present (pulled when a registry is
/// configured).
fn base_image(
    run: &Run,
    node: &Node,
    reference: &str,
    manifest: &Digest,
) -> Result<(rbuild_oci::Manifest, rbuild_oci::ImageConfig), SolveError> {
    let solver = &run.solver;
    solver
        .images
        .ensure(reference, manifest)
        .map_err(|e| step_err(run, node.id, e))?;
    read_image(&solver.store, manifest)
        .map_err(|e| step_err(run, node.id, format!("image {reference}: {e}")))
}

/// The layers of an image, bottom first.
fn layer_chain(m: &rbuild_oci::Manifest, config: &rbuild_oci::ImageConfig) -> Vec<LayerInfo> {
    m.layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| LayerInfo {
            diff_id: diff_id.clone(),
            blob: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
        })
        .collect()
}

/// The snapshot names of an image's layers, bottom first: `layer-<chain id>`.
fn layer_names(config: &rbuild_oci::ImageConfig) -> Vec<String> {
    crate::layout::layer_snapshot_names(&config.rootfs.diff_ids)
}

/// A base image's layers, its blobs made present, without unpacking it.
pub(crate) fn image_layers(
    run: &Run,
    node: &Node,
    reference: &str,
    manifest: &Digest,
) -> Result<Realized, SolveError> {
    let (m, config) = base_image(run, node, reference, manifest)?;
    run.report_cached(node);
    Ok(Realized {
        snapshot: None,
        chain: layer_chain(&m, &config),
        layer: None,
        context: None,
        created: None,
    })
}

/// Whether every layer of the image `manifest` is already unpacked (its top chain-id snapshot exists).
pub(crate) fn image_unpacked(
    store: &Store,
    snapshotter: &dyn Snapshots,
    manifest: &Digest,
) -> bool {
    let Ok((_, config)) = read_image(store, manifest) else {
        return false;
    };
    match layer_names(&config).last() {
        Some(top) => snapshotter.exists(top),
        None => true,
    }
}

/// Unpack every layer not unpacked yet, bottom up, each verified against its diff_id; `starting`
/// is called before the first one that is. Returns the top snapshot's name (None: no layers).
fn unpack_layers(
    store: &Store,
    snaps: &dyn Snapshots,
    m: &rbuild_oci::Manifest,
    config: &rbuild_oci::ImageConfig,
    starting: &mut dyn FnMut(),
) -> Result<Option<String>, String> {
    let mut parent: Option<String> = None;
    let mut started = false;
    for ((layer, diff_id), name) in m
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .zip(layer_names(config))
    {
        if !snaps.exists(&name) {
            if !started {
                starting();
                started = true;
            }
            apply_blob(
                store,
                snaps,
                &layer.digest,
                diff_id,
                parent.as_deref(),
                &name,
            )?;
        }
        parent = Some(name);
    }
    Ok(parent)
}

/// Unpack every layer of the image `manifest` (already in `store`) into committed snapshots named
/// `layer-<chain id>` — the names builds use, so both share them — skipping those present, and
/// verifying each layer's diff_id. Returns the top snapshot's name (`None` for an image without
/// layers). For `rbuild run`; builds unpack through the same code.
pub fn unpack_image(
    store: &Store,
    snapshotter: &Snapshotter,
    manifest: &Digest,
) -> Result<Option<String>, String> {
    let (m, config) = read_image(store, manifest)?;
    unpack_layers(store, snapshotter, &m, &config, &mut || {})
}

/// A build's base image, unpacked (see [`unpack_image`]); reported started only when a layer
/// has to be applied, else cached.
pub(crate) fn unpack_into(
    run: &Run,
    node: &Node,
    reference: &str,
    manifest: &Digest,
) -> Result<Realized, SolveError> {
    let solver = &run.solver;
    let vref = run.vref(node);
    let started = Instant::now();
    let (m, config) = base_image(run, node, reference, manifest)?;
    let mut did_work = false;
    let top = unpack_layers(
        &solver.store,
        &*solver.snapshotter,
        &m,
        &config,
        &mut || {
            did_work = true;
            solver.events.send(Event::Started {
                vertex: vref.clone(),
            });
        },
    )
    .map_err(|e| step_err(run, node.id, format!("image {reference}: {e}")))?;
    if did_work {
        solver.events.send(Event::Done {
            vertex: vref,
            duration: started.elapsed(),
        });
    } else {
        run.report_cached(node);
    }
    Ok(Realized {
        snapshot: top,
        chain: layer_chain(&m, &config),
        layer: None,
        context: None,
        created: None,
    })
}
