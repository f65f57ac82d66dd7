use rbuild_oci::Digest;
use std::path::PathBuf;

pub type Result<T, E = AttestError> = std::result::Result<T, E>;

/// What went wrong while reading an image for its SBOM or writing its attestations. A package
/// database that cannot be parsed is not an error (it is skipped, as scanners do); these are the
/// failures that make the SBOM itself untrustworthy.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("walking {path}: {source}")]
    Walk {
        path: PathBuf,
        source: walkdir::Error,
    },
    #[error("reading layer {digest}: {source}")]
    ReadLayer {
        digest: Digest,
        source: std::io::Error,
    },
    #[error("layer {digest}: {source}")]
    Decompress {
        digest: Digest,
        source: rbuild_snapshotter::diff::CompressError,
    },
    #[error(transparent)]
    Store(#[from] rbuild_store::StoreError),
    #[error(transparent)]
    Image(#[from] rbuild_image::ImageError),
    #[error("attestation document {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("--provenance {value}: {reason}")]
    ProvenanceOption { value: String, reason: String },
    #[error("--sbom {value}: {reason}")]
    SbomOption { value: String, reason: String },
}
