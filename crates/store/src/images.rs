//! Image names → manifests. The image id is the config digest.

use crate::error::{Result, StoreError};
use crate::Store;
use rbuild_oci::Digest;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// What the store remembers about a named image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the manifest blob.
    pub manifest: Digest,
    /// Digest of the config blob: the image id.
    pub config: Digest,
    /// Media type of the manifest.
    pub media_type: String,
    /// Sum of the layer blobs' and the config's sizes.
    pub size: u64,
    /// The config's `created`, if any.
    pub created: Option<String>,
}

/// Normalize an image name as docker does, to the one key every spelling of it shares: Docker Hub's
/// `docker.io/`, `index.docker.io/` and `library/` prefixes are dropped (`docker.io/library/base`,
/// `index.docker.io/library/base`, `library/base` and `base` are all `base:latest`;
/// `docker.io/user/app` is `user/app:latest`), another registry stays (`localhost:5000/app` →
/// `localhost:5000/app:latest`), and a name without a tag or digest gets `:latest`. The key is
/// docker's familiar form, which is also what `rbuild images` prints; [`qualified_name`] gives the
/// fully qualified one. Rejects empty names, whitespace and control characters, and over-long names.
pub fn normalize_name(name: &str) -> Result<String> {
    let plain = legacy_normalize_name(name)?;
    Ok(familiar(&plain))
}

/// The fully qualified form of a name: `base` → `docker.io/library/base:latest`.
pub fn qualified_name(name: &str) -> Result<String> {
    let n = normalize_name(name)?;
    let (domain, _) = split_domain(&n);
    Ok(match domain {
        Some(_) => n,
        None if n.contains('/') => format!("docker.io/{n}"),
        None => format!("docker.io/library/{n}"),
    })
}

/// `(Some(registry), rest)` when the first component of `name` is a registry (it has a `.` or a
/// `:`, or is `localhost`), else `(None, name)`.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// Docker's familiar form of a name that already has its tag or digest.
fn familiar(name: &str) -> String {
    let (domain, rest) = split_domain(name);
    let rest = match domain {
        Some("docker.io" | "index.docker.io") => rest,
        Some(_) => return name.to_string(),
        None => rest,
    };
    // `library/x` is `x`; `library/a/b` stays (docker only drops it before a single component).
    match rest.strip_prefix("library/") {
        Some(short) if !short.split(['@']).next().unwrap_or(short).contains('/') => {
            short.to_string()
        }
        _ => rest.to_string(),
    }
}

