//! Golden cases under `testdata/dockerfile/<case>/`: `Dockerfile` plus
//! - `parse.json`: the expected `to_json` of the file, or
//! - `error.txt`: the expected rendered error (from parsing, or from planning a file that parses);
//! - `config.json` (meaning cases): the expected final image config from `plan` with the fake
//!   resolver in `common/`, and `plan.txt`, the graph and history dump;
//! - `options.json` (optional): `build_args`, `target`, `labels`, `no_cache`, `no_cache_filter`,
//!   `dockerignore`, `build_contexts` (`{"name": "local" | "image:REF"}`).
//!
//! - `lint.txt` (build-check cases): the rendered warnings of `plan_checked` (and the planning
//!   error, if any), with the same `options.json`;
//!
//! `UPDATE_GOLDEN=1 cargo test -p rbuild-frontend --test golden` (re)writes expectations; a new
//! meaning case is made by creating an empty `config.json` next to its Dockerfile.

mod common;

use rbuild_frontend::{plan, plan_checked, to_json, NamedContext, PlanOptions};
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/dockerfile")
}

fn options(dir: &Path, text: &str) -> PlanOptions {
    let mut o = PlanOptions::new("Dockerfile", text);
    o.platform = rbuild_oci::Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
        os_version: None,
    };
    let p = dir.join("options.json");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let v: serde_json::Value = serde_json::from_str(&s).expect("options.json is JSON");
        let map = |k: &str| -> std::collections::BTreeMap<String, String> {
            v.get(k)
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.iter()
                        .map(|(a, b)| (a.clone(), b.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        o.build_args = map("build_args");
        o.labels = map("labels");
        o.target = v.get("target").and_then(|t| t.as_str()).map(str::to_string);
        if let Some(p) = v.get("platform").and_then(|t| t.as_str()) {
            o.platform = rbuild_oci::Platform::parse_strict(p).expect("options.json platform");
        }
        o.no_cache = v.get("no_cache").and_then(|t| t.as_bool()).unwrap_or(false);
        o.no_cache_filter = v
            .get("no_cache_filter")
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        o.dockerignore = v
            .get("dockerignore")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        for (k, c) in map("build_contexts") {
            let nc = match c.strip_prefix("image:") {
                Some(r) => NamedContext::Image(r.to_string()),
                None => NamedContext::Local,
            };
            o.build_contexts.insert(k, nc);
        }
    }
    o
}

fn check(path: &Path, actual: &str, update: bool, failures: &mut Vec<String>) {
    if update {
        std::fs::write(path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(e) => failures.push(format!("{}: {e}", path.display())),
    }
}

/// What `rbuild build --check` would print for the case: every warning, then the error.
fn lint_output(dir: &Path, text: &str) -> String {
    let resolver = common::FakeResolver::new();
    let checked = match plan_checked(&options(dir, text), &resolver) {
        Ok(c) => c,
        Err(e) => return format!("error before checks:\n{}", e.render()),
    };
    let mut out = String::new();
    for w in &checked.warnings {
        out.push_str(&w.render());
    }
    let rules = checked.error_rules();
    if !rules.is_empty() {
        out.push_str(&format!(
            "lint violation found for rules: {}\n",
            rules.join(", ")
        ));
    }
    if let Err(e) = &checked.definition {
        out.push_str(&format!("plan error:\n{}", e.render()));
    }
    if out.is_empty() {
        out.push_str("no warnings\n");
    }
    out
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("testdata/dockerfile exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    for dir in &dirs {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let lint_path = dir.join("lint.txt");
        if lint_path.exists() {
            check(&lint_path, &lint_output(dir, &text), update, &mut failures);
            let json_path = dir.join("parse.json");
            if json_path.exists() {
                if let Ok(df) = rbuild_frontend::parse("Dockerfile", &text) {
                    let json = serde_json::to_string_pretty(&to_json(&df)).unwrap() + "\n";
                    check(&json_path, &json, update, &mut failures);
                }
            }
            continue;
        }
        let err_path = dir.join("error.txt");
        let meaning = dir.join("config.json").exists();
        let parsed = rbuild_frontend::parse("Dockerfile", &text);
        let parsed = match parsed {
            Err(e) => {
                if !err_path.exists() && !update {
                    failures.push(format!(
                        "{}: unexpected error:\n{}",
                        dir.display(),
                        e.render()
                    ));
                } else {
                    check(&err_path, &e.render(), update, &mut failures);
                }
                continue;
            }
            Ok(df) => df,
        };
        let json = serde_json::to_string_pretty(&to_json(&parsed)).unwrap() + "\n";
        check(&dir.join("parse.json"), &json, update, &mut failures);
        if !meaning && !err_path.exists() {
            continue;
        }
        let resolver = common::FakeResolver::new();
        match plan(&options(dir, &text), &resolver) {
            Ok(def) => {
                if err_path.exists() && !update {
                    failures.push(format!(
                        "{}: expected an error, plan succeeded",
                        dir.display()
                    ));
                    continue;
                }
                let cfg = serde_json::to_string_pretty(&def.target.config).unwrap() + "\n";
                check(&dir.join("config.json"), &cfg, update, &mut failures);
                check(
                    &dir.join("plan.txt"),
                    &common::dump_plan(&def),
                    update,
                    &mut failures,
                );
            }
            Err(e) => check(&err_path, &e.render(), update, &mut failures),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
    println!("{} golden cases", dirs.len());
}
