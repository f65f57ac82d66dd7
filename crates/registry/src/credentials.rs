//! Docker's `config.json`: reading credentials (`auths`, `credsStore`, `credHelpers`) and writing
//! them for `rbuild login` / `rbuild logout`.
//!
//! The only program ever run here is `docker-credential-<helper> get`, with the registry on stdin.
//! Credentials are never logged: [`Credential`]'s `Debug` redacts the secret.

use crate::error::{Error, Result};
use base64::Engine as _;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The key docker uses in `auths` for Docker Hub.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A username and a password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The docker configuration directory and what its `config.json` says about credentials.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    dir: PathBuf,
}

impl DockerConfig {
    /// `dir`, else `$DOCKER_CONFIG`, else `$HOME/.docker`.
    pub fn locate(dir: Option<PathBuf>) -> DockerConfig {
        let dir = dir
            .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        DockerConfig { dir }
    }

    /// The `config.json` path.
    pub fn path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn load(&self) -> Result<serde_json::Value> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::json!({})),
            Ok(bytes) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Config {
                        path: path.clone(),
                        reason: format!("not valid JSON: {e}"),
                    })?;
                if !v.is_object() {
                    return Err(Error::Config {
                        path,
                        reason: "top level is not a JSON object".into(),
                    });
                }
                Ok(v)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
            Err(source) => Err(Error::Io { path, source }),
        }
    }

    /// Credentials for `registry` (as in a [`crate::Reference`]: `docker.io`, `localhost:5000`).
    /// Order as docker: `credHelpers[registry]`, then `credsStore`, then `auths`.
    pub async fn credentials_for(&self, registry: &str) -> Result<Option<Credential>> {
        let cfg = self.load()?;
        let server = auth_key(registry);
        if let Some(helper) = cfg
            .get("credHelpers")
            .and_then(|h| h.get(registry).or_else(|| h.get(&server)))
            .and_then(|v| v.as_str())
        {
            return run_helper(helper, registry, &server).await;
        }
        if let Some(helper) = cfg.get("credsStore").and_then(|v| v.as_str()) {
            if !helper.is_empty() {
                if let Some(c) = run_helper(helper, registry, &server).await? {
                    return Ok(Some(c));
                }
            }
        }
        let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        for (key, entry) in auths {
            if normalize_auth_key(key) != normalize_auth_key(&server) {
                continue;
            }
            return self.entry_credential(key, entry).map(Some);
        }
        Ok(None)
    }

    fn entry_credential(&self, key: &str, entry: &serde_json::Value) -> Result<Credential> {
        let bad = |reason: String| Error::Config {
            path: self.path(),
            reason: format!("auths[{key:?}]: {reason}"),
        };
        if let Some(auth) = entry
            .get("auth")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("\"auth\" is not base64".into()))?;
            let text = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8".into()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not user:password".into()))?;
            return Ok(Credential {
                username: u.to_string(),
                secret: p.to_string(),
            });
        }
        let u = entry.get("username").and_then(|v| v.as_str());
        let p = entry.get("password").and_then(|v| v.as_str());
        match (u, p) {
            (Some(u), Some(p)) => Ok(Credential {
                username: u.to_string(),
                secret: p.to_string(),
            }),
            _ => Err(bad("neither \"auth\" nor \"username\"/\"password\"".into())),
        }
    }

    /// Record `cred` for `registry` in `config.json` (created 0600 if missing, replaced atomically,
    /// other settings kept).
    pub fn store_login(&self, registry: &str, cred: &Credential) -> Result<()> {
        let mut cfg = self.load()?;
        let key = auth_key(registry);
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cred.username, cred.secret));
        let obj = cfg.as_object_mut().expect("load returns an object");
        let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
        if !auths.is_object() {
            *auths = serde_json::json!({});
        }
        let auths = auths.as_object_mut().expect("just made an object");
        let existing: Vec<String> = auths
            .keys()
            .filter(|k| normalize_auth_key(k) == normalize_auth_key(&key))
            .cloned()
            .collect();
        for k in existing {
            auths.remove(&k);
        }
        auths.insert(key, serde_json::json!({ "auth": auth }));
        self.save(&cfg)
    }

    /// Forget the credentials of `registry`; `Ok(false)` if there were none in `auths`.
    pub fn remove_login(&self, registry: &str) -> Result<bool> {
        let mut cfg = self.load()?;
        let key = auth_key(registry);
        let Some(auths) = cfg.get_mut("auths").and_then(|a| a.as_object_mut()) else {
            return Ok(false);
        };
        let existing: Vec<String> = auths
            .keys()
            .filter(|k| normalize_auth_key(k) == normalize_auth_key(&key))
            .cloned()
            .collect();
        if existing.is_empty() {
            return Ok(false);
        }
        for k in existing {
            auths.remove(&k);
        }
        self.save(&cfg)?;
        Ok(true)
    }

    fn save(&self, cfg: &serde_json::Value) -> Result<()> {
        let path = self.path();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        create_private_dir(&self.dir).map_err(io(&self.dir))?;
        let mut bytes = serde_json::to_vec_pretty(cfg).expect("a Value always serializes");
        bytes.push(b'\n');
        let tmp = self
            .dir
            .join(format!(".config.json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::Io {
                path: path.clone(),
                source: e,
            }
        })
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The `auths` key docker uses for a registry.
pub fn auth_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_AUTH_KEY.into(),
        other => other.to_string(),
    }
}

