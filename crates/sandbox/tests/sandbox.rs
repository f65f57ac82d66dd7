//! Integration tests: real namespaces, mounts and cgroups on a busybox rootfs. They need root
//! and skip (printing why) otherwise. Runs are serialized so the leftover checks (mounts,
//! cgroups, processes) see only their own run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rbuild_sandbox::{
    run, Cancel, ExitKind, InitError, Limits, Network, OutputStream, RunOutcome, RunSpec,
    SandboxError, SandboxMount,
};

static SERIAL: Mutex<()> = Mutex::new(());

struct Env {
    _guard: MutexGuard<'static, ()>,
    root: tempfile::TempDir,
    mountinfo: BTreeSet<String>,
}

fn mountinfo() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        // Mount ids differ between reads only if something changed; compare the whole line.
        .map(str::to_owned)
        .collect()
}

fn cgroup_leftovers() -> Vec<PathBuf> {
    let me = format!("{}-", std::process::id());
    let mut out = Vec::new();
    for base in [
        "/sys/fs/cgroup/rbuild",
        "/sys/fs/cgroup/memory/rbuild",
        "/sys/fs/cgroup/pids/rbuild",
        "/sys/fs/cgroup/cpu/rbuild",
    ] {
        if let Ok(rd) = std::fs::read_dir(base) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&me) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

/// A rootfs of busybox applets, `/etc/passwd` (root, app, nobody) and `/etc/group`.
fn busybox_rootfs() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\ntty:x:5:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    root
}

/// A busybox rootfs, or `None` (with the reason printed) when the tests cannot run here.
fn setup() -> Option<Env> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: sandbox integration tests need root");
        return None;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: /bin/busybox (busybox-static) is not installed");
        return None;
    }
    let root = busybox_rootfs();
    Some(Env {
        _guard: guard,
        root,
        mountinfo: mountinfo(),
    })
}

impl Env {
    fn spec(&self, script: &str) -> RunSpec {
        let mut s = RunSpec::new(
            self.root.path(),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        s.env = vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()];
        s.hostname = "sandboxtest".into();
        s.init_exe = Some(PathBuf::from(env!(
            "CARGO_BIN_EXE_rbuild-sandbox-test-init"
        )));
        s
    }

    fn run(&self, spec: &RunSpec) -> (Result<RunOutcome, SandboxError>, String, String) {
        self.run_with(spec, &Cancel::new())
    }

