//! Python distributions: core metadata (`METADATA` of a wheel's `.dist-info`, `PKG-INFO` of an
//! `.egg-info`), an RFC 822 header block.

use super::purl::make;
use super::{Ecosystem, Package};

/// The package a metadata file describes. Licence: `License-Expression` (PEP 639, already SPDX),
/// else `License` when it is one line, else the `License ::` classifiers.
pub(crate) fn parse_metadata(path: &str, data: &[u8]) -> Option<Package> {
    let text = String::from_utf8_lossy(data);
    let mut name = None;
    let mut version = None;
    let mut license = None;
    let mut expression = None;
    let mut author = None;
    let mut classifiers = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break; // the body (description) starts
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.to_ascii_lowercase().as_str() {
            "name" => name = Some(v.to_string()),
            "version" => version = Some(v.to_string()),
            "license" if !v.is_empty() && v != "UNKNOWN" => license = Some(v.to_string()),
            "license-expression" if !v.is_empty() => expression = Some(v.to_string()),
            "author" if !v.is_empty() && v != "UNKNOWN" => author = Some(v.to_string()),
            "classifier" => {
                if let Some(l) = v.strip_prefix("License ::") {
                    classifiers.push(l.rsplit("::").next().unwrap_or(l).trim().to_string());
                }
            }
            _ => {}
        }
    }
    let (name, version) = (name?, version?);
    let license = expression
        .or(license.filter(|l| l.len() < 100))
        .or_else(|| (!classifiers.is_empty()).then(|| classifiers.join(" AND ")));
    Some(Package {
        ecosystem: Ecosystem::Pypi,
        purl: make(Ecosystem::Pypi, None, &normalize(&name), &version, &[]),
        name,
        version,
        license,
        source: path.to_string(),
        supplier: author,
    })
}

/// PEP 503 normalisation, which purl-spec asks for pypi names: lowercase, runs of `-_.` → `-`.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_metadata() {
        let m = b"Metadata-Version: 2.1\nName: Typing_Extensions\nVersion: 4.9.0\nClassifier: License :: OSI Approved :: Python Software Foundation License\n\nLicense: not a header\n";
        let p = parse_metadata("x.dist-info/METADATA", m).unwrap();
        assert_eq!(p.purl, "pkg:pypi/typing-extensions@4.9.0");
        assert_eq!(
            p.license.as_deref(),
            Some("Python Software Foundation License")
        );
        let m = b"Name: six\nVersion: 1.16.0\nLicense: MIT\n";
        assert_eq!(
            parse_metadata("p", m).unwrap().license.as_deref(),
            Some("MIT")
        );
    }
}
