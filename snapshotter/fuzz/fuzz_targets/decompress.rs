#![no_main]
//! Any bytes through `decompress` and read to the end (capped): errors are fine, panics and
//! hangs are not. `detect` must agree with what `decompress` did.

use libfuzzer_sys::fuzz_target;
use rbuild_snapshotter::diff::{decompress, detect};
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    match decompress(data) {
        Ok(r) => {
            let mut sink = Vec::new();
            let _ = r.take(16 << 20).read_to_end(&mut sink);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
