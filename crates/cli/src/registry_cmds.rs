//! `rbuild pull|push|login|logout`: the engine does the work ([`rbuild_engine::registry`]); here
//! the prompts ([`crate::prompt`]), the progress view and what is printed.

use anyhow::{anyhow, bail, Context as _};
use rbuild_engine::registry::RegistryCtx;
use rbuild_store::Store;
use std::process::ExitCode;

/// `rbuild push IMAGE [DEST]`: prints the pushed manifest's digest.
pub fn push(
    store: &Store,
    image: &str,
    dest: Option<&str>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let job = rbuild_engine::registry::Push::prepare(store, image, dest)?;
    // On a terminal, the live view shows the bytes of each blob; otherwise a line per step.
    let progress = (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| crate::progress::Progress::start(crate::progress::Mode::Tty, None));
    let sink = progress.as_ref().map(|p| p.sink());
    let report = job.run(store, quiet, sink.as_ref());
    // The renderer ends when every sender is gone.
    drop(sink);
    if let Some(p) = progress {
        let manifest = &job.manifest;
        match &report {
            Ok(r) => p.finish_with(rbuild_engine::Summary {
                id: manifest.config.digest.to_string(),
                digest: r.manifest.to_string(),
                size: manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            }),
            Err(_) => p.finish(),
        }
    }
    let report = report?;
    println!("{}", report.manifest);
    Ok(ExitCode::SUCCESS)
}

/// `rbuild pull IMAGE`: prints the image id.
pub fn pull(store: &Store, image: &str, quiet: bool) -> anyhow::Result<ExitCode> {
    let rec = rbuild_engine::registry::pull(store, image, quiet)?;
    println!("{}", rec.config);
    Ok(ExitCode::SUCCESS)
}

/// `rbuild login [-u U] [-p P | --password-stdin] [HOST]`, as `docker login` does it: with neither
/// a user nor a password, the credentials already recorded are tried first; what is missing is
/// asked for on the terminal (the password with echo off; "Username (alice): " offers the recorded
/// user); without a terminal, missing answers are an error naming the flags. The credentials are
/// checked against the registry before anything is stored.
pub fn login(
    host: Option<&str>,
    username: Option<&str>,
    password: Option<&str>,
    password_stdin: bool,
) -> anyhow::Result<ExitCode> {
    let host = host.unwrap_or(rbuild_registry::DEFAULT_REGISTRY);
    if password.is_some() && password_stdin {
        bail!("login: --password and --password-stdin are mutually exclusive");
    }
    if password_stdin && username.is_none() {
        bail!("login {host}: --password-stdin needs the user name: add -u/--username");
    }
    let mut password = password.map(str::to_string);
    if password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    if password_stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading the password from stdin")?;
        let s = s.strip_suffix('\n').unwrap_or(&s);
        password = Some(s.strip_suffix('\r').unwrap_or(s).to_string());
    }
    let ctx = RegistryCtx::new()?;
    if username.is_none() && password.is_none() {
        match ctx.block(ctx.client.login_with_stored(host)) {
            Ok(true) => {
                eprintln!("Authenticating with existing credentials...");
                eprintln!("Login Succeeded");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(false) => {}
            Err(e) => eprintln!("Login with the existing credentials did not succeed: {e}"),
        }
    }
    let tty = crate::prompt::stdin_is_terminal();
    let not_tty = |what: &str| {
        anyhow!(
            "login {host}: no {what} given and stdin is not a terminal to ask for it \
             (use -u USER --password-stdin)"
        )
    };
    let username = match username {
        Some(u) => u.to_string(),
        None if !tty => return Err(not_tty("user name")),
        None => {
            let default = ctx.block(ctx.client.stored_username(host)).ok().flatten();
            let label = match &default {
                Some(d) => format!("Username ({d}): "),
                None => "Username: ".to_string(),
            };
            let typed = crate::prompt::line(&label)?.trim().to_string();
            match (typed.is_empty(), default) {
                (false, _) => typed,
                (true, Some(d)) => d,
                (true, None) => bail!("login {host}: the user name is empty"),
            }
        }
    };
    let password = match password {
        Some(p) => p,
        None if !tty => return Err(not_tty("password")),
        None => crate::prompt::password("Password: ")?,
    };
    if username.is_empty() {
        bail!("login {host}: the user name is empty");
    }
    if password.is_empty() {
        bail!("login {host}: the password is empty");
    }
    let outcome = ctx
        .block(ctx.client.login(host, &username, &password))
        .with_context(|| format!("logging in to {host} as {username}"))?;
    if let rbuild_registry::Saved::File(path) = &outcome.saved {
        let what = if outcome.identity_token {
            "identity token"
        } else {
            "password"
        };
        eprintln!(
            "WARNING! Your {what} is stored unencrypted in {}.\n\
             Configure a credential helper (\"credsStore\" in that file) to remove this warning.",
            path.display()
        );
    }
    eprintln!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

/// `rbuild logout [HOST]`.
pub fn logout(host: Option<&str>) -> anyhow::Result<ExitCode> {
    let host = host.unwrap_or(rbuild_registry::DEFAULT_REGISTRY);
    if rbuild_engine::registry::logout(host)? {
        eprintln!("Removing login credentials for {host}");
    } else {
        eprintln!("Not logged in to {host}");
    }
    Ok(ExitCode::SUCCESS)
}
