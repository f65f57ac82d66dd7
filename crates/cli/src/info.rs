//! `rbuild info`: what this environment allows and what rbuild chose — user and id mapping,
//! namespaces, snapshotter, RUN network, cgroups, emulators, store path (issue 16).

use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Serialize)]
struct Info {
    user: String,
    uid: u32,
    rootless: bool,
    id_mapping: String,
    user_namespaces: String,
    snapshotter: String,
    network: String,
    network_tools: Vec<String>,
    cgroup: String,
    emulators: Vec<String>,
    store: PathBuf,
    kernel: String,
}

pub fn info(root: &Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let store = root
        .clone()
        .unwrap_or_else(rbuild_store::Store::default_root);
    let rootless = rbuild_oci::host::is_rootless();
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let host_uid = real_uid(&uid_map);
    let id_mapping = if !rootless {
        "none (root on the host)".to_string()
    } else {
        uid_map
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3).then(|| format!("{}→{} (×{})", f[0], f[1], f[2]))
            })
            .collect::<Vec<_>>()
            .join(", ")
            + if rbuild_oci::host::is_single_id() {
                " — a single id: steps cannot own files as other ids (add a subordinate range)"
            } else {
                ""
            }
    };
    let max_ns = read_trim("/proc/sys/user/max_user_namespaces");
    let user_namespaces = match max_ns.as_deref() {
        Some("0") => "disabled (user.max_user_namespaces=0)".to_string(),
        Some(n) => format!("available (max {n})"),
        None => "unknown".to_string(),
    };
    let snapshotter = snapshotter_choice(&store);
    let tools: Vec<String> = [
        "pasta",
        "slirp4netns",
        "newuidmap",
        "newgidmap",
        "fuse-overlayfs",
    ]
    .iter()
    .filter(|t| on_path(t))
    .map(|t| t.to_string())
    .collect();
    let tun_ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    let network = if !tun_ok {
        "no private network: /dev/net/tun is not usable here (chmod 0666 /dev/net/tun, as Debian's udev does); --network=none works".to_string()
    } else if tools.iter().any(|t| t == "pasta") {
        "private network namespace, outbound through pasta".to_string()
    } else if tools.iter().any(|t| t == "slirp4netns") {
        "private network namespace, outbound through slirp4netns".to_string()
    } else {
        "no user-mode network stack installed (apt-get install passt or slirp4netns)".to_string()
    };
    let info = Info {
        user: rbuild_sandbox::userns::user_name(host_uid),
        uid: host_uid,
        rootless,
        id_mapping,
        user_namespaces,
        snapshotter,
        network,
        network_tools: tools,
        cgroup: cgroup_state(rootless),
        emulators: emulators(),
        store,
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = [
        ("User", format!("{} (uid {})", info.user, info.uid)),
        (
            "Mode",
            if rootless {
                "rootless: root inside a user namespace of this user".into()
            } else {
                "root".into()
            },
        ),
        ("ID mapping", info.id_mapping.clone()),
        ("User namespaces", info.user_namespaces.clone()),
        ("Snapshotter", info.snapshotter.clone()),
        ("RUN network", info.network.clone()),
        ("Cgroups", info.cgroup.clone()),
        (
            "Emulators",
            if info.emulators.is_empty() {
                "none registered (apt-get install qemu-user-static binfmt-support)".into()
            } else {
                info.emulators.join(", ")
            },
        ),
        ("Store", info.store.display().to_string()),
        ("Kernel", info.kernel.clone()),
    ];
    for (k, v) in rows {
        println!("{:<16} {v}", format!("{k}:"));
    }
    Ok(ExitCode::SUCCESS)
}

/// The host uid behind uid 0 of our user namespace (ourselves when not rootless).
fn real_uid(uid_map: &str) -> u32 {
    if !rbuild_oci::host::is_rootless() {
        return nix::unistd::getuid().as_raw();
    }
    uid_map
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == "0")
                .then(|| f[1].parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn on_path(prog: &str) -> bool {
    rbuild_inputs::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// The snapshotter a build would use here, and why — probing a real overlay mount in a private
/// mount namespace of this process when no choice is remembered.
fn snapshotter_choice(store: &Path) -> String {
    let probed = store.join("snapshots").join("overlay-probed");
    let how = if rbuild_oci::host::is_rootless() {
        " in the user namespace (userxattr)"
    } else {
        ""
    };
    if let Some(v) = rbuild_inputs::var("RBUILD_SNAPSHOTTER") {
        return format!("{v} (chosen by RBUILD_SNAPSHOTTER)");
    }
    if probed.exists() {
        return format!("overlayfs{how} (a probe mount worked in this store)");
    }
    if rbuild_sandbox::enter_private_mount_namespace().is_err() {
        return "native (no mount namespace can be made here: copies)".into();
    }
    let dir = tempfile::Builder::new().prefix("rbuild-info-").tempdir();
    match dir.map_err(|e| e.to_string()).and_then(|d| {
        rbuild_snapshotter::mount::overlay_usable(d.path()).map_err(|e| e.to_string())
    }) {
        Ok(()) => format!("overlayfs{how} (a probe mount works)"),
        Err(e) => format!("native (overlay is not usable: {e})"),
    }
}

fn cgroup_state(rootless: bool) -> String {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let version = if v2 { "v2" } else { "v1" };
    if !rootless {
        return format!(
            "{version}; limits (--memory, --cpus, --pids-limit) through a per-run cgroup"
        );
    }
    // Rootless: only a delegated v2 subtree (ours, writable) can take limits.
    match rbuild_sandbox::delegated_cgroup() {
        Ok(dir) => format!("v2, delegated subtree {}: limits work", dir.display()),
        Err(why) => format!("{version}: {why}: --memory/--cpus/--pids-limit are refused rootless"),
    }
}

/// binfmt_misc handlers of qemu, with their flags (F: the interpreter works inside a rootfs).
fn emulators() -> Vec<String> {
    let dir = Path::new(rbuild_sandbox::binfmt::BINFMT_DIR);
    let Ok(table) = rbuild_sandbox::binfmt::read_table(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = table
        .handlers
        .iter()
        .filter(|h| h.enabled && h.name.starts_with("qemu-"))
        .map(|h| format!("{} [{}]", h.name.trim_start_matches("qemu-"), h.flags))
        .collect();
    out.sort();
    out
}
