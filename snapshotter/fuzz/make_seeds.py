#!/usr/bin/env python3
"""Regenerate the small seed corpora of the rbuild fuzz targets (docs/FUZZING.md).

Run from the repo root: python3 snapshotter/fuzz/make_seeds.py
Writes snapshotter/fuzz/seeds/{apply_layer,decompress}, crates/fileop/fuzz/seeds/extract,
crates/ignore/fuzz/seeds/matcher, frontend/fuzz/seeds/{parse_plan,expand}.
Needs the `zstd` CLI for the zstd seeds (skipped without it).
"""
import bz2, csv, gzip, io, json, lzma, os, shutil, subprocess, tarfile

def tar(members, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = m.get("type", tarfile.REGTYPE)
            info.mode = m.get("mode", 0o644)
            info.uid = m.get("uid", 0)
            info.gid = m.get("gid", 0)
            info.mtime = m.get("mtime", 1700000000)
            info.linkname = m.get("link", "")
            info.devmajor = m.get("major", 0)
            info.devminor = m.get("minor", 0)
            info.pax_headers = m.get("pax", {})
            data = m.get("data", b"")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue().rstrip(b"\0")
    # Keep the data padding and one zero block as the end marker, drop the record padding.
    raw += b"\0" * ((-len(raw)) % 512) + b"\0" * 512
    return raw

D, L, S, F, C, H = tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.REGTYPE
TARS = {
    "basic": tar([
        {"name": "etc/", "type": D, "mode": 0o755},
        {"name": "etc/passwd", "data": b"root:x:0:0::/root:/bin/sh\n"},
        {"name": "bin/sh", "mode": 0o4755, "uid": 1000, "data": b"#!"},
        {"name": "bin/ash", "type": L, "link": "bin/sh"},
        {"name": "usr/lib/libc.so", "type": S, "link": "../../lib/libc.so.6"},
        {"name": "dev/null", "type": C, "major": 1, "minor": 3},
        {"name": "run/fifo", "type": F},
    ]),
    "whiteouts": tar([
        {"name": "a/", "type": D},
        {"name": "a/.wh..wh..opq"},
        {"name": "a/keep", "data": b"k"},
        {"name": ".wh.gone"},
        {"name": "b/.wh.x"},
        {"name": ".wh..wh.plnk/1"},
        {"name": ".wh.a"},
    ]),
    "pax": tar([
        {"name": "d" * 120 + "/file", "data": b"long", "pax": {"SCHILY.xattr.user.k": "v", "mtime": "1.5"}},
        {"name": "x", "type": S, "link": "t" * 150},
        {"name": "caps", "data": b"c", "pax": {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}},
    ], fmt=tarfile.PAX_FORMAT),
    "gnu_long": tar([
        {"name": "n" * 200, "data": b"gnu"},
        {"name": "h", "type": L, "link": "n" * 200},
    ]),
    "escapes": tar([
        {"name": "../../escape", "data": b"x"},
        {"name": "/abs/file", "data": b"x"},
        {"name": "up", "type": S, "link": "../.."},
        {"name": "up/sentinel", "data": b"x"},
        {"name": "slash", "type": S, "link": "/"},
        {"name": "slash/tmp/x", "data": b"x"},
        {"name": "hl", "type": L, "link": "../sentinel"},
        {"name": "dir", "type": S, "link": "."},
        {"name": "dir/dir/f", "data": b"x"},
        {"name": "f", "data": b"x"},
        {"name": "f/g", "data": b"x"},
    ]),
}

def zstd(data):
    if not shutil.which("zstd"):
        return None
    return subprocess.run(["zstd", "-q", "-c", "-19"], input=data, capture_output=True, check=True).stdout

def write(dirpath, name, data):
    os.makedirs(dirpath, exist_ok=True)
    with open(os.path.join(dirpath, name), "wb") as f:
        f.write(data)

def main():
    for old in ["snapshotter/fuzz/seeds", "crates/fileop/fuzz/seeds", "crates/ignore/fuzz/seeds", "frontend/fuzz/seeds"]:
        shutil.rmtree(old, ignore_errors=True)
    ap = "snapshotter/fuzz/seeds/apply_layer"
    ex = "crates/fileop/fuzz/seeds/extract"
    for name, data in TARS.items():
        write(ap, name, b"\x01" + data)      # mode 1: fix checksums, plain tar
        write(ex, name, b"\x01" + data)      # mode 1: fix checksums, detect
    write(ap, "basic.gz", b"\x02" + gzip.compress(TARS["basic"], mtime=0))
    write(ex, "basic.gz", b"\x00" + gzip.compress(TARS["basic"], mtime=0))
    write(ex, "whiteouts.bz2", b"\x00" + bz2.compress(TARS["whiteouts"]))
    write(ex, "pax.xz", b"\x00" + lzma.compress(TARS["pax"]))
    z = zstd(TARS["basic"])
    if z:
        write(ap, "basic.zst", b"\x02" + z)
        write(ex, "basic.zst", b"\x00" + z)
    dc = "snapshotter/fuzz/seeds/decompress"
    write(dc, "gz", gzip.compress(b"hello " * 20, mtime=0))
    write(dc, "gz-multi", gzip.compress(b"a", mtime=0) + gzip.compress(b"b", mtime=0))
    if z:
        write(dc, "zst", zstd(b"hello " * 20))
    write(dc, "bz2", bz2.compress(b"x"))
    write(dc, "plain", b"plain text")

    # .dockerignore text, NUL, then NUL-separated paths; patterns from the golden table.
    mt = "crates/ignore/fuzz/seeds/matcher"
    rows = [r for r in csv.reader(open("testdata/dockerignore/cases.tsv"), delimiter="\t")
            if r and not r[0].startswith("#") and len(r) >= 4]
    for i, r in enumerate(rows[::12]):
        mode, pats, path = r[0], r[1], r[2]
        try:
            if mode == "file":
                text = json.loads(pats)
            elif mode in ("ignore", "skipdir"):
                text = "\n".join(json.loads(pats))
            else:
                text = pats
        except ValueError:
            text = pats
        write(mt, f"case{i:02}", f"{text}\0{path}\0{path}/sub/file\0x/y".encode())

    pp = "frontend/fuzz/seeds/parse_plan"
    picks = ["copy-dashdash", "m-stopsignal", "m-arg-history", "run-exec", "run-mount-cache",
             "healthcheck-none", "label-legacy", "perr-cycle", "m-proxy-declared", "directive-case-insensitive"]
    for p in picks:
        src = f"testdata/dockerfile/{p}/Dockerfile"
        if os.path.exists(src):
            shutil.copy(src, os.makedirs(pp, exist_ok=True) or os.path.join(pp, p))
    # expand: first byte = options (bit0 backtick escape, 1 rawquotes, 2 rawescapes, 4 skipquotes, 8 skipunset)
    xp = "frontend/fuzz/seeds/expand"
    rows = [r for r in csv.reader(open("testdata/expand/cases.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE)
            if r and not r[0].startswith("#") and len(r) >= 3]
    for i, r in enumerate(rows[::10]):
        mode, esc, word = r[0], r[1], r[2]
        if word.startswith("json:"):
            word = json.loads(word[5:])
        m = (1 if esc == "`" else 0) | (2 if "+rawquotes" in mode else 0) | (4 if "+rawescapes" in mode else 0) \
            | (8 if "+skipquotes" in mode else 0) | (16 if "+skipunset" in mode else 0)
        write(xp, f"case{i:02}", bytes([m]) + word.encode())

if __name__ == "__main__":
    main()
