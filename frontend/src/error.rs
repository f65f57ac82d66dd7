//! [`FrontendError`]: every error the frontend reports, pointing at a file, line and column.

use std::fmt;

/// What kind of mistake an error reports; lets callers (and tests) match without parsing text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed text: a bad directive, JSON, heredoc, line, or argument count.
    Syntax,
    /// An instruction keyword that does not exist.
    UnknownInstruction,
    /// A `--flag` the instruction does not accept, or a bad flag value.
    Flag,
    /// Variable expansion failed (`${X:?msg}`, bounds exceeded, bad syntax).
    Expansion,
    /// A stage reference that cannot be resolved, or a dependency cycle.
    Stage,
    /// The image resolver failed for a base image.
    Resolve,
    /// A well-formed instruction whose meaning is invalid (e.g. `SHELL` not in JSON form).
    Invalid,
}

/// An error in a Dockerfile, located at `file:line:column` (1-based; column counts characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FrontendError {
    pub kind: ErrorKind,
    /// The Dockerfile's name as given (e.g. `Dockerfile`).
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    /// A suggestion, e.g. `did you mean COPY?`.
    pub hint: Option<String>,
    /// The text of the line the error points at, when known (for [`FrontendError::render`]).
    pub line_text: Option<String>,
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl FrontendError {
    pub(crate) fn new(kind: ErrorKind, line: u32, column: u32, message: impl Into<String>) -> Self {
        FrontendError {
            kind,
            file: String::new(),
            line,
            column: column.max(1),
            message: message.into(),
            hint: None,
            line_text: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Fill in the file name and the quoted line from the Dockerfile's text, if not already set.
    pub(crate) fn located_in(mut self, file: &str, text: &str) -> Self {
        if self.file.is_empty() {
            self.file = file.to_string();
        }
        if self.line_text.is_none() {
            self.line_text = line_of(text, self.line);
        }
        self
    }

    /// The error as a user sees it:
    ///
    /// ```text
    /// Dockerfile:3:1: unknown instruction: COPPY
    ///  3 | COPPY . .
    ///    | ^
    /// hint: did you mean COPY?
    /// ```
    pub fn render(&self) -> String {
        let mut out = format!("{self}\n");
        if let Some(text) = &self.line_text {
            out.push_str(&quoted_line(self.line, self.column, text));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("hint: {h}\n"));
        }
        out
    }
}

/// Line `line` (1-based) of `text`, without its CR or a BOM.
pub(crate) fn line_of(text: &str, line: u32) -> Option<String> {
    let idx = (line as usize).checked_sub(1)?;
    text.split('\n').nth(idx).map(|l| {
        l.trim_end_matches('\r')
            .trim_start_matches('\u{feff}')
            .to_string()
    })
}

/// ` N | <line>` and a caret under column `column` (1-based, in chars) on the next line.
pub(crate) fn quoted_line(line: u32, column: u32, text: &str) -> String {
    let num = line.to_string();
    let pad = " ".repeat(num.len());
    // Tabs are kept so the caret lines up under the same characters in a terminal.
    let prefix: String = text
        .chars()
        .take(column.saturating_sub(1) as usize)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(" {num} | {text}\n {pad} | {prefix}^\n")
}

/// Levenshtein distance between two short ASCII-ish strings (case-insensitive).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.chars().count() > 64 {
        return None;
    }
    let limit = (word.chars().count() / 3).clamp(2, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("COPPY", "copy"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("COPPY", &["copy", "cmd"]), Some("copy"));
        assert_eq!(suggest("XYZZY", &["copy", "cmd"]), None);
    }

    #[test]
    fn render_has_caret() {
        let e = FrontendError::new(
            ErrorKind::UnknownInstruction,
            3,
            5,
            "unknown instruction: COPPY",
        )
        .with_hint("did you mean COPY?")
        .located_in("Dockerfile", "FROM a\n\n    COPPY . .\n");
        assert_eq!(
            e.render(),
            "Dockerfile:3:5: unknown instruction: COPPY\n 3 |     COPPY . .\n   |     ^\nhint: did you mean COPY?\n"
        );
    }
}
