//! Docker's `config.json`: reading credentials (`auths`, `credsStore`, `credHelpers`) and writing
//! them for `rbuild login` / `rbuild logout`.
//!
//! Where a credential lives, as docker decides it: `credHelpers[registry]`, else `credsStore`, names a
//! credential helper (`docker-credential-<name>`, spoken to with its `get`/`store`/`erase` protocol:
//! the server URL or a `{"ServerURL","Username","Secret"}` JSON on stdin, never on the command
//! line); otherwise `auths[registry]` in `config.json` holds it (`auth` = base64 `user:password`,
//! plus `identitytoken` when the token server issued an OAuth2 refresh token at login). When a helper
//! holds the secret, `config.json` gets only an empty `auths` entry, as docker writes it; an identity
//! token goes to a helper as docker sends it, with the user name `<token>`.
//!
//! Credentials are never logged: [`Credential`]'s `Debug` redacts the secret and the identity token,
//! and a helper's error output has them masked before it becomes part of an error.

use crate::error::{Error, Result};
use base64::Engine as _;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The key docker uses in `auths` for Docker Hub.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// The user name docker gives a credential helper for an identity token.
const TOKEN_USERNAME: &str = "<token>";
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A username and a password (or token), or an identity token, for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    /// The password; empty when the registry issued an identity token instead.
    pub secret: String,
    /// An OAuth2 refresh token (docker's `identitytoken`): bearer tokens are then fetched with
    /// `grant_type=refresh_token` instead of the username and password.
    pub identity_token: Option<String>,
}

impl Credential {
    /// A username and a password.
    pub fn password(username: &str, password: &str) -> Credential {
        Credential {
            username: username.to_string(),
            secret: password.to_string(),
            identity_token: None,
        }
    }

    /// An identity token (OAuth2 refresh token) issued to `username`.
    pub fn identity_token(username: &str, token: &str) -> Credential {
        Credential {
            username: username.to_string(),
            secret: String::new(),
            identity_token: Some(token.to_string()),
        }
    }

