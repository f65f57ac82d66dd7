//! `rbuild login` / `rbuild logout`: verify credentials against the registry, then record them
//! where docker's `config.json` says (a credential helper, or the file itself).
//!
//! A token server that speaks OAuth2 is asked for an identity token (a refresh token, docker's
//! `identitytoken`); when it issues one, that is stored instead of the password, as docker does.

use crate::client::{status_error, Client, Request};
use crate::credentials::{Credential, Saved};
use crate::error::{Error, Result};
use reqwest::Method;

/// What a successful [`Client::login`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    /// Where the credential went.
    pub saved: Saved,
    /// Whether the token server issued an identity token, stored instead of the password.
    pub identity_token: bool,
}

/// `docker.io`, `localhost:5000`, … as a [`crate::Reference`] names the registry of `host`.
fn registry_of(host: &str) -> Result<String> {
    Ok(crate::Reference::parse(&format!("{host}/x"))?
        .registry()
        .to_string())
}

impl Client {
    /// Check `username`/`password` against `registry`'s `/v2/` (answering a Basic or Bearer
    /// challenge with them), and on success record them, or the identity token the token server
    /// issued for them. `registry` is a host as in a reference (`docker.io`, `localhost:5000`).
    /// Nothing is written when the check fails.
    pub async fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<LoginOutcome> {
        let registry = registry_of(registry)?;
        self.begin_login(&registry, Credential::password(username, password));
        let checked = self.ping(&registry).await;
        let issued = self.end_login(&registry);
        checked?;
        let cred = match &issued {
            Some(token) => Credential::identity_token(username, token),
            None => Credential::password(username, password),
        };
        let saved = self.docker_config().store_login(&registry, &cred).await?;
        Ok(LoginOutcome {
            saved,
            identity_token: issued.is_some(),
        })
    }

    /// Check the credentials already recorded for `registry` (`docker login` with no user name
    /// first tries those). `Ok(false)` if none are recorded.
    pub async fn login_with_stored(&self, registry: &str) -> Result<bool> {
        let registry = registry_of(registry)?;
        self.forget_auth(&registry);
        if self
            .docker_config()
            .credentials_for(&registry)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        self.ping(&registry).await?;
        Ok(true)
    }

    /// The user name recorded for `registry`, if any (shown as the default when prompting).
    pub async fn stored_username(&self, registry: &str) -> Result<Option<String>> {
        let registry = registry_of(registry)?;
        Ok(self
            .docker_config()
            .credentials_for(&registry)
            .await?
            .map(|c| c.username)
            .filter(|u| !u.is_empty()))
    }

    /// Remove `registry`'s credentials (`erase` in its credential helper, and its `config.json`
    /// entry). `Ok(false)` if there were none.
    pub async fn logout(&self, registry: &str) -> Result<bool> {
        let registry = registry_of(registry)?;
        self.forget_auth(&registry);
        self.docker_config().remove_login(&registry).await
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
