//! Start and stop Debian's docker-registry on 127.0.0.1 with a free port: plain, with htpasswd
//! basic auth, or with TLS from a throw-away CA.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

#[derive(Default, Clone)]
pub struct RegistryConfig {
    /// (user, password) for an htpasswd (bcrypt) file.
    pub htpasswd: Option<(String, String)>,
    pub tls: bool,
}

/// A running registry; killed and its storage removed on drop.
pub struct TestRegistry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// `127.0.0.1:<port>` — what goes into references.
    pub host: String,
    /// The CA that signed the server certificate (TLS variant).
    pub ca_file: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl TestRegistry {
    pub fn start(cfg: RegistryConfig) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let template = std::fs::read_to_string(super::testdata().join("config.yml.in"))
            .expect("read testdata/registry/config.yml.in");
        let mut config = template
            .replace("@ROOT@", &dir.path().join("storage").display().to_string())
            .replace("@ADDR@", &addr);
        let mut ca_file = None;
        if cfg.tls {
            let certs = dir.path().join("certs");
            let st = Command::new("sh")
                .arg(super::testdata().join("make-ca.sh"))
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
        if let Some((user, pass)) = &cfg.htpasswd {
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
        let mut r = TestRegistry {
            child,
            dir,
            port,
            host: addr,
            ca_file,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("docker-registry exited with {st}: {}", self.log());
            }
            if std::net::TcpStream::connect(&self.host).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} in 15s: {}",
            self.host,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn storage(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
