//! Push: blobs first (HEAD and skip what the registry has, mount across repositories where a hint
//! says the registry has it elsewhere, else upload), in parallel; the manifest last, so a tag never
//! points at missing blobs.

use crate::client::{error_for, status_error, Client, Request};
use crate::error::{Error, Result};
use crate::progress::{Progress, ProgressFn};
use crate::Reference;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_oci::{Descriptor, Digest, Index, Manifest, MAX_MANIFEST_SIZE};
use rbuild_store::Store;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode};
use url::Url;

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// Digest of the manifest (or index) pushed.
    pub manifest: Digest,
    /// Blob bytes uploaded (0 when the registry had every blob).
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    /// Blobs the registry already had in the target repository.
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository of the same registry.
    pub blobs_mounted: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

impl Client {
    /// Push the manifest (or index) `manifest` from `store` to `target` with every blob it
    /// references. `target`'s tag names it (or, without a tag, its digest, which must match).
    pub async fn push(
        &self,
        store: &Store,
        manifest: &Digest,
        target: &Reference,
        progress: ProgressFn<'_>,
    ) -> Result<PushReport> {
        if let Some(d) = target.digest() {
            if d != manifest {
                return Err(Error::DigestMismatch {
                    url: target.to_string(),
                    expected: d.clone(),
                    actual: manifest.clone(),
                });
            }
        }
        let bytes = read_document(store, manifest)?;
        let media_type = crate::pull::manifest_media_type(&bytes, None).map_err(|e| {
            e.into_error(
                format!("store blob {manifest}"),
                "manifest to push",
                manifest,
            )
        })?;
        let mut report = PushReport {
            manifest: manifest.clone(),
            bytes_uploaded: 0,
            blobs_uploaded: 0,
            blobs_skipped: 0,
            blobs_mounted: 0,
        };
        if media_type == rbuild_oci::MEDIA_TYPE_OCI_INDEX
            || media_type == rbuild_oci::MEDIA_TYPE_DOCKER_MANIFEST_LIST
        {
            let index: Index = parse_doc(&bytes, manifest)?;
            for child in &index.manifests {
                let child_bytes = read_document(store, &child.digest)?;
                let child_mt =
                    crate::pull::manifest_media_type(&child_bytes, Some(&child.media_type))
                        .map_err(|e| {
                            e.into_error(
                                format!("store blob {}", child.digest),
                                "manifest inside an index",
                                &child.digest,
                            )
                        })?;
                let m: Manifest = parse_doc(&child_bytes, &child.digest)?;
                self.push_blobs(store, &m, target, progress, &mut report)
                    .await?;
                self.put_manifest(
                    target,
                    &child.digest.to_string(),
                    &child_mt,
                    child_bytes,
                    &child.digest,
                )
                .await?;
            }
        } else {
            let m: Manifest = parse_doc(&bytes, manifest)?;
            self.push_blobs(store, &m, target, progress, &mut report)
                .await?;
        }
        self.put_manifest(
            target,
            &target.tag_or_digest(),
            &media_type,
            bytes,
            manifest,
        )
        .await?;
        Ok(report)
    }

    async fn push_blobs(
        &self,
        store: &Store,
        m: &Manifest,
        target: &Reference,
        progress: ProgressFn<'_>,
        report: &mut PushReport,
    ) -> Result<()> {
        let blobs: Vec<&Descriptor> = std::iter::once(&m.config).chain(&m.layers).collect();
        let outcomes: Vec<Outcome> = futures_util::stream::iter(blobs)
            .map(|d| self.push_blob(store, target, d, progress))
            .buffer_unordered(self.opts.max_concurrent_blobs.max(1))
            .try_collect()
            .await?;
        for o in outcomes {
            match o {
                Outcome::Skipped => report.blobs_skipped += 1,
                Outcome::Mounted => report.blobs_mounted += 1,
                Outcome::Uploaded(n) => {
                    report.blobs_uploaded += 1;
                    report.bytes_uploaded += n;
                }
            }
        }
        Ok(())
    }

