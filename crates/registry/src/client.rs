//! The HTTP side of the client: endpoints, authentication, redirects, retries, capped reads.
//!
//! Every request goes through [`Client::send`]: it attaches credentials only for the registry's own
//! origin (a redirect to another host — e.g. blob storage — gets no `Authorization`), answers a 401
//! challenge once (Basic, or Bearer with a token fetched for the request's scopes and cached), follows
//! up to 5 redirects, and retries connection errors, stalls, 5xx and 429 (honouring `Retry-After`)
//! with backoff until [`Options::deadline`].

use crate::challenge::Challenge;
use crate::credentials::{Credential, DockerConfig};
use crate::error::{Error, Result};
use crate::locations::KnownLocations;
use crate::options::{is_loopback_host, parse_retry_after, Options};
use base64::Engine as _;
use bytes::Bytes;
use rbuild_oci::Digest;
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use url::Url;

const MAX_REDIRECTS: usize = 5;
const MAX_ERROR_BODY: u64 = 64 << 10;
const MAX_TOKEN_BODY: u64 = 1 << 20;

/// An OCI distribution-spec client. Cheap to share (`&Client` everywhere); holds per-registry auth
/// state (the challenge seen, cached credentials, bearer tokens per scope) and the
/// [`KnownLocations`] hints used for cross-repository mounts.
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) opts: Options,
    docker_config: DockerConfig,
    hosts: Mutex<HashMap<String, HostState>>,
    token_fetch: tokio::sync::Mutex<()>,
    locations: KnownLocations,
}

#[derive(Default)]
struct HostState {
    challenge: Option<Challenge>,
    credential: Option<Option<Credential>>,
    tokens: HashMap<String, (String, Instant)>,
    /// `login` is checking a password: ask the token server for an identity token.
    login: bool,
    /// The refresh token the token server issued during `login`.
    issued_refresh_token: Option<String>,
}

/// What a token server answered (token spec and `oauth.md`).
struct TokenResponse {
    token: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
}

/// The `client_id` rbuild names itself with to token servers.
const OAUTH_CLIENT_ID: &str = "rbuild";

