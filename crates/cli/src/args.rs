//! The command line, as clap definitions. Spelling and meaning follow `docker build`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// A bad flag value or a bad combination of flags: exit code 2, as clap's own usage errors.
pub use rbuild_engine::{usage, UsageError};

/// Turn a flag-parsing error into a usage error (its whole chain on one line).
pub fn usage_of(e: anyhow::Error) -> anyhow::Error {
    usage(format!("{e:#}"))
}

#[derive(Parser, Debug)]
#[command(
    name = "rbuild",
    version,
    about = "Build OCI images from Dockerfiles, without a daemon",
    long_about = "Build OCI images from Dockerfiles, without a daemon.\n\n`rbuild -t app .` is `rbuild build -t app .`.",
    after_help = "Examples:\n  rbuild -t hello:latest examples/hello\n  rbuild images\n  rbuild -t hello --output type=oci,dest=hello.tar examples/hello\n  rbuild load busybox-oci/\n  rbuild run --rm hello"
)]
pub struct Cli {
    /// Store root (default: $RBUILD_ROOT, /var/lib/rbuild as root, else $XDG_DATA_HOME/rbuild).
    #[arg(long, global = true, env = "RBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// More logging on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Registry that may be reached over plain HTTP (loopback registries always may). Repeatable.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// PEM CA bundle trusted for every registry besides the system roots (also
    /// $RBUILD_REGISTRY_CA). Per registry, docker's /etc/docker/certs.d/HOST/ca.crt is honoured.
    #[arg(long = "registry-ca", global = true, value_name = "FILE")]
    pub registry_ca: Option<std::path::PathBuf>,
    /// Snapshotter: overlayfs, or native (full copies, for hosts without a usable overlay).
    /// Default: overlayfs if an overlay mount works here, else native.
    #[arg(long, global = true, env = "RBUILD_SNAPSHOTTER", value_name = "NAME", value_parser = rbuild_engine::snapshots::parse)]
    pub snapshotter: Option<rbuild_snapshotter::Driver>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile.
    #[command(
        after_help = "Examples:\n  rbuild build -t app:1 .\n  rbuild build -f - . < Dockerfile\n  tar -C ctx -c . | rbuild build -t app -\n  rbuild build --build-context base=docker-image://busybox:latest .\n  rbuild build -o type=oci,dest=app.tar -o type=local,dest=rootfs .\n  SOURCE_DATE_EPOCH=0 rbuild build --progress=plain -q ."
    )]
    Build(Box<BuildArgs>),
    /// List images in the local store.
    Images(ImagesArgs),
    /// Remove images.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import images from an OCI layout directory, OCI archive or docker-archive tar.
    Load {
        /// Path to the archive or layout (or -i).
        path: Option<PathBuf>,
        #[arg(short, long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Name to give the image when the archive has none.
        #[arg(short, long)]
        tag: Option<String>,
    },
    /// Save an image to a docker-archive (default) or OCI archive.
    Save {
        image: String,
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "docker")]
        format: SaveFormat,
    },
    /// Show an image's config and manifest as JSON.
    Inspect { image: String },
    /// Build history (ls, logs ID, inspect ID), or an image's layer history (IMAGE).
    ///
    /// When the first word is `ls`, `logs` or `inspect` it is the build history; anything else
    /// names an image (an image called `ls` is `ls:latest`).
    History {
        #[arg(required = true, num_args = 1..=2, value_name = "IMAGE | ls | logs ID | inspect ID")]
        words: Vec<String>,
        /// An image's history: do not truncate the commands.
        #[arg(long)]
        no_trunc: bool,
        /// `ls` and `inspect`: table (the default) or json.
        #[arg(long, value_enum)]
        format: Option<crate::history::Format>,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Print the syntax tree of a Dockerfile.
    Parse {
        #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
        file: PathBuf,
        #[arg(long, value_enum, default_value = "json")]
        format: ParseFormat,
    },
    /// Remove build cache: unused snapshots and blobs (--all: cache records too).
    Prune {
        /// Also remove build-cache records (not those a running build uses).
        #[arg(short, long)]
        all: bool,
        /// until=DURATION: only what was last used longer ago (e.g. until=24h).
        #[arg(long, value_name = "FILTER")]
        filter: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the space used by images, build cache, snapshots and cache mounts.
    Df,
    /// Show what this environment allows and what rbuild chose: user and id mapping (rootless),
    /// user namespaces, snapshotter, RUN network, cgroups, emulators, store path.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show which platforms RUN steps can run as here (natively or under a binfmt_misc emulator
    /// with the F flag); --install registers Debian's qemu-user-static handlers with F.
    Binfmt {
        /// Register the handlers (all of Debian's qemu-user-static, or those the PLATFORMs need).
        #[arg(long)]
        install: bool,
        /// Platforms to show or install (`linux/arm64`, comma-separated or repeated).
        #[arg(value_name = "PLATFORM")]
        platforms: Vec<String>,
    },
    /// Check every blob, record and snapshot of the store (--repair: fix what is broken).
    Fsck {
        /// Remove what is broken and rebuild the indexes (a lost meta.db too).
        #[arg(long)]
        repair: bool,
    },
    /// Pull an image from a registry into the local store.
    Pull {
        image: String,
        /// No progress on stderr.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Push an image to a registry (as IMAGE, or as DEST).
    Push {
        image: String,
        dest: Option<String>,
        /// No progress on stderr.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Log in to a registry (credentials go to docker's config.json).
    ///
    /// Asks for the user name and password on a terminal, checks them against the registry, and
    /// stores them (or the identity token its token server issues) in the credential helper
    /// config.json names, else in config.json itself.
    Login {
        /// The registry (default: Docker Hub).
        host: Option<String>,
        #[arg(short, long)]
        username: Option<String>,
        /// Password (prefer --password-stdin: a flag is visible to other users).
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin (one trailing newline is dropped).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log out of a registry.
    Logout {
        /// The registry (default: Docker Hub).
        host: Option<String>,
    },
    /// Work on images in a registry: merge manifests into an index, inspect.
    #[command(subcommand)]
    Imagetools(crate::imagetools::ImagetoolsCommand),
    /// Generate shell completions.
    Completion { shell: clap_complete::Shell },
    /// Print the man page.
    #[command(hide = true)]
    Man,
    /// Run a command in a new container from a local image.
    Run(Box<crate::run::RunArgs>),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SaveFormat {
    Docker,
    Oci,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ParseFormat {
    Json,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, value_enum)]
    pub format: Option<ImagesFormat>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ImagesFormat {
    Json,
    Table,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build context: a directory, a local tar file (plain, gzip or zstd), or - (a tar, or a lone Dockerfile, on stdin).
    pub context: PathBuf,
    /// Name and optionally tag (name:tag). Repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Build only up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// Run the build checks only: evaluate the Dockerfile, run nothing, print every warning;
    /// exit 1 if the Dockerfile is invalid or a check is an error (`# check=error=true`).
    #[arg(long)]
    pub check: bool,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// For every step that is not cached, print every input that differs from the closest
    /// earlier build (not just the first).
    #[arg(long)]
    pub explain: bool,
    /// Do not use the cache for these stages.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output: type=image (default), type=oci,dest=FILE, type=docker,dest=FILE, type=local,dest=DIR, type=tar,dest=FILE.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Set a label on the image (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Secret to expose to RUN --mount=type=secret (id=ID,src=PATH | id=ID,env=VAR).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// SSH agent socket to forward (default or ID=PATH).
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// Default network mode for RUN (default, none, host).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Target platform (`linux/arm64`, `local` for the host's); RUN steps of another platform run
    /// under binfmt_misc emulation (see `rbuild binfmt`). One platform per build for now.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Vec<String>,
    /// Write the image id to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata (JSON) to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Attach SLSA v1 provenance to pushed images: mode=min|max[,builder-id=URI], true (min) or false.
    #[arg(long, value_name = "OPTS")]
    pub provenance: Option<String>,
    /// Attach an SPDX 2.3 SBOM of the image (read from its package databases) to pushed images.
    #[arg(long, value_name = "true|false")]
    pub sbom: Option<String>,
    /// Annotation on the pushed manifest: `manifest:KEY=VALUE` or `KEY=VALUE`. Repeatable.
    #[arg(long = "annotation", value_name = "[manifest:]K=V")]
    pub annotations: Vec<String>,
    /// Extra named build context (NAME=DIR or NAME=docker-image://REF). Repeatable.
    #[arg(long = "build-context", value_name = "NAME=SRC")]
    pub build_contexts: Vec<String>,
    /// Allow privileged modes: network.host, security.insecure.
    #[arg(long, value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Maximum number of steps running at once.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Memory limit for RUN steps (e.g. 256m).
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// CPU limit for RUN steps (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Process limit for RUN steps.
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<u64>,
    /// Always resolve base images at their registry (re-resolve tags).
    #[arg(long)]
    pub pull: bool,
    /// Push the image to the registry every -t names.
    #[arg(long)]
    pub push: bool,
    /// Export the build cache: type=registry,ref=R[,mode=min|max][,compression=gzip|zstd],
    /// type=local,dest=DIR[,mode=…], type=inline.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a build cache: type=registry,ref=R, type=local,src=DIR, or an image reference. Repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
}
