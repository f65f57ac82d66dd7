//! Issue 4: cache correctness. One base Dockerfile and context; each mutation changes exactly one
//! input, and the test asserts the exact set of steps that re-run (nothing more, nothing less) and
//! the explanation printed for each — parsed from `--progress=plain` (`#N CACHED`,
//! `#N CACHE MISS: reason`). Also `--no-cache`, `--no-cache-filter`, deduplication of identical
//! vertices across stages, and `--explain`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DOCKERFILE: &str = r#"FROM busybox:latest AS tools
RUN echo tool > /tool

FROM busybox:latest
ARG VERSION=1
ENV MODE=prod
WORKDIR /app
COPY app/ /app/
RUN echo "$VERSION $MODE" > /app/version
RUN --mount=type=secret,id=tok wc -c /run/secrets/tok > /tmp/toklen
USER nobody
RUN <<EOS
id > /tmp/id
ls /app > /tmp/ls
EOS
COPY --from=tools /tool /tool
"#;

/// Short names of the steps that produce cache records, in build order.
const TOOLS_RUN: &str = "RUN echo tool > /tool";
const WORKDIR: &str = "WORKDIR /app";
const COPY_APP: &str = "COPY app/ /app/";
const RUN_VERSION: &str = r#"RUN echo "$VERSION $MODE" > /app/version"#;
const RUN_SECRET: &str = "RUN --mount=type=secret,id=tok wc -c /run/secrets/tok > /tmp/toklen";
const RUN_HEREDOC: &str = "RUN <<EOS";
const COPY_TOOLS: &str = "COPY --from=tools /tool /tool";

/// What happened to a step in one build: None = cached, Some(reason) = re-run with that reason.
type Outcome = BTreeMap<String, Option<String>>;

/// Parse `--progress=plain` output into step name (the text after `] `) → outcome. Only steps
/// that reported CACHED or CACHE MISS appear (FROM and the context load are not steps with records).
fn parse_plain(stderr: &str) -> Outcome {
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let mut out = Outcome::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((num, text)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = num.parse::<u32>() else { continue };
        if let Some(name) = names.get(&n) {
            let name = name.clone();
            if text == "CACHED" {
                out.entry(name).or_insert(None);
            } else if let Some(reason) = text.strip_prefix("CACHE MISS: ") {
                out.insert(name, Some(reason.to_string()));
            }
        } else {
            let short = match text.split_once("] ") {
                Some((_, s)) if text.starts_with('[') => s.to_string(),
                _ => text.to_string(),
            };
            names.insert(n, short);
        }
    }
    out.retain(|k, _| !k.starts_with("FROM ") && !k.starts_with("load build context"));
    out
}

struct Fixture {
    env: Env,
    ctx: PathBuf,
    secret: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let env = Env::with_busybox();
        let ctx = env.path("ctx");
        let secret = env.path("secret");
        let f = Fixture { env, ctx, secret };
        f.reset();
        f
    }

    /// Write the base context (removing everything else in it).
    fn reset(&self) {
        let _ = std::fs::remove_dir_all(&self.ctx);
        self.env.context(
            "ctx",
            &[
                ("Dockerfile", DOCKERFILE),
                ("app/main.go", "package main\n"),
                ("app/util.go", "package main // util\n"),
                ("README.md", "not copied\n"),
                (".dockerignore", "README.md\n"),
            ],
        );
        std::fs::write(&self.secret, "s3cret\n").unwrap();
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.ctx.join(rel)
    }

    fn build(&self, extra: &[&str]) -> (Outcome, String) {
        let secret = format!("id=tok,src={}", self.secret.display());
        let mut args = vec!["-t", "cachetest:latest", "--secret", &secret];
        args.extend_from_slice(extra);
        let ctx = self.ctx.to_str().unwrap().to_string();
        args.push(&ctx);
        let (_, err) = self.env.build_ok(&args);
        (parse_plain(&err), err)
    }
}

/// Assert `got` is exactly: the steps in `missed` re-ran with those reasons, every other step of
/// `all` was cached.
fn check(what: &str, got: &Outcome, all: &[&str], missed: &[(&str, &str)], log: &str) {
    let mut want = Outcome::new();
    for s in all {
        want.insert(s.to_string(), None);
    }
    for (s, r) in missed {
        want.insert(s.to_string(), Some(r.to_string()));
    }
    if got != &want {
        let show = |o: Option<&Option<String>>| match o {
            None => "absent".to_string(),
            Some(None) => "CACHED".to_string(),
            Some(Some(r)) => format!("MISS: {r}"),
        };
        let mut diffs = Vec::new();
        for k in want
            .keys()
            .chain(got.keys().filter(|k| !want.contains_key(*k)))
        {
            if want.get(k) != got.get(k) {
                diffs.push(format!(
                    "  {k}\n    want {}\n    got  {}",
                    show(want.get(k)),
                    show(got.get(k))
                ));
            }
        }
        panic!(
            "mutation {what:?}: steps re-run / cached differ:\n{}\n--- build output:\n{log}",
            diffs.join("\n")
        );
    }
}

