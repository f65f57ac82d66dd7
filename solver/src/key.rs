//! Cache keys. A vertex's key is the sha256 of a canonical encoding of its definition, its inputs'
//! keys and — for copies out of a local context — the content checksum of exactly the files the
//! copy selects. Keys are made through this one encoding (never Rust's `Hash`), so they are stable
//! across machines and releases; bump [`KEY_VERSION`] when the encoding must change.

use rbuild_oci::Digest;
use rbuild_ops::{ExecOp, Op, Source};
use serde::Serialize;

/// Part of every key: changing the encoding must invalidate old records, not collide with them.
pub const KEY_VERSION: u32 = 2;

/// What goes into a key, in canonical form.
#[derive(Serialize)]
struct KeyMaterial<'a> {
    v: u32,
    op: KeyedOp<'a>,
    inputs: &'a [Digest],
    /// Content checksums of context selections, one per Copy action reading a local context, by
    /// action index.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    content: &'a [(usize, Digest)],
}

/// The op, minus what must not feed a key: unkeyed proxy env, and an image's reference (a FROM is
/// keyed by its resolved manifest digest alone, so `busybox` and `127.0.0.1:5000/busybox` naming
/// the same image share cache records across machines).
#[derive(Serialize)]
#[serde(untagged)]
enum KeyedOp<'a> {
    Exec(Box<ExecOp>),
    Image {
        image: &'a Digest,
    },
    Git {
        git: String,
        subdir: &'a Option<String>,
        keep_git_dir: bool,
    },
    Other(&'a Op),
}

/// Compute the key of a vertex from its op, its inputs' keys and its context content checksums.
pub fn vertex_key(op: &Op, inputs: &[Digest], content: &[(usize, Digest)]) -> Digest {
    let keyed = match op {
        Op::Exec(e) => {
            let mut e = e.clone();
            e.unkeyed_env.clear();
            KeyedOp::Exec(Box::new(e))
        }
        Op::Source(Source::Image { manifest, .. }) => KeyedOp::Image { image: manifest },
        // The commit comes in as content (resolved in pass 1); the ref's name and the checksum
        // flag do not feed the key, nor do credentials in the remote.
        Op::Source(Source::Git {
            remote,
            subdir,
            keep_git_dir,
            ..
        }) => KeyedOp::Git {
            git: rbuild_git::redact(remote),
            subdir,
            keep_git_dir: *keep_git_dir,
        },
        other => KeyedOp::Other(other),
    };
    rbuild_oci::canonical_digest(&KeyMaterial {
        v: KEY_VERSION,
        op: keyed,
        inputs,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_ops::{NetworkMode, SecurityMode};

    fn exec(env: &[&str], unkeyed: &[&str]) -> Op {
        Op::Exec(ExecOp {
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: env.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            mounts: vec![],
            unkeyed_env: unkeyed.iter().map(|s| s.to_string()).collect(),
            platform: None,
        })
    }

    #[test]
    fn proxy_env_does_not_change_key() {
        let a = vertex_key(&exec(&["A=1"], &[]), &[], &[]);
        let b = vertex_key(&exec(&["A=1"], &["HTTP_PROXY=http://x"]), &[], &[]);
        assert_eq!(a, b);
        let c = vertex_key(&exec(&["A=2"], &[]), &[], &[]);
        assert_ne!(a, c);
    }

    #[test]
    fn platform_changes_key() {
        let host = vertex_key(&exec(&["A=1"], &[]), &[], &[]);
        let Op::Exec(mut e) = exec(&["A=1"], &[]) else {
            unreachable!()
        };
        e.platform = Some(rbuild_oci::Platform::new("linux", "arm64", None));
        let arm64 = vertex_key(&Op::Exec(e.clone()), &[], &[]);
        e.platform = Some(rbuild_oci::Platform::new("linux", "arm", Some("v7")));
        let arm = vertex_key(&Op::Exec(e), &[], &[]);
        assert_ne!(host, arm64);
        assert_ne!(arm64, arm);
    }

    #[test]
    fn inputs_and_content_change_key() {
        let op = Op::Source(Source::Scratch);
        let d1 = Digest::sha256_of(b"1");
        let d2 = Digest::sha256_of(b"2");
        let base = vertex_key(&op, std::slice::from_ref(&d1), &[]);
        assert_ne!(base, vertex_key(&op, std::slice::from_ref(&d2), &[]));
        assert_ne!(base, vertex_key(&op, &[d1], &[(0, d2)]));
    }

    #[test]
    fn image_key_is_the_manifest_digest_only() {
        let m = Digest::sha256_of(b"manifest");
        let a = Op::Source(Source::Image {
            reference: "busybox:latest".into(),
            manifest: m.clone(),
        });
        let b = Op::Source(Source::Image {
            reference: "127.0.0.1:5000/busybox:latest".into(),
            manifest: m,
        });
        assert_eq!(vertex_key(&a, &[], &[]), vertex_key(&b, &[], &[]));
    }

    #[test]
    fn key_is_stable() {
        // A fixed vector: if this changes, every user's cache is invalidated — bump KEY_VERSION
        // deliberately instead.
        let k = vertex_key(&Op::Source(Source::Scratch), &[], &[]);
        assert_eq!(
            k.to_string(),
            vertex_key(&Op::Source(Source::Scratch), &[], &[]).to_string()
        );
        let json = String::from_utf8(rbuild_oci::canonical_json(&KeyMaterial {
            v: KEY_VERSION,
            op: KeyedOp::Other(&Op::Source(Source::Scratch)),
            inputs: &[],
            content: &[],
        }))
        .unwrap();
        assert_eq!(json, r#"{"inputs":[],"op":{"source":"scratch"},"v":2}"#);
    }
}
