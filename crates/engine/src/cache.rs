//! Build-cache export and import: `--cache-to` and `--cache-from`.
//!
//! The cache is the solver's records for content keys ([`rbuild_solver::ExportRecord`]): the same
//! step has the same key on any machine, so a record made here is a hit anywhere. Its wire form is
//! the registry crate's [`CacheConfig`]: `records` maps a key (hex) to the descriptors of the
//! step's layer chain (compressed, as pushed), and `extra["rbuild.records"]` adds per key what the
//! solver needs to reuse it — the chain's diff_ids, whether the last layer is the step's own, the
//! time the layer was made (so the image id is the same), the explanation of its inputs, and which
//! layers the exporter stored uncompressed (layers a build made). An importer names those
//! uncompressed as well and decompresses the cache's blob once when it fetches one, so an image
//! built from the cache is identical to the exporter's — manifest digest included, not only the
//! config (image id).
//!
//! Where it lives:
//! - `type=registry,ref=R`: an OCI artifact (manifest with `artifactType` [`CACHE_ARTIFACT_TYPE`],
//!   the config above, the layers) pushed to R;
//! - `type=local,dest=DIR` / `src=DIR`: the same artifact in an OCI image layout directory;
//! - `type=inline`: the config as the manifest annotation [`INLINE_ANNOTATION`] of the pushed image
//!   (min mode: the image's own layers), so `--cache-from IMAGE` works;
//! - `type=s3,bucket=,region=,…`: BuildKit's s3 layout (rbuild-s3): every blob at
//!   `<prefix>blobs/<digest>` (uploaded only when the bucket lacks it), the config above at
//!   `<prefix>manifests/<name>` for each `name=a;b`. Several stores ("CI machines") share a bucket.
//!
//! `ignore-error=true` on any `--cache-to` turns a failed export into a warning; several
//! `--cache-to` and `--cache-from` may be given.
//!
//! `cache-mounts=true` (registry and local) also exports every `RUN --mount=type=cache` directory of
//! the store as a layer (config `extra["rbuild.cache-mounts"]`); an import restores those the
//! importing store lacks, with the layer applier, before the build starts.
//!
//! `mode=min` exports the final image's own steps; `mode=max` every executed or cached step of every
//! stage. Import is lazy ([`rbuild_solver::remote`]): only the artifact's config is read at the
//! start; a layer is fetched when a later uncached step or the image needs it.

use crate::registry::{compressed_layer, parse_ref, LazyRegistry, ProgressPrinter};
use anyhow::{anyhow, bail, Context as _};
use rbuild_oci::{canonical_json, Compression, Descriptor, Digest, Manifest};
use rbuild_registry::{CacheConfig, Reference, CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE};
use rbuild_solver::record::{Explain, LayerInfo};
use rbuild_solver::{ExportRecord, RemoteCache, RemoteCaches, RemoteRecord};
use rbuild_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Manifest annotation carrying an inline cache ([`CacheConfig`] as JSON).
pub const INLINE_ANNOTATION: &str = "io.rbuild.cache.v1";
/// Key of the rbuild-specific part of [`CacheConfig::extra`].
const EXTRA_KEY: &str = "rbuild.records";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Min,
    Max,
}

/// One `--cache-to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheTo {
    Registry {
        reference: String,
        mode: Mode,
        compression: Compression,
        /// `cache-mounts=true`: export the `RUN --mount=type=cache` directories too.
        cache_mounts: bool,
    },
    Local {
        dest: PathBuf,
        mode: Mode,
        compression: Compression,
        cache_mounts: bool,
    },
    Inline,
    S3 {
        /// BuildKit's s3 options (bucket, region, endpoint_url, …), checked by rbuild-s3.
        attrs: BTreeMap<String, String>,
        mode: Mode,
        compression: Compression,
        cache_mounts: bool,
    },
}

/// One `--cache-to` with its `ignore-error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheExport {
    pub to: CacheTo,
    /// `ignore-error=true`: a failed export is a warning and the build succeeds.
    pub ignore_error: bool,
}

/// One `--cache-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheFrom {
    Registry { reference: String },
    Local { src: PathBuf },
    S3 { attrs: BTreeMap<String, String> },
}

/// The s3 options of a cache spec: the keys rbuild-s3 knows, checked now (a bad option or missing
/// credentials is a usage error before the build starts).
fn s3_attrs(
    kv: &BTreeMap<String, String>,
    flag: &str,
    spec: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let attrs: BTreeMap<String, String> = kv
        .iter()
        .filter(|(k, _)| rbuild_s3::KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    rbuild_s3::S3Options::parse(&attrs).map_err(|e| anyhow!("{flag} {spec}: {e}"))?;
    Ok(attrs)
}

fn split_spec(spec: &str, flag: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag} {spec}: expected KEY=VALUE pairs, got {part:?}"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn unknown_keys(
    kv: &BTreeMap<String, String>,
    allowed: &[&str],
    flag: &str,
    spec: &str,
) -> anyhow::Result<()> {
    if let Some(k) = kv.keys().find(|k| !allowed.contains(&k.as_str())) {
        bail!(
            "{flag} {spec}: unknown key {k} (known: {})",
            allowed.join(", ")
        );
    }
    Ok(())
}

