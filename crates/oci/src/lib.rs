//! # rbuild-oci — the OCI vocabulary every rbuild crate shares
//!
//! This crate holds *types*, not behaviour: a strictly parsed [`Digest`], the OCI image-spec v1.1
//! structures ([`Descriptor`], [`Manifest`], [`Index`], [`ImageConfig`]) with Docker's extra config
//! fields (Healthcheck, OnBuild, Shell, StopSignal), and [`canonical_json`], the one way any of them is
//! turned into bytes that get a digest.
//!
//! What it is not: it does no I/O (but for [`host`], one fact about the process every crate needs
//! alike), knows nothing of stores, registries or layers on disk.
//!
//! Why our own structs rather than `oci-spec`: a digest must not depend on map iteration order, so
//! every map here is a `BTreeMap`, optional fields are skipped when empty, and field names follow the
//! specs exactly. `oci-spec` serializes maps in random order and drops Docker's fields.

mod digest;
pub mod expansion;
pub mod host;
mod platform;
mod types;

pub use digest::{sha256_hex, Digest, DigestError, Sha256Writer};
pub use platform::{index_platforms, Matcher, PlatformError};
pub use types::*;

/// Serialize `value` as canonical JSON: keys sorted (all our maps are `BTreeMap` and struct fields are
/// declared in sorted order where it matters), no insignificant whitespace. Anything whose bytes get a
/// digest goes through here.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // serde_json::Value's map is a BTreeMap (no `preserve_order` feature), so a round-trip through
    // Value sorts every object's keys, including struct fields.
    let v = serde_json::to_value(value).expect("serializing an in-memory value cannot fail");
    serde_json::to_vec(&v).expect("serializing a Value cannot fail")
}

/// The digest of [`canonical_json`] of `value`.
pub fn canonical_digest<T: serde::Serialize>(value: &T) -> Digest {
    Digest::sha256_of(&canonical_json(value))
}
