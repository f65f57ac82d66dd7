//! # rbuild-registry — the OCI distribution client
//!
//! Talks to OCI registries (distribution-spec v1.1, Docker Registry HTTP API v2) to pull images into
//! the local store ([`rbuild_store::Store`]), push images from it, and store build-cache artifacts.
//!
//! Main types:
//! - [`Reference`]: an image reference parsed exactly as docker does (`busybox` →
//!   `docker.io/library/busybox:latest`), shown normalized or in docker's familiar form.
//! - [`Client`] with [`Options`]: HTTPS with the system roots plus an optional CA file, plain HTTP only
//!   for loopback and `insecure_registries` (loopback HTTPS via `force_https`); anonymous, Basic and Bearer-token auth with credentials
//!   from docker's `config.json` ([`DockerConfig`]: `auths`, `credsStore`, `credHelpers`); retries with
//!   backoff on connection errors, 5xx and 429 (`Retry-After`) within a deadline; stall detection.
//! - [`Client::pull`] / [`Client::resolve`] / [`Client::fetch_blob`]: manifest or index (platform
//!   picked by [`select_manifest`]), config and missing layers, each checked for size then digest and
//!   committed atomically; interrupted downloads resume with `Range`.
//! - [`Client::push`]: HEAD first and skip what the registry has, cross-repository mounts from
//!   [`KnownLocations`], monolithic or chunked uploads, manifest last; [`PushReport`] says how many
//!   bytes moved.
//! - [`Client::push_artifact`] / [`Client::pull_artifact`] and [`CacheConfig`]: the build cache as an
//!   OCI artifact whose config blob maps cache keys to layer descriptors, read back lazily.
//! - [`Client::create_index`] (`imagetools create`): an index of manifests already in a registry,
//!   blobs mounted across repositories, nothing downloaded but manifests and configs.
//! - [`Client::login`] / [`Client::logout`]: the password is checked against the registry, then
//!   stored in the credential helper `config.json` names or in the file; a token server speaking
//!   OAuth2 is asked for an identity token (refresh token), which is then stored instead and used
//!   with `grant_type=refresh_token` for every later token.
//!
//! Security rules kept here: credentials go only to the registry's own origin (a redirect to another
//! host, such as blob storage, is followed without `Authorization`) or to the token realm it names
//! (HTTPS only, unless that realm is itself a plain-HTTP host); they are never logged or put into
//! errors; every byte fetched is size-capped or size-checked before its digest is checked.
//!
//! What it is not: it builds nothing, does not compress layers (pushes send blobs as they are in the
//! store) and does not name images in the store (the caller records a pulled image under a name).
//! The only programs it runs are credential helpers: `docker-credential-<helper> get|store|erase`,
//! secrets on stdin.

mod artifact;
mod challenge;
mod client;
mod credentials;
mod error;
mod imagetools;
mod locations;
mod login;
mod options;
mod platform;
mod progress;
mod pull;
mod push;
mod reference;

pub use artifact::{
    Artifact, CacheConfig, PulledArtifact, CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE,
};
pub use challenge::{parse_challenge, pull_scope, push_scope, Challenge};
pub use client::Client;
pub use credentials::{auth_key, Credential, DockerConfig, Saved, DOCKER_HUB_AUTH_KEY};
pub use error::{Error, Result};
pub use imagetools::{CreateAnnotations, DuplicatePlatform, IndexEntry};
pub use locations::KnownLocations;
pub use login::LoginOutcome;
pub use options::{is_loopback_host, parse_retry_after, Options, RetryPolicy};
pub use platform::{platform_string, select_manifest};
pub use progress::{no_progress, Progress, ProgressFn};
pub use pull::{PulledImage, Resolved};
pub use push::PushReport;
pub use reference::{
    Reference, ReferenceError, DEFAULT_REGISTRY, DEFAULT_REGISTRY_API_HOST, DEFAULT_TAG,
};
