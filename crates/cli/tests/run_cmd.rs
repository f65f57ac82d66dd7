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
