//! Word splitting done at parse time (before expansion), ported from BuildKit's parser:
//! `extractBuilderFlags` (leading `--flags`), `parseWords` (ENV/LABEL/ARG words, quotes kept) and
//! the raw word split used to find heredoc markers (`<<EOF`, `<<-"EOF"`, `3<<EOF`).

/// A word and the byte offset where it starts in the string it was split from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawWord {
    pub text: String,
    pub offset: usize,
}

/// Split the leading `--flag[=value]` words off `line` (BuildKit's `extractBuilderFlags`): quotes
/// and backslash escapes inside a flag are removed; a bare `--` ends the flags and is dropped.
/// Returns the flags and the byte offset where the remaining arguments start.
pub fn extract_flags(line: &str) -> (Vec<RawWord>, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let mut it = line.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    continue;
                }
                if ch != '-' || it.peek().map(|(_, c)| *c) != Some('-') {
                    return (words, pos);
                }
                phase = Phase::Word;
                start = pos;
                word.push(ch);
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (words, pos);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(RawWord {
                            text: std::mem::take(&mut word),
                            offset: start,
                        });
                    }
                    blank_ok = false;
                    continue;
                }
                match ch {
                    '\'' | '"' => {
                        phase = Phase::Quote(ch);
                        blank_ok = true;
                    }
                    '\\' => {
                        if let Some((_, next)) = it.next() {
                            word.push(next);
                        }
                    }
                    _ => word.push(ch),
                }
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    continue;
                }
                if ch == '\\' {
                    match it.next() {
                        Some((_, next)) => word.push(next),
                        None => phase = Phase::Word,
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        words.push(RawWord {
            text: word,
            offset: start,
        });
    }
    (words, line.len())
}

/// BuildKit's `parseWords`: split on whitespace outside quotes, keeping quotes and escapes in the
/// words (they are removed later, by expansion). `escape` is the Dockerfile's escape character.
pub fn parse_words(rest: &str, escape: char) -> Vec<RawWord> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let mut it = rest.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
            start = pos;
        }
        match phase {
            Phase::Spaces => {} // set to Word just above
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(RawWord {
                            text: std::mem::take(&mut word),
                            offset: start,
                        });
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match it.next() {
                        None => continue, // an escape at end of line is dropped
                        Some((_, next)) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    match it.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some((_, next)) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(RawWord {
            text: word,
            offset: start,
        });
    }
    words
}

/// Split on whitespace (`[\t\v\f\r ]+`, as BuildKit's `reWhitespace`), no quote handling.
pub fn split_whitespace(rest: &str) -> Vec<RawWord> {
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r');
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in rest.char_indices() {
        match (is_ws(c), start) {
            (true, Some(s)) => {
                out.push(RawWord {
                    text: rest[s..i].to_string(),
                    offset: s,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(RawWord {
            text: rest[s..].to_string(),
            offset: s,
        });
    }
    out
}

/// Shell-like word split that keeps quotes and backslash escapes raw (BuildKit runs its shell lexer
/// with RawQuotes and RawEscapes to find heredoc markers).
pub fn raw_shell_words(line: &str) -> Vec<RawWord> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut start = None;
    let mut quote: Option<char> = None;
    let mut it = line.char_indices();
    while let Some((i, c)) = it.next() {
        if quote.is_none() && c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push(RawWord {
                    text: std::mem::take(&mut word),
                    offset: s,
                });
            }
            continue;
        }
        start.get_or_insert(i);
        word.push(c);
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => {
                if let Some((_, n)) = it.next() {
                    word.push(n);
                }
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(RawWord {
            text: word,
            offset: s,
        });
    }
    out
}

/// A heredoc marker word: `[fd]<<[-]delimiter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeredocMarker {
    pub fd: u32,
    pub chomp: bool,
    pub name: String,
    pub expand: bool,
}

/// BuildKit's `ParseHeredoc` on one word (`^(\d*)<<(-?)([^<]*)$`); `None` if it is not a marker.
pub fn heredoc_marker(word: &str) -> Option<HeredocMarker> {
    let lt = word.find("<<")?;
    let (digits, after) = word.split_at(lt);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let after = &after[2..];
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    // Remove quotes and escapes; a delimiter with quotes in it means "no expansion".
    let mut name = String::new();
    let mut quote: Option<char> = None;
    let mut quoted = false;
    let mut it = rest.chars();
    while let Some(c) = it.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                quoted = true;
            }
            (Some(q), _) if c == q => quote = None,
            (Some('\''), _) => name.push(c),
            (_, '\\') => {
                if let Some(n) = it.next() {
                    name.push(n);
                }
            }
            _ => name.push(c),
        }
    }
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return None;
    }
    Some(HeredocMarker {
        fd: digits.parse().unwrap_or(0),
        chomp,
        name,
        expand: !quoted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(w: Vec<RawWord>) -> Vec<String> {
        w.into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn flags() {
        let (f, rest) = extract_flags("--from=build --chown='a b' src dst");
        assert_eq!(texts(f), vec!["--from=build", "--chown=a b"]);
        assert_eq!(&"--from=build --chown='a b' src dst"[rest..], "src dst");
        let (f, rest) = extract_flags("--link -- --notaflag x");
        assert_eq!(texts(f), vec!["--link"]);
        assert_eq!(&"--link -- --notaflag x"[rest..], " --notaflag x");
        let (f, rest) = extract_flags("-x");
        assert!(f.is_empty());
        assert_eq!(rest, 0);
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            texts(parse_words(r#"a="b c" d=e\ f 'g h'"#, '\\')),
            vec![r#"a="b c""#, r"d=e\ f", "'g h'"]
        );
    }

    #[test]
    fn heredoc_markers() {
        let m = heredoc_marker("<<-'EOF'").unwrap();
        assert_eq!((m.name.as_str(), m.chomp, m.expand), ("EOF", true, false));
        let m = heredoc_marker("3<<END").unwrap();
        assert_eq!((m.fd, m.expand), (3, true));
        assert!(heredoc_marker("<<").is_none());
        assert!(heredoc_marker("a<<b").is_none());
        assert!(heredoc_marker("<<<x").is_none());
    }
}
