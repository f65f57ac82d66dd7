//! `imagetools create`: an index made from manifests already in a registry, without pulling any
//! layer — the merge step of a CI matrix where each runner pushed its platform by digest.
//!
//! Each source names a manifest (its platform is read from its config, a few hundred bytes) or an
//! index (its entries are taken as they are, attestation manifests included). Sources in another
//! repository of the target's registry have their blobs mounted (`POST …?mount=&from=`) and
//! their manifests put by digest; the index is put last, so the tag never names anything missing.
//! Two different manifests for one platform are refused (naming both), unless the caller asks
//! for the later one to replace the earlier.

use crate::client::{error_for, read_capped, status_error, Request};
use crate::error::{Error, Result};
use crate::{Client, Reference};
use rbuild_oci::{
    canonical_json, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, MAX_CONFIG_SIZE,
    MEDIA_TYPE_OCI_INDEX,
};
use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, StatusCode};
use std::collections::BTreeMap;

/// Annotations that mark BuildKit's attestation manifests in an index.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// One entry of the index to be: where it comes from and its descriptor.
#[derive(Clone, Debug)]
pub struct IndexEntry {
    /// The source, pinned to the digest it resolved to.
    pub source: Reference,
    pub descriptor: Descriptor,
    /// The manifest bytes (put into the target repository when the source lives elsewhere).
    pub bytes: Vec<u8>,
}

impl IndexEntry {
    fn is_attestation(&self) -> bool {
        self.descriptor.annotations.contains_key(REFERENCE_TYPE)
    }
}

/// What to do when two sources bring different manifests for one platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicatePlatform {
    Refuse,
    /// The later source's manifest (and its attestations) replaces the earlier's.
    Replace,
}

/// Annotations for `imagetools create`, as buildx spells `--annotation`: `index:K=V` (also a bare
/// `K=V`) on the index, `manifest-descriptor[os/arch]:K=V` on the image descriptors (of that
/// platform only, when given).
#[derive(Clone, Debug, Default)]
pub struct CreateAnnotations {
    pub index: BTreeMap<String, String>,
    /// (platform filter, key, value).
    pub descriptor: Vec<(Option<Platform>, String, String)>,
}

impl CreateAnnotations {
    /// Parse one `--annotation` value.
    pub fn add(&mut self, spec: &str) -> std::result::Result<(), String> {
        let (kind, kv) = match spec.split_once(':') {
            Some((k, rest))
                if [
                    "index",
                    "manifest",
                    "manifest-descriptor",
                    "index-descriptor",
                ]
                .contains(&k.split('[').next().unwrap_or(k)) =>
            {
                (k, rest)
            }
            _ => ("index", spec),
        };
        let (key, value) = kv
            .split_once('=')
            .ok_or_else(|| format!("--annotation {spec:?}: expected [TYPE:]KEY=VALUE"))?;
        if key.is_empty() {
            return Err(format!("--annotation {spec:?}: empty key"));
        }
        let (base, platform) = match kind.split_once('[') {
            Some((b, p)) => {
                let p = p
                    .strip_suffix(']')
                    .ok_or_else(|| format!("--annotation {spec:?}: unterminated [platform]"))?;
                let plat =
                    Platform::parse_strict(p).map_err(|e| format!("--annotation {spec:?}: {e}"))?;
                (b, Some(plat))
            }
            None => (kind, None),
        };
        match base {
            "index" if platform.is_none() => {
                self.index.insert(key.into(), value.into());
            }
            "manifest-descriptor" => self.descriptor.push((platform, key.into(), value.into())),
            "manifest" => {
                return Err(format!(
                    "--annotation {spec:?}: imagetools create cannot change a manifest (its digest is what the sources pinned); use manifest-descriptor: or index:"
                ))
            }
            other => {
                return Err(format!(
                    "--annotation {spec:?}: {other} annotations do not apply to imagetools create (index, manifest-descriptor)"
                ))
            }
        }
        Ok(())
    }
}

