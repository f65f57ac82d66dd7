//! Package URLs (github.com/package-url/purl-spec): `pkg:type/namespace/name@version?qualifiers`.

use super::{Distro, Ecosystem};

/// Percent-encode a purl component: everything but ASCII letters, digits and `.-_~` (so a Debian
/// `1:2.3+deb12u1` becomes `1%3A2.3%2Bdeb12u1`, as purl-spec's examples write it).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A purl with optional `/`-separated namespace (each segment encoded) and sorted qualifiers.
pub(crate) fn make(
    ty: Ecosystem,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut s = format!("pkg:{}/", ty.purl_type());
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        for seg in ns.split('/') {
            s.push_str(&encode(seg));
            s.push('/');
        }
    }
    s.push_str(&encode(name));
    if !version.is_empty() {
        s.push('@');
        s.push_str(&encode(version));
    }
    let mut q: Vec<_> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&encode(v));
    }
    s
}

/// The readers of OS databases leave a placeholder purl (`name@version?arch=…`, no namespace)
/// because the distribution is known only once every file is read; this fills namespace and
/// `distro` qualifier: `pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=debian-12`.
pub(crate) fn os_package(ty: Ecosystem, placeholder: &str, distro: Option<&Distro>) -> String {
    let (ns, distro_q) = match distro {
        Some(d) => (
            d.id.clone(),
            if d.version_id.is_empty() {
                d.id.clone()
            } else {
                format!("{}-{}", d.id, d.version_id)
            },
        ),
        None => match ty {
            Ecosystem::Apk => ("alpine".to_string(), String::new()),
            _ => ("debian".to_string(), String::new()),
        },
    };
    // placeholder: "<name>\0<version>\0<arch>"
    let mut parts = placeholder.splitn(3, '\0');
    let name = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    let arch = parts.next().unwrap_or_default();
    make(
        ty,
        Some(&ns),
        name,
        version,
        &[("arch", arch), ("distro", &distro_q)],
    )
}

/// The placeholder [`os_package`] completes.
pub(crate) fn os_placeholder(name: &str, version: &str, arch: &str) -> String {
    format!("{name}\0{version}\0{arch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_purl() {
        let d = Distro {
            id: "debian".into(),
            version_id: "12".into(),
        };
        let p = os_package(
            Ecosystem::Deb,
            &os_placeholder("curl", "7.88.1-10+deb12u5", "amd64"),
            Some(&d),
        );
        assert_eq!(
            p,
            "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=debian-12"
        );
    }

    #[test]
    fn npm_scoped() {
        assert_eq!(
            make(Ecosystem::Npm, Some("@types"), "node", "20.1.0", &[]),
            "pkg:npm/%40types/node@20.1.0"
        );
    }
}