/// The normalization before docker's rules (only `:latest` added): how names were stored by
/// earlier versions, looked up too so such stores keep working before they are migrated.
fn legacy_normalize_name(name: &str) -> Result<String> {
    let invalid = |reason| StoreError::InvalidName {
        name: name.chars().take(300).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 512 {
        return Err(invalid("longer than 512 bytes"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains whitespace or control characters"));
    }
    if name.starts_with(['/', ':', '@']) || name.ends_with(['/', ':', '@']) {
        return Err(invalid("starts or ends with '/', ':' or '@'"));
    }
    if name.contains('@') {
        return Ok(name.to_string());
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        Ok(name.to_string())
    } else {
        Ok(format!("{name}:latest"))
    }
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<(String, RawRecord)> {
    Ok((
        row.get(0)?,
        RawRecord {
            manifest: row.get(1)?,
            config: row.get(2)?,
            media_type: row.get(3)?,
            size: row.get(4)?,
            created: row.get(5)?,
        },
    ))
}

const SELECT: &str = "SELECT name, manifest, config, media_type, size, created FROM images";

struct RawRecord {
    manifest: String,
    config: String,
    media_type: String,
    size: i64,
    created: Option<String>,
}

impl Store {
    fn parse_record(&self, name: &str, raw: RawRecord) -> Result<ImageRecord> {
        let bad = |reason: String| StoreError::CorruptRecord {
            table: "images",
            key: name.to_string(),
            path: self.db_path().to_path_buf(),
            reason,
        };
        Ok(ImageRecord {
            manifest: raw.manifest.parse().map_err(|e| bad(format!("{e}")))?,
            config: raw.config.parse().map_err(|e| bad(format!("{e}")))?,
            media_type: raw.media_type,
            size: u64::try_from(raw.size)
                .map_err(|_| bad(format!("negative size {}", raw.size)))?,
            created: raw.created,
        })
    }

    /// Name an image (replacing what the name pointed at before).
    pub fn put_image(&self, name: &str, rec: &ImageRecord) -> Result<()> {
        let name = normalize_name(name)?;
        // The ref file first: if we crash between the two, fsck finds the name in refs/.
        self.write_ref(&name, rec)?;
        crate::crash_point("tag");
        self.put_image_row(&name, rec)
    }

    pub(crate) fn put_image_row(&self, name: &str, rec: &ImageRecord) -> Result<()> {
        // Re-tagging the same image (every no-op rebuild) changes nothing and writes no page.
        self.db(|c| {
            c.prepare_cached(
                "INSERT INTO images (name, manifest, config, media_type, size, created, updated_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET manifest=excluded.manifest,
                   config=excluded.config, media_type=excluded.media_type, size=excluded.size,
                   created=excluded.created, updated_ns=excluded.updated_ns
                 WHERE manifest IS NOT excluded.manifest OR config IS NOT excluded.config
                   OR media_type IS NOT excluded.media_type OR size IS NOT excluded.size
                   OR created IS NOT excluded.created",
            )?
            .execute(params![
                name,
                rec.manifest.to_string(),
                rec.config.to_string(),
                rec.media_type,
                rec.size.min(i64::MAX as u64) as i64,
                rec.created,
                crate::db::now_ns()
            ])
        })?;
        Ok(())
    }

    /// The image a name points at (`busybox` finds `busybox:latest`, so do
    /// `docker.io/library/busybox` and `library/busybox:latest`).
    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self.get_image_named(name)?.map(|(_, r)| r))
    }

    /// [`get_image`](Self::get_image), with the name the image is stored under.
    fn get_image_named(&self, name: &str) -> Result<Option<(String, ImageRecord)>> {
        let (Ok(key), Ok(old)) = (normalize_name(name), legacy_normalize_name(name)) else {
            return Ok(None);
        };
        // A store not migrated yet (read-only) may hold the name as it was written.
        for n in [&key, &old, &qualified_name(name)?] {
            let raw = self.db(|c| {
                c.query_row(&format!("{SELECT} WHERE name = ?1"), [n], record_from_row)
                    .optional()
            })?;
            if let Some((n, r)) = raw {
                return Ok(Some((n.clone(), self.parse_record(&n, r)?)));
            }
        }
        Ok(None)
    }

    /// Rename the images stored under a name that is not its normalized key (written before names
    /// were normalized as docker does, e.g. `docker.io/library/base:latest` from an archive) to
    /// that key; where both exist, the more recently updated wins. Best effort: a read-only store
    /// is left as it is (lookups find both forms). Returns how many names were changed.
    pub fn migrate_image_names(&self) -> Result<usize> {
        let rows = self.db(|c| {
            let mut stmt = c.prepare("SELECT name, updated_ns FROM images")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let mut changed = 0;
        for (name, updated) in &rows {
            let Ok(key) = normalize_name(name) else {
                continue;
            };
            if &key == name {
                continue;
            }
            let Some((_, rec)) = self.get_raw(name)? else {
                continue;
            };
            let newer = match rows.iter().find(|(n, _)| n == &key) {
                Some((_, theirs)) => updated > theirs,
                None => true,
            };
            if newer {
                self.write_ref(&key, &rec)?;
                self.put_image_row(&key, &rec)?;
            }
            self.db(|c| c.execute("DELETE FROM images WHERE name = ?1", [name]))?;
            self.remove_ref(name)?;
            changed += 1;
        }
        Ok(changed)
    }

    fn get_raw(&self, name: &str) -> Result<Option<(String, ImageRecord)>> {
        let raw = self.db(|c| {
            c.query_row(
                &format!("{SELECT} WHERE name = ?1"),
                [name],
                record_from_row,
            )
            .optional()
        })?;
        raw.map(|(n, r)| Ok((n.clone(), self.parse_record(&n, r)?)))
            .transpose()
    }

    /// Find an image by name, by `sha256:<id>`, or by a hex prefix (at least 4 digits) of its id.
    /// Returns the name it was found under (the first name in order for id lookups).
    /// An id prefix matching more than one image is an error.
    pub fn find_image(&self, name_or_id: &str) -> Result<Option<(Option<String>, ImageRecord)>> {
        if let Some((name, rec)) = self.get_image_named(name_or_id)? {
            return Ok(Some((Some(name), rec)));
        }
        let prefix = if let Ok(d) = name_or_id.parse::<Digest>() {
            d.to_string()
        } else {
            let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
            if hex.len() < 4
                || hex.len() > 64
                || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Ok(None);
            }
            format!("sha256:{hex}")
        };
        // Hex digits only (checked above), so LIKE needs no escaping.
        let rows = self.db(|c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT} WHERE config LIKE ?1 || '%' ORDER BY name"
            ))?;
            let rows = stmt
                .query_map([&prefix], record_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let mut configs: Vec<&str> = rows.iter().map(|(_, r)| r.config.as_str()).collect();
        configs.sort_unstable();
        configs.dedup();
        if configs.len() > 1 {
            return Err(StoreError::AmbiguousId {
                prefix: name_or_id.to_string(),
                candidates: configs.iter().map(|c| c.to_string()).collect(),
            });
        }
        match rows.into_iter().next() {
            Some((n, r)) => {
                let rec = self.parse_record(&n, r)?;
                Ok(Some((Some(n), rec)))
            }
            None => Ok(None),
        }
    }

    /// All named images, sorted by name.
    pub fn list_images(&self) -> Result<Vec<(String, ImageRecord)>> {
        let rows = self.db(|c| {
            let mut stmt = c.prepare(&format!("{SELECT} ORDER BY name"))?;
            let rows = stmt
                .query_map([], record_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(n, r)| {
                let rec = self.parse_record(&n, r)?;
                Ok((n, rec))
            })
            .collect()
    }

    /// Remove a name; `false` if it did not exist. Blobs stay until [`Store::prune`].
    pub fn remove_image(&self, name: &str) -> Result<bool> {
        let Ok(Some((name, _))) = self.get_image_named(name) else {
            return Ok(false);
        };
        self.changing(|| {
            let n = self.db(|c| c.execute("DELETE FROM images WHERE name = ?1", [&name]))?;
            self.remove_ref(&name)?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(config_byte: u8) -> ImageRecord {
        ImageRecord {
            manifest: Digest::sha256_of(&[config_byte, 1]),
            config: format!("sha256:{}", hex_of(config_byte)).parse().unwrap(),
            media_type: rbuild_oci::MEDIA_TYPE_OCI_MANIFEST.into(),
            size: 42,
            created: Some("2024-01-01T00:00:00Z".into()),
        }
    }

    fn hex_of(b: u8) -> String {
        // Distinct leading digits so prefixes are predictable.
        let c = char::from_digit(u32::from(b) % 16, 16).unwrap();
        format!("{c}{c}{c}{c}{}", "0".repeat(60))
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_name("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize_name("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(
            normalize_name("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_name("localhost:5000/app:v1").unwrap(),
            "localhost:5000/app:v1"
        );
        for bad in ["", "a b", "x\n", "/abs", "trail:", &"a".repeat(600)] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
        // Docker's rules: every spelling of a Docker Hub name is one key, its familiar form.
        let d = "sha256:".to_string() + &"a".repeat(64);
        for (input, key, full) in [
            ("base", "base:latest", "docker.io/library/base:latest"),
            (
                "base:latest",
                "base:latest",
                "docker.io/library/base:latest",
            ),
            (
                "library/base",
                "base:latest",
                "docker.io/library/base:latest",
            ),
            (
                "docker.io/base",
                "base:latest",
                "docker.io/library/base:latest",
            ),
            (
                "docker.io/library/base:latest",
                "base:latest",
                "docker.io/library/base:latest",
            ),
            (
                "index.docker.io/library/base:1",
                "base:1",
                "docker.io/library/base:1",
            ),
            (
                "docker.io/user/app",
                "user/app:latest",
                "docker.io/user/app:latest",
            ),
            (
                "library/a/b",
                "library/a/b:latest",
                "docker.io/library/a/b:latest",
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/app",
                "localhost:5000/app:latest",
                "localhost:5000/app:latest",
            ),
            ("quay.io/x/y:v", "quay.io/x/y:v", "quay.io/x/y:v"),
        ] {
            assert_eq!(normalize_name(input).unwrap(), key, "{input}");
            assert_eq!(qualified_name(input).unwrap(), full, "{input}");
        }
        assert_eq!(
            normalize_name(&format!("docker.io/library/base@{d}")).unwrap(),
            format!("base@{d}")
        );
        assert_eq!(
            qualified_name(&format!("base@{d}")).unwrap(),
            format!("docker.io/library/base@{d}")
        );
    }

    #[test]
    fn every_spelling_finds_the_image_and_old_names_migrate() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        s.put_image("docker.io/library/base:latest", &rec(1))
            .unwrap();
        for n in [
            "base",
            "base:latest",
            "library/base",
            "docker.io/base",
            "index.docker.io/library/base:latest",
        ] {
            assert_eq!(s.get_image(n).unwrap(), Some(rec(1)), "{n}");
            let (name, _) = s.find_image(n).unwrap().unwrap();
            assert_eq!(name.as_deref(), Some("base:latest"), "{n}");
        }
        assert_eq!(s.list_images().unwrap()[0].0, "base:latest");
        // A store written before: the name as it came (an archive's fully qualified one).
        s.put_image_row("docker.io/library/old:latest", &rec(2))
            .unwrap();
        s.write_ref("docker.io/library/old:latest", &rec(2))
            .unwrap();
        assert_eq!(
            s.get_image("old").unwrap(),
            Some(rec(2)),
            "found before migrating"
        );
        assert_eq!(s.migrate_image_names().unwrap(), 1);
        let names: Vec<String> = s
            .list_images()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["base:latest", "old:latest"]);
        assert_eq!(s.get_image("docker.io/library/old").unwrap(), Some(rec(2)));
        assert!(s.remove_image("docker.io/old:latest").unwrap());
        assert_eq!(s.get_image("old").unwrap(), None);
    }

    #[test]
    fn names_and_ids() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        s.put_image("busybox", &rec(1)).unwrap();
        s.put_image("app:v1", &rec(2)).unwrap();
        s.put_image("app:v2", &rec(2)).unwrap();
        // "busybox" == "busybox:latest"
        assert_eq!(s.get_image("busybox:latest").unwrap(), Some(rec(1)));
        assert_eq!(s.get_image("busybox").unwrap(), Some(rec(1)));
        let (n, r) = s.find_image("busybox").unwrap().unwrap();
        assert_eq!((n.as_deref(), r), (Some("busybox:latest"), rec(1)));
        // Short id, full id, sha256: form.
        let (n, r) = s.find_image("1111").unwrap().unwrap();
        assert_eq!((n.as_deref(), r.clone()), (Some("busybox:latest"), rec(1)));
        assert_eq!(
            s.find_image(&rec(1).config.to_string()).unwrap().unwrap().1,
            rec(1)
        );
        assert_eq!(
            s.find_image(rec(1).config.hex()).unwrap().unwrap().1,
            rec(1)
        );
        // Two names, one id: not ambiguous; the first name is reported.
        let (n, _) = s.find_image("2222").unwrap().unwrap();
        assert_eq!(n.as_deref(), Some("app:v1"));
        // Too short, unknown.
        assert!(s.find_image("111").unwrap().is_none());
        assert!(s.find_image("9999").unwrap().is_none());
        // Ambiguous: two ids sharing a prefix.
        let mut r3 = rec(3);
        r3.config = format!("sha256:1111{}", "f".repeat(60)).parse().unwrap();
        s.put_image("other", &r3).unwrap();
        assert!(matches!(
            s.find_image("1111"),
            Err(StoreError::AmbiguousId { .. })
        ));
        assert_eq!(s.list_images().unwrap().len(), 4);
        assert!(s.remove_image("app:v1").unwrap());
        assert!(!s.remove_image("app:v1").unwrap());
        assert_eq!(s.list_images().unwrap().len(), 3);
        // Re-tagging replaces.
        s.put_image("busybox", &rec(4)).unwrap();
        assert_eq!(s.get_image("busybox").unwrap(), Some(rec(4)));
    }
}
