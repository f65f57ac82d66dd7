//! Shared helpers for the CLI integration tests: a private store per test, the busybox base
//! image (made from Debian's busybox-static, no network), and running the real `rbuild` binary.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn rbuild_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rbuild")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Skip (with a printed reason) unless we are root and the tools exist.
pub fn require_root(tools: &[&str]) -> bool {
    if !nix_is_root() {
        eprintln!("SKIP: this test builds real images and needs root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: /bin/busybox missing (apt-get install busybox-static)");
        return false;
    }
    for t in tools {
        if which(t).is_none() {
            eprintln!("SKIP: {t} is not installed");
            return false;
        }
    }
    true
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// The busybox OCI layout, made once per test process.
pub fn busybox_layout() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rbuild-test-busybox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("python3")
            .arg(repo_root().join("testdata/base/make-busybox-image.py"))
            .arg(&dir)
            .output()
            .expect("running make-busybox-image.py");
        assert!(
            out.status.success(),
            "make-busybox-image.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A test environment: its own store root and a scratch dir.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    /// Rootless: every rbuild command runs as this (uid, gid), through setpriv.
    pub user: Option<(u32, u32)>,
}

/// The ordinary user the rootless variants of the tests run as (made here, with a subordinate id
/// range); `None` (with the reason printed) where that is impossible.
pub fn rootless_user() -> Option<(u32, u32)> {
    const USER: &str = "rbuild-rl";
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDS.get_or_init(|| {
        for t in ["setpriv", "useradd", "newuidmap"] {
            if which(t).is_none() {
                eprintln!("SKIP: {t} is not installed (rootless variant)");
                return None;
            }
        }
        let id = |flag: &str| -> Option<u32> {
            let o = Command::new("id").arg(flag).arg(USER).output().ok()?;
            String::from_utf8_lossy(&o.stdout).trim().parse().ok()
        };
        if id("-u").is_none() {
            let _ = Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", USER])
                .status();
        }
        let has_range = std::fs::read_to_string("/etc/subuid")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{USER}:")));
        if !has_range {
            let _ = Command::new("usermod")
                .args([
                    "--add-subuids",
                    "300000-365535",
                    "--add-subgids",
                    "300000-365535",
                    USER,
                ])
                .status();
        }
        match (id("-u"), id("-g")) {
            (Some(u), Some(g)) => Some((u, g)),
            _ => {
                eprintln!("SKIP: could not create the test user {USER}");
                None
            }
        }
    })
}

impl Env {
    /// A fresh store with busybox:latest loaded, used by an ordinary user (rootless): `None`
    /// (the reason printed) where rootless cannot run here.
    pub fn rootless_with_busybox() -> Option<Env> {
        let ids = rootless_user()?;
        let mut env = Env::empty();
        // The user must reach the scratch dir and own its store.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(&env.root).unwrap();
        std::os::unix::fs::chown(&env.root, Some(ids.0), Some(ids.1)).unwrap();
        env.user = Some(ids);
        let out = env.rbuild(&["load", busybox_layout().to_str().unwrap()]);
        if !out.status.success() {
            eprintln!("SKIP: rootless load failed here: {}", stderr(&out));
            return None;
        }
        Some(env)
    }

    /// A fresh store with busybox:latest loaded.
    pub fn with_busybox() -> Env {
        let env = Env::empty();
        let out = env.rbuild(&["load", busybox_layout().to_str().unwrap()]);
        assert!(out.status.success(), "load failed: {}", stderr(&out));
        env
    }

    pub fn empty() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("rbuild-it-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("store");
        Env {
            tmp,
            root,
            user: None,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn cmd(&self) -> Command {
        let mut c = match self.user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(rbuild_bin());
                c.env("HOME", self.tmp.path());
                c
            }
            None => Command::new(rbuild_bin()),
        };
        c.env("RBUILD_ROOT", &self.root);
        c.env_remove("SOURCE_DATE_EPOCH");
        c
    }

    pub fn rbuild(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running rbuild")
    }

    /// Write a context dir with the given files; returns its path.
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (p, content) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, content).unwrap();
        }
        dir
    }

    /// Build and assert success; returns (stdout, stderr).
    pub fn build_ok(&self, args: &[&str]) -> (String, String) {
        let mut a = vec!["build", "--progress=plain"];
        a.extend_from_slice(args);
        let out = self.rbuild(&a);
        assert!(
            out.status.success(),
            "build failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        (stdout(&out), stderr(&out))
    }

    pub fn blob_count(&self) -> usize {
        std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Run a command, assert success, return stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The mount table of this process, to check nothing stays mounted.
pub fn mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Export `image` as an OCI archive and unpack it with umoci into a bundle; returns the bundle dir.
pub fn umoci_bundle(env: &Env, tar: &Path, tag: &str) -> PathBuf {
    let layout = env.path("layout");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(&layout),
    );
    let bundle = env.path("bundle");
    let _ = std::fs::remove_dir_all(&bundle);
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!(
                "{}:{}",
                layout.display(),
                tag.rsplit(':').next().unwrap()
            ))
            .arg(&bundle),
    );
    bundle
}

/// Run rbuild on a pseudo-terminal: answer each prompt (when the output so far ends with it) with
/// its line, and return the exit status and everything the terminal showed.
pub fn run_on_pty(mut cmd: Command, dialog: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = cmd.spawn().expect("running rbuild");
    drop(cmd); // closes our copies of the slave: reading the master ends when rbuild exits
    let mut master = std::fs::File::from(pty.master);
    let shown = Arc::new(Mutex::new(String::new()));
    let reader = {
        let shown = shown.clone();
        let mut master = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_upto = 0;
    for (prompt, answer) in dialog {
        loop {
            let s = shown.lock().unwrap().clone();
            if let Some(i) = s[seen_upto..].find(prompt) {
                seen_upto += i + prompt.len();
                break;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("no prompt {prompt:?}; the terminal showed:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        master.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rbuild did not finish:\n{}", shown.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let s = shown.lock().unwrap().clone();
    (status, s)
}
