//! Pull: resolve a reference to a manifest, pick a platform from an index, and fetch the config and
//! the layers the store lacks, verifying each blob's size and then its digest.

use crate::client::{
    error_for, next_chunk, read_capped, status_error, Client, Request, Retrier, Speed,
};
use crate::error::{Error, Result};
use crate::platform::{platform_string, select_manifest};
use crate::progress::{Progress, ProgressFn};
use crate::Reference;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_oci::{
    Descriptor, Digest, Index, Manifest, Platform, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE,
    MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use rbuild_store::Store;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use std::io::Write as _;

/// Every manifest media type we understand, for `Accept`.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A manifest (or index) as the registry served it, verified against its digest.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl Resolved {
    /// Whether this is an image index / manifest list rather than an image manifest.
    pub fn is_index(&self) -> bool {
        self.media_type == MEDIA_TYPE_OCI_INDEX
            || self.media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
    }
}

/// What [`Client::pull`] put into the store.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The reference pinned to the manifest digest that was pulled (the index digest if it was one).
    pub resolved: Reference,
    /// The index the manifest was picked from, when the reference named an index.
    pub index: Option<Digest>,
    pub manifest: Digest,
    pub manifest_media_type: String,
    pub config: Digest,
    pub layers: Vec<Descriptor>,
    /// Config plus layer sizes.
    pub size: u64,
    /// Blob bytes actually downloaded (0 when the store had everything).
    pub bytes_downloaded: u64,
}

impl Client {
    /// Fetch the manifest or index `r` names (by digest if it has one, else by tag), capped at
    /// [`MAX_MANIFEST_SIZE`], and verify it against the reference's digest and the registry's
    /// `Docker-Content-Digest`.
    pub async fn resolve(&self, r: &Reference) -> Result<Resolved> {
        let url = self.repo_url(r, &format!("manifests/{}", r.tag_or_digest()))?;
        let req = Request::new(
            Method::GET,
            url.clone(),
            vec![crate::challenge::pull_scope(r.repository())],
        )
        .header(ACCEPT, MANIFEST_ACCEPT);
        let resp = self.send(r.registry(), &req, r.digest()).await?;
        if !resp.status().is_success() {
            return Err(error_for(
                self,
                &Method::GET,
                &url,
                resp,
                format!("manifest {}", r.familiar()),
            )
            .await);
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
        let bytes =
            read_capped(self, resp, MAX_MANIFEST_SIZE, &url, "manifest", r.digest()).await?;
        let digest = Digest::sha256_of(&bytes);
        if let Some(expected) = r.digest() {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    url: url.to_string(),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        if let Some(claimed) = header_digest {
            match claimed.parse::<Digest>() {
                Ok(c) if c.algorithm() != "sha256" || c == digest => {}
                _ => {
                    return Err(Error::DigestHeaderMismatch {
                        url: url.to_string(),
                        claimed: claimed.chars().take(200).collect(),
                        actual: digest,
                    })
                }
            }
        }
        let media_type = manifest_media_type(&bytes, content_type.as_deref())
            .map_err(|e| e.into_error(url.to_string(), "manifest", &digest))?;
        Ok(Resolved {
            digest,
            media_type,
            bytes,
        })
    }

    /// Pull `r` into `store`: the manifest (picked for `platform` from an index), the config, and
    /// the layers the store lacks, in parallel (bounded by `max_concurrent_blobs`). Each blob is
    /// checked for size, then digest, before it becomes visible in the store.
    pub async fn pull(
        &self,
        store: &Store,
        r: &Reference,
        platform: &Platform,
        progress: ProgressFn<'_>,
    ) -> Result<PulledImage> {
        let top = self.resolve(r).await?;
        let (index, manifest) = if top.is_index() {
            let index: Index = parse_json(&top.bytes, r, "image index")?;
            let Some(desc) = select_manifest(&index, platform) else {
                let available = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(platform_string))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::NoMatchingPlatform {
                    reference: r.to_string(),
                    wanted: platform_string(platform),
                    available,
                });
            };
            if desc.size > MAX_MANIFEST_SIZE {
                return Err(Error::TooLarge {
                    url: r.with_digest(desc.digest.clone()).to_string(),
                    what: "manifest".into(),
                    limit: MAX_MANIFEST_SIZE,
                });
            }
            let m = self.resolve(&r.with_digest(desc.digest.clone())).await?;
            if m.bytes.len() as u64 != desc.size {
                return Err(Error::SizeMismatch {
                    url: self
                        .repo_url(r, &format!("manifests/{}", desc.digest))?
                        .to_string(),
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: m.bytes.len() as u64,
                });
            }
            if let Err(e) = manifest_media_type(&m.bytes, Some(&desc.media_type)) {
                return Err(e.into_error(
                    self.repo_url(r, &format!("manifests/{}", desc.digest))?
                        .to_string(),
                    "manifest",
                    &desc.digest,
                ));
            }
            if m.is_index() {
                return Err(Error::UnsupportedMediaType {
                    url: self
                        .repo_url(r, &format!("manifests/{}", desc.digest))?
                        .to_string(),
                    what: "manifest inside an index (nested index)",
                    media_type: m.media_type,
                });
            }
            (Some(top), m)
        } else {
            (None, top)
        };
        let parsed: Manifest = parse_json(&manifest.bytes, r, "image manifest")?;
        if parsed.config.size > MAX_CONFIG_SIZE {
            return Err(Error::TooLarge {
                url: self
                    .repo_url(r, &format!("blobs/{}", parsed.config.digest))?
                    .to_string(),
                what: "image config".into(),
                limit: MAX_CONFIG_SIZE,
            });
        }
        let mut downloaded = self.fetch_blob(store, r, &parsed.config, progress).await?;
        downloaded += self.fetch_blobs(store, r, &parsed.layers, progress).await?;
        // The manifest (and index) go in last: their presence means their blobs are there.
        put_document(store, &manifest)?;
        let index = match index {
            Some(top) => {
                put_document(store, &top)?;
                Some(top.digest)
            }
            None => None,
        };
        let pinned = r.with_digest(index.clone().unwrap_or_else(|| manifest.digest.clone()));
        Ok(PulledImage {
            resolved: pinned,
            index,
            manifest: manifest.digest,
            manifest_media_type: manifest.media_type,
            config: parsed.config.digest.clone(),
            size: parsed.config.size + parsed.layers.iter().map(|l| l.size).sum::<u64>(),
            layers: parsed.layers,
            bytes_downloaded: downloaded,
        })
    }

