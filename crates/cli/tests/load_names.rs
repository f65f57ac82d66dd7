//! Issue 14 item 8: image names are normalised as docker does. An archive written by skopeo names
//! its image `docker.io/library/base:latest`; after `rbuild load`, every familiar spelling finds
//! it (`FROM base:latest`, `rbuild inspect base`, `library/base`, `index.docker.io/library/base`),
//! and `rbuild images` prints the familiar form.

mod common;

use common::*;
use std::process::Command;

#[test]
fn skopeo_archive_names_are_found_by_every_familiar_form() {
    if !require_root(&["skopeo", "python3"]) {
        return;
    }
    let env = Env::empty();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(busybox_layout().join("index.json")).unwrap())
            .unwrap();
    let refname = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_string();
    let tar = env.path("base-docker.tar");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:{refname}", busybox_layout().display()),
        &format!(
            "docker-archive:{}:docker.io/library/base:latest",
            tar.display()
        ),
    ]));
    // skopeo writes the fully qualified name into the archive.
    let listing = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg("manifest.json"),
    );
    assert!(
        listing.contains("docker.io/library/base:latest"),
        "{listing}"
    );

    let out = env.rbuild(&["load", tar.to_str().unwrap()]);
    assert!(out.status.success(), "load: {}", stderr(&out));
    let images = stdout(&env.rbuild(&["images"]));
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("base ") && l.contains("latest")),
        "images prints the familiar name:\n{images}"
    );
    assert!(!images.contains("docker.io/"), "{images}");
    for name in [
        "base",
        "base:latest",
        "library/base",
        "docker.io/base",
        "docker.io/library/base:latest",
        "index.docker.io/library/base:latest",
    ] {
        let out = env.rbuild(&["inspect", name]);
        assert!(out.status.success(), "inspect {name}: {}", stderr(&out));
    }
    for from in ["base:latest", "docker.io/library/base"] {
        let ctx = env.context(
            &format!("ctx-{}", from.replace(['/', ':'], "-")),
            &[("Dockerfile", &format!("FROM {from}\nRUN true\n"))],
        );
        env.build_ok(&[ctx.to_str().unwrap()]);
    }
    // Tagging with a qualified name and removing with a short one meet on the same key.
    let out = env.rbuild(&["tag", "base", "docker.io/library/other:v1"]);
    assert!(out.status.success(), "tag: {}", stderr(&out));
    let images = stdout(&env.rbuild(&["images"]));
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("other ") && l.contains("v1")),
        "{images}"
    );
    let out = env.rbuild(&["rmi", "other:v1"]);
    assert!(out.status.success(), "rmi: {}", stderr(&out));
    assert!(!stdout(&env.rbuild(&["images"])).contains("other"));
}
