//! A small fault-injecting HTTP proxy (hyper) in front of the test registry, for the CLI's fault
//! tests: it counts requests per method and path and can corrupt or withhold responses (flip a
//! byte, truncate, lie in Docker-Content-Digest, answer a status with Retry-After, stall). Ported
//! from crates/registry/tests/common/proxy.rs (test crates cannot share modules across packages),
//! without the bearer-token server, and with its own runtime so synchronous tests can use it.
#![allow(dead_code)]

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
    /// Forward as usual, but only after this many milliseconds.
    Delay(u64),
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
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

pub struct Proxy {
    pub port: u16,
    /// `127.0.0.1:<port>` — what goes into references.
    pub host: String,
    state: Arc<Mutex<State>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listen on a free port of 127.0.0.1 and forward to `upstream` (`127.0.0.1:<port>`, plain HTTP).
    pub fn start(upstream: &str) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = format!("http://{upstream}");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, upstream, http) = (st.clone(), upstream.clone(), http.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(st.clone(), upstream.clone(), http.clone(), req)
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
            rt: Some(rt),
        }
    }

    pub fn add_rule(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }
    pub fn clear_rules(&self) {
        self.state.lock().unwrap().rules.clear();
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
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
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
    r.header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap()
}

async fn handle(
    st: Arc<Mutex<State>>,
    upstream: String,
    http: reqwest::Client,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| path.clone());
    let seen = Seen {
        method: method.clone(),
        target: target.clone(),
        range: req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let action = {
        let mut s = st.lock().unwrap();
        s.seen.push(seen);
        let action = s
            .rules
            .iter_mut()
            .find(|r| {
                r.method.is_none_or(|m| m == method)
                    && target.contains(&r.path_contains)
                    && r.times != Some(0)
            })
            .map(|r| {
                if let Some(t) = &mut r.times {
                    *t -= 1;
                }
                r.action.clone()
            });
        action
    };

    if let Some(Action::Status(code, retry_after)) = &action {
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

    if let Some(Action::Delay(ms)) = &action {
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
    // Forward to the registry.
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut fwd = http.request(parts.method.clone(), format!("{upstream}{target}"));
    for (k, v) in parts.headers.iter() {
        let name = k.as_str();
        if matches!(
            name,
            "host" | "connection" | "transfer-encoding" | "content-length"
        ) {
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
    let self_origin = format!(
        "http://{}",
        parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    );
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
