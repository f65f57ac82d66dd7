//! Issue 2 acceptance: `rbuild -t app .` builds a Dockerfile into a runnable OCI image.
//! These build real images as root and check them with skopeo, umoci and runc.

mod common;
use common::*;
use std::process::Command;

#[test]
fn example_builds_exports_and_runs_under_runc() {
    if !require_root(&["skopeo", "umoci", "runc"]) {
        return;
    }
    let env = Env::with_busybox();
    let example = repo_root().join("examples/hello");
    let (id, _) = env.build_ok(&["-t", "hello:latest", example.to_str().unwrap()]);
    assert!(
        id.trim().starts_with("sha256:"),
        "stdout is the image id: {id:?}"
    );

    // `rbuild images` lists it.
    let images = stdout(&env.rbuild(&["images"]));
    assert!(
        images.contains("hello") && images.contains("latest"),
        "{images}"
    );
    assert!(
        images.contains(&id.trim()["sha256:".len()..][..12]),
        "{images}"
    );

    // Export as an OCI archive (a cached rebuild with an output).
    let tar = env.path("hello.tar");
    env.build_ok(&[
        "-t",
        "hello:latest",
        "--output",
        &format!("type=oci,dest={}", tar.display()),
        example.to_str().unwrap(),
    ]);
    let inspect = run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg("--config")
            .arg(format!("oci-archive:{}", tar.display())),
    );
    let cfg: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/app/hello.sh"]));
    assert_eq!(cfg["config"]["WorkingDir"], "/app");
    let envs: Vec<String> = serde_json::from_value(cfg["config"]["Env"].clone()).unwrap();
    assert!(
        envs.contains(&"GREETING=Hello from rbuild".to_string()),
        "{envs:?}"
    );
    assert!(envs.iter().any(|e| e.starts_with("PATH=")), "{envs:?}");

    // umoci unpacks it; runc runs it and the CMD prints the greeting.
    let bundle = umoci_bundle(&env, &tar, "hello:latest");
    let cfg_path = bundle.join("config.json");
    let mut rc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    rc["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&cfg_path, serde_json::to_vec(&rc).unwrap()).unwrap();
    let name = format!("rbuild-it-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&name)
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &name]).output();
    assert!(out.status.success(), "runc failed: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "Hello from rbuild! (built by rbuild)",
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn config_fields_are_as_written() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nWORKDIR /srv/app\nENV A=1 B=\"two words\"\nUSER 1000:1000\nEXPOSE 8080/tcp\nLABEL org.example=yes\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo hi\"]\n",
        )],
    );
    env.build_ok(&["-t", "cfg:1", ctx.to_str().unwrap()]);
    let out = stdout(&env.rbuild(&["inspect", "cfg:1"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["Config"]["config"];
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(c["Labels"]["org.example"], "yes");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{c}");
    let envs: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    assert!(envs.contains(&"A=1".to_string()));
    assert!(envs.contains(&"B=two words".to_string()));
    // History: one entry per instruction after the base's, metadata steps marked empty.
    let hist = v["Config"]["history"].as_array().unwrap();
    assert!(hist.iter().any(
        |h| h["created_by"].as_str().unwrap_or("").starts_with("ENV") && h["empty_layer"] == true
    ));
}

#[test]
fn run_is_isolated() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let before = mounts();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo \"pid1=$(cat /proc/1/comm) procs=$(ls -d /proc/[0-9]* | wc -l) host=$(hostname)\" && cat /proc/self/mountinfo | grep -c . && (test -e /work && echo HOST_VISIBLE || echo no-host-dirs)\n",
        )],
    );
    let (_, err) = env.build_ok(&["--no-cache", ctx.to_str().unwrap()]);
    let line = err
        .lines()
        .find(|l| l.contains("pid1=") && !l.contains("RUN"))
        .unwrap_or_else(|| panic!("no output line in:\n{err}"));
    // PID 1 is the sandbox's init, not the host's; only a handful of processes are visible.
    assert!(
        !line.contains("pid1=systemd") && !line.contains("pid1=init "),
        "{line}"
    );
    let procs: usize = line
        .split("procs=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(procs <= 6, "the step sees {procs} processes: {line}");
    assert!(!line.contains(&format!("host={}", host.trim())), "{line}");
    let output: Vec<&str> = err.lines().filter(|l| !l.contains("RUN ")).collect();
    assert!(output.iter().any(|l| l.ends_with("no-host-dirs")), "{err}");
    assert!(!output.iter().any(|l| l.contains("HOST_VISIBLE")), "{err}");
    // Nothing stays mounted on the host.
    assert_eq!(before, mounts());
}