impl Client {
    /// GET a small blob into memory, capped and verified.
    async fn fetch_small_blob(
        &self,
        repo: &Reference,
        d: &Descriptor,
        cap: u64,
    ) -> Result<Vec<u8>> {
        let url = self.repo_url(repo, &format!("blobs/{}", d.digest))?;
        let req = Request::new(
            Method::GET,
            url.clone(),
            vec![crate::challenge::pull_scope(repo.repository())],
        );
        let resp = self.send(repo.registry(), &req, Some(&d.digest)).await?;
        if !resp.status().is_success() {
            return Err(
                error_for(self, &Method::GET, &url, resp, format!("blob {}", d.digest)).await,
            );
        }
        let bytes = read_capped(self, resp, cap, &url, "config", Some(&d.digest)).await?;
        let actual = Digest::sha256_of(&bytes);
        if actual != d.digest {
            return Err(Error::DigestMismatch {
                url: url.to_string(),
                expected: d.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The index entries a source contributes: a manifest with its platform (from its config),
    /// or every entry of an index.
    pub async fn index_entries(&self, source: &Reference) -> Result<Vec<IndexEntry>> {
        let resolved = self.resolve(source).await?;
        let pinned = source.with_digest(resolved.digest.clone());
        if resolved.is_index() {
            let idx: Index =
                serde_json::from_slice(&resolved.bytes).map_err(|e| Error::InvalidResponse {
                    url: pinned.to_string(),
                    what: "image index",
                    reason: e.to_string(),
                })?;
            let mut out = Vec::new();
            for d in idx.manifests {
                let child = self.resolve(&source.with_digest(d.digest.clone())).await?;
                out.push(IndexEntry {
                    source: pinned.clone(),
                    descriptor: d,
                    bytes: child.bytes,
                });
            }
            return Ok(out);
        }
        let m: Manifest =
            serde_json::from_slice(&resolved.bytes).map_err(|e| Error::InvalidResponse {
                url: pinned.to_string(),
                what: "image manifest",
                reason: e.to_string(),
            })?;
        if m.config.size > MAX_CONFIG_SIZE {
            return Err(Error::TooLarge {
                url: pinned.to_string(),
                what: "image config".into(),
                limit: MAX_CONFIG_SIZE,
            });
        }
        let cfg = self
            .fetch_small_blob(source, &m.config, MAX_CONFIG_SIZE)
            .await?;
        let cfg: ImageConfig =
            serde_json::from_slice(&cfg).map_err(|e| Error::InvalidResponse {
                url: pinned.to_string(),
                what: "image config",
                reason: e.to_string(),
            })?;
        let mut d = Descriptor::new(
            resolved.media_type.clone(),
            resolved.digest.clone(),
            resolved.bytes.len() as u64,
        );
        d.platform = Some(Platform {
            architecture: cfg.architecture,
            os: cfg.os,
            variant: cfg.variant,
            os_version: None,
        });
        Ok(vec![IndexEntry {
            source: pinned,
            descriptor: d,
            bytes: resolved.bytes,
        }])
    }

    /// Make the index of `sources` (see the module docs) and put it at every `targets` tag (all
    /// in one repository). Returns the index digest and bytes. With `dry_run`, nothing is written.
    pub async fn create_index(
        &self,
        targets: &[Reference],
        sources: &[Reference],
        annotations: &CreateAnnotations,
        duplicates: DuplicatePlatform,
        dry_run: bool,
    ) -> Result<(Digest, Vec<u8>)> {
        let Some(first) = targets.first() else {
            return Err(Error::ClientSetup(
                "imagetools create: no target (-t)".into(),
            ));
        };
        if let Some(t) = targets.iter().find(|t| t.name() != first.name()) {
            return Err(Error::ClientSetup(format!(
                "imagetools create: every -t must name one repository ({} and {})",
                first.familiar(),
                t.familiar()
            )));
        }
        let mut entries: Vec<IndexEntry> = Vec::new();
        for s in sources {
            for e in self.index_entries(s).await? {
                add_entry(&mut entries, e, duplicates)?;
            }
        }
        // Images first, then attestations (as BuildKit orders them); stable otherwise.
        entries.sort_by_key(IndexEntry::is_attestation);
        let manifests = entries
            .iter()
            .map(|e| {
                let mut d = e.descriptor.clone();
                if !e.is_attestation() {
                    for (plat, k, v) in &annotations.descriptor {
                        let applies = match (plat, &d.platform) {
                            (None, _) => true,
                            (Some(want), Some(have)) => want.same_as(have),
                            (Some(_), None) => false,
                        };
                        if applies {
                            d.annotations.insert(k.clone(), v.clone());
                        }
                    }
                }
                d
            })
            .collect();
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.into()),
            manifests,
            annotations: annotations.index.clone(),
        };
        let bytes = canonical_json(&index);
        let digest = Digest::sha256_of(&bytes);
        if dry_run {
            return Ok((digest, bytes));
        }
        for e in &entries {
            self.copy_manifest(first, e).await?;
        }
        for t in targets {
            self.put_manifest(
                t,
                &t.tag_or_digest(),
                MEDIA_TYPE_OCI_INDEX,
                bytes.clone(),
                &digest,
            )
            .await?;
        }
        Ok((digest, bytes))
    }

    /// Make `e`'s manifest and blobs present in `target`'s repository without downloading them.
    async fn copy_manifest(&self, target: &Reference, e: &IndexEntry) -> Result<()> {
        if e.source.name() == target.name() {
            return Ok(()); // already there: the source was resolved in this repository
        }
        if !e.source.same_registry(target) {
            return Err(Error::ClientSetup(format!(
                "imagetools create: {} is on another registry than {}; sources must be on the target's registry (nothing is downloaded)",
                e.source.familiar(),
                target.familiar()
            )));
        }
        let m: Manifest =
            serde_json::from_slice(&e.bytes).map_err(|err| Error::InvalidResponse {
                url: e.source.to_string(),
                what: "manifest in an index (nested indexes are not merged)",
                reason: err.to_string(),
            })?;
        for b in std::iter::once(&m.config).chain(&m.layers) {
            self.mount_blob(target, &e.source, &b.digest).await?;
        }
        self.put_manifest(
            target,
            &e.descriptor.digest.to_string(),
            &e.descriptor.media_type,
            e.bytes.clone(),
            &e.descriptor.digest,
        )
        .await
    }

    /// Make `digest` present in `target`'s repository by a cross-repository mount from `from`.
    async fn mount_blob(
        &self,
        target: &Reference,
        from: &Reference,
        digest: &Digest,
    ) -> Result<()> {
        if self.has_blob(target, digest).await? {
            return Ok(());
        }
        let mut url = self.repo_url(target, "blobs/uploads/")?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from.repository());
        let req = Request::new(
            Method::POST,
            url.clone(),
            vec![
                crate::challenge::push_scope(target.repository()),
                crate::challenge::pull_scope(from.repository()),
            ],
        )
        .header(CONTENT_LENGTH, "0");
        let resp = self.send(target.registry(), &req, Some(digest)).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::ACCEPTED => Err(Error::InvalidResponse {
                url: url.to_string(),
                what: "cross-repository mount",
                reason: format!(
                    "the registry did not mount {digest} from {} (it would have to be copied through this machine, which imagetools create does not do)",
                    from.name()
                ),
            }),
            _ => Err(status_error(self, &Method::POST, &url, resp).await),
        }
    }
}