    /// Whether `repo` has blob `digest` (HEAD).
    pub async fn has_blob(&self, repo: &Reference, digest: &Digest) -> Result<bool> {
        let url = self.repo_url(repo, &format!("blobs/{digest}"))?;
        let req = Request::new(
            Method::HEAD,
            url.clone(),
            vec![crate::challenge::pull_scope(repo.repository())],
        );
        let resp = self.send(repo.registry(), &req, Some(digest)).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(self, &Method::HEAD, &url, resp).await),
        }
    }

    async fn push_blob(
        &self,
        store: &Store,
        target: &Reference,
        desc: &Descriptor,
        progress: ProgressFn<'_>,
    ) -> Result<Outcome> {
        let digest = &desc.digest;
        if self.has_blob(target, digest).await? {
            self.known_locations().add(digest, target);
            progress(Progress::Skipped {
                digest: digest.clone(),
            });
            return Ok(Outcome::Skipped);
        }
        let push_scope = crate::challenge::push_scope(target.repository());
        let uploads = self.repo_url(target, "blobs/uploads/")?;
        let mut session = None;
        if let Some(from) = self.known_locations().mount_source(digest, target) {
            let mut url = uploads.clone();
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", &from);
            let req = Request::new(
                Method::POST,
                url.clone(),
                vec![push_scope.clone(), crate::challenge::pull_scope(&from)],
            )
            .header(CONTENT_LENGTH, "0");
            let resp = self.send(target.registry(), &req, Some(digest)).await?;
            match resp.status() {
                StatusCode::CREATED => {
                    self.known_locations().add(digest, target);
                    progress(Progress::Mounted {
                        digest: digest.clone(),
                        from,
                    });
                    return Ok(Outcome::Mounted);
                }
                StatusCode::ACCEPTED => {
                    // Mount refused (the hint was stale or we may not read `from`): upload instead.
                    self.known_locations()
                        .remove(digest, target.registry(), &from);
                    session = Some(upload_location(&url, &resp)?);
                }
                _ => {
                    self.known_locations()
                        .remove(digest, target.registry(), &from);
                }
            }
        }
        if !store.has_blob(digest) {
            return Err(Error::BlobUnavailable {
                digest: digest.clone(),
                repository: target.name(),
            });
        }
        let size = store
            .blob_size(digest)
            .map_err(|source| Error::Store {
                operation: "stat",
                digest: digest.to_string(),
                source: Box::new(source),
            })?
            .unwrap_or(0);
        if size != desc.size {
            return Err(Error::SizeMismatch {
                url: format!("store blob {digest}"),
                digest: digest.clone(),
                expected: desc.size,
                actual: size,
            });
        }
        let location = match session {
            Some(l) => l,
            None => self.start_upload(target, &uploads).await?,
        };
        progress(Progress::Started {
            digest: digest.clone(),
            total: size,
            offset: 0,
        });
        if size <= self.opts.monolithic_upload_limit {
            let data = read_range(store, digest, 0, size).await?;
            self.finish_upload(target, location, digest, data).await?;
        } else {
            self.upload_chunks(store, target, location, digest, size, progress)
                .await?;
        }
        self.known_locations().add(digest, target);
        progress(Progress::Done {
            digest: digest.clone(),
            total: size,
        });
        Ok(Outcome::Uploaded(size))
    }

    async fn start_upload(&self, target: &Reference, uploads: &Url) -> Result<Url> {
        let req = Request::new(
            Method::POST,
            uploads.clone(),
            vec![crate::challenge::push_scope(target.repository())],
        )
        .header(CONTENT_LENGTH, "0");
        let resp = self.send(target.registry(), &req, None).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(error_for(
                self,
                &Method::POST,
                uploads,
                resp,
                format!("repository {}", target.name()),
            )
            .await);
        }
        upload_location(uploads, &resp)
    }

    /// `PUT <location>&digest=<d>` with the last (or only) bytes.
    async fn finish_upload(
        &self,
        target: &Reference,
        mut location: Url,
        digest: &Digest,
        data: Bytes,
    ) -> Result<()> {
        location
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let req = Request::new(
            Method::PUT,
            location.clone(),
            vec![crate::challenge::push_scope(target.repository())],
        )
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, &data.len().to_string())
        .body(data);
        let resp = self.send(target.registry(), &req, Some(digest)).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(self, &Method::PUT, &location, resp).await);
        }
        Ok(())
    }

    /// Chunked upload: PATCH `chunk_size` pieces, following the server's `Location` and `Range`.
    async fn upload_chunks(
        &self,
        store: &Store,
        target: &Reference,
        mut location: Url,
        digest: &Digest,
        size: u64,
        progress: ProgressFn<'_>,
    ) -> Result<()> {
        let scopes = vec![crate::challenge::push_scope(target.repository())];
        let mut offset = 0u64;
        while offset < size {
            let len = self.opts.chunk_size.max(1).min(size - offset);
            let data = read_range(store, digest, offset, len).await?;
            let req = Request::new(Method::PATCH, location.clone(), scopes.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, &format!("{}-{}", offset, offset + len - 1))
                .header(CONTENT_LENGTH, &len.to_string())
                .body(data);
            let resp = self.send(target.registry(), &req, Some(digest)).await?;
            let status = resp.status();
            if status == StatusCode::RANGE_NOT_SATISFIABLE {
                // Our idea of the offset is wrong (a retried PATCH that had landed): ask the server.
                let (l, next) = self.upload_status(target, &location).await?;
                location = l;
                offset = next;
                continue;
            }
            if status != StatusCode::ACCEPTED {
                return Err(status_error(self, &Method::PATCH, &location, resp).await);
            }
            let next = server_range_end(&resp).map_or(offset + len, |end| end + 1);
            location = upload_location(&location, &resp)?;
            if next <= offset {
                return Err(Error::InvalidResponse {
                    url: location.to_string(),
                    what: "upload Range",
                    reason: format!("server did not advance past byte {offset}"),
                });
            }
            offset = next.min(size);
            progress(Progress::Bytes {
                digest: digest.clone(),
                done: offset,
                total: size,
            });
        }
        self.finish_upload(target, location, digest, Bytes::new())
            .await
    }

    /// `GET <location>`: the upload session's current location and the next byte it expects.
    async fn upload_status(&self, target: &Reference, location: &Url) -> Result<(Url, u64)> {
        let req = Request::new(
            Method::GET,
            location.clone(),
            vec![crate::challenge::push_scope(target.repository())],
        );
        let resp = self.send(target.registry(), &req, None).await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(status_error(self, &Method::GET, location, resp).await);
        }
        let next = server_range_end(&resp).map_or(0, |e| e + 1);
        Ok((upload_location(location, &resp)?, next))
    }

    pub(crate) async fn put_manifest(
        &self,
        target: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        bytes: Vec<u8>,
        digest: &Digest,
    ) -> Result<()> {
        let url = self.repo_url(target, &format!("manifests/{tag_or_digest}"))?;
        let req = Request::new(
            Method::PUT,
            url.clone(),
            vec![crate::challenge::push_scope(target.repository())],
        )
        .header(CONTENT_TYPE, media_type)
        .body(Bytes::from(bytes));
        let resp = self.send(target.registry(), &req, Some(digest)).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(self, &Method::PUT, &url, resp).await);
        }
        if let Some(claimed) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if claimed != digest.to_string() {
                return Err(Error::DigestHeaderMismatch {
                    url: url.to_string(),
                    claimed: claimed.chars().take(200).collect(),
                    actual: digest.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The upload session URL from a response's `Location` (relative ones resolved against `base`).
fn upload_location(base: &Url, resp: &reqwest::Response) -> Result<Url> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::InvalidResponse {
            url: base.to_string(),
            what: "upload response",
            reason: "no Location header".into(),
        })?;
    base.join(loc).map_err(|e| Error::InvalidResponse {
        url: base.to_string(),
        what: "upload Location",
        reason: e.to_string(),
    })
}

/// The last byte the server has, from its `Range: 0-<end>` header.
fn server_range_end(resp: &reqwest::Response) -> Option<u64> {
    parse_range_end(resp.headers().get(RANGE)?.to_str().ok()?)
}

fn parse_range_end(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    v.split_once('-')?.1.trim().parse().ok()
}

fn read_document(store: &Store, d: &Digest) -> Result<Vec<u8>> {
    store
        .read_blob(d, MAX_MANIFEST_SIZE)
        .map_err(|source| Error::Store {
            operation: "read manifest",
            digest: d.to_string(),
            source: Box::new(source),
        })
}

fn parse_doc<T: serde::de::DeserializeOwned>(bytes: &[u8], d: &Digest) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidResponse {
        url: format!("store blob {d}"),
        what: "manifest",
        reason: e.to_string(),
    })
}

/// `len` bytes of a stored blob from `offset`, read off the async threads.
async fn read_range(store: &Store, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
    let file = store.open_blob(digest).map_err(|source| Error::Store {
        operation: "open",
        digest: digest.to_string(),
        source: Box::new(source),
    })?;
    let path = store.blob_path(digest);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map(|_| Bytes::from(buf))
    })
    .await
    .map_err(|e| Error::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?
    .map_err(|source| Error::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_header() {
        assert_eq!(parse_range_end("0-1023"), Some(1023));
        assert_eq!(parse_range_end("bytes=0-9"), Some(9));
        assert_eq!(parse_range_end("0-"), None);
        assert_eq!(parse_range_end("junk"), None);
    }
}
