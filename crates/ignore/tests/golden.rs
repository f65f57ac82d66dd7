//! The golden table `testdata/dockerignore/cases.tsv` (see its header for the format).

use rbuild_ignore::{fnmatch, Matcher};

const CASES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/dockerignore/cases.tsv"
);

fn verdict(m: &Matcher, path: &str) -> String {
    match m.excluded(path) {
        Some(rule) => format!("yes@{}", rule.line),
        None => "no".to_string(),
    }
}

#[test]
fn golden_table() {
    let text = std::fs::read_to_string(CASES).expect("read testdata/dockerignore/cases.tsv");
    let mut failures = Vec::new();
    let mut count = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "cases.tsv:{n}: want 4 tab-separated columns");
        let (mode, pats, path, want) = (cols[0], cols[1], cols[2], cols[3]);
        let matcher = || -> Result<Matcher, String> {
            match mode {
                "file" => {
                    let text: String = serde_json::from_str(pats).expect("json text");
                    Matcher::parse(&text).map_err(|e| e.to_string())
                }
                _ => {
                    let list: Vec<String> = serde_json::from_str(pats).expect("json list");
                    Matcher::from_patterns(&list).map_err(|e| e.to_string())
                }
            }
        };
        let got = match mode {
            "ignore" | "file" => match matcher() {
                Ok(m) => verdict(&m, path),
                Err(_) => "error".to_string(),
            },
            "skipdir" => match matcher() {
                Ok(m) => if m.can_skip_dir(path) { "yes" } else { "no" }.to_string(),
                Err(_) => "error".to_string(),
            },
            "fnmatch" => match fnmatch(pats, path) {
                Ok(true) => "yes".to_string(),
                Ok(false) => "no".to_string(),
                Err(_) => "error".to_string(),
            },
            m => panic!("cases.tsv:{n}: unknown mode {m}"),
        };
        // "yes" without a line accepts any deciding rule.
        let ok = got == want || (want == "yes" && got.starts_with("yes@"));
        if !ok {
            failures.push(format!(
                "cases.tsv:{n}: {mode} {pats} {path:?}: got {got}, want {want}"
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
    assert!(count >= 80, "only {count} cases");
}

#[test]
fn errors_name_the_line() {
    let e = Matcher::parse("ok\n\n[a-\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        ".dockerignore line 3: bad pattern \"[a-\": unterminated character class"
    );
    let e = Matcher::parse("a\n!\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        ".dockerignore line 2: illegal exclusion pattern: \"!\""
    );
}

#[test]
fn rule_reports_the_pattern_and_line() {
    let m = Matcher::parse("# logs\n*.log\n\nbuild/\n!build/keep\n").unwrap();
    let r = m.excluded("build/out/x.o").unwrap();
    assert_eq!((r.pattern, r.line, r.exception), ("build", 4, false));
    assert_eq!(m.patterns(), ["*.log", "build", "!build/keep"]);
    assert!(m.has_exceptions());
    assert!(m.may_match_beneath("build"));
    assert!(!m.may_match_beneath("src"));
}
