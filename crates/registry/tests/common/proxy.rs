//! A small fault-injecting HTTP proxy (hyper) in front of the test registry. It counts requests
//! per method and path, can corrupt or withhold responses (flip a byte, truncate, lie in
//! Docker-Content-Digest, answer a status with Retry-After, stall, redirect to another origin), and
//! can play a bearer-token auth server in front of an auth-less registry: the token spec's `GET`
//! form with Basic credentials, and, when enabled, distribution's OAuth2 `POST` form (password and
//! refresh-token grants, issuing a refresh token for `access_type=offline`).

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

type Body = BoxBody<Bytes, io::Error>;

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Flip one byte in the middle of the body.
    FlipByte,
    /// Send the first half of the body (announcing the full length), then drop the connection.
    Truncate,
    /// Put the digest of something else into Docker-Content-Digest.
    LieDigest,
    /// Answer this status, with `Retry-After: secs` if given, without asking the registry.
    Status(u16, Option<u64>),
    /// Send the first half of the body, then nothing, forever.
    Stall,
    /// Answer 307 to the same request under another origin (`localhost` instead of `127.0.0.1`).
    Redirect,
    /// Accept the request and never answer (no status line, no headers).
    NeverAnswer,
    /// Send the headers (announcing the full length), then no body byte, forever.
    HeadersThenSilence,
    /// Send the body one byte per second.
    Trickle,
    /// Answer 200 with this body and Content-Type, without asking the registry.
    Serve(String, String),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_contains: String,
    pub action: Action,
    /// How many times it fires; `None` = always.
    pub times: Option<u32>,
}

impl Rule {
    pub fn new(
        method: Option<&'static str>,
        path_contains: &str,
        action: Action,
        times: Option<u32>,
    ) -> Rule {
        Rule {
            method,
            path_contains: path_contains.to_string(),
            action,
            times,
        }
    }
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The Authorization scheme sent (`Basic`, `Bearer`), never the secret.
    pub auth_scheme: Option<String>,
    pub range: Option<String>,
    /// Whether a watched secret ([`Proxy::watch`]) was in the path, the query or the
    /// Authorization header (decoded, for Basic) — or, for `POST /token`, in the form.
    pub carries_secret: bool,
    /// The proxy's number for this request (in arrival order), so that what is learnt after its
    /// body arrives is recorded on this request's entry and not on one that came in meanwhile.
    pub seq: u64,
}

/// One OAuth2 `POST /token` the proxy answered.
#[derive(Clone, Debug, Default)]
pub struct OAuthRequest {
    pub grant_type: String,
    pub client_id: Option<String>,
    pub service: Option<String>,
    pub scope: Option<String>,
    pub access_type: Option<String>,
    /// Whether the refresh token sent (if any) was the one issued.
    pub refresh_token_ok: bool,
    pub status: u16,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    bearer: Option<(String, String)>,
    token_requests: usize,
    /// The refresh token issued by the OAuth2 form; `None` = `POST /token` answers 404.
    oauth: Option<String>,
    oauth_requests: Vec<OAuthRequest>,
    watch: Vec<String>,
    /// The next [`Seen::seq`].
    next_seq: u64,
}

pub struct Proxy {
    pub port: u16,
    /// `127.0.0.1:<port>` — what goes into references.
    pub host: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

const TOKEN: &str = "test-token-7f3a";

impl Proxy {
    /// Listen on a free port of 127.0.0.1 and forward to `upstream` (`127.0.0.1:<port>`, plain HTTP).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = format!("http://{upstream}");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, upstream, http) = (st.clone(), upstream.clone(), http.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(st.clone(), upstream.clone(), http.clone(), port, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Proxy {
            port,
            host: format!("127.0.0.1:{port}"),
            state,
            task,
        }
    }

    pub fn add_rule(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }
    pub fn clear_rules(&self) {
        self.state.lock().unwrap().rules.clear();
    }
    /// Require `Bearer` tokens, issued at `/token` for these Basic credentials.
    pub fn enable_bearer(&self, user: &str, password: &str) {
        self.state.lock().unwrap().bearer = Some((user.into(), password.into()));
    }
    /// Also answer distribution's OAuth2 `POST /token`: the password grant checks the user and
    /// password given to [`Proxy::enable_bearer`] and, with `access_type=offline`, issues
    /// `refresh_token`; the refresh-token grant accepts only that token.
    pub fn enable_oauth(&self, refresh_token: &str) {
        let mut s = self.state.lock().unwrap();
        s.oauth = Some(refresh_token.into());
        s.watch.push(refresh_token.into());
    }
    /// Mark requests carrying `secret` ([`Seen::carries_secret`]).
    pub fn watch(&self, secret: &str) {
        self.state.lock().unwrap().watch.push(secret.into());
    }
    pub fn oauth_requests(&self) -> Vec<OAuthRequest> {
        self.state.lock().unwrap().oauth_requests.clone()
    }
    /// `GET /token` requests (the token spec's form) and OAuth2 `POST /token` requests.
    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
    /// Requests with this method whose path and query contain `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.target.contains(needle))
            .count()
    }
    pub fn reset_counts(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn simple(status: u16, headers: &[(&str, String)], body: &str) -> Response<Body> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    if !headers.iter().any(|(k, _)| *k == "content-type") {
        r = r.header("content-type", "application/json");
    }
    r.body(full(body.to_string())).unwrap()
}

