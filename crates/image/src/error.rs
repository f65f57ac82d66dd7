//! The image crate's error type.

use rbuild_oci::Digest;
use rbuild_store::StoreError;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error("blob {digest} is not a valid {what}: {source}")]
    BadDocument {
        digest: Digest,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("{what} in {src} is not valid JSON: {source}")]
    BadArchiveDocument {
        src: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("writing {what}: {source}")]
    Write {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("reading {what} from {src}: {source}")]
    Read {
        src: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("layer {layer}: its uncompressed content is {actual}, but the image says diff_id {expected}")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },

    #[error("image {manifest} has {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCountMismatch {
        manifest: Digest,
        layers: usize,
        diff_ids: usize,
    },

    #[error(
        "layer {digest} has media type {media_type:?}, which is not a layer type rbuild knows"
    )]
    UnknownLayerMediaType { digest: Digest, media_type: String },

    #[error("blob {digest} ({what}) is missing from the store")]
    MissingBlob { digest: Digest, what: &'static str },

    #[error("blob {digest} is {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error("unsafe entry name {name:?} in archive {src}: absolute or containing '..'")]
    UnsafeEntryName { src: PathBuf, name: String },

    #[error("{name} in {src} is {size} bytes, more than the {max} byte limit for it")]
    DocumentTooLarge {
        src: PathBuf,
        name: String,
        size: u64,
        max: u64,
    },

    #[error("{src} has more than {max} entries")]
    TooManyEntries { src: PathBuf, max: u64 },

    #[error("{src} is not an image archive or layout: {reason}")]
    NotAnImage { src: PathBuf, reason: String },

    #[error("{src}: {name} is referenced by the archive's manifest but not in the archive")]
    MissingArchiveFile { src: PathBuf, name: String },

    #[error("blob {name} in {src} does not match its name: {source}")]
    ArchiveBlob {
        src: PathBuf,
        name: String,
        #[source]
        source: Box<StoreError>,
    },

    #[error("index {index} has no manifest for {platform}")]
    NoPlatformManifest { index: Digest, platform: String },

    #[error("too many nested indexes below {index}")]
    IndexTooDeep { index: Digest },

    #[error("{0}")]
    BadCompressionLevel(String),

    #[error("config {config} in {src}: file name says digest {named}")]
    ConfigNameMismatch {
        src: PathBuf,
        config: Digest,
        named: String,
    },
}
