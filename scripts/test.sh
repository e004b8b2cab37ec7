#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# One connection uses two descriptors on each binary; the suite opens a few hundred at once.
ulimit -n 20000 2>/dev/null || true
ctest --test-dir build --output-on-failure --timeout 900 "$@"
