//! `rbuild build`: Dockerfile + context → image (+ outputs).

use crate::args::{usage, usage_of, BuildArgs, ProgressMode};
use crate::outputs::{self, OutputSpec};
use crate::progress::{Mode, Progress};
use crate::resolver::StoreResolver;
use anyhow::{anyhow, bail, Context as _};
use rbuild_solver::{SecretSource, SolveError, SolveOptions, Solver};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
    if let Some(p) = &args.platform {
        check_platform(p)?;
    }
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
        .map(|s| crate::cache::CacheTo::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(usage_of)?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| crate::cache::CacheFrom::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(usage_of)?;
    if args.push {
        if args.tags.is_empty() {
            return Err(usage(
                "--push needs a -t NAME naming the registry to push to",
            ));
        }
        for t in &args.tags {
            crate::registry_cmds::parse_ref(t, "-t").map_err(usage_of)?;
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
        } else if let Some(remote) =
            crate::context::resolve_url(src).with_context(|| format!("--build-context {name}"))?
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
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
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

    // The context: a directory, a tar file, or `-` (a tar, or a lone Dockerfile, on stdin).
    let ctx = crate::context::resolve(&args.context)?;
    let context = ctx.dir.clone();
    let dockerfile_path = match &args.file {
        Some(f) if f.as_os_str() == "-" => PathBuf::from("-"),
        // In a tar context, -f names a file inside the archive (as docker).
        Some(f) if ctx.is_archive() && f.is_relative() => context.join(f),
        Some(f) => f.clone(),
        None => context.join("Dockerfile"),
    };
    let (dockerfile_name, dockerfile) = if let Some(text) = ctx.stdin_dockerfile.clone() {
        if args.file.is_some() {
            return Err(usage(
                "stdin holds a Dockerfile, not a tar: -f cannot be used with it",
            ));
        }
        ("Dockerfile".to_string(), text)
    } else if dockerfile_path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading the Dockerfile from stdin")?;
        ("Dockerfile".to_string(), s)
    } else {
        let text = std::fs::read_to_string(&dockerfile_path)
            .with_context(|| format!("reading Dockerfile {}", dockerfile_path.display()))?;
        (display_name(&dockerfile_path), text)
    };
    let (dockerignore, ignore_stamps) = read_dockerignore(&context, &dockerfile_path)?;
    let mut contexts = BTreeMap::new();
    contexts.insert("context".to_string(), context.canonicalize()?);
    contexts.extend(extra_contexts);

    // Syntax errors are reported before the store is even opened.
    if let Err(e) = rbuild_frontend::parse(&dockerfile_name, &dockerfile) {
        eprintln!("{}", e.render());
        return Ok(ExitCode::from(1));
    }

    let mode = match (args.quiet, args.progress) {
        (true, _) | (_, ProgressMode::Quiet) => Mode::Quiet,
        (_, ProgressMode::Plain) => Mode::Plain,
        (_, ProgressMode::Json) => Mode::Json,
        (_, ProgressMode::Tty) => Mode::Tty,
        (_, ProgressMode::Auto) => {
            if std::io::stderr().is_terminal() {
                Mode::Tty
            } else {
                Mode::Plain
            }
        }
    };
    let plan_opts = rbuild_frontend::PlanOptions {
        dockerfile_name: dockerfile_name.clone(),
        dockerfile: dockerfile.clone(),
        dockerignore,
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        labels,
        platform: rbuild_oci::Platform::host(),
        build_contexts: named,
    };
    if args.check {
        // Evaluate only: base images are resolved (from the store, or the registry), nothing
        // runs and nothing is written.
        let store = Arc::new(crate::open_store(root)?);
        let registry = Arc::new(crate::registry_cmds::LazyRegistry::default());
        let resolver = StoreResolver::with_registry(store, registry, args.pull);
        let checked = match rbuild_frontend::plan_checked(&plan_opts, &resolver) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}", e.render());
                return Ok(ExitCode::from(1));
            }
        };
        if mode == Mode::Json {
            crate::checks::print_events(&checked.warnings);
        } else {
            crate::checks::print_report(&checked.warnings);
        }
        let mut failed = false;
        if let Err(e) = &checked.definition {
            eprintln!("{}", e.render());
            failed = true;
        }
        let rules = checked.error_rules();
        if !rules.is_empty() {
            eprintln!("error: {}", crate::checks::violation(&rules));
            failed = true;
        }
        return Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }

    // Every mount from here on lives in rbuild's own mount namespace and vanishes with it.
    if let Err(e) = rbuild_sandbox::enter_private_mount_namespace() {
        bail!(
            "cannot create a private mount namespace: {e}\nhint: building needs root (CAP_SYS_ADMIN for mount and namespace creation); run rbuild as root"
        );
    }
    let store = Arc::new(crate::open_store(root)?);
    // The no-op check's record of this build (see rbuild-noop) starts from this generation.
    let noop_generation = rbuild_noop::generation(store.root());
    let snapshotter = Arc::new(crate::snapshots::open_for_mounting(store.root())?);
    // Snapshots left by crashed builds are removed when this build first needs the snapshot
    // table; a fully cached build never opens it.
    snapshotter.cleanup_stale_on_first_use();
    let _lease = store
        .lease("build")
        .context("taking a lease on the store")?;

    let registry = Arc::new(crate::registry_cmds::LazyRegistry::default());
    let resolver = StoreResolver::with_registry(store.clone(), registry.clone(), args.pull);
    let checked = match rbuild_frontend::plan_checked(&plan_opts, &resolver) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", e.render());
            return Ok(ExitCode::from(1));
        }
    };
    // Build checks: json gets its events first; plain and tty print them after the build.
    let warnings = checked.warnings;
    if mode == Mode::Json {
        crate::checks::print_events(&warnings);
    }
    let def = match checked.definition {
        Ok(d) => d,
        Err(e) => {
            crate::checks::print_summary(&warnings, mode);
            eprintln!("{}", e.render());
            return Ok(ExitCode::from(1));
        }
    };
    let error_rules = checked_error_rules(&warnings);
    if !error_rules.is_empty() {
        // `check=error=true`: refused before any step runs.
        if mode != Mode::Json {
            crate::checks::print_report(&warnings);
        }
        eprintln!("error: {}", crate::checks::violation(&error_rules));
        return Ok(ExitCode::from(1));
    }
    // RUN steps of another platform run under binfmt_misc emulation: a platform without a usable
    // emulator is refused here, before any step runs.
    check_emulators(&def.graph)?;

    let progress = Progress::start(mode);
    let needs_rootfs = outputs.iter().any(|o| o.needs_rootfs());
    // --cache-from: only the caches' metadata is read now; layers come when a step needs them.
    let remote_cache = crate::cache::import(&store, &registry, &cache_from, args.quiet);
    let opts = SolveOptions {
        contexts,
        secrets,
        ssh,
        jobs: args.jobs,
        allow_network_host: allow_net_host,
        allow_insecure,
        source_date_epoch: sde,
        materialize_target: needs_rootfs,
        init_exe: None,
        limits,
        remote_cache: remote_cache.clone(),
        explain: args.explain,
    };
    let solver = Arc::new(Solver::new(
        store.clone(),
        snapshotter.clone(),
        Arc::new(crate::resolver::RegistryImages {
            store: store.clone(),
            registry: registry.clone(),
            quiet: args.quiet,
        }),
        progress.sink(),
        opts,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let source = def.source.clone();
    let result = rt.block_on(async {
        let canceller = solver.clone();
        let solve = solver.solve(def);
        tokio::pin!(solve);
        tokio::select! {
            r = &mut solve => r,
            _ = tokio::signal::ctrl_c() => {
                // Kill the running sandboxes and let every step clean up (unmount, remove its
                // active snapshot and partial blobs) before exiting; a hang guard bounds the wait.
                canceller.cancel();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(20), &mut solve).await;
                Err(SolveError::Cancelled)
            }
        }
    });
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            progress.finish();
            crate::checks::print_summary(&warnings, mode);
            report_failure(&e, source.as_ref(), &dockerfile_name, &dockerfile);
            return Ok(ExitCode::from(1));
        }
    };

    // Name the image, then the other outputs.
    let record = rbuild_store::ImageRecord {
        manifest: result.manifest.clone(),
        config: result.config_digest.clone(),
        media_type: rbuild_oci::MEDIA_TYPE_OCI_MANIFEST.to_string(),
        size: image_size(&store, &result.manifest),
        created: result.config.created.clone(),
    };
    let wants_image = outputs.is_empty() || outputs.iter().any(|o| o.is_image());
    let exported = (|| -> anyhow::Result<()> {
        if wants_image {
            for t in &args.tags {
                store
                    .put_image(t, &record)
                    .with_context(|| format!("naming the image {t}"))?;
            }
        }
        for o in &outputs {
            outputs::export(
                &store,
                &snapshotter,
                &result,
                &args.tags,
                o,
                &progress.sink(),
            )?;
        }
        Ok(())
    })();
    let id = result.config_digest.to_string();
    let exported = exported.and_then(|()| {
        crate::registry_cmds::AfterBuild {
            store: &store,
            registry: &registry,
            remote: &remote_cache,
            result: &result,
            tags: &args.tags,
            push: args.push,
            cache_to: &cache_to,
            quiet: args.quiet,
            events: &progress.sink(),
        }
        .run()
    });
    match exported {
        Ok(()) => progress.finish_with(crate::progress::Summary {
            id: id.clone(),
            digest: result.manifest.to_string(),
            size: record.size,
        }),
        Err(e) => {
            progress.finish();
            crate::checks::print_summary(&warnings, mode);
            return Err(e);
        }
    }
    crate::checks::print_summary(&warnings, mode);
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &id).with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &args.metadata_file {
        let meta = rbuild_noop::build_metadata(&result.manifest.to_string(), &id, &args.tags);
        std::fs::write(f, meta).with_context(|| format!("writing {}", f.display()))?;
    }
    // The front's key for this request, when it can answer a rebuild of it (see rbuild-noop).
    if let Ok(key) = std::env::var(rbuild_noop::KEY_ENV) {
        // A build with warnings is not answered by the front: it would not print them.
        let plain_request = warnings.is_empty()
            && outputs.is_empty()
            && !args.push
            && !args.pull
            && !args.no_cache
            && args.no_cache_filter.is_empty()
            && cache_from.is_empty()
            && cache_to.is_empty()
            && args.build_contexts.is_empty()
            && !ctx.is_archive()
            && ctx.stdin_dockerfile.is_none()
            && dockerfile_path.as_os_str() != "-";
        if plain_request {
            let rec = noop_record(
                &store,
                &resolver,
                &result,
                noop_generation,
                &dockerfile_path,
                &dockerfile,
                ignore_stamps,
                &args.tags,
                &record,
            );
            if let Some(rec) = rec {
                if let Err(e) = rbuild_noop::write_record(store.root(), &key, &rec) {
                    tracing::debug!("writing the no-op record: {e}");
                }
            }
        }
    }
    // stdout carries only data: the id, unless an output already wrote its archive there.
    if stdout_outputs == 0 {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The rules violated as errors (`check=error=true`), sorted, once each.
fn checked_error_rules(warnings: &[rbuild_frontend::Warning]) -> Vec<&'static str> {
    let mut r: Vec<&'static str> = warnings
        .iter()
        .filter(|w| w.is_error)
        .filter_map(|w| w.rule)
        .collect();
    r.sort_unstable();
    r.dedup();
    r
}

