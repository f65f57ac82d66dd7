//! Which files a COPY reads: Docker's source selection, shared by the checksum (cache key) and the
//! copy itself, so that what is keyed is exactly what is copied.
//!
//! Semantics (BuildKit's): sources are cleaned relative to the source root; a source with wildcards
//! is expanded segment by segment with Go's `filepath.Match` (matches sorted, a wildcard matching
//! nothing selects nothing); a source that names a symlink is followed *inside* the root (a link to
//! a host path is simply not found); a directory source selects its contents, recursively, with
//! symlinks inside it kept as symlinks; `.dockerignore`-excluded paths are invisible, and a missing
//! source is an error that names the rule that excluded it, if one did.

use crate::error::{display_path, FileOpError, Result};
use crate::pattern::{has_wildcard, match_segment, Excluder, NoExcludes};
use crate::root::{clean, join, split_parent, Follow, Root};
use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, SFlag};
use rayon::prelude::*;
use std::os::fd::AsFd;

/// The type of a selected entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    /// A stable one-byte tag for checksums.
    pub fn tag(self) -> u8 {
        match self {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::Fifo => b'p',
            EntryKind::CharDevice => b'c',
            EntryKind::BlockDevice => b'b',
        }
    }
}

/// What the checksum cache is keyed by besides the path: if any of these changed, the content may
/// have. `mtime_ns`/`ctime_ns` are nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// One selected file, directory, symlink or special file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelEntry {
    /// Path relative to the item (`""` for the item itself, `sub/file` below a directory item).
    pub rel: String,
    pub kind: EntryKind,
    /// Permission bits, including set-id and sticky bits (`0o7777`).
    pub mode: u32,
    /// Owner as the copy will give it when no `--chown` is set (0:0 for contexts, see
    /// [`SelectOptions::keep_owner`]).
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Target of a symlink, verbatim.
    pub link_target: Option<String>,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// Modification time (seconds, nanoseconds) — copied, never keyed.
    pub mtime: (i64, i64),
    pub stat: StatKey,
    pub nlink: u64,
}

/// One matched source: a file, or a directory and everything selected below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelItem {
    /// The source as written, or the path a wildcard matched (cleaned, root-relative).
    pub source: String,
    /// Canonical (symlink-free) path of the item in the source root; entries are read below it.
    pub path: String,
    /// The name the item gets when copied into a directory: the last component of `source`.
    pub name: String,
    /// With `--parents`: the path below the `/./` pivot (or the whole source path) that is
    /// recreated under the destination. Empty otherwise.
    pub parents_rel: String,
    /// The item itself first (`rel == ""`), then, for a directory, what is below it in path order.
    pub entries: Vec<SelEntry>,
}

/// Everything one COPY reads from one source root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub items: Vec<SelItem>,
    /// Several sources were given or a wildcard matched several paths: the destination must be a
    /// directory.
    pub several: bool,
}