/// `https://host:port/v1/` → `host:port`, Docker Hub aliases → `docker.io`.
fn normalize_auth_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        _ => host,
    }
}

async fn run_helper(helper: &str, registry: &str, server: &str) -> Result<Option<Credential>> {
    let herr = |reason: String| Error::CredentialHelper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(herr("helper name must be [A-Za-z0-9._-]".into()));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| herr(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| herr(format!("writing to its stdin: {e}")))?;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| herr(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())))?
        .map_err(|e| herr(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("credentials not found") {
            return Ok(None);
        }
        let msg: String = text.trim().chars().take(200).collect();
        return Err(herr(format!("exited with {}: {msg}", out.status)));
    }
    #[derive(serde::Deserialize)]
    struct HelperOutput {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let o: HelperOutput = serde_json::from_slice(&out.stdout)
        .map_err(|e| herr(format!("output is not the expected JSON: {e}")))?;
    Ok(Some(Credential {
        username: o.username,
        secret: o.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(json: &str) -> (tempfile::TempDir, DockerConfig) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        let c = DockerConfig::locate(Some(dir.path().to_path_buf()));
        (dir, c)
    }

    #[tokio::test]
    async fn reads_auths() {
        let (_d, c) = cfg_with(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
                "http://localhost:5000":{"username":"a","password":"b"}}}"#,
        );
        let hub = c.credentials_for("docker.io").await.unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.secret.as_str()), ("u", "p"));
        let l = c.credentials_for("localhost:5000").await.unwrap().unwrap();
        assert_eq!((l.username.as_str(), l.secret.as_str()), ("a", "b"));
        assert!(c.credentials_for("quay.io").await.unwrap().is_none());
        assert!(format!("{l:?}").contains("redacted"));
        assert!(!format!("{l:?}").contains("\"b\""));
    }

    #[tokio::test]
    async fn bad_config_names_the_file() {
        let (_d, c) = cfg_with(r#"{"auths":{"h":{"auth":"!!"}}}"#);
        let e = c.credentials_for("h").await.unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("base64"), "{e}");
        let (_d, c) = cfg_with("[1]");
        assert!(c.credentials_for("h").await.is_err());
    }

    #[tokio::test]
    async fn credential_helper_is_run_with_the_host_on_stdin() {
        let bin = tempfile::tempdir().unwrap();
        let script = bin.path().join("docker-credential-rbtest");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread host\nif [ \"$host\" = nope ]; then echo 'credentials not found in native keychain'; exit 1; fi\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"hu\",\"Secret\":\"%s-secret\"}' \"$host\" \"$host\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // Only this test touches PATH in this process's test binary for helpers; others do not run helpers.
        std::env::set_var("PATH", path);
        let (_d, c) = cfg_with(r#"{"credHelpers":{"reg.example":"rbtest"},"credsStore":"rbtest"}"#);
        let got = c.credentials_for("reg.example").await.unwrap().unwrap();
        assert_eq!(got.username, "hu");
        assert_eq!(got.secret, "reg.example-secret");
        let hub = c.credentials_for("docker.io").await.unwrap().unwrap();
        assert_eq!(hub.secret, format!("{DOCKER_HUB_AUTH_KEY}-secret"));
        assert!(c.credentials_for("nope").await.unwrap().is_none());
        let (_d, c) = cfg_with(r#"{"credsStore":"../../bin/sh"}"#);
        assert!(c.credentials_for("x").await.is_err());
    }

    #[test]
    fn login_logout_roundtrip_keeps_other_settings() {
        let (d, c) = cfg_with(
            r#"{"auths":{"http://localhost:5000/":{"auth":"eDp5"}},"detachKeys":"ctrl-x"}"#,
        );
        let cred = Credential {
            username: "me".into(),
            secret: "s3cret".into(),
        };
        c.store_login("localhost:5000", &cred).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(v["detachKeys"], "ctrl-x");
        assert_eq!(v["auths"].as_object().unwrap().len(), 1);
        assert_eq!(v["auths"]["localhost:5000"]["auth"], "bWU6czNjcmV0");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.path().join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(c.remove_login("localhost:5000").unwrap());
        assert!(!c.remove_login("localhost:5000").unwrap());
        let fresh = tempfile::tempdir().unwrap();
        let c2 = DockerConfig::locate(Some(fresh.path().join("sub")));
        c2.store_login("docker.io", &cred).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(c2.path()).unwrap()).unwrap();
        assert!(v["auths"][DOCKER_HUB_AUTH_KEY]["auth"].is_string());
    }
}