fn image_size(store: &rbuild_store::Store, manifest: &rbuild_oci::Digest) -> u64 {
    rbuild_image::read_manifest(store, manifest)
        .map(|m| m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>())
        .unwrap_or(0)
}

/// Every platform the graph's RUN steps are for (other than the host's) has an emulator.
fn check_emulators(graph: &rbuild_ops::BuildGraph) -> anyhow::Result<()> {
    let mut seen: Vec<rbuild_oci::Platform> = Vec::new();
    for v in graph.graph.node_weights() {
        if let rbuild_ops::Op::Exec(e) = &v.op {
            if let Some(p) = &e.platform {
                if !seen.contains(p) {
                    rbuild_sandbox::binfmt::emulation(p).map_err(|e| anyhow!("{e}"))?;
                    seen.push(p.clone());
                }
            }
        }
    }
    Ok(())
}

/// `--platform`: only the host's (`linux/amd64`, `linux/amd64/v2`, `amd64`, `local`).
fn check_platform(p: &str) -> anyhow::Result<()> {
    let arch = rbuild_oci::host_arch();
    let host = format!("linux/{arch}");
    let ok = p.split(',').all(|one| {
        let one = one.trim();
        one == "local"
            || one == arch
            || one == host
            || one
                .strip_prefix(&host)
                .is_some_and(|v| v.starts_with('/') && v.len() > 1)
    });
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "--platform {p}: only the host platform ({host}) can be built here (no emulation)"
        )))
    }
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}

