//! Copies, ADD extraction, heredoc files and WORKDIR into real destination roots. Ownership checks
//! need root; they are skipped with a printed reason otherwise.

use rbuild_fileop::*;
use rbuild_ops::{Chmod, Chown, FileAction};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn write(root: &Path, rel: &str, data: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn copy(sources: &[&str], dest: &str) -> FileAction {
    FileAction::Copy {
        input: 1,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        chown: None,
        chmod: None,
        unpack: false,
        parents: false,
        exclude: vec![],
        link: false,
    }
}

struct Env {
    ctx: tempfile::TempDir,
    dst: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let ctx = tempfile::tempdir().unwrap();
        let r = ctx.path();
        write(r, "a.txt", "alpha", 0o640);
        write(r, "run.sh", "#!/bin/sh", 0o755);
        write(r, "app/x.txt", "x", 0o600);
        write(r, "app/sub/y.txt", "y", 0o644);
        fs::set_permissions(r.join("app/sub"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink("../x.txt", r.join("app/sub/link")).unwrap();
        fs::hard_link(r.join("app/x.txt"), r.join("app/sub/hard")).unwrap();
        let mtime = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(r.join("a.txt"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir_all(dst.path().join("etc")).unwrap();
        fs::write(
            dst.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dst.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:\n",
        )
        .unwrap();
        Env { ctx, dst }
    }

    fn run(&self, actions: &[FileAction]) -> Result<ApplyStats> {
        let dest = Root::open(self.dst.path()).unwrap();
        let src = Root::open(self.ctx.path()).unwrap();
        let sources = [
            None,
            Some(CopySource {
                root: &src,
                ignore: &NoExcludes,
                keep_owner: false,
            }),
        ];
        apply(&dest, actions, &sources, &ApplyContext::default())
    }

    fn d(&self, rel: &str) -> std::path::PathBuf {
        self.dst.path().join(rel)
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn file_and_dir_destinations() {
    let e = Env::new();
    // file to a new path: becomes that path (parents created)
    e.run(&[copy(&["a.txt"], "/opt/renamed.txt")]).unwrap();
    assert_eq!(fs::read_to_string(e.d("opt/renamed.txt")).unwrap(), "alpha");
    assert_eq!(mode(&e.d("opt/renamed.txt")), 0o640);
    assert_eq!(
        fs::metadata(e.d("opt/renamed.txt")).unwrap().mtime(),
        1_000_000,
        "mtime preserved"
    );
    // trailing slash: inside
    e.run(&[copy(&["a.txt"], "/data/")]).unwrap();
    assert!(e.d("data/a.txt").is_file());
    assert_eq!(mode(&e.d("data")), 0o755);
    // file onto an existing directory: inside it
    e.run(&[copy(&["run.sh"], "/data")]).unwrap();
    assert_eq!(mode(&e.d("data/run.sh")), 0o755);
    // several sources: dest is a dir
    e.run(&[copy(&["a.txt", "run.sh"], "/multi")]).unwrap();
    assert!(e.d("multi/a.txt").is_file() && e.d("multi/run.sh").is_file());
    // directory source: its contents; created dirs keep the source mode; symlinks stay symlinks
    let st = e.run(&[copy(&["app"], "/srv/app")]).unwrap();
    assert_eq!(fs::read_to_string(e.d("srv/app/x.txt")).unwrap(), "x");
    assert!(!e.d("srv/app/app").exists());
    assert_eq!(mode(&e.d("srv/app/sub")), 0o750);
    assert_eq!(mode(&e.d("srv/app/x.txt")), 0o600);
    assert_eq!(
        fs::read_link(e.d("srv/app/sub/link")).unwrap().to_str(),
        Some("../x.txt")
    );
    // hard links inside the copy stay hard links
    let a = fs::metadata(e.d("srv/app/x.txt")).unwrap();
    let b = fs::metadata(e.d("srv/app/sub/hard")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert_eq!(st.hardlinks, 1);
    // copying again over the result replaces files
    e.run(&[copy(&["app"], "/srv/app")]).unwrap();
    assert_eq!(fs::read_to_string(e.d("srv/app/sub/y.txt")).unwrap(), "y");
    // wildcard with several matches into a dir
    e.run(&[copy(&["*.txt", "*.sh"], "/w/")]).unwrap();
    assert!(e.d("w/a.txt").is_file() && e.d("w/run.sh").is_file());
    // missing source fails and names it
    let err = e.run(&[copy(&["missing"], "/x")]).unwrap_err().to_string();
    assert!(err.contains("/missing"), "{err}");
    // a file where a directory is needed is a conflict, not a crash
    fs::write(e.d("blocker"), "").unwrap();
    assert!(e.run(&[copy(&["a.txt"], "/blocker/in/")]).is_err());
}

#[test]
fn ownership_and_chmod() {
    if !is_root() {
        eprintln!("skipping ownership_and_chmod: needs root for chown");
        return;
    }
    let e = Env::new();
    // default owner 0:0 from a context
    e.run(&[copy(&["a.txt"], "/plain.txt")]).unwrap();
    let m = fs::metadata(e.d("plain.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));
    // --chown by name resolved in the destination root, and the created dest dir owned too
    let mut c = copy(&["app"], "/home/app/code/");
    if let FileAction::Copy { chown, chmod, .. } = &mut c {
        *chown = Some(Chown {
            user: "app".into(),
            group: Some("staff".into()),
        });
        *chmod = Some(Chmod::Symbolic("u+x,g-w,o=r".into()));
    }
    e.run(&[c]).unwrap();
    for p in [
        "home/app/code",
        "home/app/code/x.txt",
        "home/app/code/sub",
        "home/app/code/sub/y.txt",
    ] {
        let m = fs::symlink_metadata(e.d(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 50), "{p}");
    }
    let m = fs::symlink_metadata(e.d("home/app/code/sub/link")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 50), "symlink lchowned");
    assert_eq!(mode(&e.d("home/app/code/x.txt")), 0o704);
    assert_eq!(mode(&e.d("home/app/code/sub/y.txt")), 0o744);
    assert_eq!(mode(&e.d("home/app/code/sub")), 0o754);
    // numeric chown: gid = uid; octal chmod
    let mut c = copy(&["run.sh"], "/n/");
    if let FileAction::Copy { chown, chmod, .. } = &mut c {
        *chown = Some(Chown {
            user: "4242".into(),
            group: None,
        });
        *chmod = Some(Chmod::Octal(0o4711));
    }
    e.run(&[c]).unwrap();
    let m = fs::metadata(e.d("n/run.sh")).unwrap();
    assert_eq!((m.uid(), m.gid()), (4242, 4242));
    assert_eq!(mode(&e.d("n/run.sh")), 0o4711, "set-id bits survive chown");
    // unknown user: clear error, nothing written
    let mut c = copy(&["a.txt"], "/ghost/");
    if let FileAction::Copy { chown, .. } = &mut c {
        *chown = Some(Chown {
            user: "ghost".into(),
            group: None,
        });
    }
    let err = e.run(&[c]).unwrap_err().to_string();
    assert!(err.contains("ghost"), "{err}");
    assert!(!e.d("ghost").exists());
}

#[test]
fn parents_and_exclude() {
    let e = Env::new();
    let mut c = copy(&["app/sub/y.txt", "./app/./sub"], "/p");
    if let FileAction::Copy { parents, .. } = &mut c {
        *parents = true;
    }
    e.run(&[c]).unwrap();
    assert!(e.d("p/app/sub/y.txt").is_file());
    assert!(e.d("p/sub/y.txt").is_file());
    let mut c = copy(&["app"], "/ex/");
    if let FileAction::Copy { exclude, .. } = &mut c {
        *exclude = vec!["sub".into()];
    }
    e.run(&[c]).unwrap();
    assert!(e.d("ex/x.txt").is_file());
    assert!(!e.d("ex/sub").exists());
}

#[test]
fn dest_through_absolute_symlink_stays_inside() {
    let e = Env::new();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("sentinel"), "host").unwrap();
    // the image has /etc -> <a host path>; inside the rootfs that path does not exist
    fs::remove_dir_all(e.d("etc")).unwrap();
    symlink(host.path(), e.d("etc")).unwrap();
    e.run(&[copy(&["a.txt"], "/etc/sentinel")]).unwrap();
    e.run(&[copy(&["app"], "/etc/app/")]).unwrap();
    assert_eq!(
        fs::read_to_string(host.path().join("sentinel")).unwrap(),
        "host"
    );
    assert_eq!(
        fs::read_dir(host.path()).unwrap().count(),
        1,
        "nothing written on the host"
    );
    let inside = e.dst.path().join(host.path().strip_prefix("/").unwrap());
    assert_eq!(
        fs::read_to_string(inside.join("sentinel")).unwrap(),
        "alpha"
    );
    assert!(inside.join("app/sub/y.txt").is_file());
    // a relative link climbing out stops at the root
    symlink("../../../../../../tmp", e.d("up")).unwrap();
    e.run(&[copy(&["a.txt"], "/up/f.txt")]).unwrap();
    assert!(e.d("tmp/f.txt").is_file());
}

fn tar_bytes(members: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o750
        } else {
            0o640
        });
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(777);
        // write the raw name so hostile paths (`../x`) stay as they are
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn add(sources: &[&str], dest: &str) -> FileAction {
    let mut c = copy(sources, dest);
    if let FileAction::Copy { unpack, .. } = &mut c {
        *unpack = true;
    }
    c
}

#[test]
fn add_extracts_archives_safely() {
    use tar::EntryType as T;
    let e = Env::new();
    let tar = tar_bytes(&[
        ("dir/", T::Directory, b"", None),
        ("dir/f.txt", T::Regular, b"hello", None),
        ("dir/link", T::Symlink, b"", Some("/etc")),
        ("dir/hard", T::Link, b"", Some("dir/f.txt")),
        ("dir/link/planted", T::Regular, b"p", None),
    ]);
    fs::write(e.ctx.path().join("plain.tar"), &tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    fs::write(e.ctx.path().join("data.tgz"), gz.finish().unwrap()).unwrap();
    fs::write(
        e.ctx.path().join("data.tar.zst"),
        zstd::encode_all(&tar[..], 3).unwrap(),
    )
    .unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(&tar).unwrap();
    fs::write(e.ctx.path().join("data.tbz"), bz.finish().unwrap()).unwrap();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&tar).unwrap();
    fs::write(e.ctx.path().join("data.txz"), xz.finish().unwrap()).unwrap();
    // named like an archive but not one: copied as is
    fs::write(e.ctx.path().join("fake.tar.gz"), "not gzip").unwrap();

    for (i, name) in [
        "plain.tar",
        "data.tgz",
        "data.tar.zst",
        "data.tbz",
        "data.txz",
    ]
    .iter()
    .enumerate()
    {
        let dest = format!("/x{i}");
        let st = e.run(&[add(&[name], &dest)]).unwrap();
        assert_eq!(st.archives, 1, "{name}");
        let base = e.d(&format!("x{i}"));
        assert_eq!(
            fs::read_to_string(base.join("dir/f.txt")).unwrap(),
            "hello",
            "{name}"
        );
        assert_eq!(mode(&base.join("dir/f.txt")), 0o640);
        assert_eq!(mode(&base.join("dir")), 0o750);
        assert_eq!(fs::metadata(base.join("dir")).unwrap().mtime(), 777);
        let a = fs::metadata(base.join("dir/f.txt")).unwrap();
        let h = fs::metadata(base.join("dir/hard")).unwrap();
        assert_eq!(a.ino(), h.ino(), "hard link kept");
        if is_root() {
            assert_eq!((a.uid(), a.gid()), (1234, 5678), "owners from the archive");
        }
        // the member under the absolute symlink landed inside the extraction root
        assert_eq!(
            fs::read_to_string(base.join("etc/planted")).unwrap(),
            "p",
            "{name}"
        );
    }
    assert_eq!(
        fs::read_to_string(e.d("etc/passwd"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    e.run(&[add(&["fake.tar.gz"], "/fake/")]).unwrap();
    assert_eq!(
        fs::read_to_string(e.d("fake/fake.tar.gz")).unwrap(),
        "not gzip"
    );

    // a `../` member is rejected, nothing lands outside
    let evil = tar_bytes(&[("../escape.txt", T::Regular, b"x", None)]);
    fs::write(e.ctx.path().join("evil.tar"), &evil).unwrap();
    let err = e.run(&[add(&["evil.tar"], "/in/")]).unwrap_err();
    assert!(
        matches!(err, FileOpError::UnsafeArchiveEntry { .. }),
        "{err}"
    );
    assert!(!e.d("escape.txt").exists());
    let evil = tar_bytes(&[("h", T::Link, b"", Some("../../etc/passwd"))]);
    fs::write(e.ctx.path().join("evil2.tar"), &evil).unwrap();
    assert!(e.run(&[add(&["evil2.tar"], "/in2/")]).is_err());

    // budgets
    let dest = Root::open(e.dst.path()).unwrap();
    let src = Root::open(e.ctx.path()).unwrap();
    let sources = [
        None,
        Some(CopySource {
            root: &src,
            ignore: &NoExcludes,
            keep_owner: false,
        }),
    ];
    let ctx = ApplyContext {
        source_date_epoch: None,
        limits: ExtractLimits {
            max_entries: 2,
            ..Default::default()
        },
    };
    let err = apply(&dest, &[add(&["plain.tar"], "/b/")], &sources, &ctx).unwrap_err();
    assert!(matches!(err, FileOpError::Budget { .. }), "{err}");
    let ctx = ApplyContext {
        source_date_epoch: None,
        limits: ExtractLimits {
            max_bytes: 3,
            ..Default::default()
        },
    };
    let err = apply(&dest, &[add(&["data.tgz"], "/b2/")], &sources, &ctx).unwrap_err();
    assert!(matches!(err, FileOpError::Budget { .. }), "{err}");
}

#[test]
fn mkfile_and_mkdir() {
    let e = Env::new();
    let dest = Root::open(e.dst.path()).unwrap();
    let ctx = ApplyContext {
        source_date_epoch: Some(1_700_000_000),
        ..Default::default()
    };
    let chown = is_root().then(|| Chown {
        user: "app".into(),
        group: None,
    });
    apply(
        &dest,
        &[
            FileAction::Mkdir {
                path: "/work/dir/deep".into(),
                mode: 0o755,
                chown: chown.clone(),
            },
            FileAction::Mkfile {
                path: "/work/dir/deep/script.sh".into(),
                data: "echo hi\n".into(),
                mode: 0o700,
                chown,
            },
        ],
        &[],
        &ctx,
    )
    .unwrap();
    let f = e.d("work/dir/deep/script.sh");
    assert_eq!(fs::read_to_string(&f).unwrap(), "echo hi\n");
    assert_eq!(mode(&f), 0o700);
    assert_eq!(fs::metadata(&f).unwrap().mtime(), 1_700_000_000);
    if is_root() {
        for p in ["work", "work/dir/deep", "work/dir/deep/script.sh"] {
            assert_eq!(fs::metadata(e.d(p)).unwrap().uid(), 1000, "{p}");
        }
    }
    // WORKDIR on an existing dir is a no-op; missing input is a clear error
    apply(
        &dest,
        &[FileAction::Mkdir {
            path: "/work".into(),
            mode: 0o700,
            chown: None,
        }],
        &[],
        &ctx,
    )
    .unwrap();
    assert_eq!(mode(&e.d("work")), 0o755);
    let err = apply(&dest, &[copy(&["a.txt"], "/")], &[], &ctx).unwrap_err();
    assert!(matches!(err, FileOpError::MissingInput { input: 1 }));
}