/// The form fields every OAuth2 token request carries.
fn oauth_form<'a>(
    grant_type: &'a str,
    service: Option<&'a str>,
    scopes: &[String],
) -> impl Iterator<Item = (&'static str, String)> + 'a {
    [
        ("grant_type", Some(grant_type.to_string())),
        ("client_id", Some(OAUTH_CLIENT_ID.to_string())),
        ("service", service.map(str::to_string)),
        ("scope", (!scopes.is_empty()).then(|| scopes.join(" "))),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
}

/// One request, replayable: the body is `Bytes` so retries and auth round-trips can resend it.
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Bearer token scopes this request needs (`repository:a/b:pull`).
    pub scopes: Vec<String>,
}

impl Request {
    pub fn new(method: Method, url: Url, scopes: Vec<String>) -> Request {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            scopes,
        }
    }
    pub fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Request {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
    pub fn body(mut self, body: Bytes) -> Request {
        self.body = Some(body);
        self
    }
}

impl Client {
    /// A client with these options, and the timeouts the environment sets ([`Options::with_env`]).
    /// Fails if the CA file cannot be read or parsed, or an environment variable is bad.
    pub fn new(opts: Options) -> Result<Client> {
        let mut opts = opts.with_env().map_err(Error::BadOption)?;
        // No single wait outlasts the deadline.
        opts.first_byte_timeout = opts.first_byte_timeout.min(opts.deadline);
        opts.speed_time = opts.speed_time.min(opts.deadline);
        let mut b = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tls_built_in_root_certs(true);
        for path in opts.ca_file.iter().chain(&opts.extra_ca_files) {
            let pem = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
                path: path.clone(),
                reason: format!("not a PEM certificate bundle: {e}"),
            })?;
            if certs.is_empty() {
                return Err(Error::Config {
                    path: path.clone(),
                    reason: "no certificate in the file".into(),
                });
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| Error::ClientSetup(e.to_string()))?;
        Ok(Client {
            http,
            docker_config: DockerConfig::locate(opts.docker_config_dir.clone()),
            opts,
            hosts: Mutex::new(HashMap::new()),
            token_fetch: tokio::sync::Mutex::new(()),
            locations: KnownLocations::default(),
        })
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Where credentials are read from and `login` writes to.
    pub fn docker_config(&self) -> &DockerConfig {
        &self.docker_config
    }

    /// Hints of which repositories hold which blobs, used for cross-repository mounts on push.
    pub fn known_locations(&self) -> &KnownLocations {
        &self.locations
    }

    /// Whether `registry` is spoken to over plain HTTP.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        if self
            .opts
            .force_https
            .iter()
            .any(|r| r.eq_ignore_ascii_case(registry))
        {
            return false;
        }
        is_loopback_host(registry)
            || self
                .opts
                .insecure_registries
                .iter()
                .any(|r| r.eq_ignore_ascii_case(registry))
    }

    /// `http(s)://<api host>/` of a registry.
    pub(crate) fn base_url(&self, registry: &str) -> Result<Url> {
        let scheme = if self.is_plain_http(registry) {
            "http"
        } else {
            "https"
        };
        let host = if registry == crate::reference::DEFAULT_REGISTRY {
            crate::reference::DEFAULT_REGISTRY_API_HOST
        } else {
            registry
        };
        Url::parse(&format!("{scheme}://{host}/")).map_err(|e| Error::InvalidResponse {
            url: format!("{scheme}://{host}/"),
            what: "registry address",
            reason: e.to_string(),
        })
    }

    /// `<base>/v2/<repository>/<tail>`.
    pub(crate) fn repo_url(&self, r: &crate::Reference, tail: &str) -> Result<Url> {
        let base = self.base_url(r.registry())?;
        base.join(&format!("v2/{}/{tail}", r.repository()))
            .map_err(|e| Error::InvalidResponse {
                url: base.to_string(),
                what: "URL",
                reason: e.to_string(),
            })
    }

    /// Forget cached credentials and tokens (after `login`/`logout`).
    pub fn forget_auth(&self, registry: &str) {
        self.hosts.lock().expect("auth state lock").remove(registry);
    }

    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = self
            .hosts
            .lock()
            .expect("auth state lock")
            .get(registry)
            .and_then(|h| h.credential.clone())
        {
            return Ok(c);
        }
        let c = self.docker_config.credentials_for(registry).await?;
        self.hosts
            .lock()
            .expect("auth state lock")
            .entry(registry.to_string())
            .or_default()
            .credential = Some(c.clone());
        Ok(c)
    }

    /// Use `cred` for `registry` instead of what config.json says, asking token servers for an
    /// identity token (for `login`).
    pub(crate) fn begin_login(&self, registry: &str, cred: Credential) {
        let mut hosts = self.hosts.lock().expect("auth state lock");
        hosts.insert(
            registry.to_string(),
            HostState {
                credential: Some(Some(cred)),
                login: true,
                ..HostState::default()
            },
        );
    }

    /// End what [`Client::begin_login`] began: forget the credential and tokens, and return the
    /// identity token a token server issued meanwhile, if any.
    pub(crate) fn end_login(&self, registry: &str) -> Option<String> {
        let mut hosts = self.hosts.lock().expect("auth state lock");
        hosts.remove(registry)?.issued_refresh_token
    }

    fn challenge(&self, registry: &str) -> Option<Challenge> {
        self.hosts
            .lock()
            .expect("auth state lock")
            .get(registry)
            .and_then(|h| h.challenge.clone())
    }

    /// The `Authorization` value for a request to `registry` needing `scopes`, if any is known.
    async fn authorization(
        &self,
        registry: &str,
        scopes: &[String],
        stale: Option<&HeaderValue>,
    ) -> Result<Option<HeaderValue>> {
        match self.challenge(registry) {
            None => Ok(None),
            Some(Challenge::Basic) => {
                Ok(self.credential(registry).await?.map(|c| basic_header(&c)))
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes: Vec<String> = scopes.to_vec();
                if let Some(s) = scope {
                    if scopes.is_empty() {
                        scopes.push(s);
                    }
                }
                scopes.sort();
                scopes.dedup();
                let key = scopes.join(" ");
                let cached = || -> Option<HeaderValue> {
                    let hosts = self.hosts.lock().expect("auth state lock");
                    let (tok, exp) = hosts.get(registry)?.tokens.get(&key)?;
                    let h = bearer_header(tok)?;
                    (*exp > Instant::now() && Some(&h) != stale).then_some(h)
                };
                if let Some(h) = cached() {
                    return Ok(Some(h));
                }
                // One token fetch at a time: requests racing on the same 401 share its result.
                let _fetching = self.token_fetch.lock().await;
                if let Some(h) = cached() {
                    return Ok(Some(h));
                }
                let (tok, ttl) = self
                    .fetch_token(registry, &realm, service.as_deref(), &scopes)
                    .await?;
                self.hosts
                    .lock()
                    .expect("auth state lock")
                    .entry(registry.to_string())
                    .or_default()
                    .tokens
                    .insert(key, (tok.clone(), Instant::now() + ttl));
                Ok(bearer_header(&tok))
            }
        }
    }

    /// A bearer token for `scopes` from the token server at `realm`, and how long to use it. With an
    /// identity token the OAuth2 form is used (`POST`, `grant_type=refresh_token`); during `login`
    /// the OAuth2 password grant asks for an identity token (`access_type=offline`), falling back to
    /// the `GET` form when the server does not speak OAuth2 (distribution's `oauth.md`: a 4xx to the
    /// `POST`); otherwise `GET` with Basic credentials, or anonymously.
    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration)> {
        let url = self.token_realm(realm)?;
        let cred = self.credential(registry).await?;
        let login = self
            .hosts
            .lock()
            .expect("auth state lock")
            .get(registry)
            .is_some_and(|h| h.login);
        let t = match &cred {
            Some(Credential {
                identity_token: Some(refresh),
                ..
            }) => {
                let form: Vec<_> = oauth_form("refresh_token", service, scopes)
                    .chain([("refresh_token", refresh.clone())])
                    .collect();
                let rb = self.http.post(url.clone()).form(&form);
                self.token_exchange(registry, Method::POST, &url, rb)
                    .await?
            }
            Some(c) if login => {
                let form: Vec<_> = oauth_form("password", service, scopes)
                    .chain([
                        ("username", c.username.clone()),
                        ("password", c.secret.clone()),
                        ("access_type", "offline".to_string()),
                    ])
                    .collect();
                let rb = self.http.post(url.clone()).form(&form);
                match self.token_exchange(registry, Method::POST, &url, rb).await {
                    Err(Error::Unauthorized { .. })
                    | Err(Error::Status {
                        status: 400..=499, ..
                    }) => {
                        tracing::debug!(%url, "no OAuth2 password grant at the token server; using GET");
                        self.token_get(registry, &url, cred.as_ref(), service, scopes, true)
                            .await?
                    }
                    r => r?,
                }
            }
            c => {
                self.token_get(registry, &url, c.as_ref(), service, scopes, login)
                    .await?
            }
        };
        if login {
            if let Some(rt) = t.refresh_token.filter(|s| !s.is_empty()) {
                if let Some(h) = self
                    .hosts
                    .lock()
                    .expect("auth state lock")
                    .get_mut(registry)
                {
                    h.issued_refresh_token = Some(rt);
                }
            }
        }
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).max(60).saturating_sub(10));
        Ok((t.token, ttl))
    }

    /// The token realm a challenge names, if credentials may be sent there: HTTPS, or plain HTTP
    /// to a host that is spoken to over plain HTTP anyway.
    fn token_realm(&self, realm: &str) -> Result<Url> {
        let url = Url::parse(realm).map_err(|e| Error::InvalidResponse {
            url: realm.chars().take(200).collect(),
            what: "token realm in WWW-Authenticate",
            reason: e.to_string(),
        })?;
        let realm_host = url.host_str().unwrap_or("").to_string();
        let realm_hostport = match url.port() {
            Some(p) => format!("{realm_host}:{p}"),
            None => realm_host.clone(),
        };
        let plain_ok = self.is_plain_http(&realm_hostport) || self.is_plain_http(&realm_host);
        if url.scheme() != "https" && !(url.scheme() == "http" && plain_ok) {
            return Err(Error::InvalidResponse {
                url: url.to_string(),
                what: "token realm",
                reason: "refusing to send credentials to a non-HTTPS token server".into(),
            });
        }
        Ok(url)
    }

    /// The token spec's `GET realm?service=…&scope=…` with Basic credentials, if any; `offline`
    /// asks for a refresh token as docker's login does (`offline_token=true&client_id=…`).
    async fn token_get(
        &self,
        registry: &str,
        realm: &Url,
        cred: Option<&Credential>,
        service: Option<&str>,
        scopes: &[String],
        offline: bool,
    ) -> Result<TokenResponse> {
        let mut url = realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
            if offline {
                q.append_pair("offline_token", "true");
                q.append_pair("client_id", OAUTH_CLIENT_ID);
            }
        }
        let mut rb = self.http.get(url.clone());
        if let Some(c) = cred.filter(|c| c.identity_token.is_none()) {
            rb = rb.header(AUTHORIZATION, basic_header(c));
        }
        self.token_exchange(registry, Method::GET, &url, rb).await
    }

    /// Send one token request and read its answer. `url` names it in errors; it never holds a
    /// secret (form fields travel in the body, credentials in a sensitive header).
    async fn token_exchange(
        &self,
        registry: &str,
        method: Method,
        url: &Url,
        rb: reqwest::RequestBuilder,
    ) -> Result<TokenResponse> {
        let had_credentials = self.credential(registry).await?.is_some();
        let resp = tokio::time::timeout(self.opts.first_byte_timeout, rb.send())
            .await
            .map_err(|_| Error::NoResponse {
                url: url.to_string(),
                digest: None,
                after: self.opts.first_byte_timeout,
            })?
            .map_err(|e| http_err(&method, url, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_detail(self, url, resp).await;
            return Err(Error::Unauthorized {
                registry: registry.to_string(),
                url: url.to_string(),
                had_credentials,
                reason: format!(
                    "token server answered {}{}",
                    status.as_u16(),
                    paren(&detail)
                ),
            });
        }
        if !status.is_success() {
            return Err(status_error(self, &method, url, resp).await);
        }
        let body = read_capped(self, resp, MAX_TOKEN_BODY, url, "token response", None).await?;
        #[derive(serde::Deserialize)]
        struct Raw {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
            refresh_token: Option<String>,
        }
        // serde_json's messages name a position and what was expected, never the text read.
        let t: Raw = serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
            url: url.to_string(),
            what: "token response",
            reason: e.to_string(),
        })?;
        let token = t
            .token
            .filter(|s| !s.is_empty())
            .or(t.access_token)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::InvalidResponse {
                url: url.to_string(),
                what: "token response",
                reason: "no token in it".into(),
            })?;
        Ok(TokenResponse {
            token,
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
        })
    }

    /// One attempt: auth round-trip on 401 and redirects, no retries. Any status is returned except
    /// a final 401, which becomes [`Error::Unauthorized`].
    async fn execute(&self, registry: &str, req: &Request) -> Result<Response> {
        let base = self.base_url(registry)?;
        let mut auth = self.authorization(registry, &req.scopes, None).await?;
        let mut answered_challenge = false;
        loop {
            let resp = self.follow_redirects(&base, req, auth.as_ref()).await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(crate::challenge::parse_challenge);
            let had_credentials = self.credential(registry).await?.is_some();
            let unauthorized = |reason: String| Error::Unauthorized {
                registry: registry.to_string(),
                url: req.url.to_string(),
                had_credentials,
                reason,
            };
            let Some(challenge) = challenge else {
                return Err(unauthorized(
                    "401 without a usable WWW-Authenticate challenge".into(),
                ));
            };
            if answered_challenge || (challenge == Challenge::Basic && !had_credentials) {
                let detail = error_detail(self, &req.url, resp).await;
                return Err(unauthorized(format!(
                    "registry answered 401{}",
                    paren(&detail)
                )));
            }
            self.hosts
                .lock()
                .expect("auth state lock")
                .entry(registry.to_string())
                .or_default()
                .challenge = Some(challenge);
            auth = self
                .authorization(registry, &req.scopes, auth.as_ref())
                .await?;
            answered_challenge = true;
        }
    }

    async fn follow_redirects(
        &self,
        base: &Url,
        req: &Request,
        auth: Option<&HeaderValue>,
    ) -> Result<Response> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut rb = self
                .http
                .request(method.clone(), url.clone())
                .headers(req.headers.clone());
            // Credentials go to the registry's own origin only, never where it redirects us.
            if let Some(a) = auth {
                if url.origin() == base.origin() {
                    rb = rb.header(AUTHORIZATION, a.clone());
                }
            }
            // A request with a body may take longer to send: the stall timer, as before; without
            // one, the headers must come within the first-byte timeout.
            let wait = match &body {
                Some(b) if !b.is_empty() => {
                    self.opts.stall_timeout.max(self.opts.first_byte_timeout)
                }
                _ => self.opts.first_byte_timeout,
            };
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let resp = tokio::time::timeout(wait, rb.send())
                .await
                .map_err(|_| Error::NoResponse {
                    url: url.to_string(),
                    digest: None,
                    after: wait,
                })?
                .map_err(|e| http_err(&method, &url, e))?;
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let Some(loc) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok(resp);
            };
            let next = url.join(loc).map_err(|e| Error::InvalidResponse {
                url: url.to_string(),
                what: "redirect Location",
                reason: e.to_string(),
            })?;
            if next.scheme() != "https" && url.scheme() == "https" {
                return Err(Error::InvalidResponse {
                    url: url.to_string(),
                    what: "redirect",
                    reason: format!("refusing to follow an HTTPS→{} downgrade", next.scheme()),
                });
            }
            if resp.status() == StatusCode::SEE_OTHER {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
        Err(Error::InvalidResponse {
            url: req.url.to_string(),
            what: "redirects",
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Send with retries: transient failures (connection errors, stalls, 5xx, 429) are retried with
    /// backoff or after `Retry-After`, until the policy's attempts or the deadline run out.
    pub(crate) async fn send(
        &self,
        registry: &str,
        req: &Request,
        digest: Option<&Digest>,
    ) -> Result<Response> {
        let mut retry = Retrier::new(&self.opts);
        loop {
            let (err, retry_after) = match self.execute(registry, req).await {
                Ok(resp)
                    if resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error() =>
                {
                    let ra = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    (status_error(self, &req.method, &req.url, resp).await, ra)
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_transient() => (e, None),
                Err(e) => return Err(e),
            };
            retry.wait(err, retry_after, &req.url, digest).await?;
        }
    }
}

/// Counts attempts and enforces the deadline of one logical operation.
pub(crate) struct Retrier {
    policy: crate::options::RetryPolicy,
    deadline: Duration,
    timeout_budget: Duration,
    start: Instant,
    attempts: u32,
}

impl Retrier {
    pub fn new(opts: &Options) -> Retrier {
        Retrier {
            policy: opts.retry.clone(),
            deadline: opts.deadline,
            timeout_budget: opts.timeout_budget.min(opts.deadline),
            start: Instant::now(),
            attempts: 0,
        }
    }

    /// After a transient failure `err`: sleep and return `Ok` to try again, or give up with an error.
    pub async fn wait(
        &mut self,
        err: Error,
        retry_after: Option<Duration>,
        url: &Url,
        digest: Option<&Digest>,
    ) -> Result<()> {
        self.attempts += 1;
        let pause = retry_after.unwrap_or_else(|| self.policy.backoff(self.attempts));
        // A server that keeps timing out gets the (shorter) timeout budget in all.
        let deadline = if err.is_timeout() {
            self.timeout_budget
        } else {
            self.deadline
        };
        let out_of_time = self.start.elapsed() + pause > deadline;
        if self.attempts >= self.policy.max_attempts || out_of_time {
            return Err(Error::GaveUp {
                url: url.to_string(),
                digest: digest.cloned(),
                attempts: self.attempts,
                deadline,
                last: Box::new(err),
            });
        }
        tracing::debug!(%url, attempt = self.attempts, ?pause, error = %err, "retrying");
        tokio::time::sleep(pause).await;
        Ok(())
    }
}

fn basic_header(c: &Credential) -> HeaderValue {
    let enc =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.secret));
    let mut v = HeaderValue::from_str(&format!("Basic {enc}")).expect("base64 is a valid header");
    v.set_sensitive(true);
    v
}

fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

pub(crate) fn http_err(method: &Method, url: &Url, e: reqwest::Error) -> Error {
    Error::Http {
        method: method.to_string(),
        url: url.to_string(),
        source: e.without_url(),
    }
}

fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({s})")
    }
}

