#!/usr/bin/env bash
# Parse + plan of a generated 5,000-instruction Dockerfile (frontend/examples/parse_bench.rs),
# release build, in-memory base image resolver: no I/O is timed. Not a test; figures go to
# BENCHMARKS.md. usage: bash bench/parse.sh [INSTRUCTIONS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p rbuild-frontend --example parse_bench
exec target/release/examples/parse_bench "${1:-5000}" "${2:-20}"
