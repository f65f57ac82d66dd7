//! Foreign programs in the sandbox: Debian's qemu-user-static handlers registered with the F flag
//! (by `binfmt::install`, the code behind `rbuild binfmt --install`), then Debian's arm64
//! busybox-static run as a RUN step would be, printing `aarch64`. Needs root, qemu-user-static,
//! a binfmt_misc the kernel lets us mount and register in, and the arm64 busybox
//! (`testdata/base/fetch-busybox.sh arm64 target/test-assets/busybox-arm64`, which this test runs
//! when the file is missing); each missing piece is a SKIP with the reason.

use rbuild_oci::Platform;
use rbuild_sandbox::binfmt::{self, Emulation};
use rbuild_sandbox::{run, Cancel, ExitKind, OutputStream, RunSpec};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Debian's arm64 busybox-static, fetched into target/test-assets when missing.
fn arm64_busybox() -> Result<PathBuf, String> {
    let dir = workspace().join("target/test-assets/busybox-arm64");
    let bin = dir.join("bin/busybox");
    if bin.exists() {
        return Ok(bin);
    }
    let out = std::process::Command::new("bash")
        .arg(workspace().join("testdata/base/fetch-busybox.sh"))
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

fn rootfs_with(busybox: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy(busybox, r.join("bin/busybox")).unwrap();
    for applet in ["sh", "uname", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
    root
}

#[test]
fn arm64_busybox_runs_under_emulation_in_the_sandbox() {
    if !nix::unistd::geteuid().is_root() || rbuild_oci::host::is_rootless() {
        eprintln!(
            "SKIP: registering binfmt_misc handlers needs root in the initial user namespace"
        );
        return;
    }
    let arm64 = Platform::parse("linux/arm64").unwrap();
    if binfmt::runs_natively(&arm64) {
        eprintln!("SKIP: this host runs arm64 natively; nothing to emulate");
        return;
    }
    let busybox = match arm64_busybox() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    // Our own mount namespace (this thread's): the binfmt_misc mount, if we make it, stays here.
    // The handlers themselves are the kernel's, as `rbuild binfmt --install` makes them.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).and_then(|()| {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
    }) {
        eprintln!("SKIP: cannot make a private mount namespace: {e}");
        return;
    }
    match binfmt::install(
        Path::new(binfmt::BINFMT_DIR),
        Path::new(binfmt::DEBIAN_BINFMTS_DIR),
        std::slice::from_ref(&arm64),
    ) {
        Ok(done) => eprintln!("binfmt handlers: {done:?}"),
        Err(e @ binfmt::InstallError::NoQemu { .. }) => {
            eprintln!("SKIP: {e}");
            return;
        }
        Err(e @ (binfmt::InstallError::Mount { .. } | binfmt::InstallError::Register { .. })) => {
            eprintln!("SKIP: registration is impossible here: {e}");
            return;
        }
        Err(e) => panic!("install: {e}"),
    }
    // The check a build makes before any step: arm64 has an enabled handler with F.
    let handler = match binfmt::emulation(&arm64) {
        Ok(Emulation::Emulated(h)) => h,
        other => panic!("after install, arm64 should be emulated: {other:?}"),
    };
    assert!(handler.fix_binary(), "{handler:?}");
    assert!(handler.interpreter.exists(), "{handler:?}");

    // The busybox is an aarch64 ELF, and the host cannot run it without the handler.
    let head = std::fs::read(&busybox).unwrap();
    assert_eq!(&head[18..20], &183u16.to_le_bytes(), "not an aarch64 ELF");

    // Inside the sandbox the interpreter path does not exist: only F makes this work.
    let root = rootfs_with(&busybox);
    assert!(!root.path().join("usr/libexec/qemu-binfmt").exists());
    let mut spec = RunSpec::new(
        root.path(),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "uname -m; echo from-arm64".into(),
        ],
    );
    spec.env = vec!["PATH=/bin".into()];
    spec.hostname = "emulated".into();
    spec.init_exe = Some(PathBuf::from(env!(
        "CARGO_BIN_EXE_rbuild-sandbox-test-init"
    )));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let res = run(
        &spec,
        &mut |s, b| match s {
            OutputStream::Stdout => out.extend_from_slice(b),
            OutputStream::Stderr => err.extend_from_slice(b),
        },
        &Cancel::new(),
    );
    let (out, err) = (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    );
    let outcome = res.unwrap_or_else(|e| panic!("run: {e}\nstdout: {out}\nstderr: {err}"));
    assert_eq!(
        outcome.status,
        ExitKind::Exited(0),
        "stdout: {out}\nstderr: {err}"
    );
    assert_eq!(out, "aarch64\nfrom-arm64\n", "stderr: {err}");
}
