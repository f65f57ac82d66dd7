//! Issue 7: build outputs (`-o type=oci|docker|local|tar`, `dest=-`, compression), contexts from
//! tars and stdin, save → load round trips, reproducible builds with SOURCE_DATE_EPOCH, JSON and
//! tty progress. Real images, checked with skopeo, umoci and (when dockerd runs) `docker load`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

const DOCKERFILE: &str = "FROM busybox\n\
RUN mkdir -p /data && echo made-by-run > /data/run.txt && ln -s run.txt /data/link\n\
COPY a.txt /data/a.txt\n\
WORKDIR /work\n";

fn small_context(env: &Env) -> std::path::PathBuf {
    env.context(
        "ctx",
        &[
            ("Dockerfile", DOCKERFILE),
            ("a.txt", "hello from the context\n"),
        ],
    )
}

/// (type, mode, size, content or link target) of every path beneath `root`, without following
/// symlinks. Directory mtimes and owners are left out: they are the same by construction here.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let desc = if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                format!(
                    "file {:o} {} {:x}",
                    m.mode() & 0o7777,
                    data.len(),
                    data.iter()
                        .fold(0u64, |h, b| h.wrapping_mul(1_099_511_628_211) ^ *b as u64)
                )
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("dev {:x}", m.rdev())
            } else {
                "other".to_string()
            };
            out.insert(rel, desc);
        }
    }
    out
}

fn manifest_of_oci_tar(tar: &Path) -> serde_json::Value {
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", tar.display())),
    );
    serde_json::from_str(&raw).unwrap()
}

#[test]
fn every_output_type_in_one_build() {
    if !require_root(&["skopeo", "umoci", "tar"]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = small_context(&env);
    let oci_tar = env.path("img-oci.tar");
    let oci_dir = env.path("img-oci-dir");
    let oci_zstd = env.path("img-zstd.tar");
    let oci_gz1 = env.path("img-gzip1.tar");
    let docker_tar = env.path("img-docker.tar");
    let local = env.path("rootfs");
    let rootfs_tar = env.path("rootfs.tar");
    let (id, _) = env.build_ok(&[
        "-t",
        "outs:v1",
        "-o",
        "type=image",
        "-o",
        &format!("type=oci,dest={}", oci_tar.display()),
        "-o",
        &format!("type=oci,dest={},tar=false", oci_dir.display()),
        "-o",
        &format!(
            "type=oci,dest={},compression=zstd,compression-level=3",
            oci_zstd.display()
        ),
        "-o",
        &format!(
            "type=oci,dest={},compression=gzip,compression-level=1",
            oci_gz1.display()
        ),
        "-o",
        &format!("type=docker,dest={}", docker_tar.display()),
        "--output",
        &format!("type=local,dest={}", local.display()),
        "--output",
        &format!("type=tar,dest={}", rootfs_tar.display()),
        ctx.to_str().unwrap(),
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:"), "{id}");

    // type=image named it.
    let images = stdout(&env.rbuild(&["images", "--format", "json"]));
    assert!(
        images
            .lines()
            .any(|l| l.contains("\"outs:v1\"") && l.contains(id)),
        "{images}"
    );

    // OCI archive (gzip by default) and OCI layout dir: the same image config.
    let m = manifest_of_oci_tar(&oci_tar);
    assert_eq!(m["config"]["digest"], id);
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{m}"
        );
    }
    let inspect_dir = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}:v1", oci_dir.display())),
    );
    let cfg: serde_json::Value = serde_json::from_str(&inspect_dir).unwrap();
    assert_eq!(cfg["config"]["WorkingDir"], "/work");

    // zstd.
    let mz = manifest_of_oci_tar(&oci_zstd);
    for l in mz["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{mz}"
        );
    }
    assert_eq!(mz["config"]["digest"], id);

    // compression-level is honoured: gzip level 1 gives other (bigger) blobs of the same layers.
    let m1 = manifest_of_oci_tar(&oci_gz1);
    assert_eq!(m1["config"]["digest"], id);
    let (l6, l1) = (
        m["layers"].as_array().unwrap(),
        m1["layers"].as_array().unwrap(),
    );
    assert_eq!(l6.len(), l1.len());
    let size = |l: &serde_json::Value| l["size"].as_u64().unwrap();
    assert!(
        l6.iter().zip(l1).all(|(a, b)| size(a) <= size(b)),
        "level 1 layers are not bigger: {m} vs {m1}"
    );
    assert!(
        l6.iter().zip(l1).any(|(a, b)| a["digest"] != b["digest"]),
        "level 1 gave the same blobs as the default level"
    );

    // docker-archive: skopeo reads it; dockerd loads it when one is running.
    let d = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", docker_tar.display())),
    );
    let dcfg: serde_json::Value = serde_json::from_str(&d).unwrap();
    assert_eq!(dcfg["config"]["WorkingDir"], "/work");
    let docker_up = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if docker_up {
        let out = run_ok(
            Command::new("docker")
                .arg("load")
                .arg("-i")
                .arg(&docker_tar),
        );
        assert!(out.contains("outs:v1"), "docker load said: {out}");
        let docker_id = run_ok(
            Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", "outs:v1"]),
        );
        assert_eq!(docker_id.trim(), id, "docker sees the same image id");
        let _ = Command::new("docker").args(["rmi", "outs:v1"]).output();
    } else {
        eprintln!(
            "NOTE: dockerd is not running (bash bench/start-peers.sh); docker load not tried"
        );
    }

    // type=local is the image's rootfs, as umoci unpacks it.
    let bundle = umoci_bundle(&env, &oci_tar, "outs:v1");
    let want = tree(&bundle.join("rootfs"));
    let got = tree(&local);
    assert_eq!(
        std::fs::read_to_string(local.join("data/run.txt")).unwrap(),
        "made-by-run\n"
    );
    assert_eq!(got, want, "type=local differs from the unpacked image");

    // type=tar is the same rootfs as a tar.
    let untar = env.path("untar");
    std::fs::create_dir_all(&untar).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&rootfs_tar)
            .arg("-C")
            .arg(&untar),
    );
    assert_eq!(
        tree(&untar),
        want,
        "type=tar differs from the unpacked image"
    );
}