    fn run_with(
        &self,
        spec: &RunSpec,
        cancel: &Cancel,
    ) -> (Result<RunOutcome, SandboxError>, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let res = run(
            spec,
            &mut |s, b| match s {
                OutputStream::Stdout => out.extend_from_slice(b),
                OutputStream::Stderr => err.extend_from_slice(b),
            },
            cancel,
        );
        self.assert_clean();
        (
            res,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// Like `run_with`, checking host mounts against `baseline` instead of the state at setup.
    fn run_with_baseline(
        &self,
        spec: &RunSpec,
        baseline: &BTreeSet<String>,
    ) -> (Result<RunOutcome, SandboxError>, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let res = run(
            spec,
            &mut |s, b| match s {
                OutputStream::Stdout => out.extend_from_slice(b),
                OutputStream::Stderr => err.extend_from_slice(b),
            },
            &Cancel::new(),
        );
        assert_eq!(&mountinfo(), baseline, "host mounts changed");
        assert_eq!(
            cgroup_leftovers(),
            Vec::<PathBuf>::new(),
            "cgroups left behind"
        );
        (
            res,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// Run and expect exit 0; return stdout.
    fn ok(&self, spec: &RunSpec) -> String {
        let (res, out, err) = self.run(spec);
        let outcome =
            res.unwrap_or_else(|e| panic!("run failed: {e}\nstdout: {out}\nstderr: {err}"));
        assert_eq!(
            outcome.status,
            ExitKind::Exited(0),
            "stdout: {out}\nstderr: {err}"
        );
        out
    }

    fn assert_clean(&self) {
        assert_eq!(mountinfo(), self.mountinfo, "host mounts changed");
        assert_eq!(
            cgroup_leftovers(),
            Vec::<PathBuf>::new(),
            "cgroups left behind"
        );
        let r = self.root.path();
        for p in [
            "proc",
            "dev",
            "sys",
            "etc/hosts",
            "etc/resolv.conf",
            "etc/hostname",
        ] {
            assert!(
                std::fs::symlink_metadata(r.join(p)).is_err(),
                "mountpoint {p} left in the rootfs"
            );
        }
    }
}

fn host_processes_with(arg: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn exit_code_and_output_stream_through() {
    let Some(env) = setup() else { return };
    let (res, out, err) = env.run(&env.spec("echo out; echo err >&2; exit 7"));
    assert_eq!(res.unwrap().status, ExitKind::Exited(7));
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    let (res, _, _) = env.run(&env.spec("kill -9 $$"));
    assert_eq!(res.unwrap().status, ExitKind::Signaled(9));
    // Large output is streamed whole.
    let out = env.ok(&env.spec("dd if=/dev/zero bs=1024 count=2048 2>/dev/null | tr '\\0' x"));
    assert_eq!(out.len(), 2048 * 1024);
}

#[test]
fn pid_namespace_has_the_init_as_pid_1_and_no_host_process() {
    let Some(env) = setup() else { return };
    let out = env.ok(&env.spec("echo $$; ls /proc | grep -E '^[0-9]+$' | wc -l; ps -o pid,comm"));
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("2"),
        "the command is PID 1's child: {out}"
    );
    let count: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(
        count <= 6,
        "only the sandbox's own processes are visible: {out}"
    );
    assert!(out.contains("1 rbuild-sandbox"), "PID 1 is the init: {out}");
    // The init is not dumpable: /proc/1/exe (the rbuild binary) cannot be reached.
    let (res, _, _) = env.run(&env.spec("cat /proc/1/exe > /dev/null"));
    assert_ne!(res.unwrap().status, ExitKind::Exited(0));
    let (res, _, _) = env.run(&env.spec("ls /proc/1/root/ > /dev/null"));
    assert_ne!(res.unwrap().status, ExitKind::Exited(0));
}

#[test]
fn hostname_and_etc_files() {
    let Some(env) = setup() else { return };
    let mut spec = env.spec(
        "hostname; cat /etc/hostname; cat /etc/hosts; test -s /etc/resolv.conf && echo resolv",
    );
    spec.etc_hostname = true;
    let out = env.ok(&spec);
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_ne!(host, "sandboxtest");
    assert!(
        out.starts_with("sandboxtest\nsandboxtest\n127.0.0.1\tlocalhost sandboxtest\n"),
        "{out}"
    );
    assert!(out.ends_with("resolv\n"), "{out}");
}

#[test]
fn host_filesystem_is_invisible() {
    let Some(env) = setup() else { return };
    let out = env.ok(&env.spec(
        "test -e /work && echo work; test -e /usr/bin/cargo && echo cargo; cat /proc/self/mountinfo | wc -l; ls /",
    ));
    assert!(!out.contains("work\n") && !out.contains("cargo\n"), "{out}");
    let mut lines = out.lines();
    let mounts: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(mounts < 30, "only the sandbox's mounts: {out}");
}

#[test]
fn capabilities_no_new_privs_and_fds() {
    let Some(env) = setup() else { return };
    let out = env
        .ok(&env
            .spec("grep -E '^(CapBnd|CapEff|CapPrm|CapInh|CapAmb|NoNewPrivs)' /proc/self/status"));
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");

    let out = env.ok(&env.spec("ls /proc/self/fd"));
    let fds: BTreeSet<u32> = out.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert!(
        fds.is_subset(&[0, 1, 2, 3].into()) && fds.contains(&2),
        "only stdio (+ ls's own dir fd): {out}"
    );
    // No fd, and no cwd, points at a host directory.
    let out = env.ok(&env.spec("readlink /proc/self/cwd; readlink /proc/1/cwd 2>&1; ls -l /proc/self/fd/ | grep -v pipe | grep -v null | grep -- '->' || true"));
    assert!(out.starts_with("/\n"), "{out}");

    let mut s = env.spec("grep -E '^(CapBnd|CapEff)' /proc/self/status");
    s.insecure = true;
    let out = env.ok(&s);
    assert!(
        !out.contains("a80425fb"),
        "insecure keeps all capabilities: {out}"
    );
}

#[test]
fn non_root_user_and_groups() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("id -u; id -g; id -G; grep -E '^CapEff' /proc/self/status; touch /x 2>/dev/null && echo wrote; true");
    let root = rbuild_fileop::Root::open(env.root.path()).unwrap();
    let user = rbuild_fileop::resolve_user(&root, "app").unwrap();
    s.uid = user.uid;
    s.gid = user.gid;
    s.additional_gids = user.additional_gids;
    let out = env.ok(&s);
    assert_eq!(out, "1000\n1000\n1000 10\nCapEff:\t0000000000000000\n");
}

#[test]
fn cwd_is_created_inside_the_rootfs_and_owned_by_the_user() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("pwd; touch file");
    s.cwd = "/home/app/../app/work".into();
    s.uid = 1000;
    s.gid = 1000;
    let out = env.ok(&s);
    assert_eq!(out, "/home/app/work\n");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(env.root.path().join("home/app/work")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert!(env.root.path().join("home/app/work/file").exists());

    // A symlink to a host path is re-rooted, never followed onto the host.
    let host = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(host.path(), env.root.path().join("escape")).unwrap();
    let mut s = env.spec("pwd");
    s.cwd = "/escape/sub".into();
    let (res, _, _) = env.run(&s);
    assert!(
        matches!(res, Err(SandboxError::RootfsPath { .. })),
        "{res:?}"
    );
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0);

    // A cwd that is a file is a typed error from inside.
    std::fs::write(env.root.path().join("afile"), b"").unwrap();
    let mut s = env.spec("pwd");
    s.cwd = "/afile".into();
    let (res, _, _) = env.run(&s);
    assert!(
        matches!(res, Err(SandboxError::Init(InitError::Cwd { .. }))),
        "{res:?}"
    );
}

#[test]
fn exec_not_found_is_a_typed_error_and_uses_the_image_path() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("");
    s.args = vec!["no-such-tool".into()];
    let (res, _, _) = env.run(&s);
    match res {
        Err(SandboxError::Init(e @ InitError::ExecNotFound { .. })) => {
            assert_eq!(
                e.to_string(),
                "exec: \"no-such-tool\": executable file not found in $PATH"
            );
        }
        other => panic!("{other:?}"),
    }
    // `cargo` exists on the host PATH, never in the image's.
    s.args = vec!["cargo".into()];
    let (res, _, _) = env.run(&s);
    assert!(
        matches!(res, Err(SandboxError::Init(InitError::ExecNotFound { .. }))),
        "{res:?}"
    );
    // A PATH without /bin: sh is not found even though it is in the rootfs.
    s.args = vec!["sh".into(), "-c".into(), "true".into()];
    s.env = vec!["PATH=/opt/none".into()];
    let (res, _, _) = env.run(&s);
    assert!(
        matches!(res, Err(SandboxError::Init(InitError::ExecNotFound { .. }))),
        "{res:?}"
    );
    s.env = vec![];
    assert_eq!(
        env.run(&s).0.unwrap().status,
        ExitKind::Exited(0),
        "Docker's default PATH applies"
    );
    // An explicit path that does not exist.
    s.args = vec!["/bin/nope".into()];
    let (res, _, _) = env.run(&s);
    assert!(
        matches!(res, Err(SandboxError::Init(InitError::Exec { .. }))),
        "{res:?}"
    );
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("ls /sys/class/net; cat /sys/class/net/lo/flags");
    s.network = Network::None;
    let out = env.ok(&s);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"), "{out}");
    let flags = u32::from_str_radix(lines.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up: {out}");
}

#[test]
fn dev_proc_and_sys_are_minimal_and_protected() {
    let Some(env) = setup() else { return };
    let out = env.ok(&env.spec(
        "ls /dev | tr '\\n' ' '; echo; echo x > /dev/null && echo null-ok; \
         head -c 4 /dev/urandom | wc -c; \
         cat /proc/keys /proc/timer_list /proc/kcore 2>/dev/null | wc -c; \
         (echo 1 > /proc/sysrq-trigger) 2>/dev/null || echo sysrq-ro; \
         (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null || echo procsys-ro; \
         touch /sys/x 2>/dev/null || echo sys-ro; \
         ls /sys/firmware | wc -l; \
         echo shm > /dev/shm/a && cat /dev/shm/a",
    ));
    let mut lines = out.lines();
    let dev: BTreeSet<&str> = lines.next().unwrap().split_whitespace().collect();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
        "stdout", "stderr",
    ] {
        assert!(dev.contains(d), "/dev/{d} missing: {out}");
    }
    assert!(
        !dev.iter()
            .any(|d| d.starts_with("sd") || d.starts_with("nvme") || *d == "mem" || *d == "kmsg"),
        "{out}"
    );
    let rest: Vec<&str> = lines.collect();
    assert_eq!(
        rest,
        [
            "null-ok",
            "4",
            "0",
            "sysrq-ro",
            "procsys-ro",
            "sys-ro",
            "0",
            "shm"
        ],
        "{out}"
    );
}

#[test]
fn bind_and_tmpfs_mounts_and_their_mountpoints_are_removed() {
    let Some(env) = setup() else { return };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("data"), b"hello").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut s = env.spec("cat /mnt/in/data; (echo x > /mnt/in/new) 2>/dev/null || echo ro; echo out > /mnt/out/f; echo t > /scratch/t && cat /scratch/t");
    s.mounts = vec![
        SandboxMount::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
        },
        SandboxMount::Bind {
            source: host.path().into(),
            target: "/mnt/in".into(),
            readonly: true,
        },
        SandboxMount::Bind {
            source: rw.path().into(),
            target: "/mnt/out".into(),
            readonly: false,
        },
    ];
    let out = env.ok(&s);
    assert_eq!(out, "helloro\nt\n");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("f")).unwrap(),
        "out\n"
    );
    assert!(!host.path().join("new").exists());
    for p in ["scratch", "mnt"] {
        assert!(!env.root.path().join(p).exists(), "{p} left in rootfs");
    }
}

