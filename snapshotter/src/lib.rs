//! # rbuild-snapshotter — snapshots of layer directories, and diffs between them and layer tars
//!
//! Two modules that never meet (docs/ARCHITECTURE.md, the parts):
//!
//! - **snapshots** ([`Snapshotter`]): the lifecycle of layer directories — active, view, committed —
//!   with metadata in a SQLite db shared safely by concurrent rbuild processes. Methods return
//!   [`MountSpec`]s (an overlay of the parent chain's layer dirs with a fresh upper, or a bind); the
//!   small [`mount`] module performs them. No tar here.
//! - **diff** ([`diff`]): [`diff::write_layer`] turns an upper dir into an OCI layer tar (overlay
//!   whiteouts → `.wh.` files, hashed in the same pass); [`diff::apply_layer`] extracts a layer tar
//!   into a prepared snapshot's dir, fd-relative and budgeted, turning OCI whiteouts into overlay
//!   ones; [`diff::compress`]/[`diff::decompress`] wrap them. No mounting here.
//!
//! A committed snapshot's dir is exactly its changeset in overlay format: whiteouts are char devices
//! 0/0, opaque dirs carry `trusted.overlay.opaque=y`. So a build step is: `prepare` → mount → run →
//! unmount → `write_layer(upper_dir)` → `commit`; and an image layer is: `prepare` →
//! `apply_layer(upper_dir)` → `commit` under its chain id.
//!
//! What it is not: it does not know about images, manifests, the content store or cache keys (the
//! solver names snapshots), it runs nothing, and it does not choose where things are mounted:
//! [`MountedSnapshot`] mounts a view or an active snapshot where its caller says, and undoes all of
//! it when dropped.
//!
//! Needs root (or equivalent capabilities) for overlay mounts, `trusted.*` xattrs, device nodes and
//! chown. Hosts without a usable overlay get copy-based snapshots ([`Driver::Native`]): a full copy
//! per step, and layers written by comparing a tree with its parent ([`diff::write_tree_diff`]);
//! [`Snapshotter::changes`] tells the caller which of the two a snapshot's layer comes from, and
//! [`mount::overlay_usable`] probes the host.

pub mod diff;
mod guard;
pub mod mount;
mod mount_spec;
mod snapshots;

pub use guard::{GuardError, MountedSnapshot};
pub use mount_spec::MountSpec;
pub use snapshots::{
    Changes, CleanupReport, Driver, Info, Kind, SnapshotError, Snapshotter, MAX_LOWERS,
};
