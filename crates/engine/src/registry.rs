//! The registry side of the engine: pushing an image (`rbuild push`, `build --push`, with the
//! compression that needs), pulling one, logging out, and [`RegistryCtx`] — one registry client
//! with its own small runtime, shared by the FROM resolver, the base-image fetcher and the registry
//! cache of a build. (`rbuild login`'s prompts live in the CLI.)
//!
//! The client is async; the callers here are synchronous (the frontend's resolver, the solver's
//! blocking tasks, the end of `build`), so [`RegistryCtx::block`] drives a future on the context's
//! own runtime. It must never be called from inside an async task.
//!
//! Pushing: the local store keeps the layers rbuild made uncompressed; a push compresses them once
//! ([`rbuild_image::ensure_compressed`], remembered in the store) and pushes a manifest that names
//! the compressed blobs. The local image is not changed.

use anyhow::{anyhow, bail, Context as _};
use rbuild_oci::{canonical_json, Compression, Descriptor, Digest, Manifest};
use rbuild_registry::{Client, Options, Progress, PushReport, Reference};
use rbuild_store::Store;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

static INSECURE: OnceLock<Vec<String>> = OnceLock::new();

/// `--insecure-registry HOST` (global): registries that may be spoken to over plain HTTP.
pub fn set_insecure_registries(hosts: Vec<String>) {
    let _ = INSECURE.set(hosts);
}

/// A registry client and the runtime that drives it.
pub struct RegistryCtx {
    pub client: Client,
    rt: tokio::runtime::Runtime,
}

impl RegistryCtx {
    pub fn new() -> anyhow::Result<Arc<RegistryCtx>> {
        let opts = client_options(&rbuild_inputs::var)?;
        let client = Client::new(opts).context("setting up the registry client")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rbuild-registry")
            .enable_all()
            .build()
            .context("starting the registry runtime")?;
        Ok(Arc::new(RegistryCtx { client, rt }))
    }

    /// Run `f` to completion on the registry runtime (blocking the calling thread).
    pub fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// Seconds (fractions allowed) a transfer may receive nothing before it is aborted and retried.
pub const ENV_STALL_TIMEOUT: &str = "RBUILD_REGISTRY_STALL_TIMEOUT";
/// Seconds after which one registry request stops being retried.
pub const ENV_DEADLINE: &str = "RBUILD_REGISTRY_DEADLINE";
/// A PEM CA bundle trusted for every registry besides the system roots.
pub const ENV_CA: &str = "RBUILD_REGISTRY_CA";
/// Docker's per-registry certificate directory (`<dir>/<host[:port]>/ca.crt`); default
/// `/etc/docker/certs.d`.
pub const ENV_CERTS_DIR: &str = "RBUILD_CERTS_DIR";

static REGISTRY_CA: OnceLock<std::path::PathBuf> = OnceLock::new();

/// `--registry-ca FILE` (global): a CA bundle trusted for every registry.
pub fn set_registry_ca(path: std::path::PathBuf) {
    let _ = REGISTRY_CA.set(path);
}

fn env_seconds(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> anyhow::Result<Option<std::time::Duration>> {
    let Some(v) = env(name) else { return Ok(None) };
    let secs: f64 = v
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 1e9)
        .ok_or_else(|| anyhow!("{name}={v:?}: expected a positive number of seconds"))?;
    Ok(Some(std::time::Duration::from_secs_f64(secs)))
}

/// The registry client's options from the global flags and the environment: `--insecure-registry`,
/// `--registry-ca` (else `$RBUILD_REGISTRY_CA`), docker's `certs.d` (a registry with a directory
/// there is spoken to over HTTPS, even on loopback, trusting the directory's `ca.crt` if any),
/// `$RBUILD_REGISTRY_STALL_TIMEOUT` and `$RBUILD_REGISTRY_DEADLINE`.
pub fn client_options(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Options> {
    let mut opts = Options {
        insecure_registries: INSECURE.get().cloned().unwrap_or_default(),
        ..Options::default()
    };
    if let Some(d) = env_seconds(env, ENV_STALL_TIMEOUT)? {
        opts.stall_timeout = d;
    }
    if let Some(d) = env_seconds(env, ENV_DEADLINE)? {
        opts.deadline = d;
        opts.stall_timeout = opts.stall_timeout.min(d);
        opts.connect_timeout = opts.connect_timeout.min(d);
    }
    opts.ca_file = REGISTRY_CA
        .get()
        .cloned()
        .or_else(|| env(ENV_CA).filter(|s| !s.is_empty()).map(Into::into));
    let certs_dir = env(ENV_CERTS_DIR)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/etc/docker/certs.d".to_string());
    if let Ok(dir) = std::fs::read_dir(&certs_dir) {
        let mut found: Vec<(String, std::path::PathBuf)> = dir
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path().join("ca.crt"))))
            .collect();
        found.sort();
        for (host, ca) in found {
            opts.force_https.push(host);
            if ca.is_file() {
                opts.extra_ca_files.push(ca);
            }
        }
    }
    Ok(opts)
}

