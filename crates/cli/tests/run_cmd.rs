//! Issue 5: `rbuild run` starts containers from local images in the sandbox.

mod common;
use common::*;

fn image(env: &Env) {
    let ctx = env.context(
        "img",
        &[(
            "Dockerfile",
            "FROM busybox\nENV GREETING=hello MODE=image\nWORKDIR /srv\nRUN echo base > /srv/state\nUSER app\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo \\\"$GREETING $MODE $(pwd) $(id -u):$(id -G | tr ' ' ,) $(cat /etc/hostname | wc -c)\\\"\"]\n",
        )],
    );
    env.build_ok(&["-t", "runimg:1", ctx.to_str().unwrap()]);
}

#[test]
fn run_uses_the_image_config_and_passes_the_exit_code() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    image(&env);
    let out = env.rbuild(&["run", "--rm", "runimg:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello image /srv 1000:1000,10 13");

    // Overrides: -e, -w, -u, and a command (the ENTRYPOINT stays).
    let out = env.rbuild(&[
        "run",
        "-e",
        "MODE=flag",
        "-w",
        "/tmp",
        "-u",
        "root",
        "runimg:1",
        "echo \"$MODE $(pwd) $(id -u)\"; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "flag /tmp 0");

    // --network none sees only lo.
    let out = env.rbuild(&[
        "run",
        "--network",
        "none",
        "runimg:1",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ]);
    assert_eq!(stdout(&out).trim(), "lo", "{}", stderr(&out));

    // A missing image is a clear error.
    let out = env.rbuild(&["run", "nosuchimage:1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nosuchimage"), "{}", stderr(&out));
}

#[test]
fn containers_never_change_the_image_and_run_at_once() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    image(&env);
    let before = mounts();
    // Four at once, each changing the rootfs.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let mut c = env.cmd();
            c.args(["run", "-u", "root", "runimg:1"]).arg(format!(
                "echo run{i} >> /srv/state; sleep 1; cat /srv/state | tr '\\n' ,"
            ));
            std::thread::spawn(move || c.output().unwrap())
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        // Each saw only the image's file plus its own write.
        assert_eq!(stdout(&out).trim(), format!("base,run{i},"));
    }
    let out = env.rbuild(&["run", "runimg:1", "cat /srv/state"]);
    assert_eq!(stdout(&out).trim(), "base", "a container changed the image");
    assert_eq!(mounts(), before, "mounts left on the host");
    let left: Vec<_> = std::fs::read_dir(env.root.join("mnt"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// `-i` passes stdin on; without it the container reads /dev/null, as with `docker run`. `-it`
/// without a terminal on stdin fails as docker does (before anything else, so no root needed).
#[test]
fn stdin_needs_i_and_it_needs_a_terminal() {
    use std::io::Write as _;
    use std::process::Stdio;
    let env = Env::empty();
    let out = env
        .cmd()
        .args(["run", "-it", "busybox", "sh"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out), "the input device is not a TTY\n");

    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    for (flags, expect) in [(&["-i"][..], "from stdin"), (&[][..], "")] {
        let mut child = env
            .cmd()
            .arg("run")
            .args(flags)
            .args(["busybox", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Without -i nothing reads it; a closed pipe is fine then.
        let _ = child.stdin.take().unwrap().write_all(b"from stdin\n");
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{flags:?}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), expect, "{flags:?}");
    }
}

/// `rbuild run -it busybox sh` on a terminal: the shell gets a terminal of the container's own
/// (`/dev/pts/0`, as under docker) of our window size, runs what is typed, passes its exit
/// status through, and our terminal's settings are the same afterwards (it was raw meanwhile).
#[test]
fn run_it_gives_the_container_a_terminal() {
    if !require_root(&["setsid", "stty"]) {
        return;
    }
    let env = Env::with_busybox();
    let mut cmd = std::process::Command::new("setsid");
    cmd.env("RBUILD_ROOT", &env.root)
        .args(["--ctty", "--wait", "sh", "-c"])
        .arg(
            r#"stty rows 33 cols 101; stty -a > "$1/before"
"$0" run -it busybox sh; echo "status=$?"; stty -a > "$1/after""#,
        )
        .arg(rbuild_bin())
        .arg(env.tmp.path());
    let (st, shown) = run_on_pty(cmd, &[("/ # ", "tty; echo $((6*7)); stty size; exit 3")]);
    assert!(st.success(), "{shown}");
    let after_prompt = shown.split("/ # ").nth(1).unwrap();
    // Raw: what we type is echoed once, by the container's terminal, not by ours as well.
    assert_eq!(after_prompt.matches("echo $((6*7))").count(), 1, "{shown}");
    for want in [
        "\r\n/dev/pts/0\r\n",
        "\r\n42\r\n",
        "\r\n33 101\r\n",
        "status=3\r\n",
    ] {
        assert!(after_prompt.contains(want), "no {want:?} in:\n{shown}");
    }
    let before = std::fs::read_to_string(env.path("before")).unwrap();
    let after = std::fs::read_to_string(env.path("after")).unwrap();
    assert!(
        before.contains(" icanon") && before.contains(" echo"),
        "{before}"
    );
    assert_eq!(before, after, "the terminal's settings changed");

    // SIGTERM while attached (once our terminal is raw): it is put back, the container
    // stopped, and rbuild exits 128 + 15.
    let mut cmd = std::process::Command::new("setsid");
    cmd.env("RBUILD_ROOT", &env.root)
        .args(["--ctty", "--wait", "sh", "-c"])
        .arg(
            r#"stty rows 33 cols 101; "$0" run -it busybox sleep 60 0</dev/tty & pid=$!
until stty -a | grep -q -- -icanon; do sleep 0.1; done
kill -TERM $pid; wait $pid; echo "status=$?"; stty -a > "$1/after""#,
        )
        .arg(rbuild_bin())
        .arg(env.tmp.path());
    let (st, shown) = run_on_pty(cmd, &[]);
    assert!(st.success(), "{shown}");
    assert!(shown.contains("status=143"), "{shown}");
    let after = std::fs::read_to_string(env.path("after")).unwrap();
    assert_eq!(before, after, "the terminal's settings changed");
}
