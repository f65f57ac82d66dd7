//! OCI layer tar → snapshot dir (the "apply" half of the diff module).
//!
//! Extraction is ours, never the tar crate's `unpack`. `dest` is the `fs` dir of a prepared snapshot:
//! only this layer's upper, the layers below are not visible in it. So:
//! - every member path is cleaned lexically (`..` stops at the root, leading `/` dropped); its parent
//!   is resolved as containerd does: a parent component that is a symlink — in this layer, or in the
//!   layers below (`ApplyOptions::lowers`, the merged view as overlay shows it) — is followed, and
//!   its target resolved *within the rootfs* (an absolute target starts at the rootfs, `..` stops
//!   there), so a lower layer's `var/run -> /run` puts `var/run/x` at `run/x`. The resolved path is
//!   then walked one component at a time from an fd of `dest` with `O_NOFOLLOW`; a missing parent is
//!   created as a directory (parent dirs are implicit in OCI layers; one the layers below have as a
//!   directory gets its mode, owner and mtime). Nothing is ever written through a symlink: only our
//!   own resolution follows them, never the kernel;
//! - OCI whiteouts become overlay whiteouts: `.wh.<name>` → char device 0/0 `<name>`,
//!   `.wh..wh..opq` → `trusted.overlay.opaque=y` on the parent. A whiteout applies only to the layers
//!   below: if this layer also has `<name>`, that entry stays (and a directory becomes opaque);
//! - hardlinks may only name a non-directory (not a whiteout) already in `dest`, reached without
//!   following a symlink: as `dest` holds only this layer, one extracted earlier in it. The file
//!   system is that record, so memory does not grow with the number of members;
//! - ownership, mode, xattrs and mtime are set without following symlinks, directory mtimes after
//!   their children are written;
//! - budgets (bytes, entries, depth, name and path length) are on by default, and a free-space
//!   reserve on dest's filesystem (bytes and inodes): extraction stops before it would eat into it.

use super::fsutil::{open_dir_at, remove_all_at, set_xattr};
use super::lower::{lower_lookup, LowerSeen};
use super::tar_read::{EntryMeta, TarError, TarReader};
use super::{opaque_xattr, OPAQUE_MARKER, WHITEOUT_META_PREFIX, WHITEOUT_PREFIX};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, Gid, Uid};
use rbuild_oci::{Digest, Sha256Writer};
use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use xattr::FileExt as _;

/// Budgets for one layer. The defaults fit any real image and stop bombs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Max bytes of the uncompressed tar stream (headers and data).
    pub max_bytes: u64,
    /// Max tar members (whiteouts included).
    pub max_entries: u64,
    /// Max path components of one member.
    pub max_depth: usize,
    /// Max bytes of one path component.
    pub max_name_len: usize,
    /// Max bytes of a member path or link target (PATH_MAX).
    pub max_path_len: usize,
    /// Free bytes to leave on dest's filesystem; `None`: 5% of its size, at most 512 MiB.
    pub min_free_bytes: Option<u64>,
    /// Free inodes to leave on dest's filesystem; `None`: 5% of them, at most 65,536.
    pub min_free_inodes: Option<u64>,
    /// The layer dirs beneath `dest`, nearest first (overlay's lowerdir order; for a copy-based
    /// snapshot its whole tree): parent symlinks found there are followed and directories found
    /// there lend their metadata. Empty when `dest` is the whole rootfs.
    pub lowers: Vec<PathBuf>,
    /// Entries allowed whatever the density rule says.
    pub entry_floor: u64,
    /// The density rule: past `entry_floor` entries, each entry must have cost at least this many
    /// compressed bytes on average (millions of empty entries compress to a few bytes each; real
    /// layers' entries cost hundreds). 0 turns it off.
    pub min_bytes_per_entry: u64,
    /// The compressed bytes read so far ([`decompress_counted`](super::decompress_counted)); `None`:
    /// the uncompressed bytes are counted instead.
    pub compressed_bytes: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            max_bytes: 64 << 30,
            max_entries: 1_000_000,
            max_depth: 256,
            max_name_len: 255,
            max_path_len: 4096,
            min_free_bytes: None,
            min_free_inodes: None,
            lowers: Vec::new(),
            entry_floor: 10_000,
            min_bytes_per_entry: 16,
            compressed_bytes: None,
        }
    }
}

