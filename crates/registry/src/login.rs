//! `rbuild login` / `rbuild logout`: verify credentials against the registry, then record them in
//! docker's `config.json`.

use crate::client::{status_error, Client, Request};
use crate::credentials::Credential;
use crate::error::{Error, Result};
use reqwest::Method;

impl Client {
    /// Check `username`/`password` against `registry`'s `/v2/` (answering a Basic or Bearer
    /// challenge with them), and on success write them to `config.json` (0600, atomically).
    /// `registry` is a host as in a reference (`docker.io`, `localhost:5000`).
    pub async fn login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let registry = crate::Reference::parse(&format!("{registry}/x"))?
            .registry()
            .to_string();
        let cred = Credential {
            username: username.to_string(),
            secret: password.to_string(),
        };
        self.set_credential(&registry, Some(cred.clone()));
        let checked = self.ping(&registry).await;
        self.forget_auth(&registry);
        checked?;
        self.docker_config().store_login(&registry, &cred)
    }

    /// Remove `registry`'s credentials from `config.json`. `Ok(false)` if there were none.
    pub fn logout(&self, registry: &str) -> Result<bool> {
        let registry = crate::Reference::parse(&format!("{registry}/x"))?
            .registry()
            .to_string();
        self.forget_auth(&registry);
        self.docker_config().remove_login(&registry)
    }

    /// `GET /v2/`: whether the registry answers and accepts our credentials (if it asks for any).
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let url = self
            .base_url(registry)?
            .join("v2/")
            .map_err(|e| Error::InvalidResponse {
                url: registry.to_string(),
                what: "URL",
                reason: e.to_string(),
            })?;
        let req = Request::new(Method::GET, url.clone(), Vec::new());
        let resp = self.send(registry, &req, None).await?;
        if !resp.status().is_success() {
            return Err(status_error(self, &Method::GET, &url, resp).await);
        }
        Ok(())
    }
}
