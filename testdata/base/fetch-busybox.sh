#!/usr/bin/env bash
# Fetch Debian's busybox-static for another architecture, without running anything of it:
#   fetch-busybox.sh ARCH OUT_DIR   ->  OUT_DIR/bin/busybox   (ARCH: Debian's name, e.g. arm64)
# Adds ARCH to dpkg's foreign architectures when needed (then apt-get update), downloads the
# package with `apt-get download` and unpacks it with `dpkg-deb -x`. Root only (dpkg/apt-get).
# Idempotent: an existing OUT_DIR/bin/busybox is kept.
set -euo pipefail
arch=${1:?usage: fetch-busybox.sh ARCH OUT_DIR}
out=${2:?usage: fetch-busybox.sh ARCH OUT_DIR}
[ -x "$out/bin/busybox" ] && exit 0
if [ "$(dpkg --print-architecture)" != "$arch" ] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
  dpkg --add-architecture "$arch"
  apt-get update -qq
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
# apt drops to the _apt user for downloads: give it the directory, or it warns and runs as root.
chown _apt "$tmp" 2>/dev/null || true
if ! (cd "$tmp" && apt-get download -qq "busybox-static:$arch" >/dev/null 2>&1); then
  apt-get update -qq
  (cd "$tmp" && apt-get download -qq "busybox-static:$arch" >/dev/null)
fi
dpkg-deb -x "$tmp"/busybox-static_*_"$arch".deb "$tmp/root"
mkdir -p "$out/bin"
cp "$tmp/root/bin/busybox" "$out/bin/busybox.part"
chmod 0755 "$out/bin/busybox.part"
mv "$out/bin/busybox.part" "$out/bin/busybox"
