//! Shell patterns of `${v#p}`, `${v%p}`, `${v/p/r}` — BuildKit's dialect.
//!
//! BuildKit turns such a pattern into a Go regular expression (`convertShellPatternToRegex` in
//! `frontend/dockerfile/shell/lex.go`): `*` becomes `.*` (or `.*?` for the shortest-match forms),
//! `?` becomes `.`, `\*` `\?` `\\` are literals, `\}` and `\/` drop the backslash, any other
//! backslash escape is an error, and every other character — `[` included: there are no bracket
//! expressions — is a literal. Go's `.` does not match `\n`.
//!
//! We do not build a regex: the language is only literals, "any char but newline" and stars, so a
//! tiny Pike VM with thread priorities gives Go's leftmost-first semantics exactly, in
//! O(pattern × text) per search, with a step budget so that no input can make it run long.

use super::Fail;

/// One instruction of a compiled pattern.
#[derive(Debug, Clone, Copy)]
enum Inst {
    /// The next char is exactly this one.
    Char(char),
    /// The next char is anything but `\n` (Go's `.`).
    Any,
    /// Try both; the first is the preferred (higher-priority) branch.
    Split(u32, u32),
    Jmp(u32),
    Match,
}

/// A compiled shell pattern.
#[derive(Debug)]
pub(super) struct Program {
    insts: Vec<Inst>,
    anchored: bool,
}

/// A shared step budget for all pattern searches of one word.
#[derive(Debug)]
pub(super) struct Budget {
    left: u64,
}

impl Budget {
    pub(super) fn new(steps: u64) -> Self {
        Budget { left: steps }
    }

    fn spend(&mut self, n: u64) -> Result<(), Fail> {
        match self.left.checked_sub(n) {
            Some(rest) => {
                self.left = rest;
                Ok(())
            }
            None => Err(Fail::limit(
                "pattern matching exceeded its work budget (pattern or value too large)",
            )),
        }
    }
}

/// A char scanner with Go `text/scanner`'s one quirk that matters here: a byte-order mark as
/// the very first char is skipped.
#[derive(Debug, Clone)]
pub(super) struct Scanner<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        let pos = if src.starts_with('\u{FEFF}') { 3 } else { 0 };
        Scanner { src, pos }
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    pub(super) fn next_char(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    pub(super) fn advance(&mut self, bytes: usize) {
        self.pos += bytes;
    }

    pub(super) fn src(&self) -> &'a str {
        self.src
    }
}

impl Program {
    /// Compiles `pattern` as BuildKit's `convertShellPatternToRegex(pattern, greedy, anchored)`.
    /// The error text is the reason only (e.g. `invalid escape '\x'`).
    pub(super) fn compile(pattern: &str, greedy: bool, anchored: bool) -> Result<Program, String> {
        let mut insts = Vec::with_capacity(pattern.len() + 1);
        let mut s = Scanner::new(pattern);
        while let Some(tok) = s.next_char() {
            match tok {
                '*' => {
                    let l =
                        u32::try_from(insts.len()).map_err(|_| "pattern too long".to_string())?;
                    let (body, out) = (l + 1, l + 3);
                    insts.push(if greedy {
                        Inst::Split(body, out)
                    } else {
                        Inst::Split(out, body)
                    });
                    insts.push(Inst::Any);
                    insts.push(Inst::Jmp(l));
                }
                '?' => insts.push(Inst::Any),
                '\\' => {
                    // `}` and `/` had to be escaped inside ${}; the escape is not part of the pattern.
                    if matches!(s.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match s.next_char() {
                        Some(c @ ('*' | '?' | '\\')) => insts.push(Inst::Char(c)),
                        other => {
                            return Err(format!(
                                "invalid escape '\\{}'",
                                other.unwrap_or('\u{FFFD}')
                            ))
                        }
                    }
                }
                c => insts.push(Inst::Char(c)),
            }
        }
        insts.push(Inst::Match);
        if u32::try_from(insts.len()).is_err() {
            return Err("pattern too long".to_string());
        }
        Ok(Program { insts, anchored })
    }

    /// Leftmost-first match in `hay` starting the search at byte `from` (a char boundary), as
    /// Go's `Regexp.FindStringIndex` on `hay[from..]` with the whole of `hay` as context.
    pub(super) fn find(
        &self,
        hay: &str,
        from: usize,
        budget: &mut Budget,
    ) -> Result<Option<(usize, usize)>, Fail> {
        let mut clist = ThreadList::new(self.insts.len());
        let mut nlist = ThreadList::new(self.insts.len());
        let mut stack: Vec<u32> = Vec::new();
        let mut matched = None;
        let mut pos = from;
        loop {
            if matched.is_none() && (!self.anchored || pos == from) {
                self.add_thread(&mut clist, &mut stack, 0, pos, budget)?;
            }
            if clist.threads.is_empty() {
                break;
            }
            let cur = hay[pos..].chars().next();
            budget.spend(clist.threads.len() as u64)?;
            for &(pc, start) in &clist.threads {
                let advance = match self.insts[pc as usize] {
                    Inst::Match => {
                        matched = Some((start, pos));
                        break; // lower-priority threads are cut off
                    }
                    Inst::Char(c) => cur == Some(c),
                    Inst::Any => cur.is_some_and(|c| c != '\n'),
                    Inst::Split(..) | Inst::Jmp(_) => false,
                };
                if advance {
                    self.add_thread(&mut nlist, &mut stack, pc + 1, start, budget)?;
                }
            }
            std::mem::swap(&mut clist, &mut nlist);
            nlist.clear();
            match cur {
                Some(c) => pos += c.len_utf8(),
                None => break,
            }
        }
        Ok(matched)
    }

    /// Adds the thread at `pc` to `list`, following jumps and splits in priority order.
    fn add_thread(
        &self,
        list: &mut ThreadList,
        stack: &mut Vec<u32>,
        pc: u32,
        start: usize,
        budget: &mut Budget,
    ) -> Result<(), Fail> {
        stack.push(pc);
        let mut steps = 0u64;
        while let Some(pc) = stack.pop() {
            if !list.mark(pc) {
                continue;
            }
            steps += 1;
            match self.insts[pc as usize] {
                Inst::Jmp(t) => stack.push(t),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Char(_) | Inst::Any | Inst::Match => list.threads.push((pc, start)),
            }
        }
        budget.spend(steps)
    }
}

/// The threads alive at one position, in priority order, with a visited mark per instruction.
struct ThreadList {
    threads: Vec<(u32, usize)>,
    marks: Vec<u32>,
    gen: u32,
}

impl ThreadList {
    fn new(n: usize) -> Self {
        ThreadList {
            threads: Vec::new(),
            marks: vec![0; n],
            gen: 1,
        }
    }

