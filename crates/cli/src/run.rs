//! `rbuild run`: start a container from a local image in the build sandbox, on a fresh overlay of
//! the image's layers (removed afterwards: the image never changes), with the image's
//! Entrypoint/Cmd/Env/WorkingDir/User (each overridable), stdout/stderr attached (stdin with
//! `-i`), or with `-t` a terminal of the container's own relayed to ours (raw while attached with
//! `-i`, put back on every exit path), exit code passed through.

use anyhow::{bail, Context};
use std::io::{IsTerminal as _, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Remove the container when it exits (always the case: containers are never kept).
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open and pass it to the container (without it the container reads /dev/null).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the container a pseudo-terminal (with -i, this terminal is raw while attached).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from this environment).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (name, uid, name:group or uid:gid), resolved in the image.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Network: default (a private namespace with outbound access through pasta or
    /// slirp4netns), none (only loopback) or host.
    #[arg(long, default_value = "default", value_name = "default|none|host")]
    pub network: String,
    /// The platform the image must be (`linux/arm64`); one of another platform than the host's
    /// runs under binfmt_misc emulation.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
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

/// `--memory` of `rbuild run`: the build's size parser, with the flag named.
fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    crate::build::parse_bytes(s).map_err(|e| anyhow::anyhow!("--memory {e}"))
}

