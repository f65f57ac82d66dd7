//! Selection semantics and content checksums over real directory trees.

use rbuild_fileop::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// A context: files, a dir tree, symlinks inside and to the host.
fn context() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "a.txt", "a");
    write(r, "b.txt", "b");
    write(r, "c.md", "c");
    write(r, "src/main.rs", "fn main() {}");
    write(r, "src/lib/mod.rs", "mod x;");
    write(r, "src/app.log", "log");
    write(r, "secret.env", "KEY=1");
    write(r, "build/out.o", "o");
    write(r, "build/keep/k.txt", "k");
    symlink("a.txt", r.join("link-to-a")).unwrap();
    symlink("/a.txt", r.join("abs-link-to-a")).unwrap();
    symlink("/etc/passwd", r.join("host-passwd")).unwrap();
    symlink("../main.rs", r.join("src/lib/up")).unwrap();
    symlink("src", r.join("srclink")).unwrap();
    d
}

fn sel(root: &Root, sources: &[&str], ignore: &dyn Excluder) -> Result<Selection> {
    let opts = SelectOptions {
        ignore,
        ..Default::default()
    };
    select(
        root,
        &sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &opts,
    )
}

fn rels(s: &Selection) -> Vec<String> {
    s.items
        .iter()
        .flat_map(|i| {
            i.entries
                .iter()
                .map(move |e| format!("{}:{}", i.name, e.rel))
        })
        .collect()
}

#[test]
fn selection_table() {
    let d = context();
    let root = Root::open(d.path()).unwrap();
    let none = NoExcludes;
    // a single file
    let s = sel(&root, &["a.txt"], &none).unwrap();
    assert_eq!(rels(&s), ["a.txt:"]);
    assert!(!s.several);
    assert_eq!(s.items[0].entries[0].kind, EntryKind::File);
    assert_eq!(s.items[0].entries[0].size, 1);
    // a directory selects its contents; symlinks inside are kept as symlinks
    let s = sel(&root, &["src/"], &none).unwrap();
    assert_eq!(
        rels(&s),
        [
            "src:",
            "src:app.log",
            "src:lib",
            "src:lib/mod.rs",
            "src:lib/up",
            "src:main.rs"
        ]
    );
    let up = &s.items[0].entries[4];
    assert_eq!(up.kind, EntryKind::Symlink);
    assert_eq!(up.link_target.as_deref(), Some("../main.rs"));
    // wildcards, sorted, several matches
    let s = sel(&root, &["*.txt"], &none).unwrap();
    assert_eq!(rels(&s), ["a.txt:", "b.txt:"]);
    assert!(s.several);
    let s = sel(&root, &["src/*.rs", "[ab].t?t"], &none).unwrap();
    assert_eq!(rels(&s), ["main.rs:", "a.txt:", "b.txt:"]);
    // several sources
    let s = sel(&root, &["a.txt", "c.md"], &none).unwrap();
    assert!(s.several);
    // trailing slash, ./ and .. are cleaned (.. stops at the root)
    let s = sel(&root, &["./src/../../a.txt"], &none).unwrap();
    assert_eq!(rels(&s), ["a.txt:"]);
    // wildcards in directory segments; escapes
    // (like Go's Glob, a symlinked directory matches too)
    let s = sel(&root, &["s*/main.rs"], &none).unwrap();
    let srcs: Vec<_> = s.items.iter().map(|i| i.source.as_str()).collect();
    assert_eq!(srcs, ["src/main.rs", "srclink/main.rs"]);
    assert!(s.items.iter().all(|i| i.path == "src/main.rs"));
    assert!(
        sel(&root, &["[a"], &none).is_err(),
        "malformed wildcard is an error"
    );
    // climbing out of the context is impossible: `..` stops at the root
    let e = sel(&root, &["../../../../etc/passwd"], &none).unwrap_err();
    assert!(matches!(e, FileOpError::NotFound { .. }), "{e}");
    // a wildcard matching nothing selects nothing (BuildKit)
    assert!(sel(&root, &["*.nothing"], &none).unwrap().is_empty());
    // symlink sources are followed inside the root, named as written
    let s = sel(&root, &["link-to-a"], &none).unwrap();
    assert_eq!(s.items[0].name, "link-to-a");
    assert_eq!(s.items[0].path, "a.txt");
    let s = sel(&root, &["abs-link-to-a"], &none).unwrap();
    assert_eq!(s.items[0].path, "a.txt");
    let s = sel(&root, &["srclink/main.rs"], &none).unwrap();
    assert_eq!(s.items[0].path, "src/main.rs");
    // a symlink to a host path is not found in the context
    let e = sel(&root, &["host-passwd"], &none).unwrap_err();
    assert!(
        matches!(
            e,
            FileOpError::NotFound {
                excluded_by: None,
                ..
            }
        ),
        "{e}"
    );
    // missing source: error names the path
    let e = sel(&root, &["nope.txt"], &none).unwrap_err().to_string();
    assert!(e.contains("/nope.txt") && e.contains("not found"), "{e}");
}

