#!/usr/bin/env bash
# Install the Debian packages rbuild's build, example and tests need (gcc: the bundled C of SQLite,
# zstd and liblzma). Idempotent; root only.
set -euo pipefail
pkgs=(gcc libc6-dev busybox-static python3 git docker-registry skopeo umoci runc zstd pigz jq apache2-utils openssl iproute2 hyperfine qemu-user-static binfmt-support file binutils passt slirp4netns curl uidmap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The shipped registry service listens on all interfaces; tests start their own on 127.0.0.1.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
# Python servers and checkers the tests run: moto's standalone S3 API server (the S3 cache tests).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing: moto[server] (pip)" >&2
  python3 -m pip install -q 'moto[server]' >/dev/null
fi
# The SBOM tests validate with the SPDX project's validator and check in-toto statements against
# a JSON Schema.
if ! command -v pyspdxtools >/dev/null 2>&1 || ! python3 -c 'import jsonschema' >/dev/null 2>&1; then
  echo "installing: spdx-tools jsonschema (pip)" >&2
  python3 -m pip install -q spdx-tools jsonschema >/dev/null
fi
