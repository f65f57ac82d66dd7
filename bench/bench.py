#!/usr/bin/env python3
"""Side-by-side build benchmarks: rbuild vs BuildKit (docker 20.10, DOCKER_BUILDKIT=1) vs buildah.

Scenarios (issue 4), all FROM a busybox base made locally (testdata/base/make-busybox-image.py):
  small      WORKDIR, COPY of a small app, a few RUN, CMD
  manysteps  30 RUN steps creating, modifying, deleting and renaming files
  parallel   4 independent stages of `sleep 1` and a final stage copying from each
  bigcopy    COPY of a generated 20,000-file / ~400 MB context

For each scenario and tool: cold build, no-op rebuild, rebuild after changing one file, and peak
RSS of the builder process (for dockerd: the daemon's peak RSS growth is not measured; we report
the client's and say so). Runs alternate between tools; medians are reported. Page cache is
dropped before every timed build for every tool alike (PEERS.md: otherwise the comparison is noise).

usage: bench/bench.py [--runs N] [--scenarios a,b] [--tools rbuild,docker,buildah] [--out BENCHMARKS.md]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RBUILD_BIN = None  # --rbuild; default: target/release/rbuild, else rbuild on PATH


def count_files(tar_path):
    """Equal-work check: regular files and symlinks in the image's filesystem, applying the layers of a
    docker-archive in manifest order (whiteouts remove what lower layers added)."""
    import tarfile
    paths = set()
    with tarfile.open(tar_path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as inner:
                for e in inner:
                    name = os.path.normpath(e.name).lstrip("./")
                    d, base = os.path.split(name)
                    if base == ".wh..wh..opq":
                        paths = {p for p in paths if not p.startswith(d + "/")}
                    elif base.startswith(".wh."):
                        t = os.path.join(d, base[4:])
                        paths = {p for p in paths if p != t and not p.startswith(t + "/")}
                    elif e.isfile() or e.issym():
                        paths.add(name)
    return len(paths)


SCENARIOS = {}

def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn

@scenario
def small(d):
    w(d, "Dockerfile", "FROM busybox:latest\nWORKDIR /app\nCOPY app/ /app/\nRUN echo built > /app/built.txt\nRUN ls -la /app > /app/listing.txt\nRUN wc -c /app/*.txt > /app/sizes\nCMD [\"/app/run.sh\"]\n")
    w(d, "app/run.sh", "#!/bin/sh\necho hello\n")
    for i in range(10):
        w(d, f"app/file{i}.txt", f"file {i}\n" * 50)
    return "app/file3.txt"

@scenario
def manysteps(d):
    lines = ["FROM busybox:latest", "WORKDIR /work", "COPY seed.txt /work/seed.txt"]
    for i in range(30):
        k = i % 3
        if k == 0:
            lines.append(f"RUN mkdir -p /work/d{i} && echo {i} > /work/d{i}/f && cp /work/seed.txt /work/d{i}/seed")
        elif k == 1:
            lines.append(f"RUN echo more{i} >> /work/d{i-1}/f && mv /work/d{i-1}/seed /work/d{i-1}/seed.moved")
        else:
            lines.append(f"RUN rm -rf /work/d{i-2}/f && touch /work/marker{i}")
    lines.append('CMD ["ls", "/work"]')
    w(d, "Dockerfile", "\n".join(lines) + "\n")
    w(d, "seed.txt", "seed\n")
    return "seed.txt"

@scenario
def parallel(d):
    parts = []
    for i in range(4):
        parts.append(f"FROM busybox:latest AS s{i}\nRUN sleep 1 && echo {i} > /out{i}\n")
    parts.append("FROM busybox:latest\nCOPY marker.txt /marker.txt\n" + "".join(f"COPY --from=s{i} /out{i} /out{i}\n" for i in range(4)))
    w(d, "Dockerfile", "\n".join(parts))
    w(d, "marker.txt", "m\n")
    return "marker.txt"

@scenario
def bigcopy(d):
    w(d, "Dockerfile", "FROM busybox:latest\nCOPY . /data\nCMD [\"ls\", \"/data\"]\n")
    chunk = os.urandom(1 << 20)
    for i in range(20000):
        sub = os.path.join(d, "files", f"{i // 500:03d}")
        os.makedirs(sub, exist_ok=True)
        size = 20480 + (i * 7919) % 2048  # ~21 KB each -> ~420 MB
        off = (i * 4099) % ((1 << 20) - size)
        with open(os.path.join(sub, f"f{i:05d}.bin"), "wb") as f:
            f.write(chunk[off:off + size])
    return "files/010/f05000.bin"

def w(d, rel, text):
    p = os.path.join(d, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(text)

def drop_caches(ctx):
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass
    # Re-read the context so every tool starts from the same warm context and cold everything else.
    subprocess.run(["tar", "-cf", "/dev/null", "-C", ctx, "."], stdout=subprocess.DEVNULL)

def timed(cmd, env=None):
    """Run cmd under /usr/bin/time -f, return (seconds, peak_rss_kb)."""
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    full = ["/usr/bin/time", "-f", "%M", "-o", tf.name] + cmd
    t0 = time.monotonic()
    r = subprocess.run(full, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    try:
        rss = int(open(tf.name).read().strip().splitlines()[-1])
    except Exception:
        rss = 0
    os.unlink(tf.name)
    return dt, rss

class Rbuild:
    name = "rbuild"
    def __init__(self, work, layout):
        self.bin = RBUILD_BIN or (os.path.join(REPO, "target/release/rbuild") if os.path.exists(os.path.join(REPO, "target/release/rbuild")) else shutil.which("rbuild"))
        self.work, self.layout = work, layout
    def available(self):
        return os.path.exists(self.bin)
    def env(self):
        e = dict(os.environ); e["RBUILD_ROOT"] = os.path.join(self.work, "rbuild-store"); return e
    def reset(self):
        shutil.rmtree(os.path.join(self.work, "rbuild-store"), ignore_errors=True)
        subprocess.run([self.bin, "load", self.layout], env=self.env(), check=True, stdout=subprocess.DEVNULL)
    def build(self, ctx, tag):
        return timed([self.bin, "build", "--progress=plain", "-t", tag, ctx], env=self.env())
    def version(self):
        return subprocess.run([self.bin, "--version"], capture_output=True, text=True).stdout.strip()
    def export(self, tag, dest):
        subprocess.run([self.bin, "save", tag, "-o", dest], env=self.env(), check=True, capture_output=True)

class Docker:
    name = "buildkit"
    bin = "/usr/bin/docker"
    def __init__(self, work, layout):
        self.work, self.layout = work, layout
    def available(self):
        return os.path.exists(self.bin) and subprocess.run([self.bin, "info"], capture_output=True).returncode == 0
    def env(self):
        e = dict(os.environ); e["DOCKER_BUILDKIT"] = "1"; return e
    def reset(self):
        subprocess.run([self.bin, "builder", "prune", "-af"], capture_output=True)
        subprocess.run([self.bin, "image", "prune", "-af"], capture_output=True)
        subprocess.run(["skopeo", "copy", f"oci:{self.layout}:busybox:latest", "docker-daemon:busybox:latest"], check=True, capture_output=True)
    def build(self, ctx, tag):
        return timed([self.bin, "build", "--network=none", "--progress=plain", "-t", tag, ctx], env=self.env())
    def version(self):
        return subprocess.run([self.bin, "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True).stdout.strip()
    def export(self, tag, dest):
        subprocess.run([self.bin, "save", tag, "-o", dest], check=True, capture_output=True)

class Buildah:
    name = "buildah"
    def __init__(self, work, layout):
        self.work, self.layout = work, layout
        self.root = os.path.join(work, "buildah-root")
    def available(self):
        return shutil.which("buildah") is not None
    def args(self):
        return ["buildah", "--root", self.root, "--runroot", self.root + "-run", "--storage-driver", "vfs"]
    def reset(self):
        subprocess.run(self.args() + ["rmi", "-af"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        iid = subprocess.run(self.args() + ["pull", "-q", f"oci:{self.layout}:busybox:latest"], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        # The name a Dockerfile's `FROM busybox:latest` resolves to; builds never pull (--pull-never).
        subprocess.run(self.args() + ["tag", iid, "docker.io/library/busybox:latest"], check=True, capture_output=True)
    def build(self, ctx, tag):
        return timed(self.args() + ["bud", "--isolation", "chroot", "--pull-never", "--layers", "--jobs", "4", "-t", tag, ctx])
    def version(self):
        return subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.strip()
    def export(self, tag, dest):
        subprocess.run(self.args() + ["push", tag, f"docker-archive:{dest}"], check=True, capture_output=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--tools", default="rbuild,docker,buildah")
    ap.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"))
    ap.add_argument("--tag", default="latest", help="raw numbers go to bench/results/TAG.json")
    ap.add_argument("--work", default="/var/tmp/rbuild-bench")
    ap.add_argument("--rbuild", default=None, help="rbuild binary (default: target/release/rbuild)")
    a = ap.parse_args()
    global RBUILD_BIN
    RBUILD_BIN = a.rbuild
    os.makedirs(a.work, exist_ok=True)
    layout = os.path.join(a.work, "busybox-layout")
    shutil.rmtree(layout, ignore_errors=True)
    subprocess.run(["python3", os.path.join(REPO, "testdata/base/make-busybox-image.py"), layout], check=True, stdout=subprocess.DEVNULL)
    classes = {"rbuild": Rbuild, "docker": Docker, "buildah": Buildah}
    tools = [classes[t](a.work, layout) for t in a.tools.split(",")]
    tools = [t for t in tools if t.available() or print(f"skipping {t.name}: not available", file=sys.stderr)]
    results = {}  # (scenario, tool, measure) -> [values]
    for sc in a.scenarios.split(","):
        ctx = os.path.join(a.work, "ctx-" + sc)
        shutil.rmtree(ctx, ignore_errors=True)
        os.makedirs(ctx)
        change = SCENARIOS[sc](ctx)
        for run in range(a.runs):
            for t in tools:  # alternate tools within each run
                t.reset()
                drop_caches(ctx)
                cold, rss = t.build(ctx, f"bench-{sc}")
                drop_caches(ctx)
                noop, _ = t.build(ctx, f"bench-{sc}")
                # The same again with warm caches: what a user repeating a build sees.
                noop_warm, _ = t.build(ctx, f"bench-{sc}")
                with open(os.path.join(ctx, change), "a") as f:
                    f.write(f"change {run} {time.time()}\n")
                drop_caches(ctx)
                one, _ = t.build(ctx, f"bench-{sc}")
                for m, v in (("cold", cold), ("noop", noop), ("noop_warm", noop_warm), ("onefile", one), ("rss_mb", rss / 1024)):
                    results.setdefault((sc, t.name, m), []).append(v)
                print(f"{sc:10} {t.name:9} run {run}: cold {cold:.2f}s noop {noop:.3f}s (warm {noop_warm:.3f}s) onefile {one:.2f}s rss {rss/1024:.0f}MB", file=sys.stderr)
                if run == 0:
                    dest = os.path.join(a.work, f"export-{t.name}.tar")
                    try:
                        t.export(f"bench-{sc}", dest)
                        n = count_files(dest)
                        results.setdefault((sc, t.name, "files"), []).append(n)
                        print(f"{sc:10} {t.name:9} equal-work check: {n} files in the image", file=sys.stderr)
                    except Exception as e:  # report, do not hide
                        print(f"{sc:10} {t.name:9} equal-work check failed: {e}", file=sys.stderr)
                    finally:
                        if os.path.exists(dest):
                            os.unlink(dest)
    write_report(a, tools, results)

def write_report(a, tools, results):
    med = lambda k: statistics.median(results[k]) if k in results else None
    lines = ["# Benchmarks", "",
             "## Method", "",
             "`bench/bench.py` generates four scenarios (see its docstring) on a busybox base made locally, and for each",
             "tool runs, per round: a cold build (empty cache, base image loaded), a no-op rebuild, and a rebuild after",
             "appending to one file of the context. Tools alternate within each round; the page cache is dropped and the",
             "context re-read before every timed build, for every tool alike. Figures are medians over "
             f"{a.runs} rounds. Peak RSS is the builder process's maximum resident set (`/usr/bin/time -f %M`);",
             "for BuildKit that is the docker client only — the daemon's memory is not in it.", "",
             "Machine: " + subprocess.run(["sh", "-c", "nproc; free -g | awk '/Mem/{print $2\" GiB\"}'; uname -r"], capture_output=True, text=True).stdout.replace("\n", " ").strip(), "",
             "Versions: " + "; ".join(f"{t.name}: {t.version()}" for t in tools), "",
             "## Results (seconds; RSS in MB)", "",
             "| scenario | tool | cold | no-op | no-op, warm caches | one file changed | peak RSS | files in image | cold ratio | no-op ratio | warm no-op ratio | one-file ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    measures = ("cold", "noop", "noop_warm", "onefile")
    for sc in a.scenarios.split(","):
        base = {m: med((sc, "buildkit", m)) for m in measures}
        for t in tools:
            row = [med((sc, t.name, m)) for m in measures + ("rss_mb",)]
            if row[0] is None:
                continue
            ratios = []
            for i, m in enumerate(measures):
                ratios.append(f"{row[i] / base[m]:.2f}×" if base[m] and row[i] is not None and t.name != "buildkit" else "")
            files = med((sc, t.name, "files"))
            cell = lambda v, f: format(v, f) if v is not None else "?"
            lines.append(f"| {sc} | {t.name} | {cell(row[0], '.2f')} | {cell(row[1], '.3f')} | {cell(row[2], '.3f')} | {cell(row[3], '.2f')} | {cell(row[4], '.0f')} | {files if files is not None else '?'} | " + " | ".join(ratios) + " |")
    lines += ["", "Ratios are rbuild (or buildah) / BuildKit, measured side by side in the same session.", "",
              "## Reproduce", "", "```sh", "bash scripts/setup.sh            # builds and installs rbuild",
              "bash bench/start-peers.sh         # optional: installs and starts dockerd (BuildKit) and buildah",
              f"python3 bench/bench.py --runs {a.runs}", "```", "",
              f"Raw numbers: `bench/results/{a.tag}.json`."]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.makedirs(os.path.join(REPO, "bench/results"), exist_ok=True)
    with open(os.path.join(REPO, f"bench/results/{a.tag}.json"), "w") as f:
        json.dump({"|".join(k): v for k, v in results.items()}, f, indent=1)
    print(f"wrote {a.out}", file=sys.stderr)

if __name__ == "__main__":
    main()
