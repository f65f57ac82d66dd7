//! Executing one COPY/ADD: writing a [`Selection`] into a destination root with Docker's
//! destination rules.
//!
//! * `dest` ending in `/`, several sources or matches, or `--parents`: `dest` is a directory
//!   (created with parents, 0755, owned by the `--chown` owner) and each source goes inside it.
//! * A file source onto an existing directory goes inside it; otherwise it becomes `dest`.
//! * A directory source copies its *contents* into `dest` (created if missing).
//! * Modes and mtimes come from the source (`--chmod` rewrites modes of files and directories
//!   copied), owners are the `--chown` owner or the selection's (0:0 for a context).
//! * Hard links between copied files stay hard links. Directories created by the copy get their
//!   source mode and mtime; directories that already existed are left as they are.
//! * ADD (`unpack`): a local tar archive (plain, gzip, bzip2, xz, zstd; detected by content) is
//!   extracted into `dest` instead of copied.

use crate::chmod::ModeSpec;
use crate::error::Result;
use crate::root::{clean, join, split_parent, Follow, NewDir, Root};
use crate::select::{EntryKind, SelEntry, SelItem, Selection};
use crate::unpack::{self, ExtractLimits};
use crate::write::{self, ApplyStats, DirHandle, Meta};
use nix::sys::stat::SFlag;
use std::collections::HashMap;

/// How a selection is written.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// `--chown`, already resolved in the destination root.
    pub owner: Option<(u32, u32)>,
    /// `--chmod`.
    pub mode: Option<ModeSpec>,
    /// `--parents`.
    pub parents: bool,
    /// ADD: extract local archives.
    pub unpack: bool,
    /// Budgets for extraction.
    pub limits: ExtractLimits,
}

/// Write `sel` (read from `src`) to `dest_path` in `dest`.
pub fn copy_selection(
    dest: &Root,
    src: &Root,
    sel: &Selection,
    dest_path: &str,
    opts: &CopyOptions,
) -> Result<ApplyStats> {
    let mut w = Copier {
        dest,
        src,
        opts,
        stats: ApplyStats::default(),
        links: HashMap::new(),
        new_dir: NewDir {
            mode: 0o755,
            owner: Some(opts.owner.unwrap_or((0, 0))),
            mtime: None,
        },
    };
    let dest_clean = clean(dest_path);
    let trailing = dest_path.is_empty()
        || dest_path.ends_with('/')
        || dest_path.ends_with("/.")
        || dest_path == "."
        || dest_clean.is_empty();
    let dest_is_dir = trailing || sel.several || opts.parents;
    if dest_is_dir {
        dest.mkdir_all(&dest_clean, &w.new_dir)?;
    } else {
        dest.mkdir_all(split_parent(&dest_clean).0, &w.new_dir)?;
    }
    for item in &sel.items {
        w.item(item, &dest_clean, dest_is_dir)?;
    }
    Ok(w.stats)
}

struct Copier<'a> {
    dest: &'a Root,
    src: &'a Root,
    opts: &'a CopyOptions,
    stats: ApplyStats,
    /// Source (dev, inode) of a multiply-linked file → canonical destination path of its first copy.
    links: HashMap<(u64, u64), String>,
    new_dir: NewDir,
}

