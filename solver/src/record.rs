//! Cache records: what a finished vertex leaves in the store's database so a later build (on this
//! machine, or — through a registry cache — on another) can reuse it, and what it remembers of its
//! inputs so a later miss can be explained.

use rbuild_oci::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The value stored under a cache key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Name of the committed snapshot holding this vertex's filesystem.
    pub snapshot: String,
    /// The layer this vertex added on top of its rootfs input (None: the step changed nothing,
    /// or the vertex is a source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerInfo>,
    /// The full chain of layers of the vertex's filesystem, bottom first.
    pub chain: Vec<LayerInfo>,
    /// Unix seconds.
    pub created: i64,
    /// What the vertex was made from, for explaining later misses.
    pub explain: Explain,
    /// Every blob this record needs (the store's prune and fsck read this list).
    #[serde(default)]
    pub blobs: Vec<Digest>,
}

impl CacheRecord {
    pub fn new(
        snapshot: String,
        layer: Option<LayerInfo>,
        chain: Vec<LayerInfo>,
        created: i64,
        explain: Explain,
    ) -> Self {
        let mut blobs: Vec<Digest> = chain.iter().map(|l| l.blob.clone()).collect();
        blobs.extend(explain.content.values().filter_map(|c| c.files.clone()));
        CacheRecord {
            snapshot,
            layer,
            chain,
            created,
            explain,
            blobs,
        }
    }
}

/// One layer: its uncompressed digest (diff_id) and the blob that holds it in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub diff_id: Digest,
    pub blob: Digest,
    pub media_type: String,
    pub size: u64,
}

/// The inputs of a key, remembered for explanations.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Explain {
    /// Stage name and instruction text: how a later build finds "the same step".
    pub stage: String,
    pub instruction: String,
    pub line: u32,
    /// The op's definition as JSON.
    pub op: serde_json::Value,
    /// Input keys and their labels.
    pub inputs: Vec<(Digest, String)>,
    /// Context selections: action index -> (checksum, blob listing the files).
    #[serde(default)]
    pub content: BTreeMap<usize, ContentInfo>,
    /// The names of the op's env that come from `ARG`s (VertexMeta::arg_names), to tell
    /// `build arg X changed` from `env X changed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContentInfo {
    pub checksum: Digest,
    /// A blob in the store with the per-file listing (JSON `[[path, digest-of-metadata-and-content]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Digest>,
}

/// Reads a per-file listing blob: `[(path, metadata:content)]`.
pub type FileListing<'a> = dyn Fn(&Digest) -> Option<Vec<(String, String)>> + 'a;

/// The reason a vertex missed, comparing its current inputs with the closest earlier record: the
/// first difference of [`explain_all`].
pub fn explain_miss(now: &Explain, earlier: Option<&Explain>, files: &FileListing<'_>) -> String {
    explain_all(now, earlier, files)
        .into_iter()
        .next()
        .unwrap_or_else(|| "an input changed".to_string())
}

/// Every difference between a vertex's current inputs and the closest earlier record, most
/// telling first (instruction, then the step's own definition, then parent steps, then files).
/// `rbuild build --explain` prints them all.
pub fn explain_all(
    now: &Explain,
    earlier: Option<&Explain>,
    files: &FileListing<'_>,
) -> Vec<String> {
    let Some(old) = earlier else {
        return vec!["no earlier build of this step".to_string()];
    };
    let mut out = Vec::new();
    if old.instruction != now.instruction {
        out.push(format!("instruction changed (was: {})", old.instruction));
    }
    // The op itself (command, env, user, workdir…).
    if old.op != now.op {
        let why = diff_op(old, now);
        if why.is_empty() {
            out.push("step definition changed".to_string());
        }
        out.extend(why);
    }
    for (i, (key, label)) in now.inputs.iter().enumerate() {
        match old.inputs.get(i) {
            Some((k, _)) if k == key => {}
            _ => {
                if label.contains("FROM ") || label.starts_with("image ") {
                    out.push("base image digest changed".to_string());
                } else {
                    out.push(parent_changed(&now.stage, label));
                }
            }
        }
    }
    for (idx, c) in &now.content {
        match old.content.get(idx) {
            Some(o) if o.checksum == c.checksum => {}
            Some(o) => {
                let listed = match (&o.files, &c.files) {
                    (Some(a), Some(b)) => files(a).zip(files(b)),
                    _ => None,
                };
                match listed.map(|(a, b)| diff_files(&a, &b)) {
                    Some(d) if !d.is_empty() => out.extend(d),
                    _ => out.push("build context files changed".to_string()),
                }
            }
            None => out.push("build context files changed".to_string()),
        }
    }
    if old.content.keys().any(|k| !now.content.contains_key(k)) {
        out.push("build context files changed".to_string());
    }
    out
}