impl ApplyOptions {
    /// The defaults, overridden by `RBUILD_MAX_LAYER_BYTES` (uncompressed bytes of one layer),
    /// `RBUILD_MAX_LAYER_ENTRIES` (tar members), `RBUILD_MAX_LAYER_DEPTH` (path components),
    /// `RBUILD_MIN_FREE_BYTES` and `RBUILD_MIN_FREE_INODES` (the reserve on dest's filesystem).
    /// A value that is not a positive integer is an error naming the variable.
    pub fn from_env() -> Result<ApplyOptions, String> {
        fn var(name: &str) -> Result<Option<u64>, String> {
            match rbuild_inputs::var(name) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!("{name}={v:?}: expected a positive integer")),
                },
            }
        }
        let mut o = ApplyOptions {
            min_free_bytes: var("RBUILD_MIN_FREE_BYTES")?,
            min_free_inodes: var("RBUILD_MIN_FREE_INODES")?,
            ..ApplyOptions::default()
        };
        if let Some(n) = var("RBUILD_LAYER_ENTRY_FLOOR")? {
            o.entry_floor = n;
        }
        if let Some(n) = var("RBUILD_MIN_LAYER_BYTES_PER_ENTRY")? {
            o.min_bytes_per_entry = n;
        }
        if let Some(n) = var("RBUILD_MAX_LAYER_BYTES")? {
            o.max_bytes = n;
        }
        if let Some(n) = var("RBUILD_MAX_LAYER_ENTRIES")? {
            o.max_entries = n;
        }
        if let Some(n) = var("RBUILD_MAX_LAYER_DEPTH")? {
            o.max_depth = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(o)
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the whole uncompressed stream read: compare with the config's diff_id.
    pub diff_id: Digest,
    /// Bytes of the uncompressed stream.
    pub size: u64,
    /// Tar members seen.
    pub entries: u64,
    /// OCI whiteouts (`.wh.*`, opaque markers included) turned into overlay ones.
    pub whiteouts: u64,
}

/// Why a layer could not be applied. Every variant names the member; the caller adds the layer digest.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("destination {path}: {source}")]
    Dest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("malformed layer tar after entry {after:?}: {source}")]
    Tar {
        after: String,
        #[source]
        source: TarError,
    },
    #[error("layer entry {entry:?}: parent component {component:?} is a symlink; refusing to write through it")]
    SymlinkParent { entry: String, component: String },
    #[error("layer entry {entry:?}: parent component {component:?} is not a directory")]
    NotADirectory { entry: String, component: String },
    #[error("layer entry {entry:?}: hardlink target {target:?} is not a file extracted earlier in this layer")]
    BadHardlink { entry: String, target: String },
    #[error("layer entry {entry:?}: {why}")]
    Invalid { entry: String, why: &'static str },
    #[error("layer entry {entry:?}: unsupported tar entry type {kind:?}")]
    Unsupported { entry: String, kind: char },
    #[error("layer exceeds the byte budget of {limit} bytes (at entry {entry:?})")]
    ByteBudget { entry: String, limit: u64 },
    #[error("layer exceeds the entry budget of {limit} entries (at entry {entry:?})")]
    EntryBudget { entry: String, limit: u64 },
    #[error(
        "layer entry {entry:?}: stopped to keep the reserve of {reserve} free {what} on the store's \
         filesystem ({free} free; RBUILD_MIN_FREE_{var} sets the reserve)"
    )]
    DiskReserve {
        entry: String,
        what: &'static str,
        var: &'static str,
        free: u64,
        reserve: u64,
    },
    #[error(
        "layer has {entries} entries in only {bytes} compressed bytes (under {min} bytes each; \
         RBUILD_MIN_LAYER_BYTES_PER_ENTRY lowers the rule): refusing a flood of empty entries \
         (at entry {entry:?})"
    )]
    EntryDensity {
        entry: String,
        entries: u64,
        bytes: u64,
        min: u64,
    },
    #[error("layer entry {entry:?}: too many levels of symbolic links resolving its parent")]
    SymlinkLoop { entry: String },
    #[error("layer entry {entry:?}: {what} of {got} exceeds the limit of {limit}")]
    TooLong {
        entry: String,
        what: &'static str,
        got: usize,
        limit: usize,
    },
}

/// Member names in errors are cut to keep messages readable (names can be longer than PATH_MAX).
fn show(bytes: &[u8]) -> String {
    const MAX: usize = 256;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{s}…")
    } else {
        s
    }
}

fn nix_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Hashes and counts the stream, and stops it at the byte budget.
struct Metered<R> {
    inner: R,
    hash: Sha256Writer<io::Sink>,
    limit: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.hash.written());
        if room == 0 {
            // Only a stream that still has bytes is over budget.
            let mut probe = [0u8; 1];
            let n = self.inner.read(&mut probe)?;
            if n == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other("layer byte budget exceeded"));
        }
        let want = (buf.len() as u64).min(room) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Apply the uncompressed layer tar `tar` into `dest` (see the module docs for the rules).
