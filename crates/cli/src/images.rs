//! Image management: images, rmi, load, save, inspect, history, tag.

use crate::args::{ImagesArgs, ImagesFormat, SaveFormat};
use anyhow::{anyhow, Context as _};
use rbuild_store::Store;
use std::path::Path;
use std::process::ExitCode;

fn split_name(name: &str) -> (String, String) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (name.to_string(), "latest".to_string()),
    }
}

/// "2 minutes ago" from an RFC 3339 time (best effort; "N/A" when unknown).
fn ago(created: Option<&str>) -> String {
    let Some(c) = created else {
        return "N/A".into();
    };
    let Some(t) = parse_rfc3339(c) else {
        return "N/A".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let d = now - t;
    if d < 0 {
        return "in the future".into();
    }
    let (n, unit) = match d {
        0..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        86400..=2_591_999 => (d / 86400, "day"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

pub fn images(store: &Store, args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    let list = store.list_images().context("listing images")?;
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for (_, r) in &list {
            if seen.insert(r.config.short().to_string()) {
                println!("{}", r.config.short());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if matches!(args.format, Some(ImagesFormat::Json)) {
        for (name, r) in &list {
            let (repo, tag) = split_name(name);
            let v = serde_json::json!({
                "name": name, "repository": repo, "tag": tag,
                "id": r.config.to_string(), "manifest": r.manifest.to_string(),
                "created": r.created, "size": r.size,
            });
            println!("{v}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|(name, r)| {
            let (repo, tag) = split_name(name);
            [
                repo,
                tag,
                r.config.short().to_string(),
                ago(r.created.as_deref()),
                crate::progress::human(r.size),
            ]
        })
        .collect();
    print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut w = [0usize; N];
    for (i, h) in header.iter().enumerate() {
        w[i] = h.len();
    }
    for r in rows {
        for i in 0..N {
            w[i] = w[i].max(r[i].chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<width$}   ", c, width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

fn find(store: &Store, image: &str) -> anyhow::Result<(Option<String>, rbuild_store::ImageRecord)> {
    store
        .find_image(image)
        .with_context(|| format!("looking up {image}"))?
        .ok_or_else(|| anyhow!("no such image: {image}"))
}

pub fn rmi(store: &Store, names: &[String]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for n in names {
        let removed = match store.remove_image(n) {
            Ok(true) => true,
            Ok(false) => {
                // By id: remove every name pointing at it.
                match store.find_image(n) {
                    Ok(Some((_, rec))) => {
                        let mut any = false;
                        for (name, r) in store.list_images()? {
                            if r.config == rec.config {
                                any |= store.remove_image(&name)?;
                            }
                        }
                        any
                    }
                    _ => false,
                }
            }
            Err(e) => return Err(anyhow!("removing {n}: {e}")),
        };
        if removed {
            println!("Untagged: {n}");
        } else {
            eprintln!("error: no such image: {n}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn load(store: &Store, path: &Path, tag: Option<&str>) -> anyhow::Result<ExitCode> {
    let loaded =
        rbuild_image::load(store, path).with_context(|| format!("loading {}", path.display()))?;
    if loaded.is_empty() {
        return Err(anyhow!("{}: no image found", path.display()));
    }
    for img in &loaded {
        let names: Vec<String> = match (tag, &img.name) {
            (Some(t), _) => vec![t.to_string()],
            (None, Some(n)) => vec![n.clone()],
            (None, None) => vec![],
        };
        let m = rbuild_image::read_manifest(store, &img.manifest)?;
        let cfg = rbuild_image::read_config(store, &img.config)?;
        let rec = rbuild_store::ImageRecord {
            manifest: img.manifest.clone(),
            config: img.config.clone(),
            media_type: m
                .media_type
                .clone()
                .unwrap_or_else(|| rbuild_oci::MEDIA_TYPE_OCI_MANIFEST.to_string()),
            size: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
            created: cfg.created.clone(),
        };
        for n in &names {
            store.put_image(n, &rec)?;
            println!("Loaded image: {n}");
        }
        if names.is_empty() {
            println!("Loaded image ID: {}", img.config);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn save(
    store: &Store,
    image: &str,
    output: &Path,
    format: SaveFormat,
) -> anyhow::Result<ExitCode> {
    let (name, rec) = find(store, image)?;
    let names: Vec<String> = name.into_iter().collect();
    let f =
        std::fs::File::create(output).with_context(|| format!("creating {}", output.display()))?;
    let mut w = std::io::BufWriter::new(f);
    // On a terminal, the live view shows the bytes of each layer; otherwise save is silent.
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr())
        .then(|| crate::progress::Progress::start(crate::progress::Mode::Tty, None));
    let sink = progress
        .as_ref()
        .map_or_else(rbuild_solver::EventSink::discard, |p| p.sink());
    let step = rbuild_engine::step::Step::start(
        &sink,
        match format {
            SaveFormat::Docker => "exporting to docker image format",
            SaveFormat::Oci => "exporting to oci image format",
        },
    );
    let report = |p: rbuild_image::ExportProgress<'_>| step.export(p);
    let r = match format {
        SaveFormat::Docker => rbuild_image::export_docker_archive_reporting(
            store,
            &rec.manifest,
            &names,
            &mut w,
            &report,
        ),
        SaveFormat::Oci => rbuild_image::export_oci_reporting(
            store,
            &rec.manifest,
            &names,
            Some(rbuild_oci::Compression::Gzip),
            None,
            rbuild_image::OciDest::Tar(&mut w),
            &report,
        )
        .map(|_| ()),
    }
    .map_err(anyhow::Error::from)
    .and_then(|()| std::io::Write::flush(&mut w).map_err(anyhow::Error::from));
    step.finish(&r);
    // The renderer ends when every sender is gone.
    drop(sink);
    if let Some(p) = progress {
        match &r {
            Ok(()) => p.finish_with(rbuild_engine::Summary {
                id: rec.config.to_string(),
                digest: rec.manifest.to_string(),
                size: rec.size,
            }),
            Err(_) => p.finish(),
        }
    }
    r?;
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(store: &Store, image: &str) -> anyhow::Result<ExitCode> {
    let (name, rec) = find(store, image)?;
    let manifest = rbuild_image::read_manifest(store, &rec.manifest)?;
    let config = rbuild_image::read_config(store, &rec.config)?;
    let v = serde_json::json!({
        "Name": name,
        "Id": rec.config.to_string(),
        "Digest": rec.manifest.to_string(),
        "Size": rec.size,
        "Manifest": manifest,
        "Config": config,
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(ExitCode::SUCCESS)
}

pub fn history(store: &Store, image: &str, no_trunc: bool) -> anyhow::Result<ExitCode> {
    let (_, rec) = find(store, image)?;
    let manifest = rbuild_image::read_manifest(store, &rec.manifest)?;
    let config = rbuild_image::read_config(store, &rec.config)?;
    let mut layers = manifest.layers.iter();
    let mut rows = Vec::new();
    for h in &config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map(|l| l.size).unwrap_or(0)
        };
        let mut by = h.created_by.clone().unwrap_or_default();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        rows.push([
            ago(h.created.as_deref()),
            by,
            crate::progress::human(size),
            h.comment.clone().unwrap_or_default(),
        ]);
    }
    rows.reverse();
    print_table(&["CREATED", "CREATED BY", "SIZE", "COMMENT"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub fn tag(store: &Store, source: &str, target: &str) -> anyhow::Result<ExitCode> {
    let (_, rec) = find(store, source)?;
    store
        .put_image(target, &rec)
        .with_context(|| format!("tagging {target}"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split() {
        assert_eq!(split_name("a:b"), ("a".into(), "b".into()));
        assert_eq!(
            split_name("localhost:5000/a"),
            ("localhost:5000/a".into(), "latest".into())
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951868800));
    }
}
