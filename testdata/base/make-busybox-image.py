#!/usr/bin/env python3
"""Make a small busybox base image as an OCI image layout directory, with no network.

Uses Debian's busybox-static (/bin/busybox). The layer is deterministic: sorted names, mtime 0,
numeric owners 0:0, so the image digest is the same on every machine with the same busybox.

usage: make-busybox-image.py OUT_DIR [--ref NAME] [--platform PLATFORM=BUSYBOX]...
  (default ref: busybox:latest; default platform: linux/amd64=/bin/busybox)

With one --platform the layout holds that image (its config's architecture/variant set); with
several it holds an image index of them (each manifest's platform in the index), as a registry's
multi-platform tag. A foreign busybox comes from Debian's busybox-static for that architecture:
testdata/base/fetch-busybox.sh ARCH DIR (dpkg --add-architecture, apt-get download, dpkg-deb -x).
"""
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

def applet_list(busybox):
    """The applets of `busybox`: it lists them itself when it can run here (natively or emulated);
    otherwise the host's busybox-static of the same Debian version has the same list."""
    for b in (busybox, "/bin/busybox"):
        try:
            return subprocess.run([b, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            continue
    sys.exit(f"make-busybox-image: cannot list the applets of {busybox} (and /bin/busybox is missing)")


def blob(out, data):
    h = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(out, "blobs", "sha256", h), "wb") as f:
        f.write(data)
    return "sha256:" + h


def make_image(out, busybox, os_name, arch, variant):
    """Write one image's blobs; return the manifest's descriptor (without platform)."""
    if not os.path.exists(busybox):
        sys.exit(f"make-busybox-image: {busybox} missing: apt-get install busybox-static (or fetch-busybox.sh)")
    applets = applet_list(busybox)
    entries = {}  # path -> (kind, data/target, mode)
    def d(p, mode=0o755): entries[p] = ("dir", None, mode)
    for p in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var", "var/tmp", "home", "proc", "sys", "dev", "run"]:
        d(p, 0o1777 if p in ("tmp", "var/tmp") else (0o700 if p == "root" else 0o755))
    entries["bin/busybox"] = ("file", open(busybox, "rb").read(), 0o755)
    for a in applets:
        a = a.lstrip("/")
        if a == "bin/busybox" or a in entries:
            continue
        parent = os.path.dirname(a)
        if parent and parent not in entries:
            d(parent)
        entries[a] = ("link", "/bin/busybox", 0o777)
    entries["etc/passwd"] = ("file", b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644)
    entries["etc/group"] = ("file", b"root:x:0:\ndaemon:x:1:\nwheel:x:10:root,app\napp:x:1000:\nnogroup:x:65534:\n", 0o644)
    entries["etc/hostname"] = ("file", b"busybox\n", 0o644)
    d("home/app")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(entries):
            kind, data, mode = entries[p]
            ti = tarfile.TarInfo(p)
            ti.mtime = 0; ti.uid = ti.gid = 0; ti.uname = ti.gname = ""; ti.mode = mode
            if p == "home/app":
                ti.uid = ti.gid = 1000
            if kind == "dir":
                ti.type = tarfile.DIRTYPE; tf.addfile(ti)
            elif kind == "link":
                ti.type = tarfile.SYMTYPE; ti.linkname = data; tf.addfile(ti)
            else:
                ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
    layer = buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    gz = gzip.compress(layer, mtime=0)
    config = {
        "architecture": arch, "os": os_name, "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "make-busybox-image.py (busybox-static)"}],
    }
    if variant:
        config["variant"] = variant
    cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(out, cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(out, gz), "size": len(gz)}],
    }
    man = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(out, man), "size": len(man)}


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__, file=sys.stderr); sys.exit(2)
    out = args[0]
    ref = "busybox:latest"
    platforms = []
    i = 1
    while i < len(args):
        if args[i] == "--ref" and i + 1 < len(args):
            ref = args[i + 1]; i += 2
        elif args[i] == "--platform" and i + 1 < len(args):
            plat, _, path = args[i + 1].partition("=")
            parts = plat.split("/")
            if len(parts) not in (2, 3) or not path:
                sys.exit(f"make-busybox-image: --platform wants OS/ARCH[/VARIANT]=BUSYBOX, got {args[i + 1]!r}")
            platforms.append((parts[0], parts[1], parts[2] if len(parts) == 3 else None, path))
            i += 2
        else:
            print(__doc__, file=sys.stderr); sys.exit(2)
    if not platforms:
        platforms = [("linux", "amd64", None, "/bin/busybox")]
    descs = []
    for os_name, arch, variant, path in platforms:
        desc = make_image(out, path, os_name, arch, variant)
        plat = {"architecture": arch, "os": os_name}
        if variant:
            plat["variant"] = variant
        descs.append((desc, plat))
    if len(descs) == 1:
        top = dict(descs[0][0])
    else:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [dict(d, platform=p) for d, p in descs]}
        data = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": blob(out, data), "size": len(data)}
    top["annotations"] = {"org.opencontainers.image.ref.name": ref}
    layout = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(layout, f, sort_keys=True, separators=(",", ":"))
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print(top["digest"])

if __name__ == "__main__":
    main()