    /// Fetch several blobs of `repo` into `store` in parallel; returns the bytes downloaded.
    pub async fn fetch_blobs(
        &self,
        store: &Store,
        repo: &Reference,
        blobs: &[Descriptor],
        progress: ProgressFn<'_>,
    ) -> Result<u64> {
        let sizes: Vec<u64> = futures_util::stream::iter(blobs)
            .map(|d| self.fetch_blob(store, repo, d, progress))
            .buffer_unordered(self.opts.max_concurrent_blobs.max(1))
            .try_collect()
            .await?;
        Ok(sizes.iter().sum())
    }

    /// Fetch one blob of `repo` into `store` unless the store has it already (then 0 is returned,
    /// else the bytes downloaded). An interrupted download resumes with `Range` where the registry
    /// supports it, or restarts; the blob is checked for size, then digest, and only then committed.
    pub async fn fetch_blob(
        &self,
        store: &Store,
        repo: &Reference,
        desc: &Descriptor,
        progress: ProgressFn<'_>,
    ) -> Result<u64> {
        let digest = &desc.digest;
        if store.has_blob(digest) {
            self.known_locations().add(digest, repo);
            progress(Progress::Skipped {
                digest: digest.clone(),
            });
            return Ok(0);
        }
        let url = self.repo_url(repo, &format!("blobs/{digest}"))?;
        if digest.algorithm() != "sha256" {
            return Err(Error::InvalidResponse {
                url: url.to_string(),
                what: "descriptor",
                reason: format!("{digest}: only sha256 blobs are supported"),
            });
        }
        let store_err = |operation, source| Error::Store {
            operation,
            digest: digest.to_string(),
            source: Box::new(source),
        };
        // One download of a blob at a time per store, across processes: two pulls (or builds)
        // sharing a layer fetch it once; the second finds it present when the lock is its own.
        let lock_name = format!("pull-{}", digest.hex());
        let _lock = {
            let (s, name) = (store.clone(), lock_name.clone());
            tokio::task::spawn_blocking(move || s.lock_named(&name))
                .await
                .map_err(|e| Error::ClientSetup(format!("blob lock task failed: {e}")))?
                .map_err(|e| {
                    store_err(
                        "lock",
                        rbuild_store::StoreError::Io {
                            op: "lock blob download",
                            path: store.lock_path(&lock_name),
                            source: e,
                        },
                    )
                })?
        };
        if store.has_blob(digest) {
            self.known_locations().add(digest, repo);
            progress(Progress::Skipped {
                digest: digest.clone(),
            });
            return Ok(0);
        }
        let is_layer = desc.media_type.contains("layer");
        let mut writer = store.ingest().map_err(|e| store_err("ingest", e))?;
        let mut retry = Retrier::new(&self.opts);
        let mut downloaded = 0u64;
        let scopes = vec![crate::challenge::pull_scope(repo.repository())];
        loop {
            let offset = writer.written();
            let mut req = Request::new(Method::GET, url.clone(), scopes.clone());
            if offset > 0 {
                req = req.header(RANGE, &format!("bytes={offset}-"));
            }
            progress(Progress::Started {
                digest: digest.clone(),
                total: desc.size,
                offset,
            });
            let mut resp = self.send(repo.registry(), &req, Some(digest)).await?;
            match resp.status() {
                StatusCode::OK if offset > 0 => {
                    // The registry ignored our Range: start over.
                    writer = store.ingest().map_err(|e| store_err("ingest", e))?;
                }
                StatusCode::OK => {}
                StatusCode::PARTIAL_CONTENT => {
                    let start = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(content_range_start);
                    if start != Some(offset) {
                        return Err(Error::InvalidResponse {
                            url: url.to_string(),
                            what: "Content-Range",
                            reason: format!("asked for bytes from {offset}, got {start:?}"),
                        });
                    }
                }
                StatusCode::NOT_FOUND => {
                    return Err(error_for(
                        self,
                        &Method::GET,
                        &url,
                        resp,
                        format!("blob {digest} in {}", repo.name()),
                    )
                    .await)
                }
                _ => return Err(status_error(self, &Method::GET, &url, resp).await),
            }
            let mut speed = Speed::new(&self.opts);
            let interrupted = loop {
                match next_chunk(self, &mut resp, &url, Some(digest), &mut speed).await {
                    Ok(Some(chunk)) => {
                        if writer.written() + chunk.len() as u64 > desc.size {
                            return Err(Error::SizeMismatch {
                                url: url.to_string(),
                                digest: digest.clone(),
                                expected: desc.size,
                                actual: writer.written() + chunk.len() as u64,
                            });
                        }
                        writer
                            .write_all(&chunk)
                            .map_err(|e| store_err("write", writer.error("write blob", e)))?;
                        downloaded += chunk.len() as u64;
                        if is_layer {
                            // Crash tests: die with a partial layer in the ingest area.
                            rbuild_store::crash_point("pull-layer");
                        }
                        progress(Progress::Bytes {
                            digest: digest.clone(),
                            done: writer.written(),
                            total: desc.size,
                        });
                    }
                    Ok(None) if writer.written() < desc.size => {
                        break Some(Error::SizeMismatch {
                            url: url.to_string(),
                            digest: digest.clone(),
                            expected: desc.size,
                            actual: writer.written(),
                        })
                    }
                    Ok(None) => break None,
                    Err(e) if e.is_transient() => break Some(e),
                    Err(e) => return Err(e),
                }
            };
            match interrupted {
                None => break,
                Some(e) => retry.wait(e, None, &url, Some(digest)).await?,
            }
        }
        writer
            .commit(Some((digest, desc.size)))
            .map_err(|e| match e {
                rbuild_store::StoreError::DigestMismatch {
                    expected, actual, ..
                } => Error::DigestMismatch {
                    url: url.to_string(),
                    expected,
                    actual,
                },
                other => store_err("commit", other),
            })?;
        // The blob is whole: drop the lock file while we hold it (a waiter notices the unlink,
        // locks afresh and finds the blob), so `locks/` does not grow with every blob pulled.
        let _ = std::fs::remove_file(store.lock_path(&lock_name));
        self.known_locations().add(digest, repo);
        progress(Progress::Done {
            digest: digest.clone(),
            total: desc.size,
        });
        Ok(downloaded)
    }
}

