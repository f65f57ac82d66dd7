#!/usr/bin/env bash
# The cost of the default RUN network (a private netns behind pasta or slirp4netns, issue 14
# item 1) against the host's network, on `apt-get update && apt-get install` in a Debian base.
#
# usage: bench/network.sh [-n RUNS] [-b RBUILD] [-t BOOKWORM_TAR] [-p "PACKAGES"]
#   -b  rbuild binary (default: target/release/rbuild, else target/debug/rbuild)
#   -t  a `mmdebstrap --variant=minbase bookworm out.tar` rootfs tarball (made when missing)
#   -p  packages to install (default: "curl ca-certificates python3-minimal")
# Runs alternate between the modes (host, pasta, slirp4netns); every build is --no-cache on its
# own store seeded with the base; medians and all samples are printed. Needs root and Debian's
# mirror (deb.debian.org) reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
bin=""
tar=""
pkgs="curl ca-certificates python3-minimal"
while getopts "n:b:t:p:" o; do
  case $o in
    n) runs=$OPTARG ;;
    b) bin=$OPTARG ;;
    t) tar=$OPTARG ;;
    p) pkgs=$OPTARG ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  if [ -x target/release/rbuild ]; then bin=target/release/rbuild; else bin=target/debug/rbuild; fi
fi
bin=$(realpath "$bin")
work=$(mktemp -d /var/tmp/rbuild-netbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$tar" ]; then
  tar=$work/bookworm.tar
  mmdebstrap --variant=minbase bookworm "$tar" >&2
fi
mkdir -p "$work/base"
ln "$tar" "$work/base/rootfs.tar" 2>/dev/null || cp "$tar" "$work/base/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' > "$work/base/Dockerfile"
mkdir -p "$work/app"
printf 'FROM debbase\nRUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends %s && test -x /usr/bin/curl\n' "$pkgs" > "$work/app/Dockerfile"

store=$work/store
"$bin" --root "$store" build -q -t debbase "$work/base" >/dev/null

declare -A samples
modes=(host pasta slirp4netns)
for ((i = 1; i <= runs; i++)); do
  for m in "${modes[@]}"; do
    args=(--root "$store" build -q --no-cache)
    envs=()
    case $m in
      host) args+=(--network=host --allow network.host) ;;
      *) envs=(RBUILD_NET_STACK=$m) ;;
    esac
    sync
    echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(date +%s.%N)
    env "${envs[@]}" "$bin" "${args[@]}" "$work/app" >/dev/null
    t1=$(date +%s.%N)
    s=$(echo "$t1 - $t0" | bc)
    samples[$m]="${samples[$m]:-} $s"
    echo "run $i $m ${s}s" >&2
  done
done
echo "apt-get install of: $pkgs ($runs runs each, --no-cache, binary $bin)"
for m in "${modes[@]}"; do
  med=$(printf '%s\n' ${samples[$m]} | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
  echo "$m median ${med}s samples:${samples[$m]}"
done
