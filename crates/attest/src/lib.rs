//! # rbuild-attest — what an image contains and how it was built
//!
//! - **SBOM** ([`sbom`], [`spdx`]): the packages of an image, read by rbuild itself from the
//!   databases package managers keep (dpkg, apk, Python metadata, npm, Go build info, `cargo
//!   auditable`), from a directory ([`sbom::scan_dir`]) or straight from the layers in the store
//!   ([`sbom::scan_layers`], overlay semantics, nothing unpacked); written as SPDX 2.3 JSON
//!   ([`spdx::document`]). No scanner image, no network, no vulnerability data.
//! - **Provenance** ([`provenance`]): an SLSA v1 predicate for `--provenance=mode=min|max`.
//! - **Storage** ([`attach`]): in-toto statements in BuildKit's attestation manifests, listed in
//!   the image index beside the image they describe, so `docker buildx imagetools inspect`,
//!   cosign and docker scout find them where BuildKit puts them.
//!
//! What it is not: it neither builds nor pushes (the engine calls it after the solve and hands
//! the index to the exporters), and it does not sign anything.

pub mod attach;
mod error;
pub mod provenance;
pub mod sbom;
pub mod spdx;

pub use error::{AttestError, Result};

/// `--sbom` as buildx spells it: `true|1|false|0`, or `generator=…` (refused: rbuild's own
/// reader is the generator). `Ok(false)`: off.
pub fn parse_sbom_flag(s: &str) -> Result<bool> {
    match s.trim() {
        "true" | "1" | "enabled=true" => Ok(true),
        "false" | "0" | "enabled=false" | "disabled=true" => Ok(false),
        other if other.starts_with("generator=") => Err(AttestError::SbomOption {
            value: s.to_string(),
            reason: "rbuild reads the image's package databases itself; no generator image is run"
                .into(),
        }),
        _ => Err(AttestError::SbomOption {
            value: s.to_string(),
            reason: "expected true or false".into(),
        }),
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` of a Unix time (UTC), as SPDX and SLSA write times.
pub use rbuild_oci::rfc3339;

#[cfg(test)]
mod tests {
    #[test]
    fn times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn sbom_flag() {
        assert!(super::parse_sbom_flag("true").unwrap());
        assert!(!super::parse_sbom_flag("0").unwrap());
        assert!(super::parse_sbom_flag("generator=docker/scout-sbom-indexer").is_err());
    }
}
