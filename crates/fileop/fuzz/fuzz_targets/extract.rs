#![no_main]
//! Any bytes as an ADD source archive: `unpack::detect` (as ADD calls it), then `unpack::extract`
//! into a fresh temp dir. Errors are fine; panics, hangs and any write outside the destination
//! (checked by the shared `Jail` after every input) are findings.
//!
//! The first byte picks the mode: bit 0 = fix up tar header checksums first; bit 1 = force a
//! compression (bits 2..5 pick which) even when `detect` says "not an archive"; bit 5 = chown
//! everything to 1000:1000 (ADD --chown).

#[path = "../../../../snapshotter/fuzz/fuzz_targets/common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rbuild_fileop::unpack::{detect, extract};
use rbuild_fileop::{ApplyStats, ArchiveCompression, ExtractLimits, Root};
use std::fs::File;
use std::path::PathBuf;
use std::sync::OnceLock;

struct State {
    jail: common::Jail,
    input_dir: PathBuf,
}

static STATE: OnceLock<State> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let st = STATE.get_or_init(|| {
        let input_dir =
            std::env::temp_dir().join(format!("rbuild-fuzz-extract-in-{}", std::process::id()));
        std::fs::create_dir_all(&input_dir).expect("create input dir");
        State {
            jail: common::Jail::new("extract"),
            input_dir,
        }
    });
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        common::fix_checksums(body)
    } else {
        body.to_vec()
    };
    std::fs::write(st.input_dir.join("archive"), &bytes).expect("write input");
    let src = Root::open(&st.input_dir).expect("open input root");
    let detected = match detect(&src, "archive") {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            None
        }
    };
    let c = if mode & 2 == 2 {
        match (mode >> 2) % 5 {
            0 => ArchiveCompression::None,
            1 => ArchiveCompression::Gzip,
            2 => ArchiveCompression::Bzip2,
            3 => ArchiveCompression::Xz,
            _ => ArchiveCompression::Zstd,
        }
    } else {
        match detected {
            Some(c) => c,
            None => return,
        }
    };
    let owner = (mode & 0x20 != 0).then_some((1000, 1000));
    let limits = ExtractLimits {
        max_bytes: 8 << 20,
        max_entries: 4096,
        max_depth: 256,
    };
    let dest = st.jail.fresh();
    let xroot = Root::open(&dest).expect("open dest root");
    let file = File::open(st.input_dir.join("archive")).expect("open input");
    let mut stats = ApplyStats::default();
    if let Err(e) = extract(file, c, "fuzz.tar", &xroot, owner, &limits, &mut stats) {
        let _ = e.to_string();
    }
    drop(xroot);
    st.jail.check();
});