pub fn apply_layer<R: Read>(
    tar: R,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let root =
        open_dir_at(nix::fcntl::AT_FDCWD, dest.as_os_str()).map_err(|e| ApplyError::Dest {
            path: dest.to_path_buf(),
            source: nix_io(e),
        })?;
    let exceeded = Rc::new(Cell::new(false));
    let metered = Metered {
        inner: tar,
        hash: Sha256Writer::new(io::sink()),
        limit: opts.max_bytes,
        exceeded: exceeded.clone(),
    };
    let reserve = Reserve::new(&root, opts).map_err(|source| ApplyError::Dest {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut ap = Applier {
        root,
        opts,
        reader: TarReader::new(metered),
        exceeded,
        cache: None,
        resolved: Resolved::default(),
        reserve,
        dirs: Vec::new(),
        entries: 0,
        whiteouts: 0,
        last: Vec::new(),
    };
    ap.run()?;
    ap.finish_dir_times();
    // Hash whatever follows the end-of-archive marker too: the diff_id covers the whole blob.
    let mut metered = ap.reader.into_inner();
    let last = show(&ap.last);
    if let Err(source) = io::copy(&mut metered, &mut io::sink()) {
        if ap.exceeded.get() {
            return Err(ApplyError::ByteBudget {
                entry: last,
                limit: opts.max_bytes,
            });
        }
        return Err(ApplyError::Tar {
            after: last,
            source: TarError::Io(source),
        });
    }
    let (diff_id, size, _) = metered.hash.finish();
    Ok(ApplyStats {
        diff_id,
        size,
        entries: ap.entries,
        whiteouts: ap.whiteouts,
    })
}

/// The free-space reserve on dest's filesystem. `statvfs` is asked again after at most
/// [`Reserve::RECHECK_BYTES`] bytes or [`Reserve::RECHECK_INODES`] entries, or sooner when a file
/// would not fit in the room found last time.
struct Reserve {
    bytes: u64,
    /// 0 when the filesystem does not count inodes.
    inodes: u64,
    room_bytes: u64,
    room_inodes: u64,
}

/// Free space as `statvfs` tells it to an unprivileged writer: (bytes, inodes, inodes counted).
fn free_space(fd: &OwnedFd) -> io::Result<(u64, u64, u64, u64)> {
    let st = nix::sys::statvfs::fstatvfs(fd).map_err(nix_io)?;
    let frsize = st.fragment_size() as u64;
    Ok((
        (st.blocks_available() as u64).saturating_mul(frsize),
        st.files_available() as u64,
        (st.blocks() as u64).saturating_mul(frsize),
        st.files() as u64,
    ))
}

impl Reserve {
    const RECHECK_BYTES: u64 = 64 << 20;
    const RECHECK_INODES: u64 = 4096;

    fn new(root: &OwnedFd, opts: &ApplyOptions) -> io::Result<Reserve> {
        let (_, _, size, files) = free_space(root)?;
        Ok(Reserve {
            bytes: opts.min_free_bytes.unwrap_or((size / 20).min(512 << 20)),
            inodes: if files == 0 {
                0
            } else {
                opts.min_free_inodes.unwrap_or((files / 20).min(65_536))
            },
            room_bytes: 0,
            room_inodes: 0,
        })
    }
}

/// Member parents resolved through symlinks: `input[..=i]` resolves to `outs[i]`; `via` holds every
/// symlink path the resolutions went through (an entry there or above it invalidates them).
#[derive(Default)]
struct Resolved {
    input: Vec<OsString>,
    outs: Vec<Vec<OsString>>,
    via: Vec<Vec<OsString>>,
}

impl Resolved {
    fn clear(&mut self) {
        self.input.clear();
        self.outs.clear();
        self.via.clear();
    }

    /// Forget what an entry written at the resolved path `at` may have changed.
    fn invalidate(&mut self, at: &[OsString]) {
        if self.via.iter().any(|v| v.starts_with(at)) {
            self.clear();
            return;
        }
        if let Some(i) = self.outs.iter().position(|o| o.starts_with(at)) {
            self.input.truncate(i);
            self.outs.truncate(i);
        }
    }
}

/// What the merged view (dest over the lowers) has at a path.
enum Seen {
    Missing,
    Dir,
    Symlink(Vec<u8>),
    Other,
}

struct Applier<'a, R: Read> {
    root: OwnedFd,
    opts: &'a ApplyOptions,
    reader: TarReader<Metered<R>>,
    exceeded: Rc<Cell<bool>>,
    /// The last parent dir resolved: its components and fd.
    cache: Option<(Vec<OsString>, OwnedFd)>,
    /// The last member parent resolved through symlinks, prefix by prefix.
    resolved: Resolved,
    reserve: Reserve,
    /// Directories with their mtimes, applied last.
    dirs: Vec<(Vec<OsString>, i64)>,
    entries: u64,
    whiteouts: u64,
    /// The raw name of the last member read, for errors.
    last: Vec<u8>,
}

/// A file type as found in `dest`.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Found {
    Missing,
    Dir,
    Whiteout,
    Symlink,
    Other,
}

