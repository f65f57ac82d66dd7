//! Platforms (issue 15): a stage of another platform (`FROM --platform=linux/arm64`) built from
//! Debian's arm64 busybox-static, its RUN steps under binfmt_misc emulation (qemu-user-static,
//! F flag), next to a native stage; and the refusals that come before any step runs (a base
//! image without the wanted platform, a platform without an emulator, an unknown platform).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// Debian's arm64 busybox-static (fetched by testdata/base/fetch-busybox.sh when missing).
fn arm64_busybox() -> Result<PathBuf, String> {
    let dir = repo_root().join("target/test-assets/busybox-arm64");
    let bin = dir.join("bin/busybox");
    if bin.exists() {
        return Ok(bin);
    }
    let out = Command::new("bash")
        .arg(repo_root().join("testdata/base/fetch-busybox.sh"))
        .arg("arm64")
        .arg(&dir)
        .output()
        .map_err(|e| format!("running fetch-busybox.sh: {e}"))?;
    if !out.status.success() || !bin.exists() {
        return Err(format!(
            "cannot fetch Debian's busybox-static:arm64: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

/// Whether the kernel has an aarch64 handler with the F flag (asked in a mount namespace of its
/// own, mounting binfmt_misc there when the host has not).
fn arm64_handler_registered() -> bool {
    Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "d=/proc/sys/fs/binfmt_misc; [ -e $d/status ] || mount -t binfmt_misc binfmt_misc $d || exit 1; \
             grep -qx enabled $d/qemu-aarch64 && grep -q '^flags: .*F' $d/qemu-aarch64",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// The arm64 busybox image loaded as `busybox-arm64:latest`, or why not.
fn load_arm64_busybox(env: &Env) -> Result<(), String> {
    let bin = arm64_busybox()?;
    let dir = env.path("busybox-arm64-layout");
    let out = Command::new("python3")
        .arg(repo_root().join("testdata/base/make-busybox-image.py"))
        .arg(&dir)
        .args(["--ref", "busybox-arm64:latest", "--platform"])
        .arg(format!("linux/arm64={}", bin.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.rbuild(&["load", dir.to_str().unwrap()]);
    assert!(out.status.success(), "load: {}", stderr(&out));
    Ok(())
}

/// No step ran: the plain progress shows no step of the build.
fn assert_no_step_ran(err: &str) {
    assert!(
        !err.lines().any(|l| l.starts_with('#')),
        "a step ran before the refusal:\n{err}"
    );
}

#[test]
fn foreign_stage_runs_under_emulation_next_to_a_native_one() {
    if !require_root(&["unshare"]) {
        return;
    }
    if rbuild_oci::host_arch() != "amd64" {
        eprintln!("SKIP: this test expects an amd64 host (arm64 is the foreign platform)");
        return;
    }
    let env = Env::with_busybox();
    if let Err(e) = load_arm64_busybox(&env) {
        eprintln!("SKIP: {e}");
        return;
    }
    if !arm64_handler_registered() {
        eprintln!(
            "SKIP: no qemu-aarch64 binfmt_misc handler with the F flag (scripts/setup-emulation.sh registers it)"
        );
        return;
    }
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM --platform=linux/arm64 busybox-arm64 AS foreign\n\
             ARG TARGETPLATFORM\n\
             ARG BUILDPLATFORM\n\
             RUN uname -m > /arch && echo \"$BUILDPLATFORM $TARGETPLATFORM\" > /plat\n\
             FROM busybox AS native\n\
             RUN uname -m > /arch\n\
             FROM scratch\n\
             COPY --from=foreign /arch /foreign-arch\n\
             COPY --from=foreign /plat /plat\n\
             COPY --from=native /arch /native-arch\n",
        )],
    );
    let dest = env.path("out");
    env.build_ok(&[
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    let read = |p: &str| std::fs::read_to_string(dest.join(p)).unwrap();
    assert_eq!(read("foreign-arch"), "aarch64\n");
    assert_eq!(read("native-arch"), "x86_64\n");
    // BUILDPLATFORM and TARGETPLATFORM are the build's, not the stage's (BuildKit's rule).
    assert_eq!(read("plat"), "linux/amd64 linux/amd64\n");

    // The foreign stage as the image: its config says arm64; the cache key includes the platform
    // (a second build is fully cached, and the same RUN on the native base is another step).
    let ctx2 = env.context(
        "ctx2",
        &[(
            "Dockerfile",
            "FROM --platform=linux/arm64 busybox-arm64\nRUN uname -m > /arch\n",
        )],
    );
    env.build_ok(&["-t", "arm:1", ctx2.to_str().unwrap()]);
    let out = env.rbuild(&["inspect", "arm:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let text = v.to_string();
    assert!(text.contains("\"architecture\":\"arm64\""), "{text}");
    let (_, err) = env.build_ok(&["-t", "arm:1", ctx2.to_str().unwrap()]);
    assert!(err.contains("CACHED"), "{err}");
    // `--platform linux/arm64`: TARGETPLATFORM is arm64, stages without FROM --platform are
    // arm64 (their base narrowed to it), a `FROM --platform=$BUILDPLATFORM` stage is native.
    let ctx3 = env.context(
        "ctx3",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM busybox AS tools\n\
             ARG TARGETARCH\n\
             RUN echo \"$(uname -m) for $TARGETARCH\" > /built\n\
             FROM busybox-arm64\n\
             ARG TARGETPLATFORM TARGETVARIANT\n\
             COPY --from=tools /built /built\n\
             RUN echo \"$(uname -m) $TARGETPLATFORM [$TARGETVARIANT]\" > /ran\n",
        )],
    );
    let dest3 = env.path("out3");
    env.build_ok(&[
        "--platform",
        "linux/aarch64",
        "-t",
        "cross:1",
        "-o",
        "type=image",
        "-o",
        &format!("type=local,dest={}", dest3.display()),
        ctx3.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(dest3.join("built")).unwrap(),
        "x86_64 for arm64\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest3.join("ran")).unwrap(),
        "aarch64 linux/arm64 []\n"
    );
    let out = env.rbuild(&["inspect", "cross:1"]);
    assert!(
        stdout(&out).contains("\"architecture\": \"arm64\"")
            || stdout(&out).contains("\"architecture\":\"arm64\""),
        "{}",
        stdout(&out)
    );
    // The arm64 busybox binary in the image is an aarch64 ELF (readelf, as a user would check).
    if which("readelf").is_some() {
        let elf = Command::new("readelf")
            .args(["-h"])
            .arg(dest3.join("bin/busybox"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&elf.stdout).contains("AArch64"),
            "{}",
            String::from_utf8_lossy(&elf.stdout)
        );
    }
    // `rbuild binfmt linux/arm64` says how it runs.
    let out = env.rbuild(&["binfmt", "linux/arm64", "linux/amd64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("linux/arm64") && text.contains("emulated by qemu-aarch64"),
        "{text}"
    );
    assert!(
        text.contains("linux/amd64") && text.contains("native"),
        "{text}"
    );

    // Reproducible: the same arm64 build with SOURCE_DATE_EPOCH on two clean stores gives the same
    // image id and manifest digest.
    let ids: Vec<(String, String)> = (0..2)
        .map(|i| {
            let e = Env::with_busybox();
            load_arm64_busybox(&e).unwrap();
            let c = e.context(
                &format!("repro{i}"),
                &[(
                    "Dockerfile",
                    "FROM --platform=linux/arm64 busybox-arm64\nRUN uname -m > /arch\n",
                )],
            );
            let meta = e.path("meta.json");
            let (id, _) = e.build_ok(&[
                "-q",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
                "--metadata-file",
                meta.to_str().unwrap(),
                c.to_str().unwrap(),
            ]);
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
            (
                id.trim().to_string(),
                m["containerimage.digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert!(!ids[0].1.is_empty(), "{ids:?}");
    assert_eq!(ids[0], ids[1]);

    // `rbuild run` of the arm64 image runs under emulation too.
    let out = env.rbuild(&["run", "arm:1", "cat", "/arch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "aarch64\n");
    let out = env.rbuild(&["run", "--platform", "linux/arm64", "arm:1", "uname", "-m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "aarch64\n");
    let out = env.rbuild(&["run", "--platform", "linux/amd64", "arm:1", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("image arm:1 is linux/arm64, not linux/amd64"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refusals_come_before_any_step() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let build = |name: &str, dockerfile: &str| {
        let ctx = env.context(name, &[("Dockerfile", dockerfile)]);
        let out = env.rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        stderr(&out)
    };
    // A base image without the wanted platform: says what it is.
    let err = build(
        "missing",
        "FROM busybox\nRUN true\nFROM --platform=linux/arm64 busybox\nRUN true\n",
    );
    assert!(
        err.contains("image busybox:latest is linux/amd64, not linux/arm64"),
        "{err}"
    );
    assert_no_step_ran(&err);
    // A platform no emulator serves (Debian has no big-endian aarch64 qemu handler).
    let err = build(
        "noemu",
        "FROM busybox\nRUN true\nFROM --platform=linux/arm64be scratch\nCOPY --from=0 /bin/busybox /x\nRUN [\"/x\"]\n",
    );
    assert!(
        err.contains("no emulator for linux/arm64be: install qemu-user-static and binfmt-support, or run `rbuild binfmt --install`"),
        "{err}"
    );
    assert_no_step_ran(&err);
    // An unknown --platform, and several at once (not yet): usage errors naming them.
    let ctx = env.context("flag", &[("Dockerfile", "FROM busybox\nRUN true\n")]);
    let out = env.rbuild(&["build", "--platform", "linux/amd46", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "--platform: invalid platform \"linux/amd46\": unknown architecture \"amd46\""
        ),
        "{}",
        stderr(&out)
    );
    let out = env.rbuild(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not supported yet"),
        "{}",
        stderr(&out)
    );
    // An unknown platform string, named with its place in the Dockerfile.
    let err = build("unknown", "FROM --platform=linux/amd46 busybox\nRUN true\n");
    assert!(
        err.contains("Dockerfile:1:6: FROM --platform=linux/amd46: invalid platform \"linux/amd46\": unknown architecture \"amd46\""),
        "{err}"
    );
    assert_no_step_ran(&err);
}

mod common_registry;

/// A two-platform busybox index (linux/amd64 and linux/arm64) in a real registry: each stage's
/// base is narrowed to the stage's platform, an arm64 image is pushed with an arm64 config, and a
/// platform the index lacks is refused naming the ones it has.
#[test]
fn registry_index_is_narrowed_per_stage_platform() {
    if !require_root(&["skopeo", "unshare"]) || !common_registry::have_registry() {
        return;
    }
    if rbuild_oci::host_arch() != "amd64" {
        eprintln!("SKIP: this test expects an amd64 host (arm64 is the foreign platform)");
        return;
    }
    let bin = match arm64_busybox() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    if !arm64_handler_registered() {
        eprintln!(
            "SKIP: no qemu-aarch64 binfmt_misc handler with the F flag (scripts/setup-emulation.sh registers it)"
        );
        return;
    }
    let reg = common_registry::Registry::start(None);
    let env = Env::empty();
    let layout = env.path("multi");
    let out = Command::new("python3")
        .arg(repo_root().join("testdata/base/make-busybox-image.py"))
        .arg(&layout)
        .args(["--ref", "multi", "--platform", "linux/amd64=/bin/busybox"])
        .arg("--platform")
        .arg(format!("linux/arm64={}", bin.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = format!("{}/busybox:multi", reg.host);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:multi", layout.display()))
            .arg(format!("docker://{base}")),
    );

    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!(
                "FROM {base} AS native\nRUN uname -m > /arch\n\
                 FROM --platform=linux/arm64 {base} AS arm\nRUN uname -m > /arch\n\
                 FROM scratch\nCOPY --from=native /arch /native\nCOPY --from=arm /arch /arm\n"
            ),
        )],
    );
    let dest = env.path("out");
    env.build_ok(&[
        "-o",
        &format!("type=local,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(dest.join("native")).unwrap(),
        "x86_64\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("arm")).unwrap(),
        "aarch64\n"
    );

    // --platform linux/arm64 --push: the pushed image's config is arm64, its RUN ran emulated.
    let ctx = env.context(
        "ctx2",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN uname -m > /arch\n"),
        )],
    );
    let target = format!("{}/app:arm64", reg.host);
    env.build_ok(&[
        "--platform",
        "linux/arm64",
        "-t",
        &target,
        "--push",
        ctx.to_str().unwrap(),
    ]);
    let inspect = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{target}")),
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Architecture"].as_str(), Some("arm64"), "{inspect}");
    let out = env.rbuild(&["run", &target, "cat", "/arch"]);
    assert_eq!(stdout(&out), "aarch64\n", "{}", stderr(&out));

    // A platform the index does not have: refused before any step, naming what it has.
    let ctx = env.context(
        "ctx3",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN true\nFROM --platform=linux/s390x {base}\nRUN true\n"),
        )],
    );
    let out = env.rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no manifest for linux/s390x (it has linux/amd64, linux/arm64)"),
        "{err}"
    );
    assert_no_step_ran(&err);
}
