//! `rbuild login` / `rbuild logout` against a real registry (docker-registry with htpasswd): the
//! prompts on a terminal (a pty; the password is not echoed), `--password-stdin`, `-p` with docker's
//! warning, a clear error without a terminal, the recorded credentials tried first, a real
//! credential helper by docker's protocol (`store`/`get`/`erase`), and no secret in output, trace
//! logs, config.json (with a helper) or the store.

mod common;
mod common_registry;

use common::{require_root, run_on_pty, stderr, Env};
use common_registry::{have_registry, Registry};
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "right horse 42";

fn setup() -> Option<Registry> {
    if !require_root(&["htpasswd"]) || !have_registry() {
        return None;
    }
    Some(Registry::start(Some(("alice", PASSWORD))))
}

fn rbuild(env: &Env) -> Command {
    let mut c = env.cmd();
    c.env("DOCKER_CONFIG", env.path("docker"));
    c
}

/// Run rbuild with `stdin` as its standard input.
fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running rbuild");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn config(env: &Env) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(env.path("docker/config.json")).unwrap()).unwrap()
}

fn basic(user: &str, pass: &str) -> String {
    use base64_encode as b;
    b(format!("{user}:{pass}").as_bytes())
}

/// Standard base64 (the test crate does not depend on a base64 crate).
fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn login_asks_on_a_terminal_without_echoing_the_password() {
    let Some(reg) = setup() else { return };
    let env = Env::empty();
    std::fs::create_dir_all(env.path("docker")).unwrap();

    let mut cmd = rbuild(&env);
    cmd.args(["login", &reg.host]);
    let (st, shown) = run_on_pty(cmd, &[("Username: ", "alice"), ("Password: ", PASSWORD)]);
    assert!(st.success(), "{shown}");
    assert!(shown.contains("Login Succeeded"), "{shown}");
    assert!(shown.contains("alice"), "the user name is echoed: {shown}");
    assert!(
        !shown.contains(PASSWORD),
        "the password was echoed: {shown}"
    );
    assert_eq!(
        config(&env)["auths"][&reg.host]["auth"],
        basic("alice", PASSWORD)
    );

    // Recorded credentials that no longer work are tried first; then the recorded user is offered
    // and an empty answer takes it.
    std::fs::write(
        env.path("docker/config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host,
            basic("alice", "stale")
        ),
    )
    .unwrap();
    let mut cmd = rbuild(&env);
    cmd.args(["login", &reg.host]);
    let (st, shown) = run_on_pty(cmd, &[("Username (alice): ", ""), ("Password: ", PASSWORD)]);
    assert!(st.success(), "{shown}");
    assert!(shown.contains("did not succeed"), "{shown}");
    assert!(
        !shown.contains(PASSWORD) && !shown.contains("stale"),
        "{shown}"
    );
    assert_eq!(
        config(&env)["auths"][&reg.host]["auth"],
        basic("alice", PASSWORD)
    );

    // Recorded credentials that work: no question at all, even without a terminal.
    let out = rbuild(&env)
        .args(["login", &reg.host])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Authenticating with existing credentials") && err.contains("Login Succeeded"),
        "{err}"
    );
}

#[test]
fn password_stdin_password_flag_and_no_terminal() {
    let Some(reg) = setup() else { return };
    let env = Env::with_busybox();
    std::fs::create_dir_all(env.path("docker")).unwrap();
    let cfg = env.path("docker/config.json");

    // No terminal and nothing given: a clear error, nothing written.
    let out = rbuild(&env)
        .args(["login", &reg.host])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not a terminal") && err.contains("--password-stdin"),
        "{err}"
    );
    assert!(!cfg.exists());
    let out = run_with_stdin(
        {
            let mut c = rbuild(&env);
            c.args(["login", "--password-stdin", &reg.host]);
            c
        },
        PASSWORD,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("-u/--username"), "{}", stderr(&out));

    // A wrong password: refused by the registry, not shown, nothing written.
    let mut c = rbuild(&env);
    c.env("RBUILD_LOG", "trace")
        .args(["login", "-u", "alice", "--password-stdin", &reg.host]);
    let out = run_with_stdin(c, "wrong-secret-7\n");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(&reg.host) && err.contains("401"), "{err}");
    assert!(!err.contains("wrong-secret-7"), "{err}");
    assert!(!cfg.exists());

    // --password-stdin: one trailing newline dropped; nothing secret in a trace log.
    let mut c = rbuild(&env);
    c.env("RBUILD_LOG", "trace")
        .args(["login", "-u", "alice", "--password-stdin", &reg.host]);
    let out = run_with_stdin(c, &format!("{PASSWORD}\n"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Login Succeeded"), "{err}");
    assert!(err.contains("stored unencrypted"), "{err}");
    assert!(
        !err.contains(PASSWORD) && !err.contains(&basic("alice", PASSWORD)),
        "a secret in the log: {err}"
    );
    assert_eq!(
        config(&env)["auths"][&reg.host]["auth"],
        basic("alice", PASSWORD)
    );

    // -p works, with docker's warning.
    let out = rbuild(&env)
        .args(["login", "-u", "alice", "-p", PASSWORD, &reg.host])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARNING! Using --password via the CLI is insecure. Use --password-stdin."),
        "{err}"
    );

    // Push and pull with the stored credentials, traced: the secret is in no output and nowhere in
    // the store.
    let image = format!("{}/private/busybox:1", reg.host);
    for args in [vec!["push", "busybox", &image], vec!["pull", &image]] {
        let out = rbuild(&env)
            .env("RBUILD_LOG", "trace")
            .args(&args)
            .output()
            .unwrap();
        let (o, e) = (common::stdout(&out), stderr(&out));
        assert!(out.status.success(), "{args:?}: {e}");
        for text in [&o, &e] {
            assert!(
                !text.contains(PASSWORD) && !text.contains(&basic("alice", PASSWORD)),
                "{args:?} showed a secret: {text}"
            );
        }
    }
    let found = Command::new("grep")
        .args(["-rlF", "-e", PASSWORD, "-e", &basic("alice", PASSWORD)])
        .arg(&env.root)
        .output()
        .unwrap();
    assert_eq!(
        found.status.code(),
        Some(1),
        "a secret is in the store: {}",
        common::stdout(&found)
    );
}