impl CacheExport {
    /// Parse a `--cache-to` spec, `ignore-error` included.
    pub fn parse(spec: &str) -> anyhow::Result<CacheExport> {
        let flag = "--cache-to";
        let mut kv = split_spec(spec, flag)?;
        let ignore_error = match kv.remove("ignore-error").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("{flag} {spec}: ignore-error={v} (true or false)"),
        };
        let rest: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(CacheExport {
            to: CacheTo::parse_kv(kv, &rest.join(","), spec)?,
            ignore_error,
        })
    }
}

impl CacheTo {
    pub fn parse(spec: &str) -> anyhow::Result<CacheTo> {
        let kv = split_spec(spec, "--cache-to")?;
        CacheTo::parse_kv(kv, spec, spec)
    }

    fn parse_kv(kv: BTreeMap<String, String>, _rest: &str, spec: &str) -> anyhow::Result<CacheTo> {
        let flag = "--cache-to";
        let mode = match kv.get("mode").map(String::as_str) {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(m) => bail!("{flag} {spec}: mode={m} (min or max)"),
        };
        let compression = match kv.get("compression").map(String::as_str) {
            None | Some("gzip") => Compression::Gzip,
            Some("zstd") => Compression::Zstd,
            Some(c) => bail!("{flag} {spec}: compression={c} (gzip or zstd)"),
        };
        let cache_mounts = match kv.get("cache-mounts").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("{flag} {spec}: cache-mounts={v} (true or false)"),
        };
        let common = ["type", "mode", "compression", "cache-mounts"];
        match kv.get("type").map(String::as_str) {
            Some("registry") => {
                unknown_keys(&kv, &[&common[..], &["ref"]].concat(), flag, spec)?;
                let reference = kv
                    .get("ref")
                    .ok_or_else(|| anyhow!("{flag} {spec}: type=registry needs ref=REFERENCE"))?;
                parse_ref(reference, flag)?;
                Ok(CacheTo::Registry {
                    reference: reference.clone(),
                    mode,
                    compression,
                    cache_mounts,
                })
            }
            Some("local") => {
                unknown_keys(&kv, &[&common[..], &["dest"]].concat(), flag, spec)?;
                let dest = kv
                    .get("dest")
                    .ok_or_else(|| anyhow!("{flag} {spec}: type=local needs dest=DIR"))?;
                Ok(CacheTo::Local {
                    dest: PathBuf::from(dest),
                    mode,
                    compression,
                    cache_mounts,
                })
            }
            Some("inline") => {
                unknown_keys(&kv, &common, flag, spec)?;
                if mode == Mode::Max {
                    bail!("{flag} {spec}: an inline cache holds the image's own layers only (mode=min)");
                }
                if cache_mounts {
                    bail!("{flag} {spec}: an inline cache cannot carry cache mounts (use type=registry or type=local)");
                }
                Ok(CacheTo::Inline)
            }
            Some("s3") => {
                let known: Vec<&str> = [&common[..], rbuild_s3::KEYS].concat();
                unknown_keys(&kv, &known, flag, spec)?;
                Ok(CacheTo::S3 {
                    attrs: s3_attrs(&kv, flag, spec)?,
                    mode,
                    compression,
                    cache_mounts,
                })
            }
            Some(t) => bail!("{flag} {spec}: unknown type={t} (registry, local, inline, s3)"),
            None => bail!("{flag} {spec}: missing type= (registry, local, inline, s3)"),
        }
    }
}

impl CacheFrom {
    pub fn parse(spec: &str) -> anyhow::Result<CacheFrom> {
        let flag = "--cache-from";
        if !spec.contains('=') {
            // A bare image reference, as docker accepts.
            parse_ref(spec, flag)?;
            return Ok(CacheFrom::Registry {
                reference: spec.to_string(),
            });
        }
        let kv = split_spec(spec, flag)?;
        match kv.get("type").map(String::as_str) {
            Some("registry") => {
                unknown_keys(&kv, &["type", "ref"], flag, spec)?;
                let reference = kv
                    .get("ref")
                    .ok_or_else(|| anyhow!("{flag} {spec}: type=registry needs ref=REFERENCE"))?;
                parse_ref(reference, flag)?;
                Ok(CacheFrom::Registry {
                    reference: reference.clone(),
                })
            }
            Some("local") => {
                unknown_keys(&kv, &["type", "src"], flag, spec)?;
                let src = kv
                    .get("src")
                    .ok_or_else(|| anyhow!("{flag} {spec}: type=local needs src=DIR"))?;
                Ok(CacheFrom::Local {
                    src: PathBuf::from(src),
                })
            }
            Some("s3") => {
                let known: Vec<&str> = [&["type"][..], rbuild_s3::KEYS].concat();
                unknown_keys(&kv, &known, flag, spec)?;
                Ok(CacheFrom::S3 {
                    attrs: s3_attrs(&kv, flag, spec)?,
                })
            }
            Some(t) => bail!("{flag} {spec}: unknown type={t} (registry, local, s3)"),
            None => bail!("{flag} {spec}: missing type= (registry, local, s3)"),
        }
    }
}

