//! `build`: a [`BuildRequest`] (flags already checked and parsed by the caller) → an image, its
//! outputs, pushes and cache exports → an [`Outcome`].
//!
//! Order: the context and the Dockerfile are read and parsed before the store is opened (a syntax
//! error changes nothing); the plan is made (base images resolved) and the build checks run before
//! any step does; then the solve, the naming of the image, the outputs, `--push`, `--cache-to`, the
//! id files and the no-op record. What is shown meanwhile is the caller's, through [`BuildUi`].

use crate::cache::{CacheExport, CacheFrom};
use crate::outputs::{self, OutputSpec};
use crate::resolver::StoreResolver;
use crate::step::Summary;
use crate::{registry::LazyRegistry, usage};
use anyhow::{bail, Context as _};
use rbuild_frontend::{NamedContext, Warning};
use rbuild_solver::{EventSink, SecretSource, SolveError, SolveOptions, Solver};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One `rbuild build`, its flags checked and parsed.
#[derive(Default)]
pub struct BuildRequest {
    /// The store (`--root`); None: the default one.
    pub root: Option<PathBuf>,
    /// A directory, a tar file, or `-` (a tar, or a lone Dockerfile, on stdin).
    pub context: PathBuf,
    /// `-f`: a path, or `-` (stdin); None: `Dockerfile` in the context.
    pub file: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub pull: bool,
    pub outputs: Vec<OutputSpec>,
    pub secrets: BTreeMap<String, SecretSource>,
    pub ssh: BTreeMap<String, PathBuf>,
    pub cache_to: Vec<CacheExport>,
    pub cache_from: Vec<CacheFrom>,
    pub push: bool,
    /// `push-by-digest=true` on an output: every push puts the manifest by its digest only.
    pub push_by_digest: bool,
    pub tags: Vec<String>,
    /// `--build-context NAME=…`: how the frontend sees each name.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--build-context NAME=DIR`: the directories (canonical).
    pub extra_contexts: Vec<(String, PathBuf)>,
    /// `--build-context NAME=URL` fetched (see [`crate::context::resolve_url`]): kept for the
    /// build, as they own the directories in `extra_contexts`.
    pub remote_contexts: Vec<crate::context::ResolvedContext>,
    pub limits: rbuild_sandbox::Limits,
    pub jobs: Option<usize>,
    pub allow_network_host: bool,
    pub allow_insecure: bool,
    pub explain: bool,
    pub quiet: bool,
    pub source_date_epoch: Option<i64>,
    /// `--check`: evaluate only (base images resolved, nothing runs, nothing is written).
    pub check: bool,
    pub iidfile: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    /// `--platform`: the platform built for (TARGETPLATFORM; None: the host's); stages of a
    /// foreign platform run their RUN steps under binfmt_misc emulation.
    pub platform: Option<rbuild_oci::Platform>,
    /// `--provenance`, `--sbom`.
    pub attest: crate::attest::AttestRequest,
    /// `--annotation manifest:K=V` (and bare `K=V`): on the pushed manifest.
    pub manifest_annotations: BTreeMap<String, String>,
}

/// What a build shows while it runs; the engine calls these in this order.
pub trait BuildUi {
    /// The plan is made: its build-check warnings (before any step runs, or fails).
    fn checked(&mut self, warnings: &[Warning]);
    /// The solve starts: where its events go.
    fn start(&mut self) -> EventSink;
    /// The solve and the exports are over (the summary when they succeeded); nothing is sent to
    /// the sink after this. Called on every path that called [`BuildUi::start`].
    fn finished(&mut self, summary: Option<Summary>);

    /// What this display shows, and prints on stdout, for a rebuild of the same request that
    /// finds every step cached (`steps`, as the solver reports them) — `(stdout, stderr)`, for
    /// the no-op front to replay (see `rbuild-noop`). None: it cannot be replayed.
    fn replay(
        &self,
        _steps: &[rbuild_noop::Step],
        _summary: &Summary,
    ) -> Option<(Vec<rbuild_noop::Part>, Vec<rbuild_noop::Part>)> {
        None
    }

    /// The plan is made: the inputs' digests (the Dockerfile's, each base image's manifest when
    /// the store has it), for the build's history record.
    fn inputs(&mut self, _inputs: &[(String, String)]) {}
}

