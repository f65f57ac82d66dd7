//! Base images for a build: resolving `FROM` references for the frontend ([`StoreResolver`]) and
//! making their layers present for the solver ([`RegistryImages`]).
//!
//! Resolution order for `FROM ref`:
//! 1. `ref` pinned by digest whose manifest is in the store: used as it is, never the network;
//! 2. without `--pull`: the local store by the name as written;
//! 3. the registry (when the build may use one): the manifest digest is resolved (an index is
//!    narrowed to the stage's platform), the manifest and the config are fetched into the store — the
//!    planner needs the config — and the layers are left for later;
//! 4. with `--pull`, step 2 is skipped: the tag is always re-resolved.
//!
//! Layers are fetched lazily by [`RegistryImages::ensure`], which the solver calls only when a step
//! needs the base image's filesystem (a fully cached build downloads no base layer). Once every blob
//! is present the image is named in the store under its familiar name, as `rbuild pull` names it.

use crate::registry::{parse_ref, LazyRegistry, ProgressPrinter};
use rbuild_oci::{Digest, Index, Platform};
use rbuild_ops::{ImageResolver, ResolveError, ResolvedImage};
use rbuild_registry::{select_manifest, Reference};
use rbuild_solver::{BaseImages, LocalImages};
use rbuild_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Resolves `FROM` references against the local store, then a registry; memoizes each answer for
/// the build.
pub struct StoreResolver {
    pub store: Arc<Store>,
    registry: Option<Arc<LazyRegistry>>,
    pull: bool,
    memo: Mutex<HashMap<String, ResolvedImage>>,
    /// How each reference was answered, for the no-op check's stamps.
    answers: Mutex<Vec<Answer>>,
}

/// Where a `FROM` reference's answer came from.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The local store, by this (normalized) name, pointing at this image.
    Named(String, rbuild_store::ImageRecord),
    /// Pinned by digest, present in the store.
    Pinned(Digest),
    /// Anything else: an id prefix, a registry.
    Other,
}

impl StoreResolver {
    /// The local store only.
    pub fn new(store: Arc<Store>) -> Self {
        StoreResolver {
            store,
            registry: None,
            pull: false,
            memo: Mutex::new(HashMap::new()),
            answers: Mutex::new(Vec::new()),
        }
    }

    /// The local store, then `registry`; with `pull`, tags are always resolved at the registry.
    pub fn with_registry(store: Arc<Store>, registry: Arc<LazyRegistry>, pull: bool) -> Self {
        StoreResolver {
            registry: Some(registry),
            pull,
            ..StoreResolver::new(store)
        }
    }

    fn answered(&self, a: Answer) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(a);
    }

    /// How every reference resolved so far was answered.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn image_in_store(
        &self,
        name: String,
        manifest: &Digest,
        platform: &Platform,
    ) -> Result<ResolvedImage, String> {
        let (md, m) = rbuild_image::resolve_manifest_for(&self.store, manifest, platform)
            .map_err(|e| format!("reading manifest {manifest}: {e}"))?;
        let config = rbuild_image::read_config(&self.store, &m.config.digest)
            .map_err(|e| format!("reading its config: {e}"))?;
        Ok(ResolvedImage {
            reference: name,
            manifest: md,
            config,
        })
    }

    fn resolve_uncached(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, ResolveError> {
        let host = platform.same_as(&Platform::host());
        let failed = |message: String| ResolveError::Failed {
            reference: reference.to_string(),
            message,
        };
        let parsed = Reference::parse(reference).ok();
        // Pinned by digest and present: no network, whatever the flags.
        if let Some(r) = &parsed {
            if let Some(d) = r.digest() {
                if self.store.has_blob(d) {
                    self.answered(Answer::Pinned(d.clone()));
                    return self
                        .image_in_store(r.familiar(), d, platform)
                        .and_then(|img| check_platform(img, platform, host))
                        .map_err(failed);
                }
            }
        }
        // A local image of another platform than the one wanted: the registry may have it; if
        // not, the error says what the local one is.
        let mut local_mismatch = None;
        if !self.pull || self.registry.is_none() {
            let found = self
                .store
                .find_image(reference)
                .map_err(|e| failed(e.to_string()))?;
            if let Some((name, rec)) = found {
                let by_name = rbuild_store::normalize_name(reference).ok();
                let shown = name.clone().unwrap_or_else(|| reference.to_string());
                let img = self
                    .image_in_store(shown, &rec.manifest, platform)
                    .and_then(|img| check_platform(img, platform, host));
                match img {
                    Ok(img) => {
                        self.answered(match &name {
                            Some(n) if by_name.as_ref() == Some(n) => {
                                Answer::Named(n.clone(), rec.clone())
                            }
                            _ => Answer::Other,
                        });
                        return Ok(img);
                    }
                    Err(e) if host || self.registry.is_none() => return Err(failed(e)),
                    Err(e) => local_mismatch = Some(e),
                }
            }
        }
        let Some(registry) = &self.registry else {
            return Err(ResolveError::NotFound {
                reference: reference.to_string(),
                hint: Some(
                    "it is not in the local store; import it with `rbuild load` (see `rbuild images`)"
                        .to_string(),
                ),
            });
        };
        self.answered(Answer::Other);
        let r = parse_ref(reference, "image").map_err(|e| failed(e.to_string()))?;
        let ctx = registry.get().map_err(|e| failed(format!("{e:#}")))?;
        let manifest = ctx
            .block(fetch_metadata(&ctx.client, &self.store, &r, platform))
            .map_err(|e| match &local_mismatch {
                Some(local) => failed(format!(
                    "{local}; and resolving it at {} failed: {e}",
                    r.registry()
                )),
                None => failed(format!(
                    "not in the local store, and resolving it at {} failed: {e}",
                    r.registry()
                )),
            })?;
        self.image_in_store(r.familiar(), &manifest, platform)
            .map_err(failed)
    }
}

