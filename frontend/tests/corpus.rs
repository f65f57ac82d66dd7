//! The corpus of real Dockerfiles (`testdata/corpus/dockerfiles`, official images; sources in
//! its SOURCES.md): every file parses, with no flag left inside an argument and monotonic spans;
//! and the build checks raise exactly the warnings in `testdata/corpus/lint-expected.txt`
//! (`UPDATE_GOLDEN=1` rewrites it), each of which was reviewed as one BuildKit raises too.

mod common;

use rbuild_frontend::{parse, Body, Instruction};
use std::path::Path;

fn check_instruction(file: &str, ins: &Instruction) {
    assert!(
        ins.span.start_line <= ins.span.end_line,
        "{file}: bad span {:?}",
        ins.span
    );
    let words: Vec<&str> = match &ins.body {
        Body::Words(w) => w.iter().map(|w| w.text.as_str()).collect(),
        Body::Exec(v) => v.iter().map(String::as_str).collect(),
        Body::Shell(s) => s.split_whitespace().take(1).collect(),
        Body::OnBuild(inner) => {
            check_instruction(file, inner);
            vec![]
        }
        _ => vec![],
    };
    for w in words.iter().take(1) {
        for f in [
            "--chown",
            "--chmod",
            "--from",
            "--link",
            "--mount",
            "--platform",
            "--network",
        ] {
            assert!(
                !w.starts_with(f),
                "{file}:{}: flag {f} left in the arguments of {:?}",
                ins.span.start_line,
                ins.original
            );
        }
    }
}

#[test]
fn corpus_parses() {
    let mut n = 0;
    for (name, text) in corpus() {
        let df = parse(&name, &text).unwrap_or_else(|e| panic!("{}", e.render()));
        let mut last_end = 0;
        for ins in &df.instructions {
            assert!(
                ins.span.start_line > last_end,
                "{name}: spans not monotonic at line {}",
                ins.span.start_line
            );
            last_end = ins.span.end_line;
            check_instruction(&name, ins);
        }
        n += 1;
    }
    println!("{n} corpus Dockerfiles parsed");
    assert!(n > 0);
}

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus")
}

/// `(file name, text)` of every corpus Dockerfile, sorted by name.
fn corpus() -> Vec<(String, String)> {
    let dir = corpus_dir().join("dockerfiles");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("testdata/corpus/dockerfiles exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".md"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() > 50, "corpus too small: {}", out.len());
    out
}

/// Answers every reference with a plain linux/amd64 image whose only variable is PATH, as the
/// official images' bases (debian, alpine, buildpack-deps) are.
struct AnyImage;

impl rbuild_ops::ImageResolver for AnyImage {
    fn resolve(
        &self,
        reference: &str,
    ) -> Result<rbuild_ops::ResolvedImage, rbuild_ops::ResolveError> {
        let config = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap();
        Ok(rbuild_ops::ResolvedImage {
            reference: reference.to_string(),
            manifest: rbuild_oci::Digest::sha256_of(reference.as_bytes()),
            config,
        })
    }
}

#[test]
fn corpus_checks() {
    let mut lines = String::new();
    let mut per_rule: std::collections::BTreeMap<&str, usize> = Default::default();
    for (name, text) in corpus() {
        let mut o = rbuild_frontend::PlanOptions::new(name.clone(), text.clone());
        o.platform = rbuild_oci::Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            os_version: None,
        };
        let checked = rbuild_frontend::plan_checked(&o, &AnyImage)
            .unwrap_or_else(|e| panic!("{}", e.render()));
        for w in &checked.warnings {
            let rule = w.rule.unwrap_or("(parser)");
            *per_rule.entry(rule).or_default() += 1;
            lines.push_str(&format!(
                "{}:{}:{} {rule}: {}\n",
                w.file, w.line, w.column, w.message
            ));
        }
    }
    println!("{per_rule:?}");
    let path = corpus_dir().join("lint-expected.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &lines).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == lines,
        "corpus warnings differ from {}:\n--- actual\n{lines}",
        path.display()
    );
}
