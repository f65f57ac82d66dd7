//! One fact about the host every layer of rbuild needs alike: is this process root in the initial
//! user namespace, or root inside a user namespace of an ordinary user (rootless)? The store root,
//! overlay's xattr namespace and the sandbox's choices all follow from it.

use std::sync::OnceLock;

/// Is this process in the initial user namespace? (`/proc/self/uid_map` is the identity map
/// `0 0 4294967295` only there.) Read once per process.
pub fn in_initial_user_namespace() -> bool {
    static INITIAL: OnceLock<bool> = OnceLock::new();
    *INITIAL.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().eq(["0", "0", "4294967295"]))
            .unwrap_or(true)
    })
}

/// Rootless: running inside a user namespace that is not the host's.
pub fn is_rootless() -> bool {
    !in_initial_user_namespace()
}

/// Rootless with the user's own id alone (no subordinate range): `/proc/self/uid_map` maps one id.
pub fn is_single_id() -> bool {
    static SINGLE: OnceLock<bool> = OnceLock::new();
    *SINGLE.get_or_init(|| {
        is_rootless()
            && std::fs::read_to_string("/proc/self/uid_map")
                .map(|m| {
                    let lines: Vec<&str> = m.lines().filter(|l| !l.trim().is_empty()).collect();
                    lines.len() == 1 && lines[0].split_whitespace().nth(2) == Some("1")
                })
                .unwrap_or(false)
    })
}
