//! The package inventory of an image's filesystem, read from the databases the package managers
//! themselves keep: no scanner image, no network.
//!
//! Two ways in, one set of readers: [`scan_dir`] walks a root directory; [`scan_layers`] reads an
//! image's layer tars bottom to top (whiteouts and opaque directories honoured, a later layer's
//! file replacing an earlier one) without unpacking anything. Each candidate file is handed to the
//! reader its path calls for ([`classify`]); what each reader found is kept per path, so a file
//! that a later layer replaces or deletes takes its packages with it.
//!
//! | source | path | ecosystem |
//! |---|---|---|
//! | dpkg | `var/lib/dpkg/status`, `var/lib/dpkg/status.d/*` (distroless) | `deb` |
//! | apk | `lib/apk/db/installed` | `apk` |
//! | Python | `*.dist-info/METADATA`, `*.egg-info/PKG-INFO`, `*.egg-info` files | `pypi` |
//! | npm | `node_modules/[@scope/]name/package.json`, `package-lock.json` | `npm` |
//! | Go | the `.go.buildinfo` section of ELF executables | `golang` |
//! | Rust | the `.dep-v0` section written by `cargo auditable` | `cargo` |
//!
//! Licences: apk, Python, npm and `cargo auditable`-less crates record theirs; Debian packages'
//! come from their machine-readable `usr/share/doc/<pkg>/copyright` when it is one (DEP-5).
//! A database that does not parse is skipped (as scanners do), never an error.

mod binary;
mod dpkg;
mod license;
mod npm;
mod purl;
mod python;
mod walk;

pub use license::{spdx_license, SpdxLicense};
pub use walk::{scan_dir, scan_layers};

use std::collections::BTreeMap;

/// Which package manager recorded a package (the PURL type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    Deb,
    Apk,
    Pypi,
    Npm,
    Golang,
    Cargo,
}

impl Ecosystem {
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Pypi => "pypi",
            Ecosystem::Npm => "npm",
            Ecosystem::Golang => "golang",
            Ecosystem::Cargo => "cargo",
        }
    }
}

/// One package found in the image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The package URL (purl-spec), already encoded.
    pub purl: String,
    /// The licence as its database records it (not yet an SPDX expression; see [`spdx_license`]).
    pub license: Option<String>,
    /// The file the package was read from (relative to the root, no leading `/`).
    pub source: String,
    /// Who supplied it, when recorded (dpkg `Maintainer`, apk has none, npm `author`).
    pub supplier: Option<String>,
}

/// The distribution, from `etc/os-release` (used in deb/apk PURLs as purl-spec asks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distro {
    pub id: String,
    pub version_id: String,
}

/// What [`scan_dir`] / [`scan_layers`] found.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub packages: Vec<Package>,
    pub distro: Option<Distro>,
}

/// The kinds of file a reader exists for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Candidate {
    DpkgStatus,
    ApkInstalled,
    PythonMetadata,
    NpmPackageJson,
    NpmLock,
    DebCopyright,
    OsRelease,
    /// An executable regular file: read if it is ELF.
    Executable,
}

/// Largest database or metadata file read (a larger one is skipped).
pub(crate) const MAX_METADATA_BYTES: u64 = 64 << 20;
/// Largest executable read for build info.
pub(crate) const MAX_EXECUTABLE_BYTES: u64 = 512 << 20;

/// Which reader (if any) a regular file at `path` (relative, `/`-separated) calls for.
pub(crate) fn classify(path: &str, mode: u32, size: u64) -> Option<Candidate> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    let meta = size <= MAX_METADATA_BYTES;
    match path {
        "var/lib/dpkg/status" if meta => return Some(Candidate::DpkgStatus),
        "lib/apk/db/installed" if meta => return Some(Candidate::ApkInstalled),
        "etc/os-release" | "usr/lib/os-release" if meta => return Some(Candidate::OsRelease),
        _ => {}
    }
    if parent == "var/lib/dpkg/status.d" && !name.ends_with(".md5sums") && meta {
        return Some(Candidate::DpkgStatus);
    }
    if name == "copyright" && meta {
        if let Some(pkg) = parent.strip_prefix("usr/share/doc/") {
            if !pkg.contains('/') {
                return Some(Candidate::DebCopyright);
            }
        }
    }
    if meta
        && ((name == "METADATA" && parent.ends_with(".dist-info"))
            || (name == "PKG-INFO" && parent.ends_with(".egg-info"))
            || (name.ends_with(".egg-info") && is_python_dir(parent)))
    {
        return Some(Candidate::PythonMetadata);
    }
    if name == "package.json" && meta && npm::is_installed_package_dir(parent) {
        return Some(Candidate::NpmPackageJson);
    }
    if name == "package-lock.json" && meta && !parent.split('/').any(|c| c == "node_modules") {
        return Some(Candidate::NpmLock);
    }
    if mode & 0o111 != 0 && (64..=MAX_EXECUTABLE_BYTES).contains(&size) {
        return Some(Candidate::Executable);
    }
    None
}