const ALL: &[&str] = &[
    TOOLS_RUN,
    WORKDIR,
    COPY_APP,
    RUN_VERSION,
    RUN_SECRET,
    RUN_HEREDOC,
    COPY_TOOLS,
];

/// The parent-step explanation for a step whose rootfs input is `parent`.
fn parent(n: u32, parent: &str) -> String {
    format!("parent step {n} changed: [stage-1 {n}/7] {parent}")
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn mutation_table() {
    if !require_root(&[]) {
        return;
    }
    // The first build: everything misses with "no earlier build"; then a no-op rebuild is cached.
    let first: Vec<(&str, &str)> = ALL
        .iter()
        .map(|s| (*s, "no earlier build of this step"))
        .collect();
    {
        let f = Fixture::new();
        f.build(&[]);
        let (got, log) = f.build(&[]);
        check("no-op", &got, ALL, &[], &log);
    }

    let after_copy = |first_reason: &str| -> Vec<(&'static str, String)> {
        vec![
            (COPY_APP, first_reason.to_string()),
            (RUN_VERSION, parent(3, COPY_APP)),
            (RUN_SECRET, parent(4, RUN_VERSION)),
            (RUN_HEREDOC, parent(5, RUN_SECRET)),
            (COPY_TOOLS, parent(6, RUN_HEREDOC)),
        ]
    };
    // A variable reaches every later RUN's environment: each says so (its own input changed, not
    // just its parent); the COPY after them has no environment.
    let from_version = |reason: &str| -> Vec<(&'static str, String)> {
        vec![
            (RUN_VERSION, reason.to_string()),
            (RUN_SECRET, reason.to_string()),
            (RUN_HEREDOC, reason.to_string()),
            (COPY_TOOLS, parent(6, RUN_HEREDOC)),
        ]
    };
    let from_heredoc = |first_reason: &str| -> Vec<(&'static str, String)> {
        vec![
            (RUN_HEREDOC, first_reason.to_string()),
            (COPY_TOOLS, parent(6, RUN_HEREDOC)),
        ]
    };

    type Mutate<'a> = Box<dyn Fn(&Fixture) + 'a>;
    let none: Vec<(&str, String)> = vec![];
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, Mutate<'_>, Vec<&str>, Vec<(&str, String)>)> = vec![
        (
            "file content",
            Box::new(|f: &Fixture| std::fs::write(f.p("app/main.go"), "package main2\n").unwrap()),
            vec![],
            after_copy("app/main.go changed (content)"),
        ),
        (
            "file mode",
            Box::new(|f: &Fixture| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(f.p("app/main.go"), std::fs::Permissions::from_mode(0o755))
                    .unwrap()
            }),
            vec![],
            after_copy("app/main.go changed (mode 644 -> 755)"),
        ),
        (
            "new file",
            Box::new(|f: &Fixture| std::fs::write(f.p("app/new.go"), "new\n").unwrap()),
            vec![],
            after_copy("app/new.go added"),
        ),
        (
            "deleted file",
            Box::new(|f: &Fixture| std::fs::remove_file(f.p("app/util.go")).unwrap()),
            vec![],
            after_copy("app/util.go removed"),
        ),
        (
            "renamed file",
            Box::new(|f: &Fixture| {
                std::fs::rename(f.p("app/util.go"), f.p("app/helpers.go")).unwrap()
            }),
            vec![],
            after_copy("app/util.go renamed to app/helpers.go"),
        ),
        (
            ".dockerignore change that affects the COPY",
            Box::new(|f: &Fixture| {
                // (Not app/util.go: the "deleted file" build already made that exact selection,
                // and content-addressed keys rightly reuse it.)
                std::fs::write(f.p(".dockerignore"), "README.md\n**/main.go\n").unwrap()
            }),
            vec![],
            after_copy("app/main.go removed"),
        ),
        (
            ".dockerignore change that does not affect the COPY",
            Box::new(|f: &Fixture| {
                std::fs::write(f.p(".dockerignore"), "README.md\n*.tmp\n").unwrap()
            }),
            vec![],
            none.clone(),
        ),
        (
            "declared ARG value",
            Box::new(|_: &Fixture| {}),
            vec!["--build-arg", "VERSION=2"],
            from_version("build arg VERSION changed"),
        ),
        (
            "undeclared --build-arg",
            Box::new(|_: &Fixture| {}),
            vec!["--build-arg", "UNUSED=1"],
            none.clone(),
        ),
        (
            "mtime alone",
            Box::new(|f: &Fixture| {
                let t = std::time::SystemTime::now() - std::time::Duration::from_secs(86400);
                let file = std::fs::File::options()
                    .write(true)
                    .open(f.p("app/main.go"))
                    .unwrap();
                file.set_modified(t).unwrap();
            }),
            vec![],
            none.clone(),
        ),
        (
            "ENV",
            Box::new(|f: &Fixture| replace_in(&f.p("Dockerfile"), "ENV MODE=prod", "ENV MODE=dev")),
            vec![],
            from_version("env MODE changed"),
        ),
        (
            "WORKDIR",
            Box::new(|f: &Fixture| replace_in(&f.p("Dockerfile"), "WORKDIR /app", "WORKDIR /srv")),
            vec![],
            vec![
                (
                    "WORKDIR /srv",
                    "instruction changed (was: WORKDIR /app)".into(),
                ),
                (COPY_APP, parent(2, "WORKDIR /srv")),
                (RUN_VERSION, "WORKDIR changed (was: /app, now: /srv)".into()),
                (RUN_SECRET, "WORKDIR changed (was: /app, now: /srv)".into()),
                (RUN_HEREDOC, "WORKDIR changed (was: /app, now: /srv)".into()),
                (COPY_TOOLS, parent(6, RUN_HEREDOC)),
            ],
        ),
        (
            "USER",
            Box::new(|f: &Fixture| replace_in(&f.p("Dockerfile"), "USER nobody", "USER app")),
            vec![],
            from_heredoc("USER changed (was: nobody, now: app)"),
        ),
        (
            "instruction text",
            Box::new(|f: &Fixture| {
                replace_in(
                    &f.p("Dockerfile"),
                    r#"RUN echo "$VERSION $MODE" > /app/version"#,
                    r#"RUN echo "$VERSION $MODE" >> /app/version"#,
                )
            }),
            vec![],
            vec![
                (
                    r#"RUN echo "$VERSION $MODE" >> /app/version"#,
                    r#"instruction changed (was: RUN echo "$VERSION $MODE" > /app/version)"#.into(),
                ),
                (
                    RUN_SECRET,
                    parent(4, r#"RUN echo "$VERSION $MODE" >> /app/version"#),
                ),
                (RUN_HEREDOC, parent(5, RUN_SECRET)),
                (COPY_TOOLS, parent(6, RUN_HEREDOC)),
            ],
        ),
        (
            "heredoc body",
            Box::new(|f: &Fixture| {
                replace_in(&f.p("Dockerfile"), "id > /tmp/id", "id -u > /tmp/id")
            }),
            vec![],
            from_heredoc("command changed"),
        ),
        (
            // Another busybox variant loaded under the same name.
            "base image digest",
            Box::new(|f: &Fixture| {
                let variant = f.env.context(
                    "variant",
                    &[(
                        "Dockerfile",
                        "FROM busybox:latest\nRUN echo variant > /variant\n",
                    )],
                );
                f.env
                    .build_ok(&["-t", "busybox:latest", variant.to_str().unwrap()]);
            }),
            vec![],
            vec![
                (TOOLS_RUN, "base image digest changed".into()),
                (WORKDIR, "base image digest changed".into()),
                (COPY_APP, parent(2, WORKDIR)),
                (RUN_VERSION, parent(3, COPY_APP)),
                (RUN_SECRET, parent(4, RUN_VERSION)),
                (RUN_HEREDOC, parent(5, RUN_SECRET)),
                (COPY_TOOLS, parent(6, RUN_HEREDOC)),
            ],
        ),
        (
            "secret value",
            Box::new(|f: &Fixture| std::fs::write(&f.secret, "another value\n").unwrap()),
            vec![],
            none.clone(),
        ),
    ];

    let mut failures = Vec::new();
    for (what, mutate, extra, missed) in &table {
        // Each mutation starts from its own store holding exactly one earlier build (the base), so
        // "the closest earlier build" is unambiguous.
        let f = Fixture::new();
        let (got, log) = f.build(&[]);
        check(
            &format!("base build before {what}"),
            &got,
            ALL,
            &first,
            &log,
        );
        mutate(&f);
        let (got, log) = f.build(extra);
        // Steps renamed by the mutation replace their base name in the expected set.
        let mut all: Vec<&str> = ALL.to_vec();
        for (s, _) in missed {
            if !all.contains(s) {
                let i = ALL
                    .iter()
                    .position(|a| {
                        a.split(' ').next() == s.split(' ').next() && !got.contains_key(*a)
                    })
                    .unwrap();
                all[i] = s;
            }
        }
        let missed: Vec<(&str, &str)> = missed.iter().map(|(s, r)| (*s, r.as_str())).collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(what, &got, &all, &missed, &log)
        }));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".into());
            failures.push(
                msg.split("--- build output")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }

    assert!(
        failures.is_empty(),
        "{} mutation(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn no_cache_and_no_cache_filter() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    f.build(&[]);
    let (got, log) = f.build(&["--no-cache"]);
    let all: Vec<(&str, &str)> = ALL
        .iter()
        .map(|s| (*s, "cache disabled for this step (--no-cache)"))
        .collect();
    check("--no-cache", &got, ALL, &all, &log);
    // Only the named stage re-runs; what it feeds re-runs because its input was rebuilt.
    let (got, log) = f.build(&["--no-cache-filter", "tools"]);
    check(
        "--no-cache-filter tools",
        &got,
        ALL,
        &[
            (TOOLS_RUN, "cache disabled for this step (--no-cache)"),
            (
                COPY_TOOLS,
                "parent step re-runs with the cache disabled: [tools 2/2] RUN echo tool > /tool",
            ),
        ],
        &log,
    );
}

