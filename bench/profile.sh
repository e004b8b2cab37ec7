#!/usr/bin/env bash
# Where the time goes outside crypto: bulk transfer and a new connection per request,
# profiled in tunnel-in and tunnel-out, in raw mode (default) or mux mode.
#
#   bash bench/profile.sh [--bin DIR] [--out DIR] [--mode raw|mux] [--only bulk|cpr]
#
# Uses perf's hardware counters if `perf stat -e instructions true` works; otherwise
# valgrind's callgrind (instruction counts, user space only) and, where `perf record -e
# cpu-clock` works, a sampled profile as well (real time, kernel included).
# Writes DIR/profile.md (function-level percentages) plus the raw profiles.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
BIN_SRC="$ROOT/build/bin"
OUT=""
PROFILE_MODE=raw
CASES=(bulk cpr)
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN_SRC="$(cd "$2" && pwd)"; shift ;;
    --out) OUT="$2"; shift ;;
    --mode) case "$2" in raw|mux) PROFILE_MODE="$2" ;; *) echo "profile.sh: --mode raw or mux" >&2; exit 2 ;; esac; shift ;;
    --only) case "$2" in bulk|cpr) CASES=("$2") ;; *) echo "profile.sh: --only bulk or cpr" >&2; exit 2 ;; esac; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-$BENCH_DIR/results/profile-$(date +%Y-%m-%d_%H%M%S)}"
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d /tmp/tunnel-profile.XXXXXX)"
mkdir -p "$WORK/bin" "$OUT/logs"
ulimit -n 20000 2>/dev/null || true
for t in valgrind iperf3 redis-server redis-benchmark; do
  command -v "$t" >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind iperf3 redis-server redis-tools >/dev/null; break; }
done