/// `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's `.dockerignore`.
/// With the no-op check's stamps of the files looked at.
fn read_dockerignore(
    context: &Path,
    dockerfile: &Path,
) -> anyhow::Result<(Option<String>, Vec<rbuild_noop::FileStamp>)> {
    let mut stamps = Vec::new();
    if dockerfile.as_os_str() != "-" {
        let specific = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
        if specific.is_file() {
            let text = std::fs::read_to_string(&specific)
                .with_context(|| format!("reading {}", specific.display()))?;
            stamps.push(rbuild_noop::FileStamp::of_bytes(&specific, text.as_bytes()));
            return Ok((Some(text), stamps));
        }
        stamps.push(rbuild_noop::FileStamp::absent(&specific));
    }
    let p = context.join(".dockerignore");
    if p.is_file() {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        stamps.push(rbuild_noop::FileStamp::of_bytes(&p, text.as_bytes()));
        return Ok((Some(text), stamps));
    }
    stamps.push(rbuild_noop::FileStamp::absent(&p));
    Ok((None, stamps))
}

/// The no-op check's record of this build: what it read and what it answered (see rbuild-noop).
/// None when some input cannot be stamped (a registry, an image id, a file that changed while
/// it was read, an ADD of a URL).
#[allow(clippy::too_many_arguments)]
fn noop_record(
    store: &rbuild_store::Store,
    resolver: &StoreResolver,
    result: &rbuild_solver::SolveResult,
    generation: String,
    dockerfile_path: &Path,
    dockerfile: &str,
    ignore_stamps: Vec<rbuild_noop::FileStamp>,
    tags: &[String],
    image: &rbuild_store::ImageRecord,
) -> Option<rbuild_noop::Record> {
    use rbuild_noop::FileStamp;
    let stamp = result.stamp.as_ref()?;
    let mut rec = rbuild_noop::Record::new(store.root(), generation);
    rec.files
        .push(FileStamp::of_bytes(dockerfile_path, dockerfile.as_bytes()));
    rec.files.extend(ignore_stamps);
    rec.selections = stamp.selections.clone();
    for answer in resolver.answers() {
        match answer {
            crate::resolver::Answer::Named(name, image) => {
                let (path, bytes) = store.ref_file(&name, &image).ok()?;
                rec.refs.push(FileStamp::of_bytes(&path, &bytes));
            }
            crate::resolver::Answer::Pinned(d) => rec.blobs.push(d.to_string()),
            crate::resolver::Answer::Other => return None,
        }
    }
    for t in tags {
        let (path, bytes) = store.ref_file(t, image).ok()?;
        rec.refs.push(FileStamp::of_bytes(&path, &bytes));
    }
    // Every blob the engine would read for the same rebuild: the image's, each base image's
    // manifest and config, and every layer a step's cache record needs.
    for m in std::iter::once(&result.manifest).chain(stamp.images.iter().map(|(_, m)| m)) {
        let manifest = rbuild_image::read_manifest(store, m).ok()?;
        rec.blobs.push(m.to_string());
        rec.blobs.push(manifest.config.digest.to_string());
        rec.blobs
            .extend(manifest.layers.iter().map(|l| l.digest.to_string()));
    }
    rec.blobs.extend(stamp.blobs.iter().map(|b| b.to_string()));
    rec.blobs.sort_unstable();
    rec.blobs.dedup();
    rec.keys = stamp.keys.iter().map(|k| k.to_string()).collect();
    rec.steps = stamp.steps.clone();
    rec.id = result.config_digest.to_string();
    rec.manifest = result.manifest.to_string();
    rec.size = image.size;
    Some(rec)
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
                if let Ok(v) = std::env::var(a) {
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
                std::env::var(&e)
                    .map_err(|_| anyhow!("--secret {s}: environment variable {e} is not set"))?,
            ),
            (None, None) => match std::env::var(&id) {
                Ok(v) => SecretSource::Env(v),
                Err(_) => bail!("--secret {s}: give src=PATH or env=VAR"),
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
                    std::env::var("SSH_AUTH_SOCK")
                        .map_err(|_| anyhow!("--ssh {s}: SSH_AUTH_SOCK is not set"))?,
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
        .map(|n| n * mult)
        .map_err(|_| anyhow!("{s}: not a size (e.g. 256m, 1g)"))
}

/// Print a failed build: what failed, where in the Dockerfile (file:line:col, the line, a caret),
/// the exit code and the last lines of output.
fn report_failure(e: &SolveError, source: Option<&rbuild_ops::SourceFile>, name: &str, text: &str) {
    let (name, text) = match source {
        Some(s) => (s.name.as_str(), &*s.text),
        None => (name, text),
    };
    match e {
        SolveError::Exec {
            instruction,
            span,
            status,
            tail,
            ..
        } => {
            eprintln!("error: {instruction}: {status}");
            if let Some(sp) = span {
                eprint!("{}", quote_span(name, text, sp));
            }
            if !tail.is_empty() {
                eprintln!("last output:");
                for l in tail {
                    eprintln!("  > {l}");
                }
            }
        }
        SolveError::Step {
            instruction,
            span,
            message,
        } => {
            eprintln!("error: {instruction}: {message}");
            if let Some(sp) = span {
                eprint!("{}", quote_span(name, text, sp));
            }
        }
        SolveError::Cancelled => eprintln!("error: build cancelled"),
        SolveError::Internal(m) => eprintln!("error: {m}"),
    }
    crate::single_id_hint();
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