#[test]
fn identical_vertices_in_two_stages_run_once() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let df = "FROM busybox:latest AS a\nRUN echo ran-once > /same\n\nFROM busybox:latest AS b\nRUN echo ran-once > /same\n\nFROM busybox:latest\nCOPY --from=a /same /a\nCOPY --from=b /same /b\n";
    let ctx = env.context("ctx", &[("Dockerfile", df)]);
    let (_, err) = env.build_ok(&[ctx.to_str().unwrap()]);
    let runs = err.lines().filter(|l| l.contains("CACHE MISS")).count();
    let starts = err
        .lines()
        .filter(|l| l.ends_with("] RUN echo ran-once > /same"))
        .count();
    assert_eq!(starts, 1, "the shared RUN is one vertex:\n{err}");
    // The RUN and the two COPYs.
    assert_eq!(runs, 3, "steps that ran:\n{err}");
}

/// The `#N   - detail` lines `--explain` prints for the step named `step`.
fn details(log: &str, step: &str) -> Vec<String> {
    let n = log
        .lines()
        .find(|l| l.starts_with('#') && l.ends_with(&format!("] {step}")))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("step {step} not in the output:\n{log}"))
        .to_string();
    let prefix = format!("{n}   - ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn explain_prints_every_difference() {
    if !require_root(&[]) {
        return;
    }
    let f = Fixture::new();
    f.build(&[]);
    std::fs::write(f.p("app/main.go"), "package main2\n").unwrap();
    std::fs::write(f.p("app/new.go"), "new\n").unwrap();
    let (got, log) = f.build(&["--explain", "--build-arg", "VERSION=2"]);
    // The one-line reason stays the first difference…
    assert_eq!(
        got[COPY_APP].as_deref(),
        Some("app/main.go changed (content)"),
        "{log}"
    );
    // …and --explain lists them all.
    assert_eq!(
        details(&log, COPY_APP),
        ["app/main.go changed (content)", "app/new.go added"],
        "{log}"
    );
    assert_eq!(
        details(&log, RUN_VERSION),
        ["build arg VERSION changed".to_string(), parent(3, COPY_APP)],
        "{log}"
    );
    // Without --explain there are no detail lines.
    std::fs::write(f.p("app/main.go"), "package main3\n").unwrap();
    let (_, log) = f.build(&[]);
    assert!(details(&log, COPY_APP).is_empty(), "{log}");
}