PIDS=()
start() { local name="$1"; shift; "$@" >>"$OUT/logs/$name.log" 2>&1 & LAST_PID=$!; PIDS+=("$LAST_PID"); }
stop() {
  local p i
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do
    i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
}
cleanup() { local rc=$?; trap - EXIT; [ ${#PIDS[@]} -gt 0 ] && stop "${PIDS[@]}"; rm -rf "$WORK"; exit $rc; }
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
NEXT_PORT=$((20000 + (RANDOM % 500) * 20 + 10))
port() { while :; do NEXT_PORT=$((NEXT_PORT + 1)); ss -Htuan "sport = :$NEXT_PORT" | grep -q . || { PORT=$NEXT_PORT; return; }; done; }
wait_listen() { local i=0; while [ $i -lt 600 ]; do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }

# Snapshot complete binaries (others may be relinking build/bin).
for i in $(seq 1 60); do
  cp "$BIN_SRC"/tunnel-in "$BIN_SRC"/tunnel-out "$BIN_SRC"/tunnel-certs "$WORK/bin/" 2>/dev/null \
    && "$WORK/bin/tunnel-in" --version >/dev/null 2>&1 && "$WORK/bin/tunnel-out" --version >/dev/null 2>&1 && break
  sleep 3
done
B="$WORK/bin"
"$B/tunnel-certs" init --dir "$WORK/pki" >/dev/null
PKI="$WORK/pki"
MODE=(--mode "$PROFILE_MODE")
COMMON=(--log-level warn --shutdown-timeout 1s --handshake-timeout 60s --connect-timeout 60s)

HW=0
perf stat -e instructions true >/dev/null 2>&1 && ! perf stat -e instructions true 2>&1 | grep -q 'not supported' && HW=1
SAMPLED=0
perf record -e cpu-clock -o "$WORK/probe.data" true >/dev/null 2>&1 && SAMPLED=1

# run_case NAME BACKEND_KIND TOOL : TOOL = callgrind | perf
run_case() {
  local name="$1" kind="$2" tool="$3" bport p_out p_in po pi bpid wrap_in=() wrap_out=()
  port; bport=$PORT; port; p_out=$PORT; port; p_in=$PORT
  if [ "$kind" = bulk ]; then start "iperf3-$name-$tool" iperf3 -s -B 127.0.0.1 -p "$bport"; else
    start "redis-$name-$tool" redis-server --port "$bport" --bind 127.0.0.1 --save '' --appendonly no; fi
  bpid=$LAST_PID; wait_listen "$bport"
  if [ "$tool" = callgrind ]; then
    wrap_out=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$name.tunnel-out" --separate-threads=no)
    wrap_in=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$name.tunnel-in" --separate-threads=no)
  fi
  start "tunnel-out-$name-$tool" "${wrap_out[@]}" "$B/tunnel-out" --listen "127.0.0.1:$p_out" --target "127.0.0.1:$bport" \
    --cert "$PKI/server.crt" --key "$PKI/server.key" --ca "$PKI/ca.crt" --allow-cn tunnel-in "${COMMON[@]}"; po=$LAST_PID
  wait_listen "$p_out"
  start "tunnel-in-$name-$tool" "${wrap_in[@]}" "$B/tunnel-in" --listen "127.0.0.1:$p_in" --connect "127.0.0.1:$p_out" \
    --cert "$PKI/client.crt" --key "$PKI/client.key" --ca "$PKI/ca.crt" "${MODE[@]}" "${COMMON[@]}"; pi=$LAST_PID
  wait_listen "$p_in"
  local perf_pids=()
  if [ "$tool" = perf ]; then
    perf record -e cpu-clock -F 2000 -g -o "$OUT/perf.$name.tunnel-in.data" -p "$pi" >>"$OUT/logs/perf.log" 2>&1 & perf_pids+=($!)
    perf record -e cpu-clock -F 2000 -g -o "$OUT/perf.$name.tunnel-out.data" -p "$po" >>"$OUT/logs/perf.log" 2>&1 & perf_pids+=($!)
    PIDS+=("${perf_pids[@]}")
    sleep 1
  fi
  say "$tool: $name"
  if [ "$kind" = bulk ]; then
    if [ "$tool" = callgrind ]; then timeout 600 iperf3 -c 127.0.0.1 -p "$p_in" -n 48M >"$OUT/logs/load-$name-$tool.log" 2>&1 || true
    else timeout 60 iperf3 -c 127.0.0.1 -p "$p_in" -t 8 >"$OUT/logs/load-$name-$tool.log" 2>&1 || true; fi
  else
    if [ "$tool" = callgrind ]; then timeout 600 redis-benchmark -p "$p_in" -t ping_mbulk -n 60 -c 4 -k 0 --csv >"$OUT/logs/load-$name-$tool.log" 2>&1 || true
    else timeout 60 redis-benchmark -p "$p_in" -t ping_mbulk -n 1500 -c 10 -k 0 --csv >"$OUT/logs/load-$name-$tool.log" 2>&1 || true; fi
  fi
  [ ${#perf_pids[@]} -gt 0 ] && { kill -INT "${perf_pids[@]}" 2>/dev/null || true; for p in "${perf_pids[@]}"; do wait "$p" 2>/dev/null || true; done; }
  stop "$pi" "$po" "$bpid"
}

{
  echo "# Profile of $PROFILE_MODE mode (tunnel-in → tunnel-out), $(date -Is)"
  echo
  echo "- binaries: $("$B/tunnel-in" --version 2>&1 | head -1), from $BIN_SRC (mtime $(stat -c %y "$BIN_SRC/tunnel-in" | cut -d. -f1))"
  echo "- perf hardware counters: $([ $HW = 1 ] && echo yes || echo 'no (perf stat -e instructions: not supported)'); sampled cpu-clock: $([ $SAMPLED = 1 ] && echo yes || echo no)"
  echo "- loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} > "$OUT/profile.md"

if [ $HW = 1 ]; then TOOLS=(perf); else TOOLS=(callgrind); [ $SAMPLED = 1 ] && TOOLS+=(perf); fi
for tool in "${TOOLS[@]}"; do
  for c in "${CASES[@]}"; do
    if [ "$c" = bulk ]; then run_case bulk bulk "$tool"; else run_case cpr redis "$tool"; fi
  done
done
python3 "$BENCH_DIR/profile_report.py" "$OUT" >> "$OUT/profile.md"
cat "$OUT/profile.md"
