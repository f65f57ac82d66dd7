//! `rbuild build`: the flags checked and parsed into a [`rbuild_engine::BuildRequest`]; the
//! engine builds; here the progress display and what is printed of the outcome.

use crate::args::{usage, usage_of, BuildArgs, ProgressMode};
use crate::progress::{Mode, Progress};
use anyhow::{anyhow, bail, Context as _};
use rbuild_engine::cache::{CacheExport, CacheFrom};
use rbuild_engine::outputs::OutputSpec;
use rbuild_engine::Outcome;
use rbuild_history::Status;
use rbuild_solver::{SecretSource, SolveError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(root: &Option<PathBuf>, args: BuildArgs) -> anyhow::Result<ExitCode> {
    // Everything that can be checked without the store is checked first, so bad input changes
    // nothing. Bad flag values are usage errors (exit 2).
    if args.file.as_deref().is_some_and(|f| f.as_os_str() == "-") && args.context.as_os_str() == "-"
    {
        return Err(usage(
            "-f - and CONTEXT - both read stdin; give one of them a file",
        ));
    }
    let build_args = parse_build_args(&args.build_args)?;
    let labels = parse_kv(&args.labels, "--label").map_err(usage_of)?;
    let target_platform = target_platform(&args.platform)?;
    let outputs: Vec<OutputSpec> = args
        .outputs
        .iter()
        .map(|o| OutputSpec::parse(o))
        .collect::<Result<_, _>>()
        .map_err(usage_of)?;
    let stdout_outputs = outputs
        .iter()
        .filter(|o| o.dest.as_deref().is_some_and(|d| d.as_os_str() == "-"))
        .count();
    if stdout_outputs > 1 {
        return Err(usage("only one --output can write to stdout (dest=-)"));
    }
    let mut allow_net_host = false;
    let mut allow_insecure = false;
    for a in &args.allow {
        match a.as_str() {
            "network.host" => allow_net_host = true,
            "security.insecure" => allow_insecure = true,
            other => {
                return Err(usage(format!(
                    "--allow {other}: unknown entitlement (network.host, security.insecure)"
                )))
            }
        }
    }
    let secrets = parse_secrets(&args.secrets).map_err(usage_of)?;
    let ssh = parse_ssh(&args.ssh).map_err(usage_of)?;
    let cache_to = args
        .cache_to
        .iter()
        .map(|s| CacheExport::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(usage_of)?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| CacheFrom::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(usage_of)?;
    if args.push {
        if args.tags.is_empty() {
            return Err(usage(
                "--push needs a -t NAME naming the registry to push to",
            ));
        }
        for t in &args.tags {
            rbuild_engine::registry::parse_ref(t, "-t").map_err(usage_of)?;
        }
    }
    let mut extra_contexts = Vec::new();
    // Contexts fetched from URLs: their directories live as long as the build.
    let mut remote_contexts = Vec::new();
    let mut named = BTreeMap::new();
    for bc in &args.build_contexts {
        let (name, src) = bc
            .split_once('=')
            .filter(|(n, s)| !n.is_empty() && !s.is_empty())
            .ok_or_else(|| {
                usage(format!(
                    "--build-context {bc}: expected NAME=DIR or NAME=docker-image://REF"
                ))
            })?;
        if let Some(r) = src.strip_prefix("docker-image://") {
            if r.is_empty() {
                return Err(usage(format!(
                    "--build-context {bc}: empty image reference"
                )));
            }
            named.insert(
                name.to_string(),
                rbuild_frontend::NamedContext::Image(r.to_string()),
            );
        } else if let Some(remote) = rbuild_engine::context::resolve_url(src)
            .with_context(|| format!("--build-context {name}"))?
        {
            // A git repository or a remote tar: fetched now into a directory of its own.
            extra_contexts.push((name.to_string(), remote.dir.canonicalize()?));
            named.insert(name.to_string(), rbuild_frontend::NamedContext::Local);
            remote_contexts.push(remote);
        } else if let Some((scheme, _)) = src.split_once("://") {
            return Err(usage(format!(
                "--build-context {bc}: {scheme}:// sources are not supported (a local directory, a git URL, an http(s) tar, or docker-image://REF)"
            )));
        } else {
            let dir = PathBuf::from(src);
            if !dir.is_dir() {
                bail!("--build-context {name}={src}: not a directory");
            }
            extra_contexts.push((name.to_string(), dir.canonicalize()?));
            named.insert(name.to_string(), rbuild_frontend::NamedContext::Local);
        }
    }
    let limits = rbuild_sandbox::Limits {
        memory: args
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .map_err(|e| usage(format!("--memory {e:#}")))?,
        cpus: args.cpus,
        pids: args.pids_limit,
    };
    // Refused before anything runs when the limits cannot be applied here (rootless without a
    // delegated cgroup subtree): never silently ignored.
    rbuild_sandbox::check_limits(&limits)?;
    // SOURCE_DATE_EPOCH: from the build args first (as BuildKit), else the environment.
    let sde = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| rbuild_inputs::var("SOURCE_DATE_EPOCH"))
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    usage(format!(
                        "SOURCE_DATE_EPOCH={s}: not a number of seconds since 1970"
                    ))
                })
        })
        .transpose()?;

    let attest = rbuild_engine::attest::AttestRequest {
        provenance: args
            .provenance
            .as_deref()
            .map(rbuild_attest::provenance::ProvenanceOpts::parse)
            .transpose()
            .map_err(|e| usage(e.to_string()))?
            .flatten(),
        sbom: args
            .sbom
            .as_deref()
            .map(rbuild_attest::parse_sbom_flag)
            .transpose()
            .map_err(|e| usage(e.to_string()))?
            .unwrap_or(false),
    };
    let manifest_annotations = parse_annotations(&args.annotations)?;
    let request = rbuild_engine::BuildRequest {
        root: root.clone(),
        context: args.context.clone(),
        file: args.file.clone(),
        build_args,
        labels,
        target: args.target.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        outputs,
        secrets,
        ssh,
        cache_to,
        cache_from,
        push: args.push,
        push_by_digest: false,
        tags: args.tags.clone(),
        named_contexts: named,
        extra_contexts,
        remote_contexts,
        limits,
        jobs: args.jobs,
        allow_network_host: allow_net_host,
        allow_insecure,
        explain: args.explain,
        quiet: args.quiet,
        source_date_epoch: sde,
        check: args.check,
        iidfile: args.iidfile.clone(),
        metadata_file: args.metadata_file.clone(),
        platform: Some(target_platform),
        attest,
        manifest_annotations,
    };
    let mode = match (args.quiet, args.progress) {
        (true, _) | (_, ProgressMode::Quiet) => Mode::Quiet,
        (_, ProgressMode::Plain) => Mode::Plain,
        (_, ProgressMode::Json) => Mode::Json,
        (_, ProgressMode::Tty) => Mode::Tty,
        (_, ProgressMode::Auto) => {
            if rbuild_inputs::terminal(2) {
                Mode::Tty
            } else {
                Mode::Plain
            }
        }
    };
    // Every build but `--check` leaves a record in the history.
    let recorder = (!args.check)
        .then(|| crate::history::Recorder::start(root, &args.tags, args.target.clone()));
    let mut ui = Ui {
        mode,
        warnings: Vec::new(),
        progress: None,
        tap: recorder.as_ref().map(|r| r.tap()),
        inputs: Vec::new(),
        manifest: None,
    };
    let built = rbuild_engine::build(request, &mut ui);
    let mut recorder = recorder;
    if let Some(r) = &mut recorder {
        r.inputs(&ui.inputs);
    }
    let finish = |rec: Option<crate::history::Recorder>,
                  status: Status,
                  image: Option<(String, String)>,
                  error: Option<String>| {
        if let Some(mut r) = rec {
            if let Some(e) = &error {
                r.log(e);
            }
            let code = if status == Status::Succeeded { 0 } else { 1 };
            r.finish(status, image, error, code);
        }
    };
    let failed = ExitCode::from(1);
    let outcome = match built {
        Ok(o) => o,
        Err(e) => {
            let mut text = String::new();
            for (i, c) in e.chain().enumerate() {
                let head = if i == 0 { "error: " } else { "  caused by: " };
                text.push_str(&format!("{head}{c}\n"));
            }
            finish(recorder, Status::Error, None, Some(text));
            return Err(e);
        }
    };
    match outcome {
        Outcome::Built { id, wrote_stdout } => {
            // stdout carries only data: the id, unless an output already wrote its archive there.
            if !wrote_stdout {
                println!("{id}");
            }
            let manifest = ui.manifest.take().unwrap_or_default();
            finish(recorder, Status::Succeeded, Some((id, manifest)), None);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Checked {
            warnings,
            plan_error,
            error_rules,
        } => {
            if mode == Mode::Json {
                crate::checks::print_events(&warnings);
            } else {
                crate::checks::print_report(&warnings);
            }
            if let Some(e) = &plan_error {
                eprintln!("{e}");
            }
            if !error_rules.is_empty() {
                eprintln!("error: {}", crate::checks::violation(&error_rules));
            }
            Ok(if plan_error.is_some() || !error_rules.is_empty() {
                failed
            } else {
                ExitCode::SUCCESS
            })
        }
        Outcome::Invalid { warnings, rendered } => {
            crate::checks::print_summary(&warnings, mode);
            eprintln!("{rendered}");
            finish(
                recorder,
                Status::Invalid,
                None,
                Some(format!("{rendered}\n")),
            );
            Ok(failed)
        }
        Outcome::Refused {
            warnings,
            error_rules,
        } => {
            if mode != Mode::Json {
                crate::checks::print_report(&warnings);
            }
            let text = format!("error: {}\n", crate::checks::violation(&error_rules));
            eprint!("{text}");
            finish(recorder, Status::Invalid, None, Some(text));
            Ok(failed)
        }
        Outcome::Failed {
            error,
            dockerfile_name,
            dockerfile,
        } => {
            let text = failure_text(&error, &dockerfile_name, &dockerfile);
            eprint!("{text}");
            crate::single_id_hint();
            let status = if matches!(error, SolveError::Cancelled) {
                Status::Cancelled
            } else {
                Status::Failed
            };
            finish(recorder, status, None, Some(text));
            Ok(failed)
        }
    }
}