/// A stage built FROM a stage that `--no-cache-filter` re-runs re-runs too, on the new files: its
/// old record holds the old parent's layers, and the re-run parent's snapshot is not the old one.
#[test]
fn no_cache_filter_reruns_a_stage_built_from_it() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let df = "FROM busybox:latest AS tools\nRUN cat /proc/sys/kernel/random/uuid > /t\n\nFROM tools\nRUN cp /t /copy\n";
    let ctx = env.context("ctx", &[("Dockerfile", df)]);
    let ctx = ctx.to_str().unwrap();
    let build = |extra: &[&str], out: &str| -> (String, String) {
        let dest = env.path(out);
        let o = format!("type=local,dest={}", dest.display());
        let mut args = extra.to_vec();
        args.extend(["-o", &o, ctx]);
        let (_, log) = env.build_ok(&args);
        let read = |f: &str| std::fs::read_to_string(dest.join(f)).unwrap();
        assert_eq!(
            read("t"),
            read("copy"),
            "{out}: /copy is of another /t:\n{log}"
        );
        (read("t"), log)
    };
    let (first, _) = build(&[], "one");
    let (second, log) = build(&["--no-cache-filter", "tools"], "two");
    assert_ne!(first, second, "the tools stage did not re-run:\n{log}");
    let (third, log) = build(&[], "three");
    assert_eq!(
        third, second,
        "a cached rebuild is not the last build:\n{log}"
    );
}
