//! From the licence strings databases record to SPDX licence expressions.
//!
//! A string whose every licence name is a known SPDX identifier (or a common alias of one:
//! Debian's `GPL-2+`, `Expat`, Python's `MIT License` classifier …) becomes that expression with
//! canonical spelling. Anything else is kept verbatim as a `LicenseRef-…` that the document
//! declares in `hasExtractedLicensingInfos`, so nothing is lost and the SBOM stays valid.

/// SPDX identifiers recognised as they are (canonical case).
const SPDX_IDS: &[&str] = &[
    "0BSD",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.1",
    "Apache-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-4-Clause",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "curl",
    "EPL-1.0",
    "EPL-2.0",
    "GFDL-1.2-or-later",
    "GFDL-1.3-or-later",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "OpenSSL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "Unicode-DFS-2016",
    "Unicode-3.0",
    "Unlicense",
    "WTFPL",
    "X11",
    "Zlib",
    "zlib-acknowledgement",
];

/// Aliases (lowercase) → SPDX identifier.
const ALIASES: &[(&str, &str)] = &[
    ("expat", "MIT"),
    ("mit license", "MIT"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("gpl", "GPL-1.0-or-later"),
    ("gpl+", "GPL-1.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("apache-2", "Apache-2.0"),
    ("apache 2.0", "Apache-2.0"),
    ("apache license 2.0", "Apache-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("mpl-2", "MPL-2.0"),
    ("zlib", "Zlib"),
    ("isc license (iscl)", "ISC"),
    ("isc license", "ISC"),
    ("python software foundation license", "PSF-2.0"),
    ("mozilla public license 2.0 (mpl 2.0)", "MPL-2.0"),
    ("gnu general public license v2 (gplv2)", "GPL-2.0-only"),
    ("gnu general public license v3 (gplv3)", "GPL-3.0-only"),
    ("the unlicense (unlicense)", "Unlicense"),
    ("artistic", "Artistic-1.0-Perl"),
    ("cc0", "CC0-1.0"),
    ("public-domain", ""),
];

fn canonical(id: &str) -> Option<&'static str> {
    if let Some(k) = SPDX_IDS.iter().find(|k| k.eq_ignore_ascii_case(id)) {
        return Some(k);
    }
    let lower = id.to_ascii_lowercase();
    ALIASES
        .iter()
        .find(|(a, _)| *a == lower)
        .map(|(_, s)| *s)
        .filter(|s| !s.is_empty())
}

/// The SPDX expression for a recorded licence, or `None` when it has to be a `LicenseRef`.
fn as_expression(raw: &str) -> Option<String> {
    if let Some(id) = canonical(raw.trim()) {
        return Some(id.to_string());
    }
    let spaced = raw.replace('(', " ( ").replace(')', " ) ");
    let mut out = Vec::new();
    let mut after_with = false;
    for tok in spaced.split_whitespace() {
        match tok {
            "(" | ")" => out.push(tok.to_string()),
            t if ["and", "or", "with"].contains(&t.to_ascii_lowercase().as_str()) => {
                after_with = t.eq_ignore_ascii_case("with");
                out.push(t.to_ascii_uppercase());
            }
            t if after_with => {
                // Exception ids (e.g. Classpath-exception-2.0, OpenSSL-exception) are kept as
                // written: only well-formed ones pass.
                if !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
                {
                    return None;
                }
                after_with = false;
                out.push(t.to_string());
            }
            t => out.push(canonical(t)?.to_string()),
        }
    }
    if out.is_empty() {
        return None;
    }
    Some(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// How a recorded licence appears in SPDX: an expression, or a `LicenseRef-…` id with the
/// original text to declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpdxLicense {
    Expression(String),
    Ref { id: String, text: String },
}

/// Map a recorded licence string to SPDX.
pub fn spdx_license(raw: &str) -> SpdxLicense {
    if let Some(e) = as_expression(raw) {
        return SpdxLicense::Expression(e);
    }
    let mut id = String::from("LicenseRef-");
    for c in raw.trim().chars() {
        id.push(if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            c
        } else {
            '-'
        });
    }
    SpdxLicense::Ref {
        id,
        text: raw.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        let e = |s: &str| match spdx_license(s) {
            SpdxLicense::Expression(e) => e,
            SpdxLicense::Ref { id, .. } => id,
        };
        assert_eq!(e("mit"), "MIT");
        assert_eq!(
            e("GPL-2+ and BSD-3-clause"),
            "GPL-2.0-or-later AND BSD-3-Clause"
        );
        assert_eq!(e("(MIT OR Apache-2.0)"), "(MIT OR Apache-2.0)");
        assert_eq!(
            e("GPL-2.0-only WITH Linux-syscall-note"),
            "GPL-2.0-only WITH Linux-syscall-note"
        );
        assert_eq!(
            e("curl AND public-domain"),
            "LicenseRef-curl-AND-public-domain"
        );
        assert_eq!(
            e("Some License (c) 2001"),
            "LicenseRef-Some-License--c--2001"
        );
    }
}