/// The progress display of one build, and its check warnings (json: as events when planned;
/// plain and tty: a summary after the build).
struct Ui {
    mode: Mode,
    warnings: Vec<rbuild_frontend::Warning>,
    progress: Option<Progress>,
    /// The history record's view of the events.
    tap: Option<crate::history::Tap>,
    inputs: Vec<(String, String)>,
    /// The built image's manifest digest.
    manifest: Option<String>,
}

impl rbuild_engine::BuildUi for Ui {
    fn checked(&mut self, warnings: &[rbuild_frontend::Warning]) {
        if self.mode == Mode::Json {
            crate::checks::print_events(warnings);
        }
        self.warnings = warnings.to_vec();
    }

    fn start(&mut self) -> rbuild_solver::EventSink {
        let p = Progress::start(self.mode, self.tap.take());
        let sink = p.sink();
        self.progress = Some(p);
        sink
    }

    fn finished(&mut self, summary: Option<rbuild_engine::Summary>) {
        if let Some(s) = &summary {
            self.manifest = Some(s.digest.clone());
        }
        if let Some(p) = self.progress.take() {
            match summary {
                Some(s) => p.finish_with(s),
                None => p.finish(),
            }
        }
        crate::checks::print_summary(&self.warnings, self.mode);
    }

    fn replay(
        &self,
        steps: &[rbuild_noop::Step],
        summary: &rbuild_engine::Summary,
    ) -> Option<(Vec<rbuild_noop::Part>, Vec<rbuild_noop::Part>)> {
        let stderr = crate::progress::noop_replay(self.mode, steps, summary)?;
        Some((
            vec![rbuild_noop::Part::Text(format!("{}\n", summary.id))],
            stderr,
        ))
    }