/// The registry's error codes and messages from an error response body, or a short text excerpt.
pub(crate) async fn error_detail(client: &Client, url: &Url, resp: Response) -> String {
    let Ok(body) = read_capped(client, resp, MAX_ERROR_BODY, url, "error body", None).await else {
        return String::new();
    };
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body) {
        return e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Turn a non-success response into an error: 404 → `NotFound`, 401/403 → `Unauthorized`, else `Status`.
pub(crate) async fn status_error(
    client: &Client,
    method: &Method,
    url: &Url,
    resp: Response,
) -> Error {
    let status = resp.status().as_u16();
    let detail = error_detail(client, url, resp).await;
    Error::Status {
        method: method.to_string(),
        url: url.to_string(),
        status,
        detail,
    }
}

/// Like [`status_error`], but a 404 names `what` was not found.
pub(crate) async fn error_for(
    client: &Client,
    method: &Method,
    url: &Url,
    resp: Response,
    what: impl Into<String>,
) -> Error {
    if resp.status() == StatusCode::NOT_FOUND {
        let detail = error_detail(client, url, resp).await;
        return Error::NotFound {
            what: what.into(),
            url: url.to_string(),
            detail,
        };
    }
    status_error(client, method, url, resp).await
}

/// The minimum-throughput rule over one response body (curl's `--speed-limit`/`--speed-time`):
/// the bytes of each window of `speed_time` must average `speed_limit` per second.
pub(crate) struct Speed {
    limit: u64,
    window: Duration,
    start: Instant,
    bytes: u64,
}

impl Speed {
    pub(crate) fn new(opts: &Options) -> Speed {
        Speed {
            limit: opts.speed_limit,
            window: opts.speed_time,
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn needed(&self) -> u64 {
        (self.limit as f64 * self.window.as_secs_f64()) as u64
    }

    /// At a window's end: too slow, or a fresh window.
    fn check(&mut self, url: &Url, digest: Option<&Digest>) -> Result<()> {
        if self.limit == 0 || self.start.elapsed() < self.window {
            return Ok(());
        }
        if self.bytes < self.needed() {
            return Err(Error::TooSlow {
                url: url.to_string(),
                digest: digest.cloned(),
                bytes: self.bytes,
                window: self.start.elapsed(),
                limit: self.limit,
            });
        }
        self.start = Instant::now();
        self.bytes = 0;
        Ok(())
    }

    /// How long to wait for the next chunk before checking again.
    fn wait(&self, stall: Duration) -> Duration {
        if self.limit == 0 {
            return stall;
        }
        let left = self.window.saturating_sub(self.start.elapsed());
        stall.min(left.max(Duration::from_millis(10)))
    }
}

/// The next body chunk, or an error naming the URL if nothing arrives within the stall timeout or
/// the body is slower than the minimum-throughput rule allows.
pub(crate) async fn next_chunk(
    client: &Client,
    resp: &mut Response,
    url: &Url,
    digest: Option<&Digest>,
    speed: &mut Speed,
) -> Result<Option<Bytes>> {
    let stall = client.opts.stall_timeout;
    let mut silent = Duration::ZERO;
    loop {
        speed.check(url, digest)?;
        let wait = speed.wait(stall.saturating_sub(silent));
        match tokio::time::timeout(wait, resp.chunk()).await {
            Err(_) => {
                silent += wait;
                if silent >= stall {
                    return Err(Error::Stalled {
                        url: url.to_string(),
                        digest: digest.cloned(),
                        after: stall,
                    });
                }
            }
            Ok(Ok(Some(c))) => {
                speed.bytes += c.len() as u64;
                return Ok(Some(c));
            }
            Ok(r) => return r.map_err(|e| http_err(&Method::GET, url, e)),
        }
    }
}

/// Read a whole body of at most `limit` bytes (checked on Content-Length first, then while reading).
pub(crate) async fn read_capped(
    client: &Client,
    mut resp: Response,
    limit: u64,
    url: &Url,
    what: &str,
    digest: Option<&Digest>,
) -> Result<Vec<u8>> {
    let too_large = || Error::TooLarge {
        url: url.to_string(),
        what: what.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut speed = Speed::new(&client.opts);
    while let Some(chunk) = next_chunk(client, &mut resp, url, digest, &mut speed).await? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
