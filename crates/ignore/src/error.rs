//! Errors of the ignore crate.

/// A `.dockerignore` (or COPY wildcard) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern that Go's `filepath.Match` rejects (e.g. `[`, `[a-`, a trailing `\`).
    #[error("{}bad pattern {pattern:?}: {reason}", line_prefix(*.line))]
    BadPattern {
        /// The pattern as given (after cleaning, for .dockerignore lines).
        pattern: String,
        /// Its line in the .dockerignore file (or its index + 1 in a pattern list).
        line: Option<usize>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A lone `!`.
    #[error("{}illegal exclusion pattern: \"!\"", line_prefix(Some(*.line)))]
    IllegalExclusion {
        /// Its line.
        line: usize,
    },
}

fn line_prefix(line: Option<usize>) -> String {
    match line {
        Some(l) => format!(".dockerignore line {l}: "),
        None => String::new(),
    }
}