/// How far an earlier record is from the current inputs (0: identical); picks the closest record
/// to explain a miss against.
pub fn distance(now: &Explain, old: &Explain) -> usize {
    let mut d = 0;
    if old.instruction != now.instruction {
        d += 4;
    }
    if old.op != now.op {
        d += diff_op(old, now).len().max(1);
    }
    d += now
        .inputs
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| old.inputs.get(*i).map(|(ok, _)| ok) != Some(k))
        .count();
    d += old.inputs.len().saturating_sub(now.inputs.len());
    d += now
        .content
        .iter()
        .filter(|(i, c)| old.content.get(i).map(|o| &o.checksum) != Some(&c.checksum))
        .count();
    d
}

/// `parent step 3 changed: [stage-1 3/7] COPY app/ /app/` for a parent labelled with its step
/// number (`parent step build 2 changed: …` when it belongs to another stage), else
/// `parent step changed: <label>`.
fn parent_changed(stage: &str, label: &str) -> String {
    let step = label
        .strip_prefix('[')
        .and_then(|l| l.split_once(']'))
        .and_then(|(inner, _)| {
            let (prefix, num) = inner.trim().rsplit_once(' ').unwrap_or(("", inner.trim()));
            let (i, n) = num.split_once('/')?;
            i.trim().parse::<u32>().ok()?;
            n.trim().parse::<u32>().ok()?;
            Some((prefix.trim().to_string(), i.trim().to_string()))
        });
    match step {
        Some((p, i)) if p.is_empty() || p == stage => format!("parent step {i} changed: {label}"),
        Some((p, i)) => format!("parent step {p} {i} changed: {label}"),
        None => format!("parent step changed: {label}"),
    }
}