/// What rbuild adds per key to a [`CacheConfig`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RecordMeta {
    diff_ids: Vec<Digest>,
    /// Whether the last layer of the chain is the step's own.
    has_layer: bool,
    created: i64,
    #[serde(default)]
    explain: Explain,
    /// Per chain layer: its uncompressed size when the exporting machine stored it uncompressed
    /// (a layer a build made), else null (a pulled base layer). An importer names such a layer
    /// uncompressed too — fetching it means decompressing the cache's blob once — so that its
    /// image's manifest, not only its config, is identical to the exporter's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    local_sizes: Vec<Option<u64>>,
}

/// Records parsed out of a [`CacheConfig`], by key.
#[derive(Default)]
struct Index {
    records: HashMap<Digest, RemoteRecord>,
    /// Every blob the cache references.
    blobs: HashMap<Digest, Descriptor>,
    /// Layers named uncompressed (by diff_id) that the cache holds compressed: diff_id -> blob.
    wire: HashMap<Digest, Descriptor>,
    /// Exported cache mounts (`cache-mounts=true`).
    mounts: BTreeMap<String, MountBlob>,
}

impl Index {
    /// [`RemoteCache::wire_layer`].
    fn wire_layer(&self, blob: &Digest) -> Option<LayerInfo> {
        self.wire.get(blob).map(|d| LayerInfo {
            diff_id: blob.clone(),
            blob: d.digest.clone(),
            media_type: d.media_type.clone(),
            size: d.size,
        })
    }

    /// [`RemoteCache::fetch`], with `get` putting a blob of the cache into the store: a layer
    /// named uncompressed is fetched compressed and decompressed once (checked against its
    /// diff_id); the compressed blob stays, remembered as the layer's variant, for pushes.
    fn fetch(
        &self,
        store: &Store,
        layer: &LayerInfo,
        get: &dyn Fn(&Descriptor) -> Result<(), String>,
    ) -> Result<bool, String> {
        if let Some(wire) = self.wire.get(&layer.blob) {
            if !store.has_blob(&wire.digest) {
                get(wire)?;
            }
            let d = rbuild_image::ensure_compressed(
                store,
                wire,
                &layer.diff_id,
                Compression::None,
                None,
            )
            .map_err(|e| format!("decompressing layer {}: {e}", wire.digest))?;
            if d.digest != layer.blob || d.size != layer.size {
                return Err(format!(
                    "layer {} decompresses to {} ({} bytes), the cache says {} ({} bytes)",
                    wire.digest, d.digest, d.size, layer.blob, layer.size
                ));
            }
            if let Some(c) = Compression::from_layer_media_type(&wire.media_type) {
                let _ = store.put_layer_variant(&layer.diff_id, c, &wire.digest, wire.size);
            }
            return Ok(true);
        }
        let Some(desc) = self.blobs.get(&layer.blob) else {
            return Ok(false);
        };
        get(desc)?;
        Ok(true)
    }
}

