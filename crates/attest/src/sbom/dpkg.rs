//! OS package databases: dpkg's `status` (and distroless `status.d/`), apk's `installed`,
//! Debian's machine-readable copyright files, and `os-release`.

use super::purl::os_placeholder;
use super::{Distro, Ecosystem, Package};

/// Paragraphs of a deb822 file: `Key: value` with continuation lines (leading space/tab), blank
/// lines between paragraphs. Keys keep their case; continuation lines are joined with `\n`.
fn deb822(text: &str) -> Vec<Vec<(String, String)>> {
    let mut paras = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                paras.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        paras.push(cur);
    }
    paras
}

fn field<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Installed packages of a dpkg status file. A `Status` other than `… installed` (removed,
/// config-files, half-installed) is not listed; distroless `status.d` files have no `Status`.
pub(crate) fn parse_status(path: &str, data: &[u8]) -> Vec<Package> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for p in deb822(&text) {
        let (Some(name), Some(version)) = (field(&p, "Package"), field(&p, "Version")) else {
            continue;
        };
        if let Some(status) = field(&p, "Status") {
            if status.split_whitespace().last() != Some("installed") {
                continue;
            }
        }
        let arch = field(&p, "Architecture").unwrap_or("");
        out.push(Package {
            ecosystem: Ecosystem::Deb,
            name: name.to_string(),
            version: version.to_string(),
            purl: os_placeholder(name, version, arch),
            license: None,
            source: path.to_string(),
            supplier: field(&p, "Maintainer").map(str::to_string),
        });
    }
    out
}

/// Packages of apk's `lib/apk/db/installed`: paragraphs of one-letter keys (`P` name, `V`
/// version, `A` arch, `L` licence, `m` maintainer).
pub(crate) fn parse_apk(path: &str, data: &[u8]) -> Vec<Package> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let get = |key: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.trim().to_string())
        };
        let (Some(name), Some(version)) = (get("P"), get("V")) else {
            continue;
        };
        let arch = get("A").unwrap_or_default();
        let license = get("L").filter(|l| !l.is_empty());
        let supplier = get("m");
        out.push(Package {
            ecosystem: Ecosystem::Apk,
            purl: os_placeholder(&name, &version, &arch),
            name,
            version,
            license,
            source: path.to_string(),
            supplier,
        });
    }
    out
}

/// The licence(s) of a DEP-5 (machine-readable) copyright file: every `License:` short name of
/// its paragraphs, distinct, joined with ` AND `. A free-form copyright file records none.
pub(crate) fn copyright_license(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let paras = deb822(&text);
    let header = paras.first()?;
    if !field(header, "Format").is_some_and(|f| f.contains("copyright-format")) {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    for p in &paras {
        // Only paragraphs that apply the licence to files (or the header's), not standalone
        // licence texts, which repeat a name already seen.
        if field(p, "Files").is_none() && !std::ptr::eq(p, header) {
            continue;
        }
        if let Some(l) = field(p, "License") {
            let short = l.lines().next().unwrap_or("").trim();
            if !short.is_empty() && !names.iter().any(|n| n == short) {
                names.push(short.to_string());
            }
        }
    }
    (!names.is_empty()).then(|| {
        if names.len() == 1 {
            names.remove(0)
        } else {
            names
                .iter()
                .map(|n| {
                    if n.contains(' ') {
                        format!("({n})")
                    } else {
                        n.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND ")
        }
    })
}

/// `ID` and `VERSION_ID` of an os-release file.
pub(crate) fn parse_os_release(data: &[u8]) -> Option<Distro> {
    let text = String::from_utf8_lossy(data);
    let mut d = Distro::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => d.id = v,
            "VERSION_ID" => d.version_id = v,
            _ => {}
        }
    }
    (!d.id.is_empty()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_installed_only() {
        let s = b"Package: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.88.1-10+deb12u5\nDescription: tool\n multi line\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let p = parse_status("var/lib/dpkg/status", s);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "curl");
        assert_eq!(p[0].version, "7.88.1-10+deb12u5");
    }

    #[test]
    fn apk_installed() {
        let s = b"C:Q1abc\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\nm:Timo\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n";
        let p = parse_apk("lib/apk/db/installed", s);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
        assert_eq!(p[1].name, "busybox");
    }

    #[test]
    fn dep5_copyright() {
        let s = b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: curl\n\nFiles: *\nCopyright: 1996 Daniel\nLicense: curl\n\nFiles: lib/x.c\nCopyright: x\nLicense: BSD-3-Clause\n\nLicense: curl\n All rights reserved.\n";
        assert_eq!(
            copyright_license(s).as_deref(),
            Some("curl AND BSD-3-Clause")
        );
        assert_eq!(copyright_license(b"This is free-form text.\n"), None);
    }
}
