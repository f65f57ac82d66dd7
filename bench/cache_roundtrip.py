#!/usr/bin/env python3
"""Cache round trip, s3 against registry (issue 18): for each scenario, a build in store A exports
its cache (mode=max) to a backend, then a fresh store B builds the same context with --cache-from
that backend. Reports A's export time (the build's wall time minus the same build without
--cache-to), B's cold build time, and the requests each backend served: moto_server (an S3 API
server on loopback) for s3, Debian's docker-registry (its access log) for registry. Page cache is
dropped before every timed build.

usage: bench/cache_roundtrip.py [--rbuild BIN] [--scenarios small,manysteps,bigcopy] [--runs N]
"""
import argparse, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the scenarios and the page-cache helper)

REPO = os.path.dirname(HERE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def start_moto(work):
    port = free_port()
    log = open(os.path.join(work, "moto.log"), "w")
    p = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/bench", method="PUT"))
    return p, port, log.name


def start_registry(work):
    port = free_port()
    root = os.path.join(work, "registry")
    shutil.rmtree(root, ignore_errors=True)
    cfg = os.path.join(work, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    log = open(os.path.join(work, "registry.log"), "w")
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    return p, port, log.name


def count_requests(logfile, since):
    with open(logfile, errors="replace") as f:
        f.seek(since)
        text = f.read()
    return sum(1 for l in text.splitlines() if '"GET ' in l or '"PUT ' in l or '"HEAD ' in l or '"POST ' in l or '"PATCH ' in l)


def size(logfile):
    return os.path.getsize(logfile)


def build(rbuild, store, ctx, extra, layout):
    env = dict(os.environ, RBUILD_ROOT=store, RBUILD_NOOP_CHECK="0", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    if not os.path.exists(os.path.join(store, "blobs")):
        subprocess.run([rbuild, "load", layout], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.drop_caches(ctx)
    t = time.monotonic()
    r = subprocess.run([rbuild, "build", "--progress=plain", "-q"] + extra + [ctx], env=env, capture_output=True, text=True)
    dt = time.monotonic() - t
    if r.returncode != 0:
        sys.exit(f"build failed: {r.stderr[-2000:]}")
    return dt, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rbuild", default=os.path.join(REPO, "target/release/rbuild"))
    ap.add_argument("--scenarios", default="small,manysteps,bigcopy")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--work", default="/var/tmp/rbuild-cache-bench")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    layout = os.path.join(a.work, "busybox-layout")
    shutil.rmtree(layout, ignore_errors=True)
    subprocess.run(["python3", os.path.join(REPO, "testdata/base/make-busybox-image.py"), layout], check=True, stdout=subprocess.DEVNULL)
    moto, s3port, motolog = start_moto(a.work)
    reg, regport, reglog = start_registry(a.work)
    rows = []
    try:
        for sc in a.scenarios.split(","):
            ctx = os.path.join(a.work, "ctx-" + sc)
            shutil.rmtree(ctx, ignore_errors=True)
            os.makedirs(ctx)
            bench.SCENARIOS[sc](ctx)
            for backend in ("s3", "registry"):
                exports, colds, reqs_out, reqs_in = [], [], [], []
                for run in range(a.runs):
                    name = f"{sc}-{run}-{backend}"
                    if backend == "s3":
                        spec = f"type=s3,bucket=bench,region=us-east-1,endpoint_url=http://127.0.0.1:{s3port},use_path_style=true,name={name}"
                        log = motolog
                    else:
                        spec = f"type=registry,ref=127.0.0.1:{regport}/cache:{name}"
                        log = reglog
                    sa = tempfile.mkdtemp(prefix="A-", dir=a.work)
                    sb = tempfile.mkdtemp(prefix="B-", dir=a.work)
                    base, _ = build(a.rbuild, sa, ctx, [], layout)
                    shutil.rmtree(sa)
                    sa = tempfile.mkdtemp(prefix="A-", dir=a.work)
                    mark = size(log)
                    with_export, _ = build(a.rbuild, sa, ctx, ["--cache-to", spec + ",mode=max"], layout)
                    reqs_out.append(count_requests(log, mark))
                    exports.append(with_export - base)
                    mark = size(log)
                    cold, _ = build(a.rbuild, sb, ctx, ["--cache-from", spec], layout)
                    reqs_in.append(count_requests(log, mark))
                    colds.append(cold)
                    shutil.rmtree(sa, ignore_errors=True)
                    shutil.rmtree(sb, ignore_errors=True)
                rows.append((sc, backend, statistics.median(exports), statistics.median(colds), statistics.median(reqs_out), statistics.median(reqs_in)))
                print(rows[-1], flush=True)
    finally:
        moto.kill()
        reg.kill()
    print("\n| scenario | backend | export (s, over a build without it) | second store's cold build with --cache-from (s) | requests, export | requests, import |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.0f} | {r[5]:.0f} |")


if __name__ == "__main__":
    main()