#[test]
fn dockerignore_exclusions() {
    let d = context();
    let root = Root::open(d.path()).unwrap();
    let ig = Patterns::new(&["*.env", "**/*.log", "build", "!build/keep"]).unwrap();
    // missing because excluded: the error names the rule
    let e = sel(&root, &["secret.env"], &ig).unwrap_err();
    match &e {
        FileOpError::NotFound { excluded_by, .. } => {
            assert_eq!(excluded_by.as_deref(), Some("*.env"))
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("*.env"), "{e}");
    // excluded files disappear from directory sources and wildcards
    let s = sel(&root, &["src"], &ig).unwrap();
    assert!(!rels(&s).iter().any(|r| r.ends_with("app.log")));
    let s = sel(&root, &["*"], &ig).unwrap();
    let names: Vec<_> = s.items.iter().map(|i| i.name.as_str()).collect();
    assert!(!names.contains(&"secret.env"));
    assert!(
        names.contains(&"build"),
        "re-included child keeps its parent: {names:?}"
    );
    // an excluded dir with a re-included child: only that child
    let s = sel(&root, &["build"], &ig).unwrap();
    assert_eq!(rels(&s), ["build:", "build:keep", "build:keep/k.txt"]);
}

#[test]
fn copy_excludes_and_parents() {
    let d = context();
    let root = Root::open(d.path()).unwrap();
    let ex = Patterns::new(&["*.log", "lib"]).unwrap();
    let opts = SelectOptions {
        exclude: &ex,
        ..Default::default()
    };
    let s = select(&root, &["src".to_string()], &opts).unwrap();
    assert_eq!(rels(&s), ["src:", "src:main.rs"]);
    let ex = Patterns::new(&["b.*"]).unwrap();
    let opts = SelectOptions {
        exclude: &ex,
        ..Default::default()
    };
    let s = select(&root, &["*.txt".to_string()], &opts).unwrap();
    assert_eq!(rels(&s), ["a.txt:"]);

    let opts = SelectOptions {
        parents: true,
        ..Default::default()
    };
    let s = select(
        &root,
        &["src/lib/mod.rs".into(), "./src/./lib".into()],
        &opts,
    )
    .unwrap();
    assert_eq!(s.items[0].parents_rel, "src/lib/mod.rs");
    assert_eq!(s.items[1].parents_rel, "lib");
}

struct CountingCache {
    inner: MemoryChecksumCache,
    gets: AtomicUsize,
    puts: AtomicUsize,
}

impl ChecksumCache for CountingCache {
    fn get(&self, path: &Path, meta: &StatKey) -> Option<rbuild_oci::Digest> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(path, meta)
    }
    fn put(&self, path: &Path, meta: &StatKey, digest: &rbuild_oci::Digest) {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put(path, meta, digest)
    }
}

fn digest_of(dir: &Path) -> rbuild_oci::Digest {
    let root = Root::open(dir).unwrap();
    let s = sel(&root, &["."], &NoExcludes).unwrap();
    checksum(&root, &s, &NoChecksumCache).unwrap()
}

