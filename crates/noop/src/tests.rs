use super::*;

fn req(args: &[&str]) -> Option<Request> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let dir = std::env::temp_dir();
    let env = |k: &str| match k {
        "RBUILD_ROOT" => Some("/var/tmp/store".to_string()),
        "VERSION" => Some("1.2".to_string()),
        _ => None,
    };
    Request::parse(&args, &env, &[], &dir, false)
}

#[test]
fn the_plain_build_forms_are_requests() {
    for args in [
        &["build", "-t", "app", "."][..],
        &["-t", "app", "."],
        &["build", "--tag=app", "-fDockerfile", "."],
        &[
            "--root",
            "/x",
            "build",
            "--build-arg",
            "A=1",
            "--build-arg=VERSION",
            ".",
        ],
        &["build", "--progress=plain", "--target", "s1", "."],
        &["build", "-q", "."],
        &["build", ".", "--progress", "quiet"],
        &[
            "build",
            "--iidfile",
            "id.txt",
            "--metadata-file=meta.json",
            ".",
        ],
    ] {
        assert!(req(args).is_some(), "{args:?}");
    }
}

#[test]
fn everything_else_goes_to_the_engine() {
    for args in [
        &["images"][..],
        &["run", "app"],
        &["--version"],
        &["build", "--help"],
        &["build", "--no-cache", "."],
        &["build", "--push", "-t", "x", "."],
        &["build", "-o", "type=local,dest=out", "."],
        &["build", "--progress=json", "."],
        &["build", "--target", "a", "--target", "b", "."],
        &["build", "-q", "-q", "."],
        &["build", ".", "other"],
        &["build", "-"],
        &["build", "-f", "-", "."],
        &["build", "-t"],
        &["build"],
        &["-t", "app", "build", "."],
        &["build", "/definitely/not/a/dir/here"],
        &["-v", "build", "."],
        &["build", "-t=app", "."],
        &["build", "--iidfile", "a", "--iidfile", "b", "."],
        &["build", "-t", "=app", "."],
    ] {
        assert!(req(args).is_none(), "{args:?}");
    }
}

#[test]
fn auto_progress_on_a_terminal_is_the_live_view() {
    assert_eq!(
        req(&["build", "--progress=tty", "."]).unwrap().mode,
        Mode::Tty
    );
    let args: Vec<String> = ["build", "."].iter().map(|s| s.to_string()).collect();
    let env = |_: &str| Some("/r".to_string());
    let dir = std::env::temp_dir();
    assert_eq!(
        Request::parse(&args, &env, &[], &dir, true).unwrap().mode,
        Mode::Tty
    );
    let q: Vec<String> = ["build", "-q", "."].iter().map(|s| s.to_string()).collect();
    assert!(Request::parse(&q, &env, &[], &dir, true).is_some_and(|r| r.mode == Mode::Quiet));
}

#[test]
fn keys_change_with_every_field_and_the_engine() {
    let base = req(&["build", "-t", "app", "."]).unwrap().key("e1");
    let others = [
        req(&["build", "-t", "app2", "."]).unwrap().key("e1"),
        req(&["build", "-t", "app", "-t", "b", "."])
            .unwrap()
            .key("e1"),
        req(&["build", "-t", "app", "--build-arg", "A=1", "."])
            .unwrap()
            .key("e1"),
        req(&["build", "-t", "app", "--build-arg", "VERSION", "."])
            .unwrap()
            .key("e1"),
        req(&["build", "-t", "app", "--target", "x", "."])
            .unwrap()
            .key("e1"),
        req(&["build", "-t", "app", "-q", "."]).unwrap().key("e1"),
        req(&["build", "-t", "app", "-f", "D2", "."])
            .unwrap()
            .key("e1"),
        req(&["build", "-t", "app", "--iidfile", "i", "."])
            .unwrap()
            .key("e1"),
        req(&["build", "-t", "app", "--metadata-file", "m", "."])
            .unwrap()
            .key("e1"),
        req(&["--root", "/other", "build", "-t", "app", "."])
            .unwrap()
            .key("e1"),
        req(&["build", "-t", "app", "."]).unwrap().key("e2"),
    ];
    for (i, k) in others.iter().enumerate() {
        assert_ne!(&base, k, "case {i}");
    }
    // Same request, same key; `rbuild -t app .` is `rbuild build -t app .`.
    assert_eq!(base, req(&["-t", "app", "."]).unwrap().key("e1"));
    assert_eq!(base, req(&["build", "--tag=app", "."]).unwrap().key("e1"));
}

#[test]
fn rbuild_variables_are_part_of_the_key() {
    let args: Vec<String> = ["build", "."].iter().map(|s| s.to_string()).collect();
    let env = |_: &str| None;
    let dir = std::env::temp_dir();
    let k = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Request::parse(&args, &env, &vars, &dir, false)
            .unwrap()
            .key("e")
    };
    assert_eq!(
        k(&[]),
        k(&[("HOME", "/x"), (KEY_ENV, "abc"), (CHECK_ENV, "explain")])
    );
    assert_ne!(k(&[]), k(&[("RBUILD_MAX_LAYER_BYTES", "10")]));
}

