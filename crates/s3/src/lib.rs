//! # rbuild-s3 — the S3 side of `--cache-to/--cache-from type=s3`
//!
//! A small blocking S3 client: HEAD, GET, PUT and a touch (copy-onto-itself) of objects, signed
//! with AWS Signature V4, path-style (`use_path_style=true`, what MinIO, Ceph and moto want) or
//! virtual-host style. [`S3Options::parse`] reads BuildKit's cache options (`bucket`, `region`,
//! `endpoint_url`, `prefix`, `blobs_prefix`, `manifests_prefix`, `name`, `use_path_style`,
//! `access_key_id`, `secret_access_key`, `session_token`, `upload_parallelism`, `touch_refresh`);
//! credentials not given as options come from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
//! `AWS_SESSION_TOKEN`, then the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default`).
//!
//! The object layout is BuildKit's: blobs at `<prefix><blobs_prefix><digest>` (`blobs/sha256:…`)
//! and the cache manifest at `<prefix><manifests_prefix><name>` ([`S3Options::blob_key`],
//! [`S3Options::manifest_key`]); what the manifest holds is the caller's business.
//!
//! Every request is counted ([`Client::requests`]) so benchmarks can say how many a round trip
//! made. Not an async client: call it from blocking threads.

mod sign;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("s3 cache: {0}")]
    Options(String),
    #[error("s3 cache: no credentials: give access_key_id and secret_access_key, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add profile [{profile}] to {file}")]
    NoCredentials { profile: String, file: String },
    #[error("s3 {method} {url}: {status}{detail}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("s3 {method} {url}: {source}")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("s3 GET {url}: object is larger than {cap} bytes")]
    TooLarge { url: String, cap: u64 },
    #[error("s3: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The option keys [`S3Options::parse`] understands (besides the cache-level `type`, `mode`,
/// `ignore-error`, which the caller reads).
pub const KEYS: &[&str] = &[
    "bucket",
    "region",
    "endpoint_url",
    "prefix",
    "blobs_prefix",
    "manifests_prefix",
    "name",
    "use_path_style",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "upload_parallelism",
    "touch_refresh",
];

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct S3Options {
    pub bucket: String,
    pub region: String,
    /// `scheme://host[:port]`, no trailing slash.
    pub endpoint: String,
    pub path_style: bool,
    pub prefix: String,
    pub blobs_prefix: String,
    pub manifests_prefix: String,
    /// Manifest names (`name=a;b` writes both; reads take the first that exists).
    pub names: Vec<String>,
    pub upload_parallelism: usize,
    pub touch_refresh: Duration,
    pub credentials: Credentials,
}

impl S3Options {
    /// Read BuildKit's s3 options from `attrs` (keys of [`KEYS`]; others are ignored here).
    pub fn parse(attrs: &BTreeMap<String, String>) -> Result<S3Options> {
        Self::parse_with_env(attrs, &rbuild_inputs::var)
    }

