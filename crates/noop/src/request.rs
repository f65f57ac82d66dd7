//! The build requests the no-op check answers, and their keys.
//!
//! Only the plain form of `rbuild build` is taken: tags, a Dockerfile, build args, a target,
//! plain, tty or quiet progress, `--iidfile` and `--metadata-file`, on a context directory. Every other flag, subcommand or spelling
//! goes to the engine untouched (whose parser, clap, is the one that reports usage errors).

use rbuild_oci::sha256_hex;
use std::path::{Path, PathBuf};

/// The engine reads the request key the front computed from here, and writes its record under it.
pub const KEY_ENV: &str = "RBUILD_NOOP_KEY";

/// `0`: the front answers nothing; `explain`: it says on stderr why it did not answer.
pub const CHECK_ENV: &str = "RBUILD_NOOP_CHECK";

/// rbuild's subcommands (the engine's parser, clap, has the same; a first argument that names
/// none of them is the first argument of an implicit `build`).
pub const SUBCOMMANDS: &[&str] = &[
    "build",
    "images",
    "rmi",
    "load",
    "save",
    "inspect",
    "history",
    "tag",
    "parse",
    "prune",
    "df",
    "info",
    "binfmt",
    "fsck",
    "pull",
    "push",
    "login",
    "logout",
    "completion",
    "man",
    "run",
    "help",
];

/// The progress modes the front can show (`--progress=json` goes to the engine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    /// The live view's last frame (`--progress=tty`, or `auto` on a terminal).
    Tty,
    /// Only the image id on stdout (`-q`, `--progress=quiet`).
    Quiet,
}

/// A build request the no-op check can answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The store root.
    pub root: PathBuf,
    /// How progress is shown.
    pub mode: Mode,
    /// `--iidfile`: where to write the image id.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`: where to write the build's metadata ([`crate::build_metadata`]).
    pub metadata_file: Option<PathBuf>,
    /// `-t`, in order (the metadata's `image.name`).
    pub tags: Vec<String>,
    /// The canonical fields the key digests, in order.
    fields: Vec<String>,
}

