//! A real registry for the CLI's registry tests: Debian's docker-registry (distribution 2.8) on
//! 127.0.0.1 with a free port, optionally with htpasswd basic auth, with its access log on so a test
//! can count exactly which blobs were downloaded. (Adapted from crates/registry/tests/common: test
//! crates cannot share modules across packages.)
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Whether the registry can run here; prints why not.
pub fn have_registry() -> bool {
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("SKIP: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
        return false;
    }
    true
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running registry; killed on drop (its storage is a temp dir).
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// TLS variant: the throw-away CA that signed the server certificate.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Registry {
    /// `htpasswd`: (user, password) for basic auth.
    pub fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_with(htpasswd, false)
    }

    /// Serving HTTPS with a certificate for 127.0.0.1 from a fresh CA (`ca_file`), made by
    /// testdata/registry/make-ca.sh (openssl).
    pub fn start_tls() -> Registry {
        Registry::start_with(None, true)
    }

    fn start_with(htpasswd: Option<(&str, &str)>, tls: bool) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: rbuild-cli-test\n",
            dir.path().join("storage").display()
        );
        let mut ca_file = None;
        if tls {
            let certs = dir.path().join("certs");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/registry/make-ca.sh");
            let st = Command::new("sh")
                .arg(script)
                .arg(&certs)
                .status()
                .expect("run make-ca.sh");
            assert!(st.success(), "make-ca.sh failed");
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certs.join("server.crt").display(),
                certs.join("server.key").display()
            ));
            ca_file = Some(certs.join("ca.crt"));
        }
        if let Some((user, pass)) = htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("run htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut r = Registry {
            child,
            dir,
            host,
            ca_file,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("docker-registry exited with {st}: {}", r.log());
            }
            if std::net::TcpStream::connect(&r.host).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen in 15s: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Digests of the blobs served by `GET /v2/<repo>/blobs/<digest>` with a 200/206 so far, in
    /// order (one entry per request).
    pub fn blob_gets(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let req = l.split('"').nth(1)?;
                let mut parts = req.split_whitespace();
                if parts.next()? != "GET" {
                    return None;
                }
                let path = parts.next()?;
                let status = l.split('"').nth(2)?.split_whitespace().next()?;
                if !(status == "200" || status == "206") {
                    return None;
                }
                let (_, digest) = path.split_once("/blobs/")?;
                Some(digest.to_string())
            })
            .collect()
    }

    /// Bytes of blob uploads (`PATCH`/`PUT` with a body) the access log recorded.
    pub fn uploads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                let req = l.split('"').nth(1).unwrap_or("");
                (req.starts_with("PUT ") || req.starts_with("PATCH "))
                    && req.contains("/blobs/uploads/")
            })
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
pub mod proxy;