impl Selection {
    /// Number of entries over all items.
    pub fn len(&self) -> usize {
        self.items.iter().map(|i| i.entries.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// How to select.
#[derive(Clone, Copy)]
pub struct SelectOptions<'a> {
    /// The source root's `.dockerignore` rules (paths relative to the source root).
    pub ignore: &'a dyn Excluder,
    /// COPY `--exclude` patterns (paths relative to a directory source, or the matched path).
    pub exclude: &'a dyn Excluder,
    /// COPY `--parents`.
    pub parents: bool,
    /// Keep the source's uid/gid (copies from another stage or image). When false (a build
    /// context), every entry is owned by 0:0, as BuildKit's context transfer resets owners.
    pub keep_owner: bool,
    /// A wildcard that matches nothing is not an error (BuildKit's COPY behaviour).
    pub allow_empty_wildcard: bool,
}

impl Default for SelectOptions<'_> {
    fn default() -> Self {
        SelectOptions {
            ignore: &NoExcludes,
            exclude: &NoExcludes,
            parents: false,
            keep_owner: false,
            allow_empty_wildcard: true,
        }
    }
}

/// Select `sources` (relative to `src`; may contain wildcards) the way Docker's COPY does.
pub fn select(src: &Root, sources: &[String], opts: &SelectOptions<'_>) -> Result<Selection> {
    let mut sel = Selection {
        items: Vec::new(),
        several: sources.len() > 1,
    };
    for source in sources {
        let (pivot, body) = split_pivot(source, opts.parents);
        let cleaned = clean(&body);
        let wild = has_wildcard(&cleaned);
        let matches = if wild {
            let m = expand(src, &cleaned, opts)?;
            if m.len() > 1 {
                sel.several = true;
            }
            if m.is_empty() && !opts.allow_empty_wildcard {
                return Err(FileOpError::NotFound {
                    root: src.path().to_path_buf(),
                    path: display_path(&cleaned),
                    excluded_by: None,
                });
            }
            m
        } else {
            vec![cleaned]
        };
        for m in matches {
            match select_one(src, &m, opts)? {
                Some(item) if item.entries.is_empty() => {}
                Some(mut item) => {
                    item.source = m.clone();
                    if opts.parents {
                        item.parents_rel = match &pivot {
                            Some(p) => clean(m.strip_prefix(p.as_str()).unwrap_or(&m)),
                            None => m.clone(),
                        };
                    }
                    sel.items.push(item);
                }
                None if wild => {}
                None => {
                    return Err(FileOpError::NotFound {
                        root: src.path().to_path_buf(),
                        path: display_path(&m),
                        excluded_by: opts.ignore.excluded_by(&m),
                    })
                }
            }
        }
    }
    Ok(sel)
}

/// `--parents` pivot: `a/./b/c` keeps `b/c` under the destination. Returns the cleaned pivot
/// prefix (`a`) and the path with the pivot marker removed.
fn split_pivot(source: &str, parents: bool) -> (Option<String>, String) {
    let trimmed = source.trim_start_matches('/');
    let mut s = trimmed;
    while let Some(r) = s.strip_prefix("./") {
        s = r;
    }
    if parents {
        if let Some(i) = s.find("/./") {
            let prefix = clean(&s[..i]);
            return (Some(prefix), format!("{}/{}", &s[..i], &s[i + 3..]));
        }
    }
    (None, s.to_string())
}

/// Expand a cleaned wildcard path, segment by segment, into the existing, not-excluded paths it
/// matches (as written, not canonicalized), sorted per directory like Go's `filepath.Glob`.
fn expand(src: &Root, pattern: &str, opts: &SelectOptions<'_>) -> Result<Vec<String>> {
    let mut cur: Vec<String> = vec![String::new()];
    for seg in pattern.split('/') {
        let mut next = Vec::new();
        if !has_wildcard(seg) {
            // validate escapes even in literal segments
            for c in &cur {
                next.push(join(c, &unescape(seg)));
            }
        } else {
            match_segment(seg, "")?;
            for c in &cur {
                let Some(canon) = src.canonicalize(c)? else {
                    continue;
                };
                let names = match list_dir(src, &canon) {
                    Ok(n) => n,
                    Err(_) => continue, // not a directory: no matches under it
                };
                for name in names {
                    if match_segment(seg, &name)? {
                        let p = join(c, &name);
                        if opts.ignore.excluded_by(&join(&canon, &name)).is_some()
                            && !opts.ignore.may_include_below(&join(&canon, &name))
                        {
                            continue;
                        }
                        next.push(p);
                    }
                }
            }
        }
        cur = next;
    }
    // keep only what exists (following symlinks inside the root)
    let mut out = Vec::new();
    for c in cur {
        if src.canonicalize(&c)?.is_some() {
            out.push(c);
        }
    }
    Ok(out)
}

fn unescape(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    let mut esc = false;
    for ch in seg.chars() {
        if ch == '\\' && !esc {
            esc = true;
            continue;
        }
        esc = false;
        out.push(ch);
    }
    out
}

/// Sorted names of a canonical directory path.
fn list_dir(src: &Root, canon: &str) -> Result<Vec<String>> {
    let fd = src
        .openat(canon, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never)
        .map_err(|e| FileOpError::io("opening directory", src.path(), canon, e))?;
    let mut dir =
        Dir::from_fd(fd).map_err(|e| FileOpError::io("reading directory", src.path(), canon, e))?;
    let mut names = Vec::new();
    for ent in dir.iter() {
        let ent = ent.map_err(|e| FileOpError::io("reading directory", src.path(), canon, e))?;
        let b = ent.file_name().to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        match std::str::from_utf8(b) {
            Ok(s) => names.push(s.to_string()),
            Err(_) => {
                return Err(FileOpError::Unsupported {
                    root: src.path().to_path_buf(),
                    path: display_path(&join(canon, &String::from_utf8_lossy(b))),
                    kind: "file name is not UTF-8",
                })
            }
        }
    }
    names.sort_unstable();
    Ok(names)
}

fn select_one(src: &Root, written: &str, opts: &SelectOptions<'_>) -> Result<Option<SelItem>> {
    let Some(canon) = src.canonicalize(written)? else {
        return Ok(None);
    };
    let Some(st) = src.stat(&canon, Follow::Never)? else {
        return Ok(None);
    };
    let Some(kind) = kind_of(&st) else {
        return Err(FileOpError::Unsupported {
            root: src.path().to_path_buf(),
            path: display_path(&canon),
            kind: "socket",
        });
    };
    let is_dir = kind == EntryKind::Dir;
    for p in [written, canon.as_str()] {
        if let Some(rule) = opts.ignore.excluded_by(p) {
            if !(is_dir && opts.ignore.may_include_below(p)) {
                return Err(FileOpError::NotFound {
                    root: src.path().to_path_buf(),
                    path: display_path(written),
                    excluded_by: Some(rule),
                });
            }
        }
    }
    let name = split_parent(written).1.to_string();
    if opts.exclude.excluded_by(written).is_some()
        || (!name.is_empty() && opts.exclude.excluded_by(&name).is_some())
    {
        // --exclude on a matched source drops it (it is not an error: the user asked for it)
        // (an item without entries, dropped by `select`)
        return Ok(Some(SelItem {
            source: written.to_string(),
            path: canon,
            name,
            parents_rel: String::new(),
            entries: Vec::new(),
        }));
    }
    let mut entries = vec![entry(String::new(), kind, &st, None, opts)];
    if is_dir {
        walk(src, &canon, "", opts, &mut entries, 0)?;
    }
    Ok(Some(SelItem {
        source: written.to_string(),
        path: canon,
        name,
        parents_rel: String::new(),
        entries,
    }))
}

/// Directories with at least this many entries are stat'ed in parallel.
const PARALLEL_STAT_MIN: usize = 64;

/// Subdirectories are walked in parallel down to this depth (deeper, one after another: rayon's
/// worker stacks are small).
const PARALLEL_WALK_DEPTH: usize = 16;

/// Deepest directory nesting a walk follows (PATH_MAX allows about 2048).
const MAX_DEPTH: usize = 2048;

/// One child of a walked directory, before its subtree is walked.
enum Child {
    /// Selected, with nothing below it to walk (a file, or a directory to walk: `Some(ctx_path)`).
    Entry(SelEntry, Option<String>),
    /// An excluded directory something below may be re-included from: its entry is kept only
    /// when something below is.
    Excluded(SelEntry, String),
}

fn walk(
    src: &Root,
    dir: &str,
    item_rel: &str,
    opts: &SelectOptions<'_>,
    out: &mut Vec<SelEntry>,
    depth: usize,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(FileOpError::Unsupported {
            root: src.path().to_path_buf(),
            path: display_path(dir),
            kind: "directory nesting too deep",
        });
    }
    let fd = src
        .openat(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Follow::Never)
        .map_err(|e| FileOpError::io("opening directory", src.path(), dir, e))?;
    let names = list_dir(src, dir)?;
    let stat = |name: String| -> Result<(String, FileStat)> {
        let st = fstatat(fd.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| FileOpError::io("stat", src.path(), &join(dir, &name), e))?;
        Ok((name, st))
    };
    // A rebuild's context walk is mostly `stat`s: spread a big directory's over the CPUs.
    let stats: Vec<(String, FileStat)> = if names.len() >= PARALLEL_STAT_MIN {
        names.into_par_iter().map(stat).collect::<Result<_>>()?
    } else {
        names.into_iter().map(stat).collect::<Result<_>>()?
    };
    let mut children = Vec::with_capacity(stats.len());
    let mut subdirs = 0;
    for (name, st) in stats {
        let Some(kind) = kind_of(&st) else {
            continue; // sockets are not copied
        };
        let ctx_path = join(dir, &name);
        let rel = join(item_rel, &name);
        let is_dir = kind == EntryKind::Dir;
        let ignored = opts.ignore.excluded_by(&ctx_path).is_some();
        let excluded = opts.exclude.excluded_by(&rel).is_some();
        if ignored || excluded {
            let descend = is_dir
                && (!ignored || opts.ignore.may_include_below(&ctx_path))
                && (!excluded || opts.exclude.may_include_below(&rel));
            if descend {
                subdirs += 1;
                children.push(Child::Excluded(entry(rel, kind, &st, None, opts), ctx_path));
            }
            continue;
        }
        let target = if kind == EntryKind::Symlink {
            let t = nix::fcntl::readlinkat(fd.as_fd(), name.as_str())
                .map_err(|e| FileOpError::io("reading symlink", src.path(), &ctx_path, e))?;
            Some(
                String::from_utf8_lossy(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()))
                    .into_owned(),
            )
        } else {
            None
        };
        subdirs += usize::from(is_dir);
        children.push(Child::Entry(
            entry(rel, kind, &st, target, opts),
            is_dir.then_some(ctx_path),
        ));
    }
    drop(fd);
    // The subtrees, in parallel when there are several: a context of many directories is walked
    // on every CPU, not one directory at a time.
    let subtree = |c: &Child| -> Result<Vec<SelEntry>> {
        let (e, path) = match c {
            Child::Entry(e, Some(p)) | Child::Excluded(e, p) => (e, p),
            Child::Entry(_, None) => return Ok(Vec::new()),
        };
        let mut below = Vec::new();
        walk(src, path, &e.rel, opts, &mut below, depth + 1)?;
        Ok(below)
    };
    let subtrees: Vec<Vec<SelEntry>> = if subdirs >= 2 && depth < PARALLEL_WALK_DEPTH {
        children.par_iter().map(subtree).collect::<Result<_>>()?
    } else {
        children.iter().map(subtree).collect::<Result<_>>()?
    };
    out.reserve(children.len() + subtrees.iter().map(Vec::len).sum::<usize>());
    for (c, mut below) in children.into_iter().zip(subtrees) {
        match c {
            Child::Entry(e, _) => {
                out.push(e);
                out.append(&mut below);
            }
            Child::Excluded(e, _) => {
                if !below.is_empty() {
                    out.push(e);
                    out.append(&mut below);
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn kind_of(st: &FileStat) -> Option<EntryKind> {
    Some(match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
        SFlag::S_IFREG => EntryKind::File,
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Symlink,
        SFlag::S_IFIFO => EntryKind::Fifo,
        SFlag::S_IFCHR => EntryKind::CharDevice,
        SFlag::S_IFBLK => EntryKind::BlockDevice,
        _ => return None,
    })
}

fn entry(
    rel: String,
    kind: EntryKind,
    st: &FileStat,
    target: Option<String>,
    opts: &SelectOptions<'_>,
) -> SelEntry {
    let (uid, gid) = if opts.keep_owner {
        (st.st_uid, st.st_gid)
    } else {
        (0, 0)
    };
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    SelEntry {
        rel,
        kind,
        mode: st.st_mode & 0o7777,
        uid,
        gid,
        size: if kind == EntryKind::File {
            st.st_size as u64
        } else {
            0
        },
        link_target: target,
        rdev: if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            st.st_rdev
        } else {
            0
        },
        mtime: (st.st_mtime, st.st_mtime_nsec),
        stat: StatKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        },
        nlink: st.st_nlink,
    }
}
