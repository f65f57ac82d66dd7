//! From text to logical lines: BOM, CRLF, parser directives, comments, line continuations and
//! heredoc bodies, exactly as BuildKit's scanner reads them — while remembering, for every byte of a
//! joined logical line, the physical line and column it came from.

use crate::ast::{Directive, Pos};
use crate::error::{ErrorKind, FrontendError};

/// BuildKit reads lines with Go's `bufio.Scanner`, whose token limit makes longer lines an error.
pub const MAX_LINE_BYTES: usize = 65535;

/// A logical line: physical lines joined at continuation characters.
#[derive(Clone, Debug)]
pub struct LogicalLine {
    pub text: String,
    /// `(byte offset in text, physical line, column of that byte)`, ascending by offset.
    segments: Vec<(usize, u32, u32)>,
    pub start_line: u32,
    pub end_line: u32,
    /// Characters in the last physical line consumed.
    pub end_col: u32,
    /// Blank lines inside the continuation (BuildKit warns: NoEmptyContinuation).
    pub empty_continuations: Vec<u32>,
}

impl LogicalLine {
    /// Where byte `offset` of [`LogicalLine::text`] was in the file.
    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let idx = self
            .segments
            .partition_point(|(o, _, _)| *o <= offset)
            .saturating_sub(1);
        match self.segments.get(idx) {
            Some(&(o, line, col)) => {
                let chars = self
                    .text
                    .get(o..offset)
                    .map(|s| s.chars().count())
                    .unwrap_or(0) as u32;
                Pos {
                    line,
                    col: col + chars,
                }
            }
            None => Pos {
                line: self.start_line,
                col: 1,
            },
        }
    }
}

/// A cursor over physical lines.
pub struct Scanner<'a> {
    lines: Vec<&'a str>,
    next: usize,
    pub escape: char,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Go's `unicode.IsSpace` on the left, as BuildKit's `trimLeadingWhitespace`.
fn trim_leading_ws(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_whitespace())
}

fn is_comment(raw: &str) -> bool {
    trim_leading_ws(raw).starts_with('#')
}

impl<'a> Scanner<'a> {
    /// Split `text` into physical lines (LF or CRLF), dropping a leading UTF-8 BOM, and check
    /// BuildKit's line length limit.
    pub fn new(text: &'a str) -> Result<Scanner<'a>, FrontendError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines: Vec<&str> = text.split('\n').collect();
        if lines.last() == Some(&"") {
            lines.pop();
        }
        for (i, l) in lines.iter_mut().enumerate() {
            if l.len() > MAX_LINE_BYTES {
                return Err(FrontendError::new(
                    ErrorKind::Syntax,
                    i as u32 + 1,
                    1,
                    format!(
                        "dockerfile line greater than max allowed size of {MAX_LINE_BYTES} bytes ({} bytes)",
                        l.len()
                    ),
                )
                .with_hint("split the line with the escape character, or move data into a file"));
            }
            *l = l.strip_suffix('\r').unwrap_or(l);
        }
        Ok(Scanner {
            lines,
            next: 0,
            escape: '\\',
        })
    }

