//! SPDX 2.3 JSON of an [`Inventory`]: the document describes one package for the image itself,
//! which `CONTAINS` every package found. So an image with no package database still gives a
//! valid document (one that describes the image and lists nothing in it).

use crate::sbom::{spdx_license, Inventory, Package, SpdxLicense};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The predicate type of an SPDX document inside an in-toto statement.
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

/// What the SBOM is of.
#[derive(Clone, Debug)]
pub struct SbomSubject {
    /// The image's name (`app:1`), or a stand-in when it has none.
    pub name: String,
    /// The image manifest digest, when known.
    pub digest: Option<rbuild_oci::Digest>,
    /// `created` of the document, `YYYY-MM-DDThh:mm:ssZ` (SOURCE_DATE_EPOCH for reproducible
    /// builds).
    pub created: String,
}

/// SPDX ids allow `[A-Za-z0-9.-]` after `SPDXRef-`.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An SPDX actor from a recorded maintainer (`Name <mail>` → `Person: Name (mail)`).
fn supplier(s: &str) -> String {
    let clean = |x: &str| {
        x.chars()
            .filter(|c| !matches!(c, '(' | ')' | '<' | '>' | '\n' | '\r'))
            .collect::<String>()
            .trim()
            .to_string()
    };
    match s.split_once('<') {
        Some((name, rest)) if !clean(name).is_empty() => {
            let mail = clean(rest.split('>').next().unwrap_or(""));
            format!("Person: {} ({mail})", clean(name))
        }
        _ if !clean(s).is_empty() => format!("Person: {}", clean(s)),
        _ => "NOASSERTION".to_string(),
    }
}

fn package_json(i: usize, p: &Package, refs: &mut BTreeMap<String, String>) -> (String, Value) {
    let id = format!(
        "SPDXRef-Package-{}-{i}-{}",
        p.ecosystem.purl_type(),
        id_part(&p.name)
    );
    let declared = match p.license.as_deref().map(spdx_license) {
        None => "NOASSERTION".to_string(),
        Some(SpdxLicense::Expression(e)) => e,
        Some(SpdxLicense::Ref { id, text }) => {
            refs.insert(id.clone(), text);
            id
        }
    };
    let v = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": declared,
        "copyrightText": "NOASSERTION",
        "supplier": p.supplier.as_deref().map(supplier).unwrap_or_else(|| "NOASSERTION".into()),
        "sourceInfo": format!("acquired package info from /{}", p.source),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": p.purl,
        }],
    });
    (id, v)
}

/// The SPDX 2.3 document (a JSON value; serialize it with `serde_json`).
pub fn document(inv: &Inventory, subject: &SbomSubject) -> Value {
    let mut refs = BTreeMap::new();
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let root_id = "SPDXRef-Image".to_string();
    let mut root = json!({
        "SPDXID": root_id,
        "name": subject.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    });
    if let Some(d) = &subject.digest {
        root["versionInfo"] = json!(d.to_string());
        root["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": d.hex()}]);
    }
    packages.push(root);
    relationships.push(json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root_id,
    }));
    for (i, p) in inv.packages.iter().enumerate() {
        let (id, v) = package_json(i, p, &mut refs);
        packages.push(v);
        relationships.push(json!({
            "spdxElementId": root_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    // A namespace unique to this content (and stable for the same image: reproducible builds).
    let content = serde_json::to_vec(&(&packages, &relationships)).unwrap_or_default();
    let namespace = format!(
        "https://rbuild.invalid/spdx/{}-{}",
        id_part(&subject.name),
        rbuild_oci::sha256_hex(&content)
    );
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("sbom-{}", subject.name),
        "documentNamespace": namespace,
        "creationInfo": {
            "created": subject.created,
            "creators": [format!("Tool: rbuild-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !refs.is_empty() {
        doc["hasExtractedLicensingInfos"] = refs
            .into_iter()
            .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text}))
            .collect();
    }
    if let Some(d) = &inv.distro {
        doc["comment"] = json!(format!("distribution: {} {}", d.id, d.version_id));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppliers() {
        assert_eq!(
            supplier("Alessandro Ghedini <ghedo@debian.org>"),
            "Person: Alessandro Ghedini (ghedo@debian.org)"
        );
        assert_eq!(supplier("team"), "Person: team");
        assert_eq!(supplier("<>"), "NOASSERTION");
    }
}