#[test]
fn cancel_kills_everything_quickly() {
    let Some(env) = setup() else { return };
    let cancel = Cancel::new();
    let c2 = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        c2.cancel();
    });
    let start = Instant::now();
    let (res, _, _) = env.run_with(&env.spec("sleep 1000 & sleep 1001; echo never"), &cancel);
    t.join().unwrap();
    assert!(matches!(res, Err(SandboxError::Cancelled)), "{res:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(host_processes_with("1000"), 0, "sleep 1000 survived");
    assert_eq!(host_processes_with("1001"), 0, "sleep 1001 survived");
    // An already-cancelled token does not start anything.
    let (res, _, _) = env.run_with(&env.spec("true"), &cancel);
    assert!(matches!(res, Err(SandboxError::Cancelled)));
}

#[test]
fn timeout_kills_everything() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("sleep 1002");
    s.timeout = Some(Duration::from_millis(300));
    let start = Instant::now();
    let (res, _, _) = env.run(&s);
    assert!(matches!(res, Err(SandboxError::TimedOut { .. })), "{res:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(host_processes_with("1002"), 0);
}

#[test]
fn background_processes_die_with_the_command() {
    let Some(env) = setup() else { return };
    let start = Instant::now();
    let out = env.ok(&env.spec("sleep 1003 & echo started"));
    assert_eq!(out, "started\n");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(host_processes_with("1003"), 0);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("bomb() { bomb | bomb & }; bomb; sleep 2; echo survived");
    s.limits = Limits {
        pids: Some(32),
        ..Limits::default()
    };
    s.timeout = Some(Duration::from_secs(60));
    let (res, out, _) = env.run(&s);
    let outcome = res.unwrap();
    assert!(outcome.pids_limit_hit, "{outcome:?} {out}");
}

