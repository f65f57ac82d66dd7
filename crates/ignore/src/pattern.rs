//! One `.dockerignore` pattern, compiled as moby/patternmatcher compiles it.
//!
//! patternmatcher sorts each cleaned pattern into one of four kinds and turns only the last into
//! a regular expression:
//! - **exact** (no wildcard): the path equals the pattern;
//! - **prefix** (only a trailing `**`): the path starts with what precedes the `**`;
//! - **suffix** (a leading `**` and no other wildcard): the path ends with what follows the `**`
//!   (so `**file` matches `myfile`, and `**/dir` matches `dir`);
//! - **regexp**: `*` is `[^/]*`, `?` is `[^/]`, `**/` is `(.*/)?`, a trailing `**` is `.*`,
//!   `[...]` a class, `\x` the char `x`, anchored at both ends.
//!
//! We run the regexp kind as a Thompson NFA (a set of states, no backtracking): O(pattern ×
//! path) per match, and one pass answers for the path and all its parent directories.

use crate::fnmatch::decode_rune;

#[derive(Debug, Clone)]
enum Inst {
    Lit(char),
    /// Any char but `/` (`[^/]`).
    NotSlash,
    /// Any char but `\n` (Go's `.`).
    NotNewline,
    Class(usize),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

#[derive(Debug, Clone)]
struct Nfa {
    insts: Vec<Inst>,
    classes: Vec<Class>,
    /// The literal text every match ends with (may be empty): a cheap pre-filter.
    tail: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// The pattern without its trailing `**`.
    Prefix(String),
    /// The pattern's bytes without its first two (its leading `**`, unless a byte-order mark
    /// comes first: moby slices `cleanedPattern[2:]` by bytes, so neither do we cut at a char).
    Suffix(Vec<u8>),
    Regexp(Nfa),
}

/// A compiled pattern (without its `!`).
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    cleaned: String,
    kind: Kind,
}

/// Parses a bracket expression after its `[` (filepath.Match syntax); returns the class and the
/// bytes consumed.
fn parse_class(s: &[u8]) -> Result<(Class, usize), &'static str> {
    let mut i = 0;
    let mut negated = false;
    if s.first() == Some(&b'^') {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let esc = |i: &mut usize| -> Result<char, &'static str> {
        match s.get(*i) {
            None | Some(b'-' | b']') => return Err("bad character class"),
            Some(b'\\') => *i += 1,
            Some(_) => {}
        }
        let (c, n) = decode_rune(&s[*i..]);
        if n == 0 {
            return Err("bad character class");
        }
        *i += n;
        Ok(c)
    };
    loop {
        if s.get(i) == Some(&b']') && !ranges.is_empty() {
            i += 1;
            break;
        }
        let lo = esc(&mut i)?;
        let mut hi = lo;
        if s.get(i) == Some(&b'-') {
            i += 1;
            hi = esc(&mut i)?;
        }
        ranges.push((lo, hi));
    }
    Ok((Class { negated, ranges }, i))
}

