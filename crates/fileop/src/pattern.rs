//! Wildcards and exclusion rules as COPY sees them.
//!
//! [`Excluder`] is the seam to the `.dockerignore` matcher: the selection only asks "is this path
//! excluded, and by which rule" and "could something below this excluded directory be re-included".
//! [`Patterns`] implements it with Docker's rules (patterns in order, last match wins, `!` re-includes,
//! a match on a parent directory excludes its contents, `**` spans directories) for COPY `--exclude`
//! and for contexts.
//!
//! [`match_segment`] is Go's `filepath.Match` for one path segment, used for COPY source wildcards.

use crate::error::{FileOpError, Result};

/// "Is this path excluded, and by which rule?" — implemented by the `.dockerignore` matcher and by
/// [`Patterns`]. Paths are root-relative, `/`-separated, cleaned, without a leading `/`.
pub trait Excluder: Sync {
    /// The rule that excludes `rel` (directly or through a parent directory), if it is excluded.
    fn excluded_by(&self, rel: &str) -> Option<String>;
    /// Whether some path below the excluded directory `rel` could be re-included by a later `!`
    /// rule. When false, the walk skips the whole directory.
    fn may_include_below(&self, rel: &str) -> bool;
}

/// Excludes nothing (sources that are snapshots rather than a context).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoExcludes;

impl Excluder for NoExcludes {
    fn excluded_by(&self, _rel: &str) -> Option<String> {
        None
    }
    fn may_include_below(&self, _rel: &str) -> bool {
        false
    }
}

/// Whether a COPY source contains wildcard characters (`*`, `?`, `[`), as BuildKit decides it.
pub fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Go's `filepath.Match` on one segment: `*` (any run of characters), `?` (one character),
/// `[...]` classes with ranges and `^` negation, `\` escapes. `/` never matches.
pub fn match_segment(pattern: &str, name: &str) -> Result<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    validate(&p).map_err(|reason| FileOpError::BadPattern {
        pattern: pattern.to_string(),
        reason,
    })?;
    Ok(match_from(&p, 0, &n, 0))
}

fn validate(p: &[char]) -> std::result::Result<(), &'static str> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err("trailing backslash");
                }
                i += 2;
            }
            '[' => {
                let (_, next) = class_end(p, i).ok_or("unterminated character class")?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Parse the class starting at `p[i] == '['`: returns (ranges and negation, index after `]`).
#[allow(clippy::type_complexity)]
fn class_end(p: &[char], mut i: usize) -> Option<((bool, Vec<(char, char)>), usize)> {
    i += 1;
    let neg = p.get(i) == Some(&'^');
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == ']' && !first {
            return Some(((neg, ranges), i + 1));
        }
        first = false;
        let lo = class_char(p, &mut i)?;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            class_char(p, &mut i)?
        } else {
            lo
        };
        if lo > hi {
            return None;
        }
        ranges.push((lo, hi));
    }
}

fn class_char(p: &[char], i: &mut usize) -> Option<char> {
    let mut c = *p.get(*i)?;
    if c == '\\' {
        *i += 1;
        c = *p.get(*i)?;
    } else if c == '-' || c == ']' {
        // Go's getEsc: an unescaped '-' or ']' cannot start a range.
        return None;
    }
    *i += 1;
    Some(c)
}

fn match_from(p: &[char], mut pi: usize, n: &[char], mut ni: usize) -> bool {
    // Iterative with single-star backtracking (classic wildcard matching).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() && n[ni] != '/' => {
                    if let Some(((neg, ranges), next)) = class_end(p, pi) {
                        let hit = ranges.iter().any(|(lo, hi)| *lo <= n[ni] && n[ni] <= *hi);
                        if hit != neg {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    }
                }
                '\\' if ni < n.len() && pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if c != '*'
                    && c != '?'
                    && c != '['
                    && c != '\\'
                    && ni < n.len()
                    && c == n[ni] =>
                {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return true;
        }
        // mismatch: let the last star eat one more (non-separator) character
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
}

/// A list of Docker exclusion patterns (`.dockerignore` lines or COPY `--exclude` values).
#[derive(Clone, Debug, Default)]
pub struct Patterns {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    text: String,
    negated: bool,
    segments: Vec<String>,
}

impl Patterns {
    /// Compile patterns: each is cleaned (leading `/` and `./` dropped), `!` negates, empty lines
    /// and `#` comments are skipped. Malformed wildcards are errors.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns> {
        let mut rules = Vec::new();
        for raw in patterns {
            let raw = raw.as_ref().trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            let (negated, body) = match raw.strip_prefix('!') {
                Some(b) => (true, b.trim()),
                None => (false, raw),
            };
            let cleaned = crate::root::clean(body);
            let segments: Vec<String> = cleaned.split('/').map(str::to_string).collect();
            for s in &segments {
                if s != "**" {
                    match_segment(s, "").map_err(|_| FileOpError::BadPattern {
                        pattern: raw.to_string(),
                        reason: "malformed wildcard",
                    })?;
                }
            }
            rules.push(Rule {
                text: raw.to_string(),
                negated,
                segments,
            });
        }
        Ok(Patterns { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(s) if s == "**" => (0..=path.len()).any(|k| match_segments(&pat[1..], &path[k..])),
        Some(s) => {
            !path.is_empty()
                && match_segment(s, path[0]).unwrap_or(false)
                && match_segments(&pat[1..], &path[1..])
        }
    }
}

impl Excluder for Patterns {
    fn excluded_by(&self, rel: &str) -> Option<String> {
        let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut verdict: Option<&Rule> = None;
        for rule in &self.rules {
            // The rule matches the path or one of its parent directories.
            let hit = (1..=parts.len()).any(|k| match_segments(&rule.segments, &parts[..k]));
            if hit {
                verdict = Some(rule);
            }
        }
        verdict.filter(|r| !r.negated).map(|r| r.text.clone())
    }

    fn may_include_below(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        self.rules.iter().filter(|r| r.negated).any(|r| {
            // a negated rule whose leading segments could match this directory as a prefix
            prefix_could_match(&r.segments, &parts)
        })
    }
}

fn prefix_could_match(pat: &[String], dir: &[&str]) -> bool {
    if dir.is_empty() {
        return !pat.is_empty();
    }
    match pat.first() {
        None => false,
        Some(s) if s == "**" => true,
        Some(s) => {
            match_segment(s, dir[0]).unwrap_or(false) && prefix_could_match(&pat[1..], &dir[1..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_table() {
        // from Go's path/filepath match_test.go
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("*x", "xxx", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(match_segment(p, n).unwrap(), *want, "{p} vs {n}");
        }
        for bad in ["[", "[^", "[^bc", "a[", "\\", "[a-", "[-]", "[x-]", "[]a]"] {
            assert!(
                match_segment(bad, "a").is_err(),
                "{bad} should be malformed"
            );
        }
    }

    #[test]
    fn dockerignore_rules() {
        let p =
            Patterns::new(&["*.log", "build", "!build/keep", "**/*.tmp", "# comment", ""]).unwrap();
        assert_eq!(p.excluded_by("a.log").as_deref(), Some("*.log"));
        assert_eq!(p.excluded_by("sub/a.log"), None);
        assert_eq!(p.excluded_by("build/x").as_deref(), Some("build"));
        assert_eq!(p.excluded_by("build/keep"), None);
        assert_eq!(p.excluded_by("build/keep/inner"), None);
        assert_eq!(p.excluded_by("x/y/z.tmp").as_deref(), Some("**/*.tmp"));
        assert!(p.may_include_below("build"));
        assert!(!p.may_include_below("other"));
    }
}
