//! The diff module: an upper dir → an OCI layer tar ([`write_layer`]), a full tree compared with
//! its parent tree → an OCI layer tar ([`write_tree_diff`], for copy-based snapshots), a layer tar →
//! a snapshot dir ([`apply_layer`]), and the compression around them ([`compress`], [`decompress`]).
//!
//! It never mounts anything and knows nothing of snapshot metadata: it is given directories.

mod apply;
mod compare;
mod compress;
pub(crate) mod fsutil;
mod lower;
mod stream;
mod tar_read;
mod trim;
mod write;

pub use apply::{apply_layer, ApplyError, ApplyOptions, ApplyStats};
pub use compare::write_tree_diff;
pub use compress::{
    compress, decompress, decompress_counted, decompress_with, detect, CompressError,
    CompressStats, Level,
};
pub use lower::{lower_entry, LowerEntry};
pub use stream::{EntryMeta, LayerTarWriter};
pub use tar_read::TarError;
pub use trim::trim_unchanged_dirs;
pub use write::{write_layer, LayerOptions, LayerStats, WriteError};

/// OCI whiteout prefix: `.wh.<name>` deletes `<name>` of the layers below.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of AUFS metadata names (`.wh..wh.*`), of which only the opaque marker has a meaning.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// OCI opaque marker: its directory hides everything of the layers below.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Overlay's opaque-directory xattr (value `y`): `trusted.overlay.opaque` as root, and
/// `user.overlay.opaque` rootless, where overlay is mounted with `userxattr` (a user namespace
/// cannot write `trusted.*`).
pub fn opaque_xattr() -> &'static str {
    if rbuild_oci::host::in_initial_user_namespace() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    }
}

/// Overlay's own bookkeeping xattrs (opaque, origin, redirect…), in either namespace: never image
/// content, never copied into a layer, and never applied from one (a layer naming one could
/// otherwise steer overlay).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}
