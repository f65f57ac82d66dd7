//! Client options: which registries may be plain HTTP, extra CA, where credentials live, timeouts.

use std::path::PathBuf;
use std::time::Duration;

/// How the [`crate::Client`] connects and how patient it is.
#[derive(Clone, Debug)]
pub struct Options {
    /// Registries (`host[:port]`) reached over plain HTTP. `localhost`, `127.0.0.0/8` and `::1` always
    /// are; everything else uses HTTPS.
    pub insecure_registries: Vec<String>,
    /// Registries spoken to over HTTPS even though they are on loopback (a local registry with TLS).
    pub force_https: Vec<String>,
    /// An extra PEM CA bundle trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// More PEM CA bundles trusted besides the system roots (docker's `certs.d/<host>/ca.crt`).
    pub extra_ca_files: Vec<PathBuf>,
    /// Directory holding `config.json`; `None` means `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// A transfer that receives no byte for this long is aborted (and retried within `deadline`).
    pub stall_timeout: Duration,
    /// A request (without a body to send) whose response headers do not arrive within this long
    /// is aborted and retried (`RBUILD_REGISTRY_FIRST_BYTE_TIMEOUT`).
    pub first_byte_timeout: Duration,
    /// The minimum-throughput rule, as curl's `--speed-limit`/`--speed-time`: a body that brings
    /// fewer than `speed_limit` bytes per second on average over `speed_time` is aborted and
    /// retried (`RBUILD_REGISTRY_SPEED_LIMIT`, `RBUILD_REGISTRY_SPEED_TIME`). 0 turns it off.
    pub speed_limit: u64,
    pub speed_time: Duration,
    /// Once the failures of an operation are timeouts (no answer, stalled or too slow), it is not
    /// tried again after this long since its first attempt, so a misbehaving server fails within
    /// about a minute in all (`RBUILD_REGISTRY_TIMEOUT_BUDGET`).
    pub timeout_budget: Duration,
    /// Retries of one request stop when this much time has passed since its first attempt.
    pub deadline: Duration,
    pub retry: RetryPolicy,
    /// Blobs transferred at once in a pull or push.
    pub max_concurrent_blobs: usize,
    /// Blobs up to this size are uploaded with one PUT; larger ones in PATCH chunks of `chunk_size`.
    pub monolithic_upload_limit: u64,
    pub chunk_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure_registries: Vec::new(),
            force_https: Vec::new(),
            ca_file: None,
            extra_ca_files: Vec::new(),
            docker_config_dir: None,
            user_agent: concat!("rbuild/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            first_byte_timeout: Duration::from_secs(20),
            speed_limit: 1024,
            speed_time: Duration::from_secs(20),
            timeout_budget: Duration::from_secs(40),
            deadline: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            max_concurrent_blobs: 4,
            monolithic_upload_limit: 16 << 20,
            chunk_size: 16 << 20,
        }
    }
}

impl Options {
    /// These options with the timeouts set in the environment: `RBUILD_REGISTRY_FIRST_BYTE_TIMEOUT`,
    /// `RBUILD_REGISTRY_SPEED_TIME` and `RBUILD_REGISTRY_TIMEOUT_BUDGET` (seconds, fractions
    /// allowed) and `RBUILD_REGISTRY_SPEED_LIMIT` (bytes per second, 0 = off). A bad value is an
    /// error naming the variable.
    pub fn with_env(mut self) -> Result<Options, String> {
        fn secs(name: &str) -> Result<Option<Duration>, String> {
            let Some(v) = rbuild_inputs::var(name) else {
                return Ok(None);
            };
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                .map(|s| Some(Duration::from_secs_f64(s)))
                .ok_or_else(|| format!("{name}={v:?}: expected a positive number of seconds"))
        }
        if let Some(d) = secs("RBUILD_REGISTRY_FIRST_BYTE_TIMEOUT")? {
            self.first_byte_timeout = d;
        }
        if let Some(d) = secs("RBUILD_REGISTRY_SPEED_TIME")? {
            self.speed_time = d;
        }
        if let Some(d) = secs("RBUILD_REGISTRY_TIMEOUT_BUDGET")? {
            self.timeout_budget = d;
        }
        if let Some(v) = rbuild_inputs::var("RBUILD_REGISTRY_SPEED_LIMIT") {
            self.speed_limit = v.trim().parse().map_err(|_| {
                format!("RBUILD_REGISTRY_SPEED_LIMIT={v:?}: expected bytes per second")
            })?;
        }
        Ok(self)
    }
}

/// Exponential backoff with jitter for transient failures.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in total (the first one included).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (attempt counts from 1), with up to 25% jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(self.max_backoff);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        base + jitter
    }
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether `host` (as in a reference: `host[:port]`) is loopback.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.evil.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn retry_after() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy::default();
        assert!(p.backoff(1) >= Duration::from_millis(200));
        assert!(p.backoff(1) <= Duration::from_millis(250));
        assert!(p.backoff(3) >= Duration::from_millis(800));
        assert!(p.backoff(30) <= Duration::from_millis(12_500));
    }
}