/// `bytes 100-199/200` → 100.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    r: &Reference,
    what: &'static str,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidResponse {
        url: r.to_string(),
        what,
        reason: e.to_string(),
    })
}

/// Store a verified manifest or index (its digest was checked when it was read).
fn put_document(store: &Store, doc: &Resolved) -> Result<()> {
    let d = store.put_blob(&doc.bytes).map_err(|source| Error::Store {
        operation: "put manifest",
        digest: doc.digest.to_string(),
        source: Box::new(source),
    })?;
    debug_assert_eq!(d, doc.digest);
    Ok(())
}

/// Why a document is not taken as a manifest or index.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DocError {
    /// Not an image manifest or index at all (the media type, or what is wrong).
    Unsupported(String),
    /// Its fields and its media types disagree (CVE-2021-41190).
    Ambiguous(String),
}

impl DocError {
    pub(crate) fn into_error(self, url: String, what: &'static str, digest: &Digest) -> Error {
        match self {
            DocError::Unsupported(media_type) => Error::UnsupportedMediaType {
                url,
                what,
                media_type,
            },
            DocError::Ambiguous(reason) => Error::Ambiguous {
                url,
                what,
                digest: digest.clone(),
                reason,
            },
        }
    }
}

/// Whether a known media type is an index (`Some(true)`), a manifest (`Some(false)`), or neither.
pub(crate) fn is_index_type(media_type: &str) -> Option<bool> {
    match media_type {
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST => Some(true),
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => Some(false),
        _ => None,
    }
}

