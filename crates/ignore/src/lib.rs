//! # rbuild-ignore — Docker's `.dockerignore` rules and Go's `filepath.Match` wildcards
//!
//! The behaviour is moby's (`github.com/moby/patternmatcher` and its `ignorefile` reader), not
//! gitignore's:
//!
//! - one pattern a line; a line whose first char is `#` is a comment; blank lines are skipped;
//!   whitespace around a pattern is trimmed; each pattern is cleaned as Go's `filepath.Clean`
//!   does and a leading `/` dropped (patterns are relative to the context root);
//! - `!pattern` is an exception; rules apply in order and the **last match wins**;
//! - a path is excluded when it **or one of its parent directories** matches
//!   (`MatchesOrParentMatches`): `docs` excludes `docs/a/b.md`;
//! - wildcards: `*` (no `/`), `?`, `[a-z]`, `[^a]`, `\x` per Go's `filepath.Match`, plus `**`
//!   for any number of directories (`**/*.go`, `dir/**`), with patternmatcher's
//!   exact/prefix/suffix shortcuts kept (`**file` matches `myfile`);
//! - exceptions under an excluded directory still reach their files, so a walker may prune a
//!   directory only when [`Matcher::can_skip_dir`] says so.
//!
//! Main items: [`Matcher`] (parse, [`Matcher::excluded`] with the deciding [`Rule`] for error
//! messages, [`Matcher::can_skip_dir`]), [`fnmatch`] (Go's `filepath.Match`, for COPY source
//! wildcards) and [`clean`] (Go's `filepath.Clean`).
//!
//! Known departures from moby (both from its regexp translation, which we do not copy): inside
//! brackets and after `\`, chars follow `filepath.Match` (moby lets `\d` or `[?]` leak into the
//! regexp as regexp syntax), and `^` outside brackets is a literal (moby's regexp treats it as
//! an anchor that makes the pattern unmatchable).
//!
//! This crate does **not** walk directories, read files or know where the `.dockerignore` lives
//! (`<Dockerfile>.dockerignore` precedence is the caller's business): it is pure and
//! allocation-light; patterns are compiled once.
//!
//! ```
//! use rbuild_ignore::Matcher;
//! let m = Matcher::parse("# build output\n*.log\nbuild\n!build/keep.txt\n").unwrap();
//! assert_eq!(m.excluded("app.log").unwrap().line, 2);
//! assert_eq!(m.excluded("build/out.o").unwrap().pattern, "build");
//! assert!(m.excluded("build/keep.txt").is_none());
//! assert!(m.excluded("src/main.rs").is_none());
//! assert!(!m.can_skip_dir("build")); // an exception reaches inside
//! ```

mod clean;
mod error;
mod fnmatch;
mod matcher;
mod pattern;

pub use clean::clean;
pub use error::IgnoreError;
pub use fnmatch::fnmatch;
pub use matcher::{Matcher, Rule};
