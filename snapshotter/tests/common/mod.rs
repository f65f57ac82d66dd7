//! Shared helpers for the integration tests: root check, tree snapshots, raw tar building.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Root is needed for devices, chown, trusted.* xattrs and mounts. Prints why when skipping.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP {test}: needs root (devices, chown, trusted.* xattrs, overlay)");
    false
}

/// Whether overlayfs can be mounted here (tried once, for real).
pub fn overlay_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let ok = fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP {test}: overlayfs not available in /proc/filesystems");
    }
    ok
}

/// Everything a layer must preserve about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// path → node, plus groups of paths sharing an inode (hardlinks).
pub fn snapshot(root: &Path) -> (BTreeMap<String, Node>, Vec<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    let groups = inodes.into_values().filter(|v| v.len() > 1).collect();
    (out, groups)
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<u64, Vec<String>>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(list) = xattr::list(&p) {
            for k in list {
                if let Ok(Some(v)) = xattr::get(&p, &k) {
                    xattrs.insert(k.to_string_lossy().into_owned(), v);
                }
            }
        }
        let node = Node {
            kind,
            mode: if ft.is_symlink() {
                0
            } else {
                md.mode() & 0o7777
            },
            uid: md.uid(),
            gid: md.gid(),
            mtime: if ft.is_symlink() { 0 } else { md.mtime() },
            content: if ft.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            },
            link: if ft.is_symlink() {
                Some(fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
            } else {
                None
            },
            rdev: md.rdev(),
            xattrs,
        };
        if !ft.is_dir() && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        out.insert(rel, node);
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// Member names of an uncompressed tar, in order, read with the tar crate as an independent reader.
pub fn tar_names(data: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(data);
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

/// A raw tar writer for hostile test layers: names go into headers byte for byte.
pub struct RawTar {
    pub b: tar::Builder<Vec<u8>>,
}

impl Default for RawTar {
    fn default() -> Self {
        Self::new()
    }
}

impl RawTar {
    pub fn new() -> Self {
        RawTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, path: &[u8], mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size);
        let n = path.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&path[..n]);
        h
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_mode(path, data, 0o644)
    }

    pub fn file_mode(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(
            tar::EntryType::Regular,
            path.as_bytes(),
            mode,
            data.len() as u64,
        );
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, path.as_bytes(), mode, 0);
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    fn link_entry(&mut self, kind: tar::EntryType, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, path.as_bytes(), 0o777, 0);
        let t = target.as_bytes();
        if t.len() > 100 {
            self.pax(&[("linkpath", t)]);
        } else {
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        }
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link_entry(tar::EntryType::Symlink, path, target)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link_entry(tar::EntryType::Link, path, target)
    }

    pub fn device(
        &mut self,
        kind: tar::EntryType,
        path: &str,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = Self::header(kind, path.as_bytes(), 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }

    /// A header whose size field says `header_size` while `data` is what follows.
    pub fn raw_file(&mut self, path: &str, header_size: u64, data: &[u8]) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, path.as_bytes(), 0o644, header_size);
        h.set_cksum();
        self.b.get_mut().extend_from_slice(h.as_bytes());
        let mut d = data.to_vec();
        d.resize(data.len().div_ceil(512) * 512, 0);
        self.b.get_mut().extend_from_slice(&d);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}
