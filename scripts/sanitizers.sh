#!/usr/bin/env bash
# The sanitizer runs (scripts/test.sh, the README's test command, runs this after the ctest
# suite). Idempotent; reuses its build dirs.
#   build-asan/  clang, AddressSanitizer + UndefinedBehaviorSanitizer and the libFuzzer
#                targets: the whole ctest suite, each fuzz target fuzzed for a few seconds.
#   build-tsan/  clang, ThreadSanitizer: the unit tests and the end-to-end suites, every
#                tunnel with four worker threads.
# Every sanitizer report of every process (the tunnels the end-to-end tests start too) goes
# to <build dir>/sanitizer-reports/; any report fails the run, even when the tests passed.
# Usage: bash scripts/sanitizers.sh [asan|tsan]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
bash scripts/install-deps.sh --sanitizers
# One connection uses two descriptors on each binary; the suite opens a few hundred at once.
ulimit -n 20000 2>/dev/null || true

# -O1 and line tables only: a third faster to compile than -O2 -g, still readable stack
# traces; a Debug build, so assert() checks too.
# A build dir configured with another compiler is started afresh (CMake cannot switch).
# The steps run under `||`, where bash ignores `set -e`: every command checks its status.
configure() {  # dir, cmake options...
  local dir=$1; shift
  if [ -f "$dir/CMakeCache.txt" ] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' "$dir/CMakeCache.txt"; then
    rm -rf "$dir"
  fi
  cmake -S . -B "$dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_CXX_FLAGS_DEBUG="-O1 -gline-tables-only" "$@" >/dev/null
}

# Runs ctest in `dir` with the sanitizers logging to files there; fails on a failed test or
# on any report.
run_tests() {  # dir, ctest options...
  local dir=$1; shift
  local reports="$ROOT/$dir/sanitizer-reports"
  rm -rf "$reports" && mkdir -p "$reports"
  local status=0
  # TUNNEL_SANITIZED: tests whose assertion is a memory bound skip (a sanitizer's own
  # shadow memory and quarantine are what they would measure).
  TUNNEL_SANITIZED=1 ASAN_OPTIONS="log_path=$reports/asan:$ASAN_OPTIONS" UBSAN_OPTIONS="log_path=$reports/ubsan:$UBSAN_OPTIONS" \
    TSAN_OPTIONS="log_path=$reports/tsan:$TSAN_OPTIONS" \
    ctest --test-dir "$dir" --output-on-failure --timeout 900 "$@" || status=$?
  if [ -n "$(ls -A "$reports")" ]; then
    echo "sanitizer reports in $dir:" >&2
    for r in "$reports"/*; do echo "==== $r" >&2; cat "$r" >&2; done
    status=1
  fi
  return $status
}

# Asio 1.22's recycling allocator frees with a different operator than it allocates with
# (a known false positive).
export ASAN_OPTIONS="alloc_dealloc_mismatch=0:detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="second_deadlock_stack=1:history_size=4:suppressions=$ROOT/tests/sanitizers/tsan.supp"

asan() {
  configure build-asan -DTUNNEL_SANITIZE=address -DTUNNEL_FUZZ=ON -DTUNNEL_FUZZ_SECONDS="${TUNNEL_FUZZ_SECONDS:-10}" || return 1
  ninja -C build-asan -j2 || return 1
  local status=0
  # Each fuzz target keeps one core busy: two at a time. Then everything else, one by one.
  run_tests build-asan -R '^fuzz_' -j2 || status=1
  # The soak's point is an hour-like run of the release build; its memory bound cannot hold
  # under a sanitizer and its workload would take most of the budget.
  run_tests build-asan -E '^(fuzz_|e2e_soak$)' || status=1
  return $status
}

tsan() {
  configure build-tsan -DTUNNEL_SANITIZE=thread || return 1
  ninja -C build-tsan -j2 tunnel-in tunnel-out tunnel-certs unit_tests || return 1  # what the tests below run
  # Four workers whatever the machine: connections must land on different threads. (The
  # TCP suite runs in auto mode, which is mux with our tunnel-out, and in raw mode.)
  TUNNEL_THREADS=4 run_tests build-tsan -E '^(fuzz_|quickstart|e2e_tcp_mux|e2e_soak)'
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(asan tsan)
failed=0
for step in "${steps[@]}"; do
  case "$step" in
    asan|tsan) SECONDS=0; "$step" || failed=1; echo "$step: ${SECONDS}s" ;;
    *) echo "unknown step $step (asan or tsan)" >&2; exit 2 ;;
  esac
done
exit $failed