/// How a build ended, when it was not an error of the engine's own.
pub enum Outcome {
    /// The image is built and named; its outputs are written.
    Built {
        /// The image id (config digest).
        id: String,
        /// An output wrote its archive to stdout.
        wrote_stdout: bool,
    },
    /// `--check`: the warnings, the plan's error (rendered) if any, and the rules violated as
    /// errors (`check=error=true`).
    Checked {
        warnings: Vec<Warning>,
        plan_error: Option<String>,
        error_rules: Vec<&'static str>,
    },
    /// The Dockerfile does not parse, or does not plan: the error rendered (file:line:col, caret).
    Invalid {
        warnings: Vec<Warning>,
        rendered: String,
    },
    /// `check=error=true` and some rules were violated: refused before any step ran.
    Refused {
        warnings: Vec<Warning>,
        error_rules: Vec<&'static str>,
    },
    /// A step failed (or the build was cancelled).
    Failed {
        error: SolveError,
        /// The Dockerfile's name and text, for quoting the failing instruction.
        dockerfile_name: String,
        dockerfile: String,
    },
}

/// What the outputs ask of the image, decided before anything runs: `-o type=image,name=N` names
/// the image N (as `-t N`), `push=true` on an image output pushes it (as `--push`), and a push
/// needs a name to push to.
fn settle_outputs(mut req: BuildRequest) -> anyhow::Result<BuildRequest> {
    for o in req.outputs.iter().filter(|o| o.is_image()) {
        for n in o.name.iter().flat_map(|n| n.split(';')) {
            let n = n.trim();
            if !n.is_empty() && !req.tags.iter().any(|t| t == n) {
                req.tags.push(n.to_string());
            }
        }
        req.push |= o.push;
        req.push_by_digest |= o.push_by_digest;
    }
    if req.push {
        if req.tags.is_empty() {
            return Err(usage(
                "pushing (--push or -o type=image,push=true) needs a name: -t NAME or -o type=image,name=NAME",
            ));
        }
        for t in &req.tags {
            crate::registry::parse_ref(t, "-t").map_err(|e| usage(e.to_string()))?;
        }
    }
    Ok(req)
}

