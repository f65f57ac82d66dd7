//! Every environment read of the engine goes through `rbuild_inputs` (so a no-op record knows
//! it): no source file of the workspace's crates reads the environment itself. Test code (files
//! named `tests.rs`, anything after `#[cfg(test)]`, `tests/`, `examples/`) may.

use std::path::{Path, PathBuf};

/// Ways to read the environment without recording it.
const RAW: &[&str] = &[
    "env::var(",
    "env::var_os(",
    "env::vars(",
    "env::vars_os(",
    "EnvFilter::from_env",
    "EnvFilter::try_from_env",
    "EnvFilter::from_default_env",
    "EnvFilter::try_from_default_env",
    "from_default_env()",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_engine_reads_the_environment_only_through_rbuild_inputs() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut srcs = vec![
        ws.join("solver/src"),
        ws.join("snapshotter/src"),
        ws.join("frontend/src"),
    ];
    for e in std::fs::read_dir(ws.join("crates")).unwrap().flatten() {
        if e.file_name() != "inputs" {
            srcs.push(e.path().join("src"));
        }
    }
    let mut files = Vec::new();
    for s in &srcs {
        rust_files(s, &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut bad = Vec::new();
    for f in &files {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            if line.trim_start().starts_with("//") {
                continue;
            }
            if RAW.iter().any(|r| line.contains(r)) {
                bad.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "read the environment through rbuild_inputs::var/var_os (a no-op record must know every \
         variable the engine read):\n{}",
        bad.join("\n")
    );
}