fn diff_op(old_ex: &Explain, now_ex: &Explain) -> Vec<String> {
    let (old, now) = (&old_ex.op, &now_ex.op);
    let mut out = Vec::new();
    let (Some(o), Some(n)) = (old.get("exec"), now.get("exec")) else {
        return out;
    };
    let env = |v: &serde_json::Value| -> BTreeMap<String, String> {
        v.get("env")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .map(|s| {
                        let (k, v) = s.split_once('=').unwrap_or((s, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (eo, en) = (env(o), env(n));
    // An ARG now (or, for a removed name, then) says "build arg"; an ENV "env".
    let kind = |k: &str, ex: &Explain| {
        if ex.args.iter().any(|a| a == k) {
            "build arg"
        } else {
            "env"
        }
    };
    for (k, v) in &en {
        match eo.get(k) {
            Some(ov) if ov == v => {}
            Some(_) => out.push(format!("{} {k} changed", kind(k, now_ex))),
            None => out.push(format!("{} {k} added", kind(k, now_ex))),
        }
    }
    for k in eo.keys().filter(|k| !en.contains_key(*k)) {
        out.push(format!("{} {k} removed", kind(k, old_ex)));
    }
    let shown = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if s.is_empty() => "root".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "default".to_string(),
    };
    for (field, what, values) in [
        ("cwd", "WORKDIR", true),
        ("user", "USER", true),
        ("args", "command", false),
        ("network", "network mode", true),
        ("security", "security mode", true),
        ("mounts", "mounts", false),
    ] {
        let (a, b) = (o.get(field), n.get(field));
        if a != b {
            if values {
                out.push(format!(
                    "{what} changed (was: {}, now: {})",
                    shown(a),
                    shown(b)
                ));
            } else {
                out.push(format!("{what} changed"));
            }
        }
    }
    out
}

/// A listing entry's value: `<kind><mode-octal>:<uid>:<gid>:<link target>:<content digest>`.
/// Records written before the metadata was kept in clear hold a hash instead; those compare as
/// "metadata".
fn split_entry(v: &str) -> (&str, &str) {
    v.rsplit_once(':').unwrap_or(("", v))
}

fn describe_meta(old: &str, now: &str) -> String {
    let parse = |m: &str| -> Option<(char, String, String, String)> {
        let mut it = m.splitn(4, ':');
        let km = it.next()?;
        let kind = km.chars().next()?;
        let mode = km[kind.len_utf8()..].to_string();
        let owner = format!("{}:{}", it.next()?, it.next()?);
        Some((kind, mode, owner, it.next()?.to_string()))
    };
    let (Some(a), Some(b)) = (parse(old), parse(now)) else {
        return "metadata".to_string();
    };
    if a.0 != b.0 {
        "type".to_string()
    } else if a.1 != b.1 {
        format!("mode {} -> {}", a.1, b.1)
    } else if a.2 != b.2 {
        format!("owner {} -> {}", a.2, b.2)
    } else if a.3 != b.3 {
        format!("symlink target {} -> {}", a.3, b.3)
    } else {
        "metadata".to_string()
    }
}

/// Every difference between two per-file listings: changed files first, then renames (a removed
/// path whose content reappears under an added path), then additions, then removals.
fn diff_files(old: &[(String, String)], now: &[(String, String)]) -> Vec<String> {
    let o: BTreeMap<&str, &str> = old.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let n: BTreeMap<&str, &str> = now.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut out = Vec::new();
    let mut added: Vec<&str> = Vec::new();
    for (p, d) in &n {
        match o.get(p) {
            Some(od) if od == d => {}
            Some(od) => {
                let ((om, oc), (nm, nc)) = (split_entry(od), split_entry(d));
                let what = if oc != nc {
                    "content".to_string()
                } else {
                    describe_meta(om, nm)
                };
                out.push(format!("{p} changed ({what})"));
            }
            None => added.push(p),
        }
    }
    let mut removed: Vec<&str> = o.keys().copied().filter(|p| !n.contains_key(p)).collect();
    let mut renames = Vec::new();
    removed.retain(|r| {
        let content = split_entry(o[r]).1;
        if content.is_empty() {
            return true;
        }
        match added.iter().position(|a| split_entry(n[a]).1 == content) {
            Some(i) => {
                renames.push(format!("{r} renamed to {}", added.remove(i)));
                false
            }
            None => true,
        }
    });
    out.extend(renames);
    out.extend(added.iter().map(|p| format!("{p} added")));
    out.extend(removed.iter().map(|p| format!("{p} removed")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(instr: &str, env: &[&str]) -> Explain {
        Explain {
            stage: "stage-0".into(),
            instruction: instr.into(),
            line: 3,
            op: serde_json::json!({"exec": {"env": env, "cwd": "/", "args": ["sh"]}}),
            inputs: vec![],
            content: BTreeMap::new(),
            args: vec!["V".into()],
        }
    }

    #[test]
    fn parents_and_env_kinds() {
        let none = |_: &Digest| None;
        assert_eq!(
            explain_miss(&ex("RUN a", &["E=2"]), Some(&ex("RUN a", &["E=1"])), &none),
            "env E changed"
        );
        assert_eq!(
            explain_all(&ex("RUN a", &[]), Some(&ex("RUN a", &["V=1"])), &none),
            ["build arg V removed"]
        );
        assert_eq!(
            parent_changed("stage-0", "[stage-0  3/12] COPY . /app"),
            "parent step 3 changed: [stage-0  3/12] COPY . /app"
        );
        assert_eq!(
            parent_changed("stage-1", "[build 2/4] RUN make"),
            "parent step build 2 changed: [build 2/4] RUN make"
        );
        assert_eq!(
            parent_changed("s", "[2/4] RUN make"),
            "parent step 2 changed: [2/4] RUN make"
        );
        assert_eq!(
            parent_changed("s", "[internal] load build context"),
            "parent step changed: [internal] load build context"
        );
        let mut now = ex("RUN a", &[]);
        let mut old = ex("RUN a", &[]);
        now.inputs = vec![(Digest::sha256_of(b"2"), "[stage-0 1/3] FROM busybox".into())];
        old.inputs = vec![(Digest::sha256_of(b"1"), "[stage-0 1/3] FROM busybox".into())];
        assert_eq!(
            explain_miss(&now, Some(&old), &none),
            "base image digest changed"
        );
    }

    #[test]
    fn explains() {
        let none = |_: &Digest| None;
        assert_eq!(
            explain_miss(&ex("RUN a", &[]), None, &none),
            "no earlier build of this step"
        );
        assert_eq!(
            explain_miss(&ex("RUN a", &["V=2"]), Some(&ex("RUN a", &["V=1"])), &none),
            "build arg V changed"
        );
        assert!(
            explain_miss(&ex("RUN b", &[]), Some(&ex("RUN a", &[])), &none)
                .starts_with("instruction changed")
        );
    }

    #[test]
    fn file_diffs() {
        let a = vec![("a".to_string(), "m1:c1".to_string())];
        let b = vec![("a".to_string(), "m1:c2".to_string())];
        assert_eq!(diff_files(&a, &b), ["a changed (content)"]);
        let c = vec![("a".to_string(), "m2:c1".to_string())];
        assert_eq!(diff_files(&a, &c), ["a changed (metadata)"]);
        assert_eq!(diff_files(&a, &[]), ["a removed"]);
        let f = |p: &str, m: &str, c: &str| (p.to_string(), format!("{m}:{c}"));
        let old = vec![f("x", "f644:0:0:", "c1"), f("y", "f644:0:0:", "c2")];
        let now = vec![f("x", "f755:0:0:", "c1"), f("z", "f644:0:0:", "c2")];
        assert_eq!(
            diff_files(&old, &now),
            ["x changed (mode 644 -> 755)", "y renamed to z"]
        );
        let now = vec![f("x", "f644:1:1:", "c1"), f("w", "f644:0:0:", "c9")];
        assert_eq!(
            diff_files(&old, &now),
            ["x changed (owner 0:0 -> 1:1)", "w added", "y removed"]
        );
    }
}
