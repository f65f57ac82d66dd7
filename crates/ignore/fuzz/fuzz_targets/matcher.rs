#![no_main]
//! Input: a `.dockerignore` text, a NUL byte, then NUL-separated paths. Runs `Matcher::parse`,
//! `excluded`, `may_match_beneath`, `can_skip_dir`, `fnmatch` (every pattern line against every
//! path) and `clean`. Errors are fine; panics and hangs are findings, and so is a broken
//! invariant:
//! - `clean` is idempotent (Go's `filepath.Clean` is);
//! - `can_skip_dir(d)` promises that everything beneath `d` is excluded: a walker prunes on it,
//!   so `excluded(d/x)` must hold for every `x` we try.

use libfuzzer_sys::fuzz_target;
use rbuild_ignore::{clean, fnmatch, Matcher};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let ignore = parts.next().unwrap_or("");
    let paths: Vec<&str> = parts.take(16).collect();

    for p in paths.iter().copied().chain(ignore.lines().take(16)) {
        let once = clean(p);
        assert_eq!(clean(&once), once, "clean is not idempotent on {p:?}");
    }
    for pat in ignore.lines().take(16) {
        for p in &paths {
            let _ = fnmatch(pat, p);
        }
    }
    let Ok(m) = Matcher::parse(ignore) else {
        return;
    };
    let _ = m.has_exceptions();
    for d in &paths {
        let _ = m.excluded(d);
        let _ = m.may_match_beneath(d);
        if m.can_skip_dir(d) {
            for x in &paths {
                let x = x.trim_start_matches('/');
                if x.is_empty() || x.split('/').any(|c| c == "..") {
                    continue;
                }
                let child = format!("{}/{x}", d.trim_end_matches('/'));
                assert!(
                    m.excluded(&child).is_some(),
                    "can_skip_dir({d:?}) but {child:?} is not excluded"
                );
            }
        }
    }
});
