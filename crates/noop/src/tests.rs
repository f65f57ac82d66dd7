use super::*;

#[test]
fn keys_are_the_engine_the_directory_and_the_raw_arguments() {
    let k = |e: &str, cwd: &str, a: &[&str]| request_key(e, Path::new(cwd), a);
    let base = k("e1", "/w", &["build", "-t", "app", "."]);
    for (i, other) in [
        k("e2", "/w", &["build", "-t", "app", "."]),
        k("e1", "/w2", &["build", "-t", "app", "."]),
        k("e1", "/w", &["build", "-t", "app2", "."]),
        k("e1", "/w", &["build", "-tapp", "."]),
        k("e1", "/w", &["build", "-t", "app", ".", ""]),
        // Length-prefixed: no two argument lists share a key by concatenation.
        k("e1", "/w", &["build", "-t", "app."]),
        k("e1", "/w", &["build", "-t", "ap", "p", "."]),
        // Any flag, known or not, is part of the key.
        k(
            "e1",
            "/w",
            &["build", "--some-future-flag", "-t", "app", "."],
        ),
    ]
    .iter()
    .enumerate()
    {
        assert_ne!(&base, other, "case {i}");
    }
    assert_eq!(base, k("e1", "/w", &["build", "-t", "app", "."]));
    assert_eq!(base.len(), 64);
}

struct Fixture {
    _root: tempfile::TempDir,
    root: PathBuf,
    ctx: tempfile::TempDir,
    key: String,
}

impl Fixture {
    fn dir(&self) -> PathBuf {
        records_dir(&self.root)
    }
    fn c(&self, p: &str) -> PathBuf {
        self.ctx.path().join(p)
    }
}

/// A record of a build that read a Dockerfile, looked for a `.dockerignore`, copied `f`, stood on
/// a blob, a generation file and a database, and read one variable.
fn stamped() -> (Fixture, Record) {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    let d = ctx.path();
    std::fs::write(r.join("meta.db"), b"db").unwrap();
    std::fs::write(r.join("generation"), b"g1").unwrap();
    std::fs::create_dir_all(r.join("blobs/sha256")).unwrap();
    let blob = r.join("blobs/sha256").join("a".repeat(64));
    std::fs::write(&blob, b"x").unwrap();
    std::fs::write(d.join("Dockerfile"), b"FROM scratch\n").unwrap();
    std::fs::write(d.join("f"), b"one").unwrap();
    let rec_reads = rbuild_inputs::Recorder::default();
    let read = |p: &Path| {
        let b = std::fs::read(p).ok();
        Read::File {
            path: p.to_path_buf(),
            sha256: b.map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b))),
        }
    };
    rec_reads.note(read(&d.join("Dockerfile")));
    rec_reads.note(read(&r.join("generation")));
    rec_reads.note(Read::IsFile {
        path: d.join(".dockerignore"),
        is: false,
    });
    rec_reads.note(Read::Present { path: blob });
    rec_reads.note(Read::Identity {
        path: r.join("meta.db"),
        id: rbuild_inputs::identity(&r.join("meta.db")).unwrap(),
    });
    rec_reads.note(rbuild_inputs::env_read(
        "RBUILD_NOOP_TEST_UNSET_VARIABLE",
        None,
    ));
    let fp = rbuild_fileop::context_fingerprint(d, &["f".to_string()], &[], &[], false).unwrap();
    let sel = Selection {
        dir: d.to_path_buf(),
        sources: vec!["f".to_string()],
        ignore: vec![],
        exclude: vec![],
        parents: false,
        fingerprint: fp.to_string(),
    };
    let output = Output {
        stdout: vec![Part::Text("sha256:id\n".into())],
        stderr: vec![
            Part::Text("#1 load\n#1 DONE ".into()),
            Part::CheckTime,
            Part::Text("\nFinished in ".into()),
            Part::Elapsed,
            Part::Text("\n".into()),
        ],
        files: vec![Written {
            path: d.join("iid"),
            contents: "sha256:id".into(),
        }],
    };
    let mut rec = Record::new(rec_reads.reads().unwrap(), vec![sel], output);
    rec.keys = vec!["sha256:k1".to_string()];
    let key = "b".repeat(64);
    write_record(&records_dir(&r), &key, &rec).unwrap();
    (
        Fixture {
            _root: root,
            root: r,
            ctx,
            key,
        },
        rec,
    )
}