fn found_at<Fd: AsFd>(dir: Fd, name: &OsStr) -> nix::Result<Found> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            Ok(if fmt == SFlag::S_IFDIR {
                Found::Dir
            } else if fmt == SFlag::S_IFCHR && st.st_rdev == 0 {
                Found::Whiteout
            } else if fmt == SFlag::S_IFLNK {
                Found::Symlink
            } else {
                Found::Other
            })
        }
        Err(Errno::ENOENT) => Ok(Found::Missing),
        Err(e) => Err(e),
    }
}

impl<R: Read> Applier<'_, R> {
    fn entry_name(&self) -> String {
        show(&self.last)
    }

    fn io(&self, op: &'static str, source: io::Error) -> ApplyError {
        if self.exceeded.get() {
            return ApplyError::ByteBudget {
                entry: self.entry_name(),
                limit: self.opts.max_bytes,
            };
        }
        ApplyError::Io {
            entry: self.entry_name(),
            op,
            source,
        }
    }

    fn nix(&self, op: &'static str) -> impl Fn(Errno) -> ApplyError + '_ {
        move |e| self.io(op, nix_io(e))
    }

    /// Account for an entry of `size` data bytes against the free-space reserve.
    fn spend(&mut self, size: u64) -> Result<(), ApplyError> {
        let bytes = size.saturating_add(512);
        if bytes > self.reserve.room_bytes || self.reserve.room_inodes == 0 {
            let (free, ifree, _, _) = free_space(&self.root).map_err(|e| self.io("statvfs", e))?;
            let (rb, ri) = (self.reserve.bytes, self.reserve.inodes);
            if free < rb.saturating_add(bytes) {
                return Err(ApplyError::DiskReserve {
                    entry: self.entry_name(),
                    what: "bytes",
                    var: "BYTES",
                    free,
                    reserve: rb,
                });
            }
            if ri > 0 && ifree <= ri {
                return Err(ApplyError::DiskReserve {
                    entry: self.entry_name(),
                    what: "inodes",
                    var: "INODES",
                    free: ifree,
                    reserve: ri,
                });
            }
            let r = &mut self.reserve;
            r.room_bytes = (free - r.bytes).min(Reserve::RECHECK_BYTES.max(bytes));
            r.room_inodes = if r.inodes > 0 {
                (ifree - r.inodes).min(Reserve::RECHECK_INODES)
            } else {
                Reserve::RECHECK_INODES
            };
        }
        let r = &mut self.reserve;
        r.room_bytes -= bytes;
        r.room_inodes -= 1;
        Ok(())
    }

    /// Resolve a member's parent `comps` through symlinks in the merged view, within the rootfs
    /// (containerd's `fs.RootPath`): the result names only directories or missing components.
    fn resolve_parent(&mut self, comps: &[OsString]) -> Result<Vec<OsString>, ApplyError> {
        let k = self
            .resolved
            .input
            .iter()
            .zip(comps)
            .take_while(|(a, b)| a == b)
            .count();
        self.resolved.input.truncate(k);
        self.resolved.outs.truncate(k);
        let mut out = if k > 0 {
            self.resolved.outs[k - 1].clone()
        } else {
            Vec::new()
        };
        let mut hops = 0usize;
        for comp in &comps[k..] {
            let mut pending: std::collections::VecDeque<OsString> = [comp.clone()].into();
            while let Some(c) = pending.pop_front() {
                match c.as_bytes() {
                    b"" | b"." => continue,
                    b".." => {
                        out.pop();
                        continue;
                    }
                    _ => {}
                }
                out.push(c);
                if out.len() > self.opts.max_depth {
                    return Err(ApplyError::TooLong {
                        entry: self.entry_name(),
                        what: "resolved path depth",
                        got: out.len(),
                        limit: self.opts.max_depth,
                    });
                }
                if let Seen::Symlink(target) = self.merged_at(&out)? {
                    hops += 1;
                    if hops > 40 || target.is_empty() {
                        return Err(ApplyError::SymlinkLoop {
                            entry: self.entry_name(),
                        });
                    }
                    self.resolved.via.push(out.clone());
                    out.pop();
                    if target.starts_with(b"/") {
                        out.clear();
                    }
                    for t in target.split(|b| *b == b'/').rev() {
                        pending.push_front(OsStr::from_bytes(t).to_owned());
                    }
                }
            }
            self.resolved.input.push(comp.clone());
            self.resolved.outs.push(out.clone());
        }
        Ok(out)
    }

    /// What dest over the lowers shows at `path`, whose proper prefixes resolve to directories.
    fn merged_at(&self, path: &[OsString]) -> Result<Seen, ApplyError> {
        let Some((last, parents)) = path.split_last() else {
            return Ok(Seen::Dir);
        };
        let lowers = &self.opts.lowers;
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| self.io("dup dir fd", e))?;
        let mut opaque = false;
        let check_opaque = |fd: &OwnedFd| -> Option<bool> {
            if lowers.is_empty() {
                return Some(false);
            }
            let v = File::from(fd.try_clone().ok()?)
                .get_xattr(opaque_xattr())
                .ok()??;
            Some(v == b"y")
        };
        let mut in_upper = true;
        for comp in parents {
            match open_dir_at(&cur, comp) {
                Ok(fd) => {
                    if check_opaque(&fd) == Some(true) {
                        opaque = true;
                    }
                    cur = fd;
                }
                Err(Errno::ENOENT) => {
                    in_upper = false;
                    break;
                }
                // A whiteout (or anything but a directory) here hides the layers below.
                Err(_) => return Ok(Seen::Missing),
            }
        }
        if in_upper {
            match found_at(&cur, last).map_err(self.nix("stat"))? {
                Found::Dir => return Ok(Seen::Dir),
                Found::Other => return Ok(Seen::Other),
                Found::Whiteout => return Ok(Seen::Missing),
                Found::Symlink => {
                    let t = nix::fcntl::readlinkat(&cur, last.as_os_str())
                        .map_err(self.nix("read symlink"))?;
                    return Ok(Seen::Symlink(t.into_vec()));
                }
                Found::Missing => {}
            }
        }
        if opaque || lowers.is_empty() {
            return Ok(Seen::Missing);
        }
        Ok(
            match lower_lookup(lowers, path).map_err(|e| self.io("look up the layers below", e))? {
                LowerSeen::Absent => Seen::Missing,
                LowerSeen::Dir { .. } => Seen::Dir,
                LowerSeen::Symlink(t) => Seen::Symlink(t),
                LowerSeen::Other => Seen::Other,
            },
        )
    }

    /// A directory created in dest that the layers below already have takes their metadata (as
    /// overlay's copy-up would).
    fn copy_up_meta(&self, dir: &OwnedFd, name: &OsStr, comps: &[OsString]) {
        if self.opts.lowers.is_empty() {
            return;
        }
        if let Ok(LowerSeen::Dir { mode, uid, gid }) = lower_lookup(&self.opts.lowers, comps) {
            let _ = fchownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            let _ = fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::NoFollowSymlink,
            );
        }
    }

    fn run(&mut self) -> Result<(), ApplyError> {
        loop {
            let meta = match self.reader.next_entry() {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(source) => {
                    if self.exceeded.get() {
                        return Err(ApplyError::ByteBudget {
                            entry: self.entry_name(),
                            limit: self.opts.max_bytes,
                        });
                    }
                    return Err(ApplyError::Tar {
                        after: self.entry_name(),
                        source,
                    });
                }
            };
            self.last = meta.path.clone();
            self.entries += 1;
            if self.entries > self.opts.max_entries {
                return Err(ApplyError::EntryBudget {
                    entry: self.entry_name(),
                    limit: self.opts.max_entries,
                });
            }
            if self.entries > self.opts.entry_floor && self.opts.min_bytes_per_entry > 0 {
                let bytes = match &self.opts.compressed_bytes {
                    Some(c) => c.load(std::sync::atomic::Ordering::Relaxed),
                    None => self.reader.get_ref().hash.written(),
                };
                if bytes / self.entries < self.opts.min_bytes_per_entry {
                    return Err(ApplyError::EntryDensity {
                        entry: self.entry_name(),
                        entries: self.entries,
                        bytes,
                        min: self.opts.min_bytes_per_entry,
                    });
                }
            }
            self.entry(meta)?;
        }
    }

    /// Clean a member path lexically beneath the root, checking the budgets.
    fn clean(&self, raw: &[u8], what: &'static str) -> Result<Vec<OsString>, ApplyError> {
        if raw.len() > self.opts.max_path_len {
            return Err(ApplyError::TooLong {
                entry: self.entry_name(),
                what,
                got: raw.len(),
                limit: self.opts.max_path_len,
            });
        }
        if raw.contains(&0) {
            return Err(ApplyError::Invalid {
                entry: self.entry_name(),
                why: "NUL byte in a path",
            });
        }
        let mut comps: Vec<OsString> = Vec::new();
        for c in raw.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    comps.pop();
                }
                c => {
                    if c.len() > self.opts.max_name_len {
                        return Err(ApplyError::TooLong {
                            entry: self.entry_name(),
                            what: "path component length",
                            got: c.len(),
                            limit: self.opts.max_name_len,
                        });
                    }
                    comps.push(OsStr::from_bytes(c).to_owned());
                    if comps.len() > self.opts.max_depth {
                        return Err(ApplyError::TooLong {
                            entry: self.entry_name(),
                            what: "path depth",
                            got: comps.len(),
                            limit: self.opts.max_depth,
                        });
                    }
                }
            }
        }
        Ok(comps)
    }

    /// An fd of directory `comps` beneath the root. Missing components are created when `create`;
    /// a whiteout in the way is replaced by an opaque directory (deleted below, re-created here).
    fn resolve_dir(&mut self, comps: &[OsString], create: bool) -> Result<OwnedFd, ApplyError> {
        if let Some((c, fd)) = &self.cache {
            if c.as_slice() == comps {
                return fd.try_clone().map_err(|e| self.io("dup dir fd", e));
            }
        }
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| self.io("dup dir fd", e))?;
        for (i, comp) in comps.iter().enumerate() {
            let next = match open_dir_at(&cur, comp) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&cur, comp.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) => self.copy_up_meta(&cur, comp, &comps[..=i]),
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.io("create parent dir", nix_io(e))),
                    }
                    open_dir_at(&cur, comp).map_err(self.nix("open parent dir"))?
                }
                Err(Errno::ELOOP) => {
                    return Err(ApplyError::SymlinkParent {
                        entry: self.entry_name(),
                        component: comp.to_string_lossy().into_owned(),
                    })
                }
                Err(Errno::ENOTDIR) => {
                    let found = found_at(&cur, comp).map_err(self.nix("stat parent"))?;
                    if create && found == Found::Whiteout {
                        remove_all_at(&cur, comp).map_err(self.nix("replace whiteout"))?;
                        mkdirat(&cur, comp.as_os_str(), Mode::from_bits_truncate(0o755))
                            .map_err(self.nix("create parent dir"))?;
                        let fd = open_dir_at(&cur, comp).map_err(self.nix("open parent dir"))?;
                        self.set_opaque(&fd)?;
                        fd
                    } else if found == Found::Symlink {
                        return Err(ApplyError::SymlinkParent {
                            entry: self.entry_name(),
                            component: comp.to_string_lossy().into_owned(),
                        });
                    } else {
                        return Err(ApplyError::NotADirectory {
                            entry: self.entry_name(),
                            component: comp.to_string_lossy().into_owned(),
                        });
                    }
                }
                Err(Errno::ENOENT) => {
                    return Err(ApplyError::Io {
                        entry: self.entry_name(),
                        op: "resolve",
                        source: nix_io(Errno::ENOENT),
                    })
                }
                Err(e) => return Err(self.io("open parent dir", nix_io(e))),
            };
            cur = next;
        }
        let keep = cur.try_clone().map_err(|e| self.io("dup dir fd", e))?;
        self.cache = Some((comps.to_vec(), keep));
        Ok(cur)
    }

    fn set_opaque(&self, dir: &OwnedFd) -> Result<(), ApplyError> {
        let f = File::from(dir.try_clone().map_err(|e| self.io("dup dir fd", e))?);
        xattr::FileExt::set_xattr(&f, opaque_xattr(), b"y")
            .map_err(|e| self.io("set opaque xattr", e))
    }

    fn entry(&mut self, meta: EntryMeta) -> Result<(), ApplyError> {
        let comps = self.clean(&meta.path, "path length")?;
        let Some((base, parent)) = comps.split_last() else {
            // The root itself ("./"): dest's own metadata belongs to the snapshotter, not the layer.
            return Ok(());
        };
        let base_bytes = base.as_bytes();
        let size = if matches!(meta.kind, b'0' | b'\0' | b'7') {
            meta.size
        } else {
            0
        };
        self.spend(size)?;
        let parent = self.resolve_parent(parent)?;
        let mut comps = parent.clone();
        comps.push(base.clone());
        // Anything this member replaces may be (an ancestor of) the cached parent dir, or on the way
        // of a resolution remembered.
        if let Some((c, _)) = &self.cache {
            if c.starts_with(&comps) {
                self.cache = None;
            }
        }
        if base_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // A whiteout or opaque marker changes what the layers below show: forget all.
            self.resolved.clear();
            return self.whiteout(&parent, base_bytes);
        }
        self.resolved.invalidate(&comps);
        let dir = self.resolve_dir(&parent, true)?;
        match meta.kind {
            b'5' => self.directory(&dir, &comps, base, &meta),
            b'0' | b'\0' | b'7' => self.regular(&dir, base, &meta),
            b'2' => {
                let target = meta.link.clone().unwrap_or_default();
                if target.is_empty() || target.len() > self.opts.max_path_len || target.contains(&0)
                {
                    return Err(ApplyError::Invalid {
                        entry: self.entry_name(),
                        why: "symlink target is empty, too long or has a NUL byte",
                    });
                }
                self.clear(&dir, base)?;
                symlinkat(OsStr::from_bytes(&target), &dir, base.as_os_str())
                    .map_err(self.nix("create symlink"))?;
                self.metadata(&dir, base, &meta, false)
            }
            b'1' => self.hardlink(&dir, &comps, base, &meta),
            b'3' | b'4' | b'6' => {
                let kind = match meta.kind {
                    b'3' => SFlag::S_IFCHR,
                    b'4' => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.clear(&dir, base)?;
                let dev = makedev(u64::from(meta.dev_major), u64::from(meta.dev_minor));
                mknodat(
                    &dir,
                    base.as_os_str(),
                    kind,
                    Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(self.nix("create device or fifo"))?;
                self.metadata(&dir, base, &meta, true)
            }
            other => Err(ApplyError::Unsupported {
                entry: self.entry_name(),
                kind: other as char,
            }),
        }
    }

    /// Make room for a non-directory `name`: remove whatever is there (a directory recursively).
    fn clear(&self, dir: &OwnedFd, name: &OsStr) -> Result<(), ApplyError> {
        remove_all_at(dir, name).map_err(self.nix("remove the entry it replaces"))
    }

    fn whiteout(&mut self, parent: &[OsString], base: &[u8]) -> Result<(), ApplyError> {
        self.whiteouts += 1;
        let dir = self.resolve_dir(parent, true)?;
        if base == OPAQUE_MARKER.as_bytes() {
            return self.set_opaque(&dir);
        }
        if base.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not content, ignored as Docker does.
            return Ok(());
        }
        let name = &base[WHITEOUT_PREFIX.len()..];
        if name.is_empty() || name == b"." || name == b".." {
            return Err(ApplyError::Invalid {
                entry: self.entry_name(),
                why: "whiteout names no file",
            });
        }
        let name = OsStr::from_bytes(name);
        match found_at(&dir, name).map_err(self.nix("stat whiteout target"))? {
            Found::Missing => mknodat(&dir, name, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(self.nix("create overlay whiteout")),
            // The same layer has this name: it stays. A directory must hide what is below it.
            Found::Dir => {
                let fd = open_dir_at(&dir, name).map_err(self.nix("open dir"))?;
                self.set_opaque(&fd)
            }
            Found::Whiteout | Found::Symlink | Found::Other => Ok(()),
        }
    }

    fn directory(
        &mut self,
        dir: &OwnedFd,
        comps: &[OsString],
        base: &OsStr,
        meta: &EntryMeta,
    ) -> Result<(), ApplyError> {
        match found_at(dir, base).map_err(self.nix("stat"))? {
            Found::Dir => {}
            found => {
                if found != Found::Missing {
                    self.clear(dir, base)?;
                }
                mkdirat(dir, base, Mode::from_bits_truncate(0o700))
                    .map_err(self.nix("create dir"))?;
                if found == Found::Whiteout {
                    let fd = open_dir_at(dir, base).map_err(self.nix("open dir"))?;
                    self.set_opaque(&fd)?;
                }
            }
        }
        self.metadata(dir, base, meta, true)?;
        self.dirs.push((comps.to_vec(), meta.mtime));
        Ok(())
    }

    fn regular(&mut self, dir: &OwnedFd, base: &OsStr, meta: &EntryMeta) -> Result<(), ApplyError> {
        self.clear(dir, base)?;
        let fd = openat(
            dir,
            base,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(self.nix("create file"))?;
        let mut file = File::from(fd);
        let copied =
            io::copy(&mut self.reader, &mut file).map_err(|e| self.io("write file data", e))?;
        if copied != meta.size {
            return Err(self.io(
                "write file data",
                io::Error::new(io::ErrorKind::UnexpectedEof, "short entry data"),
            ));
        }
        drop(file);
        self.metadata(dir, base, meta, true)
    }

    fn hardlink(
        &mut self,
        dir: &OwnedFd,
        comps: &[OsString],
        base: &OsStr,
        meta: &EntryMeta,
    ) -> Result<(), ApplyError> {
        let raw = meta.link.clone().unwrap_or_default();
        let target = self.clean(&raw, "hardlink target length")?;
        let entry = self.entry_name();
        let bad = || ApplyError::BadHardlink {
            entry: entry.clone(),
            target: show(&raw),
        };
        // `dest` holds only this layer, so a non-directory found there (not a whiteout) was
        // extracted earlier in it: the file system is the record, no per-entry set in memory.
        if target.is_empty() {
            return Err(bad());
        }
        if target.as_slice() == comps {
            return Ok(());
        }
        let (tbase, tparent) = target.split_last().ok_or_else(bad)?;
        let tparent = self.resolve_parent(tparent)?;
        if tparent.len() + 1 == comps.len()
            && comps.starts_with(&tparent)
            && &comps[tparent.len()] == tbase
        {
            return Ok(());
        }
        // A missing parent, or one that is a symlink or not a directory: not a target.
        let tdir = self.resolve_dir(&tparent, false).map_err(|_| bad())?;
        if !matches!(
            found_at(&tdir, tbase).map_err(self.nix("stat hardlink target"))?,
            Found::Other | Found::Symlink
        ) {
            return Err(bad());
        }
        // The cache may now hold the target's parent; `dir` is still ours.
        self.clear(dir, base)?;
        linkat(&tdir, tbase.as_os_str(), dir, base, AtFlags::empty())
            .map_err(self.nix("create hardlink"))?;
        Ok(())
    }

    /// Owner, mode, xattrs and (for non-directories) mtime, never following a symlink.
    fn metadata(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        meta: &EntryMeta,
        not_symlink: bool,
    ) -> Result<(), ApplyError> {
        let uid = u32::try_from(meta.uid).map_err(|_| ApplyError::Invalid {
            entry: self.entry_name(),
            why: "uid out of range",
        })?;
        let gid = u32::try_from(meta.gid).map_err(|_| ApplyError::Invalid {
            entry: self.entry_name(),
            why: "gid out of range",
        })?;
        match fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => {}
            // Rootless with a single id (no subordinate range): only root exists here, so a base
            // image's other owners are squashed to it, as podman's ignore_chown_errors.
            Err(nix::errno::Errno::EINVAL) if rbuild_oci::host::is_single_id() => {}
            Err(e) => return Err(self.nix("chown")(e)),
        }
        if not_symlink {
            // chown cleared setuid/setgid: the mode goes after it. O_PATH|O_NOFOLLOW pins the inode.
            let mode = Mode::from_bits_truncate(meta.mode & 0o7777);
            match fchmodat(dir, name, mode, FchmodatFlags::NoFollowSymlink) {
                Ok(()) => {}
                Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {
                    let fd = openat(
                        dir,
                        name,
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                        Mode::empty(),
                    )
                    .map_err(self.nix("open for chmod"))?;
                    fchmod(&fd, mode).map_err(self.nix("chmod"))?;
                }
                Err(e) => return Err(self.io("chmod", nix_io(e))),
            }
        }
        // chown also dropped security.capability: xattrs after it.
        for (k, v) in &meta.xattrs {
            if super::is_overlay_xattr(k) {
                continue;
            }
            set_xattr(dir, name, OsStr::from_bytes(k), v).map_err(|e| self.io("set xattr", e))?;
        }
        if meta.kind != b'5' {
            set_mtime(dir, name, meta.mtime).map_err(self.nix("set mtime"))?;
        }
        Ok(())
    }

    /// Directory mtimes, deepest first, after everything was written.
    fn finish_dir_times(&mut self) {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (comps, mtime) in dirs.iter().rev() {
            let Some((base, parent)) = comps.split_last() else {
                continue;
            };
            // Best effort: a later member may have replaced or removed the directory.
            let Ok(dir) = self.resolve_dir(parent, false) else {
                continue;
            };
            if found_at(&dir, base) == Ok(Found::Dir) {
                let _ = set_mtime(&dir, base, *mtime);
            }
        }
    }
}

fn set_mtime<Fd: AsFd>(dir: Fd, name: &OsStr, mtime: i64) -> nix::Result<()> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(dir, name, &t, &t, UtimensatFlags::NoFollowSymlink)
}
