//! Errors of the registry client. Every variant says what failed, where (URL, digest, path) and why.
//! None of them ever carries a credential: URLs we build hold none, and headers are never included.

use rbuild_oci::Digest;
use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),

    #[error("{method} {url}: {source}{}", root_cause(.source))]
    Http {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("{method} {url}: registry answered {status}{}", fmt_detail(.detail))]
    Status {
        method: String,
        url: String,
        status: u16,
        /// The registry's error codes and messages (`NAME_UNKNOWN: repository name not known`).
        detail: String,
    },

    #[error("{url}: authentication to {registry} failed{}: {reason}", if *.had_credentials { " with the configured credentials" } else { " (no credentials configured; try `rbuild login`)" })]
    Unauthorized {
        registry: String,
        url: String,
        had_credentials: bool,
        reason: String,
    },

    #[error("{url}: {what} not found{}", fmt_detail(.detail))]
    NotFound {
        what: String,
        url: String,
        detail: String,
    },

    #[error("{url}: content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },

    #[error("{url}: registry says Docker-Content-Digest {claimed} but the content is {actual}")]
    DigestHeaderMismatch {
        url: String,
        claimed: String,
        actual: Digest,
    },

    #[error("{url}: blob {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        url: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error("{url}: {what} is larger than the {limit}-byte limit")]
    TooLarge {
        url: String,
        what: String,
        limit: u64,
    },

    #[error("{url}: no data received for {}s (stalled){}", .after.as_secs(), digest_suffix(.digest))]
    Stalled {
        url: String,
        digest: Option<Digest>,
        after: Duration,
    },

    #[error("{url}: no response within {}s{}", .after.as_secs_f64(), digest_suffix(.digest))]
    NoResponse {
        url: String,
        digest: Option<Digest>,
        after: Duration,
    },

    #[error(
        "{url}: transfer too slow: {bytes} bytes in {}s, under the minimum of {limit} bytes/s \
         (RBUILD_REGISTRY_SPEED_LIMIT / RBUILD_REGISTRY_SPEED_TIME){}",
        .window.as_secs_f64(), digest_suffix(.digest)
    )]
    TooSlow {
        url: String,
        digest: Option<Digest>,
        bytes: u64,
        window: Duration,
        limit: u64,
    },

    #[error("registry client options: {0}")]
    BadOption(String),

    #[error("{url}: gave up after {attempts} attempts within the {}s deadline{}: {last}", .deadline.as_secs(), digest_suffix(.digest))]
    GaveUp {
        url: String,
        digest: Option<Digest>,
        attempts: u32,
        deadline: Duration,
        #[source]
        last: Box<Error>,
    },

    #[error("{operation} did not finish within its {}s deadline", .deadline.as_secs())]
    Deadline {
        operation: String,
        deadline: Duration,
    },

    #[error("{url}: invalid {what}: {reason}")]
    InvalidResponse {
        url: String,
        what: &'static str,
        reason: String,
    },

    #[error("{url}: {what} {digest} is ambiguous, refused (CVE-2021-41190): {reason}")]
    Ambiguous {
        url: String,
        what: &'static str,
        digest: Digest,
        reason: String,
    },

    #[error("{url}: unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        url: String,
        what: &'static str,
        media_type: String,
    },

    #[error("{reference}: no manifest for platform {wanted} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: String,
    },

    #[error("content store: {operation} {digest}: {source}")]
    Store {
        operation: &'static str,
        digest: String,
        #[source]
        source: Box<rbuild_store::StoreError>,
    },

    #[error("blob {digest} is neither in the local store nor in {repository}; cannot push it")]
    BlobUnavailable { digest: Digest, repository: String },

    #[error("{}: {reason}", .path.display())]
    Config { path: PathBuf, reason: String },

    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        helper: String,
        registry: String,
        reason: String,
    },

    #[error("building the HTTP client: {0}")]
    ClientSetup(String),
}

fn fmt_detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}

/// reqwest's own message is often just "error sending request"; the innermost cause says why
/// (a DNS failure, a refused connection).
fn root_cause(e: &reqwest::Error) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let msg = cur.to_string();
    if msg == e.to_string() {
        String::new()
    } else {
        format!(": {msg}")
    }
}

fn digest_suffix(d: &Option<Digest>) -> String {
    match d {
        Some(d) => format!(" while fetching {d}"),
        None => String::new(),
    }
}

impl Error {
    /// Whether this is a server taking too long (no answer, stalled, too slow): retried only within
    /// [`crate::Options::timeout_budget`].
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Stalled { .. } | Error::NoResponse { .. } | Error::TooSlow { .. } => true,
            Error::Http { source, .. } => source.is_timeout(),
            _ => false,
        }
    }

    /// Whether trying again may help: connection errors, timeouts, 5xx, 429, stalls.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { source, .. } => {
                !is_tls_failure(source)
                    && !is_dns_failure(source)
                    && (source.is_connect()
                        || source.is_timeout()
                        || source.is_request()
                        || source.is_body()
                        || source.is_decode())
            }
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::Stalled { .. } | Error::NoResponse { .. } | Error::TooSlow { .. } => true,
            Error::SizeMismatch {
                expected, actual, ..
            } => actual < expected,
            _ => false,
        }
    }
}

/// A host name that does not resolve (no network, a typo) will not resolve a second later either:
/// failing at once beats six backed-off retries.
pub(crate) fn is_dns_failure(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if msg.contains("dns error") || msg.contains("failed to lookup address") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A TLS verification failure (untrusted or wrong certificate) will not go away by retrying.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        if c.to_string().contains("certificate") {
            return true;
        }
        cur = c.source();
    }
    false
}