impl Pattern {
    /// Compiles a cleaned pattern (already validated with [`crate::fnmatch`] syntax).
    pub(crate) fn compile(cleaned: &str) -> Result<Pattern, &'static str> {
        #[derive(PartialEq, Clone, Copy)]
        enum Detected {
            Exact,
            Prefix,
            Suffix,
            Regexp,
        }
        let mut insts: Vec<Inst> = Vec::new();
        let mut classes = Vec::new();
        let mut detected = Detected::Exact;
        let bytes = cleaned.as_bytes();
        // Go's text/scanner skips a leading byte-order mark.
        let mut pos = if cleaned.starts_with('\u{FEFF}') {
            3
        } else {
            0
        };
        let peek = |pos: usize| cleaned[pos..].chars().next();
        let mut first = true;
        let mut tail = String::new();
        while let Some(ch) = peek(pos) {
            pos += ch.len_utf8();
            let before = insts.len();
            match ch {
                '*' if peek(pos) == Some('*') => {
                    pos += 1;
                    if peek(pos) == Some('/') {
                        pos += 1;
                    }
                    if peek(pos).is_none() {
                        if detected == Detected::Exact {
                            detected = Detected::Prefix;
                        } else {
                            // `.*`
                            let l = insts.len();
                            insts.extend([
                                Inst::Split(l + 1, l + 3),
                                Inst::NotNewline,
                                Inst::Jmp(l),
                            ]);
                            detected = Detected::Regexp;
                        }
                    } else {
                        // `(.*/)?`
                        let l = insts.len();
                        insts.extend([
                            Inst::Split(l + 1, l + 5),
                            Inst::Split(l + 2, l + 4),
                            Inst::NotNewline,
                            Inst::Jmp(l + 1),
                            Inst::Lit('/'),
                        ]);
                        detected = Detected::Regexp;
                    }
                    if first {
                        detected = Detected::Suffix;
                    }
                }
                '*' => {
                    // `[^/]*`
                    let l = insts.len();
                    insts.extend([Inst::Split(l + 1, l + 3), Inst::NotSlash, Inst::Jmp(l)]);
                    detected = Detected::Regexp;
                }
                '?' => {
                    insts.push(Inst::NotSlash);
                    detected = Detected::Regexp;
                }
                '\\' => match peek(pos) {
                    Some(c) => {
                        pos += c.len_utf8();
                        insts.push(Inst::Lit(c));
                        detected = Detected::Regexp;
                    }
                    None => insts.push(Inst::Lit('\\')),
                },
                '[' => {
                    let (class, n) = parse_class(&bytes[pos..])?;
                    pos += n;
                    insts.push(Inst::Class(classes.len()));
                    classes.push(class);
                    detected = Detected::Regexp;
                }
                ']' => {
                    insts.push(Inst::Lit(']'));
                    detected = Detected::Regexp;
                }
                c => insts.push(Inst::Lit(c)),
            }
            match insts[before..] {
                [Inst::Lit(c)] => tail.push(c),
                _ => tail.clear(),
            }
            first = false;
        }
        insts.push(Inst::Match);
        let kind = match detected {
            Detected::Exact => Kind::Exact,
            Detected::Prefix => Kind::Prefix(cleaned[..cleaned.len() - 2].to_string()),
            Detected::Suffix => Kind::Suffix(cleaned.as_bytes()[2..].to_vec()),
            Detected::Regexp => Kind::Regexp(Nfa {
                insts,
                classes,
                tail,
            }),
        };
        Ok(Pattern {
            cleaned: cleaned.to_string(),
            kind,
        })
    }

    /// Whether the pattern matches `path` (clean, relative) or one of its parent directories
    /// (patternmatcher's `MatchesOrParentMatches` for one pattern).
    pub(crate) fn matches_or_parent(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Regexp(nfa) => {
                let t = nfa.tail.as_str();
                let may = t.is_empty()
                    || path.ends_with(t)
                    || path.match_indices('/').any(|(i, _)| path[..i].ends_with(t));
                may && nfa.run(path, true).0
            }
            _ => {
                let simple = |p: &str| self.simple_match(p);
                simple(path)
                    || path
                        .match_indices('/')
                        .any(|(i, _)| i > 0 && simple(&path[..i]))
            }
        }
    }

    fn simple_match(&self, p: &str) -> bool {
        match &self.kind {
            Kind::Exact => p == self.cleaned,
            Kind::Prefix(pre) => p.starts_with(pre.as_str()),
            Kind::Suffix(suf) => {
                let p = p.as_bytes();
                p.ends_with(suf) || (suf.first() == Some(&b'/') && p == &suf[1..])
            }
            Kind::Regexp(nfa) => nfa.run(p, false).0,
        }
    }

    /// Whether some path strictly beneath directory `dir` (clean, relative; `""` for the root)
    /// could match. Conservative: may say yes when no such path exists, never the reverse.
    pub(crate) fn may_match_beneath(&self, dir: &str) -> bool {
        if dir.is_empty() {
            return true;
        }
        let under =
            |s: &str| s.len() > dir.len() && s.starts_with(dir) && s.as_bytes()[dir.len()] == b'/';
        match &self.kind {
            Kind::Exact => under(&self.cleaned),
            Kind::Prefix(pre) => {
                let pre = pre.as_str();
                under(pre) || pre.starts_with(dir) || dir.starts_with(pre) || pre.is_empty()
            }
            Kind::Suffix(_) => true,
            Kind::Regexp(nfa) => {
                let mut probe = String::with_capacity(dir.len() + 1);
                probe.push_str(dir);
                probe.push('/');
                nfa.run(&probe, false).1
            }
        }
    }
}

