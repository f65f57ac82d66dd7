//! The rule list of a `.dockerignore` and the questions a context walker asks it.

use std::borrow::Cow;

use crate::clean::clean;
use crate::fnmatch::go_match;
use crate::pattern::Pattern;
use crate::IgnoreError;

/// A compiled `.dockerignore`: an ordered list of rules, the last matching one wins.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    rules: Vec<RuleData>,
    /// The patterns as patternmatcher holds them: cleaned, `!` kept.
    patterns: Vec<String>,
    has_exceptions: bool,
}

#[derive(Debug, Clone)]
struct RuleData {
    /// The pattern as patternmatcher holds it (cleaned, without `!`).
    cleaned: String,
    line: usize,
    exception: bool,
    compiled: Pattern,
}

/// The rule that decided a path's fate, for messages such as
/// `"x" excluded by .dockerignore line 3 ("*.log")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule<'a> {
    /// The pattern, cleaned, without its `!`.
    pub pattern: &'a str,
    /// Its line in the file (for [`Matcher::from_patterns`], its index + 1).
    pub line: usize,
    /// Whether it is a `!` exception.
    pub exception: bool,
}

/// Reads the lines of a .dockerignore as moby's `ignorefile.ReadAll` does; returns
/// `(pattern, line)` pairs.
fn read_all(text: &str) -> Vec<(String, usize)> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        // A comment is a line whose very first char is `#` (before trimming).
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        if invert {
            p.insert(0, '!');
        }
        out.push((p, i + 1));
    }
    out
}

/// A clean relative path: no empty, `.` or `..` elements, no leading or trailing `/`.
fn is_clean_relative(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(|e| !e.is_empty() && e != "." && e != "..")
}

impl Matcher {
    /// Parses the text of a `.dockerignore`: one pattern a line, `#` comment lines, blank lines
    /// ignored, surrounding whitespace trimmed, each pattern cleaned (`filepath.Clean`) with a
    /// leading `/` dropped, `!` for exceptions.
    pub fn parse(text: &str) -> Result<Matcher, IgnoreError> {
        Matcher::build(read_all(text))
    }

    /// Builds a matcher from patterns as moby's `patternmatcher.New` takes them (e.g. from
    /// `COPY --exclude`); each pattern's "line" is its index + 1.
    pub fn from_patterns(patterns: &[String]) -> Result<Matcher, IgnoreError> {
        Matcher::build(
            patterns
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), i + 1))
                .collect(),
        )
    }

    fn build(lines: Vec<(String, usize)>) -> Result<Matcher, IgnoreError> {
        let mut m = Matcher::default();
        for (raw, line) in lines {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let exception = p.starts_with('!');
            if exception {
                if p.len() == 1 {
                    return Err(IgnoreError::IllegalExclusion { line });
                }
                p.remove(0);
            }
            let bad = |reason| IgnoreError::BadPattern {
                pattern: p.clone(),
                line: Some(line),
                reason,
            };
            go_match(p.as_bytes(), b".").map_err(bad)?;
            let compiled = Pattern::compile(&p).map_err(bad)?;
            m.patterns.push(if exception {
                format!("!{p}")
            } else {
                p.clone()
            });
            m.has_exceptions |= exception;
            m.rules.push(RuleData {
                cleaned: p,
                line,
                exception,
                compiled,
            });
        }
        Ok(m)
    }

    /// The patterns in force, cleaned, exceptions with their `!` (moby's `ignorefile.ReadAll`
    /// output, minus empty ones).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether any rule is a `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.has_exceptions
    }

    /// Whether there are no rules at all (nothing is ever excluded).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn normalize(rel_path: &str) -> Cow<'_, str> {
        if is_clean_relative(rel_path) {
            return Cow::Borrowed(rel_path);
        }
        let c = clean(rel_path);
        Cow::Owned(c.trim_start_matches('/').to_string())
    }

    /// If `rel_path` (relative to the context root, `/`-separated) is excluded — it or one of
    /// its parent directories matches, and no later exception says otherwise — the rule that
    /// excluded it (the last matching non-exception rule). The context root itself is never
    /// excluded.
    pub fn excluded(&self, rel_path: &str) -> Option<Rule<'_>> {
        let path = Matcher::normalize(rel_path);
        if path.is_empty() || path == "." || path.starts_with("../") || path == ".." {
            return None;
        }
        let mut matched = false;
        let mut by = None;
        for (i, r) in self.rules.iter().enumerate() {
            // An include cannot change an excluded path, an exception an included one.
            if r.exception != matched {
                continue;
            }
            if r.compiled.matches_or_parent(&path) {
                matched = !r.exception;
                if matched {
                    by = Some(i);
                }
            }
        }
        let r = &self.rules[by.filter(|_| matched)?];
        Some(Rule {
            pattern: &r.cleaned,
            line: r.line,
            exception: r.exception,
        })
    }

    /// Whether an exception rule could re-include some path strictly beneath `rel_dir`.
    pub fn may_match_beneath(&self, rel_dir: &str) -> bool {
        let dir = Matcher::normalize(rel_dir);
        let dir = if dir == "." { "" } else { &dir };
        self.rules
            .iter()
            .any(|r| r.exception && r.compiled.may_match_beneath(dir))
    }

    /// Whether a context walker may skip directory `rel_dir` without looking inside: it is
    /// excluded and no exception can reach anything beneath it, so every path beneath it is
    /// excluded too.
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        self.excluded(rel_dir).is_some() && !self.may_match_beneath(rel_dir)
    }
}