    fn inputs(&mut self, inputs: &[(String, String)]) {
        self.inputs = inputs.to_vec();
    }
}

/// `--platform` (comma-separated or repeated; `local` is the host's, as BuildKit's): the one
/// platform built for. An unknown platform is a usage error naming it.
fn target_platform(args: &[String]) -> anyhow::Result<rbuild_oci::Platform> {
    let mut all: Vec<rbuild_oci::Platform> = Vec::new();
    for a in args {
        for one in a.split(',') {
            let p = if one.trim() == "local" {
                rbuild_oci::Platform::host()
            } else {
                rbuild_oci::Platform::parse_strict(one.trim())
                    .map_err(|e| usage(format!("--platform: {e}")))?
            };
            if !all.iter().any(|q| q.same_as(&p)) {
                all.push(p);
            }
        }
    }
    match all.as_slice() {
        [] => Ok(rbuild_oci::Platform::host()),
        [one] => Ok(one.normalized()),
        several => Err(usage(format!(
            "--platform {}: building several platforms into one image index is not supported yet; build one platform per command",
            several.iter().map(|p| p.format()).collect::<Vec<_>>().join(",")
        ))),
    }
}

fn parse_build_args(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in list {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                // `--build-arg KEY` takes the value from the environment, or is ignored.
                if let Some(v) = rbuild_inputs::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn parse_kv(list: &[String], flag: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in list {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag} {a}: expected KEY=VALUE"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn parse_secrets(list: &[String]) -> anyhow::Result<BTreeMap<String, SecretSource>> {
    let mut out = BTreeMap::new();
    for s in list {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for part in s.split(',') {
            let (k, v) = part.split_once('=').unwrap_or(("id", part));
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => {}
                other => bail!("--secret {s}: unknown key {other} (id, src, env)"),
            }
        }
        let id = id.ok_or_else(|| anyhow!("--secret {s}: missing id="))?;
        let source = match (src, env) {
            (Some(p), _) => SecretSource::File(PathBuf::from(p)),
            (None, Some(e)) => SecretSource::Env(
                rbuild_inputs::var(&e)
                    .ok_or_else(|| anyhow!("--secret {s}: environment variable {e} is not set"))?,
            ),
            (None, None) => match rbuild_inputs::var(&id) {
                Some(v) => SecretSource::Env(v),
                None => bail!("--secret {s}: give src=PATH or env=VAR"),
            },
        };
        out.insert(id, source);
    }
    Ok(out)
}

fn parse_ssh(list: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for s in list {
        let (id, path) = match s.split_once('=') {
            Some((id, p)) => (id.to_string(), PathBuf::from(p)),
            None => (
                s.clone(),
                PathBuf::from(
                    rbuild_inputs::var("SSH_AUTH_SOCK")
                        .ok_or_else(|| anyhow!("--ssh {s}: SSH_AUTH_SOCK is not set"))?,
                ),
            ),
        };
        out.insert(id, path);
    }
    Ok(out)
}

/// `256m`, `1g`, `1024` → bytes.
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.trim_end_matches('b').chars().last() {
        Some('k') => (&t[..t.trim_end_matches('b').len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 20),
        Some('g') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (t.trim_end_matches('b'), 1),
    };
    num.parse::<u64>()
        .map_err(|_| anyhow!("{s}: not a size (e.g. 256m, 1g)"))?
        .checked_mul(mult)
        .ok_or_else(|| anyhow!("{s}: too large"))
}

/// A failed build as printed: what failed, where in the Dockerfile (file:line:col, the line, a
/// caret), the exit code and the last lines of output.
fn failure_text(e: &SolveError, name: &str, text: &str) -> String {
    let mut out = String::new();
    match e {
        SolveError::Exec {
            instruction,
            span,
            status,
            tail,
            ..
        } => {
            out.push_str(&format!("error: {instruction}: {status}\n"));
            if let Some(sp) = span {
                out.push_str(&quote_span(name, text, sp));
            }
            if !tail.is_empty() {
                out.push_str("last output:\n");
                for l in tail {
                    out.push_str(&format!("  > {l}\n"));
                }
            }
        }
        SolveError::Step {
            instruction,
            span,
            message,
        } => {
            out.push_str(&format!("error: {instruction}: {message}\n"));
            if let Some(sp) = span {
                out.push_str(&quote_span(name, text, sp));
            }
        }
        SolveError::Cancelled => out.push_str("error: build cancelled\n"),
        SolveError::Internal(m) => out.push_str(&format!("error: {m}\n")),
    }
    out
}

fn quote_span(name: &str, text: &str, sp: &rbuild_ops::Span) -> String {
    let mut out = format!(" --> {name}:{}:{}\n", sp.start_line, sp.start_col.max(1));
    let lines: Vec<&str> = text.lines().collect();
    let width = sp.end_line.max(sp.start_line).to_string().len();
    for ln in sp.start_line..=sp.end_line.max(sp.start_line) {
        if let Some(l) = lines.get(ln as usize - 1) {
            out.push_str(&format!("{ln:>width$} | {l}\n"));
            if ln == sp.start_line {
                let col = sp.start_col.max(1) as usize;
                let len = if sp.end_line == sp.start_line && sp.end_col as usize > col {
                    sp.end_col as usize - col
                } else {
                    l.chars().count().saturating_sub(col - 1).max(1)
                };
                out.push_str(&format!(
                    "{:>width$} | {}{}\n",
                    "",
                    " ".repeat(col - 1),
                    "^".repeat(len.max(1))
                ));
            }
        }
    }
    out
}

/// `--annotation [manifest:]K=V`: the pushed manifest's annotations. The index levels of buildx
/// (`index:`, `manifest-descriptor:`) are `rbuild imagetools create`'s: a build pushes no index of
/// its own choosing.
fn parse_annotations(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in list {
        let kv = match a.split_once(':') {
            Some(("manifest", rest)) => rest,
            Some((kind, _))
                if ["index", "manifest-descriptor", "index-descriptor"]
                    .contains(&kind.split('[').next().unwrap_or(kind)) =>
            {
                return Err(usage(format!(
                    "--annotation {a}: {kind} annotations are not written by rbuild build (only manifest:); merge with rbuild imagetools create --annotation index:…"
                )))
            }
            _ => a.as_str(),
        };
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| usage(format!("--annotation {a}: expected [manifest:]KEY=VALUE")))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256m").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn caret() {
        let sp = rbuild_ops::Span {
            start_line: 2,
            start_col: 1,
            end_line: 2,
            end_col: 11,
        };
        let q = quote_span("Dockerfile", "FROM x\nRUN exit 3\n", &sp);
        assert_eq!(q, " --> Dockerfile:2:1\n2 | RUN exit 3\n  | ^^^^^^^^^^\n");
    }
}
