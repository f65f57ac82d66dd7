//! Snapshot tests of what users read: --help, usage errors. Timings, ids and temp paths masked.

mod common;
use common::*;

/// Help text has no ids or timings; the hook is here for snapshots that do.
fn masked(s: &str) -> String {
    s.replace(env!("CARGO_PKG_VERSION"), "[VERSION]")
}

#[test]
fn help_snapshot() {
    let env = Env::empty();
    let out = env.rbuild(&["--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("help", masked(&stdout(&out)));
}

#[test]
fn build_help_snapshot() {
    let env = Env::empty();
    let out = env.rbuild(&["build", "--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!("build_help", masked(&stdout(&out)));
}

#[test]
fn bad_flag_is_a_usage_error() {
    let env = Env::empty();
    let out = env.rbuild(&["build", "--frobnicate", "."]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("bad_flag", stderr(&out));
}

#[test]
fn bad_output_names_the_flag() {
    let env = Env::empty();
    let ctx = env.context("ctx", &[("Dockerfile", "FROM scratch\n")]);
    let out = env.rbuild(&["build", "-o", "type=bogus,dest=x", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: --output type=bogus,dest=x: unknown type"),
        "{err}"
    );
}

#[test]
fn bare_form_is_build() {
    let env = Env::empty();
    let out = env.rbuild(&["-t", "x", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
}
