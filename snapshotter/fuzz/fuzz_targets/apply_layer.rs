#![no_main]
//! Any bytes through `apply_layer` into a fresh temp dir: errors are fine; panics, hangs and any
//! write outside the destination (checked by `common::Jail` after every input) are findings.
//!
//! The first byte picks the mode: bit 0 set = fix up the tar header checksums first (so mutations
//! reach the applier), bit 1 set = run the rest through `decompress` first (gzip/zstd layers).

mod common;

use libfuzzer_sys::fuzz_target;
use rbuild_snapshotter::diff::{apply_layer, decompress, ApplyOptions};
use std::sync::OnceLock;

static JAIL: OnceLock<common::Jail> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let jail = JAIL.get_or_init(|| common::Jail::new("apply"));
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        common::fix_checksums(body)
    } else {
        body.to_vec()
    };
    // Budgets small enough that a bomb costs milliseconds, large enough for any seed.
    let opts = ApplyOptions {
        max_bytes: 8 << 20,
        max_entries: 4096,
        ..ApplyOptions::default()
    };
    let dest = jail.fresh();
    let result = if mode & 2 == 2 {
        match decompress(&bytes[..]) {
            Ok(r) => apply_layer(r, &dest, &opts),
            Err(e) => {
                let _ = e.to_string();
                jail.check();
                return;
            }
        }
    } else {
        apply_layer(&bytes[..], &dest, &opts)
    };
    if let Err(e) = result {
        let _ = e.to_string();
    }
    jail.check();
});