#[test]
fn a_credential_helper_stores_gets_and_erases() {
    let Some(reg) = setup() else { return };
    let env = Env::empty();
    std::fs::create_dir_all(env.path("docker")).unwrap();
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-testhelper");
    std::fs::copy(
        common::repo_root().join("testdata/registry/docker-credential-testhelper"),
        &helper,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::fs::write(
        env.path("docker/config.json"),
        r#"{"credsStore":"testhelper","detachKeys":"ctrl-x"}"#,
    )
    .unwrap();
    let cmd = |args: &[&str]| {
        let mut c = rbuild(&env);
        c.env("PATH", &path).args(args);
        c
    };

    let out = run_with_stdin(
        cmd(&["login", "-u", "alice", "--password-stdin", &reg.host]),
        PASSWORD,
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("unencrypted"), "{err}");
    // config.json: an empty entry, as docker writes it, and its other settings kept.
    let text = std::fs::read_to_string(env.path("docker/config.json")).unwrap();
    assert!(!text.contains(PASSWORD) && !text.contains(&basic("alice", PASSWORD)));
    let v = config(&env);
    assert_eq!(v["auths"][&reg.host], serde_json::json!({}));
    assert_eq!(v["detachKeys"], "ctrl-x");
    // The helper names its file after the server.
    let key = &reg.host;
    let held: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bin.join("store").join(key)).unwrap()).unwrap();
    assert_eq!(
        held,
        serde_json::json!({"ServerURL": reg.host, "Username": "alice", "Secret": PASSWORD})
    );

    // Read back with `get`: the recorded credentials log in without a question.
    let out = cmd(&["login", &reg.host])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Authenticating with existing credentials"),
        "{err}"
    );

    // logout: `erase`, and the entry is gone.
    let out = cmd(&["logout", &reg.host]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Removing login credentials"));
    assert!(!bin.join("store").join(key).exists());
    assert!(config(&env)["auths"].get(&reg.host).is_none());
    let calls = std::fs::read_to_string(bin.join("calls")).unwrap();
    for verb in ["store", "get", "erase"] {
        assert!(calls.contains(&format!("{verb} {}", reg.host)), "{calls}");
    }

    // A helper that is not installed: a clear error naming it, nothing written.
    std::fs::write(
        env.path("docker/config.json"),
        r#"{"credHelpers":{"HOST":"missing"}}"#.replace("HOST", &reg.host),
    )
    .unwrap();
    let out = run_with_stdin(
        cmd(&["login", "-u", "alice", "--password-stdin", &reg.host]),
        PASSWORD,
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("docker-credential-missing"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(config(&env).get("auths").is_none());
}

/// Ctrl-C at the password prompt: the terminal gets its echo back (as with `docker login`),
/// the next line starts on its own, and nothing typed so far is shown. rbuild runs as the
/// session leader of the pty (setsid --ctty), so ^C from the terminal is a real SIGINT; a
/// shell around it (catching SIGINT itself) reports the status and the terminal's settings.
#[test]
fn ctrl_c_at_the_password_prompt_gives_the_echo_back() {
    for tool in ["setsid", "stty"] {
        if common::which(tool).is_none() {
            eprintln!("SKIP: {tool} is not installed");
            return;
        }
    }
    let env = Env::empty();
    std::fs::create_dir_all(env.path("docker")).unwrap();
    let mut cmd = Command::new("setsid");
    cmd.env("RBUILD_ROOT", &env.root)
        .env("DOCKER_CONFIG", env.path("docker"))
        .args(["--ctty", "--wait", "sh", "-c"])
        .arg(r#"trap true INT; "$0" login registry.invalid:5000; echo "status=$?"; stty -a"#)
        .arg(common::rbuild_bin());
    // No registry is needed: nothing is recorded, so nothing is asked of one before the prompts.
    let (st, shown) = run_on_pty(
        cmd,
        &[("Username: ", "alice"), ("Password: ", "half-typed\x03")],
    );
    assert!(st.success(), "{shown}");
    let after = shown.split("Password: ").nth(1).unwrap();
    // (run_on_pty sends a newline after the ^C, which the restored terminal echoes too.)
    assert!(after.starts_with("\r\n"), "the line is not ended: {shown}");
    assert!(after.contains("\r\nstatus=130\r\n"), "{shown}");
    assert!(!shown.contains("half-typed"), "{shown}");
    let settings: Vec<&str> = after
        .split(|c: char| c.is_whitespace() || c == ';')
        .collect();
    assert!(
        settings.contains(&"echo") && !settings.contains(&"-echo"),
        "the echo is still off: {after}"
    );
}
