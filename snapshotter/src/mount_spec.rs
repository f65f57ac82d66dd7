//! [`MountSpec`]: what the snapshotter returns instead of mounting.

use std::path::PathBuf;

/// One mount to perform: `mount -t <kind> -o <options> <source> <target>`.
///
/// `kind` is `"overlay"` (source `overlay`, options carrying `lowerdir=`/`upperdir=`/`workdir=`) or
/// `"bind"` (source the directory to bind; options `bind` and `ro`/`rw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: String,
    pub source: PathBuf,
    pub options: Vec<String>,
}

impl MountSpec {
    /// Kind of an overlay mount.
    pub const OVERLAY: &'static str = "overlay";
    /// Kind of a bind mount.
    pub const BIND: &'static str = "bind";

    /// The same mount with one more option (e.g. `nosuid`, `nodev` for a host-side mount).
    pub fn with_option(mut self, option: &str) -> Self {
        self.options.push(option.to_string());
        self
    }

    /// Whether the mount is read-only.
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}