fn is_python_dir(parent: &str) -> bool {
    parent.ends_with("site-packages") || parent.ends_with("dist-packages")
}

/// What one file contributed.
#[derive(Clone, Debug)]
pub(crate) enum Found {
    Packages(Vec<Package>),
    /// Debian package name → licence read from its copyright file.
    DebLicense(String, String),
    Distro(Distro),
}

/// Run the reader for `kind` over a file's bytes. `None`: nothing of interest (not ELF, no build
/// info, an unparseable database).
pub(crate) fn read_candidate(kind: Candidate, path: &str, data: &[u8]) -> Option<Found> {
    let pkgs = match kind {
        Candidate::DpkgStatus => dpkg::parse_status(path, data),
        Candidate::ApkInstalled => dpkg::parse_apk(path, data),
        Candidate::PythonMetadata => python::parse_metadata(path, data).into_iter().collect(),
        Candidate::NpmPackageJson => npm::parse_package_json(path, data).into_iter().collect(),
        Candidate::NpmLock => npm::parse_lock(path, data),
        Candidate::Executable => binary::parse_executable(path, data),
        Candidate::DebCopyright => {
            let pkg = path
                .strip_prefix("usr/share/doc/")?
                .strip_suffix("/copyright")?;
            return dpkg::copyright_license(data).map(|l| Found::DebLicense(pkg.to_string(), l));
        }
        Candidate::OsRelease => return dpkg::parse_os_release(data).map(Found::Distro),
    };
    (!pkgs.is_empty()).then_some(Found::Packages(pkgs))
}

/// Turn what every surviving file contributed into the inventory: the distro fills deb/apk PURLs,
/// copyright licences fill Debian packages, duplicates (same PURL, e.g. a package.json and the
/// lock file naming it) are listed once, keeping the one that records a licence.
pub(crate) fn assemble(found: BTreeMap<String, Found>) -> Inventory {
    let distro = found
        .get("etc/os-release")
        .or_else(|| found.get("usr/lib/os-release"))
        .and_then(|f| match f {
            Found::Distro(d) => Some(d.clone()),
            _ => None,
        });
    let mut deb_licenses = BTreeMap::new();
    let mut all = Vec::new();
    for f in found.into_values() {
        match f {
            Found::Packages(p) => all.extend(p),
            Found::DebLicense(pkg, l) => {
                deb_licenses.insert(pkg, l);
            }
            Found::Distro(_) => {}
        }
    }
    let mut by_purl: BTreeMap<String, Package> = BTreeMap::new();
    for mut p in all {
        if matches!(p.ecosystem, Ecosystem::Deb | Ecosystem::Apk) {
            p.purl = purl::os_package(p.ecosystem, &p.purl, distro.as_ref());
        }
        if p.ecosystem == Ecosystem::Deb && p.license.is_none() {
            p.license = deb_licenses.get(&p.name).cloned();
        }
        match by_purl.get(&p.purl) {
            Some(have) if have.license.is_some() || p.license.is_none() => {}
            _ => {
                by_purl.insert(p.purl.clone(), p);
            }
        }
    }
    let mut packages: Vec<Package> = by_purl.into_values().collect();
    packages.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.purl).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.purl,
        ))
    });
    Inventory { packages, distro }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_paths() {
        assert_eq!(
            classify("var/lib/dpkg/status", 0o644, 10),
            Some(Candidate::DpkgStatus)
        );
        assert_eq!(
            classify("var/lib/dpkg/status.d/base", 0o644, 10),
            Some(Candidate::DpkgStatus)
        );
        assert_eq!(
            classify("var/lib/dpkg/status.d/base.md5sums", 0o644, 10),
            None
        );
        assert_eq!(
            classify(
                "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
                0o644,
                10
            ),
            Some(Candidate::PythonMetadata)
        );
        assert_eq!(
            classify("app/node_modules/@types/node/package.json", 0o644, 10),
            Some(Candidate::NpmPackageJson)
        );
        assert_eq!(
            classify("app/node_modules/left-pad/lib/package.json", 0o644, 10),
            None
        );
        assert_eq!(
            classify("app/package-lock.json", 0o644, 10),
            Some(Candidate::NpmLock)
        );
        assert_eq!(
            classify("usr/bin/runc", 0o755, 1 << 20),
            Some(Candidate::Executable)
        );
        assert_eq!(classify("usr/bin/data", 0o644, 1 << 20), None);
        assert_eq!(
            classify("usr/share/doc/curl/copyright", 0o644, 100),
            Some(Candidate::DebCopyright)
        );
    }
}
