//! `--output` specs and exporters (docker's `-o type=…,dest=…`).

use anyhow::{anyhow, bail, Context as _};
use rbuild_oci::Compression;
use rbuild_snapshotter::Snapshotter;
use rbuild_solver::SolveResult;
use rbuild_store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Image,
    Oci,
    Docker,
    Local,
    Tar,
}

#[derive(Clone, Debug)]
pub struct OutputSpec {
    pub kind: OutputKind,
    /// `-` means stdout.
    pub dest: Option<PathBuf>,
    /// For oci: write a tar (default) or a layout directory.
    pub tar: bool,
    pub compression: Compression,
    pub level: Option<u32>,
    pub name: Option<String>,
    /// `push=true` (type=image only; `type=registry` is type=image,push=true): push the image
    /// as `--push` does.
    pub push: bool,
    /// `push-by-digest=true` (with a push): the manifest is put by its digest only, no tag.
    pub push_by_digest: bool,
}

impl OutputSpec {
    pub fn parse(s: &str) -> anyhow::Result<OutputSpec> {
        let mut kv = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("--output {s}: {part:?} is not KEY=VALUE"))?;
            kv.insert(k.trim().to_string(), v.trim().to_string());
        }
        // `-o DIR` shorthand is type=local,dest=DIR (as docker).
        let ty = kv.remove("type");
        let kind = match ty.as_deref() {
            Some("image") | Some("registry") => OutputKind::Image,
            Some("oci") => OutputKind::Oci,
            Some("docker") => OutputKind::Docker,
            Some("local") => OutputKind::Local,
            Some("tar") => OutputKind::Tar,
            Some(other) => {
                bail!("--output {s}: unknown type {other:?} (image, registry, oci, docker, local, tar)")
            }
            None => bail!("--output {s}: missing type="),
        };
        let dest = kv.remove("dest").map(PathBuf::from);
        if kind != OutputKind::Image && dest.is_none() {
            bail!("--output {s}: dest= is required for this type");
        }
        let tar = match kv.remove("tar").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => bail!("--output {s}: tar={v}: expected true or false"),
        };
        let compression = match kv.remove("compression").as_deref() {
            None | Some("gzip") => Compression::Gzip,
            Some("zstd") => Compression::Zstd,
            Some("uncompressed") => Compression::None,
            Some(v) => bail!("--output {s}: compression={v}: expected gzip, zstd or uncompressed"),
        };
        let level = kv
            .remove("compression-level")
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| anyhow!("--output {s}: compression-level={v}: not a number"))
            })
            .transpose()?;
        if let Some(l) = level {
            if kind != OutputKind::Oci {
                bail!("--output {s}: compression-level applies to type=oci only (docker archives hold uncompressed layers)");
            }
            rbuild_image::check_level(compression, l).map_err(|e| anyhow!("--output {s}: {e}"))?;
        }
        let name = kv.remove("name");
        let push = match kv.remove("push").as_deref() {
            None => ty.as_deref() == Some("registry"),
            Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(v) => bail!("--output {s}: push={v}: expected true or false"),
        };
        if push && kind != OutputKind::Image {
            bail!("--output {s}: push=true applies to type=image only (this output is written locally; push the image with -o type=image,push=true or --push)");
        }
        if let Some(n) = &name {
            if kind == OutputKind::Image {
                for one in n.split(';') {
                    crate::registry::parse_ref(one, &format!("--output {s}: name"))?;
                }
            }
        }
        let push_by_digest = match kv.remove("push-by-digest").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("--output {s}: push-by-digest={v}: expected true or false"),
        };
        if push_by_digest && !push {
            bail!("--output {s}: push-by-digest=true needs a push (type=registry, or type=image,push=true)");
        }
        if let Some(k) = kv.keys().next() {
            bail!("--output {s}: unknown key {k:?}");
        }
        Ok(OutputSpec {
            kind,
            dest,
            tar,
            compression,
            level,
            name,
            push,
            push_by_digest,
        })
    }

    pub fn needs_rootfs(&self) -> bool {
        matches!(self.kind, OutputKind::Local | OutputKind::Tar)
    }

    pub fn is_image(&self) -> bool {
        self.kind == OutputKind::Image
    }
}

