#!/usr/bin/env bash
# What the multi-platform tests need beyond packages (scripts/install-deps.sh installs
# qemu-user-static and binfmt-support): binfmt_misc mounted, Debian's qemu handlers registered
# with the F flag, and Debian's arm64 busybox-static in target/test-assets (the arm64 test base
# image). Each step that is impossible here (no root, a container that may not mount
# binfmt_misc, no network for apt) prints a note and the tests that need it SKIP with the reason.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "setup-emulation: not root; emulation tests will SKIP" >&2
  exit 0
fi
dir=/proc/sys/fs/binfmt_misc
if [ ! -e "$dir/status" ]; then
  mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null ||
    echo "setup-emulation: cannot mount binfmt_misc at $dir; emulation tests will SKIP" >&2
fi
if [ -e "$dir/status" ] && command -v update-binfmts >/dev/null 2>&1; then
  for f in /usr/share/binfmts/qemu-*; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    # The host's own architecture has no definition; the rest are enabled with their F flag.
    [ -e "$dir/$name" ] || update-binfmts --enable "$name" >/dev/null 2>&1 ||
      echo "setup-emulation: could not register $name" >&2
  done
fi
bash testdata/base/fetch-busybox.sh arm64 target/test-assets/busybox-arm64 ||
  echo "setup-emulation: could not fetch busybox-static:arm64; arm64 tests will SKIP" >&2
exit 0