    /// `text` with every secret of this credential replaced by `<redacted>`.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in [Some(&self.secret), self.identity_token.as_ref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
        {
            out = out.replace(s.as_str(), "<redacted>");
        }
        out
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where [`DockerConfig::store_login`] put a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    /// In `config.json` itself (base64, not encrypted).
    File(PathBuf),
    /// In `docker-credential-<name>`; `config.json` holds an empty `auths` entry.
    Helper(String),
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
            .or_else(|| rbuild_inputs::var_os("DOCKER_CONFIG").map(PathBuf::from))
            .or_else(|| rbuild_inputs::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
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
            return helper_get(helper, registry, &server).await;
        }
        if let Some(helper) = cfg.get("credsStore").and_then(|v| v.as_str()) {
            if !helper.is_empty() {
                if let Some(c) = helper_get(helper, registry, &server).await? {
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
            return self.entry_credential(key, entry);
        }
        Ok(None)
    }

    /// The credential of one `auths` entry; `None` for an empty entry (docker leaves one behind
    /// when a credential helper holds the secret).
    fn entry_credential(&self, key: &str, entry: &serde_json::Value) -> Result<Option<Credential>> {
        let bad = |reason: String| Error::Config {
            path: self.path(),
            reason: format!("auths[{key:?}]: {reason}"),
        };
        let text = |field: &str| {
            entry
                .get(field)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        let (mut username, mut secret) = (None, None);
        if let Some(auth) = text("auth") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("\"auth\" is not base64".into()))?;
            let text = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8".into()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not user:password".into()))?;
            (username, secret) = (Some(u.to_string()), Some(p.to_string()));
        } else if let (Some(u), Some(p)) = (text("username"), text("password")) {
            (username, secret) = (Some(u.to_string()), Some(p.to_string()));
        }
        let username = username.or_else(|| text("username").map(str::to_string));
        if let Some(token) = text("identitytoken") {
            return Ok(Some(Credential::identity_token(
                username.as_deref().unwrap_or(""),
                token,
            )));
        }
        match (username, secret) {
            (Some(u), Some(p)) => Ok(Some(Credential::password(&u, &p))),
            _ if entry.as_object().is_some_and(|o| {
                o.iter()
                    .all(|(k, v)| k == "email" || v.as_str().is_some_and(str::is_empty))
            }) =>
            {
                Ok(None)
            }
            _ => Err(bad(
                "neither \"auth\", \"username\"/\"password\" nor \"identitytoken\"".into(),
            )),
        }
    }

    /// Record `cred` for `registry`: in the credential helper `config.json` names for it (leaving an
    /// empty `auths` entry), else in `config.json` itself. `config.json` is created 0600 if missing,
    /// replaced atomically, and keeps its other settings.
    pub async fn store_login(&self, registry: &str, cred: &Credential) -> Result<Saved> {
        let mut cfg = self.load()?;
        let key = auth_key(registry);
        let (entry, saved) = match helper_for(&cfg, registry, &key) {
            Some(helper) => {
                helper_store(&helper, registry, &key, cred).await?;
                (serde_json::json!({}), Saved::Helper(helper))
            }
            None => {
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", cred.username, cred.secret));
                let mut entry = serde_json::json!({ "auth": auth });
                if let Some(t) = &cred.identity_token {
                    entry["identitytoken"] = serde_json::Value::String(t.clone());
                }
                (entry, Saved::File(self.path()))
            }
        };
        replace_auth_entry(&mut cfg, &key, Some(entry));
        self.save(&cfg)?;
        Ok(saved)
    }

    /// Forget the credentials of `registry`: `erase` in its credential helper, if one is
    /// configured, and its `auths` entry. `Ok(false)` if there were none.
    pub async fn remove_login(&self, registry: &str) -> Result<bool> {
        let mut cfg = self.load()?;
        let key = auth_key(registry);
        let mut removed = match helper_for(&cfg, registry, &key) {
            Some(helper) => helper_erase(&helper, registry, &key).await?,
            None => false,
        };
        if replace_auth_entry(&mut cfg, &key, None) {
            self.save(&cfg)?;
            removed = true;
        }
        Ok(removed)
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

/// Remove every `auths` entry naming `key`'s registry, then insert `entry` under `key` if given.
/// Whether an entry was removed.
fn replace_auth_entry(
    cfg: &mut serde_json::Value,
    key: &str,
    entry: Option<serde_json::Value>,
) -> bool {
    let Some(obj) = cfg.as_object_mut() else {
        return false;
    };
    if entry.is_none() && !obj.get("auths").is_some_and(|a| a.is_object()) {
        return false;
    }
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if !auths.is_object() {
        *auths = serde_json::json!({});
    }
    let Some(auths) = auths.as_object_mut() else {
        return false;
    };
    let existing: Vec<String> = auths
        .keys()
        .filter(|k| normalize_auth_key(k) == normalize_auth_key(key))
        .cloned()
        .collect();
    for k in &existing {
        auths.remove(k);
    }
    if let Some(e) = entry {
        auths.insert(key.to_string(), e);
    }
    !existing.is_empty()
}

/// The credential helper `config.json` names for a registry: `credHelpers[registry]`, else a
/// non-empty `credsStore`.
fn helper_for(cfg: &serde_json::Value, registry: &str, server: &str) -> Option<String> {
    cfg.get("credHelpers")
        .and_then(|h| h.get(registry).or_else(|| h.get(server)))
        .and_then(|v| v.as_str())
        .or_else(|| cfg.get("credsStore").and_then(|v| v.as_str()))
        .filter(|h| !h.is_empty())
        .map(str::to_string)
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

/// What a credential helper answered.
enum HelperAnswer {
    Output(Vec<u8>),
    /// It exited non-zero saying "credentials not found".
    NotFound,
}

/// Run `docker-credential-<helper> <verb>` with `input` on stdin. Any `secret` of `cred` is masked
/// in the helper's output before it goes into an error.
async fn run_helper(
    helper: &str,
    registry: &str,
    verb: &str,
    input: &[u8],
    cred: Option<&Credential>,
) -> Result<HelperAnswer> {
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
        .arg(verb)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| herr(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        stdin
            .write_all(input)
            .await
            .map_err(|e| herr(format!("writing to the stdin of `{program} {verb}`: {e}")))?;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            herr(format!(
                "`{program} {verb}` gave no answer within {}s",
                HELPER_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| herr(format!("waiting for `{program} {verb}`: {e}")))?;
    if out.status.success() {
        return Ok(HelperAnswer::Output(out.stdout));
    }
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("credentials not found") {
        return Ok(HelperAnswer::NotFound);
    }
    let text = cred.map_or(text.clone(), |c| c.redact(&text));
    let msg: String = text.trim().chars().take(200).collect();
    Err(herr(format!(
        "`{program} {verb}` exited with {}: {msg}",
        out.status
    )))
}

async fn helper_get(helper: &str, registry: &str, server: &str) -> Result<Option<Credential>> {
    let out = match run_helper(helper, registry, "get", server.as_bytes(), None).await? {
        HelperAnswer::NotFound => return Ok(None),
        HelperAnswer::Output(out) => out,
    };
    #[derive(serde::Deserialize)]
    struct HelperOutput {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    // serde_json's message names a position and what it expected, never the text it read.
    let o: HelperOutput = serde_json::from_slice(&out).map_err(|e| Error::CredentialHelper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason: format!("`get` output is not the expected JSON: {e}"),
    })?;
    Ok(Some(if o.username == TOKEN_USERNAME {
        Credential::identity_token("", &o.secret)
    } else {
        Credential::password(&o.username, &o.secret)
    }))
}

async fn helper_store(helper: &str, registry: &str, server: &str, cred: &Credential) -> Result<()> {
    let (username, secret) = match &cred.identity_token {
        Some(t) => (TOKEN_USERNAME, t.as_str()),
        None => (cred.username.as_str(), cred.secret.as_str()),
    };
    let input = serde_json::json!({ "ServerURL": server, "Username": username, "Secret": secret });
    let input = serde_json::to_vec(&input).expect("a Value always serializes");
    match run_helper(helper, registry, "store", &input, Some(cred)).await? {
        HelperAnswer::Output(_) => Ok(()),
        HelperAnswer::NotFound => Err(Error::CredentialHelper {
            helper: helper.to_string(),
            registry: registry.to_string(),
            reason: "`store` answered \"credentials not found\"".into(),
        }),
    }
}

/// `erase`; `Ok(false)` when the helper held nothing for the server.
async fn helper_erase(helper: &str, registry: &str, server: &str) -> Result<bool> {
    Ok(matches!(
        run_helper(helper, registry, "erase", server.as_bytes(), None).await?,
        HelperAnswer::Output(_)
    ))
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

    #[tokio::test]
    async fn login_logout_roundtrip_keeps_other_settings() {
        let (d, c) = cfg_with(
            r#"{"auths":{"http://localhost:5000/":{"auth":"eDp5"}},"detachKeys":"ctrl-x"}"#,
        );
        let cred = Credential::password("me", "s3cret");
        let saved = c.store_login("localhost:5000", &cred).await.unwrap();
        assert_eq!(saved, Saved::File(c.path()));
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
        assert!(c.remove_login("localhost:5000").await.unwrap());
        assert!(!c.remove_login("localhost:5000").await.unwrap());
        let fresh = tempfile::tempdir().unwrap();
        let c2 = DockerConfig::locate(Some(fresh.path().join("sub")));
        c2.store_login("docker.io", &cred).await.unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(c2.path()).unwrap()).unwrap();
        assert!(v["auths"][DOCKER_HUB_AUTH_KEY]["auth"].is_string());
    }

    #[tokio::test]
    async fn identity_tokens_are_read_and_written_like_docker() {
        // docker writes the user with an empty password, plus the token.
        let (d, c) = cfg_with(
            r#"{"auths":{"reg.example":{"auth":"Ym9iOg==","identitytoken":"rt-1"},
                "empty.example":{},"mail.example":{"email":"a@b"}}}"#,
        );
        let got = c.credentials_for("reg.example").await.unwrap().unwrap();
        assert_eq!(got, Credential::identity_token("bob", "rt-1"));
        assert!(!format!("{got:?}").contains("rt-1"));
        assert!(c.credentials_for("empty.example").await.unwrap().is_none());
        assert!(c.credentials_for("mail.example").await.unwrap().is_none());
        c.store_login("other.example", &Credential::identity_token("amy", "rt-2"))
            .await
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(v["auths"]["other.example"]["identitytoken"], "rt-2");
        assert_eq!(v["auths"]["other.example"]["auth"], "YW15Og==");
        let back = c.credentials_for("other.example").await.unwrap().unwrap();
        assert_eq!(back, Credential::identity_token("amy", "rt-2"));
    }

    #[test]
    fn helper_errors_never_show_the_secret() {
        let c = Credential::password("u", "hunter2");
        assert_eq!(c.redact("bad input hunter2!"), "bad input <redacted>!");
        let t = Credential::identity_token("", "rt-9");
        assert_eq!(t.redact("rt-9 rt-9"), "<redacted> <redacted>");
    }
}
