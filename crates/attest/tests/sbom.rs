//! SBOMs of real filesystems, checked by the SPDX project's own validator (`pyspdxtools`, PyPI
//! `spdx-tools`; scripts/test.sh installs it), and attestation documents checked against an
//! in-toto Statement v1 JSON Schema (`jsonschema`, PyPI).

use rbuild_attest::attach::{self, Statement};
use rbuild_attest::provenance::{self, BuildFacts, Material, ProvenanceOpts};
use rbuild_attest::sbom::{self, Ecosystem, Inventory};
use rbuild_attest::spdx::{self, SbomSubject};
use rbuild_oci::{Descriptor, Digest, ImageConfig, Platform};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Validate with pyspdxtools; `false` (after a SKIP line) when it is not installed.
fn spdx_valid(doc: &serde_json::Value, dir: &Path) -> bool {
    if !have("pyspdxtools") {
        println!("SKIP: pyspdxtools not installed (pip install spdx-tools)");
        return false;
    }
    let p = dir.join("sbom.spdx.json");
    std::fs::write(&p, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyspdxtools rejected the SBOM:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        serde_json::to_string_pretty(doc).unwrap()
    );
    true
}

fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/in-toto-statement-v1.schema.json")
}

/// Check a statement against the in-toto schema; `Err(msg)` when it does not conform, `Ok(false)`
/// after a SKIP line when python's jsonschema is missing.
fn statement_check(bytes: &[u8]) -> Result<bool, String> {
    let probe = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        println!("SKIP: python3 jsonschema not installed (pip install jsonschema)");
        return Ok(false);
    }
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1]))\n\
        d=json.load(sys.stdin)\n\
        jsonschema.validate(d, s, format_checker=jsonschema.FormatChecker())\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(schema_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(true)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The host's dpkg status paragraph for `pkg` (this machine is Debian).
fn host_dpkg_paragraph(pkg: &str) -> Option<String> {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").ok()?;
    status
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {pkg}")))
        .map(|p| format!("{p}\n"))
}

fn subject() -> SbomSubject {
    SbomSubject {
        name: "app:1".into(),
        digest: Some(Digest::sha256_of(b"manifest")),
        created: rbuild_attest::rfc3339(1_700_000_000),
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[test]
fn debian_rootfs_lists_curl_with_its_debian_version() {
    let Some(curl) = host_dpkg_paragraph("curl") else {
        println!("SKIP: curl is not installed on this host (its dpkg entry is the fixture)");
        return;
    };
    let version = curl
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_string();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    // A busybox-like root with the host's real dpkg entries for curl and libc6, and curl's
    // machine-readable copyright file.
    let mut status = curl.clone();
    status.push('\n');
    status.push_str(&host_dpkg_paragraph("libc6").unwrap_or_default());
    write(&root, "var/lib/dpkg/status", status.as_bytes());
    if let Ok(c) = std::fs::read("/usr/share/doc/curl/copyright") {
        write(&root, "usr/share/doc/curl/copyright", &c);
    }
    write(
        &root,
        "etc/os-release",
        b"ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
    );
    let inv = sbom::scan_dir(&root).unwrap();
    let c = inv
        .packages
        .iter()
        .find(|p| p.name == "curl")
        .expect("curl listed");
    assert_eq!(c.version, version);
    assert_eq!(c.ecosystem, Ecosystem::Deb);
    assert!(
        c.purl.starts_with("pkg:deb/debian/curl@") && c.purl.contains("distro=debian-12"),
        "{}",
        c.purl
    );
    assert_eq!(c.source, "var/lib/dpkg/status");
    let doc = spdx::document(&inv, &subject());
    let pkgs = doc["packages"].as_array().unwrap();
    let curl_pkg = pkgs.iter().find(|p| p["name"] == "curl").unwrap();
    assert_eq!(curl_pkg["versionInfo"], version.as_str());
    assert_eq!(
        curl_pkg["externalRefs"][0]["referenceLocator"],
        c.purl.as_str()
    );
    spdx_valid(&doc, t.path());
}

#[test]
fn empty_image_gives_an_empty_valid_sbom() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    write(&root, "bin/sh", b"#!not elf\n");
    write(&root, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    let inv = sbom::scan_dir(&root).unwrap();
    assert!(inv.packages.is_empty(), "{:?}", inv.packages);
    let doc = spdx::document(&inv, &subject());
    // Only the image itself, described by the document.
    assert_eq!(doc["packages"].as_array().unwrap().len(), 1);
    assert_eq!(doc["relationships"][0]["relationshipType"], "DESCRIBES");
    spdx_valid(&doc, t.path());
}

/// An ELF executable: a copy of the host's `true` with `section` added by objcopy.
fn elf_with_section(dir: &Path, name: &str, section: &str, content: &[u8]) -> Option<PathBuf> {
    if !have("objcopy") {
        return None;
    }
    let src = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let data = dir.join(format!("{name}.section"));
    std::fs::write(&data, content).unwrap();
    let out = dir.join(name);
    let ok = Command::new("objcopy")
        .arg("--add-section")
        .arg(format!("{section}={}", data.display()))
        .arg(src)
        .arg(&out)
        .status()
        .ok()?
        .success();
    ok.then_some(out)
}

#[test]
fn language_ecosystems_and_binaries() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    write(
        &root,
        "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
        b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n\nSix is a compatibility library.\n",
    );
    write(
        &root,
        "usr/local/lib/python3.11/site-packages/requests-2.31.0.egg-info/PKG-INFO",
        b"Metadata-Version: 1.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n",
    );
    write(
        &root,
        "app/node_modules/@scope/pad/package.json",
        br#"{"name":"@scope/pad","version":"1.3.0","license":"WTFPL"}"#,
    );
    write(
        &root,
        "app/package-lock.json",
        br#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/@scope/pad":{"version":"1.3.0"},"node_modules/ms":{"version":"2.1.3","license":"MIT"}}}"#,
    );
    write(
        &root,
        "lib/apk/db/installed",
        b"P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:zlib\nV:1.3-r0\nA:x86_64\nL:Zlib AND custom thing\n",
    );
    // Go: a real Go binary from the host (runc, docker-registry … are Go), copied into the root.
    let go_bin = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/bin/skopeo"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if let Some(b) = go_bin {
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::copy(b, root.join("usr/bin/gotool")).unwrap();
    } else {
        println!("SKIP (Go part): no Go binary on this host");
    }
    // Rust: cargo auditable's section, zlib-compressed JSON, added to a real ELF by objcopy.
    let dep = br#"{"packages":[{"name":"tool","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"serde","version":"1.0.200","source":"crates.io"},{"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}]}"#;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(dep).unwrap();
    let rust_bin = elf_with_section(t.path(), "rusttool", ".dep-v0", &z.finish().unwrap());
    if let Some(b) = &rust_bin {
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::copy(b, root.join("usr/bin/rusttool")).unwrap();
        let mut perm = std::fs::metadata(root.join("usr/bin/rusttool"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(root.join("usr/bin/rusttool"), perm).unwrap();
    } else {
        println!("SKIP (Rust part): objcopy not available");
    }
    let inv = sbom::scan_dir(&root).unwrap();
    let purls: Vec<&str> = inv.packages.iter().map(|p| p.purl.as_str()).collect();
    for want in [
        "pkg:pypi/six@1.16.0",
        "pkg:pypi/requests@2.31.0",
        "pkg:npm/%40scope/pad@1.3.0",
        "pkg:npm/ms@2.1.3",
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
    ] {
        assert!(purls.contains(&want), "{want} missing from {purls:#?}");
    }
    // The package.json and the lock file name the same package once, keeping the licence.
    let pad: Vec<_> = inv
        .packages
        .iter()
        .filter(|p| p.name == "@scope/pad")
        .collect();
    assert_eq!(pad.len(), 1);
    assert_eq!(pad[0].license.as_deref(), Some("WTFPL"));
    if go_bin.is_some() {
        assert!(
            inv.packages
                .iter()
                .any(|p| p.ecosystem == Ecosystem::Golang && p.name == "stdlib"),
            "{purls:#?}"
        );
        assert!(
            inv.packages
                .iter()
                .any(|p| p.ecosystem == Ecosystem::Golang && p.name.starts_with("github.com/")),
            "{purls:#?}"
        );
    }
    if rust_bin.is_some() {
        assert!(purls.contains(&"pkg:cargo/serde@1.0.200"), "{purls:#?}");
        assert!(purls.contains(&"pkg:cargo/tool@0.1.0"), "{purls:#?}");
        assert!(
            !purls.iter().any(|p| p.starts_with("pkg:cargo/cc@")),
            "build deps are not in the binary"
        );
    }
    let doc = spdx::document(&inv, &subject());
    // An unknown licence becomes a declared LicenseRef.
    assert!(doc["hasExtractedLicensingInfos"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["extractedText"] == "Zlib AND custom thing"));
    spdx_valid(&doc, t.path());
}

/// A tar layer from (path, mode, data) entries.
fn layer(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, mode, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn store_image(store: &rbuild_store::Store, layers: &[Vec<u8>]) -> Digest {
    let mut descs = Vec::new();
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    for l in layers {
        let d = store.put_blob(l).unwrap();
        config.rootfs.diff_ids.push(d.clone());
        descs.push(Descriptor::new(
            rbuild_oci::MEDIA_TYPE_OCI_LAYER,
            d,
            l.len() as u64,
        ));
    }
    rbuild_image::write_image(store, &config, &descs).unwrap().0
}

fn names(inv: &Inventory) -> Vec<String> {
    inv.packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect()
}

#[test]
fn layers_stack_like_an_overlay() {
    let t = tempfile::tempdir().unwrap();
    let store = rbuild_store::Store::open(&t.path().join("store")).unwrap();
    let status1 = b"Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: install ok installed\nVersion: 1\n";
    let status2 = b"Package: a\nStatus: install ok installed\nVersion: 2\n";
    let py = b"Name: six\nVersion: 1.16.0\n";
    let l1 = layer(&[
        ("var/lib/dpkg/status", 0o644, status1),
        (
            "usr/lib/python3/dist-packages/six.dist-info/METADATA",
            0o644,
            py,
        ),
        (
            "srv/node_modules/x/package.json",
            0o644,
            br#"{"name":"x","version":"1.0.0"}"#,
        ),
    ]);
    // Layer 2 replaces dpkg's status, deletes six with a whiteout, and hides srv/ with an opaque
    // marker while adding a new package there.
    let l2 = layer(&[
        ("var/lib/dpkg/status", 0o644, status2),
        (
            "usr/lib/python3/dist-packages/.wh.six.dist-info",
            0o644,
            b"",
        ),
        (
            "srv/node_modules/y/package.json",
            0o644,
            br#"{"name":"y","version":"2.0.0"}"#,
        ),
        ("srv/.wh..wh..opq", 0o644, b""),
    ]);
    let one = store_image(&store, std::slice::from_ref(&l1));
    assert_eq!(
        names(&sbom::scan_layers(&store, &one).unwrap()),
        ["a=1", "b=1", "six=1.16.0", "x=1.0.0"]
    );
    let two = store_image(&store, &[l1, l2]);
    assert_eq!(
        names(&sbom::scan_layers(&store, &two).unwrap()),
        ["a=2", "y=2.0.0"]
    );
}

fn facts() -> BuildFacts {
    BuildFacts {
        dockerfile_path: "Dockerfile".into(),
        dockerfile: b"FROM busybox\nRUN echo hi\n".to_vec(),
        build_args: [("V".to_string(), "2".to_string())].into(),
        labels: Default::default(),
        target: None,
        secrets: vec!["tok".into()],
        ssh: vec![],
        materials: vec![Material::image(
            "busybox:latest",
            &Digest::sha256_of(b"base"),
            "linux/amd64",
        )],
        build_definition: Some(serde_json::json!([{"op": "run", "args": ["echo", "hi"]}])),
        builder_platform: "linux/amd64".into(),
        invocation_id: "inv-1".into(),
        started_on: rbuild_attest::rfc3339(1_700_000_000),
        finished_on: rbuild_attest::rfc3339(1_700_000_005),
        hermetic: false,
    }
}

#[test]
fn provenance_and_attestation_manifest() {
    let t = tempfile::tempdir().unwrap();
    let store = rbuild_store::Store::open(&t.path().join("store")).unwrap();
    let image = store_image(&store, &[layer(&[("etc/hostname", 0o644, b"x\n")])]);
    let size = store.blob_size(&image).unwrap().unwrap();
    let mut desc = Descriptor::new(rbuild_oci::MEDIA_TYPE_OCI_MANIFEST, image.clone(), size);
    desc.platform = Some(Platform::host());
    let name = attach::subject_name(Some("app:1"), &Platform::host());
    assert!(
        name.starts_with("pkg:docker/app@1?platform=linux%2F"),
        "{name}"
    );

    let min = ProvenanceOpts::parse("mode=min").unwrap().unwrap();
    let max = ProvenanceOpts::parse("mode=max,builder-id=https://ci.example/run/7")
        .unwrap()
        .unwrap();
    let pmin = provenance::predicate(&min, &facts());
    let pmax = provenance::predicate(&max, &facts());
    assert!(pmin["buildDefinition"]["internalParameters"]
        .get("buildConfig")
        .is_none());
    assert!(pmin["buildDefinition"]["externalParameters"]["request"]
        .get("secrets")
        .is_none());
    assert_eq!(
        pmin["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:V"],
        "2"
    );
    assert_eq!(
        pmin["buildDefinition"]["externalParameters"]["configSource"]["digest"]["sha256"],
        Digest::sha256_of(b"FROM busybox\nRUN echo hi\n").hex()
    );
    assert_eq!(
        pmax["buildDefinition"]["internalParameters"]["buildConfig"]["definition"][0]["op"],
        "run"
    );
    assert_eq!(
        pmax["runDetails"]["builder"]["id"],
        "https://ci.example/run/7"
    );
    let inv = sbom::scan_layers(&store, &image).unwrap();
    let statements: Vec<Statement> = vec![
        attach::statement(&name, &image, provenance::PREDICATE_SLSA_V1, pmax),
        attach::statement(
            &name,
            &image,
            spdx::PREDICATE_SPDX,
            spdx::document(&inv, &subject()),
        ),
    ];
    for s in &statements {
        statement_check(&s.bytes).unwrap_or_else(|e| panic!("schema: {e}"));
    }
    // The schema check itself can fail: a statement without subject digest does not pass.
    let mut broken: serde_json::Value = serde_json::from_slice(&statements[0].bytes).unwrap();
    broken["subject"][0]["digest"] = serde_json::json!({});
    if let Ok(true) = statement_check(&serde_json::to_vec(&broken).unwrap()) {
        panic!("a statement without a subject digest passed the schema");
    }

    let index = attach::write_index(&store, &[(desc.clone(), statements)]).unwrap();
    let idx: rbuild_oci::Index =
        serde_json::from_slice(&store.read_blob(&index, 1 << 20).unwrap()).unwrap();
    assert_eq!(idx.manifests.len(), 2);
    assert_eq!(idx.manifests[0], desc);
    let att = &idx.manifests[1];
    assert_eq!(att.platform.as_ref().unwrap().os, "unknown");
    assert_eq!(att.platform.as_ref().unwrap().architecture, "unknown");
    assert_eq!(
        att.annotations["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att.annotations["vnd.docker.reference.digest"],
        image.to_string()
    );
    let m = rbuild_image::read_manifest(&store, &att.digest).unwrap();
    assert_eq!(m.layers.len(), 2);
    assert!(m
        .layers
        .iter()
        .all(|l| l.media_type == "application/vnd.in-toto+json"));
    assert_eq!(
        m.layers[0].annotations["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );
    // The store still resolves the index to the image for this platform.
    assert_eq!(
        rbuild_image::resolve_manifest(&store, &index).unwrap().0,
        image
    );
    let read = attach::read_attestations(&store, &index).unwrap();
    assert_eq!(read.len(), 2);
    assert!(read.iter().all(|(s, _, _)| *s == image));
}
