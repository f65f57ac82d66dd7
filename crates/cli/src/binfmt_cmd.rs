//! `rbuild binfmt`: which platforms this machine can run RUN steps of (natively, or through a
//! binfmt_misc handler with the F flag), and `--install`, which registers Debian's
//! qemu-user-static handlers with F (as `update-binfmts --enable` with `fix_binary yes`).

use anyhow::bail;
use rbuild_oci::Platform;
use rbuild_sandbox::binfmt::{self, Emulation, InstallAction};
use std::path::Path;
use std::process::ExitCode;

/// The platforms listed when none are named.
const COMMON: &[&str] = &[
    "linux/amd64",
    "linux/386",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
    "linux/loong64",
];

fn parse_platforms(args: &[String]) -> anyhow::Result<Vec<Platform>> {
    let mut out = Vec::new();
    for a in args {
        for p in Platform::parse_list(a).map_err(|e| crate::args::usage(e.to_string()))? {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

pub fn binfmt(install: bool, platforms: &[String]) -> anyhow::Result<ExitCode> {
    let wanted = parse_platforms(platforms)?;
    let dir = Path::new(binfmt::BINFMT_DIR);
    if install {
        if !nix::unistd::geteuid().is_root() || rbuild_oci::host::is_rootless() {
            bail!("registering emulators needs root (binfmt_misc handlers are the kernel's, for every user)");
        }
        // In the host's mount namespace on purpose: the kernel keeps handlers only while a
        // binfmt_misc mount exists, so this mount must outlive us (as binfmt-support's).
        let done = binfmt::install(dir, Path::new(binfmt::DEBIAN_BINFMTS_DIR), &wanted)?;
        for (name, action) in &done {
            let what = match action {
                InstallAction::Present => "already registered with F",
                InstallAction::Registered => "registered with F",
                InstallAction::Replaced => "re-registered with F (it lacked F or was disabled)",
            };
            println!("{name}: {what}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<Platform> = if wanted.is_empty() {
        COMMON
            .iter()
            .map(|s| Platform::parse(s).expect("a valid platform"))
            .collect()
    } else {
        wanted
    };
    let table = binfmt::read_table(dir).unwrap_or_default();
    if !table.mounted {
        eprintln!(
            "note: binfmt_misc is not mounted at {} (mount -t binfmt_misc binfmt_misc {0}, or `rbuild binfmt --install`)",
            dir.display()
        );
    }
    let mut all_ok = true;
    for p in &list {
        let shown = p.normalized().format();
        match binfmt::emulation_in(&table, p) {
            Ok(Emulation::Native) => println!("{shown:<16} native"),
            Ok(Emulation::Emulated(h)) => println!(
                "{shown:<16} emulated by {} ({}, flags {})",
                h.name,
                h.interpreter.display(),
                h.flags
            ),
            Err(e) => {
                all_ok = false;
                println!("{shown:<16} {e}");
            }
        }
    }
    // Named platforms that cannot run are a failure (scripts can ask); the overview is not.
    Ok(if all_ok || platforms.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