#[test]
fn a_record_holds_until_anything_it_read_changes() {
    type Change = fn(&Fixture);
    let changes: &[(&str, Change)] = &[
        ("dockerfile", |f| {
            std::fs::write(f.c("Dockerfile"), b"FROM scratch \n").unwrap()
        }),
        ("Dockerfile replaced by a FIFO", |f| {
            std::fs::remove_file(f.c("Dockerfile")).unwrap();
            nix::unistd::mkfifo(&f.c("Dockerfile"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        }),
        ("dockerignore appears", |f| {
            std::fs::write(f.c(".dockerignore"), b"x").unwrap()
        }),
        ("context file", |f| {
            std::fs::write(f.c("f"), b"two").unwrap()
        }),
        ("context file removed", |f| {
            std::fs::remove_file(f.c("f")).unwrap()
        }),
        ("blob removed", |f| {
            std::fs::remove_file(f.root.join("blobs/sha256").join("a".repeat(64))).unwrap()
        }),
        ("generation", |f| {
            std::fs::write(f.root.join("generation"), b"g2").unwrap()
        }),
        ("records removed", |f| {
            std::fs::remove_dir_all(f.dir()).unwrap();
        }),
        ("database made anew", |f| {
            std::fs::remove_file(f.root.join("meta.db")).unwrap();
            // Another inode (the old one may be handed out again at once).
            std::fs::write(f.root.join("keep"), b"").unwrap();
            std::fs::write(f.root.join("meta.db"), b"db").unwrap();
        }),
        ("record of another version", |f| {
            let p = f.dir().join(format!("{}.json", f.key));
            let s = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, s.replacen("\"version\":2", "\"version\":3", 1)).unwrap();
        }),
        ("record truncated", |f| {
            let p = f.dir().join(format!("{}.json", f.key));
            let s = std::fs::read(&p).unwrap();
            std::fs::write(&p, &s[..s.len() / 2]).unwrap();
        }),
    ];
    for (what, change) in changes {
        let (f, rec) = stamped();
        let hit = check(&f.dir(), &f.key).expect("an unchanged record holds");
        assert_eq!(hit.record, rec);
        change(&f);
        let why = check(&f.dir(), &f.key).expect_err(what);
        assert!(!why.is_empty());
    }
}

#[test]
fn an_environment_variable_read_is_an_input() {
    let (f, mut rec) = stamped();
    // A variable this test process has: holds with its value, not with another.
    let path = std::env::var_os("PATH").unwrap();
    rec.inputs
        .push(Input::Read(rbuild_inputs::env_read("PATH", Some(&path))));
    write_record(&f.dir(), &f.key, &rec).unwrap();
    check(&f.dir(), &f.key).unwrap();
    *rec.inputs.last_mut().unwrap() =
        Input::Read(rbuild_inputs::env_read("PATH", Some("/elsewhere".as_ref())));
    write_record(&f.dir(), &f.key, &rec).unwrap();
    let why = check(&f.dir(), &f.key).unwrap_err();
    assert!(why.contains("$PATH"), "{why}");
}

#[test]
fn bad_keys_name_no_file_and_output_holes_are_filled() {
    let (f, rec) = stamped();
    for k in ["../../etc/passwd", "", &"g".repeat(64), &"a".repeat(63)] {
        assert!(check(&f.dir(), k).is_err(), "{k:?}");
        assert!(write_record(&f.dir(), k, &rec).is_err(), "{k:?}");
    }
    let shown = render(
        &rec.output.stderr,
        Duration::from_millis(340),
        Duration::from_millis(1260),
    );
    assert_eq!(shown, "#1 load\n#1 DONE 0.3s\nFinished in 1.3s\n");
    assert_eq!(
        render(&rec.output.stdout, Duration::ZERO, Duration::ZERO),
        "sha256:id\n"
    );
}

#[test]
fn sweep_removes_what_can_no_longer_answer_and_uses_count_answers() {
    let (f, _) = stamped();
    std::fs::write(f.dir().join("junk.json"), b"{").unwrap();
    std::fs::write(f.dir().join("x.tmp-1"), b"").unwrap();
    assert_eq!(sweep(&f.dir()), 2, "the unreadable record and the leftover");
    assert!(check(&f.dir(), &f.key).is_ok(), "a valid record stays");
    let u = uses(&f.dir());
    assert!(u.contains_key("sha256:k1"), "{u:?}");
    std::fs::write(f.root.join("generation"), b"g2").unwrap();
    assert_eq!(sweep(&f.dir()), 1, "void after the generation moved");
    assert!(uses(&f.dir()).is_empty());
}

#[test]
fn a_touched_record_is_used_later() {
    let (f, _) = stamped();
    let p = f.dir().join(format!("{}.json", f.key));
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    std::fs::File::options()
        .append(true)
        .open(&p)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = uses(&f.dir())["sha256:k1"];
    touch(&p);
    assert!(uses(&f.dir())["sha256:k1"] > before);
}

proptest::proptest! {
    #[test]
    fn any_record_bytes_are_a_miss_or_a_hit_never_a_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let d = tempfile::tempdir().unwrap();
        let key = "c".repeat(64);
        std::fs::write(d.path().join(format!("{key}.json")), &body).unwrap();
        let _ = check(d.path(), &key);
        let _ = sweep(d.path());
    }
}