    /// Marks `pc` visited; false if it already was.
    fn mark(&mut self, pc: u32) -> bool {
        let slot = &mut self.marks[pc as usize];
        if *slot == self.gen {
            return false;
        }
        *slot = self.gen;
        true
    }

    fn clear(&mut self) {
        self.threads.clear();
        self.gen = self.gen.wrapping_add(1);
        if self.gen == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.gen = 1;
        }
    }
}

/// Reverses a pattern keeping `\x` pairs in order (BuildKit's `reversePattern`), so that a
/// shortest/longest *suffix* search becomes a prefix search on reversed text.
pub(super) fn reverse_pattern(pattern: &str) -> String {
    let runes: Vec<char> = pattern.chars().collect();
    if runes.is_empty() {
        return String::new();
    }
    let last = runes.len() - 1;
    let mut out = vec!['\0'; runes.len()];
    let mut i = 0;
    while i <= last {
        let tok = runes[i];
        let out_idx = last - i;
        if tok == '\\' && i != last {
            out[out_idx - 1] = tok;
            out[out_idx] = runes[i + 1];
            i += 2;
        } else {
            out[out_idx] = tok;
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn invalid(pattern: &str, why: String) -> Fail {
    Fail::pattern(format!(
        "invalid pattern ({pattern}) in substitution: {why}"
    ))
}

/// `${v#p}` / `${v##p}`: removes the shortest (longest if `greedy`) prefix matching `pattern`.
pub(super) fn trim_prefix(
    pattern: &str,
    value: &str,
    greedy: bool,
    budget: &mut Budget,
) -> Result<String, Fail> {
    let prog = Program::compile(pattern, greedy, true).map_err(|e| invalid(pattern, e))?;
    Ok(match prog.find(value, 0, budget)? {
        Some((_, end)) => value[end..].to_string(),
        None => value.to_string(),
    })
}

/// `${v%p}` / `${v%%p}`: removes the shortest (longest if `greedy`) suffix matching `pattern`.
pub(super) fn trim_suffix(
    pattern: &str,
    value: &str,
    greedy: bool,
    budget: &mut Budget,
) -> Result<String, Fail> {
    let rev_pattern = reverse_pattern(pattern);
    let rev_value: String = value.chars().rev().collect();
    let prog = Program::compile(&rev_pattern, greedy, true).map_err(|e| invalid(pattern, e))?;
    Ok(match prog.find(&rev_value, 0, budget)? {
        Some((_, end)) => rev_value[end..].chars().rev().collect(),
        None => value.to_string(),
    })
}

/// `${v/p/r}` (first match, `r` literal) and `${v//p/r}` (every match, `r` a Go regexp
/// template in which `$0`/`${0}` is the match, `$$` a dollar and any other `$name` empty).
pub(super) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
    max_len: usize,
    budget: &mut Budget,
) -> Result<String, Fail> {
    let prog = Program::compile(pattern, true, false).map_err(|e| invalid(pattern, e))?;
    let too_big = || Fail::limit(format!("expansion exceeds the limit of {max_len} bytes"));
    if !all {
        return Ok(match prog.find(value, 0, budget)? {
            Some((a, b)) => {
                if value.len() - (b - a) + replacement.len() > max_len {
                    return Err(too_big());
                }
                let mut out = String::with_capacity(value.len() - (b - a) + replacement.len());
                out.push_str(&value[..a]);
                out.push_str(replacement);
                out.push_str(&value[b..]);
                out
            }
            None => value.to_string(),
        });
    }
    // Go's Regexp.replaceAll loop, empty-match rules included.
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some((a0, a1)) = prog.find(value, search, budget)? else {
            break;
        };
        out.push_str(&value[last_end..a0]);
        if a1 > last_end || a0 == 0 {
            expand_template(&mut out, replacement, &value[a0..a1]);
        }
        if out.len() > max_len {
            return Err(too_big());
        }
        last_end = a1;
        let width = value[search..].chars().next().map_or(0, char::len_utf8);
        if search + width > a1 {
            search += width;
        } else if search + 1 > a1 {
            search += 1;
        } else {
            search = a1;
        }
    }
    out.push_str(&value[last_end..]);
    if out.len() > max_len {
        return Err(too_big());
    }
    Ok(out)
}

/// Go's `Regexp.expand` for a regexp without capture groups: only group 0 exists.
fn expand_template(dst: &mut String, template: &str, whole: &str) {
    let mut t = template;
    while let Some(i) = t.find('$') {
        dst.push_str(&t[..i]);
        t = &t[i + 1..];
        if let Some(rest) = t.strip_prefix('$') {
            dst.push('$');
            t = rest;
            continue;
        }
        match extract_group(t) {
            Some((is_zero, rest)) => {
                if is_zero {
                    dst.push_str(whole);
                }
                t = rest;
            }
            None => dst.push('$'),
        }
    }
    dst.push_str(t);
}

/// Go's `regexp.extract`: parses `name` or `{name}`; returns whether it names group 0, and the
/// rest of the template. `None` when malformed (the `$` is then literal).
fn extract_group(s: &str) -> Option<(bool, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let name_len: usize = body
        .chars()
        .take_while(|&c| super::is_go_letter(c) || super::is_go_digit(c) || c == '_')
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let name = &body[..name_len];
    let mut rest = &body[name_len..];
    if brace {
        rest = rest.strip_prefix('}')?;
    }
    // Group numbers have no leading zeros; only "0" itself names group 0.
    Some((name == "0", rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(p: &str, greedy: bool, anchored: bool, hay: &str) -> Option<(usize, usize)> {
        let prog = Program::compile(p, greedy, anchored).unwrap();
        prog.find(hay, 0, &mut Budget::new(1 << 20)).unwrap()
    }

    #[test]
    fn leftmost_first() {
        assert_eq!(find("a*b", true, false, "xxabab"), Some((2, 6)));
        assert_eq!(find("a*b", false, false, "xxabab"), Some((2, 4)));
        assert_eq!(find("*", false, true, "abc"), Some((0, 0)));
        assert_eq!(find("*", true, true, "ab\ncd"), Some((0, 2)));
        assert_eq!(find("?", true, true, "\n"), None);
        assert_eq!(find("", true, false, "abc"), Some((0, 0)));
        assert_eq!(find("c", true, true, "abc"), None);
    }

    #[test]
    fn compile_errors_match_buildkit() {
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(Program::compile(bad, true, true).is_err(), "{bad}");
        }
        assert!(Program::compile("(()[]{\\}^$.\\*\\?|\\\\", true, true).is_ok());
    }

    #[test]
    fn reverse_pattern_keeps_escapes() {
        for (p, want) in [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
        ] {
            assert_eq!(reverse_pattern(p), want, "{p}");
        }
    }

    #[test]
    fn template() {
        let mut s = String::new();
        expand_template(&mut s, "<$0|${0}|$$|$1|$x|$|${0|$00>", "M");
        assert_eq!(s, "<M|M|$|||$|${0|>");
    }

    #[test]
    fn budget_stops_pathological_search() {
        let pat = "*".repeat(2000) + "x";
        let hay = "a".repeat(100_000);
        let prog = Program::compile(&pat, true, false).unwrap();
        assert!(prog.find(&hay, 0, &mut Budget::new(1_000_000)).is_err());
    }
}
