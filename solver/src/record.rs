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

/// The reason a vertex missed, comparing its current inputs with the closest earlier record.
pub fn explain_miss(now: &Explain, earlier: Option<&Explain>, files: &FileListing<'_>) -> String {
    let Some(old) = earlier else {
        return "no earlier build of this step".to_string();
    };
    if old.instruction != now.instruction {
        return format!("instruction changed (was: {})", old.instruction);
    }
    // The op itself (command, env, user, workdir…).
    if old.op != now.op {
        if let Some(why) = diff_op(&old.op, &now.op) {
            return why;
        }
        return "step definition changed".to_string();
    }
    for (i, (key, label)) in now.inputs.iter().enumerate() {
        match old.inputs.get(i) {
            Some((k, _)) if k == key => {}
            _ => {
                if label.contains("FROM ") || label.starts_with("image ") {
                    return "base image digest changed".to_string();
                }
                return format!("parent step changed: {label}");
            }
        }
    }
    for (idx, c) in &now.content {
        match old.content.get(idx) {
            Some(o) if o.checksum == c.checksum => {}
            Some(o) => {
                if let (Some(a), Some(b)) = (&o.files, &c.files) {
                    if let (Some(a), Some(b)) = (files(a), files(b)) {
                        if let Some(why) = diff_files(&a, &b) {
                            return why;
                        }
                    }
                }
                return "build context files changed".to_string();
            }
            None => return "build context files changed".to_string(),
        }
    }
    "an input changed".to_string()
}

fn diff_op(old: &serde_json::Value, now: &serde_json::Value) -> Option<String> {
    let (o, n) = (old.get("exec")?, now.get("exec")?);
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
    for (k, v) in &en {
        match eo.get(k) {
            Some(ov) if ov == v => {}
            Some(_) => return Some(format!("build arg or env {k} changed")),
            None => return Some(format!("build arg or env {k} added")),
        }
    }
    if let Some(k) = eo.keys().find(|k| !en.contains_key(*k)) {
        return Some(format!("build arg or env {k} removed"));
    }
    for (field, what) in [
        ("cwd", "WORKDIR"),
        ("user", "USER"),
        ("args", "command"),
        ("network", "network mode"),
        ("mounts", "mounts"),
    ] {
        if o.get(field) != n.get(field) {
            return Some(format!("{what} changed"));
        }
    }
    None
}

fn diff_files(old: &[(String, String)], now: &[(String, String)]) -> Option<String> {
    let o: BTreeMap<&str, &str> = old.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let n: BTreeMap<&str, &str> = now.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    for (p, d) in &n {
        match o.get(p) {
            Some(od) if od == d => {}
            Some(od) => {
                let what = if od.split(':').next_back() == d.split(':').next_back() {
                    "metadata"
                } else {
                    "content"
                };
                return Some(format!("{p} changed ({what})"));
            }
            None => return Some(format!("{p} added")),
        }
    }
    o.keys()
        .find(|p| !n.contains_key(*p))
        .map(|p| format!("{p} removed"))
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
        }
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
            "build arg or env V changed"
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
        assert_eq!(diff_files(&a, &b).unwrap(), "a changed (content)");
        let c = vec![("a".to_string(), "m2:c1".to_string())];
        assert_eq!(diff_files(&a, &c).unwrap(), "a changed (metadata)");
        assert_eq!(diff_files(&a, &[]).unwrap(), "a removed");
    }
}
