//! One read of a local build context, as the solver keys it and as the no-op check re-reads it:
//! the files some sources select out of a directory after the `.dockerignore` rules and a copy's
//! own `--exclude` patterns.

use crate::pattern::{Excluder, Patterns};
use crate::root::Root;
use crate::select::{select, SelectOptions, Selection};
use rbuild_oci::Digest;
use std::path::Path;

/// `.dockerignore` rules (the `rbuild-ignore` matcher) as an [`Excluder`].
pub struct IgnoreRules(pub rbuild_ignore::Matcher);

impl Excluder for IgnoreRules {
    fn excluded_by(&self, rel: &str) -> Option<String> {
        self.0
            .excluded(rel)
            .map(|r| format!(".dockerignore line {} ({:?})", r.line, r.pattern))
    }
    fn may_include_below(&self, rel: &str) -> bool {
        self.0.may_match_beneath(rel)
    }
}

/// Select `sources` out of the context directory `dir`: `ignore` are its `.dockerignore`
/// patterns, `exclude` a copy's `--exclude` patterns, `parents` COPY `--parents`.
pub fn select_context(
    dir: &Path,
    sources: &[String],
    ignore: &[String],
    exclude: &[String],
    parents: bool,
) -> Result<(Root, Selection), String> {
    let root = Root::open(dir).map_err(|e| e.to_string())?;
    let ignore =
        IgnoreRules(rbuild_ignore::Matcher::from_patterns(ignore).map_err(|e| e.to_string())?);
    let exclude = Patterns::new(exclude).map_err(|e| e.to_string())?;
    let opts = SelectOptions {
        ignore: &ignore,
        exclude: &exclude,
        parents,
        keep_owner: false,
        allow_empty_wildcard: true,
    };
    let sel = select(&root, sources, &opts).map_err(|e| e.to_string())?;
    Ok((root, sel))
}

/// The [`crate::stat_fingerprint`] of [`select_context`]'s selection: equal fingerprints mean
/// the same files with the same stats, so the same content checksum.
pub fn context_fingerprint(
    dir: &Path,
    sources: &[String],
    ignore: &[String],
    exclude: &[String],
    parents: bool,
) -> Result<Digest, String> {
    let (_root, sel) = select_context(dir, sources, ignore, exclude, parents)?;
    Ok(crate::stat_fingerprint(&sel))
}
