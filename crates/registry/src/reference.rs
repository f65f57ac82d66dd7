//! Image references, parsed exactly as docker (distribution/reference) parses them.
//!
//! Grammar (from distribution's `reference.go`):
//! ```text
//! reference      := name [ ":" tag ] [ "@" digest ]
//! name           := [domain '/'] path-component ['/' path-component]*
//! domain         := host [':' port]      host: dns name, IPv4, or [IPv6]
//! path-component := [a-z0-9]+ (separator [a-z0-9]+)*   separator: '.', '_', '__', '-'+
//! tag            := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! ```
//! Normalization: a first component without `.` or `:` that is not `localhost` is not a domain, so
//! `busybox` is `docker.io/library/busybox:latest`; `index.docker.io` is `docker.io`.

use rbuild_oci::Digest;
use std::fmt;
use std::str::FromStr;

/// The registry a name without a domain lives on.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Where [`DEFAULT_REGISTRY`]'s API really answers.
pub const DEFAULT_REGISTRY_API_HOST: &str = "registry-1.docker.io";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully normalized image reference: registry, repository, and a tag and/or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: &'static str,
}

impl Reference {
    /// Parse like `docker pull` does, adding `docker.io`, `library/` and `:latest` where docker would.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason| ReferenceError {
            input: input.chars().take(300).collect(),
            reason,
        };
        if input.is_empty() {
            return Err(err("empty reference"));
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(
                "cannot specify 64-byte hexadecimal strings (that looks like an image id)",
            ));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| err("invalid digest"))?),
            ),
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err(
                    "invalid tag: 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        if name.is_empty() {
            return Err(err("empty repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err("repository name longer than 255 characters"));
        }
        let (registry, path) = split_domain(name);
        if let Some(reg) = &registry {
            if !valid_domain(reg) {
                return Err(err("invalid registry host"));
            }
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(err(
                "invalid repository name: components of [a-z0-9] joined by '.', '_', '__' or '-'",
            ));
        }
        let mut registry = registry.unwrap_or_else(|| DEFAULT_REGISTRY.to_string());
        if registry == LEGACY_DEFAULT_REGISTRY {
            registry = DEFAULT_REGISTRY.to_string();
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Build from parts already split; validates like [`Reference::parse`].
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Reference, ReferenceError> {
        let mut s = format!("{registry}/{repository}");
        if let Some(t) = tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        let r = Reference::parse(&s)?;
        if tag.is_none() && digest.is_none() {
            return Ok(r.without_tag());
        }
        Ok(r)
    }

    /// The registry host (with port), normalized: `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// The repository path inside the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// What to put after `/manifests/`: the digest when there is one (docker pulls by digest when
    /// both are given), else the tag; `latest` if a reference was built with neither.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
    /// The host the registry's HTTP API answers on (`registry-1.docker.io` for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DEFAULT_REGISTRY_API_HOST
        } else {
            &self.registry
        }
    }
    /// `registry/repository`, no tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    /// The same repository with this digest and no tag.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            tag: None,
            ..self.clone()
        }
    }
    /// The same repository with this tag and no digest. Panics never: an invalid tag is an error.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError {
                input: tag.chars().take(300).collect(),
                reason: "invalid tag: 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
            });
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }
    /// Another repository on the same registry (for cross-repository mounts).
    pub fn same_registry(&self, other: &Reference) -> bool {
        self.registry == other.registry
    }
    fn without_tag(mut self) -> Reference {
        self.tag = None;
        self
    }

    /// The short form docker prints: `busybox:latest`, `user/app:1`, `localhost:5000/a:t`.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix(OFFICIAL_REPO_PREFIX)
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    /// The fully normalized form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// docker's splitDockerDomain: is the first component a host?
fn split_domain(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [IPv6]:port
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => return valid_port(port),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if !valid_port(p) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "index.docker.io/library/x",
                "docker.io/library/x:latest",
                "x:latest",
            ),
            (
                "docker.io/library/a/b",
                "docker.io/library/a/b:latest",
                "library/a/b:latest",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/a/b:t",
                "localhost:5000/a/b:t",
                "localhost:5000/a/b:t",
            ),
            (
                "127.0.0.1:5000/a",
                "127.0.0.1:5000/a:latest",
                "127.0.0.1:5000/a:latest",
            ),
            ("[::1]:5000/a:v1", "[::1]:5000/a:v1", "[::1]:5000/a:v1"),
            (
                "Example.com/a",
                "Example.com/a:latest",
                "Example.com/a:latest",
            ),
            (
                "a__b-c---e/f_g.h",
                "docker.io/a__b-c---e/f_g.h:latest",
                "a__b-c---e/f_g.h:latest",
            ),
        ];
        for (input, full, familiar) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("host.io/x@{}", d())).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), d());
        assert_eq!(r.tag_or_digest(), d());
        assert_eq!(r.to_string(), format!("host.io/x@{}", d()));
        let r = Reference::parse(&format!("x:tag@{}", d())).unwrap();
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.tag_or_digest(), d());
        assert_eq!(r.familiar(), format!("x:tag@{}", d()));
    }

    #[test]
    fn parts() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        let r = Reference::parse("localhost:5000/a/b:t").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.api_host(), "localhost:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("t"));
        let n = Reference::new("localhost:5000", "a/b", None, None).unwrap();
        assert_eq!(n.tag(), None);
        assert_eq!(n.tag_or_digest(), "latest");
    }

    #[test]
    fn rejects() {
        let long_tag = format!("x:{}", "a".repeat(129));
        let long_name = format!("a/{}", "b".repeat(260));
        let bad_digest = "x@sha256:abc".to_string();
        let hex64 = "a".repeat(64);
        for bad in [
            "",
            "Busybox",
            "docker.io/Library/x",
            "x:",
            "x:-tag",
            "x:.tag",
            "x:t@g",
            long_tag.as_str(),
            long_name.as_str(),
            bad_digest.as_str(),
            hex64.as_str(),
            "a//b",
            "/a",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "host:port/x",
            "[::zz]:5000/x",
            "a b",
            "x@",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = Reference::parse("Busybox").unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
        assert!(Reference::parse(&format!("x:{}", "a".repeat(128))).is_ok());
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse("localhost:5000/a:t").unwrap();
        let dg: Digest = d().parse().unwrap();
        assert_eq!(
            r.with_digest(dg.clone()).to_string(),
            format!("localhost:5000/a@{dg}")
        );
        assert_eq!(r.with_tag("v2").unwrap().to_string(), "localhost:5000/a:v2");
        assert!(r.with_tag("bad tag").is_err());
    }
}
