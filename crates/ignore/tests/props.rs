//! Random patterns and paths never panic, and the walker contract holds: when
//! `can_skip_dir(d)` is true, every path beneath `d` is excluded.

use proptest::prelude::*;
use rbuild_ignore::{fnmatch, Matcher};

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("**".to_string()),
        Just("?".to_string()),
        Just("/".to_string()),
        Just("!".to_string()),
        Just("[a-c]".to_string()),
        Just("[^b]".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\\".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just(" ".to_string()),
        Just("#".to_string()),
        Just("\n".to_string()),
        "[abc]{1,3}",
        "\\PC{0,2}",
    ]
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..8).prop_map(|v| v.concat())
}

fn rel_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[abc]{1,2}|\\.x|a\\.b", 1..5).prop_map(|v| v.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics(pats in prop::collection::vec(pattern(), 0..5), path in "\\PC{0,20}", name in "\\PC{0,12}") {
        let text = pats.join("\n");
        if let Ok(m) = Matcher::parse(&text) {
            let _ = m.excluded(&path);
            let _ = m.can_skip_dir(&path);
        }
        if let Ok(m) = Matcher::from_patterns(&pats) {
            let _ = m.excluded(&path);
        }
        for p in &pats {
            let _ = fnmatch(p, &name);
        }
    }

    #[test]
    fn skipped_dirs_hold_only_excluded_paths(
        pats in prop::collection::vec(pattern(), 1..5),
        dir in rel_path(),
        below in rel_path(),
    ) {
        if let Ok(m) = Matcher::from_patterns(&pats) {
            if m.can_skip_dir(&dir) {
                let inner = format!("{dir}/{below}");
                prop_assert!(m.excluded(&inner).is_some(), "{pats:?}: {dir} skippable but {inner} included");
            }
        }
    }
}