impl Copier<'_> {
    fn item(&mut self, item: &SelItem, dest_clean: &str, dest_is_dir: bool) -> Result<()> {
        let Some(top) = item.entries.first() else {
            return Ok(());
        };
        if self.opts.unpack && top.kind == EntryKind::File {
            if let Some(c) = unpack::detect(self.src, &item.path)? {
                let (dir, canon) = self.dest.mkdir_all(dest_clean, &self.new_dir)?;
                let xroot = Root::from_fd(dir, self.dest.path().join(&canon));
                let file = self.src.open_file(&item.path, Follow::Never)?;
                unpack::extract(
                    file,
                    c,
                    &item.source,
                    &xroot,
                    self.opts.owner,
                    &self.opts.limits,
                    &mut self.stats,
                )?;
                self.stats.archives += 1;
                return Ok(());
            }
        }
        if top.kind == EntryKind::Dir {
            let target = if self.opts.parents {
                join(dest_clean, &item.parents_rel)
            } else {
                dest_clean.to_string()
            };
            let (_, canon) = self.dest.mkdir_all(&target, &self.new_dir)?;
            return self.contents(item, &canon);
        }
        let target = if self.opts.parents {
            join(dest_clean, &item.parents_rel)
        } else if dest_is_dir
            || self
                .dest
                .stat(dest_clean, Follow::All)?
                .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            join(dest_clean, &item.name)
        } else {
            dest_clean.to_string()
        };
        let (pfd, pcanon, name) = self.dest.parent_for_create(&target, &self.new_dir)?;
        let dir = DirHandle {
            fd: pfd,
            path: pcanon,
        };
        self.entry(&dir, &name, item, top)?;
        Ok(())
    }

    /// Copy the entries below a directory item into the canonical destination directory `base`.
    fn contents(&mut self, item: &SelItem, base: &str) -> Result<()> {
        // rel of a copied directory → its canonical destination path
        let mut dirs: HashMap<&str, String> = HashMap::new();
        let mut created: Vec<(String, (i64, i64))> = Vec::new();
        let mut cur: Option<DirHandle> = None;
        for e in &item.entries[1..] {
            let (prel, name) = split_parent(&e.rel);
            let pcanon = if prel.is_empty() {
                base.to_string()
            } else {
                match dirs.get(prel) {
                    Some(p) => p.clone(),
                    None => continue, // parent could not be created as a directory
                }
            };
            if cur.as_ref().map(|c| c.path != pcanon).unwrap_or(true) {
                cur = Some(DirHandle::open(self.dest, &pcanon)?);
            }
            let dir = cur.as_ref().expect("set just above");
            if e.kind == EntryKind::Dir {
                let meta = self.meta(e);
                let (canon, was_created) = write::ensure_dir(self.dest, dir, name, &meta)?;
                self.stats.dirs += 1;
                if was_created {
                    created.push((canon.clone(), e.mtime));
                }
                dirs.insert(e.rel.as_str(), canon);
            } else {
                self.entry(dir, name, item, e)?;
            }
        }
        // directory times last: writing children changed them
        for (canon, (s, ns)) in created.iter().rev() {
            let (p, n) = split_parent(canon);
            let ph = DirHandle::open(self.dest, p)?;
            crate::root::set_times_at(std::os::fd::AsFd::as_fd(&ph.fd), n, *s, *ns).map_err(
                |e| crate::error::FileOpError::io("setting times of", self.dest.path(), canon, e),
            )?;
        }
        Ok(())
    }

    fn meta(&self, e: &SelEntry) -> Meta {
        let mode = match &self.opts.mode {
            Some(m) if e.kind != EntryKind::Symlink => m.apply(e.mode, e.kind == EntryKind::Dir),
            _ => e.mode,
        };
        Meta {
            mode,
            owner: self.opts.owner.unwrap_or((e.uid, e.gid)),
            mtime: Some(e.mtime),
        }
    }

    /// Write one non-directory entry (or a top-level directory item's node) as `name` in `dir`.
    fn entry(&mut self, dir: &DirHandle, name: &str, item: &SelItem, e: &SelEntry) -> Result<()> {
        let meta = self.meta(e);
        let here = join(&dir.path, name);
        match e.kind {
            EntryKind::File => {
                let key = (e.stat.dev, e.stat.ino);
                if e.nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        write::write_hardlink(self.dest, dir, name, first, false)?;
                        self.stats.hardlinks += 1;
                        return Ok(());
                    }
                }
                let mut f = self
                    .src
                    .open_file(&join(&item.path, &e.rel), Follow::Never)?;
                self.stats.bytes += write::write_file(self.dest, dir, name, &mut f, &meta, false)?;
                self.stats.files += 1;
                if e.nlink > 1 {
                    self.links.insert(key, here);
                }
            }
            EntryKind::Symlink => {
                let target = e.link_target.as_deref().unwrap_or("");
                write::write_symlink(self.dest, dir, name, target, &meta, false)?;
                self.stats.symlinks += 1;
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
                let kind = match e.kind {
                    EntryKind::Fifo => SFlag::S_IFIFO,
                    EntryKind::CharDevice => SFlag::S_IFCHR,
                    _ => SFlag::S_IFBLK,
                };
                write::write_special(self.dest, dir, name, kind, e.rdev, &meta, false)?;
                self.stats.specials += 1;
            }
            EntryKind::Dir => {
                write::ensure_dir(self.dest, dir, name, &meta)?;
                self.stats.dirs += 1;
            }
        }
        Ok(())
    }
}
