//! Choosing one manifest from an image index for a platform, with containerd's variant rules
//! (which live in `rbuild_oci::Matcher`).

use rbuild_oci::{Descriptor, Index, Matcher, Platform};

/// The best manifest of `index` for `want`, by containerd's `platforms.Only` order (see
/// [`rbuild_oci::Matcher`]): attestations (`unknown/unknown`) never match; among equals the first.
pub fn select_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    Matcher::only(want).best(index)
}

/// `os/arch[/variant]` as docker writes it.
pub fn platform_string(p: &Platform) -> String {
    p.format()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_oci::Digest;

    fn desc(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        let mut d = Descriptor::new(
            rbuild_oci::MEDIA_TYPE_OCI_MANIFEST,
            Digest::sha256_of(&[n]),
            1,
        );
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: variant.map(Into::into),
            os_version: None,
        });
        d
    }

    fn plat(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
            os_version: None,
        }
    }

    #[test]
    fn picks_host_and_variants() {
        let idx = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                desc("unknown", "unknown", None, 0),
                desc("linux", "arm", Some("v6"), 1),
                desc("linux", "arm", Some("v7"), 2),
                desc("linux", "arm64", Some("v8"), 3),
                desc("linux", "amd64", None, 4),
                desc("windows", "amd64", None, 5),
            ],
            annotations: Default::default(),
        };
        let pick = |p: Platform| select_manifest(&idx, &p).map(|d| d.digest.clone());
        assert_eq!(pick(plat("amd64", None)), Some(Digest::sha256_of(&[4])));
        assert_eq!(pick(plat("arm64", None)), Some(Digest::sha256_of(&[3])));
        assert_eq!(pick(plat("arm", None)), Some(Digest::sha256_of(&[2])));
        assert_eq!(pick(plat("arm", Some("v6"))), Some(Digest::sha256_of(&[1])));
        assert_eq!(pick(plat("arm", Some("v8"))), Some(Digest::sha256_of(&[2])));
        assert_eq!(pick(plat("s390x", None)), None);
        assert_eq!(
            pick(plat("amd64", Some("v3"))),
            Some(Digest::sha256_of(&[4]))
        );
    }
}
