//! `rbuild imagetools create|inspect`: work on images in a registry without the local store, as
//! `docker buildx imagetools` does (the merge step of a CI matrix that pushed each platform by
//! digest).

use crate::args::usage;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use rbuild_engine::registry::{parse_ref, RegistryCtx};
use rbuild_oci::{Index, Manifest};
use rbuild_registry::{CreateAnnotations, DuplicatePlatform, Reference};
use std::io::Write as _;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ImagetoolsCommand {
    /// Create an index from manifests or indexes already in a registry (nothing is pulled).
    #[command(
        after_help = "Examples:\n  rbuild imagetools create -t reg/app:1 reg/app@sha256:aaa… reg/app@sha256:bbb…\n  rbuild imagetools create -t reg/app:1 --annotation index:org.opencontainers.image.version=1 reg/app@sha256:aaa…"
    )]
    Create(CreateArgs),
    /// Show an image's manifest or index in a registry.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name (with tag) to give the new index; repeatable, all in one repository.
    #[arg(short = 't', long = "tag", required = true, value_name = "REF")]
    pub tags: Vec<String>,
    /// Annotation: `index:K=V` (also bare `K=V`) on the index, `manifest-descriptor[os/arch]:K=V`
    /// on the image descriptors. Repeatable.
    #[arg(long = "annotation", value_name = "[TYPE:]K=V")]
    pub annotations: Vec<String>,
    /// Print the index instead of pushing it.
    #[arg(long)]
    pub dry_run: bool,
    /// When two sources bring a manifest for the same platform, keep the later one (default: refuse).
    #[arg(long)]
    pub replace_platform: bool,
    /// Sources: `REPO@sha256:…` or `REPO:TAG`, each a manifest or an index.
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub image: String,
    /// Print the manifest or index exactly as the registry serves it.
    #[arg(long)]
    pub raw: bool,
}

pub fn run(cmd: ImagetoolsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImagetoolsCommand::Create(a) => create(a),
        ImagetoolsCommand::Inspect(a) => inspect(a),
    }
}

fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let targets = a
        .tags
        .iter()
        .map(|t| parse_ref(t, "-t"))
        .collect::<anyhow::Result<Vec<Reference>>>()
        .map_err(crate::args::usage_of)?;
    let sources = a
        .sources
        .iter()
        .map(|s| parse_ref(s, "source"))
        .collect::<anyhow::Result<Vec<Reference>>>()
        .map_err(crate::args::usage_of)?;
    let mut ann = CreateAnnotations::default();
    for s in &a.annotations {
        ann.add(s).map_err(usage)?;
    }
    let dup = if a.replace_platform {
        DuplicatePlatform::Replace
    } else {
        DuplicatePlatform::Refuse
    };
    let ctx = RegistryCtx::new()?;
    let (digest, bytes) = ctx
        .block(
            ctx.client
                .create_index(&targets, &sources, &ann, dup, a.dry_run),
        )
        .context("imagetools create")?;
    let mut out = std::io::stdout().lock();
    if a.dry_run {
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for t in &targets {
            eprintln!("pushed {} {digest}", t.familiar());
        }
        writeln!(out, "{digest}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let r = parse_ref(&a.image, "image").map_err(crate::args::usage_of)?;
    let ctx = RegistryCtx::new()?;
    let got = ctx
        .block(ctx.client.resolve(&r))
        .with_context(|| format!("inspecting {}", r.familiar()))?;
    let mut out = std::io::stdout().lock();
    if a.raw {
        out.write_all(&got.bytes)?;
        if !got.bytes.ends_with(b"\n") {
            writeln!(out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "Name:      {}", r.familiar())?;
    writeln!(out, "MediaType: {}", got.media_type)?;
    writeln!(out, "Digest:    {}", got.digest)?;
    if got.is_index() {
        let idx: Index = serde_json::from_slice(&got.bytes)
            .with_context(|| format!("{}: the index does not parse", got.digest))?;
        print_annotations(&mut out, "", &idx.annotations)?;
        writeln!(out)?;
        writeln!(out, "Manifests:")?;
        for (i, d) in idx.manifests.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(
                out,
                "  Name:        {}",
                r.with_digest(d.digest.clone()).familiar()
            )?;
            writeln!(out, "  MediaType:   {}", d.media_type)?;
            if let Some(p) = &d.platform {
                writeln!(out, "  Platform:    {}", p.format())?;
            }
            print_annotations(&mut out, "  ", &d.annotations)?;
        }
    } else {
        let m: Manifest = serde_json::from_slice(&got.bytes)
            .with_context(|| format!("{}: the manifest does not parse", got.digest))?;
        writeln!(out, "Config:    {}", m.config.digest)?;
        writeln!(out, "Layers:    {}", m.layers.len())?;
        print_annotations(&mut out, "", &m.annotations)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_annotations(
    out: &mut impl std::io::Write,
    indent: &str,
    a: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<()> {
    if a.is_empty() {
        return Ok(());
    }
    writeln!(out, "{indent}Annotations:")?;
    for (k, v) in a {
        writeln!(out, "{indent}  {k}: {v}")?;
    }
    Ok(())
}