fn stamped(dir: &Path) -> (tempfile::TempDir, Record, String) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("meta.db"), b"db").unwrap();
    std::fs::create_dir_all(root.path().join("blobs/sha256")).unwrap();
    let blob = "a".repeat(64);
    std::fs::write(root.path().join("blobs/sha256").join(&blob), b"x").unwrap();
    std::fs::write(dir.join("Dockerfile"), b"FROM scratch\n").unwrap();
    std::fs::write(dir.join("f"), b"one").unwrap();
    let fp = rbuild_fileop::context_fingerprint(dir, &["f".to_string()], &[], &[], false).unwrap();
    let mut rec = Record::new(root.path(), generation(root.path()));
    rec.files = vec![
        FileStamp::of_bytes(&dir.join("Dockerfile"), b"FROM scratch\n"),
        FileStamp::absent(&dir.join(".dockerignore")),
    ];
    rec.selections = vec![Selection {
        dir: dir.to_path_buf(),
        sources: vec!["f".to_string()],
        ignore: vec![],
        exclude: vec![],
        parents: false,
        fingerprint: fp.to_string(),
    }];
    rec.blobs = vec![format!("sha256:{blob}")];
    rec.keys = vec!["sha256:k1".to_string()];
    rec.steps = vec![
        Step {
            name: "[internal] load build context".into(),
            cached: false,
        },
        Step {
            name: "[1/2] FROM x".into(),
            cached: true,
        },
    ];
    rec.id = "sha256:id".to_string();
    let key = "b".repeat(64);
    write_record(root.path(), &key, &rec).unwrap();
    (root, rec, key)
}

#[test]
fn a_record_holds_until_anything_it_read_changes() {
    type Change = fn(&Path, &Path);
    let changes: &[(&str, Change)] = &[
        ("dockerfile", |_, d| {
            std::fs::write(d.join("Dockerfile"), b"FROM scratch \n").unwrap()
        }),
        ("Dockerfile replaced by a FIFO", |_, d| {
            std::fs::remove_file(d.join("Dockerfile")).unwrap();
            nix::unistd::mkfifo(&d.join("Dockerfile"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        }),
        ("dockerignore appears", |_, d| {
            std::fs::write(d.join(".dockerignore"), b"x").unwrap()
        }),
        ("context file", |_, d| {
            std::fs::write(d.join("f"), b"two").unwrap()
        }),
        ("context file removed", |_, d| {
            std::fs::remove_file(d.join("f")).unwrap()
        }),
        ("blob removed", |r, _| {
            std::fs::remove_file(r.join("blobs/sha256").join("a".repeat(64))).unwrap()
        }),
        ("generation", |r, _| bump_generation(r).unwrap()),
        ("records removed", |r, _| {
            remove_records(r);
            assert_eq!(std::fs::read_dir(r.join(DIR)).unwrap().count(), 0);
        }),
        ("database made anew", |r, _| {
            std::fs::remove_file(r.join("meta.db")).unwrap();
            std::fs::write(r.join("meta.db"), b"db").unwrap();
        }),
        ("record corrupt", |r, _| {
            std::fs::write(r.join(DIR).join(format!("{}.json", "b".repeat(64))), b"{").unwrap()
        }),
    ];
    for (what, change) in changes {
        let ctx = tempfile::tempdir().unwrap();
        let (root, rec, key) = stamped(ctx.path());
        let hit = check(root.path(), &key).expect("an unchanged record holds");
        assert_eq!(hit.record, rec);
        change(root.path(), ctx.path());
        let why = check(root.path(), &key).expect_err(what);
        assert!(!why.is_empty());
    }
}

#[test]
fn bad_keys_name_no_file_and_plain_output_matches_the_engine() {
    let ctx = tempfile::tempdir().unwrap();
    let (root, _, key) = stamped(ctx.path());
    assert!(check(root.path(), "../../etc/passwd").is_err());
    assert!(write_record(
        root.path(),
        "../x",
        &Record::new(root.path(), String::new())
    )
    .is_err());
    let mut hit = check(root.path(), &key).unwrap();
    hit.context_time = std::time::Duration::from_millis(20);
    assert_eq!(
        render_plain(&hit),
        "#1 [internal] load build context\n#1 DONE 0.0s\n\n#2 [1/2] FROM x\n#2 CACHED\n"
    );
    hit.record.size = 5_100_000;
    assert_eq!(
        render_tty(&hit, std::time::Duration::from_millis(4), false),
        "DONE [internal] load build context 0.0s\nCACHED [1/2] FROM x\nFinished in 0.0s (1 cached, 1 run) image sha256:id size 5.10MB\n"
    );
    touch(&hit.path);
    let u = uses(root.path());
    assert!(u.get("sha256:k1").is_some_and(|ns| *ns > 0));
}

proptest::proptest! {
    /// Any argument list is either a request or left to the engine, never a panic; a request's
    /// key is a hex digest.
    #[test]
    fn any_arguments_parse_or_go_to_the_engine(args in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::string::string_regex("-{0,2}[a-z=.-]{0,8}").unwrap(),
            proptest::sample::select(vec![
                "build".to_string(), "-t".into(), "--tag".into(), "-f".into(), "--file".into(),
                "--build-arg".into(), "--target".into(), "--progress".into(), "plain".into(),
                "quiet".into(), "tty".into(), "-q".into(), "--root".into(), ".".into(),
                "--progress=auto".into(), "A=1".into(), "=".into(), "-".into(), "--".into(),
            ]),
        ],
        0..8,
    )) {
        let env = |_: &str| None;
        let dir = std::env::temp_dir();
        if let Some(r) = Request::parse(&args, &env, &[], &dir, false) {
            let k = r.key("e");
            proptest::prop_assert!(k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
}
