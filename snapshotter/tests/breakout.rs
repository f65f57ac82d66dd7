//! Breakout corpus for apply_layer (docs/ARCHITECTURE.md safety rules 1 and 7, issue 8). One table row per case:
//! a hostile layer made with the tar header writer, the budgets, and the expected outcome — an error
//! naming the entry, or a result inside dest exactly as OCI says. Every case also checks that the host
//! sentinels (a file and a dir outside dest) are unchanged and nothing appeared next to dest.

mod common;

use common::{root_or_skip, RawTar};
use flate2::write::GzEncoder;
use rbuild_snapshotter::diff::{apply_layer, decompress, decompress_counted, ApplyOptions};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use tar::EntryType;

/// What a case expects: an error whose message contains the text, or a check of dest.
enum Want {
    Err(&'static str),
    Ok(fn(&Path)),
}

struct Case {
    name: &'static str,
    /// Builds the layer; gets the host sentinel dir's absolute path for symlink targets.
    layer: fn(&Path) -> Vec<u8>,
    opts: fn() -> ApplyOptions,
    want: Want,
}

fn defaults() -> ApplyOptions {
    ApplyOptions::default()
}

fn small_budget() -> ApplyOptions {
    ApplyOptions {
        max_bytes: 1 << 20,
        max_entries: 100,
        ..ApplyOptions::default()
    }
}

/// Where the host sentinel dir's absolute path lands when resolved inside dest (a symlink to it is
/// followed within the rootfs, as containerd does): `dest/<host path>/rel`.
fn inside(dest: &Path, rel: &str) -> std::path::PathBuf {
    let host = dest.parent().unwrap().join("host");
    dest.join(host.strip_prefix("/").unwrap()).join(rel)
}

fn host_str(host: &Path) -> String {
    host.to_str().unwrap().to_string()
}

fn kind(p: &Path) -> &'static str {
    match fs::symlink_metadata(p) {
        Err(_) => "missing",
        Ok(m) if m.file_type().is_symlink() => "symlink",
        Ok(m) if m.is_dir() => "dir",
        Ok(m) if m.is_file() => "file",
        Ok(m) if m.file_type().is_char_device() => "char",
        Ok(m) if m.file_type().is_block_device() => "block",
        Ok(_) => "other",
    }
}

