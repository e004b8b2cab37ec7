#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test: the ctest
# suite of the release build, then the sanitizer runs (scripts/sanitizers.sh: the whole
# suite under ASan+UBSan with bounded fuzzing, the end-to-end suites under TSan).
#   bash scripts/test.sh [ctest options]      ctest options apply to the first part only
#   TUNNEL_SANITIZERS=0 bash scripts/test.sh  the first part only (a quicker local run)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# One connection uses two descriptors on each binary; the suite opens a few hundred at once.
ulimit -n 20000 2>/dev/null || true
ctest --test-dir build --output-on-failure --timeout 900 "$@"
if [ "${TUNNEL_SANITIZERS:-1}" != 0 ]; then
  bash scripts/sanitizers.sh
fi
