//! Never panics, never hangs: random and mutated Dockerfiles through parse, plan and the build
//! checks.

mod common;

use proptest::prelude::*;
use rbuild_frontend::{plan, PlanOptions};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Cases per property: 600 in CI; `PROPTEST_CASES=N` for long runs (explicit `cases` in a
/// `ProptestConfig` would otherwise ignore the variable).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
}

fn corpus() -> &'static [String] {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(read_corpus)
}

fn read_corpus() -> Vec<String> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/dockerfiles");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("testdata/corpus/dockerfiles exists")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert!(out.len() > 50, "the corpus is missing");
    out.push("FROM busybox AS a\nARG X=1\nRUN --mount=type=cache,target=/c echo $X\nCOPY --from=a <<EOF /x\nhi\nEOF\nONBUILD RUN x\nHEALTHCHECK --interval=1s CMD true\n".into());
    out
}

fn run_one(text: &str) {
    let start = Instant::now();
    let _ = rbuild_frontend::parse("Dockerfile", text).map(|df| rbuild_frontend::to_json(&df));
    let resolver = common::FakeResolver::new();
    if let Err(e) = plan(&PlanOptions::new("Dockerfile", text), &resolver) {
        let _ = e.render();
    }
    match rbuild_frontend::plan_checked(&PlanOptions::new("Dockerfile", text), &resolver) {
        Ok(c) => {
            for w in &c.warnings {
                let _ = w.render();
            }
        }
        Err(e) => {
            let _ = e.render();
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?} on {text:?}",
        start.elapsed()
    );
}

const TOKENS: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "WORKDIR ",
    "EXPOSE ",
    "SHELL ",
    "CMD ",
    "USER ",
    "VOLUME ",
    "STOPSIGNAL ",
    "busybox",
    " AS ",
    "a",
    "$A",
    "${A:-b}",
    "${",
    "}",
    "\"",
    "'",
    "\\",
    "`",
    "\n",
    "\r\n",
    " ",
    "\t",
    "<<EOF",
    "<<-'E'",
    "EOF",
    "E",
    "[",
    "]",
    "[\"x\"]",
    ",",
    "=",
    "--from=",
    "--mount=type=cache,target=/x",
    "--chmod=",
    "# escape=`\n",
    "# check=skip=all;error=true\n",
    "# check=experimental=all\n",
    "ARG TOKEN\n",
    "EXPOSE 80/TCP 1:2\n",
    "FROM --platform=linux/amd64 ",
    "#",
    "0",
    "-1",
    "--",
    "\u{feff}",
    "é",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), .. ProptestConfig::default() })]

    #[test]
    fn random_tokens(idx in proptest::collection::vec(0..TOKENS.len(), 0..80)) {
        let text: String = idx.into_iter().map(|i| TOKENS[i]).collect();
        run_one(&text);
    }

    #[test]
    fn random_bytes(s in "\\PC{0,300}") {
        run_one(&s);
    }

    #[test]
    fn mutated_corpus(file in any::<prop::sample::Index>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..TOKENS.len(), 0..3u8), 1..12)) {
        let files = corpus();
        let mut text: Vec<char> = file.get(files).chars().collect();
        for (at, tok, kind) in edits {
            if text.is_empty() { break; }
            let i = at.index(text.len());
            match kind {
                0 => { text.remove(i); }
                1 => { for (k, c) in TOKENS[tok].chars().enumerate() { text.insert(i + k, c); } }
                _ => { let end = (i + 5).min(text.len()); text.drain(i..end); }
            }
        }
        run_one(&text.into_iter().collect::<String>());
    }
}