/// Run one build. Errors are the engine's own (a file that cannot be read, the store, an export,
/// a push); a build that fails in the Dockerfile is an [`Outcome`].
pub fn build(req: BuildRequest, ui: &mut dyn BuildUi) -> anyhow::Result<Outcome> {
    let req = settle_outputs(req)?;
    // The context: a directory, a tar file, or `-` (a tar, or a lone Dockerfile, on stdin).
    let ctx = crate::context::resolve(&req.context)?;
    let context = ctx.dir.clone();
    let dockerfile_path = match &req.file {
        Some(f) if f.as_os_str() == "-" => PathBuf::from("-"),
        // In a tar context, -f names a file inside the archive (as docker).
        Some(f) if ctx.is_archive() && f.is_relative() => context.join(f),
        Some(f) => f.clone(),
        None => context.join("Dockerfile"),
    };
    let (dockerfile_name, dockerfile) = if let Some(text) = ctx.stdin_dockerfile.clone() {
        if req.file.is_some() {
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
        let text = rbuild_inputs::read_to_string(&dockerfile_path)
            .with_context(|| format!("reading Dockerfile {}", dockerfile_path.display()))?;
        (display_name(&dockerfile_path), text)
    };
    let dockerignore = read_dockerignore(&context, &dockerfile_path)?;
    let mut contexts = BTreeMap::new();
    contexts.insert(
        "context".to_string(),
        rbuild_inputs::canonicalize(&context)?,
    );
    contexts.extend(req.extra_contexts.iter().cloned());

    // Syntax errors are reported before the store is even opened.
    if let Err(e) = rbuild_frontend::parse(&dockerfile_name, &dockerfile) {
        return Ok(Outcome::Invalid {
            warnings: Vec::new(),
            rendered: e.render(),
        });
    }
    let plan_opts = rbuild_frontend::PlanOptions {
        dockerfile_name: dockerfile_name.clone(),
        dockerfile: dockerfile.clone(),
        dockerignore,
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        no_cache: req.no_cache,
        no_cache_filter: req.no_cache_filter.clone(),
        labels: req.labels.clone(),
        platform: req
            .platform
            .clone()
            .unwrap_or_else(rbuild_oci::Platform::host),
        build_contexts: req.named_contexts.clone(),
        named_dockerignore: named_dockerignore(&req.extra_contexts)?,
    };

    if req.check {
        // Evaluate only: base images are resolved (from the store, or the registry), nothing
        // runs and nothing is written.
        let store = Arc::new(crate::open_store(&req.root)?);
        let registry = Arc::new(LazyRegistry::default());
        let resolver = StoreResolver::with_registry(store, registry, req.pull);
        let checked = match plan(&plan_opts, &resolver) {
            Ok(c) => c,
            Err(invalid) => return Ok(*invalid),
        };
        let error_rules = checked.error_rules();
        return Ok(Outcome::Checked {
            plan_error: checked.definition.as_ref().err().map(|e| e.render()),
            warnings: checked.warnings,
            error_rules,
        });
    }

    // Every mount from here on lives in rbuild's own mount namespace and vanishes with it.
    if let Err(e) = rbuild_sandbox::enter_private_mount_namespace() {
        bail!(
            "cannot create a private mount namespace: {e}\nhint: building needs root (CAP_SYS_ADMIN for mount and namespace creation); run rbuild as root"
        );
    }
    let store = Arc::new(crate::open_store(&req.root)?);
    // What the build stands on starts from this generation of the store (see rbuild-noop).
    let _ = rbuild_inputs::read(&store.generation_path());
    let snapshotter = Arc::new(crate::snapshots::open_for_mounting(store.root())?);
    // Snapshots left by crashed builds are removed when this build first needs the snapshot
    // table; a fully cached build never opens it.
    snapshotter.cleanup_stale_on_first_use();
    let _lease = store
        .lease("build")
        .context("taking a lease on the store")?;

    let registry = Arc::new(LazyRegistry::default());
    let resolver = StoreResolver::with_registry(store.clone(), registry.clone(), req.pull);
    let checked = match plan(&plan_opts, &resolver) {
        Ok(c) => c,
        Err(invalid) => return Ok(*invalid),
    };
    let error_rules = checked.error_rules();
    let warnings = checked.warnings;
    ui.checked(&warnings);
    ui.inputs(&inputs_of(&dockerfile_name, &dockerfile, &resolver));
    let def = match checked.definition {
        Ok(d) => d,
        Err(e) => {
            return Ok(Outcome::Invalid {
                warnings,
                rendered: e.render(),
            })
        }
    };
    if !error_rules.is_empty() {
        // `check=error=true`: refused before any step runs.
        return Ok(Outcome::Refused {
            warnings,
            error_rules,
        });
    }
    // RUN steps of another platform run under binfmt_misc emulation: a platform without a usable
    // emulator is refused here, before any step runs.
    check_emulators(&def.graph)?;

    // What the provenance says about the plan, taken before the solve consumes it.
    let plan_facts = req.attest.provenance.as_ref().map(|_| {
        let target = req
            .platform
            .clone()
            .unwrap_or_else(rbuild_oci::Platform::host);
        crate::attest::plan_facts(&def.graph, &target)
    });
    let started = crate::attest::now();
    let events = ui.start();
    let needs_rootfs = req.outputs.iter().any(|o| o.needs_rootfs());
    // --cache-from: only the caches' metadata is read now; layers come when a step needs them.
    let remote_cache = crate::cache::import(&store, &registry, &req.cache_from, req.quiet);
    let opts = SolveOptions {
        contexts,
        secrets: req.secrets.clone(),
        ssh: req.ssh.clone(),
        jobs: req.jobs,
        allow_network_host: req.allow_network_host,
        allow_insecure: req.allow_insecure,
        source_date_epoch: req.source_date_epoch,
        materialize_target: needs_rootfs,
        init_exe: None,
        limits: req.limits,
        remote_cache: remote_cache.clone(),
        explain: req.explain,
    };
    let solver = Arc::new(Solver::new(
        store.clone(),
        snapshotter.clone(),
        Arc::new(crate::resolver::RegistryImages {
            store: store.clone(),
            registry: registry.clone(),
            quiet: req.quiet,
        }),
        events.clone(),
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
        Err(error) => {
            drop(events);
            ui.finished(None);
            let (dockerfile_name, dockerfile) = match source {
                Some(s) => (s.name.clone(), s.text.to_string()),
                None => (dockerfile_name, dockerfile),
            };
            return Ok(Outcome::Failed {
                error,
                dockerfile_name,
                dockerfile,
            });
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
    let wants_image = req.outputs.is_empty() || req.outputs.iter().any(|o| o.is_image());
    let exported = (|| -> anyhow::Result<()> {
        if wants_image {
            for t in &req.tags {
                store
                    .put_image(t, &record)
                    .with_context(|| format!("naming the image {t}"))?;
            }
        }
        for o in &req.outputs {
            outputs::export(&store, &snapshotter, &result, &req.tags, o, &events)?;
        }
        Ok(())
    })();
    let id = result.config_digest.to_string();
    let attestations = exported.and_then(|()| {
        attestations(
            &req,
            &store,
            &result,
            plan_facts,
            started,
            &dockerfile_name,
            &dockerfile,
        )
    });
    let exported = attestations.and_then(|att| {
        crate::registry::AfterBuild {
            store: &store,
            registry: &registry,
            remote: &remote_cache,
            result: &result,
            tags: &req.tags,
            push: req.push,
            push_by_digest: req.push_by_digest,
            attest: att.as_ref(),
            manifest_annotations: &req.manifest_annotations,
            cache_to: &req.cache_to,
            quiet: req.quiet,
            events: &events,
        }
        .run()
    });
    drop(events);
    let pushed = match exported {
        Ok(pushed) => {
            ui.finished(Some(Summary {
                id: id.clone(),
                digest: result.manifest.to_string(),
                size: record.size,
            }));
            pushed
        }
        Err(e) => {
            ui.finished(None);
            return Err(e);
        }
    };
    let wrote_stdout = req
        .outputs
        .iter()
        .any(|o| o.dest.as_deref().is_some_and(|d| d.as_os_str() == "-"));
    let mut written = Vec::new();
    if let Some(f) = &req.iidfile {
        std::fs::write(f, &id).with_context(|| format!("writing {}", f.display()))?;
        written.push((f, id.clone()));
    }
    if let Some(f) = &req.metadata_file {
        // After a push, the digest the registry has (layers compressed, perhaps an index with
        // attestations), as BuildKit reports it; else the local manifest's.
        let (digest, names) = match &pushed {
            Some((d, name)) if req.tags.is_empty() => (d.to_string(), vec![name.clone()]),
            Some((d, _)) => (d.to_string(), req.tags.clone()),
            None => (result.manifest.to_string(), req.tags.clone()),
        };
        let meta = build_metadata(&digest, &id, &names);
        std::fs::write(f, &meta).with_context(|| format!("writing {}", f.display()))?;
        written.push((f, meta));
    }
    // The front's record of this build, for a rebuild of the same command. Only a build whose
    // whole effect the front can redo: it prints and writes files; it does not push, export,
    // pull, or warn (the front would not print the warnings).
    let replayable = warnings.is_empty()
        && req.outputs.is_empty()
        && !req.push
        && !req.pull
        && !req.no_cache
        && req.no_cache_filter.is_empty()
        && req.cache_from.is_empty()
        && req.cache_to.is_empty()
        && req.named_contexts.is_empty()
        && !ctx.is_archive()
        && ctx.stdin_dockerfile.is_none()
        && dockerfile_path.as_os_str() != "-"
        && !wrote_stdout;
    if replayable {
        let cwd = std::env::current_dir().unwrap_or_default();
        let summary = Summary {
            id: id.clone(),
            digest: result.manifest.to_string(),
            size: record.size,
        };
        crate::noop_record::write(
            &store,
            &resolver,
            &result,
            &record,
            &req.tags,
            written
                .into_iter()
                .map(|(f, contents)| rbuild_noop::Written {
                    path: cwd.join(f),
                    contents,
                })
                .collect(),
            |steps| ui.replay(steps, &summary),
        );
    }
    Ok(Outcome::Built { id, wrote_stdout })
}

/// The attestations of this build, when asked for: the provenance's facts and the SBOM read from
/// the built image's layers.
fn attestations(
    req: &BuildRequest,
    store: &rbuild_store::Store,
    result: &rbuild_solver::SolveResult,
    plan_facts: Option<(
        Vec<rbuild_attest::provenance::Material>,
        serde_json::Value,
        bool,
    )>,
    started: i64,
    dockerfile_name: &str,
    dockerfile: &str,
) -> anyhow::Result<Option<crate::attest::Attestations>> {
    if !req.attest.any() {
        return Ok(None);
    }
    let finished = crate::attest::now();
    let provenance = match (&req.attest.provenance, plan_facts) {
        (Some(opts), Some((materials, definition, hermetic))) => {
            let facts = rbuild_attest::provenance::BuildFacts {
                dockerfile_path: dockerfile_name.to_string(),
                dockerfile: dockerfile.as_bytes().to_vec(),
                build_args: req.build_args.clone(),
                labels: req.labels.clone(),
                target: req.target.clone(),
                secrets: req.secrets.keys().cloned().collect(),
                ssh: req.ssh.keys().cloned().collect(),
                materials,
                build_definition: Some(definition),
                builder_platform: rbuild_oci::Platform::host().format(),
                invocation_id: format!(
                    "{}-{}-{started}",
                    &result.manifest.hex()[..12],
                    std::process::id()
                ),
                started_on: rbuild_attest::rfc3339(started),
                finished_on: rbuild_attest::rfc3339(finished),
                hermetic,
            };
            Some((opts.clone(), facts))
        }
        _ => None,
    };
    let sbom = if req.attest.sbom {
        Some(crate::attest::scan(store, &result.manifest)?)
    } else {
        None
    };
    Ok(Some(crate::attest::Attestations {
        provenance,
        sbom,
        created: rbuild_attest::rfc3339(req.source_date_epoch.unwrap_or(finished)),
    }))
}

/// The Dockerfile's digest and each base image's manifest digest the resolver answered from the
/// store (an image a registry answered is named only in the log).
fn inputs_of(name: &str, text: &str, resolver: &StoreResolver) -> Vec<(String, String)> {
    let mut out = vec![(
        name.to_string(),
        rbuild_oci::Digest::sha256_of(text.as_bytes()).to_string(),
    )];
    for a in resolver.answers() {
        match a {
            crate::resolver::Answer::Named(n, image) => out.push((n, image.manifest.to_string())),
            crate::resolver::Answer::Pinned(d) => out.push((d.to_string(), d.to_string())),
            crate::resolver::Answer::Other => {}
        }
    }
    out
}

/// Every platform the graph's RUN steps are for (other than the host's) has an emulator.
fn check_emulators(graph: &rbuild_ops::BuildGraph) -> anyhow::Result<()> {
    let mut seen: Vec<rbuild_oci::Platform> = Vec::new();
    for v in graph.graph.node_weights() {
        if let rbuild_ops::Op::Exec(e) = &v.op {
            if let Some(p) = &e.platform {
                if !seen.contains(p) {
                    rbuild_sandbox::binfmt::emulation(p).map_err(|e| anyhow::anyhow!("{e}"))?;
                    seen.push(p.clone());
                }
            }
        }
    }
    Ok(())
}

/// The plan and its checks; a syntax error or a bad check configuration, rendered, as the outcome
/// to return.
fn plan(
    opts: &rbuild_frontend::PlanOptions,
    resolver: &StoreResolver,
) -> Result<rbuild_frontend::Checked, Box<Outcome>> {
    rbuild_frontend::plan_checked(opts, resolver).map_err(|e| {
        Box::new(Outcome::Invalid {
            warnings: Vec::new(),
            rendered: e.render(),
        })
    })
}

fn image_size(store: &rbuild_store::Store, manifest: &rbuild_oci::Digest) -> u64 {
    rbuild_image::read_manifest(store, manifest)
        .map(|m| m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>())
        .unwrap_or(0)
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}
/// The `.dockerignore` of each local named context (`--build-context NAME=DIR`) that has one: its
/// rules hold for every step that reads the context, as the main context's do.
fn named_dockerignore(extra: &[(String, PathBuf)]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, dir) in extra {
        let p = dir.join(".dockerignore");
        if rbuild_inputs::is_file(&p) {
            let text = rbuild_inputs::read_to_string(&p)
                .with_context(|| format!("reading {}", p.display()))?;
            out.insert(name.clone(), text);
        }
    }
    Ok(out)
}

/// `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's `.dockerignore`.
fn read_dockerignore(context: &Path, dockerfile: &Path) -> anyhow::Result<Option<String>> {
    let mut candidates = Vec::new();
    if dockerfile.as_os_str() != "-" {
        candidates.push(PathBuf::from(format!(
            "{}.dockerignore",
            dockerfile.display()
        )));
    }
    candidates.push(context.join(".dockerignore"));
    for p in candidates {
        if rbuild_inputs::is_file(&p) {
            let text = rbuild_inputs::read_to_string(&p)
                .with_context(|| format!("reading {}", p.display()))?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// What `--metadata-file` holds after a build (BuildKit's keys).
fn build_metadata(manifest: &str, id: &str, tags: &[String]) -> String {
    let meta = serde_json::json!({
        "containerimage.digest": manifest,
        "containerimage.config.digest": id,
        "image.name": tags.join(","),
    });
    serde_json::to_string_pretty(&meta).unwrap_or_default()
}
