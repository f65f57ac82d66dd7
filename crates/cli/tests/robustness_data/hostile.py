"""Write a two-layer OCI layout: the busybox base layer, then a hostile layer (one corpus case).

usage: hostile.py BUSYBOX_LAYOUT OUT_DIR CASE HOST_DIR REF   -> prints the hostile layer's digest
       (CASE "prebuilt": the layer is the zstd blob HOSTILE_LAYER whose uncompressed sha256 is
       HOSTILE_DIFF_ID, for layers too big to make here)
       hostile.py --tar CASE HOST_DIR OUT_FILE               -> writes the case as a (compressed) tar
"""
import gzip, hashlib, io, json, os, shutil, subprocess, sys, tarfile

tar_mode = sys.argv[1] == "--tar"
if tar_mode:
    case, host, out = sys.argv[2:5]
else:
    bb, out, case, host, ref = sys.argv[1:6]

def ti(name, kind=tarfile.REGTYPE, mode=0o644, **kw):
    t = tarfile.TarInfo(name)
    t.type = kind; t.mode = mode; t.mtime = 0; t.uid = t.gid = 0
    for k, v in kw.items():
        setattr(t, k, v)
    return t

class L:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
    def file(self, name, data=b"x", mode=0o644, **kw):
        self.tf.addfile(ti(name, mode=mode, size=len(data), **kw), io.BytesIO(data)); return self
    def dir(self, name, mode=0o755):
        self.tf.addfile(ti(name, tarfile.DIRTYPE, mode)); return self
    def sym(self, name, target):
        self.tf.addfile(ti(name, tarfile.SYMTYPE, 0o777, linkname=target)); return self
    def hard(self, name, target):
        self.tf.addfile(ti(name, tarfile.LNKTYPE, linkname=target)); return self
    def dev(self, name, kind, major, minor):
        self.tf.addfile(ti(name, kind, 0o666, devmajor=major, devminor=minor)); return self
    def done(self):
        self.tf.close(); return self.buf.getvalue()

def pax_size_mismatch():
    t = ti("paxfile", size=5, pax_headers={"size": "10"})
    l = L(); l.tf.addfile(t, io.BytesIO(b"0123456789")); return l.done()

def bomb():
    # 64 MiB of zeros in one member: about 64 KiB of gzip.
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
        h = ti("bomb", size=64 << 20).tobuf(tarfile.USTAR_FORMAT)
        gz.write(h)
        z = bytes(1 << 20)
        for _ in range(64):
            gz.write(z)
        gz.write(bytes(1024))
    return None, raw.getvalue()