/// `img` if its config's platform runs as `platform` (containerd's `platforms.Only`), else why
/// not. A config without os/architecture passes (nothing to compare). For the host's platform
/// a foreign single-platform image is taken as before (the `InvalidBaseImagePlatform` check warns,
/// as BuildKit); a platform asked for explicitly must match, since the local store keeps one
/// manifest per name and taking another platform's would build the wrong thing silently.
fn check_platform(
    img: ResolvedImage,
    platform: &Platform,
    host: bool,
) -> Result<ResolvedImage, String> {
    let c = &img.config;
    if host || c.os.is_empty() || c.architecture.is_empty() {
        return Ok(img);
    }
    let have = Platform::new(&c.os, &c.architecture, c.variant.as_deref());
    if rbuild_oci::Matcher::only(platform).matches(&have) {
        return Ok(img);
    }
    Err(format!(
        "image {} is {}, not {} (it has no other platform here)",
        img.reference,
        have.normalized(),
        platform.normalized()
    ))
}

/// Fetch the manifest (narrowing an index to the host platform) and the config of `r` into the
/// store; not the layers. Returns the platform manifest's digest.
async fn fetch_metadata(
    client: &rbuild_registry::Client,
    store: &Store,
    r: &Reference,
    platform: &Platform,
) -> Result<Digest, String> {
    let top = client.resolve(r).await.map_err(|e| e.to_string())?;
    let manifest = if top.is_index() {
        let index: Index = serde_json::from_slice(&top.bytes)
            .map_err(|e| format!("image index {}: {e}", top.digest))?;
        let desc = select_manifest(&index, platform).ok_or_else(|| {
            format!(
                "image index {} has no manifest for {} (it has {})",
                top.digest,
                platform.normalized(),
                rbuild_oci::index_platforms(&index).join(", ")
            )
        })?;
        let m = client
            .resolve(&r.with_digest(desc.digest.clone()))
            .await
            .map_err(|e| e.to_string())?;
        if m.is_index() {
            return Err(format!("manifest {} is a nested index", m.digest));
        }
        m
    } else {
        top.clone()
    };
    let parsed: rbuild_oci::Manifest = serde_json::from_slice(&manifest.bytes)
        .map_err(|e| format!("image manifest {}: {e}", manifest.digest))?;
    if parsed.config.size > rbuild_oci::MAX_CONFIG_SIZE {
        return Err(format!(
            "image config {} is {} bytes, over the {} byte limit",
            parsed.config.digest,
            parsed.config.size,
            rbuild_oci::MAX_CONFIG_SIZE
        ));
    }
    client
        .fetch_blob(store, r, &parsed.config, rbuild_registry::no_progress())
        .await
        .map_err(|e| e.to_string())?;
    store
        .put_blob(&manifest.bytes)
        .map_err(|e| format!("storing manifest {}: {e}", manifest.digest))?;
    if top.is_index() {
        store
            .put_blob(&top.bytes)
            .map_err(|e| format!("storing index {}: {e}", top.digest))?;
    }
    Ok(manifest.digest)
}

impl ImageResolver for StoreResolver {
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ResolveError> {
        self.resolve_for(reference, &Platform::host())
    }

    fn resolve_for(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage, ResolveError> {
        let key = if platform.same_as(&Platform::host()) {
            reference.to_string()
        } else {
            format!("{reference}\0{}", platform.normalized())
        };
        if let Some(r) = self
            .memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let resolved = self.resolve_uncached(reference, platform)?;
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, resolved.clone());
        Ok(resolved)
    }
}

/// Base images from the store, with missing layers pulled from the image's registry.
pub struct RegistryImages {
    pub store: Arc<Store>,
    pub registry: Arc<LazyRegistry>,
    pub quiet: bool,
}

impl BaseImages for RegistryImages {
    fn ensure(&self, reference: &str, manifest: &Digest) -> Result<(), String> {
        let local = LocalImages(self.store.clone());
        if local.ensure(reference, manifest).is_ok() {
            return Ok(());
        }
        let m = rbuild_image::read_manifest(&self.store, manifest).map_err(|e| {
            format!("image {reference} ({manifest}) is not in the local store: {e}")
        })?;
        let r = Reference::parse(reference)
            .map_err(|e| format!("image {reference}: its layers are missing and {e}"))?;
        let ctx = self.registry.get().map_err(|e| format!("{e:#}"))?;
        let printer = ProgressPrinter::new("pulling", self.quiet);
        let blobs: Vec<_> = std::iter::once(m.config.clone())
            .chain(m.layers.iter().cloned())
            .collect();
        ctx.block(
            ctx.client
                .fetch_blobs(&self.store, &r, &blobs, &|p| printer.report(p)),
        )
        .map_err(|e| format!("pulling the layers of {reference}: {e}"))?;
        // Whole now: name it as `rbuild pull` would.
        if let Ok(rec) = rbuild_image::image_record(&self.store, manifest) {
            if r.digest().is_none() {
                let _ = self.store.put_image(&r.familiar(), &rec);
            }
        }
        Ok(())
    }
}
