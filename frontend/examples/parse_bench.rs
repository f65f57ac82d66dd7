//! Benchmark (not a test): parse + plan of a generated 5,000-instruction Dockerfile.
//!
//! `cargo run --release -p rbuild-frontend --example parse_bench [-- INSTRUCTIONS [RUNS]]`
//! (or `bash bench/parse.sh`). The Dockerfile has 10 stages of a realistic mix — RUN with
//! continuations and `--mount`, ENV/ARG with expansion, COPY/ADD with flags, LABEL, WORKDIR,
//! EXPOSE, a heredoc per stage — and a final stage that copies from every other one, so the whole
//! file is planned. Base images come from an in-memory resolver: no I/O is timed.
//! Prints min and median wall time of parse alone, of plan (which parses too) and of
//! `plan_checked` (plan plus the build checks, what `rbuild build` runs).

use rbuild_oci::{Digest, ImageConfig};
use rbuild_ops::{ImageResolver, ResolveError, ResolvedImage};
use std::fmt::Write;
use std::time::{Duration, Instant};

struct MemResolver(ImageConfig);

impl ImageResolver for MemResolver {
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ResolveError> {
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}"),
            manifest: Digest::sha256_of(reference.as_bytes()),
            config: self.0.clone(),
        })
    }
}

/// A Dockerfile of exactly `n` instructions (n ≥ 30).
fn generate(n: usize) -> String {
    const STAGES: usize = 10;
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=busybox\nARG VERSION=1.0\n");
    let mut count = 2;
    // Each stage but the last gets an equal share; the final stage has 1 + STAGES-1 COPYs + CMD.
    let last = 1 + (STAGES - 1) + 1;
    let per = (n - count - last) / (STAGES - 1);
    let mut extra = (n - count - last) % (STAGES - 1);
    for st in 0..STAGES - 1 {
        let mut budget = per + usize::from(extra > 0);
        extra = extra.saturating_sub(1);
        let _ = writeln!(s, "FROM ${{BASE}} AS stage{st}");
        count += 1;
        budget -= 1;
        let mut i = 0;
        while budget > 0 {
            match i % 10 {
                0 => {
                    let _ = writeln!(s, "ARG A{i}=value-{i}");
                }
                1 => {
                    let _ = writeln!(s, "ENV E{i}=${{A{}:-def}}/x P{i}=\"$PATH\"", i - 1);
                }
                2 => {
                    let _ = writeln!(
                        s,
                        "RUN --mount=type=cache,target=/cache/{i} set -e; \\\n    echo stage {st} step {i} > /tmp/f{i} \\\n    && cat /tmp/f{i} # trailing"
                    );
                }
                3 => {
                    let _ = writeln!(
                        s,
                        "COPY --chown=1000:1000 --chmod=644 src/{st}/{i}.txt /app/{i}/"
                    );
                }
                4 => {
                    let _ = writeln!(s, "LABEL org.example.step{i}=\"{i}\" version=${{VERSION}}");
                }
                5 => {
                    let _ = writeln!(s, "WORKDIR /work/$E{}", i - 4);
                }
                6 => {
                    let _ = writeln!(s, "EXPOSE {}/tcp", 1000 + i % 50000);
                }
                7 if i % 70 == 7 => {
                    let _ = writeln!(s, "RUN <<EOF\necho heredoc {st} {i}\nls /\nEOF");
                }
                7 => {
                    let _ = writeln!(s, "RUN [\"/bin/sh\", \"-c\", \"echo exec {st} {i}\"]");
                }
                8 => {
                    let _ = writeln!(s, "ADD --chmod=755 tools/{st}/t{i}.sh /usr/local/bin/");
                }
                _ => {
                    let _ = writeln!(s, "USER {}", if i % 20 == 9 { "app" } else { "root" });
                }
            }
            i += 1;
            count += 1;
            budget -= 1;
        }
    }
    let _ = writeln!(s, "FROM busybox");
    count += 1;
    for st in 0..STAGES - 1 {
        let _ = writeln!(s, "COPY --from=stage{st} /app /from/{st}");
        count += 1;
    }
    let _ = writeln!(s, "CMD [\"sh\"]");
    count += 1;
    assert_eq!(count, n, "generator miscounted");
    s
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    if n < 30 || runs == 0 {
        eprintln!("usage: parse_bench [INSTRUCTIONS>=30] [RUNS>=1]");
        std::process::exit(2);
    }
    let text = generate(n);
    let base: ImageConfig = serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("base config");
    let resolver = MemResolver(base);

    let df = match rbuild_frontend::parse("Dockerfile", &text) {
        Ok(df) => df,
        Err(e) => {
            eprintln!("{}", e.render());
            std::process::exit(1);
        }
    };
    let opts = rbuild_frontend::PlanOptions::new("Dockerfile", text.as_str());
    let def = match rbuild_frontend::plan(&opts, &resolver) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}", e.render());
            std::process::exit(1);
        }
    };
    println!(
        "Dockerfile: {} instructions, {} lines, {} bytes; graph: {} vertices",
        df.instructions.len(),
        text.lines().count(),
        text.len(),
        def.graph.len()
    );

    if std::env::var_os("PARSE_BENCH_DUMP").is_some() {
        print!("{text}");
        for id in def.graph.graph.node_indices() {
            println!("vertex: {}", def.graph.vertex(id).meta.name);
        }
    }
    let mut parse_t = Vec::new();
    let mut plan_t = Vec::new();
    let mut checked_t = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let df = rbuild_frontend::parse("Dockerfile", &text).expect("parses");
        parse_t.push(t.elapsed());
        std::hint::black_box(df);
        let t = Instant::now();
        let def = rbuild_frontend::plan(&opts, &resolver).expect("plans");
        plan_t.push(t.elapsed());
        std::hint::black_box(def);
        let t = Instant::now();
        let c = rbuild_frontend::plan_checked(&opts, &resolver).expect("checks");
        checked_t.push(t.elapsed());
        std::hint::black_box(c);
    }
    let (pmin, pmed) = stats(parse_t);
    let (lmin, lmed) = stats(plan_t);
    println!("parse:        min {pmin:?}  median {pmed:?}  ({runs} runs)");
    let (cmin, cmed) = stats(checked_t);
    println!("parse + plan: min {lmin:?}  median {lmed:?}  ({runs} runs)");
    println!("+ checks:     min {cmin:?}  median {cmed:?}  ({runs} runs)");
}
