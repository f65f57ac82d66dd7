#!/usr/bin/env bash
# The whole test suite: lints, unit tests, golden tests, and integration tests that build real
# images as root against real tools (skopeo, umoci, runc, docker-registry).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/setup-emulation.sh
# Rootless RUN networking (pasta/slirp4netns) opens /dev/net/tun as an ordinary user: Debian's
# udev makes it 0666; some VMs and containers leave it 0600.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then chmod 0666 /dev/net/tun || true; fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads="${RBUILD_TEST_THREADS:-2}"
