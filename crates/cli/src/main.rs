//! # rbuild — the command line
//!
//! Parses arguments (clap), hands each command to the engine (`rbuild-engine`'s library:
//! [`rbuild_engine::build`] and the other operations), renders progress on stderr and prints
//! results and errors (one line first, the causes after). The engine's errors are `anyhow` errors
//! with context; the parts below it return typed errors.
//!
//! Exit codes: 0 success, 1 the build (or command) failed, 2 usage error.

mod args;
mod binfmt_cmd;
mod build;
mod checks;
mod history;
mod images;
mod imagetools;
mod info;
mod maintenance;
mod progress;
mod prompt;
mod registry_cmds;
mod run;
mod terminal;
mod tty;

use args::{Cli, Command};
use clap::{CommandFactory, Parser};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Must come first: the sandbox re-executes this binary as its init.
    rbuild_sandbox::init_if_requested();
    // Rootless: an ordinary user's engine runs as root inside a user namespace of its own (one
    // thread still, as the fork there needs).
    if let Err(e) = rbuild_sandbox::userns::enter_user_namespace() {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }

    let argv: Vec<String> = std::env::args().collect();
    let argv = implicit_build(argv);
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    record_clap_env();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            // Bad flag values are usage errors, as clap's own.
            ExitCode::from(if e.is::<args::UsageError>() { 2 } else { 1 })
        }
    }
}

/// `rbuild -t app .` → `rbuild build -t app .`: when the first argument that is not a global
/// option is not a subcommand (and not --help/--version), insert `build`.
fn implicit_build(mut argv: Vec<String>) -> Vec<String> {
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].as_str();
        if a == "--root" || a == "--insecure-registry" || a == "--registry-ca" {
            i += 2;
            continue;
        }
        if a.starts_with("--root=")
            || a.starts_with("--insecure-registry=")
            || a.starts_with("--registry-ca=")
            || a == "-v"
            || a == "-vv"
            || a == "--verbose"
        {
            i += 1;
            continue;
        }
        break;
    }
    if let Some(a) = argv.get(i) {
        let a = a.as_str();
        if !subcommands().iter().any(|s| s == a)
            && !matches!(a, "-h" | "--help" | "-V" | "--version")
        {
            argv.insert(i, "build".to_string());
        }
    }
    argv
}

/// Subcommand names (clap's, and `help`); anything else as first argument means `build`.
fn subcommands() -> Vec<String> {
    let mut names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    names.push("help".to_string());
    names
}

/// Clap reads the variables behind `env = ...` arguments itself: read them again through
/// `rbuild_inputs`, so a no-op record stands on them too (every command's, to be safe).
fn record_clap_env() {
    fn walk(c: &clap::Command) {
        for a in c.get_arguments() {
            if let Some(name) = a.get_env().and_then(|n| n.to_str()) {
                let _ = rbuild_inputs::var_os(name);
            }
        }
        for s in c.get_subcommands() {
            walk(s);
        }
    }
    walk(&Cli::command());
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            rbuild_inputs::var("RBUILD_LOG")
                .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
                .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Print an error: first line `error: …`, then the causes.
pub fn print_error(e: &anyhow::Error) {
    let mut chain = e.chain();
    if let Some(first) = chain.next() {
        eprintln!("error: {first}");
    }
    for cause in chain {
        eprintln!("  caused by: {cause}");
    }
}

/// Rootless with a single id: a step that chowns to (or runs as) another id fails; every failure
/// says how to give the user a range.
pub(crate) fn single_id_hint() {
    if rbuild_oci::host::is_single_id() {
        let user = rbuild_inputs::var("USER").unwrap_or_else(|| "$USER".into());
        eprintln!("hint: {}", rbuild_sandbox::userns::single_id_hint(&user));
    }
}

use rbuild_engine::open_store;

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    rbuild_engine::registry::set_insecure_registries(cli.insecure_registries.clone());
    if let Some(d) = cli.snapshotter {
        rbuild_engine::snapshots::set_choice(d);
    }
    if let Some(ca) = &cli.registry_ca {
        rbuild_engine::registry::set_registry_ca(ca.clone());
    }
    match cli.command {
        Command::Build(args) => build::run(&cli.root, *args),
        Command::Images(a) => images::images(&open_store(&cli.root)?, &a),
        Command::Rmi { images: names } => images::rmi(&open_store(&cli.root)?, &names),
        Command::Load { path, input, tag } => {
            let p = path.or(input).ok_or_else(|| {
                anyhow::anyhow!("load needs a path: rbuild load FILE|DIR (or -i FILE)")
            })?;
            images::load(&open_store(&cli.root)?, &p, tag.as_deref())
        }
        Command::Save {
            image,
            output,
            format,
        } => images::save(&open_store(&cli.root)?, &image, &output, format),
        Command::Inspect { image } => images::inspect(&open_store(&cli.root)?, &image),
        Command::History {
            words,
            no_trunc,
            format,
        } => history::history(&cli.root, &words, no_trunc, format),
        Command::Tag { source, target } => images::tag(&open_store(&cli.root)?, &source, &target),
        Command::Parse { file, format: _ } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            let name = file.display().to_string();
            match rbuild_frontend::parse(&name, &text) {
                Ok(df) => {
                    let v = rbuild_frontend::to_json(&df);
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}", e.render());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Prune {
            all,
            filter,
            force,
            dry_run,
        } => maintenance::prune(&open_store(&cli.root)?, all, &filter, dry_run, force),
        Command::Df => maintenance::df(&open_store(&cli.root)?),
        Command::Info { json } => info::info(&cli.root, json),
        Command::Binfmt { install, platforms } => binfmt_cmd::binfmt(install, &platforms),
        Command::Fsck { repair } => maintenance::fsck(
            &cli.root
                .clone()
                .unwrap_or_else(rbuild_store::Store::default_root),
            repair,
        ),
        Command::Pull { image, quiet } => {
            registry_cmds::pull(&open_store(&cli.root)?, &image, quiet)
        }
        Command::Push { image, dest, quiet } => {
            registry_cmds::push(&open_store(&cli.root)?, &image, dest.as_deref(), quiet)
        }
        Command::Login {
            host,
            username,
            password,
            password_stdin,
        } => registry_cmds::login(
            host.as_deref(),
            username.as_deref(),
            password.as_deref(),
            password_stdin,
        ),
        Command::Logout { host } => registry_cmds::logout(host.as_deref()),
        Command::Imagetools(c) => imagetools::run(c),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rbuild", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => run::run(&cli.root, *a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn bare_form_means_build() {
        assert_eq!(
            implicit_build(v(&["rbuild", "-t", "app", "."])),
            v(&["rbuild", "build", "-t", "app", "."])
        );
        assert_eq!(
            implicit_build(v(&["rbuild", "--root", "/x", "."])),
            v(&["rbuild", "--root", "/x", "build", "."])
        );
        assert_eq!(
            implicit_build(v(&["rbuild", "images"])),
            v(&["rbuild", "images"])
        );
        assert_eq!(
            implicit_build(v(&["rbuild", "--help"])),
            v(&["rbuild", "--help"])
        );
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
