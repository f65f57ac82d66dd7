//! Build checks at the command line: `rbuild build --check` (evaluates, runs nothing, exit 1 on
//! an error-level violation or an invalid Dockerfile) and the warnings every build prints —
//! after the build in plain/tty mode, as `warning` events in json mode.

mod common;
use common::*;

const WARNED: &str = "FROM busybox as base\nMAINTAINER someone\nENV A 1\nCMD echo $A\n";

fn masked(s: &str, env: &Env) -> String {
    let s = s.replace(env.tmp.path().to_str().unwrap(), "[TMP]");
    let s = regex::Regex::new(r"DONE \d+\.\ds")
        .unwrap()
        .replace_all(&s, "DONE [T]s")
        .to_string();
    regex::Regex::new(r"sha256:[0-9a-f]{64}")
        .unwrap()
        .replace_all(&s, "sha256:[DIGEST]")
        .to_string()
}

fn check(env: &Env, files: &[(&str, &str)], extra: &[&str]) -> std::process::Output {
    let ctx = env.context("ctx", files);
    let mut args = vec!["build", "--check"];
    args.extend_from_slice(extra);
    let c = ctx.to_str().unwrap().to_string();
    args.push(&c);
    env.rbuild(&args)
}

#[test]
fn check_prints_every_warning_and_runs_nothing() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let blobs = env.blob_count();
    let out = check(&env, &[("Dockerfile", WARNED)], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout carries only data");
    assert_eq!(env.blob_count(), blobs, "--check writes nothing");
    insta::assert_snapshot!("check_warnings", masked(&stderr(&out), &env));
}

#[test]
fn check_clean_file() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let out = check(
        &env,
        &[("Dockerfile", "FROM busybox\nCMD [\"true\"]\n")],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "Check complete, no warnings found.\n");
}

#[test]
fn check_error_directive_exits_1() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let df = format!("# check=error=true;skip=LegacyKeyValueFormat\n{WARNED}");
    let out = check(&env, &[("Dockerfile", &df)], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    insta::assert_snapshot!("check_error", masked(&stderr(&out), &env));
    // The build arg replaces the directive: everything skipped, nothing is an error.
    let out = check(
        &env,
        &[("Dockerfile", &df)],
        &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "Check complete, no warnings found.\n");
}

#[test]
fn check_on_a_syntax_error_prints_the_syntax_error() {
    // No root needed: syntax errors are reported before the store is opened.
    let env = Env::empty();
    let out = check(
        &env,
        &[("Dockerfile", "FROM busybox as b\nCOPPY . /src\nCMD echo\n")],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        !err.contains("FromAsCasing"),
        "a lint instead of the syntax error: {err}"
    );
    insta::assert_snapshot!("check_syntax_error", masked(&err, &env));
}

#[test]
fn check_bad_directive_is_an_error() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let out = check(
        &env,
        &[("Dockerfile", "# check=error=sometimes\nFROM busybox\n")],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("Dockerfile:1:1: check directive: failed to parse check option"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_json_events() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let out = check(&env, &[("Dockerfile", WARNED)], &["--progress=json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rules: Vec<String> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object a line"))
        .map(|v| {
            assert_eq!(v["type"], "warning");
            assert!(v["url"]
                .as_str()
                .unwrap()
                .starts_with("https://docs.docker.com/"));
            assert_eq!(v["file"], "Dockerfile");
            format!(
                "{}@{}:{}",
                v["rule"].as_str().unwrap(),
                v["line"],
                v["column"]
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            "FromAsCasing@1:14",
            "MaintainerDeprecated@2:1",
            "LegacyKeyValueFormat@3:1",
            "JSONArgsRecommended@4:1"
        ]
    );
}

#[test]
fn every_build_prints_its_warnings() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context("ctx", &[("Dockerfile", WARNED)]);
    let c = ctx.to_str().unwrap();
    // plain: BuildKit-like lines after the build.
    let out = env.rbuild(&["build", "--progress=plain", c]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let tail = &err[err.find("\n 4 warnings found").expect("warning summary")..];
    insta::assert_snapshot!("build_warnings_plain", tail);
    // A rebuild prints them again (the front does not answer a build that has warnings).
    let out = env.rbuild(&["build", "--progress=plain", c]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(" 4 warnings found"),
        "{}",
        stderr(&out)
    );
    // json: warning events among the build's.
    let out = env.rbuild(&["build", "--progress=json", c]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "warning")
        .count();
    assert_eq!(warnings, 4);
    // tty mode prints the same summary after its last frame.
    let out = env.rbuild(&["build", "--progress=tty", c]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(" - MaintainerDeprecated: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn error_level_check_refuses_the_build_before_any_step() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let df = "# check=error=true\nFROM busybox\nRUN touch /ran\nCMD echo hi\n";
    let ctx = env.context("ctx", &[("Dockerfile", df)]);
    let blobs = env.blob_count();
    let out = env.rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains("#1 "), "a step ran: {err}");
    assert!(
        err.ends_with("error: lint violation found for rules: JSONArgsRecommended\n"),
        "{err}"
    );
    assert_eq!(env.blob_count(), blobs);
}

#[test]
fn check_shows_the_json_fallback_warning() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let out = check(
        &env,
        &[(
            "Dockerfile",
            "FROM busybox\nENTRYPOINT [\"/bin/echo\", \"hi\"\n",
        )],
        &[
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=JSONArgsRecommended",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "Dockerfile:2:12: warning: unterminated JSON array: run as shell form, as BuildKit does; \
         close the array with `]` for exec form\n 2 | ENTRYPOINT [\"/bin/echo\", \"hi\"\n   |            ^\n\n\
         Check complete, 1 warning has been found!\n"
    );
}
