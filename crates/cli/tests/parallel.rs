//! Issue 4: parallel stages, `--jobs`, and cancellation (first failure, Ctrl-C). Overlap is read
//! from timestamps the steps themselves write (never from wall time); the only durations asserted
//! are generous hang guards.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Four independent stages each recording start and end time (from /proc/uptime: busybox date has no %N) around `sleep 1`, and a final stage
/// collecting the four records.
fn four_stages(marker: &str) -> String {
    let mut df = String::new();
    for i in 0..4 {
        df.push_str(&format!(
            "FROM busybox:latest AS s{i}\nRUN echo {marker}{i} > /m && cut -d' ' -f1 /proc/uptime > /t && sleep 1 && cut -d' ' -f1 /proc/uptime >> /t\n\n"
        ));
    }
    df.push_str("FROM busybox:latest\n");
    for i in 0..4 {
        df.push_str(&format!("COPY --from=s{i} /t /t{i}\n"));
    }
    df
}

/// Export the image's rootfs and read the four (start, end) intervals.
fn intervals(env: &Env, ctx: &std::path::Path, extra: &[&str]) -> Vec<(f64, f64)> {
    let out = env.path("rootfs");
    let _ = std::fs::remove_dir_all(&out);
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["-t", "par:latest", "--output", &dest];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    env.build_ok(&args);
    (0..4)
        .map(|i| {
            let text = std::fs::read_to_string(out.join(format!("t{i}"))).unwrap();
            let v: Vec<f64> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
            assert_eq!(v.len(), 2, "t{i}: {text:?}");
            (v[0], v[1])
        })
        .collect()
}

#[test]
fn independent_stages_overlap_and_jobs_1_serializes() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = env.context("ctx", &[("Dockerfile", &four_stages("a"))]);
    let iv = intervals(&env, &ctx, &[]);
    // All four were running at one moment: the latest start is before the earliest end.
    let latest_start = iv.iter().map(|i| i.0).fold(f64::MIN, f64::max);
    let earliest_end = iv.iter().map(|i| i.1).fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "the four stages did not all overlap: {iv:?}"
    );

    // --jobs 1: no two RUN steps overlap.
    std::fs::write(ctx.join("Dockerfile"), four_stages("b")).unwrap();
    let mut iv = intervals(&env, &ctx, &["--jobs", "1"]);
    iv.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    for w in iv.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "with --jobs 1 two steps overlapped: {iv:?}"
        );
    }
}

/// No mount of this store is left in our mount table and no process runs from it.
fn assert_clean(env: &Env) {
    let root = env.root.to_str().unwrap().to_string();
    let m = mounts();
    assert!(
        !m.contains(&root),
        "a mount of the store is left:\n{}",
        m.lines()
            .filter(|l| l.contains(&root))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // No leftover sandboxed `sleep 100`: every process whose root is in the store is gone.
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(r) = std::fs::read_link(p.path().join("root")) {
            assert!(
                !r.to_string_lossy().contains(&root),
                "process {} still runs in {}",
                p.file_name().to_string_lossy(),
                r.display()
            );
        }
    }
    // No partial blob left in ingest/.
    let ingest = env.root.join("ingest");
    if let Ok(d) = std::fs::read_dir(&ingest) {
        let left: Vec<_> = d.flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "partial blobs left in ingest/: {left:?}");
    }
}

#[test]
fn first_failure_cancels_the_others() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let df = "FROM busybox:latest AS slow\nRUN sleep 100\n\nFROM busybox:latest AS bad\nRUN sleep 0.3 && echo failing now && exit 3\n\nFROM busybox:latest\nCOPY --from=slow /etc/hostname /a\nCOPY --from=bad /etc/hostname /b\n";
    let ctx = env.context("ctx", &[("Dockerfile", df)]);
    let t0 = Instant::now();
    let out = env.rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    let took = t0.elapsed();
    let err = stderr(&out);
    assert!(!out.status.success(), "the build must fail:\n{err}");
    // Hang guard, not a timing assertion: `sleep 100` must have been killed.
    assert!(
        took < Duration::from_secs(60),
        "the slow stage was not cancelled ({took:?}):\n{err}"
    );
    assert!(
        err.contains("CANCELED"),
        "the slow step is reported cancelled:\n{err}"
    );
    assert!(
        err.contains("failing now"),
        "the failing step's output:\n{err}"
    );
    assert!(
        err.contains("exit code: 3"),
        "the failing step's status:\n{err}"
    );
    assert!(
        err.contains(":5"),
        "the failing step's Dockerfile line:\n{err}"
    );
    assert_clean(&env);
}

#[test]
fn sigint_cleans_up_and_fails() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let df = "FROM busybox:latest\nRUN echo started && sleep 100\n";
    let ctx = env.context("ctx", &[("Dockerfile", df)]);
    let mut child = KillOnDrop(
        env.cmd()
            .args(["build", "--progress=plain", ctx.to_str().unwrap()])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    // Wait until the RUN has printed (it is running in its sandbox), then Ctrl-C.
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
        {
            if line.ends_with(" started") {
                let _ = tx.send(None);
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(Some(all));
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the RUN never started");
    assert!(
        first.is_none(),
        "rbuild ended before the RUN started: {first:?}"
    );
    let t0 = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let mut status = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        panic!("rbuild did not exit within 60 s of SIGINT");
    };
    let log = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(all)) => break all,
            Ok(None) => continue,
            Err(_) => break String::new(),
        }
    };
    assert!(!status.success(), "Ctrl-C must exit non-zero:\n{log}");
    assert_clean(&env);
}

/// A child process killed and reaped whatever way the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
