//! write_layer ↔ apply_layer: round trip, whiteouts both ways, determinism, compression.

mod common;

use common::{root_or_skip, snapshot, tar_names};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use rbuild_oci::{Compression, Digest};
use rbuild_snapshotter::diff::{
    apply_layer, compress, decompress, write_layer, ApplyOptions, LayerOptions,
};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// A v2 file capability blob granting cap_net_bind_service (bit 10), permitted + effective.
const CAP_NET_BIND: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/file"), b"hello\n").unwrap();
    fs::hard_link(root.join("a/file"), root.join("a/b/hard")).unwrap();
    fs::write(root.join("owned"), b"x").unwrap();
    chown(
        &root.join("owned"),
        Some(Uid::from_raw(1000)),
        Some(Gid::from_raw(2000)),
    )
    .unwrap();
    fs::write(root.join("big-uid"), b"y").unwrap();
    chown(
        &root.join("big-uid"),
        Some(Uid::from_raw(3_000_000)),
        Some(Gid::from_raw(3_000_001)),
    )
    .unwrap();
    fs::create_dir(root.join("bin")).unwrap();
    fs::write(root.join("bin/su"), b"#!/bin/false\n").unwrap();
    set_mode(&root.join("bin/su"), 0o4755);
    fs::write(root.join("bin/ping"), b"ping").unwrap();
    xattr::set(root.join("bin/ping"), "security.capability", &CAP_NET_BIND).unwrap();
    xattr::set(root.join("a/file"), "user.note", b"kept").unwrap();
    xattr::set(root.join("a/file"), "trusted.rbuild", b"root-only").unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    symlink("../a/file", root.join("bin/rel-link")).unwrap();
    mknod(
        &root.join("fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o640),
        0,
    )
    .unwrap();
    fs::create_dir(root.join("dev")).unwrap();
    mknod(
        &root.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &root.join("dev/sda"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(8, 0),
    )
    .unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    set_mode(&root.join("tmp"), 0o1777);
    let long = format!("{}/{}", "d".repeat(90), "f".repeat(120));
    fs::create_dir(root.join("d".repeat(90))).unwrap();
    fs::write(root.join(&long), b"long name").unwrap();
    symlink("t".repeat(150), root.join("long-target")).unwrap();
    fs::create_dir(root.join("private")).unwrap();
    set_mode(&root.join("private"), 0o700);
    // A socket is not image content; it must be skipped, not fail.
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
}

#[test]
fn round_trip_preserves_everything() {
    if !root_or_skip("round_trip_preserves_everything") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    build_tree(&src);

    let mut tar = Vec::new();
    let stats = write_layer(&src, &mut tar, &LayerOptions::default()).unwrap();
    assert_eq!(stats.size, tar.len() as u64);
    assert_eq!(stats.diff_id, Digest::sha256_of(&tar));
    let names = tar_names(&tar);
    assert_eq!(stats.entries as usize, names.len());
    assert!(!names.iter().any(|n| n.contains("sock")), "{names:?}");
    // Parents come before children.
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    assert!(pos("a/") < pos("a/b/") && pos("a/b/") < pos("a/b/hard"));

    let applied = apply_layer(&tar[..], &dst, &ApplyOptions::default()).unwrap();
    assert_eq!(applied.diff_id, stats.diff_id);
    assert_eq!(applied.size, stats.size);

    let (mut want, want_links) = snapshot(&src);
    want.remove("sock");
    let (got, got_links) = snapshot(&dst);
    for (path, node) in &want {
        assert_eq!(got.get(path), Some(node), "{path}");
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(
        want_links,
        vec![vec!["a/b/hard".to_string(), "a/file".to_string()]]
    );
    let sorted = |mut v: Vec<Vec<String>>| {
        v.iter_mut().for_each(|g| g.sort());
        v
    };
    assert_eq!(sorted(got_links), sorted(want_links));
}

#[test]
fn output_is_deterministic_and_clamped() {
    if !root_or_skip("output_is_deterministic_and_clamped") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let one = write_layer(&src, std::io::sink(), &LayerOptions::default()).unwrap();
    let two = write_layer(&src, std::io::sink(), &LayerOptions::default()).unwrap();
    assert_eq!(one, two);

    let opts = LayerOptions {
        source_date_epoch: Some(1_000_000),
    };
    let mut tar = Vec::new();
    let clamped = write_layer(&src, &mut tar, &opts).unwrap();
    assert_ne!(clamped.diff_id, one.diff_id);
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= 1_000_000);
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
    }
    // A second tree with the same content made later gives the same clamped layer.
    let src2 = t.path().join("src2");
    fs::create_dir(&src2).unwrap();
    build_tree(&src2);
    let again = write_layer(&src2, std::io::sink(), &opts).unwrap();
    assert_eq!(again.diff_id, clamped.diff_id);
}