/// A [`RegistryCtx`] made on first use: a build that never talks to a registry starts no runtime.
#[derive(Default)]
pub struct LazyRegistry(OnceLock<Arc<RegistryCtx>>);

impl LazyRegistry {
    pub fn get(&self) -> anyhow::Result<Arc<RegistryCtx>> {
        if let Some(c) = self.0.get() {
            return Ok(c.clone());
        }
        let made = RegistryCtx::new()?;
        Ok(self.0.get_or_init(|| made).clone())
    }
}

/// Parse an image reference for the registry, with the flag or argument it came from.
pub fn parse_ref(s: &str, what: &str) -> anyhow::Result<Reference> {
    Reference::parse(s).map_err(|e| anyhow!("{what} {s:?}: {e}"))
}

/// Byte progress of blob transfers on stderr: a line when a blob starts, at each quarter of a
/// large blob, and when it is done (or skipped, or mounted).
pub struct ProgressPrinter {
    verb: &'static str,
    quiet: bool,
    last_quarter: Mutex<BTreeMap<Digest, u64>>,
}

impl ProgressPrinter {
    pub fn new(verb: &'static str, quiet: bool) -> ProgressPrinter {
        ProgressPrinter {
            verb,
            quiet,
            last_quarter: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn report(&self, p: Progress) {
        if self.quiet {
            return;
        }
        let short = |d: &Digest| d.hex().chars().take(12).collect::<String>();
        let line = match p {
            Progress::Started {
                digest,
                total,
                offset,
            } => {
                if offset > 0 {
                    format!(
                        "{} {}: resuming at {offset} of {total} bytes",
                        self.verb,
                        short(&digest)
                    )
                } else {
                    format!("{} {}: {total} bytes", self.verb, short(&digest))
                }
            }
            Progress::Bytes {
                digest,
                done,
                total,
            } => {
                if total < (8 << 20) {
                    return;
                }
                let q = done * 4 / total.max(1);
                let mut m = self.last_quarter.lock().unwrap_or_else(|e| e.into_inner());
                if m.get(&digest).copied().unwrap_or(0) >= q {
                    return;
                }
                m.insert(digest.clone(), q);
                format!("{} {}: {done}/{total} bytes", self.verb, short(&digest))
            }
            Progress::Skipped { digest } => format!("{}: already exists", short(&digest)),
            Progress::Mounted { digest, from } => {
                format!("{}: mounted from {from}", short(&digest))
            }
            Progress::Done { digest, total } => {
                format!("{}: done ({total} bytes)", short(&digest))
            }
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// The platform manifest of a stored image (an index is resolved to the host's platform).
fn local_manifest(store: &Store, image: &str) -> anyhow::Result<(Digest, Manifest)> {
    let (_, rec) = store
        .find_image(image)
        .with_context(|| format!("looking up {image}"))?
        .ok_or_else(|| anyhow!("image {image} is not in the local store (see `rbuild images`)"))?;
    rbuild_image::resolve_manifest(store, &rec.manifest)
        .with_context(|| format!("reading the manifest of {image}"))
}

/// Write the manifest to push for a local manifest: every layer compressed with `compression`
/// (compressing uncompressed ones once, remembered in the store), `annotations` added. Returns the
/// new manifest's digest (stored).
pub fn push_manifest(
    store: &Store,
    manifest: &Manifest,
    compression: Compression,
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<Digest> {
    let config = rbuild_image::read_config(store, &manifest.config.digest)
        .context("reading the image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "the image's manifest has {} layers but its config lists {} diff_ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (l, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        layers.push(compressed_layer(store, l, diff_id, compression)?);
    }
    let mut m = manifest.clone();
    m.layers = layers;
    m.annotations.extend(annotations.clone());
    let bytes = canonical_json(&m);
    store
        .put_blob(&bytes)
        .context("storing the manifest to push")
}

/// `layer` as a blob compressed with `want`. A layer that is already compressed (pulled, or an
/// earlier compression) is kept as it is when its blob is not in the store: the registry may have it.
pub fn compressed_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    want: Compression,
) -> anyhow::Result<Descriptor> {
    let have = Compression::from_layer_media_type(&layer.media_type);
    if have != Some(Compression::None) && !store.has_blob(&layer.digest) {
        return Ok(layer.clone());
    }
    let want = if have == Some(Compression::None) {
        want
    } else {
        // Already compressed: push as it is (re-compressing changes the digest for nothing).
        have.unwrap_or(want)
    };
    rbuild_image::ensure_compressed(store, layer, diff_id, want, None)
        .with_context(|| format!("compressing layer {}", layer.digest))
}

/// How a push shapes what it sends.
pub struct PushShape<'a> {
    /// Added to the pushed manifest (`--cache-to type=inline`, `--annotation manifest:`).
    pub annotations: &'a BTreeMap<String, String>,
    /// Put the manifest (or index) by its digest only: no tag (`push-by-digest=true`).
    pub by_digest: bool,
    /// Push an index of the manifest and its attestations instead of the bare manifest.
    pub attest: Option<&'a crate::attest::Attestations>,
}

/// Push the local manifest `manifest` to `target`, compressing its layers first. Prints the
/// pushed digest on stdout unless `quiet_stdout`.
pub fn push_image(
    ctx: &RegistryCtx,
    store: &Store,
    manifest: &Manifest,
    target: &Reference,
    shape: &PushShape<'_>,
    quiet: bool,
    events: Option<&rbuild_solver::EventSink>,
) -> anyhow::Result<PushReport> {
    let mut digest = push_manifest(store, manifest, Compression::Gzip, shape.annotations)?;
    if let Some(a) = shape.attest {
        // The attestations are about the manifest as pushed; the index holds both.
        digest = a.index_for(store, &digest, Some(&target.familiar()))?;
    }
    let by_digest;
    let target = if shape.by_digest {
        by_digest = target.with_digest(digest.clone());
        &by_digest
    } else {
        target
    };
    remember_locations(ctx, store, target);
    let report = match events {
        // In a build: a progress step of its own, with the bytes of every blob.
        Some(events) => {
            let step = crate::step::Step::start(events, &format!("pushing {}", target.familiar()));
            let pushed = rbuild_image::read_manifest(store, &digest).ok();
            let what = |d: &Digest| match &pushed {
                Some(m) if m.config.digest == *d => "pushing config",
                Some(m) if !m.layers.iter().any(|l| l.digest == *d) => "pushing manifest",
                _ => "pushing layer",
            };
            let r = ctx
                .block(ctx.client.push(store, &digest, target, &|p| match p {
                    Progress::Started {
                        digest,
                        total,
                        offset,
                    } => step.bytes(
                        &format!("{} {digest}", what(&digest)),
                        offset,
                        Some(total),
                        false,
                    ),
                    Progress::Bytes {
                        digest,
                        done,
                        total,
                    } => step.bytes(
                        &format!("{} {digest}", what(&digest)),
                        done,
                        Some(total),
                        false,
                    ),
                    Progress::Done { digest, total } => step.bytes(
                        &format!("{} {digest}", what(&digest)),
                        total,
                        Some(total),
                        true,
                    ),
                    Progress::Skipped { digest } => step.bytes(
                        &format!("{} {digest} already exists", what(&digest)),
                        0,
                        None,
                        true,
                    ),
                    Progress::Mounted { digest, from } => step.bytes(
                        &format!("{} {digest} mounted from {from}", what(&digest)),
                        0,
                        None,
                        true,
                    ),
                }))
                .with_context(|| format!("pushing {}", target.familiar()));
            step.finish(&r);
            r?
        }
        None => {
            let printer = ProgressPrinter::new("pushing", quiet);
            ctx.block(
                ctx.client
                    .push(store, &digest, target, &|p| printer.report(p)),
            )
            .with_context(|| format!("pushing {}", target.familiar()))?
        }
    };
    if !quiet {
        eprintln!(
            "pushed {}@{}: {} bytes uploaded in {} blobs, {} already there, {} mounted",
            target.familiar(),
            report.manifest,
            report.bytes_uploaded,
            report.blobs_uploaded,
            report.blobs_skipped,
            report.blobs_mounted
        );
    }
    Ok(report)
}

/// Cross-repository mount hints that outlive a process: every image named in the store after a
/// repository of `target`'s registry (pulled from it, or pushed there under that name) is taken to
/// hold its manifest's layers there, so a push mounts them instead of uploading. A stale hint costs
/// one refused mount (the client then uploads).
fn remember_locations(ctx: &RegistryCtx, store: &Store, target: &Reference) {
    let Ok(images) = store.list_images() else {
        return;
    };
    for (name, rec) in images {
        let Ok(r) = Reference::parse(&name) else {
            continue;
        };
        if !r.same_registry(target) || r.repository() == target.repository() {
            continue;
        }
        let Ok((_, m)) = rbuild_image::resolve_manifest(store, &rec.manifest) else {
            continue;
        };
        for l in &m.layers {
            if Compression::from_layer_media_type(&l.media_type) != Some(Compression::None) {
                ctx.client.known_locations().add(&l.digest, &r);
            } else if let Ok(Some((gz, _))) = store.get_layer_variant(&l.digest, Compression::Gzip)
            {
                // A layer built here: pushed under that name as its (remembered) gzip form.
                ctx.client.known_locations().add(&gz, &r);
            }
        }
    }
}

/// Fetch `r` into the store (manifest, config, missing layers) and name it. Returns the record
/// stored under the name.
pub fn pull_into(
    ctx: &RegistryCtx,
    store: &Store,
    r: &Reference,
    quiet: bool,
) -> anyhow::Result<rbuild_store::ImageRecord> {
    let printer = ProgressPrinter::new("pulling", quiet);
    let pulled = ctx
        .block(
            ctx.client
                .pull(store, r, &rbuild_oci::Platform::host(), &|p| {
                    printer.report(p)
                }),
        )
        .with_context(|| format!("pulling {}", r.familiar()))?;
    let rec = rbuild_image::image_record(store, &pulled.manifest)
        .with_context(|| format!("reading the pulled image {}", r.familiar()))?;
    store
        .put_image(&r.familiar(), &rec)
        .with_context(|| format!("naming the image {}", r.familiar()))?;
    if !quiet {
        eprintln!(
            "pulled {} ({} bytes downloaded)",
            pulled.resolved.familiar(),
            pulled.bytes_downloaded
        );
    }
    Ok(rec)
}

/// `rbuild push IMAGE [DEST]`, checked before anything is shown: the destination parsed, the
/// image's local manifest read, a registry client made.
pub struct Push {
    target: Reference,
    /// The image's local (platform) manifest.
    pub manifest: Manifest,
    ctx: Arc<RegistryCtx>,
}

impl Push {
    pub fn prepare(store: &Store, image: &str, dest: Option<&str>) -> anyhow::Result<Push> {
        let target = parse_ref(dest.unwrap_or(image), "push destination")?;
        let (_, manifest) = local_manifest(store, image)?;
        let ctx = RegistryCtx::new()?;
        Ok(Push {
            target,
            manifest,
            ctx,
        })
    }

    /// Push it. Progress goes to `events` when given (a step of its own), else to stderr lines.
    pub fn run(
        &self,
        store: &Store,
        quiet: bool,
        events: Option<&rbuild_solver::EventSink>,
    ) -> anyhow::Result<PushReport> {
        push_image(
            &self.ctx,
            store,
            &self.manifest,
            &self.target,
            &PushShape {
                annotations: &BTreeMap::new(),
                by_digest: false,
                attest: None,
            },
            quiet,
            events,
        )
    }
}

/// `rbuild pull IMAGE`: the record stored under the image's name.
pub fn pull(store: &Store, image: &str, quiet: bool) -> anyhow::Result<rbuild_store::ImageRecord> {
    let r = parse_ref(image, "image")?;
    let ctx = RegistryCtx::new()?;
    pull_into(&ctx, store, &r, quiet)
}

/// `rbuild logout [HOST]`: `erase` in the credential helper, if one is configured, and the
/// `config.json` entry. True when there was something to remove.
pub fn logout(host: &str) -> anyhow::Result<bool> {
    let ctx = RegistryCtx::new()?;
    ctx.block(ctx.client.logout(host))
        .with_context(|| format!("logging out of {host}"))
}

/// What `build` does after the image is made: `--push` to every `-t` (with the inline cache when
/// `--cache-to type=inline` asks for it), then every other `--cache-to`.
pub struct AfterBuild<'a> {
    pub store: &'a Store,
    pub registry: &'a Arc<LazyRegistry>,
    pub remote: &'a rbuild_solver::RemoteCaches,
    pub result: &'a rbuild_solver::SolveResult,
    pub tags: &'a [String],
    pub push: bool,
    /// `push-by-digest=true`: put the manifest (or index) by digest, no tag.
    pub push_by_digest: bool,
    /// `--provenance` / `--sbom`: pushes send an index with the attestations.
    pub attest: Option<&'a crate::attest::Attestations>,
    /// `--annotation manifest:K=V`: on every pushed manifest.
    pub manifest_annotations: &'a BTreeMap<String, String>,
    pub cache_to: &'a [crate::cache::CacheExport],
    pub quiet: bool,
    /// Where a push reports its progress (a step after the build's).
    pub events: &'a rbuild_solver::EventSink,
}

impl AfterBuild<'_> {
    /// Push (`--push`, `type=registry` outputs), then export the cache. Returns the digest and
    /// name of the last push (what `--metadata-file` reports), if anything was pushed.
    pub fn run(&self) -> anyhow::Result<Option<(Digest, String)>> {
        let inline = self
            .cache_to
            .iter()
            .any(|c| c.to == crate::cache::CacheTo::Inline);
        let mut targets: Vec<(Reference, bool)> = Vec::new();
        if self.push {
            for t in self.tags {
                targets.push((parse_ref(t, "-t")?, self.push_by_digest));
            }
        }
        let mut last = None;
        if !targets.is_empty() {
            let manifest = rbuild_image::read_manifest(self.store, &self.result.manifest)
                .context("reading the built image's manifest")?;
            let mut annotations = self.manifest_annotations.clone();
            if inline {
                let (k, v) = crate::cache::inline_annotation(self.store, &self.result.cache)?;
                annotations.insert(k, v);
            }
            let ctx = self.registry.get()?;
            for (target, by_digest) in &targets {
                let report = push_image(
                    &ctx,
                    self.store,
                    &manifest,
                    target,
                    &PushShape {
                        annotations: &annotations,
                        by_digest: *by_digest,
                        attest: self.attest,
                    },
                    self.quiet,
                    Some(self.events),
                )?;
                last = Some((report.manifest, target.name()));
            }
        } else if inline {
            eprintln!("warning: --cache-to type=inline travels inside a pushed image: add --push");
        }
        if self.attest.is_some() && targets.is_empty() {
            eprintln!("warning: --provenance/--sbom are attached to pushed images only (--push, -o type=registry); this build pushes nothing");
        }
        crate::cache::export(
            self.store,
            self.registry,
            self.remote,
            &self.result.cache,
            self.cache_to,
            self.quiet,
        )?;
        Ok(last)
    }
}
