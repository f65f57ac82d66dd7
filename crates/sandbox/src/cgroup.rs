//! The per-run cgroup: created before the init starts its namespaces, limits applied, OOM kills
//! and pids-limit hits read back, every process killed and the cgroup removed after the run.
//!
//! Both layouts are supported. **v2** (unified, `/sys/fs/cgroup` is cgroup2): one directory
//! `/sys/fs/cgroup/rbuild/<id>` with `memory.max`, `cpu.max`, `pids.max`. **v1**: one directory
//! `rbuild/<id>` per controller hierarchy (`memory`, `cpu`, `pids`) with
//! `memory.limit_in_bytes`, `cpu.cfs_quota_us`, `pids.max`. (A v1 host may also mount an empty
//! unified hierarchy at `/sys/fs/cgroup/unified`; it carries no controllers and is not used.)
//! A requested limit whose controller is missing is an error.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::SandboxError;
use crate::spec::Limits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "rbuild";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CPU_PERIOD_US: u64 = 100_000;

/// One run's cgroup.
#[derive(Debug)]
pub(crate) enum Cgroup {
    /// `(controller, directory)` per v1 hierarchy joined.
    V1(Vec<(&'static str, PathBuf)>),
    /// The v2 directory.
    V2(PathBuf),
}

fn io_err(path: &Path, action: impl Into<String>, source: io::Error) -> SandboxError {
    SandboxError::Cgroup {
        path: path.to_owned(),
        action: action.into(),
        source,
    }
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), SandboxError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| io_err(&path, format!("write {value:?} to {file}"), e))
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn mkdir_new(dir: &Path) -> Result<(), SandboxError> {
    fs::create_dir(dir).map_err(|e| io_err(dir, "create", e))
}

fn mkdir_parent(dir: &Path) -> Result<(), SandboxError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(dir, "create", e)),
    }
}

fn cpu_quota(cpus: f64) -> Result<u64, SandboxError> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(SandboxError::InvalidSpec {
            field: "limits.cpus".into(),
            value: cpus.to_string(),
            reason: "must be a positive number",
        });
    }
    // The kernel's minimum quota is 1ms.
    Ok(((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000))
}

/// Can `limits` be applied here? Checked before a build runs anything. As root, yes (a missing
/// controller is found when the cgroup is made). Rootless, only inside a cgroup v2 subtree this
/// user may write (delegated), never in v1.
pub fn check_limits(limits: &Limits) -> Result<(), SandboxError> {
    let wanted = [
        ("memory", limits.memory.is_some()),
        ("cpus", limits.cpus.is_some()),
        ("pids", limits.pids.is_some()),
    ];
    let Some((limit, _)) = wanted.into_iter().find(|w| w.1) else {
        return Ok(());
    };
    if !rbuild_oci::host::is_rootless() {
        return Ok(());
    }
    delegated_cgroup()
        .map(|_| ())
        .map_err(|why| SandboxError::NotDelegated { limit, why })
}

/// The cgroup v2 directory of this process when this user may write it (a delegated subtree), or
/// why not: what rootless limits need (`rbuild info` reports it too).
pub fn delegated_cgroup() -> Result<PathBuf, String> {
    let root = Path::new(CGROUP_ROOT);
    if !is_cgroup2(root) {
        return Err("this host has the cgroup v1 hierarchy, which cannot be delegated".into());
    }
    let own = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .unwrap_or_default();
    let dir = root.join(own.trim_start_matches('/'));
    match nix::unistd::access(&dir.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK) {
        Ok(()) => Ok(dir),
        Err(_) => Err(format!("{} is not writable by this user", dir.display())),
    }
}

impl Cgroup {
    /// Create the cgroup for one run and apply `limits`. `Ok(None)` when the host has no
    /// usable cgroup hierarchy and no limit was requested.
    pub(crate) fn create(limits: &Limits) -> Result<Option<Cgroup>, SandboxError> {
        let root = Path::new(CGROUP_ROOT);
        if is_cgroup2(root) {
            Self::create_v2(root, limits)
        } else {
            Self::create_v1(root, limits)
        }
    }