def zstd_bomb():
    # 64 MiB of zeros in one member: a few KiB of zstd.
    raw = io.BytesIO()
    raw.write(ti("bomb", size=64 << 20).tobuf(tarfile.USTAR_FORMAT))
    raw.write(bytes(64 << 20))
    raw.write(bytes(1024))
    data = raw.getvalue()
    z = subprocess.run(["zstd", "-q", "-19", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return "zstd", z, data

def repeated(kind, head, chunk, times):
    # head, then `times` copies of chunk, each its own gzip member / zstd frame: a huge layer for
    # the price of one small chunk.
    def one(data):
        if kind == "gzip":
            return gzip.compress(data, compresslevel=9, mtime=0)
        return subprocess.run(["zstd", "-q", "-19", "-c"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    c = one(chunk)
    return (one(head) if head else b"") + c * times

# The layers below fail before their diff_id is checked: a made-up one will do.
FAKE_DIFF_ID = "sha256:" + "0" * 64

def zero_bomb(kind):
    # 4 GiB of zeros in one member, at the default budgets.
    h = ti("bomb", size=4 << 30).tobuf(tarfile.USTAR_FORMAT)
    return {"kind": kind, "blob": repeated(kind, h, bytes(1 << 20), 4096), "diff_id": FAKE_DIFF_ID}

def empty_entries():
    # 3,000,000 empty files: a 10,000-entry chunk repeated (the same names again and again).
    chunk = b"".join(ti("d/f%d" % i).tobuf(tarfile.USTAR_FORMAT) for i in range(10000))
    return {"kind": "zstd", "blob": repeated("zstd", b"", chunk, 300), "diff_id": FAKE_DIFF_ID}

def many():
    l = L()
    for i in range(150):
        l.file("f%d" % i, b"")
    return l.done()

CASES = {
    "dotdot": lambda: L().file("../../escape", b"x").done(),
    "absolute": lambda: L().file("/etc/escape", b"x").done(),
    "dotdot-middle": lambda: L().file("a/../../../b/../c", b"x").done(),
    "symlink-root-write": lambda: L().sym("root", "/").file("root/rbuild-breakout-escape", b"x").done(),
    "symlink-updir-write": lambda: L().sym("up", "../..").file("up/escape", b"x").done(),
    "symlink-host-write": lambda: L().sym("hd", host).file("hd/dir/pwned", b"x").done(),
    "symlink-host-mkdir": lambda: L().sym("hd", host).dir("hd/dir/newdir").done(),
    "hardlink-outside": lambda: L().hard("hl", "../host/file").done(),
    "hardlink-host-abs": lambda: L().hard("hl", host + "/file").done(),
    "symlink-dir-swap": lambda: L().sym("sw", host).dir("sw").file("sw/f", b"x").sym("sw", host).done(),
    "chmod-through-symlink": lambda: L().sym("d", host).dir("d", 0o777).done(),
    "file-over-host-symlink": lambda: L().sym("f", host + "/file").file("f", b"mine").done(),
    "whiteout-empty": lambda: L().file(".wh.", b"").done(),
    "whiteout-dotdot": lambda: L().file("a/.wh..", b"").done(),
    "whiteout-through-symlink": lambda: L().sym("ws", host).file("ws/.wh.file", b"").done(),
    "opaque-after-siblings": lambda: L().dir("o").file("o/a", b"a").file("o/.wh..wh..opq", b"").done(),
    "devices-setuid": lambda: L().dev("devnull", tarfile.CHRTYPE, 1, 3).dev("sda", tarfile.BLKTYPE, 8, 0).file("suid", b"#!/bin/sh\n", 0o4755).done(),
    "duplicate": lambda: L().file("dup", b"one").file("dup", b"two").done(),
    "pax-size-mismatch": pax_size_mismatch,
    "name-over-path-max": lambda: L().file("a/" * 2100 + "f", b"").done(),
    "many-entries": many,
    "gzip-bomb": bomb,
    "zstd-bomb": zstd_bomb,
    "gzip-bomb-default": lambda: zero_bomb("gzip"),
    "zstd-bomb-default": lambda: zero_bomb("zstd"),
    "empty-entries-default": empty_entries,
    # Issue 14 item 9: the symlinks are in the layer below the one that writes through them.
    "lower-symlink-var-run": lambda: {"layers": [L().dir("run").file("run/gone", b"g").dir("var").sym("var/run", "/run").done(),
                                                 L().file("var/run/x", b"r").file("var/run/.wh.gone", b"").done()]},
    "lower-symlink-outside": lambda: {"layers": [L().sym("up", "../../..").sym("hd", host).sym("abs", "/").done(),
                                                 L().file("up/escape", b"x").file("hd/dir/pwned", b"x").file("abs/rbuild-breakout-escape", b"x").done()]},
    "legit-abs-symlinks": lambda: L().dir("run").file("run/x", b"r").dir("var").sym("var/run", "/run")
        .dir("etc/ssl/certs/java").file("etc/ca-certificates-java", b"c").sym("etc/ssl/certs/java/cacerts", "/etc/ca-certificates-java").done(),
}

def prebuilt():
    with open(os.environ["HOSTILE_LAYER"], "rb") as f:
        return "zstd", f.read(), None

CASES["prebuilt"] = prebuilt
made = CASES[case]()
if tar_mode:
    with open(out, "wb") as f:
        f.write(made[1] if isinstance(made, tuple) else made)
    sys.exit(0)
layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
extra = []  # (media type, blob, diff_id) of layers below the hostile one
if isinstance(made, dict) and "layers" in made:
    *below, top = made["layers"]
    extra = [(layer_type, gzip.compress(t, mtime=0), "sha256:" + hashlib.sha256(t).hexdigest()) for t in below]
    made = top
if isinstance(made, dict):
    layer_gz, diff_id = made["blob"], made["diff_id"]
    if made["kind"] == "zstd":
        layer_type = "application/vnd.oci.image.layer.v1.tar+zstd"
elif isinstance(made, tuple) and len(made) == 3:
    layer_gz = made[1]
    layer_type = "application/vnd.oci.image.layer.v1.tar+zstd"
    if made[2] is None:
        diff_id = os.environ["HOSTILE_DIFF_ID"]
    else:
        diff_id = "sha256:" + hashlib.sha256(made[2]).hexdigest()
elif isinstance(made, tuple):
    layer_gz = made[1]
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer_gz)).hexdigest()
else:
    diff_id = "sha256:" + hashlib.sha256(made).hexdigest()
    layer_gz = gzip.compress(made, mtime=0)

shutil.rmtree(out, ignore_errors=True)
os.makedirs(os.path.join(out, "blobs", "sha256"))
def blob(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", h), "wb") as f:
        f.write(data)
    return "sha256:" + h
def read_blob(layout, d):
    return open(os.path.join(layout, "blobs", "sha256", d.split(":")[1]), "rb").read()
idx = json.load(open(os.path.join(bb, "index.json")))
bm = json.loads(read_blob(bb, idx["manifests"][0]["digest"]))
bc = json.loads(read_blob(bb, bm["config"]["digest"]))
base_layer = bm["layers"][0]
blob(read_blob(bb, base_layer["digest"]))
extra_descs = []
for mt, b, d in extra:
    bc["rootfs"]["diff_ids"].append(d)
    bc["history"].append({"created": "1970-01-01T00:00:00Z", "created_by": "below " + case})
    extra_descs.append({"mediaType": mt, "digest": blob(b), "size": len(b)})
bc["rootfs"]["diff_ids"].append(diff_id)
bc["history"].append({"created": "1970-01-01T00:00:00Z", "created_by": "hostile " + case})
cfg = json.dumps(bc, sort_keys=True, separators=(",", ":")).encode()
ld = blob(layer_gz)
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(cfg), "size": len(cfg)},
     "layers": [base_layer] + extra_descs + [{"mediaType": layer_type, "digest": ld, "size": len(layer_gz)}]}
mb = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
md = blob(mb)
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(mb),
                        "annotations": {"org.opencontainers.image.ref.name": ref}}]}
json.dump(index, open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
print(ld)
