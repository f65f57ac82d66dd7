//! Platform specifiers (`linux/arm64`, `arm64`, `linux/arm/v7`), their normal form, and choosing
//! manifests for a platform — the rules of containerd's `platforms` package, which BuildKit, buildx
//! and docker all use, so that a platform string means here what it means there.
//!
//! - [`Platform::parse`] reads `<os>[(<os.version>)]`, `<arch>` or `<os>/<arch>[/<variant>]` and
//!   spells the architecture the Go way (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` →
//!   `arm/v7`, `armel` → `arm/v6`, `i386` → `386`); [`Platform::parse_strict`] also refuses an
//!   operating system or architecture nobody knows, which is what a user-typed `--platform` gets.
//! - [`Platform::normalized`] is the canonical value: `arm64` has no variant (`v8` is implied),
//!   `arm` always has one (`v7` when none is given), `amd64/v1` is `amd64`.
//! - [`Matcher::only`] is containerd's `platforms.Only`: the wanted platform first, then what also
//!   runs there, in order of preference — `arm/v7` then `arm/v6`, `arm/v5`; `arm64` then `arm/v8`
//!   down to `arm/v5`; `amd64/v3` then `v2`, `amd64`, then `386`. [`Matcher::best`] picks an index's
//!   manifest by that order (the first entry of the index among equals, as docker does).

use crate::{Descriptor, Index, Platform};
use std::fmt;

/// Operating systems Go knows (`go/build/syslist.go`), as containerd accepts them alone.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures Go knows (normalized spelling).
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// A platform string that cannot be read. Displays as one line naming the string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {spec:?}: {reason}")]
pub struct PlatformError {
    pub spec: String,
    pub reason: String,
}

