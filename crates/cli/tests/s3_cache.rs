//! Issue 18 items 2 and 3: the s3 cache backend against a real S3 API server on loopback (moto's
//! standalone server, PyPI `moto[server]`), several stores sharing one bucket, `ignore-error`, and
//! several `--cache-to`/`--cache-from` at once. Needs root and moto_server; skips otherwise.

mod common;
use common::*;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto(Child, u16);
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn moto() -> Option<Moto> {
    if which("moto_server").is_none() {
        eprintln!("SKIP: moto_server is not installed (pip install 'moto[server]')");
        return None;
    }
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A bucket (moto does not check signatures: a plain PUT makes it).
    run_ok(Command::new("python3").args([
        "-c",
        &format!(
            "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:{port}/ci-cache', method='PUT'))"
        ),
    ]));
    Some(Moto(child, port))
}

const DOCKERFILE: &str = "FROM busybox:latest
RUN echo one > /one && echo \"ran\"\"-step-one\"
RUN echo two > /two && echo \"ran\"\"-step-two\"
COPY app.txt /app.txt
";

fn s3_spec(port: u16, extra: &str) -> String {
    format!(
        "type=s3,bucket=ci-cache,region=us-east-1,endpoint_url=http://127.0.0.1:{port},use_path_style=true,prefix=proj/,name=main{extra}"
    )
}

fn creds(c: &mut Command) {
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
}

fn build(env: &Env, args: &[&str]) -> (bool, String, String) {
    let mut c = env.cmd();
    creds(&mut c);
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let o = c
        .args(["build", "--progress=plain"])
        .args(args)
        .output()
        .unwrap();
    (o.status.success(), stdout(&o), stderr(&o))
}

#[test]
fn two_stores_share_one_bucket() {
    if !require_root(&[]) {
        return;
    }
    let Some(m) = moto() else { return };
    let a = Env::with_busybox();
    let ctx = a.context("ctx", &[("Dockerfile", DOCKERFILE), ("app.txt", "app\n")]);
    let local = a.path("local-cache");
    // Two exports at once: s3 and local.
    let (ok, id_a, log) = build(
        &a,
        &[
            "--cache-to",
            &s3_spec(m.1, ",mode=max"),
            "--cache-to",
            &format!("type=local,dest={},mode=max", local.display()),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(ok, "{log}");
    assert!(log.contains("ran-step-one"), "{log}");
    assert!(log.contains("blobs uploaded"), "{log}");
    assert!(local.join("index.json").exists());

    // A second "CI machine": a fresh store, the same context — no RUN executes, same image id.
    let b = Env::with_busybox();
    let ctx_b = b.context("ctx", &[("Dockerfile", DOCKERFILE), ("app.txt", "app\n")]);
    let (ok, id_b, log) = build(
        &b,
        &["--cache-from", &s3_spec(m.1, ""), ctx_b.to_str().unwrap()],
    );
    assert!(ok, "{log}");
    assert!(!log.contains("ran-step-"), "a RUN executed: {log}");
    assert_eq!(id_a.trim(), id_b.trim());

    // A third: two sources at once (one that does not exist is a warning), from the local one.
    let c = Env::with_busybox();
    let ctx_c = c.context("ctx", &[("Dockerfile", DOCKERFILE), ("app.txt", "app\n")]);
    let (ok, id_c, log) = build(
        &c,
        &[
            "--cache-from",
            &s3_spec(m.1, "").replace("name=main", "name=nothing-here"),
            "--cache-from",
            &format!("type=local,src={}", local.display()),
            ctx_c.to_str().unwrap(),
        ],
    );
    assert!(ok, "{log}");
    assert!(log.contains("warning: --cache-from"), "{log}");
    assert!(!log.contains("ran-step-"), "a RUN executed: {log}");
    assert_eq!(id_a.trim(), id_c.trim());

    // A second export of the same cache uploads nothing new.
    let (ok, _, log) = build(
        &a,
        &[
            "--cache-to",
            &s3_spec(m.1, ",mode=max"),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(ok, "{log}");
    assert!(log.contains(" 0 blobs uploaded"), "{log}");
}

#[test]
fn unreachable_endpoint_with_and_without_ignore_error() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context("ctx", &[("Dockerfile", DOCKERFILE), ("app.txt", "app\n")]);
    let port = free_port(); // nothing listens there
    let (ok, _, log) = build(
        &env,
        &["--cache-to", &s3_spec(port, ""), ctx.to_str().unwrap()],
    );
    assert!(!ok, "{log}");
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
    let (ok, id, log) = build(
        &env,
        &[
            "--cache-to",
            &s3_spec(port, ",ignore-error=true"),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(ok, "{log}");
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert!(
        log.contains("warning: cache export failed (ignore-error=true)"),
        "{log}"
    );

    // Bad options are usage errors before anything runs.
    let mut c = env.cmd();
    let o = c
        .args([
            "build",
            "--cache-to",
            "type=s3,region=us-east-1",
            ctx.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("bucket= is required"), "{}", stderr(&o));
}
