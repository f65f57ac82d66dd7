//! Shared by the archive fuzz targets (snapshotter's `apply_layer`, fileop's `extract`):
//! tar checksum fix-up, so mutations get past the header checksum, and a jail that proves an
//! extraction wrote nothing outside its destination.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Size of a tar header's member data, as the readers frame it (octal, or GNU base-256).
fn header_size(h: &[u8]) -> u64 {
    let field = &h[124..136];
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = n.saturating_mul(256).saturating_add(u64::from(*b));
        }
        return n;
    }
    let mut n: u64 = 0;
    for b in field {
        match b {
            b'0'..=b'7' => n = n.saturating_mul(8).saturating_add(u64::from(b - b'0')),
            b' ' | 0 if n > 0 => break,
            _ => {}
        }
    }
    n
}

/// Rewrite the checksum of every header block the tar framing reaches, so the fuzzer's mutations
/// of names, types, sizes, PAX records, etc. reach the extractor instead of dying at the checksum.
pub fn fix_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0usize;
    while at + 512 <= out.len() {
        let h = &mut out[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        let kind = h[156];
        let size = if matches!(kind, b'1'..=b'6') {
            0
        } else {
            header_size(h)
        };
        let blocks = size.div_ceil(512);
        let Some(next) = usize::try_from(blocks)
            .ok()
            .and_then(|b| b.checked_mul(512))
            .and_then(|b| b.checked_add(at + 512))
        else {
            break;
        };
        at = next;
    }
    out
}

/// A per-process directory `parent` holding a sentinel file and, per input, `case/root`
/// (the extraction destination). After each input, [`Jail::check`] panics (a fuzzer finding)
/// when anything appeared beside `root`, beside `case`, or in `/`, or when the sentinel changed
/// (content, mode, owner, link count — a hardlink to it would raise the count).
pub struct Jail {
    parent: PathBuf,
    sentinel: PathBuf,
    sentinel_meta: (u32, u32, u32, u64, Vec<u8>),
    slash: BTreeSet<std::ffi::OsString>,
}

fn names(dir: &Path) -> BTreeSet<std::ffi::OsString> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect()
}

fn sentinel_state(p: &Path) -> (u32, u32, u32, u64, Vec<u8>) {
    let m = fs::symlink_metadata(p).expect("sentinel must exist");
    (
        m.mode(),
        m.uid(),
        m.gid(),
        m.nlink(),
        fs::read(p).expect("sentinel readable"),
    )
}

impl Jail {
    /// Under `$RBUILD_FUZZ_TMP` (default: the system temp dir).
    pub fn new(tag: &str) -> Jail {
        let base = std::env::var_os("RBUILD_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let parent = base.join(format!("rbuild-fuzz-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        fs::create_dir_all(&parent).expect("create jail parent");
        let sentinel = parent.join("sentinel");
        fs::write(&sentinel, b"must not change").expect("write sentinel");
        let sentinel_meta = sentinel_state(&sentinel);
        Jail {
            slash: names(Path::new("/")),
            parent,
            sentinel,
            sentinel_meta,
        }
    }

    /// A fresh empty destination `case/root`.
    pub fn fresh(&self) -> PathBuf {
        let case = self.parent.join("case");
        if case.exists() {
            remove_tree(&case);
        }
        let root = case.join("root");
        fs::create_dir_all(&root).expect("create case root");
        root
    }

    /// Panics when the extraction escaped; then removes the case dir.
    pub fn check(&self) {
        let case = self.parent.join("case");
        let in_case = names(&case);
        assert_eq!(
            in_case,
            BTreeSet::from(["root".into()]),
            "an entry escaped the destination into its parent"
        );
        let in_parent = names(&self.parent);
        assert_eq!(
            in_parent,
            BTreeSet::from(["case".into(), "sentinel".into()]),
            "an entry escaped two levels up"
        );
        assert_eq!(
            sentinel_state(&self.sentinel),
            self.sentinel_meta,
            "the sentinel beside the destination changed"
        );
        assert_eq!(names(Path::new("/")), self.slash, "an entry appeared in /");
        remove_tree(&case);
    }
}

/// remove_dir_all, after making every directory writable (a layer may set mode 0 on a dir;
/// root ignores that, but a non-root fuzz run must still clean up).
fn remove_tree(p: &Path) {
    if fs::remove_dir_all(p).is_ok() {
        return;
    }
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(p)
        .status();
    fs::remove_dir_all(p).unwrap_or_else(|e| panic!("removing {}: {e}", p.display()));
}