#[test]
fn memory_limit_gives_oom_killed() {
    let Some(env) = setup() else { return };
    let mut s = env
        .spec("dd if=/dev/zero bs=1M count=1024 2>/dev/null | tr '\\0' x | (x=$(cat); echo ${#x})");
    s.limits = Limits {
        memory: Some(64 << 20),
        ..Limits::default()
    };
    s.timeout = Some(Duration::from_secs(120));
    let (res, out, err) = env.run(&s);
    assert_eq!(
        res.unwrap().status,
        ExitKind::OomKilled,
        "stdout: {out} stderr: {err}"
    );
}

#[test]
fn cpu_limit_is_applied() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || true");
    s.limits = Limits {
        cpus: Some(0.5),
        ..Limits::default()
    };
    let (res, _, err) = env.run(&s);
    assert_eq!(res.unwrap().status, ExitKind::Exited(0), "{err}");
}

#[test]
fn concurrent_runs_do_not_leak_into_each_other() {
    let Some(env) = setup() else { return };
    let roots: Vec<tempfile::TempDir> = (0..4).map(|_| busybox_rootfs()).collect();
    let specs: Vec<RunSpec> = (0..4)
        .map(|i| {
            // One rootfs per run, as the solver gives each step its own.
            let mut s = env.spec("ls /proc/self/fd | tr '\\n' ' '; hostname; sleep 0.2");
            s.rootfs = roots[i].path().to_owned();
            s.hostname = format!("box{i}");
            s.limits = Limits {
                pids: Some(64),
                ..Limits::default()
            };
            s
        })
        .collect();
    let outs: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .map(|s| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let res = run(s, &mut |_, b| out.extend_from_slice(b), &Cancel::new()).unwrap();
                    assert_eq!(res.status, ExitKind::Exited(0));
                    String::from_utf8(out).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out, &format!("0 1 2 3 box{i}\n"));
        for p in ["proc", "dev", "sys", "etc/hosts"] {
            assert!(!roots[i].path().join(p).exists(), "{p} left in rootfs {i}");
        }
    }
    env.assert_clean();
}

#[test]
fn missing_controller_or_bad_limit_is_an_error() {
    let Some(env) = setup() else { return };
    let mut s = env.spec("true");
    s.limits = Limits {
        cpus: Some(-1.0),
        ..Limits::default()
    };
    let (res, _, _) = env.run(&s);
    assert!(
        matches!(res, Err(SandboxError::InvalidSpec { .. })),
        "{res:?}"
    );
    let mut s = env.spec("true");
    s.rootfs = "relative/root".into();
    assert!(matches!(
        env.run(&s).0,
        Err(SandboxError::InvalidSpec { .. })
    ));
}

