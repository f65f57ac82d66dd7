//! `rbuild run`: start a container from a local image in the build sandbox, on a fresh overlay of
//! the image's layers (removed afterwards: the image never changes), with the image's
//! Entrypoint/Cmd/Env/WorkingDir/User (each overridable), stdio attached, exit code passed through.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Remove the container when it exits (always the case: containers are never kept).
    #[arg(long)]
    pub rm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from this environment).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (name, uid, name:group or uid:gid), resolved in the image.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Network: none (only loopback) or host.
    #[arg(long, default_value = "host", value_name = "none|host")]
    pub network: String,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Hostname inside the container.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 256m).
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// CPU limit (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Process limit.
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<u64>,
    /// Image name or id.
    pub image: String,
    /// Command (replaces the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mul) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--memory {s}: not a size (e.g. 256m, 1g)"))?;
    n.checked_mul(mul)
        .ok_or_else(|| anyhow::anyhow!("--memory {s}: too large"))
}

pub fn run(root: &Option<PathBuf>, a: RunArgs) -> anyhow::Result<ExitCode> {
    let network = match a.network.as_str() {
        "none" => rbuild_sandbox::Network::None,
        "host" | "default" => rbuild_sandbox::Network::Host,
        other => bail!("--network {other}: expected none or host"),
    };
    let limits = rbuild_sandbox::Limits {
        memory: a.memory.as_deref().map(parse_bytes).transpose()?,
        cpus: a.cpus,
        pids: a.pids_limit,
    };
    if let Err(e) = rbuild_sandbox::enter_private_mount_namespace() {
        bail!("cannot create a private mount namespace: {e}\nhint: rbuild run needs root");
    }
    let store = crate::open_store(root)?;
    let (_, rec) = store
        .find_image(&a.image)
        .with_context(|| format!("looking up image {}", a.image))?
        .ok_or_else(|| anyhow::anyhow!("image {} not found in the local store", a.image))?;
    let config = rbuild_image::read_config(&store, &rec.config)
        .map_err(|e| anyhow::anyhow!("reading the config of {}: {e}", a.image))?;
    let snaps = crate::snapshots::open_for_mounting(store.root())?;
    let _lease = store.lease("run").context("taking a lease on the store")?;
    let top = rbuild_solver::unpack_image(&store, &snaps, &rec.manifest)
        .map_err(|e| anyhow::anyhow!("unpacking {}: {e}", a.image))?;

    let c = &config.config;
    let mut args: Vec<String> = match &a.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => c.entrypoint.clone().unwrap_or_default(),
    };
    if !a.command.is_empty() {
        args.extend(a.command.iter().cloned());
    } else if a.entrypoint.is_none() {
        args.extend(c.cmd.clone().unwrap_or_default());
    }
    if args.is_empty() {
        bail!(
            "{}: no command given and the image has no ENTRYPOINT or CMD",
            a.image
        );
    }
    let mut env = c.env.clone();
    for e in &a.env {
        let kv = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let k = kv
            .split_once('=')
            .map(|(k, _)| k)
            .unwrap_or(&kv)
            .to_string();
        env.retain(|x| x.split_once('=').map(|(xk, _)| xk) != Some(k.as_str()));
        env.push(kv);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={}", rbuild_sandbox::DEFAULT_PATH));
    }
    let cwd = a
        .workdir
        .clone()
        .or_else(|| c.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        bail!("working directory {cwd:?} is not absolute");
    }
    let user = a
        .user
        .clone()
        .or_else(|| c.user.clone())
        .unwrap_or_default();

    // A fresh active snapshot on top of the image, mounted; removed whatever happens.
    let key = format!(
        "run-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let specs = snaps
        .prepare(&key, top.as_deref())
        .map_err(|e| anyhow::anyhow!("preparing the container's snapshot: {e}"))?;
    let mnt = store.root().join("mnt").join(&key);
    let guard = Container {
        snaps: &snaps,
        key: key.clone(),
        mnt: mnt.clone(),
        mounted: false,
    };
    let mut guard = guard;
    std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
    rbuild_snapshotter::mount::mount_all(&specs, &mnt)
        .map_err(|e| anyhow::anyhow!("mounting the container's rootfs: {e}"))?;
    guard.mounted = true;

    let u = rbuild_sandbox::resolve_user(&mnt, &user)
        .map_err(|e| anyhow::anyhow!("user {user:?}: {e}"))?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", u.home));
    }
    let spec = rbuild_sandbox::RunSpec {
        rootfs: mnt.clone(),
        args,
        env,
        cwd,
        uid: u.uid,
        gid: u.gid,
        additional_gids: u.additional_gids.clone(),
        hostname: a
            .hostname
            .clone()
            .unwrap_or_else(|| rec.config.hex()[..12].to_string()),
        etc_hostname: true,
        network,
        mounts: vec![],
        limits,
        insecure: false,
        stdio: rbuild_sandbox::Stdio::Inherit,
        init_exe: None,
        timeout: None,
    };
    let cancel = rbuild_sandbox::Cancel::new();
    let outcome = rbuild_sandbox::run(&spec, &mut |_, _| {}, &cancel);
    drop(guard);
    let outcome = outcome.map_err(|e| anyhow::anyhow!("{e}"))?;
    use rbuild_sandbox::ExitKind;
    Ok(match outcome.status {
        ExitKind::Exited(c) => ExitCode::from(c.clamp(0, 255) as u8),
        ExitKind::Signaled(s) => {
            eprintln!("rbuild run: the container was killed by signal {s}");
            ExitCode::from((128 + s).clamp(0, 255) as u8)
        }
        ExitKind::OomKilled => {
            eprintln!("rbuild run: the container was killed for exceeding its memory limit");
            ExitCode::from(137)
        }
    })
}

/// The container's active snapshot: unmounted and removed on drop.
struct Container<'a> {
    snaps: &'a rbuild_snapshotter::Snapshotter,
    key: String,
    mnt: PathBuf,
    mounted: bool,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rbuild_snapshotter::mount::unmount(&self.mnt);
        }
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = self.snaps.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_bytes("256m").unwrap(), 256 << 20);
        assert_eq!(super::parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(super::parse_bytes("100").unwrap(), 100);
        assert!(super::parse_bytes("x").is_err());
    }
}
