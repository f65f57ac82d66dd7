//! The store's error type: every variant says what failed, where (path, digest, name) and why.

use rbuild_oci::Digest;
use std::io;
use std::path::{Path, PathBuf};

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "disk full while writing {path} in the rbuild store at {root}: free some space \
         (for example with `rbuild prune`) and retry"
    )]
    DiskFull { root: PathBuf, path: PathBuf },

    #[error("blob {digest} is not in the store at {root}")]
    BlobNotFound { digest: Digest, root: PathBuf },

    #[error("blob {digest} is {size} bytes, more than the {max} byte limit for this document")]
    BlobTooLarge { digest: Digest, size: u64, max: u64 },

    #[error("content digest mismatch: expected {expected}, got {actual} ({size} bytes)")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },

    #[error(
        "content size mismatch for {expected}: expected {expected_size} bytes, got {actual_size}"
    )]
    SizeMismatch {
        expected: Digest,
        expected_size: u64,
        actual_size: u64,
    },

    #[error("metadata database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "metadata database {path} has schema version {found}, newer than the {supported} this \
         rbuild understands: upgrade rbuild"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("image id prefix {prefix:?} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousId {
        prefix: String,
        candidates: Vec<String>,
    },

    #[error("corrupt {table} record {key:?} in {path}: {reason}")]
    CorruptRecord {
        table: &'static str,
        key: String,
        path: PathBuf,
        reason: String,
    },

    #[error("blob {digest} is not a valid {what}: {source}")]
    BadDocument {
        digest: Digest,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid lease resource kind {kind:?}: use lowercase letters, digits, '-' or '_'")]
    InvalidLeaseKind { kind: String },
}

impl StoreError {
    /// Wrap an I/O error with the operation and path; ENOSPC/EDQUOT become [`StoreError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: &Path, root: &Path, source: io::Error) -> StoreError {
        if is_disk_full(&source) {
            StoreError::DiskFull {
                root: root.to_path_buf(),
                path: path.to_path_buf(),
            }
        } else {
            StoreError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// True for the "disk is full" error.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }
}

/// ENOSPC or EDQUOT.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::ENOSPC as i32 || code == nix::errno::Errno::EDQUOT as i32
    ) || e.kind() == io::ErrorKind::StorageFull
}