impl Request {
    /// The request `args` (without the program name) make, or None when the check cannot answer
    /// it. `env` reads the environment, `cwd` is the working directory, `stderr_tty` whether
    /// stderr is a terminal (`--progress=auto` shows the live view there).
    pub fn parse(
        args: &[String],
        env: &dyn Fn(&str) -> Option<String>,
        env_vars: &[(String, String)],
        cwd: &Path,
        stderr_tty: bool,
    ) -> Option<Request> {
        let mut root: Option<String> = None;
        let mut snapshotter: Option<String> = None;
        let mut tags = Vec::new();
        let mut file: Option<String> = None;
        let mut build_args = Vec::new();
        let mut target: Option<String> = None;
        let mut progress: Option<String> = None;
        let mut iidfile: Option<String> = None;
        let mut metadata_file: Option<String> = None;
        let mut quiet = false;
        let mut context: Option<String> = None;
        let mut seen_command = false;
        let mut i = 0;
        // A flag's value: `--flag V`, `--flag=V`, or (short flags) `-fV`.
        let value = |i: &mut usize, a: &str, long: &str, short: Option<&str>| -> Option<String> {
            let v = if a == long || short == Some(a) {
                *i += 1;
                args.get(*i)?.clone()
            } else if let Some(v) = a.strip_prefix(long).and_then(|r| r.strip_prefix('=')) {
                v.to_string()
            } else {
                a.strip_prefix(short?)?.to_string()
            };
            // Values clap could read another way (`-t=app`, `-t -x`) are left to the engine.
            (!v.starts_with('-') && !v.starts_with('=') && !v.is_empty()).then_some(v)
        };
        let once = |slot: &mut Option<String>, v: String| -> Option<()> {
            slot.is_none().then(|| *slot = Some(v))
        };
        while i < args.len() {
            let a = args[i].as_str();
            let is = |long: &str| a == long || a.starts_with(&format!("{long}="));
            if is("--root") {
                once(&mut root, value(&mut i, a, "--root", None)?)?;
            } else if is("--snapshotter") {
                once(&mut snapshotter, value(&mut i, a, "--snapshotter", None)?)?;
            } else if !seen_command {
                // The first argument that is not a global flag: `build`, another subcommand, or
                // (`rbuild -t app .`) the first argument of an implicit `build`.
                seen_command = true;
                if a == "build" {
                    i += 1;
                } else if SUBCOMMANDS.contains(&a) {
                    return None;
                }
                continue;
            } else if is("--tag") || a.starts_with("-t") {
                tags.push(value(&mut i, a, "--tag", Some("-t"))?);
            } else if is("--file") || a.starts_with("-f") {
                once(&mut file, value(&mut i, a, "--file", Some("-f"))?)?;
            } else if is("--build-arg") {
                build_args.push(value(&mut i, a, "--build-arg", None)?);
            } else if is("--target") {
                once(&mut target, value(&mut i, a, "--target", None)?)?;
            } else if is("--progress") {
                once(&mut progress, value(&mut i, a, "--progress", None)?)?;
            } else if is("--iidfile") {
                once(&mut iidfile, value(&mut i, a, "--iidfile", None)?)?;
            } else if is("--metadata-file") {
                once(
                    &mut metadata_file,
                    value(&mut i, a, "--metadata-file", None)?,
                )?;
            } else if a == "-q" || a == "--quiet" {
                if quiet {
                    return None;
                }
                quiet = true;
            } else if !a.starts_with('-') && context.is_none() {
                context = Some(a.to_string());
            } else {
                return None;
            }
            i += 1;
        }
        seen_command.then_some(())?;
        let context = context?;
        let mode = match progress.as_deref() {
            _ if quiet => Mode::Quiet,
            None | Some("auto") if stderr_tty => Mode::Tty,
            None | Some("auto") | Some("plain") => Mode::Plain,
            Some("tty") => Mode::Tty,
            Some("quiet") => Mode::Quiet,
            _ => return None,
        };
        // The store root as the engine finds it (clap reads RBUILD_ROOT for --root).
        let root = match root.or_else(|| env("RBUILD_ROOT")) {
            Some(r) if r.is_empty() => return None,
            Some(r) => cwd.join(r),
            None => super::default_root(),
        };
        let context_dir = cwd.join(&context).canonicalize().ok()?;
        if !context_dir.is_dir() {
            return None;
        }
        let dockerfile = match &file {
            Some(f) => cwd.join(f),
            None => cwd.join(&context).join("Dockerfile"),
        };

        let mut fields = vec![
            "rbuild-noop/request/v1".to_string(),
            format!("cwd={}", cwd.display()),
            format!("root={}", root.display()),
            format!("context={}", context_dir.display()),
            format!("context-arg={context}"),
            format!("dockerfile={}", dockerfile.display()),
            format!("target={target:?}"),
            format!("mode={mode:?}"),
            format!("iidfile={iidfile:?}"),
            format!("metadata-file={metadata_file:?}"),
            format!("snapshotter={snapshotter:?}"),
        ];
        fields.extend(tags.iter().map(|t| format!("tag={t}")));
        for a in &build_args {
            // `--build-arg NAME` takes NAME's value from the environment.
            match a.split_once('=') {
                Some(_) => fields.push(format!("build-arg={a}")),
                None => fields.push(format!("build-arg-env={a}={:?}", env(a))),
            }
        }
        fields.push(format!("SOURCE_DATE_EPOCH={:?}", env("SOURCE_DATE_EPOCH")));
        // rbuild's own variables (limits, logging, snapshotter) may change what a build does.
        let mut own: Vec<&(String, String)> = env_vars
            .iter()
            .filter(|(k, _)| k.starts_with("RBUILD_") && k != KEY_ENV && k != CHECK_ENV)
            .collect();
        own.sort();
        fields.extend(own.iter().map(|(k, v)| format!("env:{k}={v}")));
        Some(Request {
            root,
            mode,
            iidfile: iidfile.map(|f| cwd.join(f)),
            metadata_file: metadata_file.map(|f| cwd.join(f)),
            tags,
            fields,
        })
    }

    /// The request's key, given the engine binary's identity (a rebuilt engine answers anew).
    pub fn key(&self, engine: &str) -> String {
        let mut b = Vec::new();
        for f in std::iter::once(&format!("engine={engine}")).chain(&self.fields) {
            b.extend_from_slice(&(f.len() as u64).to_le_bytes());
            b.extend_from_slice(f.as_bytes());
        }
        sha256_hex(&b)
    }
}