#[test]
fn whiteouts_both_directions() {
    if !root_or_skip("whiteouts_both_directions") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("opq")).unwrap();
    fs::create_dir_all(upper.join("sub")).unwrap();
    mknod(
        &upper.join("gone"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    mknod(
        &upper.join("sub/gone2"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    xattr::set(upper.join("opq"), "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(upper.join("sub"), "trusted.overlay.origin", b"junk").unwrap();
    fs::write(upper.join("opq/new"), b"new").unwrap();

    let mut tar = Vec::new();
    write_layer(&upper, &mut tar, &LayerOptions::default()).unwrap();
    let names = tar_names(&tar);
    assert_eq!(
        names,
        vec![
            ".wh.gone",
            "opq/",
            "opq/.wh..wh..opq",
            "opq/new",
            "sub/",
            "sub/.wh.gone2"
        ]
    );
    // Overlay bookkeeping never leaks into the layer.
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                assert!(!r.unwrap().key().unwrap().contains("trusted.overlay"));
            }
        }
    }

    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let stats = apply_layer(&tar[..], &dst, &ApplyOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 3);
    let (got, _) = snapshot(&dst);
    assert_eq!(got["gone"].kind, "char");
    assert_eq!(got["gone"].rdev, 0);
    assert_eq!(got["sub/gone2"].kind, "char");
    assert_eq!(
        got["opq"].xattrs.get("trusted.overlay.opaque"),
        Some(&b"y".to_vec())
    );
    assert!(!got["sub"].xattrs.contains_key("trusted.overlay.opaque"));
    assert_eq!(got["opq/new"].content, b"new");
    // And back again: the same layer.
    let mut tar2 = Vec::new();
    write_layer(&dst, &mut tar2, &LayerOptions::default()).unwrap();
    assert_eq!(tar_names(&tar2), names);
}

#[test]
fn compress_and_decompress_every_format() {
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let mut blob = Vec::new();
        let s = compress(&data[..], &mut blob, c, None).unwrap();
        assert_eq!(s.digest, Digest::sha256_of(&blob), "{c:?}");
        assert_eq!(s.size, blob.len() as u64);
        assert_eq!(s.diff_id, Digest::sha256_of(&data));
        assert_eq!(s.uncompressed_size, data.len() as u64);
        let mut out = Vec::new();
        std::io::copy(&mut decompress(&blob[..]).unwrap(), &mut out).unwrap();
        assert_eq!(out, data, "{c:?}");
    }
    let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2];
    assert!(decompress(&xz[..])
        .err()
        .unwrap()
        .to_string()
        .contains("xz"));
    assert!(decompress(&b"BZh91AY"[..])
        .err()
        .unwrap()
        .to_string()
        .contains("bzip2"));
    let mut out = Vec::new();
    std::io::copy(&mut decompress(&b""[..]).unwrap(), &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn compressed_layer_applies_through_decompress() {
    if !root_or_skip("compressed_layer_applies_through_decompress") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let mut tar = Vec::new();
    let w = write_layer(&src, &mut tar, &LayerOptions::default()).unwrap();
    let mut gz = Vec::new();
    let c = compress(&tar[..], &mut gz, Compression::Gzip, Some(1)).unwrap();
    assert_eq!(c.diff_id, w.diff_id);
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let a = apply_layer(decompress(&gz[..]).unwrap(), &dst, &ApplyOptions::default()).unwrap();
    assert_eq!(a.diff_id, w.diff_id);
}
