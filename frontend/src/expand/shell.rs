//! The word processor: a line-by-line port of BuildKit's `shellWord` (`processStopOn`,
//! `processSingleQuote`, `processDoubleQuote`, `processDollar`, `processName`), plus the bounds
//! BuildKit lacks (output size, nesting depth, pattern work).

use std::collections::BTreeSet;

use super::pattern::{self, Budget, Scanner};
use super::words::Words;
use super::{
    is_go_digit, is_go_letter, Env, Fail, Lexer, MAX_DEPTH, MAX_OUTPUT, MAX_PATTERN_STEPS,
};

pub(super) struct Shell<'a, 'e> {
    lex: &'a Lexer,
    sc: Scanner<'a>,
    env: Env<'e>,
    pub(super) matched: BTreeSet<String>,
    pub(super) unmatched: BTreeSet<String>,
    depth: usize,
    budget: Budget,
}

fn push_str(buf: &mut String, s: &str) -> Result<(), Fail> {
    if buf.len() + s.len() > MAX_OUTPUT {
        return Err(Fail::limit(format!(
            "expansion exceeds the limit of {MAX_OUTPUT} bytes"
        )));
    }
    buf.push_str(s);
    Ok(())
}

fn push_char(buf: &mut String, c: char) -> Result<(), Fail> {
    let mut tmp = [0u8; 4];
    push_str(buf, c.encode_utf8(&mut tmp))
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

impl<'a, 'e> Shell<'a, 'e> {
    pub(super) fn new(lex: &'a Lexer, word: &'a str, env: Env<'e>) -> Self {
        Shell {
            lex,
            sc: Scanner::new(word),
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
            budget: Budget::new(MAX_PATTERN_STEPS),
        }
    }

    /// Processes the whole word: its expansion and, if `want_words`, its split into words.
    pub(super) fn run(&mut self, want_words: bool) -> Result<(String, Vec<String>), Fail> {
        self.process_stop_on(None, self.lex.raw_escapes, want_words)
    }

    /// Processes up to the end or to `stop` (consumed). `raw` keeps escape characters in the
    /// output (BuildKit's `rawEscapes`, used for patterns).
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw: bool,
        want_words: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Fail::limit(format!(
                "variable substitutions nested deeper than {MAX_DEPTH} levels"
            ))
            .at(self.sc.pos()));
        }
        let r = self.process_stop_on_inner(stop, raw, want_words);
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
        raw: bool,
        want_words: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let start = self.sc.pos();
        let mut result = String::new();
        let mut words = Words::new(want_words);
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.sc.peek() {
            if Some(ch) == stop {
                self.sc.next_char();
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let tmp = self.process_dollar()?;
                push_str(&mut result, &tmp)?;
                words.add_string(&tmp);
            } else if quotes && (ch == '\'' || ch == '"') {
                let tmp = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote(raw)?
                };
                push_str(&mut result, &tmp)?;
                words.add_raw_string(&tmp);
            } else {
                let mut ch = ch;
                self.sc.next_char();
                if ch == self.lex.escape {
                    if raw {
                        words.add_raw_char(ch);
                        push_char(&mut result, ch)?;
                    }
                    // The escape char escapes the next one; at the end of the word it vanishes.
                    match self.sc.next_char() {
                        Some(c) => ch = c,
                        None => break,
                    }
                    words.add_raw_char(ch);
                } else {
                    words.add_char(ch);
                }
                push_char(&mut result, ch)?;
            }
        }
        if let Some(stop) = stop {
            return Err(Fail::syntax(format!(
                "unexpected end of statement while looking for matching {stop}"
            ))
            .at(start));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, Fail> {
        // Everything up to the next single quote is literal; a single quote cannot be escaped.
        let start = self.sc.pos();
        self.sc.next_char();
        let rest = self.sc.rest();
        let Some(end) = rest.find('\'') else {
            return Err(Fail::syntax(
                "unexpected end of statement while looking for matching single-quote",
            )
            .at(start));
        };
        let mut out = String::new();
        if self.lex.raw_quotes {
            out.push('\'');
        }
        push_str(&mut out, &rest[..end])?;
        if self.lex.raw_quotes {
            push_char(&mut out, '\'')?;
        }
        self.sc.advance(end + 1);
        Ok(out)
    }

    fn process_double_quote(&mut self, raw: bool) -> Result<String, Fail> {
        // Literal except `$`; the escape char escapes only `"`, `$` and itself.
        let start = self.sc.pos();
        self.sc.next_char();
        let mut out = String::new();
        if self.lex.raw_quotes {
            out.push('"');
        }
        loop {
            match self.sc.peek() {
                None => {
                    return Err(Fail::syntax(
                        "unexpected end of statement while looking for matching double-quote",
                    )
                    .at(start))
                }
                Some('"') => {
                    self.sc.next_char();
                    if self.lex.raw_quotes {
                        push_char(&mut out, '"')?;
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    push_str(&mut out, &v)?;
                }
                Some(mut ch) => {
                    self.sc.next_char();
                    if ch == self.lex.escape {
                        if raw {
                            push_char(&mut out, ch)?;
                        }
                        match self.sc.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.sc.next_char();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    push_char(&mut out, ch)?;
                }
            }
        }
    }

    /// Reads a parameter name: a run of digits, one special parameter char, or letters,
    /// digits and `_`.
    fn process_name(&mut self) -> &'a str {
        let src = self.sc.src();
        let start = self.sc.pos();
        if let Some(first) = self.sc.peek() {
            if is_go_digit(first) {
                while self.sc.peek().is_some_and(is_go_digit) {
                    self.sc.next_char();
                }
                return &src[start..self.sc.pos()];
            }
            if is_special_param(first) {
                self.sc.next_char();
                return &src[start..self.sc.pos()];
            }
        }
        while self
            .sc
            .peek()
            .is_some_and(|c| is_go_letter(c) || is_go_digit(c) || c == '_')
        {
            self.sc.next_char();
        }
        &src[start..self.sc.pos()]
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = (self.env)(name);
        let set = if v.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !set.contains(name) {
            set.insert(name.to_string());
        }
        v
    }

    fn process_dollar(&mut self) -> Result<String, Fail> {
        let start = self.sc.pos();
        self.process_dollar_inner().map_err(|e| e.or_at(start))
    }

    fn process_dollar_inner(&mut self) -> Result<String, Fail> {
        self.sc.next_char(); // '$'
        if self.sc.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.sc.next_char(); // '{'
        match self.sc.peek() {
            None => return Err(Fail::syntax("syntax error: missing '}'")),
            Some('{' | '}' | ':') => return Err(Fail::syntax("syntax error: bad substitution")),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(ch) = self.sc.next_char() else {
            // BuildKit says "unsupported modifier (\uFFFD)" here; the real problem is this.
            return Err(Fail::syntax("syntax error: missing '}'"));
        };
        match ch {
            '}' => Ok(match self.get_env(name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(name, ch),
            '/' => self.substitute(name),
            c => Err(Fail::syntax(format!(
                "unsupported modifier ({c}) in substitution"
            ))),
        }
    }

    /// Maps a nested syntax error that ran into the end of the word to `missing_what`.
    fn at_end_means(&self, e: Fail, missing_what: &str) -> Fail {
        if self.sc.peek().is_none() && !e.is_limit() {
            Fail::syntax(format!("syntax error: missing {missing_what}"))
        } else {
            e
        }
    }

    /// `${name<op>word}` for op in `- + ? # %` and their `:` forms.
    fn modifier(&mut self, name: &str, first: char) -> Result<String, Fail> {
        let mut chs = String::from(first);
        let mut op = Some(first);
        let null_is_unset = first == ':';
        if null_is_unset {
            op = self.sc.next_char();
            chs.push(op.unwrap_or('\u{FFFD}'));
        }
        let raw = matches!(op, Some('#' | '%'));
        let (word, _) = self
            .process_stop_on(Some('}'), raw, false)
            .map_err(|e| self.at_end_means(e, "'}'"))?;

        let value = self.get_env(name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let empty = |v: &Option<String>| v.is_none() || (null_is_unset && v.as_deref() == Some(""));
        match op {
            Some('-') => Ok(if empty(&value) {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if empty(&value) { String::new() } else { word }),
            Some('?') => match value {
                None => Err(Fail::unset(name, &word, "is not allowed to be unset")),
                Some(v) if null_is_unset && v.is_empty() => {
                    Err(Fail::unset(name, &word, "is not allowed to be empty"))
                }
                Some(v) => Ok(v),
            },
            Some(op @ ('%' | '#')) => {
                // `%`/`#` remove the shortest match, `%%`/`##` the longest.
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(p) => (p, true),
                    None => (word.as_str(), false),
                };
                let value = value.unwrap_or_default();
                if op == '%' {
                    pattern::trim_suffix(pattern, &value, greedy, &mut self.budget)
                } else {
                    pattern::trim_prefix(pattern, &value, greedy, &mut self.budget)
                }
            }
            _ => Err(Fail::syntax(format!(
                "unsupported modifier ({chs}) in substitution"
            ))),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn substitute(&mut self, name: &str) -> Result<String, Fail> {
        let all = self.sc.peek() == Some('/');
        if all {
            self.sc.next_char();
        }
        let (pattern, _) = self
            .process_stop_on(Some('/'), true, false)
            .map_err(|e| self.at_end_means(e, "'/' in ${}"))?;
        let (replacement, _) = self
            .process_stop_on(Some('}'), true, false)
            .map_err(|e| self.at_end_means(e, "'}'"))?;
        let value = self.get_env(name);
        let Some(value) = value else {
            if self.lex.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return pattern::replace(
                &pattern,
                "",
                &replacement,
                all,
                MAX_OUTPUT,
                &mut self.budget,
            );
        };
        pattern::replace(
            &pattern,
            &value,
            &replacement,
            all,
            MAX_OUTPUT,
            &mut self.budget,
        )
    }
}