#[test]
fn dest_dash_streams_to_stdout_and_keeps_the_id_off_it() {
    if !require_root(&["tar"]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = small_context(&env);
    let out = env.rbuild(&[
        "build",
        "--progress=plain",
        "-o",
        "type=tar,dest=-",
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.len() > 1024, "a tar on stdout");
    assert_eq!(&out.stdout[257..262], b"ustar", "stdout is a tar stream");
    let tarfile = env.path("stdout.tar");
    std::fs::write(&tarfile, &out.stdout).unwrap();
    let list = run_ok(Command::new("tar").arg("-tf").arg(&tarfile));
    assert!(
        list.lines().any(|l| l.trim_end_matches('/') == "data/a.txt"
            || l.trim_end_matches('/') == "./data/a.txt"),
        "{list}"
    );

    // Two outputs cannot both take stdout.
    let out = env.rbuild(&[
        "build",
        "-o",
        "type=tar,dest=-",
        "-o",
        "type=oci,dest=-",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn contexts_from_tar_files_stdin_and_images() {
    if !require_root(&["tar", "gzip"]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = small_context(&env);
    let (dir_id, _) = env.build_ok(&[ctx.to_str().unwrap()]);

    // A plain tar and a gzipped tar give the same image as the directory.
    let tar = env.path("ctx.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&ctx)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    let (tar_id, _) = env.build_ok(&[tar.to_str().unwrap()]);
    assert_eq!(tar_id, dir_id);
    let tgz = env.path("ctx.tgz");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&ctx)
            .arg("-czf")
            .arg(&tgz)
            .arg("."),
    );
    let (tgz_id, _) = env.build_ok(&[tgz.to_str().unwrap()]);
    assert_eq!(tgz_id, dir_id);

    // `-`: a tar on stdin.
    let mut child = env
        .cmd()
        .args(["build", "-q", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&tar).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), dir_id, "-q prints only the id");

    // `-`: a lone Dockerfile on stdin, empty context.
    let mut child = env
        .cmd()
        .args(["build", "-q", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nRUN echo stdin-dockerfile > /f\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // `-f -`: the Dockerfile on stdin, the context a directory; -f inside a tar context.
    let sub = env.context(
        "ctx2",
        &[
            ("build/Other.df", "FROM busybox\nCOPY x /x\n"),
            ("x", "x\n"),
        ],
    );
    let tar2 = env.path("ctx2.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&sub)
            .arg("-cf")
            .arg(&tar2)
            .arg("."),
    );
    env.build_ok(&["-f", "build/Other.df", tar2.to_str().unwrap()]);

    // A named context from an image.
    let named = env.context(
        "ctx3",
        &[(
            "Dockerfile",
            "FROM busybox\nCOPY --from=base /bin/busybox /copied-busybox\n",
        )],
    );
    env.build_ok(&[
        "--build-context",
        "base=docker-image://busybox:latest",
        named.to_str().unwrap(),
    ]);

    // Garbage instead of a tar is a clear error.
    let junk = env.path("junk.bin");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    let out = env.rbuild(&["build", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: build context") && stderr(&out).contains("not a tar"),
        "{}",
        stderr(&out)
    );
    // A tar whose member climbs out (`../escaped.txt`) is unpacked beneath the context, never
    // beside it (the layer applier resolves every path inside its root, as docker does).
    let evil = env.path("evil.tar");
    let df = b"FROM busybox\nCOPY escaped.txt /e\n";
    let mut t = tar_header("../escaped.txt", 3);
    t.extend_from_slice(b"bad");
    t.resize(1024, 0);
    t.extend_from_slice(&tar_header("Dockerfile", df.len() as u64));
    t.extend_from_slice(df);
    t.resize(2048, 0);
    t.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&evil, &t).unwrap();
    let _ = std::fs::remove_file(std::env::temp_dir().join("escaped.txt"));
    let out = env.rbuild(&["build", "--progress=plain", evil.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !std::env::temp_dir().join("escaped.txt").exists(),
        "a context member escaped its directory"
    );
}

/// A minimal ustar header for a regular file.
fn tar_header(name: &str, size: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

#[test]
fn save_then_load_into_a_fresh_store_keeps_the_id() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = small_context(&env);
    let (id, _) = env.build_ok(&["-t", "rt:1", ctx.to_str().unwrap()]);
    for format in ["docker", "oci"] {
        let tar = env.path(&format!("saved-{format}.tar"));
        let out = env.rbuild(&[
            "save",
            "rt:1",
            "-o",
            tar.to_str().unwrap(),
            "--format",
            format,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let fresh = Env::empty();
        let out = fresh.rbuild(&["load", tar.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("Loaded image: rt:1"),
            "{}",
            stdout(&out)
        );
        let out = fresh.rbuild(&["images", "-q"]);
        assert_eq!(stdout(&out).trim(), &id.trim()["sha256:".len()..][..12]);
        let inspect: serde_json::Value =
            serde_json::from_str(&stdout(&fresh.rbuild(&["inspect", "rt:1"]))).unwrap();
        assert_eq!(
            inspect["Id"],
            id.trim(),
            "{format}: same image id after the round trip"
        );
    }
}

/// Build `files` with SOURCE_DATE_EPOCH in a clean store; returns (image id, manifest digest,
/// digest of the manifest in the exported OCI archive, sha256 of the archive).
fn reproducible_build(
    files: &[(&str, &str)],
    via_build_arg: bool,
) -> (String, String, String, String) {
    let env = Env::with_busybox();
    let ctx = env.context("ctx", files);
    let meta = env.path("meta.json");
    let tar = env.path("out.tar");
    let mut args = vec![
        "build".to_string(),
        "--progress=plain".into(),
        "--metadata-file".into(),
        meta.display().to_string(),
        "-o".into(),
        format!("type=oci,dest={}", tar.display()),
    ];
    let mut cmd = env.cmd();
    if via_build_arg {
        args.push("--build-arg".into());
        args.push("SOURCE_DATE_EPOCH=1700000000".into());
    } else {
        cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    }
    args.push(ctx.display().to_string());
    let out = cmd.args(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let exported = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--format", "{{.Digest}}"])
            .arg(format!("oci-archive:{}", tar.display())),
    );
    let sum = run_ok(Command::new("sha256sum").arg(&tar));
    let cfg: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", tar.display())),
    ))
    .unwrap();
    assert_eq!(
        cfg["created"], "2023-11-14T22:13:20Z",
        "config created is clamped"
    );
    for h in cfg["history"].as_array().unwrap() {
        let c = h["created"].as_str().unwrap_or("");
        assert!(
            c <= "2023-11-14T22:13:20Z",
            "history created {c} is clamped"
        );
    }
    (
        m["containerimage.config.digest"]
            .as_str()
            .unwrap()
            .to_string(),
        m["containerimage.digest"].as_str().unwrap().to_string(),
        exported.trim().to_string(),
        sum.split_whitespace().next().unwrap().to_string(),
    )
}

#[test]
fn source_date_epoch_makes_builds_bit_for_bit_reproducible() {
    if !require_root(&["skopeo", "sha256sum"]) {
        return;
    }
    // RUN writes files at build time (mtime = now unless clamped); COPY brings the context's.
    let dockerfile =
        "FROM busybox\nRUN mkdir /d && touch /d/f && echo x > /d/g\nCOPY a.txt /a.txt\nLABEL x=y\n";
    let a = reproducible_build(&[("Dockerfile", dockerfile), ("a.txt", "one\n")], false);
    // A second clean store, later, SOURCE_DATE_EPOCH as a build arg this time: the same bits.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = reproducible_build(&[("Dockerfile", dockerfile), ("a.txt", "one\n")], true);
    assert_eq!(a, b, "two clean builds differ");
    // One byte of the context changed: a different image.
    let c = reproducible_build(&[("Dockerfile", dockerfile), ("a.txt", "onf\n")], false);
    assert_ne!(a.0, c.0, "image id must change");
    assert_ne!(a.1, c.1, "manifest digest must change");
    assert_ne!(a.2, c.2, "exported manifest digest must change");
}