fn err(spec: &str, reason: impl Into<String>) -> PlatformError {
    PlatformError {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return "linux".to_string();
    }
    match os.to_ascii_lowercase().as_str() {
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

/// containerd's `normalizeArch`: the Go spelling of an architecture and its variant.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = (arch.to_ascii_lowercase(), variant.to_ascii_lowercase());
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Platform {
    /// A platform of `os`/`arch`[/`variant`], taken as written.
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.to_string(),
            os: os.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
            os_version: None,
        }
    }

    /// Read a platform specifier as containerd's `platforms.Parse` does. A lone OS takes the host's
    /// architecture, a lone architecture the host's OS (linux).
    pub fn parse(spec: &str) -> Result<Platform, PlatformError> {
        if spec.contains('*') {
            return Err(err(spec, "wildcards are not supported"));
        }
        let parts: Vec<&str> = spec.splitn(4, '/').collect();
        // The first part is <os>[(<os.version>)].
        let (os_part, os_version) = match parts[0].split_once('(') {
            Some((os, rest)) => match rest.strip_suffix(')') {
                Some(v)
                    if v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
                {
                    (os, Some(v))
                }
                _ => {
                    return Err(err(
                        spec,
                        format!("{:?} is not <os>[(<os.version>)]", parts[0]),
                    ))
                }
            },
            None => (parts[0], None),
        };
        if !valid_component(os_part) || os_part.contains('.') {
            return Err(err(
                spec,
                format!(
                    "{:?} is not a valid operating system (letters, digits, '_' and '-')",
                    parts[0]
                ),
            ));
        }
        for p in &parts[1..] {
            if !valid_component(p) {
                return Err(err(
                    spec,
                    format!("{p:?} is not a valid component (letters, digits, '_', '.' and '-')"),
                ));
            }
        }
        let os = normalize_os(os_part);
        let os_version = os_version.filter(|v| !v.is_empty()).map(str::to_string);
        match parts.len() {
            1 => {
                if KNOWN_OS.contains(&os.as_str()) {
                    // An OS alone: the host's architecture.
                    let mut p = Platform::host();
                    p.os = os;
                    p.os_version = os_version;
                    return Ok(p);
                }
                let (arch, mut variant) = normalize_arch(parts[0], "");
                if arch == "arm" && variant == "v7" {
                    variant.clear();
                }
                if KNOWN_ARCH.contains(&arch.as_str()) {
                    return Ok(Platform {
                        architecture: arch,
                        os: "linux".into(),
                        variant: opt(variant),
                        os_version: None,
                    });
                }
                Err(err(spec, "unknown operating system or architecture"))
            }
            2 => {
                let (arch, mut variant) = normalize_arch(parts[1], "");
                if arch == "arm" && variant == "v7" {
                    variant.clear();
                }
                Ok(Platform {
                    architecture: arch,
                    os,
                    variant: opt(variant),
                    os_version,
                })
            }
            3 => {
                let (arch, mut variant) = normalize_arch(parts[1], parts[2]);
                if arch == "arm64" && variant.is_empty() {
                    variant = "v8".into();
                }
                Ok(Platform {
                    architecture: arch,
                    os,
                    variant: opt(variant),
                    os_version,
                })
            }
            _ => Err(err(
                spec,
                "cannot parse platform specifier (os/arch[/variant])",
            )),
        }
    }

    /// [`Platform::parse`], then [`Platform::normalized`], refusing an operating system or
    /// architecture Go does not know (`linux/amd46`): what a `--platform` typed by a user gets, as a
    /// typo there would otherwise only show as "no such manifest" much later.
    pub fn parse_strict(spec: &str) -> Result<Platform, PlatformError> {
        let p = Platform::parse(spec)?.normalized();
        if !KNOWN_OS.contains(&p.os.as_str()) {
            return Err(err(spec, format!("unknown operating system {:?}", p.os)));
        }
        if !KNOWN_ARCH.contains(&p.architecture.as_str()) {
            return Err(err(
                spec,
                format!(
                    "unknown architecture {:?} (known: amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le, loong64, …)",
                    p.architecture
                ),
            ));
        }
        Ok(p)
    }

    /// A comma-separated list (`linux/amd64,linux/arm64`), each read by [`Platform::parse_strict`],
    /// duplicates (after normalisation) dropped, order kept.
    pub fn parse_list(spec: &str) -> Result<Vec<Platform>, PlatformError> {
        let mut out: Vec<Platform> = Vec::new();
        for s in spec.split(',').map(str::trim) {
            if s.is_empty() {
                return Err(err(spec, "empty platform in the list"));
            }
            let p = Platform::parse_strict(s)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The canonical value (containerd's `platforms.Normalize`): `arm64/v8` is `arm64`, `arm` is
    /// `arm/v7`, `amd64/v1` is `amd64`, names lowercased.
    pub fn normalized(&self) -> Platform {
        let (arch, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        Platform {
            architecture: arch,
            os: normalize_os(&self.os),
            variant: opt(variant),
            os_version: self.os_version.clone(),
        }
    }

    /// `os/arch[/variant]` (containerd's `platforms.Format`), as BuildKit writes TARGETPLATFORM.
    pub fn format(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{}", self.os, self.architecture, v),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// The platform with `/` replaced by `_` (`linux_arm64_v8`), BuildKit's folder name for one
    /// platform of a multi-platform local or tar output.
    pub fn folder_name(&self) -> String {
        self.format().replace('/', "_")
    }

    /// Whether this (normalized) platform is the same as `other` after normalising both.
    pub fn same_as(&self, other: &Platform) -> bool {
        let (a, b) = (self.normalized(), other.normalized());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

impl std::str::FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        Platform::parse(s)
    }
}

/// An ordered list of platforms a wanted platform accepts (containerd's `Ordered` matcher).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    vector: Vec<Platform>,
}

/// arm64 variants and the ones each also runs (containerd's `arm64variantToVersion`): majors with
/// the highest minor of each.
fn arm64_versions(variant: &str) -> Option<&'static [(u32, u32)]> {
    Some(match variant {
        "v8" | "v8.0" => &[(8, 0)],
        "v8.1" => &[(8, 1)],
        "v8.2" => &[(8, 2)],
        "v8.3" => &[(8, 3)],
        "v8.4" => &[(8, 4)],
        "v8.5" => &[(8, 5)],
        "v8.6" => &[(8, 6)],
        "v8.7" => &[(8, 7)],
        "v8.8" => &[(8, 8)],
        "v8.9" => &[(8, 9)],
        "v9" | "v9.0" => &[(9, 0), (8, 5)],
        "v9.1" => &[(9, 1), (8, 6)],
        "v9.2" => &[(9, 2), (8, 7)],
        "v9.3" => &[(9, 3), (8, 8)],
        "v9.4" => &[(9, 4), (8, 9)],
        "v9.5" => &[(9, 5), (8, 9)],
        "v9.6" => &[(9, 6), (8, 9)],
        "v9.7" => &[(9, 7), (8, 9)],
        _ => return None,
    })
}

fn level(variant: Option<&str>) -> Option<u32> {
    variant?.strip_prefix('v')?.parse().ok()
}

/// containerd's `platformVector`: `p` first, then what also runs on it, best first.
fn platform_vector(p: &Platform) -> Vec<Platform> {
    let with = |arch: &str, variant: Option<String>| Platform {
        architecture: arch.to_string(),
        os: p.os.clone(),
        variant,
        os_version: p.os_version.clone(),
    };
    let mut v = vec![p.clone()];
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(n) = level(p.variant.as_deref()).filter(|n| *n > 1) {
                v.extend((1..n).rev().map(|k| with("amd64", Some(format!("v{k}")))));
            }
            v.push(with("386", None));
        }
        "arm" => {
            if let Some(n) = level(p.variant.as_deref()).filter(|n| *n > 5) {
                v.extend((5..n).rev().map(|k| with("arm", Some(format!("v{k}")))));
            }
        }
        "arm64" => {
            let variant = p.variant.clone().unwrap_or_else(|| "v8".into());
            v.clear();
            if let Some(versions) = arm64_versions(&variant) {
                for &(major, top) in versions {
                    for minor in (0..=top).rev() {
                        let name = if minor == 0 {
                            format!("v{major}")
                        } else {
                            format!("v{major}.{minor}")
                        };
                        v.push(with("arm64", Some(name)));
                    }
                }
            }
            // Every arm64 runs 32-bit arm up to v8.
            let arm = if variant.starts_with("v8") || variant.starts_with("v9") {
                "v8".to_string()
            } else {
                variant
            };
            v.extend(platform_vector(&with("arm", Some(arm))));
        }
        _ => {}
    }
    v
}

impl Matcher {
    /// containerd's `platforms.Only`: `want`, then the platforms that also run there.
    pub fn only(want: &Platform) -> Matcher {
        Matcher {
            vector: platform_vector(&want.normalized())
                .into_iter()
                .map(|p| p.normalized())
                .collect(),
        }
    }

    /// containerd's `platforms.OnlyStrict`: `want` alone (any spelling of it).
    pub fn only_strict(want: &Platform) -> Matcher {
        Matcher {
            vector: vec![want.normalized()],
        }
    }

    /// The position of `have` in the preference order (0 = the wanted platform itself), or `None`
    /// if it does not run on the wanted platform.
    pub fn rank(&self, have: &Platform) -> Option<usize> {
        let h = have.normalized();
        self.vector.iter().position(|m| {
            m.os == h.os
                && m.architecture == h.architecture
                && m.variant == h.variant
                && (m.os != "windows" || m.os_version.is_none() || m.os_version == h.os_version)
        })
    }

    pub fn matches(&self, have: &Platform) -> bool {
        self.rank(have).is_some()
    }

    /// The platforms accepted, best first.
    pub fn accepted(&self) -> &[Platform] {
        &self.vector
    }

    /// The best manifest of `index` (entries without a platform, and attestations such as
    /// `unknown/unknown`, never match); among equals the first in the index.
    pub fn best<'a>(&self, index: &'a Index) -> Option<&'a Descriptor> {
        let mut best: Option<(usize, &Descriptor)> = None;
        for d in &index.manifests {
            let Some(r) = d.platform.as_ref().and_then(|p| self.rank(p)) else {
                continue;
            };
            if best.is_none_or(|(br, _)| r < br) {
                best = Some((r, d));
            }
        }
        best.map(|(_, d)| d)
    }
}