fn index_of(cfg: &CacheConfig) -> Index {
    let mut idx = Index {
        mounts: mounts_of(cfg),
        ..Index::default()
    };
    let metas: BTreeMap<String, RecordMeta> = cfg
        .extra
        .get(EXTRA_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    for (hex, descs) in &cfg.records {
        let (Some(meta), Ok(key)) = (metas.get(hex), format!("sha256:{hex}").parse::<Digest>())
        else {
            continue;
        };
        if meta.diff_ids.len() != descs.len() || (meta.has_layer && descs.is_empty()) {
            continue;
        }
        let local_sizes = if meta.local_sizes.len() == descs.len() {
            meta.local_sizes.clone()
        } else {
            vec![None; descs.len()]
        };
        let chain: Vec<LayerInfo> = descs
            .iter()
            .zip(&meta.diff_ids)
            .zip(local_sizes)
            .map(|((d, diff_id), local)| {
                let compressed = !matches!(
                    Compression::from_layer_media_type(&d.media_type),
                    Some(Compression::None)
                );
                match local {
                    Some(size) if compressed && &d.digest != diff_id => {
                        idx.wire.insert(diff_id.clone(), d.clone());
                        LayerInfo {
                            diff_id: diff_id.clone(),
                            blob: diff_id.clone(),
                            media_type: Compression::None.oci_layer_media_type().to_string(),
                            size,
                        }
                    }
                    _ => LayerInfo {
                        diff_id: diff_id.clone(),
                        blob: d.digest.clone(),
                        media_type: d.media_type.clone(),
                        size: d.size,
                    },
                }
            })
            .collect();
        for d in descs {
            idx.blobs.insert(d.digest.clone(), d.clone());
        }
        let layer = if meta.has_layer {
            chain.last().cloned()
        } else {
            None
        };
        idx.records.insert(
            key,
            RemoteRecord {
                layer,
                chain,
                created: meta.created,
                explain: meta.explain.clone(),
            },
        );
    }
    idx
}

/// The cache config for `records` (filtered by `mode`), with every layer compressed as asked
/// (layers already compressed stay as they are).
pub fn cache_config(
    store: &Store,
    remote: &RemoteCaches,
    records: &[ExportRecord],
    mode: Mode,
    compression: Compression,
) -> anyhow::Result<CacheConfig> {
    let mut cfg = CacheConfig::new();
    let mut metas = BTreeMap::new();
    let mut done: HashMap<Digest, Descriptor> = HashMap::new();
    for r in records {
        if mode == Mode::Min && !r.in_image {
            continue;
        }
        let mut descs = Vec::with_capacity(r.record.chain.len());
        for l in &r.record.chain {
            let d = match done.get(&l.blob) {
                Some(d) => d.clone(),
                None => {
                    let local = Descriptor::new(l.media_type.clone(), l.blob.clone(), l.size);
                    // Named uncompressed but never fetched: export the imported cache's
                    // compressed blob (the target may mount it, or it is fetched then).
                    let wire = (!store.has_blob(&l.blob))
                        .then(|| remote.wire_layer(&l.blob))
                        .flatten()
                        .filter(|_| {
                            store
                                .get_layer_variant(&l.diff_id, compression)
                                .ok()
                                .flatten()
                                .is_none()
                        });
                    let d = match wire {
                        Some(w) => Descriptor::new(w.media_type, w.blob, w.size),
                        None => compressed_layer(store, &local, &l.diff_id, compression)?,
                    };
                    done.insert(l.blob.clone(), d.clone());
                    d
                }
            };
            descs.push(d);
        }
        let hex = r.key.hex().to_string();
        cfg.records.insert(hex.clone(), descs);
        metas.insert(
            hex,
            RecordMeta {
                diff_ids: r.record.chain.iter().map(|l| l.diff_id.clone()).collect(),
                has_layer: r.record.layer.is_some(),
                created: r.record.created,
                explain: r.record.explain.clone(),
                local_sizes: r
                    .record
                    .chain
                    .iter()
                    .map(|l| (l.blob == l.diff_id).then_some(l.size))
                    .collect(),
            },
        );
    }
    cfg.extra
        .insert(EXTRA_KEY.to_string(), serde_json::to_value(&metas)?);
    Ok(cfg)
}

/// What a cache source provides: its records ([`Index`]) and a way to put one of its blobs into the
/// store. [`Indexed`] turns any of them into the solver's [`RemoteCache`].
trait Source: Send + Sync {
    fn describe(&self) -> String;
    fn index(&self) -> &Index;
    fn get_blob(&self, store: &Store, desc: &Descriptor) -> Result<(), String>;
}

/// A [`Source`] as the solver's [`RemoteCache`]: lookups in its index, fetches through it.
struct Indexed<S>(S);

impl<S: Source> RemoteCache for Indexed<S> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn lookup(&self, key: &Digest) -> Option<RemoteRecord> {
        self.0.index().records.get(key).cloned()
    }
    fn fetch(&self, store: &Store, layer: &LayerInfo) -> Result<bool, String> {
        self.0
            .index()
            .fetch(store, layer, &|desc| self.0.get_blob(store, desc))
    }
    fn wire_layer(&self, blob: &Digest) -> Option<LayerInfo> {
        self.0.index().wire_layer(blob)
    }
}

/// A loaded source, its cache mounts restored, ready for the solver.
fn ready<S: Source + 'static>(store: &Store, c: S) -> Arc<dyn RemoteCache> {
    restore_mounts(store, &c.index().mounts, &|d| c.get_blob(store, d));
    Arc::new(Indexed(c))
}

/// A cache imported from a registry (an rbuild cache artifact, or an image with an inline cache).
struct RegistryCache {
    reference: Reference,
    registry: Arc<LazyRegistry>,
    index: Index,
    quiet: bool,
}

