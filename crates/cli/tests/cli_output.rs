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
    insta::assert_snapshot!(
        "help",
        masked(&stdout(&out)).replace(env.tmp.path().to_str().unwrap(), "[TMP]")
    );
}

#[test]
fn build_help_snapshot() {
    let env = Env::empty();
    let out = env.rbuild(&["build", "--help"]);
    assert!(out.status.success());
    insta::assert_snapshot!(
        "build_help",
        masked(&stdout(&out)).replace(env.tmp.path().to_str().unwrap(), "[TMP]")
    );
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
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
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

/// Mask what changes from run to run: durations, log timestamps, digests, ages, temp paths.
fn masked_run(s: &str, tmp: &std::path::Path) -> String {
    let s = s.replace(tmp.to_str().unwrap(), "[TMP]");
    let rules: &[(&str, &str)] = &[
        (r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]"),
        (r"\b[0-9a-f]{12}\b", "[ID]"),
        (r"(#\d+) \d+\.\d{3} ", "$1 [T] "),
        (r"DONE \d+\.\ds", "DONE [T]s"),
        (r"\d+ (second|minute|hour|day|month|year)s? ago", "[AGO]"),
        (r"[ ]{2,}", "  "),
    ];
    let mut out = s;
    for (re, rep) in rules {
        out = regex::Regex::new(re)
            .unwrap()
            .replace_all(&out, *rep)
            .to_string();
    }
    out
}

#[test]
fn plain_progress_images_and_history_snapshots() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo hello && echo world >&2\nENV A=1\nRUN echo \"A is $A\"\n",
        )],
    );
    let mut cmd = env.cmd();
    cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = cmd
        .args(["build", "--progress=plain", "-t", "snap:1"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!("plain_progress", masked_run(&stderr(&out), env.tmp.path()));
    // A rebuild is all cache hits.
    let mut cmd = env.cmd();
    cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = cmd
        .args(["build", "--progress=plain", "-t", "snap:1"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(
        "plain_progress_cached",
        masked_run(&stderr(&out), env.tmp.path())
    );
    let out = env.rbuild(&["images"]);
    assert!(out.status.success());
    insta::assert_snapshot!("images", masked_run(&stdout(&out), env.tmp.path()));
    let out = env.rbuild(&["history", "snap:1"]);
    assert!(out.status.success());
    insta::assert_snapshot!("history", masked_run(&stdout(&out), env.tmp.path()));
}

#[test]
fn bad_flag_values_snapshot() {
    let env = Env::empty();
    let ctx = env.context("ctx", &[("Dockerfile", "FROM scratch\n")]);
    let c = ctx.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["build", "--platform", "linux/amd46", c],
        &["build", "-o", "type=bogus,dest=x", c],
        &["build", "-o", "type=oci", c],
        &["build", "-o", "type=oci,dest=x,compression=lz4", c],
        &["build", "--build-context", "nodest", c],
        &["build", "--build-context", "x=ftp://example.com/r", c],
        &["build", "--allow", "root.everything", c],
        &["build", "--label", "novalue", c],
        &["build", "--memory", "lots", c],
        &["build", "-f", "-", "-"],
        &["build", "--progress", "fancy", c],
        &["images", "--format", "xml"],
        &["completion", "tcsh"],
    ];
    let mut report = String::new();
    for args in cases {
        let out = env.rbuild(args);
        let shown: Vec<&str> = args
            .iter()
            .map(|a| if *a == c { "CTX" } else { a })
            .collect();
        report.push_str(&format!(
            "$ rbuild {}\nexit {:?}\n{}\n",
            shown.join(" "),
            out.status.code(),
            masked_run(&stderr(&out), env.tmp.path())
        ));
        assert!(out.stdout.is_empty(), "stdout carries only data: {args:?}");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    insta::assert_snapshot!("bad_flag_values", report);
}

#[test]
fn json_progress_is_one_object_per_line() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo out && echo err >&2\n")],
    );
    let mut types = Vec::new();
    for _ in 0..2 {
        let out = env.rbuild(&["build", "--progress=json", ctx.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id = stdout(&out);
        for line in stderr(&out).lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            assert!(v["time"].as_f64().is_some(), "{line}");
            let t = v["type"].as_str().unwrap().to_string();
            if t == "result" {
                assert_eq!(v["id"].as_str().unwrap(), id.trim());
                assert!(v["size"].as_u64().unwrap() > 0);
            } else if t == "warning" {
                assert!(v["rule"].is_string() || v["rule"].is_null(), "{line}");
                assert!(v["line"].as_u64().is_some(), "{line}");
            } else {
                assert!(v["vertex"]["number"].as_u64().is_some(), "{line}");
                assert!(v["vertex"]["name"].as_str().is_some(), "{line}");
            }
            if t == "log" {
                assert!(matches!(v["stream"].as_str(), Some("stdout" | "stderr")));
            }
            types.push(t);
        }
        assert_eq!(types.last().map(String::as_str), Some("result"));
    }
    for want in ["started", "cache_miss", "log", "done", "cached", "result"] {
        assert!(
            types.iter().any(|t| t == want),
            "no {want} event: {types:?}"
        );
    }
}

#[test]
fn tty_mode_in_a_pseudo_terminal_shows_the_summary() {
    if !require_root(&["script"]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo in-a-tty\n")],
    );
    let ansi = regex::Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").unwrap();
    for (no_color, progress) in [(false, "--progress=auto"), (true, "--progress=tty")] {
        let cmdline = format!(
            "{} build {progress} -t tty:1 {}",
            rbuild_bin(),
            ctx.display()
        );
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qfec", &cmdline, "/dev/null"])
            .env("RBUILD_ROOT", &env.root)
            .env("TERM", "xterm");
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let out = cmd.output().unwrap();
        let raw = stdout(&out);
        let text = ansi.replace_all(&raw, "").to_string();
        assert!(out.status.success(), "{text}");
        assert!(text.contains("Finished in "), "no summary: {text:?}");
        assert!(text.contains(" run) image sha256:"), "{text:?}");
        assert!(text.contains("[2/2] RUN echo in-a-tty"), "{text:?}");
        if no_color {
            assert!(!raw.contains("\x1b[32m"), "NO_COLOR ignored: {raw:?}");
        } else {
            assert!(raw.contains("\x1b[1mFinished"), "{raw:?}");
        }
    }
}

/// Exports report bytes as a step of their own, after the build's steps: plain in BuildKit's
/// shape (`#N exporting to oci image format`, `#N writing layer sha256:… 2.89MB / 2.89MB 0.1s
/// done`, at most 10 lines a second per blob), json `progress` events with `done`, and the tty
/// view's step line.
#[test]
fn export_progress_plain_json_and_tty() {
    if !require_root(&["script"]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN seq 1 400000 > /numbers && head -c 2000000 /dev/zero > /zeros\n",
        )],
    );
    let tar = env.path("out.tar");
    let out = env
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress=plain", "-o"])
        .arg(format!("type=oci,dest={}", tar.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let name = "exporting to oci image format";
    let n = err
        .lines()
        .find_map(|l| l.strip_suffix(&format!(" {name}")))
        .unwrap_or_else(|| panic!("no export step:\n{err}"))
        .to_string();
    assert_eq!(n, "#3", "numbered after the build's two steps:\n{err}");
    let step: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{n} ")))
        .collect();
    // Every blob ends whole and done; no blob is reported more than 10 times a second.
    let line_re =
        regex::Regex::new(r"^#3 (\S+ \S+ sha256:[0-9a-f]{64}) (\S+) / (\S+) (\d+\.\d)s( done)?$")
            .unwrap();
    let mut per_id: std::collections::BTreeMap<String, (usize, f64, bool)> = Default::default();
    for l in &step[1..step.len() - 1] {
        let c = line_re
            .captures(l)
            .unwrap_or_else(|| panic!("not BuildKit's status shape: {l:?}\n{err}"));
        let e = per_id.entry(c[1].to_string()).or_default();
        e.0 += 1;
        e.1 = c[4].parse().unwrap();
        if c.get(5).is_some() {
            assert_eq!(c[2], c[3], "done when whole: {l}");
            e.2 = true;
        }
    }
    for (id, (lines, secs, done)) in &per_id {
        assert!(*done, "{id} never done:\n{err}");
        assert!(
            (*lines as f64) <= 2.0 + 10.0 * (secs + 0.1),
            "{id}: {lines} lines in {secs}s"
        );
    }
    let mut shown: Vec<String> = step
        .iter()
        .filter(|l| l.ends_with(" done") || !l.contains("sha256:"))
        .map(|l| {
            let l = regex::Regex::new(r"sha256:[0-9a-f]{64}")
                .unwrap()
                .replace_all(l, "sha256:[DIGEST]");
            let l = regex::Regex::new(r"\d+(\.\d+)?(B|kB|MB) / \d+(\.\d+)?(B|kB|MB)")
                .unwrap()
                .replace_all(&l, "[SIZE] / [SIZE]");
            regex::Regex::new(r"\d+\.\ds")
                .unwrap()
                .replace_all(&l, "[T]s")
                .to_string()
        })
        .collect();
    // Blobs are written in digest order; sort the middle for a stable snapshot.
    let last = shown.len() - 1;
    shown[1..last].sort();
    insta::assert_snapshot!("export_progress_plain", shown.join("\n"));

    // json: the same events, numbered after the build's vertices, with `done`.
    let out = env
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress=json", "-o"])
        .arg(format!("type=oci,dest={}", env.path("out2.tar").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let build_max = events
        .iter()
        .filter(|v| v["vertex"]["name"] != name && v["type"] != "result")
        .map(|v| v["vertex"]["number"].as_u64().unwrap())
        .max()
        .unwrap();
    let progress: Vec<&serde_json::Value> =
        events.iter().filter(|v| v["type"] == "progress").collect();
    assert!(!progress.is_empty(), "{err}");
    for p in &progress {
        assert_eq!(p["vertex"]["name"], name, "{p}");
        assert_eq!(p["vertex"]["number"].as_u64(), Some(build_max + 1), "{p}");
        assert!(p["id"].as_str().unwrap().contains(" sha256:"), "{p}");
        assert!(p["current"].as_u64().is_some() && p["total"].as_u64().is_some());
        assert!(p["done"].is_boolean(), "{p}");
    }
    let done_layers = progress
        .iter()
        .filter(|p| p["done"] == true && p["id"].as_str().unwrap().starts_with("writing layer"))
        .count();
    assert_eq!(done_layers, 2, "busybox's layer and the RUN's:\n{err}");
    let types: Vec<&str> = events
        .iter()
        .filter(|v| v["vertex"]["name"] == name)
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"started"), "{types:?}");
    assert_eq!(types.last(), Some(&"done"), "{types:?}");

    // tty: the export is a step line of the live view, not counted as a build step.
    let cmdline = format!(
        "{} build --progress=tty -o type=docker,dest={} {}",
        rbuild_bin(),
        env.path("out.docker.tar").display(),
        ctx.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmdline, "/dev/null"])
        .env("RBUILD_ROOT", &env.root)
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = regex::Regex::new(r"\x1b\[[0-9;]*[A-Za-z]")
        .unwrap()
        .replace_all(&stdout(&out), "")
        .to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("DONE exporting to docker image format"),
        "{text:?}"
    );
    assert!(text.contains("(2 cached, 0 run)"), "{text:?}");
}
