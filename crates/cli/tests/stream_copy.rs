//! Streamed COPY layers (solver/src/stream_copy.rs): a COPY whose filesystem nothing reads is
//! tarred straight from the context. Its layer must equal the one the materializing path writes
//! (`RBUILD_NO_STREAM_COPY=1`), a later RUN must see the copied files (the snapshot is made from the
//! layer then), and fsck must accept the snapshot-less record.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A context with nested dirs, odd modes, a symlink, a hard link, a long path and an ignored file.
fn context(env: &Env) -> std::path::PathBuf {
    let long = format!("sub/{}/file", "d".repeat(120));
    let ctx = env.context(
        "ctx",
        &[
            ("a.txt", "a"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
            ("sub/b.txt", "bb"),
            ("sub/deep/c", "ccc"),
            (long.as_str(), "long"),
            ("secret.key", "never copied"),
            (".dockerignore", "secret.key\n"),
        ],
    );
    let set = |p: &str, m: u32| {
        std::fs::set_permissions(ctx.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set("run.sh", 0o755);
    set("sub/b.txt", 0o640);
    set("sub/deep", 0o700);
    std::os::unix::fs::symlink("../a.txt", ctx.join("sub/link")).unwrap();
    std::fs::hard_link(ctx.join("sub/b.txt"), ctx.join("sub/hard")).unwrap();
    ctx
}

/// One member of a layer tar, as compared: everything but the mtime of directories that exist
/// below (the materializing path touches them when it writes inside; streaming keeps the parent's).
#[derive(Debug, PartialEq, Eq)]
struct Member {
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    content: Vec<u8>,
    mtime: Option<u64>,
}

fn members(blob: &Path, parent_dirs: &[&str]) -> BTreeMap<String, Member> {
    let f = std::fs::File::open(blob).unwrap();
    let mut a = tar::Archive::new(f);
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().to_string();
        let h = e.header().clone();
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        let kind = h.entry_type().as_byte();
        let existing_dir = parent_dirs.contains(&path.trim_end_matches('/'));
        out.insert(
            path,
            Member {
                kind,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                link: e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().to_string()),
                content,
                mtime: (!existing_dir).then(|| h.mtime().unwrap()),
            },
        );
    }
    out
}

/// Build `dockerfile` on `ctx` in `env` (streaming or not) and return the path and diff_id of the
/// image's top layer, and the build's stderr.
fn top_layer(
    env: &Env,
    ctx: &Path,
    dockerfile: &str,
    stream: bool,
) -> (std::path::PathBuf, String) {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let mut cmd = env.cmd();
    cmd.args(["build", "--progress=plain", "-t", "t:1"])
        .arg(ctx)
        .env("SOURCE_DATE_EPOCH", "1");
    if !stream {
        cmd.env("RBUILD_NO_STREAM_COPY", "1");
    }
    run_ok(&mut cmd);
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&env.rbuild(&["inspect", "t:1"]))).unwrap();
    let ids = inspect["Config"]["rootfs"]["diff_ids"].as_array().unwrap();
    let top = ids.last().unwrap().as_str().unwrap().to_string();
    let hex = top.trim_start_matches("sha256:");
    (env.root.join("blobs/sha256").join(hex), top)
}

/// Records whose snapshot was never made, as `rbuild fsck` counts them.
fn snapshotless_records(env: &Env) -> usize {
    let out = env.rbuild(&["fsck"]);
    assert!(out.status.success(), "fsck failed: {}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    text.lines()
        .find(|l| l.contains("name a snapshot that is gone"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn streamed_layer_equals_the_materialized_one() {
    if !require_root(&[]) {
        return;
    }
    // (Dockerfile, directories of the parent image the copy writes into.)
    let cases: &[(&str, &[&str])] = &[
        ("FROM busybox:latest\nCOPY . /data\nCMD [\"ls\"]\n", &[]),
        ("FROM busybox:latest\nCOPY sub/ /opt/x/\n", &[]),
        (
            "FROM busybox:latest\nCOPY --chown=1000:1001 --chmod=0640 a.txt sub/b.txt sub/hard /srv/\n",
            &[],
        ),
        ("FROM busybox:latest\nCOPY a.txt /etc/renamed.txt\n", &["etc"]),
        ("FROM busybox:latest\nCOPY run.sh /bin\n", &["bin"]),
        (
            "FROM busybox:latest\nCOPY --chmod=u+x,g-r,o= sub /usr/local/sub\n",
            &["usr"],
        ),
        (
            "FROM busybox:latest\nWORKDIR /app\nCOPY . .\nENV X=1\n",
            &["app"],
        ),
        ("FROM scratch\nCOPY --chown=7 sub /\n", &[]),
    ];
    for (dockerfile, parent_dirs) in cases {
        let streamed = Env::with_busybox();
        let ctx = context(&streamed);
        let (s_blob, s_id) = top_layer(&streamed, &ctx, dockerfile, true);
        assert_eq!(
            snapshotless_records(&streamed),
            1,
            "{dockerfile}: the COPY was streamed (no snapshot made)"
        );
        let materialized = Env::with_busybox();
        let (m_blob, m_id) = top_layer(&materialized, &ctx, dockerfile, false);
        assert_eq!(snapshotless_records(&materialized), 0, "{dockerfile}");
        let (s, m) = (members(&s_blob, parent_dirs), members(&m_blob, parent_dirs));
        assert_eq!(s, m, "{dockerfile}: layer members differ");
        assert!(!s.keys().any(|k| k.contains("secret")), "{dockerfile}");
        if parent_dirs.is_empty() {
            // Nothing of the parent touched: the layers are byte for byte the same.
            assert_eq!(s_id, m_id, "{dockerfile}: diff_ids differ");
        }
    }
}

#[test]
fn a_run_after_a_streamed_copy_sees_the_files() {
    if !require_root(&[]) {
        return;
    }
    let env = Env::with_busybox();
    let ctx = context(&env);
    // The Dockerfiles live outside the context: the COPY's selection stays the same.
    let df = env.path("Dockerfile");
    let df = df.to_str().unwrap();
    std::fs::write(df, "FROM busybox:latest\nCOPY . /data\n").unwrap();
    env.build_ok(&["-f", df, "-t", "s:1", ctx.to_str().unwrap()]);
    assert_eq!(snapshotless_records(&env), 1);
    // The same COPY is now a cache hit with no snapshot: the RUN needs its files.
    std::fs::write(
        df,
        "FROM busybox:latest\nCOPY . /data\nRUN test \"$(cat /data/a.txt)\" = a \
         && test \"$(cat /data/sub/hard)\" = bb && test -L /data/sub/link \
         && test \"$(stat -c %a /data/sub/deep)\" = 700 && test ! -e /data/secret.key\n",
    )
    .unwrap();
    let (_, err) = env.build_ok(&["-f", df, "-t", "s:2", ctx.to_str().unwrap()]);
    assert!(err.contains("CACHED"), "the COPY is cached: {err}");
    assert_eq!(snapshotless_records(&env), 0, "the snapshot was made");
    // And a streamed image exports a rootfs like any other.
    let out = env.path("rootfs");
    env.build_ok(&[
        "-f",
        df,
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("data/sub/b.txt")).unwrap(),
        "bb"
    );
}
