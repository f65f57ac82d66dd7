//! Variable expansion in Dockerfile words, exactly as BuildKit's shell lexer does it
//! (`frontend/dockerfile/shell/lex.go`), with bounds BuildKit lacks.
//!
//! A [`Lexer`] (configured with the Dockerfile's escape char, `\` or `` ` ``) expands one word:
//!
//! - `$v` and `${v}`; an unset variable expands to nothing; `$` before a char that cannot start
//!   a name (or at the end) is a literal `$`; `$1`, `$@`, `$#`… are looked up like any name.
//! - `${v:-w} ${v-w}` (default), `${v:+w} ${v+w}` (alternative), `${v:?msg} ${v?msg}` (error
//!   when unset — or empty, with `:`), where `w` is itself expanded and may be quoted.
//! - `${v#p} ${v##p} ${v%p} ${v%%p}` (remove shortest/longest prefix/suffix) and `${v/p/r}
//!   ${v//p/r}` (replace first/all) with BuildKit's patterns: `*`, `?`, `\`-escapes; `[` is a
//!   literal (BuildKit has no bracket expressions) and neither `*` nor `?` matches a newline.
//! - `'…'` is literal; `"…"` expands `$` and lets the escape char escape `"`, `$` and itself;
//!   outside quotes the escape char makes the next char literal and vanishes at the end of the
//!   word. Quotes inside `${v:-…}` are processed, even within double quotes (`"${v:-'x'}"` is
//!   `x`), as BuildKit does and unlike a POSIX shell.
//! - Anything else (`${}`, `${v`, `${v=w}`, unterminated quotes) is an [`ExpandError`] carrying
//!   BuildKit's message and the byte offset of the construct that failed.
//!
//! [`Lexer::process_words`] also splits the result into words the way BuildKit does (only
//! unquoted, unescaped whitespace splits), for instructions that take a list.
//!
//! **Bounds.** Every intermediate string is capped at [`MAX_OUTPUT`] bytes, `${…}` nesting at
//! [`MAX_DEPTH`] levels and pattern matching at [`MAX_PATTERN_STEPS`] steps per word, so
//! `ENV B=$A$A` doubling or `${a:-${a:-${…}}}` nesting is an error, never an OOM, a stack
//! overflow or a hang.
//!
//! This module does **not** know which instructions expand which arguments, nor ARG/ENV scoping:
//! the caller supplies the environment as a lookup function.
//!
//! ```
//! use rbuild_frontend::expand::Lexer;
//! let env = |k: &str| (k == "NAME").then(|| "app-1.2.tar.gz".to_string());
//! let lex = Lexer::new('\\');
//! assert_eq!(lex.process_word("${NAME%%.*}", &env).unwrap(), "app-1");
//! assert_eq!(lex.process_word("'$NAME' \\$NAME", &env).unwrap(), "$NAME $NAME");
//! assert_eq!(lex.process_words("a \"b c\" ${X:-d e}", &env).unwrap(), ["a", "b c", "d", "e"]);
//! ```

mod pattern;
mod shell;
mod words;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

/// Largest expansion of one word (and of any part of it), in bytes.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Deepest nesting of `${…}` substitutions in one word.
pub const MAX_DEPTH: usize = 64;
/// Most pattern-matching steps (threads × chars) spent on one word.
pub const MAX_PATTERN_STEPS: u64 = 1 << 26;

type Env<'e> = &'e dyn Fn(&str) -> Option<String>;

/// BuildKit's shell-word lexer: expands variables and processes quotes and escapes.
///
/// Cheap to create and to clone; `&self` methods, safe to share between threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

/// The result of [`Lexer::process_word_with_matches`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded word.
    pub result: String,
    /// The expanded word split into words, as [`Lexer::process_words`] returns it.
    pub words: Vec<String>,
    /// Variables that were looked up and set.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not set.
    pub unmatched: BTreeSet<String>,
}

/// What kind of problem an [`ExpandError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpandErrorKind {
    /// Malformed word: bad `${…}`, unsupported modifier, unterminated quote.
    Syntax,
    /// `${v?msg}` / `${v:?msg}` on an unset (or empty) variable.
    Unset,
    /// An invalid `#`/`%`/`/` pattern (e.g. `\x`).
    Pattern,
    /// A bound was hit: output size, nesting depth or pattern work.
    Limit,
}