pub fn run(root: &Option<PathBuf>, a: RunArgs) -> anyhow::Result<ExitCode> {
    if a.tty && a.interactive && !std::io::stdin().is_terminal() {
        // docker's words and status.
        eprintln!("the input device is not a TTY");
        return Ok(ExitCode::from(1));
    }
    let network = match a.network.as_str() {
        "none" => rbuild_sandbox::Network::None,
        "host" => rbuild_sandbox::Network::Host,
        "default" | "bridge" | "private" => rbuild_sandbox::Network::Private,
        other => bail!("--network {other}: expected default, none or host"),
    };
    let want_platform = a
        .platform
        .as_deref()
        .map(|p| {
            rbuild_oci::Platform::parse_strict(p)
                .map_err(|e| crate::args::usage(format!("--platform: {e}")))
        })
        .transpose()?;
    let limits = rbuild_sandbox::Limits {
        memory: a.memory.as_deref().map(parse_bytes).transpose()?,
        cpus: a.cpus,
        pids: a.pids_limit,
    };
    if let Err(e) = rbuild_sandbox::enter_private_mount_namespace() {
        bail!("cannot create a private mount namespace: {e}\nhint: rbuild run needs root");
    }
    let store = rbuild_engine::open_store(root)?;
    let (_, rec) = store
        .find_image(&a.image)
        .with_context(|| format!("looking up image {}", a.image))?
        .ok_or_else(|| anyhow::anyhow!("image {} not found in the local store", a.image))?;
    let config = rbuild_image::read_config(&store, &rec.config)
        .map_err(|e| anyhow::anyhow!("reading the config of {}: {e}", a.image))?;
    // The image's platform: the one asked for, and runnable here (natively or emulated with F),
    // checked before anything is unpacked.
    if !config.os.is_empty() && !config.architecture.is_empty() {
        let have =
            rbuild_oci::Platform::new(&config.os, &config.architecture, config.variant.as_deref());
        if let Some(want) = &want_platform {
            if !rbuild_oci::Matcher::only(want).matches(&have) {
                bail!(
                    "image {} is {}, not {} (the local store keeps one platform per name)",
                    a.image,
                    have.normalized(),
                    want.normalized()
                );
            }
        }
        rbuild_sandbox::binfmt::emulation(&have).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let snaps = rbuild_engine::snapshots::open_for_mounting(store.root())?;
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
            None => match rbuild_inputs::var(e) {
                Some(v) => format!("{e}={v}"),
                None => continue,
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
    let guard = rbuild_snapshotter::MountedSnapshot::active(
        &snaps,
        &key,
        top.as_deref(),
        &store.root().join("mnt"),
    )
    .map_err(|e| anyhow::anyhow!("mounting the container's rootfs: {e}"))?;
    let mnt = guard.path().to_path_buf();

    let u = rbuild_fileop::Root::open(&mnt)
        .and_then(|root| rbuild_fileop::resolve_user(&root, &user))
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
        stdio: if a.tty {
            let size = rbuild_sandbox::window_size(std::io::stdin())
                .or_else(|| rbuild_sandbox::window_size(std::io::stdout()))
                .unwrap_or(rbuild_sandbox::WindowSize { rows: 24, cols: 80 });
            rbuild_sandbox::Stdio::Tty(size)
        } else {
            rbuild_sandbox::Stdio::Inherit {
                stdin: a.interactive,
            }
        },
        init_exe: None,
        timeout: None,
    };
    let cancel = rbuild_sandbox::Cancel::new();
    let outcome = if a.tty {
        let console = Arc::new(OnceLock::new());
        let signals = Signals::watch(console.clone(), cancel.clone());
        let mut relay = None;
        let outcome = rbuild_sandbox::run_with_console(
            &spec,
            &mut |_, _| {},
            &mut |master| {
                let master = Arc::new(std::fs::File::from(master));
                let _ = console.set(master.clone());
                relay = Some(Relay::start(master, a.interactive));
            },
            &cancel,
        );
        // All output shown and the terminal put back before anything else is printed.
        drop(relay);
        match (&outcome, signals.as_ref().and_then(Signals::caught)) {
            (Err(rbuild_sandbox::SandboxError::Cancelled), Some(sig)) => {
                drop(guard);
                return Ok(ExitCode::from((128 + sig).clamp(0, 255) as u8));
            }
            _ => outcome,
        }
    } else {
        rbuild_sandbox::run(&spec, &mut |_, _| {}, &cancel)
    };
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

/// Relays the container's terminal (its master end) to ours while the container runs: its output
/// to stdout; with `-i`, stdin to it, with our terminal raw (so ^C, ^D, ^Z reach the container's
/// terminal as bytes) until this is dropped, which waits for the last output first.
struct Relay {
    output: Option<std::thread::JoinHandle<()>>,
    _raw: Option<crate::terminal::Held>,
}

impl Relay {
    fn start(master: Arc<std::fs::File>, interactive: bool) -> Relay {
        let raw = if interactive { raw_stdin() } else { None };
        let from = master.clone();
        let output = std::thread::Builder::new()
            .name("tty-output".into())
            .spawn(move || {
                // Ends with EIO once everything in the container holding its terminal is gone.
                let _ = copy(&mut &*from, &mut std::io::stdout());
            })
            .ok();
        if interactive {
            // Not joined: it stays blocked reading our stdin until rbuild exits.
            let _ = std::thread::Builder::new()
                .name("tty-input".into())
                .spawn(move || {
                    let _ = copy(&mut std::io::stdin(), &mut &*master);
                });
        }
        Relay { output, _raw: raw }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
    }
}

/// Copy until end of input or an error, flushing each chunk (a terminal shows it at once).
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

/// Put stdin's terminal in raw mode (as moby/term's MakeRaw, which is cfmakeraw), holding the
/// old settings to put back; `None` (nothing changed) if stdin is not a terminal.
fn raw_stdin() -> Option<crate::terminal::Held> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let saved = tcgetattr(std::io::stdin()).ok()?;
    let mut raw = saved.clone();
    cfmakeraw(&mut raw);
    let held = crate::terminal::Held::new(saved);
    tcsetattr(std::io::stdin(), SetArg::TCSANOW, &raw).ok()?;
    Some(held)
}

/// While a container has a terminal: a window-size change of ours is passed on to it; SIGINT,
/// SIGTERM or SIGHUP put our terminal back and stop the container (rbuild then exits 128 + the
/// signal, after removing the container).
struct Signals {
    caught: Arc<std::sync::atomic::AtomicI32>,
}

impl Signals {
    /// Start the watching thread; `None` if it cannot run (signals keep their default actions).
    fn watch(
        console: Arc<OnceLock<Arc<std::fs::File>>>,
        cancel: rbuild_sandbox::Cancel,
    ) -> Option<Signals> {
        use nix::sys::signal::Signal;
        use tokio::signal::unix::{signal, SignalKind};
        let caught = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let seen = caught.clone();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tty-signals".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let _in_rt = rt.enter();
                let (Ok(mut winch), Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                    signal(SignalKind::window_change()),
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                ) else {
                    return;
                };
                let _ = ready_tx.send(());
                rt.block_on(async {
                    loop {
                        let sig = tokio::select! {
                            _ = winch.recv() => {
                                let size = rbuild_sandbox::window_size(std::io::stdin())
                                    .or_else(|| rbuild_sandbox::window_size(std::io::stdout()));
                                if let (Some(size), Some(master)) = (size, console.get()) {
                                    let _ = rbuild_sandbox::set_window_size(&**master, size);
                                }
                                continue;
                            }
                            _ = int.recv() => Signal::SIGINT as i32,
                            _ = term.recv() => Signal::SIGTERM as i32,
                            _ = hup.recv() => Signal::SIGHUP as i32,
                        };
                        crate::terminal::restore();
                        seen.store(sig, Ordering::SeqCst);
                        cancel.cancel();
                    }
                });
            })
            .ok()?;
        ready.recv().ok()?;
        Some(Signals { caught })
    }

    /// The signal that stopped the container, if one did.
    fn caught(&self) -> Option<i32> {
        Some(self.caught.load(Ordering::SeqCst)).filter(|s| *s != 0)
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
