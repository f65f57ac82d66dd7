//! Build history (issue 19 item 3): every build leaves a record and its full plain log;
//! `rbuild history ls|logs|inspect` show them (also `--format json`), the image form
//! `rbuild history IMAGE` still works, records are bounded and go with `rbuild prune`. The
//! front's no-op answers are not recorded (yet): the builds here that rebuild run the engine.

mod common;
use common::*;

/// A stable view of `history ls`: ids, dates and durations replaced.
fn redact_ls(s: &str) -> String {
    let re = regex::Regex::new(
        r"(?m)^[0-9a-f]{16}( +)(\S+)( +)(\S+)( +)\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC( +)\d+\.\ds( +)",
    )
    .unwrap();
    re.replace_all(s, "<id>$1$2$3$4$5<started>$6<dur>   ")
        .to_string()
}

fn ls_json(env: &Env) -> Vec<serde_json::Value> {
    let out = env.rbuild(&["history", "ls", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn builds_are_recorded_listed_logged_and_inspected() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    // Many lines of output: the log keeps every one (the failure's tail shows only the last).
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo first-step\nRUN for i in $(seq 1 300); do echo line-$i; done\n",
        )],
    );
    let c = ctx.to_str().unwrap();
    let (id, _) = env.build_ok(&["-t", "app:1", c]);
    // The same again, the front's no-op answer off: every step cached.
    let out = env
        .cmd()
        .env("RBUILD_NOOP_CHECK", "0")
        .args(["build", "--progress=plain", "-t", "app:1", c])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A failing build.
    let bad = env.context(
        "bad",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo leftover > /left && echo going-down && exit 7\n",
        )],
    );
    let out = env.rbuild(&[
        "build",
        "--progress=plain",
        "-t",
        "bad:1",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // A syntax error: recorded as invalid, nothing ran.
    let syntax = env.context("syntax", &[("Dockerfile", "FROM busybox\nRUN\n")]);
    let out = env.rbuild(&["build", "--progress=plain", syntax.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));

    let ls = env.rbuild(&["history", "ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    insta::assert_snapshot!("history_ls", redact_ls(&stdout(&ls)));

    let all = ls_json(&env);
    assert_eq!(all.len(), 4);
    let (syntax_rec, failed, cached, built) = (&all[0], &all[1], &all[2], &all[3]);
    assert_eq!(built["status"], "succeeded");
    assert_eq!(built["image"].as_str().unwrap(), id.trim());
    assert_eq!(built["request"]["tags"][0], "app:1");
    assert_eq!(cached["status"], "succeeded");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 1);
    assert!(
        failed["error"].as_str().unwrap().contains("exit code: 7"),
        "{failed}"
    );
    assert_eq!(syntax_rec["status"], "invalid");
    assert!(syntax_rec["steps"].as_array().unwrap().is_empty());
    // Inputs: the Dockerfile's digest and the base image's manifest.
    let inputs = built["inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "Dockerfile"
                && i["digest"].as_str().unwrap().starts_with("sha256:"))
    );
    assert!(inputs
        .iter()
        .any(|i| i["name"].as_str().unwrap().contains("busybox")));
    // Per step: the first build ran both RUNs, the second took them from the cache.
    let outcome = |rec: &serde_json::Value, name: &str| -> String {
        rec["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no step {name} in {rec}"))["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(outcome(built, "seq 1 300"), "run");
    assert_eq!(outcome(cached, "seq 1 300"), "cached");
    assert_eq!(outcome(failed, "going-down"), "failed");

    // The full log, never truncated: all 300 lines, then the error as printed.
    let bid = built["id"].as_str().unwrap();
    let logs = env.rbuild(&["history", "logs", bid]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    let text = stdout(&logs);
    for i in 1..=300 {
        assert!(
            text.contains(&format!(" line-{i}\n")),
            "line-{i} missing:\n{text}"
        );
    }
    assert!(text.contains("first-step"));
    let fid = failed["id"].as_str().unwrap();
    let text = stdout(&env.rbuild(&["history", "logs", &fid[..12]]));
    assert!(text.contains("going-down"), "{text}");
    assert!(text.contains("exit code: 7"), "{text}");
    assert!(text.contains("Dockerfile:2"), "{text}");

    // inspect: request, inputs, steps and their outcome, the error.
    let out = env.rbuild(&["history", "inspect", fid]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Status:    failed"), "{text}");
    assert!(text.contains("Ref:       bad:1"), "{text}");
    assert!(text.contains("failed"), "{text}");
    assert!(
        text.contains("Error:\n  error: RUN echo leftover"),
        "{text}"
    );
    let out = env.rbuild(&["history", "inspect", "--format", "json", "last"]);
    let last: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(last["id"], syntax_rec["id"]);

    // The image form still works; the build history's words are not images.
    let out = env.rbuild(&["history", "app:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("seq 1 300"), "{}", stdout(&out));

    // Bad ids: one clear line, exit 1.
    let out = env.rbuild(&["history", "logs", "ffffffff"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!("history_unknown_id", stderr(&out));
    let out = env.rbuild(&["history", "inspect"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs one build id"),
        "{}",
        stderr(&out)
    );

    // prune takes the history with it.
    let out = env.rbuild(&["prune", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("4 build history records"),
        "{}",
        stdout(&out)
    );
    assert!(ls_json(&env).is_empty());
}

#[test]
fn history_is_bounded() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo hi > /hi\n")],
    );
    let c = ctx.to_str().unwrap();
    // At most N records: the oldest go, whole.
    for i in 0..3 {
        let out = env
            .cmd()
            .env("RBUILD_HISTORY_MAX_BUILDS", "2")
            .env("RBUILD_NOOP_CHECK", "0")
            .args([
                "build",
                "--progress=plain",
                "--build-arg",
                &format!("X={i}"),
                c,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let all = ls_json(&env);
    assert_eq!(all.len(), 2, "{all:?}");
    let args: Vec<String> = all
        .iter()
        .map(|r| r["request"]["args"].to_string())
        .collect();
    assert!(
        args[0].contains("X=2") && args[1].contains("X=1"),
        "{args:?}"
    );
    let files = std::fs::read_dir(env.root.join("history")).unwrap().count();
    assert_eq!(files, 4, "two records and their two logs");
}

#[test]
fn empty_history_and_usage() {
    let env = Env::empty();
    let out = env.rbuild(&["history", "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!("history_ls_empty", stdout(&out));
    let out = env.rbuild(&["history", "logs", "0123"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no build 0123 in the history"),
        "{}",
        stderr(&out)
    );
    let out = env.rbuild(&["history", "ls", "extra"]);
    assert_eq!(out.status.code(), Some(2));
}