#[test]
fn overlay_rootfs_upper_dir_gets_only_the_commands_changes() {
    let Some(env) = setup() else { return };
    let dirs = tempfile::tempdir().unwrap();
    let (upper, work, merged) = (
        dirs.path().join("upper"),
        dirs.path().join("work"),
        dirs.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        env.root.path().display(),
        upper.display(),
        work.display()
    );
    if let Err(e) = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    ) {
        eprintln!("SKIP: cannot mount overlay: {e}");
        return;
    }
    let before = mountinfo();
    let mut s = env.spec("echo hi > /tmp/new; cat /etc/hosts > /dev/null");
    s.rootfs = merged.clone();
    s.cwd = "/app".into();
    let (res, out, err) = env.run_with_baseline(&s, &before);
    let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
    assert_eq!(res.unwrap().status, ExitKind::Exited(0), "{out} {err}");
    let mut entries: Vec<String> = Vec::new();
    for e in walk(&upper) {
        entries.push(
            e.strip_prefix(&upper)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    entries.sort();
    // Creating /etc/hosts copied /etc up; overlay cannot undo a copy-up, but the directory is
    // left empty and with the lower directory's times, so a metadata-comparing diff skips it.
    assert_eq!(entries, ["app", "etc", "tmp", "tmp/new"]);
    use std::os::unix::fs::MetadataExt;
    let (lo, up) = (
        std::fs::metadata(env.root.path().join("etc")).unwrap(),
        std::fs::metadata(upper.join("etc")).unwrap(),
    );
    assert_eq!(
        (lo.mtime(), lo.mtime_nsec(), lo.mode()),
        (up.mtime(), up.mtime_nsec(), up.mode())
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// Copy the syscall probe and the shared libraries `ldd` says it loads into the rootfs (same
/// paths), so it runs there like on the host. Returns its path inside the rootfs.
fn install_probe(root: &Path) -> &'static str {
    let exe = env!("CARGO_BIN_EXE_rbuild-sandbox-syscall-probe");
    let ldd = std::process::Command::new("ldd").arg(exe).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = line.rsplit("=>").next().unwrap().split_whitespace().next();
        if let Some(lib) = path.filter(|p| p.starts_with('/')) {
            let dst = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dst).unwrap();
        }
    }
    std::fs::copy(exe, root.join("bin/probe")).unwrap();
    "/bin/probe"
}