#[test]
fn checksum_properties() {
    let d = context();
    let r = d.path();
    let base = digest_of(r);
    // same tree elsewhere → same digest
    let d2 = context();
    assert_eq!(digest_of(d2.path()), base);
    // mtime change → same digest
    let f = fs::File::options()
        .write(true)
        .open(r.join("a.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();
    drop(f);
    assert_eq!(digest_of(r), base);
    // content change
    fs::write(r.join("a.txt"), "A").unwrap();
    let changed = digest_of(r);
    assert_ne!(changed, base);
    fs::write(r.join("a.txt"), "a").unwrap();
    assert_eq!(digest_of(r), base);
    // mode change
    fs::set_permissions(r.join("b.txt"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(digest_of(r), base);
    fs::set_permissions(r.join("b.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(digest_of(r), base);
    // new file
    write(r, "new.txt", "n");
    assert_ne!(digest_of(r), base);
    fs::remove_file(r.join("new.txt")).unwrap();
    assert_eq!(digest_of(r), base);
    // deleted file
    fs::remove_file(r.join("c.md")).unwrap();
    assert_ne!(digest_of(r), base);
    write(r, "c.md", "c");
    assert_eq!(digest_of(r), base);
    // renamed file
    fs::rename(r.join("c.md"), r.join("d.md")).unwrap();
    assert_ne!(digest_of(r), base);
    fs::rename(r.join("d.md"), r.join("c.md")).unwrap();
    // symlink target change
    fs::remove_file(r.join("link-to-a")).unwrap();
    symlink("b.txt", r.join("link-to-a")).unwrap();
    assert_ne!(digest_of(r), base);
}

#[test]
fn checksum_cache_hits_do_no_reads() {
    let d = context();
    let root = Root::open(d.path()).unwrap();
    let s = sel(&root, &["."], &NoExcludes).unwrap();
    let cache = CountingCache {
        inner: MemoryChecksumCache::new(),
        gets: AtomicUsize::new(0),
        puts: AtomicUsize::new(0),
    };
    let (d1, st1) = checksum_with_stats(&root, &s, &cache).unwrap();
    assert_eq!(st1.cache_hits, 0);
    assert_eq!(cache.puts.load(Ordering::SeqCst), st1.files);
    assert!(st1.bytes_hashed > 0);
    let puts = cache.puts.load(Ordering::SeqCst);
    let s2 = sel(&root, &["."], &NoExcludes).unwrap();
    let (d2, st2) = checksum_with_stats(&root, &s2, &cache).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(
        st2.cache_hits, st2.files,
        "every file re-keyed from its stat"
    );
    assert_eq!(st2.bytes_hashed, 0);
    assert_eq!(
        cache.puts.load(Ordering::SeqCst),
        puts,
        "no file was hashed again"
    );
    // one changed file: one read
    fs::write(d.path().join("b.txt"), "bb").unwrap();
    let s3 = sel(&root, &["."], &NoExcludes).unwrap();
    let (d3, st3) = checksum_with_stats(&root, &s3, &cache).unwrap();
    assert_ne!(d3, d1);
    assert_eq!(st3.files - st3.cache_hits, 1);
    assert_eq!(st3.bytes_hashed, 2);
}

#[test]
fn stat_fingerprint_is_stable_and_sees_every_change() {
    let d = context();
    let r = d.path();
    let root = Root::open(r).unwrap();
    let fp = |sources: &[&str]| stat_fingerprint(&sel(&root, sources, &NoExcludes).unwrap());
    let base = fp(&["."]);
    assert_eq!(fp(&["."]), base, "unchanged tree, same fingerprint");
    assert_ne!(fp(&["src"]), base, "another selection");
    let mut seen = vec![base];
    let mut changed = |what: &str, f: &dyn Fn()| {
        f();
        let now = fp(&["."]);
        assert!(!seen.contains(&now), "{what}: fingerprint did not change");
        seen.push(now);
    };
    // Same size, same content length: only the stat (mtime/ctime) tells.
    changed("content, same size", &|| {
        fs::write(r.join("a.txt"), "z").unwrap()
    });
    changed("mtime alone", &|| {
        let f = fs::File::options()
            .write(true)
            .open(r.join("b.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
    });
    changed("mode", &|| {
        fs::set_permissions(r.join("c.md"), fs::Permissions::from_mode(0o600)).unwrap()
    });
    changed("new file", &|| write(r, "src/new.rs", "n"));
    changed("deleted file", &|| {
        fs::remove_file(r.join("src/app.log")).unwrap()
    });
    changed("renamed file", &|| {
        fs::rename(r.join("build/out.o"), r.join("build/out2.o")).unwrap()
    });
    changed("symlink target", &|| {
        fs::remove_file(r.join("link-to-a")).unwrap();
        symlink("b.txt", r.join("link-to-a")).unwrap();
    });
    changed("replaced by a new inode", &|| {
        let tmp = r.join("b.tmp");
        fs::write(&tmp, "b").unwrap();
        fs::rename(&tmp, r.join("b.txt")).unwrap();
    });
}