fn is_whiteout(p: &Path) -> bool {
    let m = fs::symlink_metadata(p).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

fn gzip_bomb() -> Vec<u8> {
    // A 64 MiB file of zeros: ~64 KiB of gzip.
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut h = tar::Header::new_ustar();
    h.set_path("bomb").unwrap();
    h.set_size(64 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    enc.write_all(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    enc.finish().unwrap()
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        Case { name: "dotdot name stays inside", layer: |_| RawTar::new().file("../../escape", b"x").finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(fs::read(d.join("escape")).unwrap(), b"x")) },
        Case { name: "absolute name stays inside", layer: |_| RawTar::new().file("/etc/escape", b"x").finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(kind(&d.join("etc/escape")), "file")) },
        Case { name: "dotdot in the middle", layer: |_| RawTar::new().file("a/../../../b/../c", b"x").finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(kind(&d.join("c")), "file")) },
        Case { name: "symlink to / then write through it", layer: |_| RawTar::new().symlink("root", "/").file("root/rbuild-breakout-escape", b"x").finish(),
               opts: defaults, want: Want::Ok(|d| assert_eq!(kind(&d.join("rbuild-breakout-escape")), "file")) },
        Case { name: "symlink to ../.. then write through it", layer: |_| RawTar::new().symlink("up", "../..").file("up/escape", b"x").finish(),
               opts: defaults, want: Want::Ok(|d| assert_eq!(kind(&d.join("escape")), "file")) },
        Case { name: "symlink to host dir then write through it", layer: |h| RawTar::new().symlink("hd", &host_str(h)).file("hd/dir/pwned", b"x").finish(),
               opts: defaults, want: Want::Ok(|d| assert_eq!(kind(&inside(d, "dir/pwned")), "file")) },
        Case { name: "symlink to host dir then mkdir through it", layer: |h| RawTar::new().symlink("hd", &host_str(h)).dir("hd/dir/newdir", 0o755).finish(),
               opts: defaults, want: Want::Ok(|d| assert_eq!(kind(&inside(d, "dir/newdir")), "dir")) },
        Case { name: "hardlink to an outside path", layer: |_| RawTar::new().hardlink("hl", "../host/file").finish(),
               opts: defaults, want: Want::Err("hardlink target") },
        Case { name: "hardlink to an absolute host path", layer: |h| { let t = format!("{}/file", host_str(h)); RawTar::new().hardlink("hl", &t).finish() },
               opts: defaults, want: Want::Err("hardlink target") },
        Case { name: "hardlink to a symlink links the symlink", layer: |h| { let t = format!("{}/file", host_str(h)); RawTar::new().symlink("s", &t).hardlink("h", "s").finish() },
               opts: defaults, want: Want::Ok(|d| assert_eq!(kind(&d.join("h")), "symlink")) },
        Case { name: "hardlink to a directory", layer: |_| RawTar::new().dir("dd", 0o755).hardlink("hd", "dd").finish(),
               opts: defaults, want: Want::Err("hardlink target") },
        Case { name: "hardlink to a later entry", layer: |_| RawTar::new().hardlink("hl", "later").file("later", b"x").finish(),
               opts: defaults, want: Want::Err("hardlink target") },
        Case { name: "symlink swapped for a dir and back", layer: |h| RawTar::new().symlink("sw", &host_str(h)).dir("sw", 0o755).file("sw/f", b"x").symlink("sw", &host_str(h)).finish(),
               opts: defaults, want: Want::Ok(|d| assert_eq!(kind(&d.join("sw")), "symlink")) },
        Case { name: "file replaces a symlink to a host file", layer: |h| { let t = format!("{}/file", host_str(h)); RawTar::new().symlink("f", &t).file("f", b"mine").finish() },
               opts: defaults, want: Want::Ok(|d| assert_eq!(fs::read(d.join("f")).unwrap(), b"mine")) },
        Case { name: "dir chmod would follow a symlink to the host", layer: |h| RawTar::new().symlink("d", &host_str(h)).dir("d", 0o777).finish(),
               opts: defaults, want: Want::Ok(|d| assert_eq!(fs::metadata(d.join("d")).unwrap().mode() & 0o7777, 0o777)) },
        Case { name: "symlink metadata never follows", layer: |h| { let t = format!("{}/file", host_str(h)); RawTar::new().symlink("l", &t).finish() },
               opts: defaults, want: Want::Ok(|d| assert_eq!(kind(&d.join("l")), "symlink")) },
        Case { name: "whiteout .wh.", layer: |_| RawTar::new().file(".wh.", b"").finish(), opts: defaults, want: Want::Err("whiteout names no file") },
        Case { name: "whiteout .wh..", layer: |_| RawTar::new().file("a/.wh..", b"").finish(), opts: defaults, want: Want::Err("whiteout names no file") },
        Case { name: "whiteout .wh... (of ..)", layer: |_| RawTar::new().file("a/.wh...", b"").finish(), opts: defaults, want: Want::Err("whiteout names no file") },
        Case { name: "whiteout .wh.... deletes \"...\"", layer: |_| RawTar::new().file(".wh....", b"").finish(), opts: defaults,
               want: Want::Ok(|d| assert!(is_whiteout(&d.join("...")))) },
        Case { name: "whiteout through a symlinked parent", layer: |h| RawTar::new().symlink("ws", &host_str(h)).file("ws/.wh.file", b"").finish(),
               opts: defaults, want: Want::Ok(|d| assert!(is_whiteout(&inside(d, "file")))) },
        Case { name: "opaque marker through a symlinked parent", layer: |h| RawTar::new().symlink("ws", &host_str(h)).file("ws/.wh..wh..opq", b"").finish(),
               opts: defaults, want: Want::Ok(|d| assert_eq!(xattr::get(inside(d, ""), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()))) },
        Case { name: "opaque marker after its siblings keeps them", layer: |_| RawTar::new().dir("o", 0o755).file("o/a", b"a").file("o/.wh..wh..opq", b"").finish(),
               opts: defaults, want: Want::Ok(|d| { assert_eq!(kind(&d.join("o/a")), "file"); assert_eq!(xattr::get(d.join("o"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec())) }) },
        Case { name: "whiteout in missing parent creates it", layer: |_| RawTar::new().file("p/q/.wh.r", b"").finish(), opts: defaults,
               want: Want::Ok(|d| assert!(is_whiteout(&d.join("p/q/r")))) },
        Case { name: "whiteout does not delete the same layer's file", layer: |_| RawTar::new().file("k", b"k").file(".wh.k", b"").finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(kind(&d.join("k")), "file")) },
        Case { name: "dir after its whiteout becomes opaque", layer: |_| RawTar::new().file(".wh.w", b"").dir("w", 0o755).finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(xattr::get(d.join("w"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()))) },
        Case { name: "overlay xattrs in a layer are ignored", layer: |_| RawTar::new().pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")]).dir("r", 0o755).finish(),
               opts: defaults, want: Want::Ok(|d| assert!(xattr::get(d.join("r"), "trusted.overlay.redirect").unwrap().is_none())) },
        Case { name: "device nodes and setuid kept", layer: |_| RawTar::new().device(EntryType::Char, "null", 1, 3).device(EntryType::Block, "sda", 8, 0)
                   .device(EntryType::Fifo, "fifo", 0, 0).file_mode("su", b"x", 0o4755).finish(), opts: defaults,
               want: Want::Ok(|d| {
                   assert_eq!(fs::symlink_metadata(d.join("null")).unwrap().rdev(), nix::sys::stat::makedev(1, 3));
                   assert_eq!(kind(&d.join("sda")), "block");
                   assert!(fs::symlink_metadata(d.join("fifo")).unwrap().file_type().is_fifo());
                   assert_eq!(fs::metadata(d.join("su")).unwrap().permissions().mode() & 0o7777, 0o4755);
               }) },
        Case { name: "duplicate file: later wins", layer: |_| RawTar::new().file("dup", b"one").file("dup", b"two").finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(fs::read(d.join("dup")).unwrap(), b"two")) },
        Case { name: "file replaces a dir", layer: |_| RawTar::new().dir("x", 0o755).file("x/y", b"y").file("x", b"x").finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(fs::read(d.join("x")).unwrap(), b"x")) },
        Case { name: "dir replaces a file", layer: |_| RawTar::new().file("z", b"z").dir("z", 0o755).file("z/w", b"w").finish(), opts: defaults,
               want: Want::Ok(|d| assert_eq!(fs::read(d.join("z/w")).unwrap(), b"w")) },
        Case { name: "file under a file", layer: |_| RawTar::new().file("f", b"f").file("f/g", b"g").finish(), opts: defaults,
               want: Want::Err("is not a directory") },
        Case { name: "PAX size disagrees with header", layer: |_| RawTar::new().pax(&[("size", b"10")]).raw_file("p", 5, b"0123456789").finish(),
               opts: defaults, want: Want::Err("PAX size 10 disagrees with header size 5") },
        Case { name: "header size beyond the stream", layer: |_| RawTar::new().raw_file("short", 4096, b"abc").b.get_ref().clone(),
               opts: defaults, want: Want::Err("short") },
        Case { name: "name longer than PATH_MAX", layer: |_| { let p = "a/".repeat(2100) + "f"; RawTar::new().pax(&[("path", p.as_bytes())]).file("placeholder", b"").finish() },
               opts: defaults, want: Want::Err("path length of 4201 exceeds the limit of 4096") },
        Case { name: "component longer than NAME_MAX", layer: |_| { let p = "n".repeat(300); RawTar::new().pax(&[("path", p.as_bytes())]).file("placeholder", b"").finish() },
               opts: defaults, want: Want::Err("path component length of 300") },
        Case { name: "path deeper than the budget", layer: |_| { let p = "d/".repeat(300) + "f"; RawTar::new().pax(&[("path", p.as_bytes())]).file("placeholder", b"").finish() },
               opts: defaults, want: Want::Err("path depth") },
        Case { name: "PAX header beyond its cap", layer: |_| { let v = vec![b'v'; 2 << 20]; RawTar::new().pax(&[("comment", &v)]).file("f", b"").finish() },
               opts: defaults, want: Want::Err("exceeds the cap") },
        Case { name: "entries beyond the entry budget", layer: |_| { let mut t = RawTar::new(); for i in 0..150 { t.file(&format!("f{i}"), b""); } t.finish() },
               opts: small_budget, want: Want::Err("entry budget of 100") },
        Case { name: "gzip bomb beyond the byte budget", layer: |_| gzip_bomb(), opts: small_budget, want: Want::Err("byte budget of 1048576") },
        Case { name: "empty symlink target", layer: |_| RawTar::new().symlink("s", "").finish(), opts: defaults, want: Want::Err("symlink target is empty") },
        Case { name: "NUL in a PAX path", layer: |_| RawTar::new().pax(&[("path", b"a\0b")]).file("placeholder", b"").finish(), opts: defaults, want: Want::Err("NUL byte") },
        Case { name: "sparse entries are refused", layer: |_| { let mut t = RawTar::new(); let mut h = tar::Header::new_gnu(); h.set_path("sp").unwrap(); h.set_entry_type(EntryType::GNUSparse); h.set_size(0); h.set_cksum(); t.b.append(&h, &[][..]).unwrap(); t.finish() },
               opts: defaults, want: Want::Err("unsupported tar entry type 'S'") },
    ]
}

