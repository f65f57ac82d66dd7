//! The crate's error type: every variant says what failed, where (root, path, archive entry) and why.

use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = FileOpError> = std::result::Result<T, E>;

/// Errors of file actions, selections, checksums and user resolution.
#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    /// A root directory could not be opened.
    #[error("opening root directory {path}: {source}")]
    OpenRoot { path: PathBuf, source: io::Error },

    /// A system call on a path inside a root failed.
    #[error("{op} {path:?} in {root}: {source}")]
    Io {
        op: &'static str,
        root: PathBuf,
        path: String,
        source: io::Error,
    },

    /// A COPY/ADD source does not exist (inside its root). `excluded_by` names the `.dockerignore`
    /// (or `--exclude`) rule that hid it, when one did.
    #[error("{path:?} not found in {root}{}", excluded_by.as_deref().map(|r| format!(" (excluded by the .dockerignore rule {r:?})")).unwrap_or_default())]
    NotFound {
        root: PathBuf,
        path: String,
        excluded_by: Option<String>,
    },

    /// A wildcard pattern is malformed (Go `filepath.Match` rules).
    #[error("invalid wildcard pattern {pattern:?}: {reason}")]
    BadPattern {
        pattern: String,
        reason: &'static str,
    },

    /// Something already in the destination conflicts with what is copied there.
    #[error("cannot write {path:?} in {root}: {reason}")]
    Conflict {
        root: PathBuf,
        path: String,
        reason: String,
    },

    /// Too many symlinks while resolving a path inside a root.
    #[error("too many levels of symbolic links resolving {path:?} in {root}")]
    SymlinkLoop { root: PathBuf, path: String },

    /// A `--chmod` value that is neither octal nor symbolic `[ugoa]*[+-=][rwxXst]*`.
    #[error("invalid --chmod value {value:?}: {reason}")]
    BadChmod { value: String, reason: &'static str },

    /// A user or group name not present in the root's /etc/passwd or /etc/group.
    #[error("unable to find {what} {name:?} in {root}{file}: {reason}")]
    UnknownUser {
        what: &'static str,
        name: String,
        root: PathBuf,
        file: &'static str,
        reason: &'static str,
    },

    /// An archive member that would land outside the destination or is otherwise unsafe.
    #[error("archive {archive:?}: member {entry:?} rejected: {reason}")]
    UnsafeArchiveEntry {
        archive: String,
        entry: String,
        reason: &'static str,
    },

    /// An archive is unreadable (corrupt tar or compression stream).
    #[error("archive {archive:?}: {source}")]
    Archive { archive: String, source: io::Error },

    /// An extraction budget (bytes, entries, depth) was exceeded.
    #[error("archive {archive:?}: {what} exceeds the limit of {limit}")]
    Budget {
        archive: String,
        what: &'static str,
        limit: u64,
    },

    /// A file action names an input that the caller did not provide.
    #[error("file action reads input {input}, which was not provided")]
    MissingInput { input: usize },

    /// A source entry of a kind that cannot be copied (a socket).
    #[error("{path:?} in {root}: unsupported file type ({kind})")]
    Unsupported {
        root: PathBuf,
        path: String,
        kind: &'static str,
    },
}

impl FileOpError {
    pub(crate) fn io(
        op: &'static str,
        root: &std::path::Path,
        path: &str,
        source: impl Into<io::Error>,
    ) -> Self {
        FileOpError::Io {
            op,
            root: root.to_path_buf(),
            path: display_path(path),
            source: source.into(),
        }
    }
}

/// Root-relative paths are kept without a leading `/`; messages show them absolute.
pub(crate) fn display_path(rel: &str) -> String {
    format!("/{rel}")
}
