//! # rbuild-image — image assembly, export and import over the store
//!
//! - **Assemble**: [`write_image`] turns an [`ImageConfig`](rbuild_oci::ImageConfig) and the
//!   descriptors of stored layers into a config blob and an OCI manifest (canonical JSON, so the
//!   same image always gets the same digest). [`read_manifest`], [`read_config`],
//!   [`resolve_manifest`] (index → host platform), [`layer_blobs`] and [`image_record`] read back.
//! - **Compress**: [`ensure_compressed`] gives a layer in the wanted compression, compressing it
//!   once (in parallel 4 MiB chunks: concatenated gzip members / zstd frames, deterministic on any
//!   machine) and remembering `(diff_id, compression) → blob` in the store (default level only:
//!   an explicit level — gzip 0–9, zstd 1–22 — compresses again, deterministically).
//! - **Export**: [`export_oci`] writes an OCI image layout as a directory or a deterministic tar
//!   (`oci-archive`); [`export_docker_archive`] writes what `docker save` writes. The
//!   `_reporting` variants report the bytes of every blob they (de)compress or write
//!   ([`ExportProgress`]).
//! - **Import**: [`load`] reads an OCI layout directory, an OCI archive or a docker-archive (also
//!   gzip/zstd-compressed), verifies every blob and diff_id, stores blobs as they came and names
//!   the images.
//!
//! What it is not: no registry access (crates/registry), no layer *contents* (the snapshotter
//! makes and applies layer tars; here layers are opaque blobs), no file extraction — tars are read
//! as streams of entries, never unpacked.

mod compress;
mod document;
mod error;
mod export_docker;
mod export_oci;
pub mod layout;
mod load;
mod progress;
mod tarout;

pub use compress::{check_level, compress_stream, ensure_compressed, ensure_compressed_reporting};
pub use document::{
    image_record, layer_blobs, read_config, read_manifest, resolve_manifest, resolve_manifest_for,
    write_image, LayerBlob,
};
pub use error::{ImageError, Result};
pub use export_docker::{export_docker_archive, export_docker_archive_reporting};
pub use export_oci::{
    export_oci, export_oci_reporting, export_oci_with_level, OciDest, ANNOTATION_CONTAINERD_NAME,
};
pub use load::{load, LoadedImage};
pub use progress::{no_export_progress, ExportProgress, ExportProgressFn};
