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

/// `YYYY-MM-DDThh:mm:ssZ` (RFC 3339, UTC) of unix seconds: the form of an image config's `created`,
/// history times, SPDX and SLSA times (and, without `-` and `:`, AWS's signing time).
pub fn rfc3339(unix_secs: i64) -> String {
    // Civil from days (Howard Hinnant's algorithm), the proleptic Gregorian calendar.
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

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
