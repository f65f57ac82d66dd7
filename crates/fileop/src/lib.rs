//! # rbuild-fileop — COPY/ADD/WORKDIR file actions, COPY content checksums, users of a rootfs
//!
//! This crate executes the file actions of the build graph ([`rbuild_ops::FileAction`]: `Copy`,
//! `Mkfile`, `Mkdir`) into a destination [`Root`] (a step's rootfs, prepared by the solver), reading
//! from source roots (the build context, or another snapshot's view), and computes the content
//! [`checksum()`] of a COPY's [`Selection`] for cache keys.
//!
//! ## Main types
//! * [`Root`]: a directory every path is resolved *beneath* (docs/ARCHITECTURE.md, safety rule 1): `openat2`
//!   with `RESOLVE_IN_ROOT`, or a component-by-component `O_NOFOLLOW` walk — an absolute symlink means
//!   "from this root", `..` stops at the root, nothing is followed onto the host, no string-prefix
//!   checks. Writes are `*at(dir_fd, name)` calls with `O_EXCL`/`O_NOFOLLOW`.
//! * [`select()`] → [`Selection`]: which files a COPY reads, with Docker's semantics (wildcards as Go's
//!   `filepath.Match`, directory sources copy their contents, a named symlink is followed inside the
//!   root, `.dockerignore` exclusions through the [`Excluder`] seam, missing sources named with the
//!   rule that hid them). The same selection feeds [`checksum()`] and the copy, so what is keyed is
//!   exactly what is copied ([`select_for_copy`]).
//! * [`checksum()`] with a [`ChecksumCache`]: a digest over relative paths, kinds, modes, owners,
//!   symlink targets and content sha256 — never mtimes; files hashed in parallel; unchanged files
//!   re-keyed from their [`StatKey`] alone.
//! * [`apply()`]: runs a file op's actions in order ([`CopySource`] per input, [`ApplyContext`]);
//!   [`copy_selection`] is the copy itself, ADD archives are extracted by [`unpack`] with budgets.
//! * [`users`]: `USER` and `--chown` resolved through the root's own `/etc/passwd` and `/etc/group`.
//! * [`ModeSpec`]: `--chmod`, octal or symbolic.
//!
//! ## What it is not
//! It mounts nothing, runs nothing (no sandbox is needed for COPY), never touches the store or layer
//! tars (the snapshotter diffs what was written), and does not parse Dockerfiles. Extended
//! attributes are not copied.

// Every syscall goes through nix's safe wrappers; this crate has no `unsafe`.
#![forbid(unsafe_code)]

mod apply;
pub mod checksum;
pub mod chmod;
mod context;
mod copy;
mod error;
pub mod pattern;
pub mod root;
pub mod select;
pub mod unpack;
pub mod users;
mod write;

pub use apply::{apply, select_for_copy, ApplyContext, CopySource};
pub use checksum::{
    checksum, checksum_with_stats, stat_fingerprint, ChecksumCache, ChecksumStats,
    MemoryChecksumCache, NoChecksumCache,
};
pub use chmod::ModeSpec;
pub use context::{context_fingerprint, select_context, IgnoreRules};
pub use copy::{copy_selection, CopyOptions};
pub use error::{FileOpError, Result};
pub use pattern::{Excluder, NoExcludes, Patterns};
pub use root::{Follow, NewDir, Root};
pub use select::{select, EntryKind, SelEntry, SelItem, SelectOptions, Selection, StatKey};
pub use unpack::{ArchiveCompression, ExtractLimits};
pub use users::{resolve_chown, resolve_user, ResolvedUser};
pub use write::ApplyStats;