/// A word that cannot be expanded. Displays as BuildKit does:
/// `failed to process "<word>": <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ExpandError {
    /// What went wrong, in BuildKit's words (e.g. `syntax error: missing '}'`,
    /// `FOO: is not allowed to be unset`).
    pub message: String,
    /// Byte offset in the word of the construct that failed (its `$`, or its opening quote).
    pub offset: usize,
    /// The word being processed (cut to its first 256 bytes, with `…`, if longer).
    pub word: String,
    /// The kind of problem.
    pub kind: ExpandErrorKind,
}

/// Internal error: message, kind, and the offset once known.
#[derive(Debug)]
pub(crate) struct Fail {
    message: String,
    kind: ExpandErrorKind,
    offset: Option<usize>,
}

impl Fail {
    fn new(kind: ExpandErrorKind, message: impl Into<String>) -> Self {
        Fail {
            message: message.into(),
            kind,
            offset: None,
        }
    }
    fn syntax(message: impl Into<String>) -> Self {
        Fail::new(ExpandErrorKind::Syntax, message)
    }
    fn limit(message: impl Into<String>) -> Self {
        Fail::new(ExpandErrorKind::Limit, message)
    }
    fn pattern(message: impl Into<String>) -> Self {
        Fail::new(ExpandErrorKind::Pattern, message)
    }
    fn unset(name: &str, word: &str, default: &str) -> Self {
        let msg = if word.is_empty() { default } else { word };
        Fail::new(ExpandErrorKind::Unset, format!("{name}: {msg}"))
    }
    fn at(mut self, offset: usize) -> Self {
        self.offset = Some(offset);
        self
    }
    fn or_at(mut self, offset: usize) -> Self {
        self.offset.get_or_insert(offset);
        self
    }
    fn is_limit(&self) -> bool {
        self.kind == ExpandErrorKind::Limit
    }
    fn into_error(self, word: &str) -> ExpandError {
        const SHOWN: usize = 256;
        let word = if word.len() > SHOWN {
            let mut cut = SHOWN;
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…", &word[..cut])
        } else {
            word.to_string()
        };
        ExpandError {
            message: self.message,
            offset: self.offset.unwrap_or(0),
            word,
            kind: self.kind,
        }
    }
}

/// Go's `unicode.IsLetter` (exact for ASCII; Unicode `Alphabetic` beyond it).
fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        c.is_alphabetic()
    }
}

/// Go's `unicode.IsDigit` (exact for ASCII; Unicode `Numeric` beyond it).
fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        c.is_numeric()
    }
}

impl Lexer {
    /// A lexer whose escape char is `escape` (`\` by default, `` ` `` after `# escape=``).
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape char.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote chars in the output (BuildKit's `RawQuotes`).
    pub fn with_raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape chars in the output (BuildKit's `RawEscapes`).
    pub fn with_raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Treat quotes as ordinary chars (BuildKit's `SkipProcessQuotes`, used for heredocs).
    pub fn with_skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Leave references to unset variables as written (BuildKit's `SkipUnsetEnv`).
    pub fn with_skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Expands `word` with variables from `env`.
    pub fn process_word(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ExpandError> {
        let mut sh = shell::Shell::new(self, word, env);
        sh.run(false)
            .map(|(result, _)| result)
            .map_err(|e| e.into_error(word))
    }

    /// Expands `word` and splits the result into words (unquoted whitespace separates them).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ExpandError> {
        let mut sh = shell::Shell::new(self, word, env);
        sh.run(true)
            .map(|(_, words)| words)
            .map_err(|e| e.into_error(word))
    }

    /// Expands `word` (split into words too when `want_words`) and returns the names of the
    /// variables it looked up that were not set: [`Lexer::process_word_with_matches`] without
    /// the split when it is not wanted.
    pub fn process_word_unmatched(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
        want_words: bool,
    ) -> Result<(String, Vec<String>, BTreeSet<String>), ExpandError> {
        let mut sh = shell::Shell::new(self, word, env);
        let (result, words) = sh.run(want_words).map_err(|e| e.into_error(word))?;
        Ok((result, words, std::mem::take(&mut sh.unmatched)))
    }

    /// Expands `word` and reports which variables it looked up, set or not (for cache-miss
    /// explanations and "undefined variable" warnings).
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Expansion, ExpandError> {
        let mut sh = shell::Shell::new(self, word, env);
        let (result, words) = sh.run(true).map_err(|e| e.into_error(word))?;
        Ok(Expansion {
            result,
            words,
            matched: std::mem::take(&mut sh.matched),
            unmatched: std::mem::take(&mut sh.unmatched),
        })
    }
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}