#[test]
fn whiteouts_delete_files_and_replace_dirs() {
    if !require_root(&["umoci"]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN mkdir -p /data/old && echo x > /data/old/a && echo y > /data/keep\nRUN rm /etc/hostname && rm -rf /data && mkdir /data && echo new > /data/new\n",
        )],
    );
    let tar = env.path("img.tar");
    env.build_ok(&[
        "-t",
        "wh:1",
        "-o",
        &format!("type=oci,dest={}", tar.display()),
        ctx.to_str().unwrap(),
    ]);
    let bundle = umoci_bundle(&env, &tar, "wh:1");
    let rootfs = bundle.join("rootfs");
    assert!(
        !rootfs.join("etc/hostname").exists(),
        "deleted file is gone"
    );
    assert!(rootfs.join("etc/passwd").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("data/new")).unwrap(),
        "new\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(rootfs.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["new"],
        "replaced dir holds only the new contents"
    );
}

#[test]
fn two_images_share_the_base_layer() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let base_blobs = env.blob_count();
    let a = env.context("a", &[("Dockerfile", "FROM busybox\nRUN echo a > /a\n")]);
    let b = env.context("b", &[("Dockerfile", "FROM busybox\nRUN echo b > /b\n")]);
    env.build_ok(&["-t", "a", a.to_str().unwrap()]);
    let after_a = env.blob_count();
    env.build_ok(&["-t", "b", b.to_str().unwrap()]);
    let after_b = env.blob_count();
    // Each build adds its own layer, config and manifest (plus small bookkeeping blobs), never
    // another copy of the base layer.
    assert_eq!(
        after_b - after_a,
        after_a - base_blobs,
        "blobs: base {base_blobs}, a {after_a}, b {after_b}"
    );
    let base_layer = std::fs::read_dir(env.root.join("blobs/sha256"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().metadata().unwrap().len() > 500_000)
        .count();
    assert_eq!(base_layer, 1, "the busybox layer is stored once");
}

#[test]
fn syntax_error_points_at_the_line_and_writes_nothing() {
    let env = Env::empty();
    let ctx = env.context("ctx", &[("Dockerfile", "FROM busybox\nCOPPY a b\n")]);
    let out = env.rbuild(&["build", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(err.contains("COPPY a b"), "{err}");
    assert!(err.contains('^'), "{err}");
    assert!(!env.root.join("blobs").exists(), "the store was touched");
}

#[test]
fn missing_copy_source_names_the_path() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nCOPY nothere.txt /x\n")],
    );
    let out = env.rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("nothere.txt"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}

#[test]
fn failing_run_reports_instruction_line_code_and_output() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo fine\nRUN echo about to fail && echo oops >&2 && exit 3\n",
        )],
    );
    let out = env.rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("RUN echo about to fail"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("> oops"), "{err}");
    assert!(stdout(&out).is_empty(), "no image id on failure");
}

#[test]
fn non_root_with_an_unwritable_store_says_so() {
    if !require_root(&["setpriv"]) {
        return;
    }
    let env = Env::empty();
    let ctx = env.context("ctx", &[("Dockerfile", "FROM busybox\nRUN true\n")]);
    // World-readable so the unprivileged user can read the context.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(env.tmp.path())
        .status();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(rbuild_bin())
        .args(["build", "--progress=plain"])
        .arg(&ctx)
        .env("RBUILD_ROOT", env.path("nobody-store"))
        .output()
        .unwrap();
    // Rootless (issue 16): the build runs in a user namespace of its own; here the store it was
    // given is not writable by that user, and the error says so and where.
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("nobody-store"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        err.contains("store must be a directory you can write"),
        "{err}"
    );
}
