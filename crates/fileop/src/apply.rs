//! [`apply`]: run a [`FileOp`](rbuild_ops::FileOp)'s actions, in order, on a destination root.

use crate::chmod::ModeSpec;
use crate::copy::{copy_selection, CopyOptions};
use crate::error::{FileOpError, Result};
use crate::pattern::{Excluder, Patterns};
use crate::root::{NewDir, Root};
use crate::select::{select, SelectOptions, Selection};
use crate::unpack::ExtractLimits;
use crate::users::resolve_chown;
use crate::write::{self, ApplyStats, DirHandle, Meta, ReaderSource};
use rbuild_ops::FileAction;

/// A root that copies read from, as the solver provides it for an input of the file op.
#[derive(Clone, Copy)]
pub struct CopySource<'a> {
    pub root: &'a Root,
    /// The `.dockerignore` rules of a context (use [`NoExcludes`](crate::NoExcludes) otherwise).
    pub ignore: &'a dyn Excluder,
    /// Keep source owners (another stage or image); false for a build context (owners 0:0).
    pub keep_owner: bool,
}

/// Settings of one [`apply`] run.
#[derive(Clone, Debug, Default)]
pub struct ApplyContext {
    /// SOURCE_DATE_EPOCH: the mtime of files and directories created from nothing (heredoc files,
    /// WORKDIR). Copied files keep their source mtimes either way.
    pub source_date_epoch: Option<i64>,
    /// Budgets for ADD's archive extraction.
    pub limits: ExtractLimits,
}

/// The selection a [`FileAction::Copy`] reads from `src`: the same one [`apply`] copies, so the
/// solver can compute the cache key's [`checksum`](crate::checksum()) over exactly what is copied.
/// Returns `None` for actions that are not copies.
pub fn select_for_copy(action: &FileAction, src: &CopySource<'_>) -> Result<Option<Selection>> {
    let FileAction::Copy {
        sources,
        parents,
        exclude,
        ..
    } = action
    else {
        return Ok(None);
    };
    let excl = Patterns::new(exclude)?;
    let opts = SelectOptions {
        ignore: src.ignore,
        exclude: &excl,
        parents: *parents,
        keep_owner: src.keep_owner,
        allow_empty_wildcard: true,
    };
    select(src.root, sources, &opts).map(Some)
}

/// Run `actions` on `dest` in order. `sources[i]` is the root of input `i` (copies name their input).
pub fn apply(
    dest: &Root,
    actions: &[FileAction],
    sources: &[Option<CopySource<'_>>],
    ctx: &ApplyContext,
) -> Result<ApplyStats> {
    let mut total = ApplyStats::default();
    for action in actions {
        let s = apply_one(dest, action, sources, ctx)?;
        total.files += s.files;
        total.dirs += s.dirs;
        total.symlinks += s.symlinks;
        total.hardlinks += s.hardlinks;
        total.specials += s.specials;
        total.bytes += s.bytes;
        total.archives += s.archives;
    }
    Ok(total)
}

fn apply_one(
    dest: &Root,
    action: &FileAction,
    sources: &[Option<CopySource<'_>>],
    ctx: &ApplyContext,
) -> Result<ApplyStats> {
    match action {
        FileAction::Copy {
            input,
            dest: dest_path,
            chown,
            chmod,
            unpack,
            parents,
            ..
        } => {
            let src = sources
                .get(*input)
                .copied()
                .flatten()
                .ok_or(FileOpError::MissingInput { input: *input })?;
            let owner = chown.as_ref().map(|c| resolve_chown(dest, c)).transpose()?;
            let mode = chmod.as_ref().map(ModeSpec::parse).transpose()?;
            let sel = select_for_copy(action, &src)?.unwrap_or_default();
            let opts = CopyOptions {
                owner,
                mode,
                parents: *parents,
                unpack: *unpack,
                limits: ctx.limits,
            };
            copy_selection(dest, src.root, &sel, dest_path, &opts)
        }
        FileAction::Mkfile {
            path,
            data,
            mode,
            chown,
        } => {
            let owner = chown.as_ref().map(|c| resolve_chown(dest, c)).transpose()?;
            let new_dir = NewDir {
                mode: 0o755,
                owner: Some(owner.unwrap_or((0, 0))),
                mtime: None,
            };
            let (fd, canon, name) = dest.parent_for_create(path, &new_dir)?;
            let dir = DirHandle { fd, path: canon };
            let meta = Meta {
                mode: *mode,
                owner: owner.unwrap_or((0, 0)),
                mtime: ctx.source_date_epoch.map(|s| (s, 0)),
            };
            let bytes = write::write_file(
                dest,
                &dir,
                &name,
                &mut ReaderSource(data.as_bytes()),
                &meta,
                false,
            )?;
            Ok(ApplyStats {
                files: 1,
                bytes,
                ..Default::default()
            })
        }
        FileAction::Mkdir { path, mode, chown } => {
            let owner = chown.as_ref().map(|c| resolve_chown(dest, c)).transpose()?;
            dest.mkdir_all(
                path,
                &NewDir {
                    mode: *mode,
                    owner: Some(owner.unwrap_or((0, 0))),
                    mtime: ctx.source_date_epoch,
                },
            )?;
            Ok(ApplyStats {
                dirs: 1,
                ..Default::default()
            })
        }
    }
}
