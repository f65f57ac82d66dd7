#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install what is needed, build rbuild, make the busybox
# base image, load it into the store, and build the example image.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --bin rbuild --bin rbuild-engine
# `rbuild` (the front: no-op rebuilds) runs `rbuild-engine` from its own directory.
install -m 0755 target/release/rbuild target/release/rbuild-engine /usr/local/bin/
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 testdata/base/make-busybox-image.py "$tmp/busybox" >/dev/null
rbuild load "$tmp/busybox"
rbuild -t hello:latest examples/hello
rbuild images