/// Add `e`, deduplicating the same manifest and refusing (or replacing) another manifest for a
/// platform already present. Attestation manifests follow the image they reference.
fn add_entry(entries: &mut Vec<IndexEntry>, e: IndexEntry, dup: DuplicatePlatform) -> Result<()> {
    if entries
        .iter()
        .any(|x| x.descriptor.digest == e.descriptor.digest)
    {
        return Ok(());
    }
    if !e.is_attestation() {
        if let Some(p) = &e.descriptor.platform {
            let clash = entries.iter().position(|x| {
                !x.is_attestation() && x.descriptor.platform.as_ref().is_some_and(|q| q.same_as(p))
            });
            if let Some(i) = clash {
                match dup {
                    DuplicatePlatform::Refuse => {
                        return Err(Error::ClientSetup(format!(
                            "imagetools create: platform {} is in two sources: {}@{} and {}@{} (give each platform once, or --replace-platform to keep the later)",
                            p.format(),
                            entries[i].source.name(),
                            entries[i].descriptor.digest,
                            e.source.name(),
                            e.descriptor.digest
                        )))
                    }
                    DuplicatePlatform::Replace => {
                        let old = entries.remove(i).descriptor.digest.to_string();
                        entries.retain(|x| {
                            x.descriptor.annotations.get(REFERENCE_DIGEST) != Some(&old)
                        });
                    }
                }
            }
        }
    }
    entries.push(e);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_prefixes() {
        let mut a = CreateAnnotations::default();
        a.add("org.opencontainers.image.title=app").unwrap();
        a.add("index:org.opencontainers.image.version=1").unwrap();
        a.add("manifest-descriptor[linux/arm64]:note=arm").unwrap();
        a.add("manifest-descriptor:all=yes").unwrap();
        assert_eq!(a.index.len(), 2);
        assert_eq!(a.descriptor.len(), 2);
        assert_eq!(a.descriptor[0].0.as_ref().unwrap().architecture, "arm64");
        assert!(a
            .add("manifest:x=y")
            .unwrap_err()
            .contains("cannot change a manifest"));
        assert!(a.add("index:novalue").is_err());
        assert!(a.add("manifest-descriptor[linux/arm64:x=y").is_err());
    }
}