    fn create_v1(root: &Path, limits: &Limits) -> Result<Option<Cgroup>, SandboxError> {
        let wanted: [(&'static str, &'static str, bool); 3] = [
            ("memory", "memory", limits.memory.is_some()),
            ("cpu", "cpus", limits.cpus.is_some()),
            ("pids", "pids", limits.pids.is_some()),
        ];
        let id = unique_id();
        let mut dirs = Vec::new();
        let result = (|| {
            for (controller, limit, required) in wanted {
                let hier = root.join(controller);
                if !hier.join("cgroup.procs").exists() {
                    if required {
                        return Err(SandboxError::ControllerMissing { limit, controller });
                    }
                    continue;
                }
                let parent = hier.join(PARENT);
                let dir = parent.join(&id);
                match mkdir_parent(&parent).and_then(|()| mkdir_new(&dir)) {
                    Ok(()) => dirs.push((controller, dir)),
                    Err(e) if required => return Err(e),
                    // Not needed for a limit: only used to track processes; skip it.
                    Err(_) => {}
                }
            }
            for (controller, dir) in &dirs {
                match *controller {
                    "memory" => {
                        if let Some(bytes) = limits.memory {
                            write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
                            if dir.join("memory.memsw.limit_in_bytes").exists() {
                                write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string())?;
                            }
                        }
                    }
                    "cpu" => {
                        if let Some(cpus) = limits.cpus {
                            let quota = cpu_quota(cpus)?;
                            write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                            write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
                        }
                    }
                    _ => {
                        if let Some(pids) = limits.pids {
                            write(dir, "pids.max", &pids.to_string())?;
                        }
                    }
                }
            }
            Ok(())
        })();
        let cg = Cgroup::V1(dirs);
        match result {
            Ok(()) if cg.is_empty() => Ok(None),
            Ok(()) => Ok(Some(cg)),
            Err(e) => {
                let _ = cg.destroy();
                Err(e)
            }
        }
    }

    fn create_v2(root: &Path, limits: &Limits) -> Result<Option<Cgroup>, SandboxError> {
        let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let available: Vec<&str> = available.split_whitespace().collect();
        let wanted: [(&'static str, &'static str, bool); 3] = [
            ("memory", "memory", limits.memory.is_some()),
            ("cpu", "cpus", limits.cpus.is_some()),
            ("pids", "pids", limits.pids.is_some()),
        ];
        for (controller, limit, required) in wanted {
            if required && !available.contains(&controller) {
                return Err(SandboxError::ControllerMissing { limit, controller });
            }
        }
        let parent = root.join(PARENT);
        let any_limit = wanted.iter().any(|w| w.2);
        let setup = (|| {
            mkdir_parent(&parent)?;
            for (controller, _, required) in wanted {
                if !available.contains(&controller) {
                    continue;
                }
                for dir in [root, parent.as_path()] {
                    match write(dir, "cgroup.subtree_control", &format!("+{controller}")) {
                        Ok(()) => {}
                        Err(e) if required => return Err(e),
                        Err(_) => {}
                    }
                }
            }
            Ok(())
        })();
        match setup {
            Ok(()) => {}
            Err(e) if any_limit => return Err(e),
            Err(_) => return Ok(None),
        }
        let dir = parent.join(unique_id());
        match mkdir_new(&dir) {
            Ok(()) => {}
            Err(e) if any_limit => return Err(e),
            Err(_) => return Ok(None),
        }
        let cg = Cgroup::V2(dir.clone());
        let applied = (|| {
            if let Some(bytes) = limits.memory {
                write(&dir, "memory.max", &bytes.to_string())?;
                if dir.join("memory.swap.max").exists() {
                    write(&dir, "memory.swap.max", "0")?;
                }
            }
            if let Some(cpus) = limits.cpus {
                write(
                    &dir,
                    "cpu.max",
                    &format!("{} {CPU_PERIOD_US}", cpu_quota(cpus)?),
                )?;
            }
            if let Some(pids) = limits.pids {
                write(&dir, "pids.max", &pids.to_string())?;
            }
            Ok(())
        })();
        match applied {
            Ok(()) => Ok(Some(cg)),
            Err(e) => {
                let _ = cg.destroy();
                Err(e)
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Cgroup::V1(d) => d.is_empty(),
            Cgroup::V2(_) => false,
        }
    }

    fn dirs(&self) -> Vec<&Path> {
        match self {
            Cgroup::V1(d) => d.iter().map(|(_, p)| p.as_path()).collect(),
            Cgroup::V2(p) => vec![p.as_path()],
        }
    }

    fn controller_dir(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(d) => d
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, p)| p.as_path()),
            Cgroup::V2(p) => Some(p),
        }
    }

    /// Move process `pid` (and so everything it will start) into the cgroup.
    pub(crate) fn add(&self, pid: i32) -> Result<(), SandboxError> {
        for dir in self.dirs() {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Number of processes the OOM killer killed in this cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        match self {
            Cgroup::V1(_) => self
                .controller_dir("memory")
                .and_then(|d| read_key(&d.join("memory.oom_control"), "oom_kill"))
                .unwrap_or(0),
            Cgroup::V2(d) => read_key(&d.join("memory.events"), "oom_kill").unwrap_or(0),
        }
    }

    /// True if the pids limit refused a fork.
    pub(crate) fn pids_limit_hit(&self) -> bool {
        self.controller_dir("pids")
            .and_then(|d| read_key(&d.join("pids.events"), "max"))
            .is_some_and(|n| n > 0)
    }

    fn procs(dir: &Path) -> Vec<i32> {
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILL every process in the cgroup until it is empty (or `deadline` passes).
    pub(crate) fn kill_all(&self, deadline: Duration) {
        let start = Instant::now();
        if let Cgroup::V2(d) = self {
            let _ = fs::write(d.join("cgroup.kill"), "1");
        }
        loop {
            let mut any = false;
            for dir in self.dirs() {
                for pid in Self::procs(dir) {
                    any = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !any || start.elapsed() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill what is left and remove the cgroup directories.
    pub(crate) fn destroy(&self) -> Result<(), SandboxError> {
        self.kill_all(Duration::from_secs(5));
        let mut first_err = None;
        for dir in self.dirs() {
            let start = Instant::now();
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // Exiting tasks keep the cgroup busy for a moment.
                    Err(e)
                        if start.elapsed() < Duration::from_secs(5)
                            && e.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        first_err.get_or_insert(io_err(dir, "remove", e));
                        break;
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_is_validated_and_clamped() {
        assert_eq!(cpu_quota(1.5).unwrap(), 150_000);
        assert_eq!(cpu_quota(0.001).unwrap(), 1000);
        assert!(cpu_quota(0.0).is_err());
        assert!(cpu_quota(f64::NAN).is_err());
        assert!(cpu_quota(-1.0).is_err());
    }

    #[test]
    fn read_key_parses_flat_keyed_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.events");
        fs::write(&p, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(read_key(&p, "oom_kill"), Some(2));
        assert_eq!(read_key(&p, "max"), Some(3));
        assert_eq!(read_key(&p, "nope"), None);
    }
}