struct Host {
    file_mode: u32,
    file_uid: u32,
    dir_mode: u32,
}

fn make_host(host: &Path) -> Host {
    fs::create_dir_all(host.join("dir")).unwrap();
    fs::write(host.join("file"), b"sentinel").unwrap();
    fs::set_permissions(host.join("file"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(host.join("dir"), fs::Permissions::from_mode(0o755)).unwrap();
    Host {
        file_mode: 0o644,
        file_uid: fs::metadata(host.join("file")).unwrap().uid(),
        dir_mode: 0o755,
    }
}

fn check_host(name: &str, top: &Path, host: &Path, h: &Host) {
    assert_eq!(
        fs::read(host.join("file")).unwrap(),
        b"sentinel",
        "{name}: host file changed"
    );
    let fm = fs::symlink_metadata(host.join("file")).unwrap();
    assert_eq!(
        fm.mode() & 0o7777,
        h.file_mode,
        "{name}: host file mode changed"
    );
    assert_eq!(fm.uid(), h.file_uid, "{name}: host file owner changed");
    assert_eq!(fm.nlink(), 1, "{name}: host file got a hardlink");
    let dm = fs::symlink_metadata(host.join("dir")).unwrap();
    assert_eq!(
        dm.mode() & 0o7777,
        h.dir_mode,
        "{name}: host dir mode changed"
    );
    assert_eq!(
        fs::read_dir(host.join("dir")).unwrap().count(),
        0,
        "{name}: host dir got entries"
    );
    let mut top_names: Vec<_> = fs::read_dir(top)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top_names.sort();
    assert_eq!(
        top_names,
        vec!["dest", "host"],
        "{name}: something appeared beside dest"
    );
    assert!(
        !Path::new("/rbuild-breakout-escape").exists(),
        "{name}: wrote to the host root"
    );
}

#[test]
fn breakout_corpus() {
    if !root_or_skip("breakout_corpus") {
        return;
    }
    let mut failures = Vec::new();
    for case in cases() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host");
        let dest = t.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let sentinel = make_host(&host);
        let layer = (case.layer)(&host);
        let opts = (case.opts)();
        let result = match decompress(&layer[..]) {
            Ok(r) => apply_layer(r, &dest, &opts),
            Err(e) => panic!("{}: decompress: {e}", case.name),
        };
        match (&case.want, result) {
            (Want::Ok(check), Ok(_)) => check(&dest),
            (Want::Err(text), Err(e)) => {
                let msg = e.to_string();
                if !msg.contains(text) {
                    failures.push(format!(
                        "{}: error {msg:?} does not contain {text:?}",
                        case.name
                    ));
                }
            }
            (Want::Ok(_), Err(e)) => failures.push(format!("{}: unexpected error: {e}", case.name)),
            (Want::Err(text), Ok(_)) => {
                failures.push(format!("{}: applied, expected error {text:?}", case.name))
            }
        }
        check_host(case.name, t.path(), &host, &sentinel);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A compressed stream made of `head` then `times` copies of `chunk`, each its own gzip member or
/// zstd frame (both formats allow concatenation): a huge layer for the price of one small chunk.
fn repeated(zstd: bool, head: &[u8], chunk: &[u8], times: usize) -> Vec<u8> {
    let one = |data: &[u8]| -> Vec<u8> {
        if zstd {
            zstd::stream::encode_all(data, if times > 1 { 19 } else { 3 }).unwrap()
        } else {
            let level = if times > 1 { 9 } else { 1 };
            let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        }
    };
    let (h, c) = (one(head), one(chunk));
    let mut out = h;
    for _ in 0..times {
        out.extend_from_slice(&c);
    }
    out
}

/// One 4 GiB member of zeros: the header, then 4096 chunks of 1 MiB of zeros.
fn zero_bomb(zstd: bool) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path("bomb").unwrap();
    h.set_size(4 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    repeated(zstd, h.as_bytes(), &vec![0u8; 1 << 20], 4096)
}

/// 3,000,000 empty files: 300 copies of a 10,000-entry chunk (the same names again and again), each
/// copy in a directory of its own when `distinct` (then the first chunk is compressed 300 times).
fn empty_entries(zstd: bool, distinct: bool) -> Vec<u8> {
    if distinct {
        let mut out = Vec::new();
        for d in 0..300 {
            out.extend(repeated(zstd, &[], &entry_chunk(&format!("d{d:03}")), 1));
        }
        return out;
    }
    repeated(zstd, &[], &entry_chunk("d"), 300)
}

fn entry_chunk(dir: &str) -> Vec<u8> {
    let mut chunk = Vec::new();
    for i in 0..10_000 {
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("{dir}/f{i}")).unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        chunk.extend_from_slice(h.as_bytes());
    }
    chunk
}

/// Issue 14 item 4: bombs fail within seconds at the default budgets (the expansion-ratio guard for
/// zeros, the entry budget for millions of empty entries), with an error saying which rule.
#[test]
fn bombs_fail_fast_at_default_budgets() {
    if !root_or_skip("bombs_fail_fast_at_default_budgets") {
        return;
    }
    let flood = "refusing a flood of empty entries";
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("gzip bomb 4 GiB", zero_bomb(false), "decompression bomb"),
        ("zstd bomb 4 GiB", zero_bomb(true), "decompression bomb"),
        ("zstd 3M empty entries", empty_entries(true, false), flood),
        (
            "gzip 3M distinct empty entries",
            empty_entries(false, true),
            flood,
        ),
    ];
    for (name, layer, want) in cases {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let started = std::time::Instant::now();
        let (reader, counter) = decompress_counted(&layer[..]).unwrap();
        let opts = ApplyOptions {
            compressed_bytes: Some(counter),
            ..defaults()
        };
        let err = apply_layer(reader, &dest, &opts)
            .expect_err(name)
            .to_string();
        let took = started.elapsed();
        eprintln!(
            "{name}: {} compressed bytes, failed after {took:.1?}: {err}",
            layer.len()
        );
        assert!(err.contains(want), "{name}: {err}");
        assert!(took.as_secs() < 30, "{name}: took {took:?}");
    }
}

/// Issue 14 item 4: extraction stops before it eats into the free-space reserve of dest's
/// filesystem, whatever the other budgets allow.
#[test]
fn free_space_reserve_stops_extraction() {
    if !root_or_skip("free_space_reserve_stops_extraction") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let free = nix::sys::statvfs::statvfs(&dest).unwrap();
    let free = free.blocks_available() as u64 * free.fragment_size() as u64;
    // 64 MiB of data; the reserve leaves room for 16 MiB of it (less, if the disk fills meanwhile).
    let data = vec![7u8; 8 << 20];
    let mut tar = RawTar::new();
    for i in 0..8 {
        tar.file(&format!("f{i}"), &data);
    }
    let layer = tar.finish();
    let opts = ApplyOptions {
        min_free_bytes: Some(free.saturating_sub(16 << 20)),
        ..ApplyOptions::default()
    };
    let err = apply_layer(&layer[..], &dest, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reserve of") && err.contains("free bytes"),
        "{err}"
    );
    let inodes = ApplyOptions {
        min_free_inodes: Some(u64::MAX / 2),
        ..ApplyOptions::default()
    };
    let fs_has_inodes = nix::sys::statvfs::statvfs(&dest).unwrap().files() > 0;
    let res = apply_layer(&layer[..], &dest, &inodes);
    if fs_has_inodes {
        let err = res.unwrap_err().to_string();
        assert!(err.contains("free inodes"), "{err}");
    }
}
