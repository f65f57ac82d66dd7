#!/usr/bin/env bash
# The whole test suite: lints, unit tests, golden tests, and integration tests that build real
# images as root against real tools (skopeo, umoci, runc, docker-registry).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/setup-emulation.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads="${RBUILD_TEST_THREADS:-2}"