/// Reusable buffers of [`Nfa::run`], one set per thread, so a match allocates nothing.
#[derive(Default)]
struct Scratch {
    marks: Vec<u32>,
    gen: u32,
    cur: Vec<usize>,
    next: Vec<usize>,
    stack: Vec<usize>,
}

impl Scratch {
    /// Starts a new generation of marks (a fresh "visited" set) for `n` instructions.
    fn bump(&mut self, n: usize) -> u32 {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.gen = self.gen.wrapping_add(1);
        if self.gen == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.gen = 1;
        }
        self.gen
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

impl Nfa {
    /// Runs over `text`. Returns (matched, alive): `matched` is a full match of `text` — or, with
    /// `parents`, of any prefix ending just before a `/` (a parent directory); `alive` is whether
    /// any state survives the whole text (some extension of `text` could still match).
    fn run(&self, text: &str, parents: bool) -> (bool, bool) {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.run_with(&mut scratch, text, parents),
            // Re-entered on this thread (cannot happen today): use fresh buffers.
            Err(_) => self.run_with(&mut Scratch::default(), text, parents),
        })
    }

    fn run_with(&self, sc: &mut Scratch, text: &str, parents: bool) -> (bool, bool) {
        let n = self.insts.len();
        let Scratch {
            cur, next, stack, ..
        } = sc;
        let (mut cur, mut next, mut stack) = (
            std::mem::take(cur),
            std::mem::take(next),
            std::mem::take(stack),
        );
        cur.clear();
        next.clear();
        let gen = sc.bump(n);
        self.add(&mut cur, &mut sc.marks, gen, &mut stack, 0);
        let mut result = None;
        for (i, c) in text.char_indices() {
            if parents && c == '/' && i > 0 && self.has_match(&cur) {
                result = Some((true, true));
                break;
            }
            let gen = sc.bump(n);
            for &pc in &cur {
                let ok = match self.insts[pc] {
                    Inst::Lit(l) => l == c,
                    Inst::NotSlash => c != '/',
                    Inst::NotNewline => c != '\n',
                    Inst::Class(k) => self.classes[k].contains(c),
                    Inst::Split(..) | Inst::Jmp(_) | Inst::Match => false,
                };
                if ok {
                    self.add(&mut next, &mut sc.marks, gen, &mut stack, pc + 1);
                }
            }
            std::mem::swap(&mut cur, &mut next);
            next.clear();
            if cur.is_empty() {
                // Dead: no extension can match (a matching parent returned above).
                result = Some((false, false));
                break;
            }
        }
        let result = result.unwrap_or_else(|| (self.has_match(&cur), !cur.is_empty()));
        (sc.cur, sc.next, sc.stack) = (cur, next, stack);
        result
    }

    fn has_match(&self, list: &[usize]) -> bool {
        list.iter().any(|&pc| matches!(self.insts[pc], Inst::Match))
    }

    fn add(
        &self,
        list: &mut Vec<usize>,
        marks: &mut [u32],
        gen: u32,
        stack: &mut Vec<usize>,
        pc: usize,
    ) {
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if marks[pc] == gen {
                continue;
            }
            marks[pc] = gen;
            match self.insts[pc] {
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Jmp(a) => stack.push(a),
                _ => list.push(pc),
            }
        }
    }
}
