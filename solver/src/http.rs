//! `ADD <http(s) URL>`: downloading a remote file into the store, bounded in size and time.
//!
//! Cache keys: with `--checksum=sha256:…` the checksum *is* the content key, so nothing is
//! downloaded unless the step that uses the file actually runs. Without a checksum the file is
//! downloaded while keys are computed (pass 1) and keyed by the sha256 of its content, as BuildKit
//! does — a changed remote file is a cache miss, an unchanged one a hit. `Last-Modified` becomes the
//! file's mtime but, like every mtime, never feeds a key. The download lands in the content store as
//! a blob (so a second use in the same or a later build, with the same checksum, costs nothing).

use crate::record::ContentInfo;
use crate::state::{Node, Realized, Run};
use crate::SolveError;
use rbuild_oci::Digest;
use rbuild_ops::{BuildDefinition, Op, Source, VertexId};
use rbuild_store::Store;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::time::Duration;

/// Largest download accepted (bytes); `RBUILD_HTTP_MAX_BYTES` overrides.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 8 << 30;
/// Whole-download time limit; `RBUILD_HTTP_TIMEOUT_SECS` overrides.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A downloaded file, stored as a blob.
#[derive(Clone, Debug)]
pub(crate) struct Fetched {
    pub blob: Digest,
    /// `Last-Modified`, unix seconds.
    pub mtime: Option<i64>,
}

fn limits() -> (u64, Duration) {
    let max = rbuild_inputs::var("RBUILD_HTTP_MAX_BYTES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_BYTES);
    let t = rbuild_inputs::var("RBUILD_HTTP_TIMEOUT_SECS")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    (max, t)
}

/// Download `url` into the store; verify `expected` when given. Blocking: call it off the async
/// runtime.
pub(crate) fn fetch(
    store: &Store,
    url: &str,
    expected: Option<&Digest>,
) -> Result<Fetched, String> {
    let (max, timeout) = limits();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url}: only http and https URLs can be downloaded"));
    }
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("{url}: HTTP client: {e}"))?;
    let mut resp = client
        .get(url)
        .send()
        .map_err(|e| format!("downloading {url}: {}", error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("downloading {url}: server answered {status}"));
    }
    if let Some(len) = resp.content_length() {
        if len > max {
            return Err(format!(
                "downloading {url}: {len} bytes is over the limit of {max} (RBUILD_HTTP_MAX_BYTES)"
            ));
        }
    }
    let mtime = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let mut w = store
        .ingest()
        .map_err(|e| format!("downloading {url}: {e}"))?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = resp
            .read(&mut buf)
            .map_err(|e| format!("downloading {url}: {e}"))?;
        if n == 0 {
            break;
        }
        if w.written() + n as u64 > max {
            return Err(format!(
                "downloading {url}: more than the limit of {max} bytes (RBUILD_HTTP_MAX_BYTES)"
            ));
        }
        w.write_all(&buf[..n])
            .map_err(|e| format!("downloading {url}: {}", w.error("write download", e)))?;
    }
    let size = w.written();
    let (blob, _) = w.commit(expected.map(|d| (d, size))).map_err(|e| match e {
        rbuild_store::StoreError::DigestMismatch {
            expected, actual, ..
        } => format!("{url}: checksum mismatch: expected {expected}, got {actual}"),
        e => format!("downloading {url}: {e}"),
    })?;
    Ok(Fetched { blob, mtime })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The name a download is written under: one plain path component.
pub(crate) fn check_filename(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!("bad file name {name:?} for a download"));
    }
    Ok(())
}

/// `Last-Modified` times of downloads made in this process, by blob digest (content-addressed, so
/// valid across builds).
static MTIMES: std::sync::Mutex<Option<std::collections::HashMap<Digest, Option<i64>>>> =
    std::sync::Mutex::new(None);

fn remember(f: &Fetched) {
    if let Ok(mut m) = MTIMES.lock() {
        m.get_or_insert_with(Default::default)
            .insert(f.blob.clone(), f.mtime);
    }
}

fn known_mtime(d: &Digest) -> Option<Option<i64>> {
    MTIMES.lock().ok()?.as_ref()?.get(d).copied()
}

/// Pass 1 for downloads: every `Source::Http` without a checksum is fetched now and keyed by its
/// content (content index 0 of that vertex). Downloads run concurrently on the blocking pool.
pub(crate) async fn content_keys(
    store: &std::sync::Arc<Store>,
    def: &BuildDefinition,
    order: &[VertexId],
    content: &mut HashMap<VertexId, BTreeMap<usize, ContentInfo>>,
) -> Result<(), SolveError> {
    let mut handles = Vec::new();
    for &id in order {
        let v = def.graph.vertex(id);
        let Op::Source(Source::Http {
            url,
            checksum: None,
            ..
        }) = &v.op
        else {
            continue;
        };
        let store = store.clone();
        let url = url.clone();
        let (instruction, span) = (v.meta.instruction.clone(), v.meta.span.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            fetch(&store, &url, None)
                .map(|f| (id, f))
                .map_err(|message| SolveError::Step {
                    instruction,
                    span,
                    message,
                })
        }));
    }
    for h in handles {
        let (id, f) = h
            .await
            .map_err(|e| SolveError::Internal(format!("download task failed: {e}")))??;
        remember(&f);
        content.entry(id).or_default().insert(
            0,
            ContentInfo {
                checksum: f.blob.clone(),
                files: None,
            },
        );
    }
    Ok(())
}

/// Realize a `Source::Http` vertex: a snapshot holding just `filename` (mode 0600, owned by root,
/// `Last-Modified` as mtime). The snapshot is named by the vertex key and reused while it exists.
pub(crate) fn realize(
    run: &Run,
    node: &Node,
    url: &str,
    checksum: Option<&Digest>,
    filename: &str,
) -> Result<Realized, String> {
    check_filename(filename)?;
    let store = &run.solver.store;
    let snaps = &run.solver.snapshotter;
    let name = format!("http-{}", node.key.hex());
    if snaps.exists(&name) {
        return Ok(Realized::source(name));
    }
    // The content: keyed in pass 1 (no checksum), or by its checksum.
    let keyed = checksum
        .cloned()
        .or_else(|| node.explain.content.get(&0).map(|c| c.checksum.clone()));
    let fetched = match keyed {
        Some(d) if store.has_blob(&d) && known_mtime(&d).is_some() => Fetched {
            mtime: known_mtime(&d).flatten(),
            blob: d,
        },
        _ => {
            let f = fetch(store, url, checksum)?;
            remember(&f);
            f
        }
    };
    crate::apply::commit_filled(&**snaps, "http-active", None, &name, |upper, _key| {
        let path = upper.join(filename);
        let mut src = store
            .open_blob(&fetched.blob)
            .map_err(|e| format!("download {}: {e}", fetched.blob))?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            std::io::copy(&mut src, &mut out)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            if let Some(t) = fetched.mtime {
                let t = std::time::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
                out.set_modified(t)
                    .map_err(|e| format!("setting mtime of {}: {e}", path.display()))?;
            }
        }
        Ok(())
    })?;
    Ok(Realized::source(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames() {
        assert!(check_filename("a.tar.gz").is_ok());
        for bad in ["", ".", "..", "a/b", "/x"] {
            assert!(check_filename(bad).is_err(), "{bad}");
        }
    }
}