    /// [`S3Options::parse`] with the environment given (tests).
    pub fn parse_with_env(
        attrs: &BTreeMap<String, String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Options> {
        let get = |k: &str| attrs.get(k).filter(|v| !v.is_empty()).cloned();
        let bucket = get("bucket").ok_or_else(|| Error::Options("bucket= is required".into()))?;
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(Error::Options(format!(
                "bucket {bucket:?} is not a valid bucket name"
            )));
        }
        let region = get("region")
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .ok_or_else(|| Error::Options("region= is required (or set AWS_REGION)".into()))?;
        let path_style = match get("use_path_style").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(Error::Options(format!(
                    "use_path_style={v}: expected true or false"
                )))
            }
        };
        let endpoint = match get("endpoint_url") {
            Some(e) => {
                let e = e.trim_end_matches('/').to_string();
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(Error::Options(format!(
                        "endpoint_url={e}: expected http:// or https://"
                    )));
                }
                e
            }
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let upload_parallelism = match get("upload_parallelism") {
            None => 4,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| Error::Options(format!("upload_parallelism={v}: expected 1..64")))?,
        };
        let touch_refresh = match get("touch_refresh") {
            None => Duration::from_secs(24 * 3600),
            Some(v) => parse_duration(&v).ok_or_else(|| {
                Error::Options(format!("touch_refresh={v}: expected e.g. 24h, 30m"))
            })?,
        };
        let names: Vec<String> = get("name")
            .unwrap_or_else(|| "buildkit".into())
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let credentials = match (get("access_key_id"), get("secret_access_key")) {
            (Some(a), Some(s)) => Credentials {
                access_key_id: a,
                secret_access_key: s,
                session_token: get("session_token"),
            },
            _ => credentials_from_env(env)?,
        };
        Ok(S3Options {
            bucket,
            region,
            endpoint,
            path_style,
            prefix: get("prefix").unwrap_or_default(),
            blobs_prefix: attrs
                .get("blobs_prefix")
                .cloned()
                .unwrap_or_else(|| "blobs/".into()),
            manifests_prefix: attrs
                .get("manifests_prefix")
                .cloned()
                .unwrap_or_else(|| "manifests/".into()),
            names,
            upload_parallelism,
            touch_refresh,
            credentials,
        })
    }

    /// `<prefix><blobs_prefix><algorithm>:<hex>`, as BuildKit names blob objects.
    pub fn blob_key(&self, digest: &str) -> String {
        format!("{}{}{}", self.prefix, self.blobs_prefix, digest)
    }

    /// `<prefix><manifests_prefix><name>`.
    pub fn manifest_key(&self, name: &str) -> String {
        format!("{}{}{}", self.prefix, self.manifests_prefix, name)
    }

    /// For messages: `s3://bucket/prefix` at the endpoint.
    pub fn describe(&self) -> String {
        format!("s3://{}/{} ({})", self.bucket, self.prefix, self.endpoint)
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn credentials_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials> {
    if let (Some(a), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        if !a.is_empty() && !s.is_empty() {
            return Ok(Credentials {
                access_key_id: a,
                secret_access_key: s,
                session_token: env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
            });
        }
    }
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")))
        .unwrap_or_else(|| PathBuf::from("~/.aws/credentials"));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let section = ini_section(&text, &profile);
    match (
        section.get("aws_access_key_id"),
        section.get("aws_secret_access_key"),
    ) {
        (Some(a), Some(s)) => Ok(Credentials {
            access_key_id: a.clone(),
            secret_access_key: s.clone(),
            session_token: section.get("aws_session_token").cloned(),
        }),
        _ => Err(Error::NoCredentials {
            profile,
            file: file.display().to_string(),
        }),
    }
}

/// The `key = value` pairs of `[name]` in an INI text.
fn ini_section(text: &str, name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(sec) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = sec.trim() == name;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

/// A blocking S3 client for one bucket.
pub struct Client {
    opts: S3Options,
    http: reqwest::blocking::Client,
    requests: AtomicU64,
}

impl Client {
    pub fn new(opts: S3Options) -> Result<Client> {
        let timeout = rbuild_inputs::var("RBUILD_S3_TIMEOUT")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(600);
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(timeout))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Transport {
                method: "client",
                url: opts.endpoint.clone(),
                source,
            })?;
        Ok(Client {
            opts,
            http,
            requests: AtomicU64::new(0),
        })
    }

    pub fn options(&self) -> &S3Options {
        &self.opts
    }

    /// How many HTTP requests this client has sent.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The object's size, or `None` when it does not exist.
    pub fn head(&self, key: &str) -> Result<Option<u64>> {
        let (url, req) = self.request(reqwest::Method::HEAD, key, sign::EMPTY_SHA256, &[])?;
        let resp = self.send("HEAD", &url, req)?;
        match resp.status().as_u16() {
            // The header itself: for HEAD, reqwest's content_length() is the (empty) body's.
            200 => Ok(Some(
                resp.headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            s => Err(status_error("HEAD", &url, s, resp)),
        }
    }

    /// Stream the object into `w`; `None` when it does not exist. More than `cap` bytes is an error.
    pub fn get_to(&self, key: &str, w: &mut dyn Write, cap: u64) -> Result<Option<u64>> {
        let (url, req) = self.request(reqwest::Method::GET, key, sign::EMPTY_SHA256, &[])?;
        let mut resp = self.send("GET", &url, req)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => return Err(status_error("GET", &url, s, resp)),
        }
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(Error::TooLarge { url, cap });
        }
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = resp.read(&mut buf).map_err(|e| {
                Error::Io(std::io::Error::new(e.kind(), format!("s3 GET {url}: {e}")))
            })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > cap {
                return Err(Error::TooLarge { url, cap });
            }
            w.write_all(&buf[..n])?;
        }
        Ok(Some(total))
    }

    /// The whole object, capped; `None` when it does not exist.
    pub fn get_bytes(&self, key: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let mut v = Vec::new();
        Ok(self.get_to(key, &mut v, cap)?.map(|_| v))
    }

    /// Put `bytes` at `key`.
    pub fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let hash = sign::sha256_hex(&bytes);
        let len = bytes.len() as u64;
        let (url, req) = self.request(reqwest::Method::PUT, key, &hash, &[])?;
        let req = req.header(reqwest::header::CONTENT_LENGTH, len).body(bytes);
        let resp = self.send("PUT", &url, req)?;
        match resp.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            s => Err(status_error("PUT", &url, s, resp)),
        }
    }

    /// Put the file at `path` at `key`. `sha256_hex`: the file's sha256 when the caller knows it
    /// (a blob's digest), so the payload is signed without reading the file twice.
    pub fn put_file(&self, key: &str, path: &Path, sha256_hex: Option<&str>) -> Result<()> {
        let hash = match sha256_hex {
            Some(h) => h.to_string(),
            None => sign::sha256_file(path)?,
        };
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let (url, req) = self.request(reqwest::Method::PUT, key, &hash, &[])?;
        let req = req
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::blocking::Body::sized(file, len));
        let resp = self.send("PUT", &url, req)?;
        match resp.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            s => Err(status_error("PUT", &url, s, resp)),
        }
    }

    /// Create the bucket (tests and first-time set-up; a bucket that exists already is fine).
    pub fn create_bucket(&self) -> Result<()> {
        let (url, req) = self.request(reqwest::Method::PUT, "", sign::EMPTY_SHA256, &[])?;
        let resp = self.send("PUT", &url, req)?;
        match resp.status().as_u16() {
            200 | 409 => Ok(()),
            s => Err(status_error("PUT", &url, s, resp)),
        }
    }

    /// Refresh the object's last-modified time (a copy onto itself, metadata replaced), so bucket
    /// lifecycle rules see it as used — BuildKit's `touch_refresh`.
    pub fn touch(&self, key: &str) -> Result<()> {
        let source = format!("/{}/{}", self.opts.bucket, sign::uri_encode(key, false));
        let extra = [
            ("x-amz-copy-source", source.as_str()),
            ("x-amz-metadata-directive", "REPLACE"),
        ];
        let (url, req) = self.request(reqwest::Method::PUT, key, sign::EMPTY_SHA256, &extra)?;
        let resp = self.send("PUT", &url, req)?;
        match resp.status().as_u16() {
            200 => Ok(()),
            s => Err(status_error("PUT", &url, s, resp)),
        }
    }

    fn url_and_host(&self, key: &str) -> (String, String, String) {
        let (scheme, authority) = self
            .opts
            .endpoint
            .split_once("://")
            .unwrap_or(("https", &self.opts.endpoint));
        let key_path = sign::uri_encode(key, false);
        if self.opts.path_style {
            let path = format!("/{}/{}", self.opts.bucket, key_path);
            (
                format!("{scheme}://{authority}{path}"),
                authority.to_string(),
                path,
            )
        } else {
            let host = format!("{}.{}", self.opts.bucket, authority);
            let path = format!("/{key_path}");
            (format!("{scheme}://{host}{path}"), host, path)
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        payload_sha256: &str,
        extra: &[(&str, &str)],
    ) -> Result<(String, reqwest::blocking::RequestBuilder)> {
        let (url, host, path) = self.url_and_host(key);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let signed = sign::sign(&sign::Input {
            method: method.as_str(),
            host: &host,
            path: &path,
            query: "",
            payload_sha256,
            region: &self.opts.region,
            creds: &self.opts.credentials,
            time: now,
            extra_headers: extra,
        });
        let mut req = self.http.request(method, &url);
        for (k, v) in signed {
            req = req.header(k, v);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        Ok((url, req))
    }

    fn send(
        &self,
        method: &'static str,
        url: &str,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        req.send().map_err(|source| Error::Transport {
            method,
            url: url.to_string(),
            source,
        })
    }
}

fn status_error(
    method: &'static str,
    url: &str,
    status: u16,
    resp: reqwest::blocking::Response,
) -> Error {
    let mut body = String::new();
    let _ = resp.take(4096).read_to_string(&mut body);
    // S3 errors are XML: keep the <Code> and <Message>.
    let pick = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        body.split_once(&open)
            .and_then(|(_, r)| r.split_once(&close))
            .map(|(v, _)| v.to_string())
    };
    let detail = match (pick("Code"), pick("Message")) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        _ => String::new(),
    };
    Error::Status {
        method,
        url: url.to_string(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_and_layout() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            _ => None,
        };
        let o = S3Options::parse_with_env(
            &attrs(&[
                ("bucket", "cache"),
                ("region", "us-east-1"),
                ("endpoint_url", "http://127.0.0.1:9000/"),
                ("use_path_style", "true"),
                ("prefix", "ci/"),
                ("name", "main;pr-7"),
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(o.endpoint, "http://127.0.0.1:9000");
        assert!(o.path_style);
        assert_eq!(o.names, ["main", "pr-7"]);
        assert_eq!(o.blob_key("sha256:ab"), "ci/blobs/sha256:ab");
        assert_eq!(o.manifest_key("main"), "ci/manifests/main");
        assert_eq!(o.credentials.access_key_id, "AK");
        assert_eq!(o.upload_parallelism, 4);
        assert_eq!(o.touch_refresh, Duration::from_secs(86400));
        let c = Client::new(o).unwrap();
        let (url, host, path) = c.url_and_host("ci/blobs/sha256:ab");
        assert_eq!(url, "http://127.0.0.1:9000/cache/ci/blobs/sha256%3Aab");
        assert_eq!(host, "127.0.0.1:9000");
        assert_eq!(path, "/cache/ci/blobs/sha256%3Aab");
    }

    #[test]
    fn bad_options() {
        let env = |_: &str| None;
        for (kv, want) in [
            (vec![("region", "r")], "bucket= is required"),
            (vec![("bucket", "b")], "region= is required"),
            (
                vec![("bucket", "B_ad"), ("region", "r")],
                "not a valid bucket",
            ),
            (
                vec![("bucket", "b"), ("region", "r"), ("use_path_style", "yes")],
                "use_path_style=yes",
            ),
            (
                vec![
                    ("bucket", "b"),
                    ("region", "r"),
                    ("endpoint_url", "ftp://x"),
                ],
                "endpoint_url=ftp://x",
            ),
            (vec![("bucket", "b"), ("region", "r")], "no credentials"),
        ] {
            let err = S3Options::parse_with_env(&attrs(&kv), &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{kv:?}: {err}");
        }
    }

    #[test]
    fn shared_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\n[ci]\naws_access_key_id=C\naws_secret_access_key=CS\naws_session_token=T\n",
        )
        .unwrap();
        let path = f.to_string_lossy().into_owned();
        let env = |k: &str| match k {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(path.clone()),
            "AWS_PROFILE" => Some("ci".to_string()),
            _ => None,
        };
        let o =
            S3Options::parse_with_env(&attrs(&[("bucket", "b"), ("region", "r")]), &env).unwrap();
        assert_eq!(o.credentials.access_key_id, "C");
        assert_eq!(o.credentials.session_token.as_deref(), Some("T"));
        assert!(
            !format!("{:?}", o.credentials).contains("CS"),
            "secret not in Debug"
        );
    }
}
