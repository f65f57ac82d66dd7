//! Every Dockerfile of the shared corpus parses, with no flag left inside an argument and
//! monotonic spans.

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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/dockerfiles");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("skipping: corpus not found at {}", dir.display());
        return;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".md") || !p.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
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