    /// Read the parser directives at the top of the file and set the escape character.
    /// Reading stops at the first line that is not a known directive (blank, comment, instruction,
    /// or unknown directive); those lines are left for the instruction reader.
    pub fn directives(&mut self) -> Result<Vec<Directive>, FrontendError> {
        let mut out: Vec<Directive> = Vec::new();
        while let Some(raw) = self.lines.get(self.next) {
            let line_no = self.next as u32 + 1;
            let Some((key, value)) = parse_directive(trim_leading_ws(raw)) else {
                break;
            };
            let key = key.to_ascii_lowercase();
            if !matches!(key.as_str(), "syntax" | "escape" | "check") {
                break;
            }
            if out.iter().any(|d| d.name == key) {
                return Err(FrontendError::new(
                    ErrorKind::Syntax,
                    line_no,
                    1,
                    format!("only one {key} parser directive can be used"),
                ));
            }
            if key == "escape" {
                self.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(FrontendError::new(
                            ErrorKind::Syntax,
                            line_no,
                            1,
                            format!("invalid escape token '{other}' does not match ` or \\"),
                        ))
                    }
                };
            }
            out.push(Directive {
                name: key,
                value,
                line: line_no,
            });
            self.next += 1;
        }
        Ok(out)
    }

    /// 1-based number of the next physical line to be read.
    pub fn line_no(&self) -> u32 {
        self.next as u32 + 1
    }

    /// Strip a trailing continuation; returns the line and whether it was continued.
    ///
    /// As BuildKit's `([^ESC])ESC[ \t]*$|^ESC[ \t]*$`: the last non-blank char is the escape
    /// char and it is alone on the line or follows a char that is not the escape char. An escaped
    /// escape char at the end (`trailing\\`) is text, not a continuation — and so is an escaped
    /// escape char followed by a continuation (`a\\\`), which BuildKit cannot tell apart.
    fn trim_continuation<'s>(&self, s: &'s str) -> (&'s str, bool) {
        let t = s.trim_end_matches(is_blank);
        match t.strip_suffix(self.escape) {
            Some(head) if !head.ends_with(self.escape) => (head, true),
            _ => (s, false),
        }
    }

    /// The next logical line, skipping blank and comment lines; `None` at end of input.
    pub fn next_logical(&mut self) -> Option<LogicalLine> {
        loop {
            let raw = *self.lines.get(self.next)?;
            self.next += 1;
            let line_no = self.next as u32;
            if is_comment(raw) {
                continue;
            }
            let trimmed = trim_leading_ws(raw);
            let lead_chars = raw[..raw.len() - trimmed.len()].chars().count() as u32;
            let (first, mut continued) = self.trim_continuation(trimmed);
            if !continued && first.trim().is_empty() {
                continue;
            }
            let mut text = first.to_string();
            let mut segments = vec![(0usize, line_no, lead_chars + 1)];
            let mut end_line = line_no;
            let mut end_col = raw.chars().count() as u32;
            let mut empty_continuations = Vec::new();
            while continued {
                let Some(raw) = self.lines.get(self.next).copied() else {
                    break; // a continuation at end of file is accepted
                };
                self.next += 1;
                end_line = self.next as u32;
                end_col = raw.chars().count() as u32;
                if is_comment(raw) {
                    continue;
                }
                if trim_leading_ws(raw).is_empty() {
                    empty_continuations.push(end_line);
                    continue;
                }
                let (part, more) = self.trim_continuation(raw);
                segments.push((text.len(), end_line, 1));
                text.push_str(part);
                continued = more;
            }
            return Some(LogicalLine {
                text,
                segments,
                start_line: line_no,
                end_line,
                end_col,
                empty_continuations,
            });
        }
    }

    /// Read a heredoc body up to its terminator line. Returns the content (each line with `\n`) and
    /// the terminator's line number, or `None` if the input ended first.
    pub fn heredoc_body(&mut self, name: &str, chomp: bool) -> Option<(String, u32)> {
        let mut content = String::new();
        while let Some(raw) = self.lines.get(self.next) {
            self.next += 1;
            let candidate = if chomp {
                raw.trim_start_matches('\t')
            } else {
                raw
            };
            if candidate == name {
                return Some((content, self.next as u32));
            }
            content.push_str(raw);
            content.push('\n');
        }
        None
    }

    /// Length in characters of physical line `line` (1-based).
    pub fn line_chars(&self, line: u32) -> u32 {
        self.lines
            .get(line.saturating_sub(1) as usize)
            .map(|l| l.chars().count() as u32)
            .unwrap_or(0)
    }
}

/// `#\s*key\s*=\s*value\s*` → `(key, value)`; key `[a-zA-Z][a-zA-Z0-9]*`, value non-empty.
fn parse_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_len = rest
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_alphabetic() || (*i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if key_len == 0 {
        return None;
    }
    let (key, after) = rest.split_at(key_len);
    let value = after.trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_syntax() {
        assert_eq!(
            parse_directive("# escape=`"),
            Some(("escape".into(), "`".into()))
        );
        assert_eq!(
            parse_directive("#SYNTAX = docker/dockerfile:1 "),
            Some(("SYNTAX".into(), "docker/dockerfile:1".into()))
        );
        assert_eq!(parse_directive("# just a comment"), None);
        assert_eq!(parse_directive("# 1a=b"), None);
    }

    #[test]
    fn continuation_positions() {
        let mut s = Scanner::new("RUN a \\\n  # c\n\n    b\n").unwrap();
        let l = s.next_logical().unwrap();
        assert_eq!(l.text, "RUN a     b");
        assert_eq!((l.start_line, l.end_line), (1, 4));
        assert_eq!(l.pos(10), Pos { line: 4, col: 5 });
        assert_eq!(l.pos(4), Pos { line: 1, col: 5 });
        assert!(s.next_logical().is_none());
    }
}
