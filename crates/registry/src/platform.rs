//! Choosing one manifest from an image index for a platform, with containerd's variant rules.

use rbuild_oci::{Descriptor, Index, Platform};

/// The variant an architecture means when none is written (`arm64` is `v8`, `arm` is `v7`).
fn normalized_variant(arch: &str, variant: Option<&str>) -> Option<String> {
    match (arch, variant) {
        (_, Some(v)) if !v.is_empty() => Some(v.to_ascii_lowercase()),
        ("arm64", _) => Some("v8".into()),
        ("arm", _) => Some("v7".into()),
        ("amd64", _) => Some("v1".into()),
        _ => None,
    }
}

fn variant_level(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.parse().ok()
}

/// How well `have` runs on `want`: `None` if it cannot; higher is better.
fn score(want: &Platform, have: &Platform) -> Option<u32> {
    if have.os != want.os || have.architecture != want.architecture {
        return None;
    }
    let w = normalized_variant(&want.architecture, want.variant.as_deref());
    let h = normalized_variant(&have.architecture, have.variant.as_deref());
    match (w, h) {
        (w, h) if w == h => Some(1000),
        (Some(w), Some(h)) => {
            // An older variant runs on a newer CPU (arm v6 on v7, amd64 v2 on v3): prefer the closest.
            let (wl, hl) = (variant_level(&w)?, variant_level(&h)?);
            (hl < wl).then(|| 1000 - (wl - hl) * 10)
        }
        _ => None,
    }
}

/// The best manifest of `index` for `want`, skipping attestations (`unknown/unknown`).
pub fn select_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    index
        .manifests
        .iter()
        .filter_map(|d| Some((score(want, d.platform.as_ref()?)?, d)))
        // max_by_key keeps the last of equals; take the first as docker does.
        .fold(None::<(u32, &Descriptor)>, |best, (s, d)| match best {
            Some((bs, _)) if bs >= s => best,
            _ => Some((s, d)),
        })
        .map(|(_, d)| d)
}

/// `os/arch[/variant]` as docker writes it.
pub fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
        None => format!("{}/{}", p.os, p.architecture),
    }
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