impl RegistryCache {
    fn get_blob(&self, store: &Store, desc: &Descriptor) -> Result<(), String> {
        let ctx = self.registry.get().map_err(|e| format!("{e:#}"))?;
        let printer = ProgressPrinter::new("fetching cache", self.quiet);
        ctx.block(
            ctx.client
                .fetch_blob(store, &self.reference, desc, &|p| printer.report(p)),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

impl Source for RegistryCache {
    fn describe(&self) -> String {
        format!("registry {}", self.reference.familiar())
    }
    fn index(&self) -> &Index {
        &self.index
    }
    fn get_blob(&self, store: &Store, desc: &Descriptor) -> Result<(), String> {
        RegistryCache::get_blob(self, store, desc)
    }
}

/// A cache imported from an OCI layout directory.
struct LocalCache {
    dir: PathBuf,
    index: Index,
}

impl LocalCache {
    fn get_blob(&self, store: &Store, desc: &Descriptor) -> Result<(), String> {
        rbuild_image::layout::copy_blob_in(store, &self.dir, desc).map_err(|e| e.to_string())
    }
}

impl Source for LocalCache {
    fn describe(&self) -> String {
        format!("local {}", self.dir.display())
    }
    fn index(&self) -> &Index {
        &self.index
    }
    fn get_blob(&self, store: &Store, desc: &Descriptor) -> Result<(), String> {
        LocalCache::get_blob(self, store, desc)
    }
}

/// A cache imported from an S3 bucket (BuildKit's s3 layout).
struct S3Cache {
    client: rbuild_s3::Client,
    index: Index,
}

impl S3Cache {
    fn get_blob(&self, store: &Store, desc: &Descriptor) -> Result<(), String> {
        let key = self.client.options().blob_key(&desc.digest.to_string());
        let mut w = store.ingest().map_err(|e| e.to_string())?;
        match self.client.get_to(&key, &mut w, desc.size) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "{} is not in {}",
                    key,
                    self.client.options().describe()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        w.commit(Some((&desc.digest, desc.size)))
            .map(|_| ())
            .map_err(|e| format!("{key}: {e}"))
    }
}

impl Source for S3Cache {
    fn describe(&self) -> String {
        self.client.options().describe()
    }
    fn index(&self) -> &Index {
        &self.index
    }
    fn get_blob(&self, store: &Store, desc: &Descriptor) -> Result<(), String> {
        S3Cache::get_blob(self, store, desc)
    }
}

/// Read the cache config of the first `name` the bucket has.
fn load_s3(attrs: &BTreeMap<String, String>) -> anyhow::Result<S3Cache> {
    let client = rbuild_s3::Client::new(rbuild_s3::S3Options::parse(attrs)?)?;
    let opts = client.options().clone();
    for name in &opts.names {
        let key = opts.manifest_key(name);
        if let Some(bytes) = client.get_bytes(&key, rbuild_oci::MAX_CONFIG_SIZE)? {
            let cfg: CacheConfig = serde_json::from_slice(&bytes).with_context(|| {
                format!("parsing the cache config {key} of {}", opts.describe())
            })?;
            return Ok(S3Cache {
                index: index_of(&cfg),
                client,
            });
        }
    }
    bail!(
        "no cache named {} in {}",
        opts.names.join(";"),
        opts.describe()
    )
}

/// Upload `cfg`'s blobs the bucket lacks (in parallel, `upload_parallelism` at a time), then the
/// config under every name. Returns (blobs uploaded, blobs already there, requests made).
fn export_s3(
    store: &Store,
    attrs: &BTreeMap<String, String>,
    cfg: &CacheConfig,
) -> anyhow::Result<(usize, usize, u64)> {
    let client = rbuild_s3::Client::new(rbuild_s3::S3Options::parse(attrs)?)?;
    let opts = client.options().clone();
    let mut blobs: Vec<Descriptor> = cfg.records.values().flatten().cloned().collect();
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let uploaded = std::sync::atomic::AtomicUsize::new(0);
    let first_err: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..opts.upload_parallelism.min(blobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(d) = blobs.get(i) else { break };
                if first_err.lock().unwrap().is_some() {
                    break;
                }
                let key = opts.blob_key(&d.digest.to_string());
                let res = (|| -> anyhow::Result<()> {
                    if client.head(&key)? == Some(d.size) {
                        return Ok(());
                    }
                    let path = store.blob_path(&d.digest);
                    client.put_file(&key, &path, Some(d.digest.hex()))?;
                    uploaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                })();
                if let Err(e) = res {
                    first_err.lock().unwrap().get_or_insert(e);
                    break;
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap() {
        return Err(e);
    }
    let bytes = canonical_json(cfg);
    for name in &opts.names {
        client.put_bytes(&opts.manifest_key(name), bytes.clone())?;
    }
    let up = uploaded.into_inner();
    Ok((up, blobs.len() - up, client.requests()))
}

fn load_local(src: &Path) -> anyhow::Result<LocalCache> {
    use rbuild_image::layout;
    let index = layout::read_index(src)?;
    let desc = index
        .manifests
        .iter()
        .find(|d| d.artifact_type.as_deref() == Some(CACHE_ARTIFACT_TYPE))
        .or_else(|| index.manifests.first())
        .ok_or_else(|| anyhow!("{}/index.json lists no manifest", src.display()))?;
    let mbytes = layout::read_document(src, &desc.digest, rbuild_oci::MAX_MANIFEST_SIZE)?;
    let m: Manifest = serde_json::from_slice(&mbytes)
        .with_context(|| format!("parsing manifest {}", desc.digest))?;
    let cbytes = layout::read_document(src, &m.config.digest, rbuild_oci::MAX_CONFIG_SIZE)?;
    let cfg: CacheConfig = serde_json::from_slice(&cbytes)
        .with_context(|| format!("parsing cache config {}", m.config.digest))?;
    Ok(LocalCache {
        dir: src.to_path_buf(),
        index: index_of(&cfg),
    })
}

fn load_registry(
    store: &Store,
    registry: &Arc<LazyRegistry>,
    reference: &str,
    quiet: bool,
) -> anyhow::Result<RegistryCache> {
    let r = parse_ref(reference, "--cache-from")?;
    let ctx = registry.get()?;
    let art = ctx.block(ctx.client.pull_artifact(store, &r))?;
    let cfg = if art.manifest.artifact_type.as_deref() == Some(CACHE_ARTIFACT_TYPE)
        || art.manifest.config.media_type == CACHE_CONFIG_MEDIA_TYPE
    {
        art.cache_config()?
    } else if let Some(inline) = art.manifest.annotations.get(INLINE_ANNOTATION) {
        serde_json::from_str(inline).context("parsing the inline cache annotation")?
    } else {
        bail!("{reference} is neither an rbuild cache nor an image with an inline cache");
    };
    Ok(RegistryCache {
        reference: r,
        registry: registry.clone(),
        index: index_of(&cfg),
        quiet,
    })
}

/// Load every `--cache-from` (its metadata only). A source that cannot be read is a warning, not
/// an error: the build goes on without it, as BuildKit does.
pub fn import(
    store: &Store,
    registry: &Arc<LazyRegistry>,
    from: &[CacheFrom],
    quiet: bool,
) -> RemoteCaches {
    let mut out: Vec<Arc<dyn RemoteCache>> = Vec::new();
    for f in from {
        let loaded: anyhow::Result<Arc<dyn RemoteCache>> = match f {
            CacheFrom::Registry { reference } => {
                load_registry(store, registry, reference, quiet).map(|c| ready(store, c))
            }
            CacheFrom::Local { src } => load_local(src).map(|c| ready(store, c)),
            CacheFrom::S3 { attrs } => load_s3(attrs).map(|c| ready(store, c)),
        };
        match loaded {
            Ok(c) => out.push(c),
            Err(e) => eprintln!("warning: --cache-from {f:?}: not imported: {e:#}"),
        }
    }
    RemoteCaches(out)
}

/// Write every `--cache-to` but inline (the caller puts that one into the pushed image). With
/// `ignore-error=true` a failed export is a warning; otherwise the first failure is the error.
pub fn export(
    store: &Store,
    registry: &Arc<LazyRegistry>,
    remote: &RemoteCaches,
    records: &[ExportRecord],
    to: &[CacheExport],
    quiet: bool,
) -> anyhow::Result<()> {
    for t in to {
        match export_one(store, registry, remote, records, &t.to, quiet) {
            Ok(()) => {}
            Err(e) if t.ignore_error => {
                eprintln!("warning: cache export failed (ignore-error=true): {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn export_one(
    store: &Store,
    registry: &Arc<LazyRegistry>,
    remote: &RemoteCaches,
    records: &[ExportRecord],
    t: &CacheTo,
    quiet: bool,
) -> anyhow::Result<()> {
    {
        match t {
            CacheTo::Registry {
                reference,
                mode,
                compression,
                cache_mounts,
            } => {
                let mut cfg = cache_config(store, remote, records, *mode, *compression)?;
                if *cache_mounts {
                    add_cache_mounts(store, &mut cfg, *compression)?;
                }
                let r = parse_ref(reference, "--cache-to")?;
                let ctx = registry.get()?;
                let printer = ProgressPrinter::new("exporting cache", quiet);
                let mut res = ctx.block(
                    ctx.client
                        .push_cache(store, &r, &cfg, &|p| printer.report(p)),
                );
                if let Err(rbuild_registry::Error::BlobUnavailable { .. }) = &res {
                    // A layer named by an imported cache that the target registry cannot mount:
                    // fetch it, then push again.
                    remote
                        .ensure_blobs(store, &layer_infos(&cfg))
                        .map_err(|e| anyhow!("exporting the cache to {reference}: {e}"))?;
                    res = ctx.block(
                        ctx.client
                            .push_cache(store, &r, &cfg, &|p| printer.report(p)),
                    );
                }
                let report = res.with_context(|| format!("exporting the cache to {reference}"))?;
                if !quiet {
                    eprintln!(
                        "exported cache {} ({} records) to {}@{}",
                        if *mode == Mode::Max {
                            "mode=max"
                        } else {
                            "mode=min"
                        },
                        cfg.records.len(),
                        r.familiar(),
                        report.manifest
                    );
                }
            }
            CacheTo::Local {
                dest,
                mode,
                compression,
                cache_mounts,
            } => {
                let mut cfg = cache_config(store, remote, records, *mode, *compression)?;
                if *cache_mounts {
                    add_cache_mounts(store, &mut cfg, *compression)?;
                }
                remote
                    .ensure_blobs(store, &layer_infos(&cfg))
                    .map_err(|e| anyhow!("exporting the cache to {}: {e}", dest.display()))?;
                write_layout(store, dest, &cfg)
                    .with_context(|| format!("exporting the cache to {}", dest.display()))?;
            }
            CacheTo::S3 {
                attrs,
                mode,
                compression,
                cache_mounts,
            } => {
                let mut cfg = cache_config(store, remote, records, *mode, *compression)?;
                if *cache_mounts {
                    add_cache_mounts(store, &mut cfg, *compression)?;
                }
                let target = rbuild_s3::S3Options::parse(attrs)?.describe();
                remote
                    .ensure_blobs(store, &layer_infos(&cfg))
                    .map_err(|e| anyhow!("exporting the cache to {target}: {e}"))?;
                let (up, had, requests) = export_s3(store, attrs, &cfg)
                    .with_context(|| format!("exporting the cache to {target}"))?;
                if !quiet {
                    eprintln!(
                        "exported cache {} ({} records) to {target}: {up} blobs uploaded, {had} already there, {requests} requests",
                        if *mode == Mode::Max { "mode=max" } else { "mode=min" },
                        cfg.records.len(),
                    );
                }
            }
            CacheTo::Inline => {}
        }
    }
    Ok(())
}

/// Key of [`CacheConfig::extra`] listing the exported cache mounts: directory name -> [`MountBlob`].
const MOUNTS_KEY: &str = "rbuild.cache-mounts";
/// Prefix of the [`CacheConfig::records`] entries that carry the cache mounts' blobs (so they
/// travel with the artifact); such keys are not cache keys and lookups never see them.
const MOUNT_RECORD_PREFIX: &str = "cache-mount-";

/// One exported cache mount: the layer (compressed) holding its files, and the tar's digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MountBlob {
    layer: Descriptor,
    diff_id: Digest,
}

/// The store's directory of `RUN --mount=type=cache` contents.
fn cache_mounts_dir(store: &Store) -> PathBuf {
    rbuild_solver::layout::cache_mounts_dir(store.root())
}

/// `cache-mounts=true`: every cache mount directory of the store as a layer (read under the
/// mount's shared lock, so no `locked` user changes it meanwhile), added to `cfg`.
fn add_cache_mounts(
    store: &Store,
    cfg: &mut CacheConfig,
    compression: Compression,
) -> anyhow::Result<usize> {
    let dir = cache_mounts_dir(store);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| rbuild_solver::layout::is_cache_mount_name(n))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    names.sort();
    let mut mounts = BTreeMap::new();
    for name in &names {
        let path = dir.join(name);
        let lock = rbuild_solver::layout::lock_cache_mount_shared(store.root(), name)
            .with_context(|| format!("locking cache mount {}", path.display()))?;
        let mut w = store.ingest().context("exporting a cache mount")?;
        let stats = rbuild_snapshotter::diff::write_layer(
            &path,
            &mut w,
            &rbuild_snapshotter::diff::LayerOptions::default(),
        )
        .with_context(|| format!("reading cache mount {}", path.display()))?;
        let (d, size) = w.commit(None).context("storing a cache mount layer")?;
        drop(lock);
        let tar = Descriptor::new(Compression::None.oci_layer_media_type(), d, size);
        let layer = compressed_layer(store, &tar, &stats.diff_id, compression)?;
        cfg.records
            .insert(format!("{MOUNT_RECORD_PREFIX}{name}"), vec![layer.clone()]);
        mounts.insert(
            name.clone(),
            MountBlob {
                layer,
                diff_id: stats.diff_id,
            },
        );
    }
    let n = mounts.len();
    cfg.extra
        .insert(MOUNTS_KEY.to_string(), serde_json::to_value(&mounts)?);
    Ok(n)
}

/// The cache mounts a cache config carries (invalid entries dropped).
fn mounts_of(cfg: &CacheConfig) -> BTreeMap<String, MountBlob> {
    let mut m: BTreeMap<String, MountBlob> = cfg
        .extra
        .get(MOUNTS_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    m.retain(|name, _| rbuild_solver::layout::is_cache_mount_name(name));
    m
}

/// Restore the imported cache mounts this store does not have (a local cache mount always wins):
/// each layer is fetched, checked, and applied with the layer applier into a temporary directory
/// that is renamed into place. Failures are warnings: a cache mount is an optimisation.
fn restore_mounts(
    store: &Store,
    mounts: &BTreeMap<String, MountBlob>,
    get: &dyn Fn(&Descriptor) -> Result<(), String>,
) {
    if mounts.is_empty() {
        return;
    }
    let dir = cache_mounts_dir(store);
    for (name, m) in mounts {
        let target = dir.join(name);
        if target.exists() {
            continue;
        }
        let res = (|| -> anyhow::Result<()> {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if !store.has_blob(&m.layer.digest) {
                get(&m.layer).map_err(|e| anyhow!(e))?;
            }
            let tar = rbuild_image::ensure_compressed(
                store,
                &m.layer,
                &m.diff_id,
                Compression::None,
                None,
            )?;
            let tmp = dir.join(format!(".import-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let f = store.open_blob(&tar.digest)?;
            let applied = rbuild_snapshotter::diff::apply_layer(
                std::io::BufReader::new(f),
                &tmp,
                &rbuild_snapshotter::diff::ApplyOptions::default(),
            );
            if let Err(e) = applied {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
            if std::fs::rename(&tmp, &target).is_err() {
                // Someone created it meanwhile: theirs wins.
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Ok(())
        })();
        if let Err(e) = res {
            eprintln!("warning: cache mount {name} not restored: {e:#}");
        }
    }
}

fn layer_infos(cfg: &CacheConfig) -> Vec<LayerInfo> {
    cfg.layers()
        .into_iter()
        .map(|d| LayerInfo {
            diff_id: d.digest.clone(),
            blob: d.digest,
            media_type: d.media_type,
            size: d.size,
        })
        .collect()
}

/// Write the cache artifact into an OCI layout directory: blobs first (copied from the store),
/// `index.json` last, replacing the previous cache.
fn write_layout(store: &Store, dest: &Path, cfg: &CacheConfig) -> anyhow::Result<()> {
    use rbuild_image::layout;
    layout::create_blob_dir(dest)?;
    let layers = cfg.layers();
    for d in &layers {
        if std::fs::metadata(layout::blob_path(dest, &d.digest)).is_ok_and(|m| m.len() == d.size) {
            continue;
        }
        let mut src = store
            .open_blob(&d.digest)
            .with_context(|| format!("layer {}", d.digest))?;
        layout::write_blob(dest, &d.digest, d.size, &mut src)?;
    }
    let (config_d, config_size) = layout::write_document(dest, &canonical_json(cfg))?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(rbuild_oci::MEDIA_TYPE_OCI_MANIFEST.to_string()),
        artifact_type: Some(CACHE_ARTIFACT_TYPE.to_string()),
        config: Descriptor::new(CACHE_CONFIG_MEDIA_TYPE, config_d, config_size),
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let (md, msize) = layout::write_document(dest, &canonical_json(&manifest))?;
    let mut desc = Descriptor::new(rbuild_oci::MEDIA_TYPE_OCI_MANIFEST, md, msize);
    desc.artifact_type = Some(CACHE_ARTIFACT_TYPE.to_string());
    desc.annotations.insert(
        rbuild_oci::ANNOTATION_REF_NAME.to_string(),
        "cache".to_string(),
    );
    let index = rbuild_oci::Index {
        schema_version: 2,
        media_type: Some(rbuild_oci::MEDIA_TYPE_OCI_INDEX.to_string()),
        manifests: vec![desc],
        annotations: BTreeMap::new(),
    };
    layout::write_index(dest, &index)?;
    Ok(())
}

/// The inline cache annotation for a pushed image (`--cache-to type=inline`).
pub fn inline_annotation(
    store: &Store,
    records: &[ExportRecord],
) -> anyhow::Result<(String, String)> {
    let cfg = cache_config(
        store,
        &RemoteCaches::default(),
        records,
        Mode::Min,
        Compression::Gzip,
    )?;
    Ok((
        INLINE_ANNOTATION.to_string(),
        String::from_utf8(canonical_json(&cfg)).context("inline cache JSON")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            CacheTo::parse("type=registry,ref=localhost:5000/c:1,mode=max,compression=zstd")
                .unwrap(),
            CacheTo::Registry {
                reference: "localhost:5000/c:1".into(),
                mode: Mode::Max,
                compression: Compression::Zstd,
                cache_mounts: false,
            }
        );
        assert_eq!(CacheTo::parse("type=inline").unwrap(), CacheTo::Inline);
        assert_eq!(
            CacheFrom::parse("localhost:5000/app:1").unwrap(),
            CacheFrom::Registry {
                reference: "localhost:5000/app:1".into()
            }
        );
        assert_eq!(
            CacheFrom::parse("type=local,src=/tmp/c").unwrap(),
            CacheFrom::Local {
                src: "/tmp/c".into()
            }
        );
        assert_eq!(
            CacheTo::parse("type=local,dest=/tmp/c,cache-mounts=true").unwrap(),
            CacheTo::Local {
                dest: "/tmp/c".into(),
                mode: Mode::Min,
                compression: Compression::Gzip,
                cache_mounts: true,
            }
        );
        for bad in [
            "type=inline,cache-mounts=true",
            "type=local,dest=/tmp/c,cache-mounts=maybe",
            "type=registry",
            "type=registry,ref=x,mode=all",
            "type=local",
            "type=s3,ref=x",
            "mode=max",
            "type=registry,ref=x,bogus=1",
            "type=inline,mode=max",
            "type=registry,ref=UPPER/Case",
        ] {
            let e = CacheTo::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--cache-to "), "{bad}: {e}");
        }
        assert!(CacheFrom::parse("type=local").is_err());
    }

    #[test]
    fn index_skips_inconsistent_records() {
        let d = Descriptor::new(
            rbuild_oci::MEDIA_TYPE_OCI_LAYER_GZIP,
            Digest::sha256_of(b"l"),
            1,
        );
        let key = Digest::sha256_of(b"k");
        let mut cfg = CacheConfig::new();
        cfg.records.insert(key.hex().to_string(), vec![d.clone()]);
        let bad = Digest::sha256_of(b"bad");
        cfg.records.insert(bad.hex().to_string(), vec![d.clone()]);
        let metas = serde_json::json!({
            key.hex(): {"diff_ids": [Digest::sha256_of(b"u")], "has_layer": true, "created": 7},
            bad.hex(): {"diff_ids": [], "has_layer": true, "created": 7},
        });
        cfg.extra.insert(EXTRA_KEY.into(), metas);
        let idx = index_of(&cfg);
        let r = idx.records.get(&key).expect("good record");
        assert_eq!(r.created, 7);
        assert_eq!(r.layer.as_ref().unwrap().blob, d.digest);
        assert!(!idx.records.contains_key(&bad));
    }
}