/// The platforms an index offers, formatted and in index order (attestation entries skipped), for
/// errors such as "no linux/s390x in sha256:…; it has linux/amd64, linux/arm64".
pub fn index_platforms(index: &Index) -> Vec<String> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown" && p.architecture != "unknown")
        .map(Platform::format)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Digest, MEDIA_TYPE_OCI_MANIFEST};

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    fn fmt_parse(s: &str) -> String {
        p(s).format()
    }

    #[test]
    fn parse_as_containerd() {
        let host_arch = crate::host_arch();
        assert_eq!(fmt_parse("linux/amd64"), "linux/amd64");
        assert_eq!(fmt_parse("linux/x86_64"), "linux/amd64");
        assert_eq!(fmt_parse("linux/x86-64"), "linux/amd64");
        assert_eq!(fmt_parse("Linux/AMD64"), "linux/amd64");
        assert_eq!(fmt_parse("linux/amd64/v1"), "linux/amd64");
        assert_eq!(fmt_parse("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(fmt_parse("linux/aarch64"), "linux/arm64");
        assert_eq!(fmt_parse("linux/arm64/v8"), "linux/arm64/v8");
        assert_eq!(fmt_parse("linux/aarch64/8"), "linux/arm64/v8");
        assert_eq!(fmt_parse("linux/arm64/v9.0"), "linux/arm64/v9");
        assert_eq!(fmt_parse("linux/armhf"), "linux/arm");
        assert_eq!(fmt_parse("linux/armel"), "linux/arm/v6");
        assert_eq!(fmt_parse("linux/arm"), "linux/arm");
        assert_eq!(fmt_parse("linux/arm/7"), "linux/arm/v7");
        assert_eq!(fmt_parse("linux/arm/v5"), "linux/arm/v5");
        assert_eq!(fmt_parse("linux/i386"), "linux/386");
        assert_eq!(fmt_parse("arm64"), "linux/arm64");
        assert_eq!(fmt_parse("aarch64"), "linux/arm64");
        assert_eq!(fmt_parse("armhf"), "linux/arm");
        assert_eq!(fmt_parse("armel"), "linux/arm/v6");
        assert_eq!(fmt_parse("linux"), format!("linux/{host_arch}"));
        assert_eq!(fmt_parse("macos/arm64"), "darwin/arm64");
        let w = p("windows(10.0.17763)/amd64");
        assert_eq!(w.os, "windows");
        assert_eq!(w.os_version.as_deref(), Some("10.0.17763"));
        // Two parts: containerd does not check the names.
        assert_eq!(fmt_parse("plan9/foo"), "plan9/foo");
    }

    #[test]
    fn parse_errors_name_the_string() {
        for bad in [
            "",
            "foo",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/*",
            "linux/amd 64",
            "lin.ux/amd64",
            "windows(10/amd64",
        ] {
            let e = Platform::parse(bad).unwrap_err();
            assert_eq!(e.spec, bad);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("invalid platform {bad:?}: ")),
                "{msg}"
            );
            assert!(!msg.contains('\n'));
        }
        assert_eq!(
            Platform::parse("foo").unwrap_err().to_string(),
            "invalid platform \"foo\": unknown operating system or architecture"
        );
    }

    #[test]
    fn strict_refuses_unknown_names() {
        assert_eq!(
            Platform::parse_strict("linux/amd46").unwrap_err().to_string(),
            "invalid platform \"linux/amd46\": unknown architecture \"amd46\" (known: amd64, arm64, arm, 386, ppc64le, s390x, riscv64, mips64le, loong64, …)"
        );
        assert!(Platform::parse_strict("lunix/amd64")
            .unwrap_err()
            .to_string()
            .contains("unknown operating system \"lunix\""));
        // Strict parsing normalizes, as buildx does before BuildKit sees the platform.
        assert_eq!(
            Platform::parse_strict("linux/arm64/v8").unwrap().format(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse_strict("linux/arm").unwrap().format(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse_strict("linux/armhf").unwrap().format(),
            "linux/arm/v7"
        );
    }

    #[test]
    fn lists() {
        let l = Platform::parse_list("linux/amd64, linux/arm64,linux/aarch64").unwrap();
        assert_eq!(
            l.iter().map(Platform::format).collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64"]
        );
        assert!(Platform::parse_list("linux/amd64,").is_err());
        assert_eq!(
            Platform::parse_list("linux/amd64,bogus").unwrap_err().spec,
            "bogus"
        );
    }

    #[test]
    fn normalize_and_folder() {
        assert_eq!(p("linux/arm64/v8").normalized().format(), "linux/arm64");
        assert_eq!(p("linux/arm").normalized().format(), "linux/arm/v7");
        assert_eq!(p("linux/arm/v7").folder_name(), "linux_arm_v7");
        assert_eq!(p("linux/arm64").folder_name(), "linux_arm64");
        assert!(p("linux/aarch64").same_as(&p("linux/arm64/v8")));
        assert!(!p("linux/arm/v6").same_as(&p("linux/arm")));
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64");
    }

    fn vector(s: &str) -> Vec<String> {
        Matcher::only(&p(s))
            .accepted()
            .iter()
            .map(Platform::format)
            .collect()
    }

    #[test]
    fn only_vectors() {
        assert_eq!(vector("linux/amd64"), ["linux/amd64", "linux/386"]);
        assert_eq!(
            vector("linux/amd64/v3"),
            [
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64",
                "linux/386"
            ]
        );
        assert_eq!(
            vector("linux/arm/v7"),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        assert_eq!(vector("linux/arm"), vector("linux/arm/v7"));
        assert_eq!(vector("linux/arm/v6"), ["linux/arm/v6", "linux/arm/v5"]);
        assert_eq!(vector("linux/arm/v5"), ["linux/arm/v5"]);
        assert_eq!(
            vector("linux/arm64"),
            [
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        assert_eq!(
            vector("linux/arm64/v8.2"),
            [
                "linux/arm64/v8.2",
                "linux/arm64/v8.1",
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        assert_eq!(
            vector("linux/arm64/v9")[..3],
            ["linux/arm64/v9", "linux/arm64/v8.5", "linux/arm64/v8.4"]
        );
        assert_eq!(vector("linux/s390x"), ["linux/s390x"]);
    }

    fn desc(plat: Option<&str>, n: u8) -> Descriptor {
        let mut d = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::sha256_of(&[n]), 1);
        d.platform = plat.map(|s| {
            let mut it = s.split('/');
            Platform::new(it.next().unwrap(), it.next().unwrap(), it.next())
        });
        d
    }

    fn index(entries: &[(Option<&str>, u8)]) -> Index {
        Index {
            schema_version: 2,
            media_type: None,
            manifests: entries.iter().map(|(p, n)| desc(*p, *n)).collect(),
            annotations: Default::default(),
        }
    }

    fn pick(idx: &Index, want: &str) -> Option<u8> {
        Matcher::only(&p(want)).best(idx).map(|d| {
            (0..=255u8)
                .find(|n| Digest::sha256_of(&[*n]) == d.digest)
                .unwrap()
        })
    }

    #[test]
    fn best_manifest_of_an_index() {
        let idx = index(&[
            (Some("unknown/unknown"), 0),
            (Some("linux/arm/v5"), 1),
            (Some("linux/arm/v6"), 2),
            (Some("linux/arm/v7"), 3),
            (Some("linux/arm64/v8"), 4),
            (Some("linux/amd64"), 5),
            (Some("windows/amd64"), 6),
            (Some("linux/386"), 7),
            (None, 8),
        ]);
        assert_eq!(pick(&idx, "linux/amd64"), Some(5));
        assert_eq!(pick(&idx, "linux/x86_64"), Some(5));
        assert_eq!(pick(&idx, "linux/amd64/v2"), Some(5));
        assert_eq!(pick(&idx, "linux/386"), Some(7));
        assert_eq!(pick(&idx, "linux/arm64"), Some(4));
        assert_eq!(pick(&idx, "linux/arm"), Some(3));
        assert_eq!(pick(&idx, "linux/armhf"), Some(3));
        assert_eq!(pick(&idx, "linux/arm/v6"), Some(2));
        assert_eq!(pick(&idx, "linux/arm/v5"), Some(1));
        assert_eq!(pick(&idx, "windows/amd64"), Some(6));
        assert_eq!(pick(&idx, "linux/s390x"), None);

        // Fallbacks, best first: arm/v7 takes v6 before v5; arm64 takes arm; amd64 takes 386.
        let arm_only = index(&[(Some("linux/arm/v5"), 1), (Some("linux/arm/v6"), 2)]);
        assert_eq!(pick(&arm_only, "linux/arm/v7"), Some(2));
        assert_eq!(pick(&arm_only, "linux/arm64"), Some(2));
        assert_eq!(pick(&arm_only, "linux/arm/v5"), Some(1));
        let i386 = index(&[(Some("linux/386"), 7)]);
        assert_eq!(pick(&i386, "linux/amd64"), Some(7));
        assert_eq!(pick(&i386, "linux/arm64"), None);
        // A newer variant never runs on an older CPU.
        let v7 = index(&[(Some("linux/arm/v7"), 3)]);
        assert_eq!(pick(&v7, "linux/arm/v6"), None);
        let v3 = index(&[(Some("linux/amd64/v3"), 9)]);
        assert_eq!(pick(&v3, "linux/amd64"), None);
        assert_eq!(pick(&v3, "linux/amd64/v4"), Some(9));
        // Equals: the first in the index.
        let twice = index(&[(Some("linux/arm64"), 1), (Some("linux/arm64/v8"), 2)]);
        assert_eq!(pick(&twice, "linux/arm64"), Some(1));
        // Strict: no fallbacks.
        assert!(Matcher::only_strict(&p("linux/amd64"))
            .best(&i386)
            .is_none());
        assert!(Matcher::only_strict(&p("linux/arm64/v8"))
            .best(&twice)
            .is_some());
    }

    #[test]
    fn platforms_of_an_index() {
        let idx = index(&[
            (Some("linux/amd64"), 1),
            (Some("unknown/unknown"), 2),
            (Some("linux/arm64/v8"), 3),
            (None, 4),
        ]);
        assert_eq!(index_platforms(&idx), ["linux/amd64", "linux/arm64/v8"]);
    }
}