/// The media type of a manifest document: its `mediaType` field, else the Content-Type, else
/// guessed from its shape. `content_type` is the Content-Type the registry sent, or the media type
/// of the descriptor that pointed at the document. A document is refused as ambiguous
/// (CVE-2021-41190) when it has both `manifests` and `config`/`layers`, or when its fields, its
/// `mediaType` and `content_type` do not all say the same kind (index or manifest).
pub(crate) fn manifest_media_type(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<String, DocError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let p: Probe =
        serde_json::from_slice(bytes).map_err(|_| DocError::Unsupported("(not JSON)".into()))?;
    if p.schema_version != Some(2) {
        return Err(DocError::Unsupported(format!(
            "schemaVersion {:?} (Docker schema 1 manifests are not supported)",
            p.schema_version
        )));
    }
    let has_manifest_fields = p.config.is_some() || p.layers.is_some();
    if p.manifests.is_some() && has_manifest_fields {
        return Err(DocError::Ambiguous(
            "it has both \"manifests\" (an index) and \"config\"/\"layers\" (a manifest)".into(),
        ));
    }
    let shape = if p.manifests.is_some() {
        Some(true)
    } else if has_manifest_fields {
        Some(false)
    } else {
        None
    };
    let kind = |index: bool| if index { "an index" } else { "a manifest" };
    let content_type = content_type.filter(|c| is_index_type(c).is_some());
    for (what, mt) in [
        ("its mediaType", p.media_type.as_deref()),
        ("the Content-Type or descriptor", content_type),
    ] {
        if let (Some(mt), Some(shape)) = (mt, shape) {
            if let Some(says) = is_index_type(mt) {
                if says != shape {
                    return Err(DocError::Ambiguous(format!(
                        "{what} {mt:?} says {} but its fields make it {}",
                        kind(says),
                        kind(shape)
                    )));
                }
            }
        }
    }
    if let (Some(doc), Some(ct)) = (p.media_type.as_deref(), content_type) {
        if let (Some(a), Some(b)) = (is_index_type(doc), is_index_type(ct)) {
            if a != b {
                return Err(DocError::Ambiguous(format!(
                    "its mediaType {doc:?} says {} but the Content-Type or descriptor {ct:?} says {}",
                    kind(a),
                    kind(b)
                )));
            }
        }
    }
    let mt = p
        .media_type
        .or_else(|| content_type.map(str::to_string))
        .unwrap_or_else(|| match shape {
            Some(true) => MEDIA_TYPE_OCI_INDEX.to_string(),
            Some(false) => MEDIA_TYPE_OCI_MANIFEST.to_string(),
            None => String::new(),
        });
    match is_index_type(&mt) {
        Some(_) => Ok(mt),
        None => Err(DocError::Unsupported(mt)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2"), None);
    }

    #[test]
    fn media_types() {
        let m = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            manifest_media_type(m, None).unwrap(),
            MEDIA_TYPE_OCI_MANIFEST
        );
        assert_eq!(
            manifest_media_type(m, Some(MEDIA_TYPE_DOCKER_MANIFEST)).unwrap(),
            MEDIA_TYPE_DOCKER_MANIFEST
        );
        let i = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            manifest_media_type(i, Some("text/plain")).unwrap(),
            MEDIA_TYPE_OCI_INDEX
        );
        assert!(manifest_media_type(br#"{"schemaVersion":1}"#, None).is_err());
        // CVE-2021-41190: fields and media types that disagree are refused as ambiguous.
        let amb = |doc: &[u8], ct: Option<&str>| {
            matches!(manifest_media_type(doc, ct), Err(DocError::Ambiguous(_)))
        };
        assert!(amb(
            br#"{"schemaVersion":2,"manifests":[],"config":{},"layers":[]}"#,
            None
        ));
        assert!(amb(
            br#"{"schemaVersion":2,"manifests":[],"layers":[]}"#,
            None
        ));
        assert!(amb(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#,
            None
        ));
        assert!(amb(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","config":{},"layers":[]}"#,
            None
        ));
        assert!(amb(m, Some(MEDIA_TYPE_OCI_INDEX)));
        assert!(amb(i, Some(MEDIA_TYPE_DOCKER_MANIFEST)));
        assert!(amb(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
            Some(MEDIA_TYPE_OCI_MANIFEST)
        ));
        // A generic Content-Type says nothing.
        assert!(manifest_media_type(m, Some("application/json")).is_ok());
        assert!(manifest_media_type(b"nope", None).is_err());
        assert!(manifest_media_type(br#"{"schemaVersion":2,"mediaType":"x/y"}"#, None).is_err());
    }
}
