//! The golden table (`testdata/expand/cases.tsv`), match tracking, bounds, and a randomized
//! no-panic test.

use std::collections::BTreeMap;

use super::*;

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/expand/cases.tsv");

/// BuildKit's `envVarTest` environment.
fn default_env() -> BTreeMap<String, String> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A field is taken literally, unless it starts with `json:` (then it is a JSON string, for
/// tabs and newlines).
fn field(raw: &str, line: usize) -> String {
    match raw.strip_prefix("json:") {
        Some(j) => serde_json::from_str(j)
            .unwrap_or_else(|e| panic!("cases.tsv:{line}: bad json field {j:?}: {e}")),
        None => raw.to_string(),
    }
}

#[test]
fn golden_table() {
    let text = std::fs::read_to_string(CASES).expect("read testdata/expand/cases.tsv");
    let mut count = 0;
    let mut failures = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            cols.len(),
            5,
            "cases.tsv:{n}: want 5 tab-separated columns: {line:?}"
        );
        let mut parts = cols[0].split('+');
        let mode = parts.next().unwrap_or_default();
        let mut lex = Lexer::new(cols[1].chars().next().expect("escape column"));
        for opt in parts {
            lex = match opt {
                "rawquotes" => lex.with_raw_quotes(true),
                "rawescapes" => lex.with_raw_escapes(true),
                "skipquotes" => lex.with_skip_process_quotes(true),
                "skipunset" => lex.with_skip_unset_env(true),
                o => panic!("cases.tsv:{n}: unknown option {o}"),
            };
        }
        let word = field(cols[2], n);
        let env: BTreeMap<String, String> = match cols[3] {
            "-" => default_env(),
            "0" => BTreeMap::new(),
            j => serde_json::from_str(j).unwrap_or_else(|e| panic!("cases.tsv:{n}: env: {e}")),
        };
        let lookup = |k: &str| env.get(k).cloned();
        let expected = cols[4];
        let got: Result<String, ExpandError> = match mode {
            "word" => lex.process_word(&word, &lookup),
            "words" => lex
                .process_words(&word, &lookup)
                .map(|w| serde_json::to_string(&w).unwrap()),
            m => panic!("cases.tsv:{n}: unknown mode {m}"),
        };
        let ok = match (expected.strip_prefix("!ERR:"), &got) {
            (Some(sub), Err(e)) => e.to_string().contains(sub),
            (Some(_), Ok(_)) => false,
            (None, Ok(v)) => {
                if mode == "words" {
                    let want: Vec<String> = serde_json::from_str(expected)
                        .unwrap_or_else(|e| panic!("cases.tsv:{n}: expected: {e}"));
                    serde_json::to_string(&want).unwrap() == *v
                } else {
                    *v == field(expected, n)
                }
            }
            (None, Err(_)) => false,
        };
        if !ok {
            failures.push(format!(
                "cases.tsv:{n}: {word:?} -> {got:?}, want {expected:?}"
            ));
        }
        count += 1;
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= 200, "only {count} cases");
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn matches_are_reported() {
    let env: BTreeMap<&str, &str> = [("FOO", "xxx"), ("BAR", "")].into_iter().collect();
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    let lex = Lexer::new('\\');
    let e = lex
        .process_word_with_matches("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &lookup)
        .unwrap();
    assert_eq!(e.result, "xxx bbb ccc");
    assert_eq!(e.words, ["xxx", "bbb", "ccc"]);
    assert_eq!(e.matched, set(&["BAR", "FOO"]));
    assert_eq!(e.unmatched, set(&["BAZ"]));

    let e = lex.process_word_with_matches("x", &lookup).unwrap();
    assert!(e.matched.is_empty() && e.unmatched.is_empty());

    let e = lex
        .process_word_with_matches("${FOO#$QUX}'$NOPE'", &lookup)
        .unwrap();
    assert_eq!(e.result, "xxx$NOPE");
    assert_eq!(e.matched, set(&["FOO"]));
    assert_eq!(e.unmatched, set(&["QUX"]));
}

#[test]
fn error_offsets_point_at_the_construct() {
    let lookup = |_: &str| None;
    let lex = Lexer::new('\\');
    let cases = [
        ("abc ${x", 4),
        ("ab ${x:?gone}", 3),
        ("a 'bc", 2),
        ("a \"bc", 2),
        ("${a:-${b/\\x/y}}", 5),
        ("xy${}", 2),
    ];
    for (word, off) in cases {
        let e = lex.process_word(word, &lookup).unwrap_err();
        assert_eq!(e.offset, off, "{word}: {e}");
        assert_eq!(e.word, word);
    }
    let e = lex.process_word("${x:?}", &lookup).unwrap_err();
    assert_eq!(e.kind, ExpandErrorKind::Unset);
    assert_eq!(
        e.to_string(),
        "failed to process \"${x:?}\": x: is not allowed to be unset"
    );
}

#[test]
fn doubling_hits_the_size_bound() {
    let lex = Lexer::new('\\');
    let mut a = "x".repeat(1024);
    let mut failed = false;
    for _ in 0..20 {
        let cur = a.clone();
        let lookup = move |k: &str| (k == "A").then(|| cur.clone());
        match lex.process_word("$A$A", &lookup) {
            Ok(v) => a = v,
            Err(e) => {
                assert_eq!(e.kind, ExpandErrorKind::Limit, "{e}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "doubling never hit the bound");
    assert!(a.len() <= MAX_OUTPUT);
}

#[test]
fn replace_all_growth_hits_the_size_bound() {
    let lex = Lexer::new('\\');
    let big = "y".repeat(4096);
    let lookup = move |k: &str| match k {
        "V" => Some("z".repeat(4096)),
        "R" => Some(big.clone()),
        _ => None,
    };
    let e = lex.process_word("${V//?/$R}", &lookup).unwrap_err();
    assert_eq!(e.kind, ExpandErrorKind::Limit);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let lex = Lexer::new('\\');
    let lookup = |_: &str| None;
    let depth = 100_000;
    let word = "${a:-".repeat(depth) + "x" + &"}".repeat(depth);
    let e = lex.process_word(&word, &lookup).unwrap_err();
    assert_eq!(e.kind, ExpandErrorKind::Limit);
    assert!(e.word.len() < 300);
    // Within the bound it works.
    let word = "${a:-".repeat(40) + "x" + &"}".repeat(40);
    assert_eq!(lex.process_word(&word, &lookup).unwrap(), "x");
}

#[test]
fn pathological_pattern_is_bounded() {
    let lex = Lexer::new('\\');
    let lookup = |k: &str| match k {
        "V" => Some("a".repeat(200_000)),
        "P" => Some("*".repeat(5_000) + "b"),
        _ => None,
    };
    let e = lex.process_word("${V//$P/c}", &lookup).unwrap_err();
    assert_eq!(e.kind, ExpandErrorKind::Limit);
}

/// xorshift64*: a tiny deterministic generator, so the random test needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random words over the interesting alphabet never panic; results stay within the bound.
#[test]
fn random_words_never_panic() {
    const ATOMS: &[&str] = &[
        "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "*", "\\", "`", "'", "\"", " ", "a", "A",
        "B", "1", "_", "${A", "${B:-", "${A//", "${A%%", "${A##", "$A", "\n", "é", "[", "\u{FEFF}",
        "$$", "${#}", "${A:?", "${A/", "${A#",
    ];
    let env = |k: &str| match k {
        "A" => Some("a*b?c/d}e".to_string()),
        "B" => Some(String::new()),
        _ => None,
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let lexers = [
        Lexer::new('\\'),
        Lexer::new('`'),
        Lexer::new('\\')
            .with_raw_quotes(true)
            .with_skip_unset_env(true),
        Lexer::new('\\')
            .with_raw_escapes(true)
            .with_skip_process_quotes(true),
    ];
    for _ in 0..20_000 {
        let len = rng.below(24);
        let word: String = (0..len).map(|_| ATOMS[rng.below(ATOMS.len())]).collect();
        let lex = &lexers[rng.below(lexers.len())];
        match lex.process_word_with_matches(&word, &env) {
            Ok(e) => {
                assert!(e.result.len() <= MAX_OUTPUT);
                assert_eq!(lex.process_word(&word, &env).unwrap(), e.result);
            }
            Err(e) => {
                assert!(e.offset <= word.len(), "{word:?}: {e:?}");
                assert!(lex.process_word(&word, &env).is_err());
            }
        }
    }
}

mod props {
    use super::super::*;
    use proptest::prelude::*;

    fn atom() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "$", "${", "}", ":", "-", "+", "?", "#", "%", "/", "*", "\\", "`", "'", "\"", " ",
                "${A", "${A//", "${A%%", "${A:?", "$A", "\n", "[",
            ])
            .prop_map(str::to_string),
            "\\PC{0,3}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Any word, either escape char: no panic, output within the bound, offsets in range,
        /// and process_word agrees with process_word_with_matches.
        #[test]
        fn never_panics(parts in prop::collection::vec(atom(), 0..16), backtick in any::<bool>(), a in "\\PC{0,8}") {
            let word = parts.concat();
            let env = move |k: &str| (k == "A").then(|| a.clone());
            let lex = Lexer::new(if backtick { '`' } else { '\\' });
            match lex.process_word_with_matches(&word, &env) {
                Ok(e) => {
                    prop_assert!(e.result.len() <= MAX_OUTPUT);
                    prop_assert_eq!(lex.process_word(&word, &env).ok(), Some(e.result));
                }
                Err(e) => {
                    prop_assert!(e.offset <= word.len());
                    prop_assert!(lex.process_words(&word, &env).is_err());
                }
            }
        }
    }
}