/// `NAME=RESULT` lines of the probe (and `Key:\tvalue` lines of /proc/self/status) as a map.
fn probe_results(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            l.split_once('=')
                .or_else(|| l.split_once(":\t"))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn seccomp_default_profile_denies_with_eperm() {
    let Some(env) = setup() else { return };
    let probe = install_probe(env.root.path());
    // (probe, result under the filter). Several would fail without it too (no capability), but
    // differently or not at all for the ones marked *.
    let mut expect: Vec<(&str, &str)> = vec![
        ("getpid", "ok"),
        ("unshare_user", "EPERM"), // *
        ("clone_plain", "ok"),
        ("clone_newuser", "EPERM"), // *
        ("clone3", "ENOSYS"),       // *
        ("setns", "EPERM"),         // * EBADF
        ("keyctl", "EPERM"),        // *
        ("add_key", "EPERM"),       // *
        ("request_key", "EPERM"),   // * ENOKEY
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("userfaultfd", "EPERM"), // *
        ("personality_query", "ok"),
        ("personality_no_randomize", "ok"),
        ("personality_read_implies_exec", "EPERM"), // *
        ("socket_inet", "ok"),
        ("socket_vsock", "EPERM"),
        ("clock_settime", "EPERM"), // * EINVAL
        ("adjtimex", "ok"),
        ("reboot", "EPERM"),
        ("swapon", "EPERM"),
        ("init_module", "EPERM"),
        ("mount", "EPERM"),
        ("fsopen", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("ptrace_traceme", "ok"),
        ("chroot", "ok"),
        ("quotactl", "EPERM"),
        ("cachestat", "ENOSYS"), // newer than the profile
        ("unknown_1000", "ENOSYS"),
    ];
    if cfg!(target_arch = "x86_64") {
        expect.extend([
            ("iopl0", "EPERM"),      // *
            ("ioperm_off", "EPERM"), // *
            ("sysfs", "EPERM"),      // *
            ("x32_getpid", "EPERM"),
        ]);
    }
    // The same probes through the i386 ABI (`int 0x80` with i386 numbers): 32-bit programs get
    // the same answers (Docker's profile covers x86 as a sub-architecture of x86-64), and
    // socketcall(2), which older i386 libcs use for every socket call, is allowed.
    let i386: Vec<(String, &str)> = if cfg!(target_arch = "x86_64") {
        expect
            .iter()
            .filter(|(n, _)| *n != "x32_getpid")
            .map(|(n, want)| (format!("i386:{n}"), *want))
            .chain([("i386:socketcall_inet".to_owned(), "ok")])
            .collect()
    } else {
        Vec::new()
    };
    let names: Vec<&str> = expect
        .iter()
        .map(|(n, _)| *n)
        .chain(i386.iter().map(|(n, _)| n.as_str()))
        .collect();
    let script = format!(
        "grep -E '^Seccomp' /proc/self/status; {probe} {} name_to_handle_at{}",
        names.join(" "),
        if i386.is_empty() {
            ""
        } else {
            " i386:name_to_handle_at"
        }
    );
    let got = probe_results(&env.ok(&env.spec(&script)));
    assert_eq!(got["Seccomp"], "2", "{got:?}");
    assert_eq!(got["Seccomp_filters"], "1", "{got:?}");
    for (name, want) in &expect {
        assert_eq!(got[*name], *want, "{name}: {got:?}");
    }
    let i386_ok = !i386.is_empty() && i386_runs(&got);
    if i386_ok {
        for (name, want) in &i386 {
            assert_eq!(got[name], *want, "{name}: {got:?}");
        }
    }
    // Allowed by Docker's profile; the kernel answers (EOVERFLOW: the handle buffer is empty).
    assert_ne!(got["name_to_handle_at"], "EPERM");
    if i386_ok {
        assert_eq!(got["i386:name_to_handle_at"], got["name_to_handle_at"]);
    }

    // A non-root user gets the same filter (installable thanks to no_new_privs).
    let mut s = env.spec(&format!("{probe} unshare_user keyctl getpid"));
    s.uid = 1000;
    s.gid = 1000;
    let got = probe_results(&env.ok(&s));
    assert_eq!(
        (&*got["unshare_user"], &*got["keyctl"], &*got["getpid"]),
        ("EPERM", "EPERM", "ok")
    );

    // --security=insecure: no filter. Only probes that are harmless with every capability.
    let mut s = env.spec(&format!(
        "grep -E '^Seccomp:' /proc/self/status; {probe} unshare_user clone_newuser clone3 setns keyctl personality_read_implies_exec clock_settime"
    ));
    s.insecure = true;
    let got = probe_results(&env.ok(&s));
    assert_eq!(got["Seccomp"], "0", "{got:?}");
    let unfiltered = [
        ("unshare_user", "ok"),
        ("clone_newuser", "ok"),
        ("clone3", "EINVAL"),
        ("setns", "EBADF"),
        ("keyctl", "ok"),
        ("personality_read_implies_exec", "ok"),
        ("clock_settime", "EINVAL"),
    ];
    for (name, want) in unfiltered {
        assert_eq!(got[name], want, "{name} without the filter: {got:?}");
    }
    // The i386 probes reach the kernel with the arguments the native ones pass: without the
    // filter they get the kernel's own answers, not the filter's.
    if i386_ok {
        let names: Vec<String> = unfiltered
            .iter()
            .map(|(n, _)| format!("i386:{n}"))
            .collect();
        let mut s = env.spec(&format!("{probe} {}", names.join(" ")));
        s.insecure = true;
        let got = probe_results(&env.ok(&s));
        for (name, want) in unfiltered {
            assert_eq!(got[&format!("i386:{name}")], want, "{name}: {got:?}");
        }
    }
}

/// Whether the kernel ran the probe's `i386:getpid` (a kernel without IA-32 emulation kills
/// `int 0x80` with SIGSEGV before seccomp sees it; the i386 checks are skipped then).
fn i386_runs(got: &std::collections::BTreeMap<String, String>) -> bool {
    match got.get("i386:getpid").map(String::as_str) {
        Some("ok") => true,
        Some("SIGSEGV") => {
            eprintln!("SKIP: i386 probes: the kernel has no IA-32 emulation (int 0x80 is SIGSEGV)");
            false
        }
        other => panic!("i386:getpid={other:?}: {got:?}"),
    }
}

/// A static 32-bit x86 program (ELF32, no libc): writes `hello from i386` through `int 0x80`,
/// tries `unshare(CLONE_NEWUSER)` and exits with the errno it got (0 on success).
fn i386_program() -> Vec<u8> {
    const BASE: u32 = 0x0804_8000;
    const HEADERS: u32 = 52 + 32;
    let msg = b"hello from i386\n";
    let mut code: Vec<u8> = Vec::new();
    let mov = |code: &mut Vec<u8>, opcode: u8, imm: u32| {
        code.push(opcode);
        code.extend(imm.to_le_bytes());
    };
    let (eax, ebx, ecx, edx, int80) = (0xb8, 0xbb, 0xb9, 0xba, [0xcd, 0x80]);
    // write(1, msg, len): the message follows the 45 bytes of code.
    mov(&mut code, eax, 4);
    mov(&mut code, ebx, 1);
    mov(&mut code, ecx, BASE + HEADERS + 45);
    mov(&mut code, edx, msg.len() as u32);
    code.extend(int80);
    // unshare(CLONE_NEWUSER), then exit_group(-result).
    mov(&mut code, eax, 310);
    mov(&mut code, ebx, libc::CLONE_NEWUSER as u32);
    code.extend(int80);
    code.extend([0xf7, 0xd8, 0x89, 0xc3]); // neg eax; mov ebx, eax
    mov(&mut code, eax, 252);
    code.extend(int80);
    assert_eq!(code.len(), 45);
    let size = HEADERS + 45 + msg.len() as u32;
    let mut elf = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let (u16s, u32s) = (
        |elf: &mut Vec<u8>, v: &[u16]| v.iter().for_each(|x| elf.extend(x.to_le_bytes())),
        |elf: &mut Vec<u8>, v: &[u32]| v.iter().for_each(|x| elf.extend(x.to_le_bytes())),
    );
    u16s(&mut elf, &[2, 3]); // ET_EXEC, EM_386
    u32s(&mut elf, &[1, BASE + HEADERS, 52, 0, 0]); // version, entry, phoff, shoff, flags
    u16s(&mut elf, &[52, 32, 1, 0, 0, 0]); // ehsize, phentsize, phnum, no sections
                                           // One PT_LOAD of the whole file, read + execute.
    u32s(&mut elf, &[1, 0, BASE, BASE, size, size, 5, 0x1000]);
    elf.extend(code);
    elf.extend(msg);
    assert_eq!(elf.len() as u32, size);
    elf
}

#[test]
fn a_32_bit_program_runs_under_the_filter() {
    let Some(env) = setup() else { return };
    let path = env.root.path().join("bin/hello32");
    std::fs::write(&path, i386_program()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    // On the host first: a kernel without IA-32 emulation cannot execute it at all.
    match std::process::Command::new(&path).output() {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            eprintln!("SKIP: the kernel cannot run 32-bit x86 programs (no IA-32 emulation)");
            return;
        }
        Err(e) => panic!("{}: {e}", path.display()),
        Ok(out) => assert_eq!(out.stdout, b"hello from i386\n"),
    }
    // Under the filter its syscalls are answered by the i386 table: write and exit_group are
    // allowed, unshare is EPERM (1), as under Docker.
    let out = env.ok(&env.spec("/bin/hello32; echo status=$?"));
    assert_eq!(out, "hello from i386\nstatus=1\n");
    // Without the filter the kernel allows the unshare (every capability is kept).
    let mut s = env.spec("/bin/hello32; echo status=$?");
    s.insecure = true;
    assert_eq!(env.ok(&s), "hello from i386\nstatus=0\n");
}

#[test]
fn ordinary_commands_work_under_the_filter() {
    let Some(env) = setup() else { return };
    // Shell, coreutils, archives, threads of busybox, a local HTTP server and client.
    let mut s = env.spec(
        "set -e; mkdir -p /tmp/www/d; echo hello > /tmp/www/d/f; cp -a /tmp/www /tmp/copy; \
         tar -C /tmp -cf /tmp/a.tar copy; tar -tf /tmp/a.tar | sort | tr '\\n' ' '; \
         ls /tmp/copy/d; chmod 600 /tmp/copy/d/f; ln -s f /tmp/copy/d/l; cat /tmp/copy/d/l; \
         httpd -p 127.0.0.1:8080 -h /tmp/www; wget -q -O - http://127.0.0.1:8080/d/f; \
         sleep 0.1 & wait; unshare -U true 2>/dev/null && echo unshared || echo refused",
    );
    s.network = Network::None;
    let out = env.ok(&s);
    assert_eq!(out, "copy/ copy/d/ copy/d/f f\nhello\nhello\nrefused\n");
}

/// A TCP listener on the host counting the connections it accepts.
struct HostListener {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn host_listener(addr: &str) -> HostListener {
    let l = std::net::TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            if c.is_ok() {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    HostListener { port, accepted }
}

impl HostListener {
    fn count(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The private network needs a user-mode stack; `None` (with the reason) when none is here.
fn stack_or_skip() -> Option<rbuild_sandbox::NetStack> {
    match rbuild_sandbox::choose_stack() {
        Ok((s, _)) => Some(s),
        Err(e) => {
            eprintln!("SKIP: {e}");
            None
        }
    }
}

/// The host's addresses (all interfaces, loopback included), from `ip`-less /proc parsing is not
/// portable; ask the kernel through a UDP socket per interface address instead.
fn host_ipv4_addresses() -> Vec<String> {
    let out = std::process::Command::new("/bin/busybox")
        .args(["ip", "-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet")?;
            Some(w.next()?.split('/').next()?.to_owned())
        })
        .collect()
}

/// Run `f` once per installed stack (forced through `RBUILD_NET_STACK`; the tests are serial).
fn for_each_stack(mut f: impl FnMut(rbuild_sandbox::NetStack)) {
    let mut ran = 0;
    for name in ["pasta", "slirp4netns"] {
        std::env::set_var(rbuild_sandbox::STACK_ENV, name);
        match rbuild_sandbox::choose_stack() {
            Ok((stack, _)) => {
                f(stack);
                ran += 1;
            }
            Err(e) => eprintln!("SKIP ({name}): {e}"),
        }
        std::env::remove_var(rbuild_sandbox::STACK_ENV);
    }
    if ran == 0 {
        eprintln!("SKIP: no user-mode network stack installed");
    }
}

#[test]
fn private_network_cannot_reach_the_hosts_loopback_or_addresses() {
    let Some(env) = setup() else { return };
    for_each_stack(|stack| reach_probe(&env, stack));
}

fn reach_probe(env: &Env, stack: rbuild_sandbox::NetStack) {
    let lo = host_listener("127.0.0.1");
    let any = host_listener("0.0.0.0");
    // The listeners work from the host.
    std::net::TcpStream::connect(("127.0.0.1", lo.port)).unwrap();
    let addrs = host_ipv4_addresses();
    assert!(addrs.iter().any(|a| a == "127.0.0.1"), "{addrs:?}");
    for a in &addrs {
        std::net::TcpStream::connect((a.as_str(), any.port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let (lo0, any0) = (lo.count(), any.count());
    assert_eq!((lo0, any0), (1, addrs.len()));

    let mut script = String::new();
    for (a, port) in addrs.iter().map(|a| (a.as_str(), any.port)).chain([
        ("127.0.0.1", lo.port),
        ("10.0.2.2", lo.port),
        ("10.0.2.2", any.port),
    ]) {
        script.push_str(&format!(
            "if echo x | timeout 5 nc -w 2 {a} {port} -e true >/dev/null 2>&1; then echo REACHED {a}:{port}; else echo refused {a}:{port}; fi\n"
        ));
    }
    let mut s = env.spec(&script);
    s.network = Network::Private;
    let out = env.ok(&s);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!out.contains("REACHED"), "{stack}: {out}");
    assert_eq!(
        (lo.count(), any.count()),
        (lo0, any0),
        "{stack}: a RUN reached a host listener: {out}"
    );
}

#[test]
fn private_network_has_lo_and_one_tap_and_dns_outbound_work() {
    let Some(env) = setup() else { return };
    let Some(stack) = stack_or_skip() else { return };
    let mut s = env.spec("ls /sys/class/net; cat /etc/resolv.conf");
    s.network = Network::Private;
    let out = env.ok(&s);
    let ifaces: Vec<&str> = out.lines().take_while(|l| !l.contains(' ')).collect();
    assert_eq!(ifaces, ["lo", "tap0"], "{stack}: {out}");
    assert!(
        out.contains(&format!("nameserver {}", stack.nameserver())),
        "{stack}: {out}"
    );
    // Outside: Debian's mirror, when this machine reaches it at all.
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&("deb.debian.org", 80))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok());
    if !reachable {
        eprintln!("SKIP (outbound part): deb.debian.org:80 is not reachable from this host");
        return;
    }
    let mut s = env.spec(
        "nslookup deb.debian.org >/dev/null && (printf 'HEAD /debian/ HTTP/1.1\\r\\nHost: deb.debian.org\\r\\nConnection: close\\r\\n\\r\\n'; sleep 3) | timeout 20 nc deb.debian.org 80 | head -1",
    );
    s.network = Network::Private;
    let out = env.ok(&s);
    assert!(out.starts_with("HTTP/1."), "{stack}: {out}");
}

#[test]
fn private_network_works_with_each_installed_stack() {
    let Some(env) = setup() else { return };
    for name in ["pasta", "slirp4netns"] {
        std::env::set_var(rbuild_sandbox::STACK_ENV, name);
        let chosen = rbuild_sandbox::choose_stack();
        let Ok((stack, _)) = chosen else {
            eprintln!("SKIP ({name}): {}", chosen.unwrap_err());
            continue;
        };
        let lo = host_listener("127.0.0.1");
        let mut s = env.spec(&format!(
            "ls /sys/class/net | tr '\\n' ' '; timeout 5 nc -w 2 127.0.0.1 {} -e true </dev/null && echo REACHED; true",
            lo.port
        ));
        s.network = Network::Private;
        let out = env.ok(&s);
        assert_eq!(out.trim(), "lo tap0", "{stack}");
        assert_eq!(lo.count(), 0, "{stack}");
    }
    std::env::remove_var(rbuild_sandbox::STACK_ENV);
    std::env::set_var(rbuild_sandbox::STACK_ENV, "nonesuch");
    let mut s = env.spec("true");
    s.network = Network::Private;
    let (res, _, _) = env.run(&s);
    std::env::remove_var(rbuild_sandbox::STACK_ENV);
    let e = res.unwrap_err().to_string();
    assert!(e.contains("expected pasta or slirp4netns"), "{e}");
}