/// The repository of a `/v2/<repo>/{manifests,blobs,tags}/...` path.
fn repo_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map(|i| &rest[..i])
}

async fn handle(
    st: Arc<Mutex<State>>,
    upstream: String,
    http: reqwest::Client,
    port: u16,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| path.clone());
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let seen = Seen {
        method: method.clone(),
        target: target.clone(),
        auth_scheme: auth
            .as_ref()
            .and_then(|a| a.split(' ').next())
            .map(str::to_string),
        range: req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        carries_secret: false,
        seq: 0,
    };
    let mut seen = seen;
    let (watch, oauth) = {
        let s = st.lock().unwrap();
        (s.watch.clone(), s.oauth.clone())
    };
    let decoded_auth = auth.as_deref().map(|a| {
        use base64::Engine as _;
        match a.strip_prefix("Basic ") {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(|d| String::from_utf8_lossy(&d).to_string())
                .unwrap_or_default(),
            None => a.to_string(),
        }
    });
    seen.carries_secret = watch.iter().any(|w| {
        target.contains(w.as_str())
            || decoded_auth
                .as_deref()
                .is_some_and(|a| a.contains(w.as_str()))
    });
    // Requests to the other "origin" redirects point to are served from upstream as they are.
    let forward_target = target
        .strip_prefix("/__storage")
        .unwrap_or(&target)
        .to_string();
    let is_storage = forward_target.len() != target.len();
    let (bearer, action, seq) = {
        let mut s = st.lock().unwrap();
        let seq = s.next_seq;
        s.next_seq += 1;
        seen.seq = seq;
        s.seen.push(seen);
        let action = s
            .rules
            .iter_mut()
            .find(|r| {
                !is_storage
                    && r.method.is_none_or(|m| m == method)
                    && target.contains(&r.path_contains)
                    && r.times != Some(0)
            })
            .map(|r| {
                if let Some(t) = &mut r.times {
                    *t -= 1;
                }
                r.action.clone()
            });
        (s.bearer.clone(), action, seq)
    };

    if let (Some((user, pass)), false) = (&bearer, is_storage) {
        if path == "/token" && method == "POST" {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let mut s = st.lock().unwrap();
            // Other requests may have come in while the body was read: mark this one, by number
            // (gone only if `reset_counts` ran meanwhile).
            if let Some(me) = s.seen.iter_mut().rev().find(|x| x.seq == seq) {
                me.carries_secret |= watch
                    .iter()
                    .any(|w| form.values().any(|v| v.contains(w.as_str())));
            }
            let Some(issued) = oauth else {
                // A token server that only knows the GET form.
                return Ok(simple(404, &[], "404 page not found"));
            };
            s.token_requests += 1;
            let field = |k: &str| form.get(k).cloned();
            let mut r = OAuthRequest {
                grant_type: field("grant_type").unwrap_or_default(),
                client_id: field("client_id"),
                service: field("service"),
                scope: field("scope"),
                access_type: field("access_type"),
                refresh_token_ok: field("refresh_token").as_deref() == Some(issued.as_str()),
                status: 200,
            };
            let ok = match r.grant_type.as_str() {
                "password" => {
                    field("username").as_deref() == Some(user.as_str())
                        && field("password").as_deref() == Some(pass.as_str())
                }
                "refresh_token" => r.refresh_token_ok,
                _ => false,
            };
            let answer = if r.client_id.is_none() {
                r.status = 400;
                simple(400, &[], r#"{"error":"invalid_request"}"#)
            } else if !ok {
                r.status = 401;
                simple(401, &[], r#"{"error":"invalid_grant"}"#)
            } else {
                let refresh =
                    if r.grant_type == "password" && r.access_type.as_deref() == Some("offline") {
                        format!(r#","refresh_token":"{issued}""#)
                    } else {
                        String::new()
                    };
                simple(
                    200,
                    &[],
                    &format!(r#"{{"access_token":"{TOKEN}","expires_in":300{refresh}}}"#),
                )
            };
            s.oauth_requests.push(r);
            return Ok(answer);
        }
        if path == "/token" {
            st.lock().unwrap().token_requests += 1;
            use base64::Engine as _;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            if auth.as_deref() != Some(want.as_str()) {
                return Ok(simple(401, &[], r#"{"details":"bad credentials"}"#));
            }
            return Ok(simple(
                200,
                &[],
                &format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#),
            ));
        }
        if auth.as_deref() != Some(format!("Bearer {TOKEN}").as_str()) {
            let mut challenge =
                format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="rbuild-test""#);
            if let Some(repo) = repo_of(&path) {
                challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
            }
            return Ok(simple(
                401,
                &[("www-authenticate", challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ));
        }
    }

    match &action {
        Some(Action::NeverAnswer) => {
            futures_util::future::pending::<()>().await;
        }
        Some(Action::Serve(body, content_type)) => {
            let digest = format!("sha256:{}", rbuild_oci::sha256_hex(body.as_bytes()));
            return Ok(simple(
                200,
                &[
                    ("content-type", content_type.clone()),
                    ("docker-content-digest", digest),
                ],
                body,
            ));
        }
        Some(Action::Status(code, retry_after)) => {
            let mut h = Vec::new();
            if let Some(s) = retry_after {
                h.push(("retry-after", s.to_string()));
            }
            return Ok(simple(
                *code,
                &h,
                r#"{"errors":[{"code":"UNAVAILABLE","message":"injected by the test proxy"}]}"#,
            ));
        }
        Some(Action::Redirect) => {
            return Ok(simple(
                307,
                &[(
                    "location",
                    format!("http://localhost:{port}/__storage{target}"),
                )],
                "",
            ));
        }
        _ => {}
    }

    // Forward to the registry.
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut fwd = http.request(parts.method.clone(), format!("{upstream}{forward_target}"));
    for (k, v) in parts.headers.iter() {
        let name = k.as_str();
        if matches!(
            name,
            "host" | "connection" | "transfer-encoding" | "content-length"
        ) || (name == "authorization" && bearer.is_some())
        {
            continue;
        }
        fwd = fwd.header(k, v);
    }
    let resp = match fwd.body(body).send().await {
        Ok(r) => r,
        Err(e) => return Ok(simple(502, &[], &format!("{{\"proxy\":\"{e}\"}}"))),
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    let mut out = Response::builder().status(status);
    let self_origin = format!("http://127.0.0.1:{port}");
    for (k, v) in headers.iter() {
        let name = k.as_str();
        if matches!(name, "connection" | "transfer-encoding" | "content-length") {
            continue;
        }
        if name == "location" {
            let loc = v.to_str().unwrap_or("").replace(&upstream, &self_origin);
            out = out.header(k, loc);
            continue;
        }
        if name == "docker-content-digest" && action == Some(Action::LieDigest) {
            out = out.header(k, format!("sha256:{}", "0".repeat(64)));
            continue;
        }
        out = out.header(k, v);
    }
    if parts.method == hyper::Method::HEAD {
        if let Some(cl) = headers.get("content-length") {
            out = out.header("content-length", cl);
        }
        return Ok(out.body(full(Bytes::new())).unwrap());
    }
    let full_len = body.len();
    let body: Body = match action {
        Some(Action::FlipByte) if !body.is_empty() => {
            let mut b = body.to_vec();
            b[full_len / 2] ^= 0xff;
            full(b)
        }
        Some(Action::Truncate) if full_len > 1 => {
            out = out.header("content-length", full_len);
            let head = body.slice(..full_len / 2);
            // Let the first half reach the client before the connection breaks.
            let s = futures_util::stream::iter(vec![Ok(Frame::data(head))]).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    Err(io::Error::other("truncated by the test proxy"))
                }),
            );
            BodyExt::boxed(StreamBody::new(s))
        }
        Some(Action::HeadersThenSilence) => {
            out = out.header("content-length", full_len);
            BodyExt::boxed(StreamBody::new(futures_util::stream::pending::<
                Result<Frame<Bytes>, io::Error>,
            >()))
        }
        Some(Action::Trickle) if full_len > 0 => {
            out = out.header("content-length", full_len);
            let s = futures_util::stream::unfold(0usize, move |i| {
                let body = body.clone();
                async move {
                    if i >= body.len() {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Some((Ok::<_, io::Error>(Frame::data(body.slice(i..i + 1))), i + 1))
                }
            });
            BodyExt::boxed(StreamBody::new(s))
        }
        Some(Action::Stall) if full_len > 1 => {
            out = out.header("content-length", full_len);
            let head = body.slice(..full_len / 2);
            let s = futures_util::stream::iter(vec![Ok::<_, io::Error>(Frame::data(head))])
                .chain(futures_util::stream::pending());
            BodyExt::boxed(StreamBody::new(s))
        }
        _ => full(body),
    };
    Ok(out.body(body).unwrap_or_else(|_| simple(500, &[], "{}")))
}
