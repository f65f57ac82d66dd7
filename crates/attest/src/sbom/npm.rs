//! npm packages: each installed `node_modules/[@scope/]name/package.json`, and the packages a
//! `package-lock.json` pins (lockfile v1 `dependencies`, v2/v3 `packages`).

use super::purl::make;
use super::{Ecosystem, Package};
use serde_json::Value;

/// Whether `dir` is an installed package's directory: `…/node_modules/name` or
/// `…/node_modules/@scope/name`.
pub(crate) fn is_installed_package_dir(dir: &str) -> bool {
    let parts: Vec<&str> = dir.split('/').collect();
    match parts.as_slice() {
        [.., nm, name] if *nm == "node_modules" => !name.starts_with('@') && !name.starts_with('.'),
        [.., nm, scope, _] if *nm == "node_modules" => scope.starts_with('@'),
        _ => false,
    }
}

fn purl(name: &str, version: &str) -> String {
    match name.split_once('/') {
        Some((scope, n)) if scope.starts_with('@') => {
            make(Ecosystem::Npm, Some(scope), n, version, &[])
        }
        _ => make(Ecosystem::Npm, None, name, version, &[]),
    }
}

/// `license: "MIT"`, `license: {type: "MIT"}` or the old `licenses: [{type}]`.
fn license(v: &Value) -> Option<String> {
    let one = |l: &Value| match l {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("type").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    if let Some(l) = v.get("license").and_then(one) {
        return Some(l);
    }
    let list: Vec<String> = v
        .get("licenses")?
        .as_array()?
        .iter()
        .filter_map(one)
        .collect();
    match list.len() {
        0 => None,
        1 => list.into_iter().next(),
        _ => Some(format!("({})", list.join(" OR "))),
    }
}

fn author(v: &Value) -> Option<String> {
    match v.get("author")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

pub(crate) fn parse_package_json(path: &str, data: &[u8]) -> Option<Package> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let version = v.get("version")?.as_str()?.to_string();
    Some(Package {
        ecosystem: Ecosystem::Npm,
        purl: purl(&name, &version),
        license: license(&v),
        supplier: author(&v),
        name,
        version,
        source: path.to_string(),
    })
}

pub(crate) fn parse_lock(path: &str, data: &[u8]) -> Vec<Package> {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(pkgs) = v.get("packages").and_then(Value::as_object) {
        for (key, p) in pkgs {
            // "" is the project itself; links point at a workspace directory listed on its own.
            if key.is_empty() || p.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let Some(version) = p.get("version").and_then(Value::as_str) else {
                continue;
            };
            let name = p.get("name").and_then(Value::as_str).unwrap_or_else(|| {
                key.rsplit_once("node_modules/")
                    .map(|(_, n)| n)
                    .unwrap_or(key)
            });
            out.push(lock_package(path, name, version, license(p)));
        }
    } else if let Some(deps) = v.get("dependencies").and_then(Value::as_object) {
        let mut stack: Vec<&serde_json::Map<String, Value>> = vec![deps];
        while let Some(deps) = stack.pop() {
            for (name, d) in deps {
                if let Some(version) = d.get("version").and_then(Value::as_str) {
                    out.push(lock_package(path, name, version, None));
                }
                if let Some(nested) = d.get("dependencies").and_then(Value::as_object) {
                    stack.push(nested);
                }
            }
        }
    }
    out
}

fn lock_package(path: &str, name: &str, version: &str, license: Option<String>) -> Package {
    Package {
        ecosystem: Ecosystem::Npm,
        purl: purl(name, version),
        name: name.to_string(),
        version: version.to_string(),
        license,
        source: path.to_string(),
        supplier: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_v3_and_v1() {
        let v3 = br#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/@scope/a":{"version":"1.0.0","license":"ISC"},"node_modules/x/node_modules/b":{"version":"2.0.0"},"node_modules/w":{"link":true}}}"#;
        let p = parse_lock("app/package-lock.json", v3);
        let purls: Vec<_> = p.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:npm/%40scope/a@1.0.0", "pkg:npm/b@2.0.0"]);
        assert_eq!(p[0].license.as_deref(), Some("ISC"));
        let v1 = br#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"0.1.0"}}}}}"#;
        assert_eq!(parse_lock("l", v1).len(), 2);
    }

    #[test]
    fn package_json_license_forms() {
        let p = parse_package_json(
            "n/package.json",
            br#"{"name":"x","version":"1.0.0","license":{"type":"MIT"}}"#,
        )
        .unwrap();
        assert_eq!(p.license.as_deref(), Some("MIT"));
        assert!(parse_package_json("n/package.json", b"{").is_none());
    }
}