fn open_dest(dest: &std::path::Path) -> anyhow::Result<Box<dyn std::io::Write>> {
    if dest.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdout().lock()));
    }
    let f = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    Ok(Box::new(std::io::BufWriter::new(f)))
}

/// Write output `o`, shown in progress as a step of its own (BuildKit's names: `exporting to oci
/// image format` …) with the bytes of every blob it compresses and writes.
pub fn export(
    store: &Store,
    snapshotter: &Snapshotter,
    result: &SolveResult,
    tags: &[String],
    o: &OutputSpec,
    events: &rbuild_solver::EventSink,
) -> anyhow::Result<()> {
    let name = match o.kind {
        OutputKind::Image => return Ok(()),
        OutputKind::Oci => "exporting to oci image format",
        OutputKind::Docker => "exporting to docker image format",
        OutputKind::Local => "exporting to client directory",
        OutputKind::Tar => "exporting to client tarball",
    };
    let step = crate::step::Step::start(events, name);
    let r = export_with(store, snapshotter, result, tags, o, &step);
    step.finish(&r);
    r
}

/// A writer that reports the bytes written through it as `id`.
struct Counted<'a, W> {
    inner: W,
    step: &'a crate::step::Step,
    id: &'static str,
    n: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        self.step.bytes(self.id, self.n, None, false);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn export_with(
    store: &Store,
    snapshotter: &Snapshotter,
    result: &SolveResult,
    tags: &[String],
    o: &OutputSpec,
    step: &crate::step::Step,
) -> anyhow::Result<()> {
    let mut names: Vec<String> = tags.to_vec();
    if let Some(n) = &o.name {
        names.extend(n.split(';').map(|s| s.to_string()));
    }
    rbuild_store::crash_point("export");
    let report = |p: rbuild_image::ExportProgress<'_>| step.export(p);
    match o.kind {
        OutputKind::Image => Ok(()),
        OutputKind::Oci => {
            let dest = o.dest.as_ref().unwrap();
            if o.tar {
                let mut w = open_dest(dest)?;
                rbuild_image::export_oci_reporting(
                    store,
                    &result.manifest,
                    &names,
                    Some(o.compression),
                    o.level,
                    rbuild_image::OciDest::Tar(&mut w),
                    &report,
                )
                .with_context(|| format!("exporting OCI archive to {}", dest.display()))?;
                w.flush().context("writing the OCI archive")?;
            } else {
                rbuild_image::export_oci_reporting(
                    store,
                    &result.manifest,
                    &names,
                    Some(o.compression),
                    o.level,
                    rbuild_image::OciDest::Dir(dest),
                    &report,
                )
                .with_context(|| format!("exporting OCI layout to {}", dest.display()))?;
            }
            Ok(())
        }
        OutputKind::Docker => {
            let dest = o.dest.as_ref().unwrap();
            let mut w = open_dest(dest)?;
            rbuild_image::export_docker_archive_reporting(
                store,
                &result.manifest,
                &names,
                &mut w,
                &report,
            )
            .with_context(|| format!("exporting docker archive to {}", dest.display()))?;
            w.flush().context("writing the docker archive")?;
            Ok(())
        }
        OutputKind::Local | OutputKind::Tar => {
            let dest = o.dest.as_ref().unwrap();
            let snap = result
                .target_snapshot
                .as_deref()
                .ok_or_else(|| anyhow!("the target's filesystem was not materialized"))?;
            let key = format!("export-{}-{}", std::process::id(), rand_suffix());
            let view = rbuild_snapshotter::MountedSnapshot::view(
                snapshotter,
                &key,
                snap,
                &store.root().join("mnt"),
            )
            .context("mounting a view of the result")?;
            let mnt = view.path();
            if o.kind == OutputKind::Tar {
                let mut w = Counted {
                    inner: open_dest(dest)?,
                    step,
                    id: "sending tarball",
                    n: 0,
                };
                rbuild_snapshotter::diff::write_layer(
                    mnt,
                    &mut w,
                    &rbuild_snapshotter::diff::LayerOptions::default(),
                )
                .map(|_| ())
                .context("writing the rootfs tar")
                .and_then(|_| std::io::Write::flush(&mut w).context("writing the rootfs tar"))
                .map(|()| step.bytes(w.id, w.n, None, true))
            } else {
                std::fs::create_dir_all(dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                copy_tree(mnt, dest, step)
            }
        }
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Copy a rootfs tree through a tar stream: the layer writer reads it without following
/// symlinks, the layer applier writes it safely beneath `dest`.
fn copy_tree(
    src: &std::path::Path,
    dest: &std::path::Path,
    step: &crate::step::Step,
) -> anyhow::Result<()> {
    let (r, w) = std::io::pipe().context("creating a pipe")?;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut w = std::io::BufWriter::new(Counted {
                inner: w,
                step,
                id: "copying files",
                n: 0,
            });
            rbuild_snapshotter::diff::write_layer(
                src,
                &mut w,
                &rbuild_snapshotter::diff::LayerOptions::default(),
            )
            .map_err(|e| anyhow!("reading the rootfs: {e}"))?;
            let w = w
                .into_inner()
                .map_err(|e| anyhow!("reading the rootfs: {}", e.error()))?;
            step.bytes(w.id, w.n, None, true);
            Ok::<(), anyhow::Error>(())
        });
        let applied = rbuild_snapshotter::diff::apply_layer(
            std::io::BufReader::new(r),
            dest,
            &rbuild_snapshotter::diff::ApplyOptions::default(),
        );
        let wrote = writer
            .join()
            .map_err(|_| anyhow!("rootfs reader panicked"))?;
        wrote?;
        applied.map_err(|e| anyhow!("writing {}: {e}", dest.display()))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs() {
        let o = OutputSpec::parse("type=oci,dest=x.tar").unwrap();
        assert_eq!(o.kind, OutputKind::Oci);
        assert!(o.tar);
        let o = OutputSpec::parse("type=oci,dest=d,tar=false,compression=zstd").unwrap();
        assert!(!o.tar);
        assert_eq!(o.compression, Compression::Zstd);
        assert!(OutputSpec::parse("type=nope,dest=x").is_err());
        assert!(OutputSpec::parse("type=oci").is_err());
        assert!(OutputSpec::parse("type=oci,dest=x,bogus=1").is_err());
        let o = OutputSpec::parse("type=oci,dest=x,compression-level=9").unwrap();
        assert_eq!(o.level, Some(9));
        let e = OutputSpec::parse("type=oci,dest=x,compression-level=10").unwrap_err();
        assert!(e.to_string().contains("out of range (0-9)"), "{e}");
        let e =
            OutputSpec::parse("type=oci,dest=x,compression=zstd,compression-level=23").unwrap_err();
        assert!(e.to_string().contains("out of range (1-22)"), "{e}");
        assert!(OutputSpec::parse("type=docker,dest=x,compression-level=1").is_err());
    }

    #[test]
    fn push_is_for_images_only_and_never_ignored() {
        assert!(OutputSpec::parse("type=image,push=true").unwrap().push);
        assert!(!OutputSpec::parse("type=image,push=false").unwrap().push);
        assert!(!OutputSpec::parse("type=image").unwrap().push);
        let r = OutputSpec::parse("type=registry,name=localhost:5000/a:1").unwrap();
        assert!(r.push && r.is_image());
        assert!(!OutputSpec::parse("type=registry,push=false").unwrap().push);
        for bad in [
            "type=oci,dest=x,push=true",
            "type=docker,dest=x,push=true",
            "type=local,dest=x,push=true",
            "type=tar,dest=x,push=true",
        ] {
            let e = OutputSpec::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("push=true applies to type=image only"),
                "{bad}: {e}"
            );
        }
        let e = OutputSpec::parse("type=image,push=yes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("push=yes"), "{e}");
        let e = OutputSpec::parse("type=image,name=a b@c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("name"), "{e}");
        let e = OutputSpec::parse("type=image,unpack=true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key"), "{e}");
    }
}
