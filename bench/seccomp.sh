#!/bin/sh
# The cost of the default seccomp filter, measured with one rbuild binary: the same RUN with the
# filter and with --security=insecure (no filter; the other differences, capabilities and
# no_new_privs, cost nothing per syscall).
#   micro:  RUN dd if=/dev/zero of=/dev/null bs=1 count=2000000   (4M read/write syscalls)
#   many:   100 RUN steps of `echo N > /nN`, --no-cache
# usage: bench/seccomp.sh [RBUILD_BINARY] [ROUNDS]   (as root; raw lines on stdout)
set -eu
B=${1:-target/release/rbuild}
B=$(realpath "$B")
ROUNDS=${2:-7}
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/rbuild-bench-seccomp.XXXXXX)
trap 'rm -rf "$W"' EXIT
export RBUILD_ROOT="$W/root"
python3 "$REPO/testdata/base/make-busybox-image.py" "$W/bb" >/dev/null
"$B" load "$W/bb" >/dev/null 2>&1
for m in sec ins; do
    mkdir -p "$W/micro-$m" "$W/many-$m"
    f=""; [ $m = ins ] && f="--security=insecure "
    printf 'FROM busybox\nRUN %stime dd if=/dev/zero of=/dev/null bs=1 count=2000000\n' "$f" >"$W/micro-$m/Dockerfile"
    { echo 'FROM busybox'; i=0; while [ $i -lt 100 ]; do echo "RUN ${f}echo $i > /n$i"; i=$((i + 1)); done; } >"$W/many-$m/Dockerfile"
done
build() { "$B" build --no-cache --allow security.insecure "$@"; }
r=0
while [ $r -lt "$ROUNDS" ]; do
    for m in sec ins; do
        echo "micro $m $(build --progress=plain "$W/micro-$m" 2>&1 | grep -E ' (real|user|sys)' | awk '{printf "%s=%s ", $3, $5}')"
    done
    for m in sec ins; do
        s=$(date +%s.%N)
        build --progress=quiet "$W/many-$m" >/dev/null 2>&1
        echo "many $m total=$(echo "$(date +%s.%N) - $s" | bc)s"
    done
    r=$((r + 1))
done
