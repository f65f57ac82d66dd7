//! Which snapshotter a command uses: `--snapshotter overlayfs|native` (or `$RBUILD_SNAPSHOTTER`),
//! else overlayfs where an overlay can really be mounted, else the copy-based one.
//!
//! Each driver keeps its snapshots in its own directory of the store
//! ([`Driver::dir_name`]), so switching drivers never mixes layouts: the other driver's
//! snapshots are made again from the layer blobs when needed.

use anyhow::{Context, Result};
use rbuild_snapshotter::{Driver, Snapshotter};
use std::path::Path;
use std::sync::OnceLock;

static CHOICE: OnceLock<Driver> = OnceLock::new();

/// Remember the user's choice (the global `--snapshotter` flag, which clap also fills from
/// `$RBUILD_SNAPSHOTTER`).
pub fn set_choice(driver: Driver) {
    let _ = CHOICE.set(driver);
}

/// Parse a `--snapshotter` value.
pub fn parse(s: &str) -> Result<Driver, String> {
    Driver::parse(s)
        .ok_or_else(|| format!("unknown snapshotter {s:?} (expected overlayfs or native)"))
}

/// The snapshotter of a command that mounts (build, run): the chosen driver, else overlayfs if a
/// probe mount works under the store, else native, with a note the first time a store uses it.
/// Call it inside rbuild's private mount namespace.
pub fn open_for_mounting(store_root: &Path) -> Result<Snapshotter> {
    // A successful probe is remembered in the store, so a rebuild does not pay a mount and an
    // unmount for it each time. Should overlay go away later, a step's mount fails with the
    // kernel's reason, and the flag selects native.
    let marker = store_root
        .join(Driver::Overlay.dir_name())
        .join(OVERLAY_PROBED);
    let mut remember = false;
    let driver = match CHOICE.get() {
        Some(d) => *d,
        None if marker.exists() => Driver::Overlay,
        None => match rbuild_snapshotter::mount::overlay_usable(&store_root.join("mnt")) {
            Ok(()) => {
                remember = true;
                Driver::Overlay
            }
            Err(e) => {
                if !store_root.join(Driver::Native.dir_name()).exists() {
                    eprintln!(
                        "note: overlayfs is not usable here ({e}); using the slower copy-based \
                         snapshotter (each step copies its parent's files). \
                         --snapshotter/RBUILD_SNAPSHOTTER selects one."
                    );
                }
                Driver::Native
            }
        },
    };
    let snapshotter = open(store_root, driver)?;
    if remember {
        let _ = std::fs::write(&marker, b"");
    }
    Ok(snapshotter)
}

/// In the overlay snapshotter's directory: a probe mount worked under this store.
const OVERLAY_PROBED: &str = "overlay-probed";

/// Every driver, in the order maintenance reports them.
const DRIVERS: [Driver; 2] = [Driver::Overlay, Driver::Native];

/// The snapshotters of a command that reads or removes snapshots (prune, df, fsck): one for each
/// driver directory the store has (a store built with both keeps both), whichever is chosen for
/// building; the chosen (else overlayfs) one on a store that has none yet. No probe mount.
pub fn open_existing(store_root: &Path) -> Result<Vec<Snapshotter>> {
    present_drivers(store_root)
        .into_iter()
        .map(|d| open(store_root, d))
        .collect()
}

/// The drivers whose directory the store has, else the chosen one (else overlayfs).
pub fn present_drivers(store_root: &Path) -> Vec<Driver> {
    let present: Vec<Driver> = DRIVERS
        .into_iter()
        .filter(|d| store_root.join(d.dir_name()).exists())
        .collect();
    if present.is_empty() {
        vec![CHOICE.get().copied().unwrap_or(Driver::Overlay)]
    } else {
        present
    }
}

/// Open the snapshotter of `driver` in the store (creating its directory if needed).
pub fn open(store_root: &Path, driver: Driver) -> Result<Snapshotter> {
    let root = store_root.join(driver.dir_name());
    Snapshotter::open_with(&root, driver)
        .with_context(|| format!("opening the {driver} snapshotter at {}", root.display()))
}
