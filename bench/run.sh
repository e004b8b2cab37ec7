#!/usr/bin/env bash
# Issue 8's benchmark: direct vs stunnel vs tunnel-in/tunnel-out (raw, mux) on loopback.
#
#   bash bench/run.sh [--quick] [--reps N] [--bin DIR] [--build] [--no-install] [--only LIST] [--out DIR]
#
# See bench/README.md for what every figure means. Results: bench/results/<date>/.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"

QUICK=0
REPS=""
BIN_SRC="$ROOT/build/bin"
DO_BUILD=0
DO_INSTALL=1
ONLY="ceiling,bulk,redis,memory,udp,wan"
OUT=""
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --reps) REPS="$2"; shift ;;
    --bin) BIN_SRC="$(cd "$2" && pwd)"; shift ;;
    --build) DO_BUILD=1 ;;
    --no-install) DO_INSTALL=0 ;;
    --only) ONLY="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) usage 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  : "${REPS:=1}"
  BULK_SECS=2; BULK_OMIT=0
  RR_SECS=2                   # measured seconds of one request/response run
  MEM_COUNTS="1000"
  UDP_RATES="10000 30000"; UDP_SECS=2
  CEIL_SECS=0.5
  WAN_SECS=3
else
  : "${REPS:=3}"
  BULK_SECS=3; BULK_OMIT=0
  RR_SECS=3
  MEM_COUNTS="1000 5000"
  UDP_RATES="10000 30000 60000"; UDP_SECS=3
  CEIL_SECS=1
  WAN_SECS=5
fi
UDP_SIZE=512
WAN_ONE_WAY_MS=25  # the long path: a 50 ms round trip (tests/e2e/delay_line.py)
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------- where things go
STAMP="$(date +%Y-%m-%d_%H%M%S)"
OUT="${OUT:-$BENCH_DIR/results/$STAMP}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d /tmp/tunnel-bench.XXXXXX)"
LOGS="$OUT/logs"
mkdir -p "$LOGS" "$WORK/bin"
RESULTS="$OUT/results.tsv"
printf 'test\tvariant\trep\tmetric\tvalue\n' > "$RESULTS"
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RESULTS"; }
note() { printf '%s\n' "$*" >> "$OUT/notes.txt"; say "note: $*"; }

# ---------------------------------------------------------------- processes
PIDS=()
declare -A PID_NAME  # what each started process is, for notes about it after it has gone
declare -A STOPPED   # processes stop() has already dealt with
LAST_PID=""
start() {  # start NAME CMD... : background, logs to $LOGS/NAME.log, pid in LAST_PID
  local name="$1"; shift
  "$@" >>"$LOGS/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  PID_NAME[$LAST_PID]="$name"
}
stop() {  # stop PID... : TERM, then KILL after 5 s; only our own pids. One that dies of
          # another signal on its way out (a crash at shutdown) is noted.
  local p rc
  local -A name=()
  local todo=()
  for p in "$@"; do  # each once: bash keeps a reaped child's status, and would report it again
    [ -n "$p" ] && [ -z "${STOPPED[$p]:-}" ] && todo+=("$p") && STOPPED[$p]=1
  done
  set -- ${todo[@]+"${todo[@]}"}
  for p in "$@"; do
    [ -n "$p" ] || continue
    name[$p]=${PID_NAME[$p]:-$(cat "/proc/$p/comm" 2>/dev/null || echo "pid $p")}
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "$@"; do
    [ -n "$p" ] || continue
    local i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$p" 2>/dev/null || true
    rc=0; wait "$p" 2>/dev/null || rc=$?
    if [ "$rc" -gt 128 ] && [ "$rc" -ne 143 ] && [ "$rc" -ne 137 ]; then
      note "${name[$p]} ended by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?')) when told to stop${STOP_CONTEXT:+ ($STOP_CONTEXT)}"
    fi
  done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${LG_PID:-}" ]; then kill -TERM "$LG_PID" 2>/dev/null || true; fi
  if [ ${#PIDS[@]} -gt 0 ]; then stop "${PIDS[@]}"; fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NEXT_PORT=$((20000 + (RANDOM % 500) * 20))
port() {  # next free high port below the ephemeral range (32768+), in PORT
  while :; do
    NEXT_PORT=$((NEXT_PORT + 1))
    [ $NEXT_PORT -lt 32000 ] || NEXT_PORT=20001
    if ! ss -Htuan "sport = :$NEXT_PORT" 2>/dev/null | grep -q .; then PORT=$NEXT_PORT; return; fi
  done
}
wait_listen() {  # wait_listen PORT [tcp|udp] : up to 10 s
  local p="$1" proto="${2:-tcp}" i=0 flag=-Hltn
  [ "$proto" = udp ] && flag=-Hlun
  while [ $i -lt 100 ]; do
    ss $flag "sport = :$p" 2>/dev/null | grep -q . && return 0
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

# ---------------------------------------------------------------- tools
install_tools() {
  local need=()
  command -v stunnel >/dev/null || need+=(stunnel4)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-benchmark >/dev/null || need+=(redis-tools)
  command -v iperf3 >/dev/null || need+=(iperf3)
  command -v socat >/dev/null || need+=(socat)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v gcc >/dev/null || need+=(gcc)
  command -v g++ >/dev/null || need+=(g++)
  command -v python3 >/dev/null || need+=(python3)
  command -v ss >/dev/null || need+=(iproute2)
  command -v valgrind >/dev/null || need+=(valgrind)
  [ -f /usr/include/mbedtls/ssl.h ] || need+=(libmbedtls-dev)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing: ${need[*]}"
    if [[ " ${need[*]} " == *" libmbedtls-dev "* ]]; then bash "$ROOT/scripts/install-deps.sh"; fi
    export DEBIAN_FRONTEND=noninteractive
    local SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
      || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
  fi
}
[ "$DO_INSTALL" = 1 ] && install_tools
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
say "open-file limit $(ulimit -n); work dir $WORK; results $OUT"

# ---------------------------------------------------------------- binaries (snapshotted)
# Others rebuild build/bin while this runs: copy the binaries once they are complete and
# have not changed for 3 s, and run only the copies.
if [ "$DO_BUILD" = 1 ] || [ ! -x "$BIN_SRC/tunnel-in" ]; then
  if [ "$BIN_SRC" = "$ROOT/build/bin" ]; then say "building (scripts/build.sh)"; bash "$ROOT/scripts/build.sh" >"$LOGS/build.log" 2>&1 || say "build failed (see logs/build.log); using what is in build/bin"; fi
fi
snapshot() {
  local i=0 sig1 sig2
  while [ $i -lt 120 ]; do
    sig1="$(stat -c '%s %Y' "$BIN_SRC"/tunnel-in "$BIN_SRC"/tunnel-out "$BIN_SRC"/tunnel-certs 2>/dev/null || true)"
    sleep 3
    sig2="$(stat -c '%s %Y' "$BIN_SRC"/tunnel-in "$BIN_SRC"/tunnel-out "$BIN_SRC"/tunnel-certs 2>/dev/null || true)"
    if [ -n "$sig1" ] && [ "$sig1" = "$sig2" ] && [ "$(echo "$sig1" | wc -l)" = 3 ]; then
      cp "$BIN_SRC"/tunnel-in "$BIN_SRC"/tunnel-out "$BIN_SRC"/tunnel-certs "$WORK/bin/"
      if "$WORK/bin/tunnel-in" --version >/dev/null 2>&1 && "$WORK/bin/tunnel-out" --version >/dev/null 2>&1 \
         && "$WORK/bin/tunnel-certs" --help >/dev/null 2>&1; then
        return 0
      fi
    fi
    i=$((i + 1)); [ $((i % 5)) = 0 ] && say "waiting for complete binaries in $BIN_SRC ..."
  done
  echo "run.sh: no complete tunnel-in/tunnel-out/tunnel-certs in $BIN_SRC" >&2; exit 2
}
snapshot
B="$WORK/bin"
say "binaries: $("$B/tunnel-in" --version 2>&1 | head -1) (from $BIN_SRC, mtime $(stat -c %y "$BIN_SRC/tunnel-in" | cut -d. -f1))"
gcc -O2 -Wall -pthread "$BENCH_DIR/loadgen.c" -o "$B/loadgen"
g++ -O2 -std=c++20 "$BENCH_DIR/ceiling.cpp" -o "$B/bench_ceiling" -lmbedtls -lmbedx509 -lmbedcrypto

PKI="$WORK/pki"
"$B/tunnel-certs" init --dir "$PKI" >/dev/null
SRV_CRED=(--cert "$PKI/server.crt" --key "$PKI/server.key" --ca "$PKI/ca.crt" --allow-cn tunnel-in)
CLI_CRED=(--cert "$PKI/client.crt" --key "$PKI/client.key" --ca "$PKI/ca.crt")
# Our pair at its best: no per-connection info lines (stunnel runs with debug = err).
OURS_COMMON=(--log-level warn)

HELP_IN="$("$B/tunnel-in" --help 2>&1 || true)"
HAVE_MUX=0; grep -q -- '--mode' <<<"$HELP_IN" && grep -q 'mux' <<<"$HELP_IN" && HAVE_MUX=1
HAVE_UDP=0; grep -q -- '--udp' <<<"$HELP_IN" && HAVE_UDP=1
HAVE_UDP_MUX=0
# UDP over mux: flows as datagram frames in TLS connections (--udp-over-tls on both sides).
if [ $HAVE_MUX = 1 ] && [ $HAVE_UDP = 1 ] && "$B/tunnel-in" --udp --udp-over-tls --listen 127.0.0.1:1 --connect 127.0.0.1:2 \
     "${CLI_CRED[@]}" --check-config >/dev/null 2>&1; then HAVE_UDP_MUX=1; fi
say "features: mux=$HAVE_MUX udp=$HAVE_UDP udp+mux=$HAVE_UDP_MUX"
[ $HAVE_MUX = 1 ] || note "mux mode not available in these binaries (tunnel-in --help has no --mode mux)"
[ $HAVE_UDP = 1 ] || note "UDP mode not available in these binaries (tunnel-in --help has no --udp)"

VARIANTS=(direct stunnel raw)
[ $HAVE_MUX = 1 ] && VARIANTS+=(mux)
# The request/response tests also run our pair with --busy-poll (each end's workers look for
# work for BUSY_POLL_US before sleeping): the latency it buys, and what it costs under load.
BUSY_POLL_US=${BUSY_POLL_US:-50}
REDIS_VARIANTS=("${VARIANTS[@]}")
if grep -q -- '--busy-poll' <<<"$HELP_IN"; then
  REDIS_VARIANTS+=(raw-bp); [ $HAVE_MUX = 1 ] && REDIS_VARIANTS+=(mux-bp)
else
  note "--busy-poll not available in these binaries: the request/response tests run without it"
fi

# ---------------------------------------------------------------- machine description
{
  echo "# Machine and software"
  echo "date: $(date -Is)"
  echo "host: $(uname -n)"
  echo "kernel: $(uname -srvmo)"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "nproc: $(nproc)"
  echo "memory: $(free -m | awk '/^Mem:/{print $2" MiB"}')"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tunnel-in: $("$B/tunnel-in" --version 2>&1 | head -1)"
  echo "tunnel-out: $("$B/tunnel-out" --version 2>&1 | head -1)"
  echo "tunnel binaries from: $BIN_SRC (tunnel-in mtime $(stat -c %y "$BIN_SRC/tunnel-in"))"
  echo "git HEAD: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a) ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) files differ from HEAD)"
  echo "mbedtls: $(dpkg-query -W -f '${Version}' libmbedtls-dev 2>/dev/null)"
  echo "stunnel: $(stunnel -version 2>&1 | grep -m1 '^stunnel') / $(stunnel -version 2>&1 | grep -m1 'Running')"
  echo "redis: $(redis-server --version)"
  echo "redis-benchmark: $(redis-benchmark --version 2>&1 | head -1)"
  echo "iperf3: $(iperf3 --version | head -1)"
  echo "socat: $(socat -V | grep -m1 'socat version')"
  echo "haproxy: $(haproxy -v 2>/dev/null | head -1 || echo none)"
  echo "features: mux=$HAVE_MUX udp=$HAVE_UDP udp+mux=$HAVE_UDP_MUX"
  echo "options: quick=$QUICK reps=$REPS only=$ONLY busy_poll_us=$BUSY_POLL_US"
  echo
  echo '## lscpu'
  lscpu
} > "$OUT/machine.md"

# ---------------------------------------------------------------- stacks
# A stack = every variant in front of one TCP backend port; sets STACK_PORT[variant] and
# STACK_PIDS[variant] (the processes whose memory counts: client side then server side).
declare -A STACK_PORT STACK_PIDS STACK_LINE
# With PATH_ONE_WAY_MS set, start_variant puts a delay line (a long network path) between
# the two ends, or in front of the backend for direct.
PATH_ONE_WAY_MS=""
via_line() {  # via_line TARGET_PORT TAG : starts a delay line to it; its port in LINE_PORT, pid in LINE_PID
  local log="$LOGS/delay-line-$2.log" i=0
  start "delay-line-$2" python3 "$ROOT/tests/e2e/delay_line.py" "$1" "$PATH_ONE_WAY_MS"; LINE_PID=$LAST_PID
  LINE_PORT=""
  while [ -z "$LINE_PORT" ] && [ $i -lt 100 ]; do sleep 0.1; LINE_PORT=$(head -1 "$log" 2>/dev/null | grep -E '^[0-9]+$' || true); i=$((i + 1)); done
  [ -n "$LINE_PORT" ]
}
stunnel_conf() {  # stunnel_conf FILE server|client ACCEPT CONNECT
  local f="$1" role="$2" acc="$3" con="$4"
  {
    echo "foreground = yes"
    echo "pid ="
    echo "syslog = no"
    echo "debug = err"
    echo "output = $LOGS/stunnel-$role-$acc.log"
    echo "[$role]"
    [ "$role" = client ] && echo "client = yes"
    echo "accept = 127.0.0.1:$acc"
    echo "connect = 127.0.0.1:$con"
    if [ "$role" = client ]; then
      echo "cert = $PKI/client.crt"; echo "key = $PKI/client.key"; echo "checkHost = localhost"
    else
      echo "cert = $PKI/server.crt"; echo "key = $PKI/server.key"
    fi
    echo "CAfile = $PKI/ca.crt"
    echo "verify = 2"
    echo "sslVersionMin = TLSv1.3"
    echo "sslVersionMax = TLSv1.3"
    echo "socket = l:TCP_NODELAY=1"
    echo "socket = r:TCP_NODELAY=1"
  } > "$f"
}
start_variant() {  # start_variant VARIANT BACKEND_PORT TAG : sets STACK_PORT/STACK_PIDS; returns 1 on failure
  local v="$1" backend="$2" tag="$3" p_in p_out pi po hop
  STACK_LINE[$v]=""
  case "$v" in
    direct)
      STACK_PORT[$v]=$backend; STACK_PIDS[$v]=""
      if [ -n "$PATH_ONE_WAY_MS" ]; then via_line "$backend" "$v-$tag" || return 1; STACK_PORT[$v]=$LINE_PORT; STACK_LINE[$v]=$LINE_PID; fi ;;
    stunnel)
      port; p_out=$PORT; port; p_in=$PORT; hop=$p_out
      if [ -n "$PATH_ONE_WAY_MS" ]; then via_line "$p_out" "$v-$tag" || return 1; hop=$LINE_PORT; STACK_LINE[$v]=$LINE_PID; fi
      stunnel_conf "$WORK/st-srv-$tag.conf" server "$p_out" "$backend"
      stunnel_conf "$WORK/st-cli-$tag.conf" client "$p_in" "$hop"
      start "stunnel-server-$tag" stunnel "$WORK/st-srv-$tag.conf"; po=$LAST_PID
      start "stunnel-client-$tag" stunnel "$WORK/st-cli-$tag.conf"; pi=$LAST_PID
      STACK_PORT[$v]=$p_in; STACK_PIDS[$v]="$pi $po"
      wait_listen "$p_out" && wait_listen "$p_in" || return 1 ;;
    relay)  # the latency floor: two plain forwarders (socat, no TLS) in the same places
      port; p_out=$PORT; port; p_in=$PORT
      start "relay-server-$tag" socat "TCP-LISTEN:$p_out,bind=127.0.0.1,reuseaddr,fork,nodelay" "TCP:127.0.0.1:$backend,nodelay"; po=$LAST_PID
      start "relay-client-$tag" socat "TCP-LISTEN:$p_in,bind=127.0.0.1,reuseaddr,fork,nodelay" "TCP:127.0.0.1:$p_out,nodelay"; pi=$LAST_PID
      STACK_PORT[$v]=$p_in; STACK_PIDS[$v]="$pi $po"
      wait_listen "$p_out" && wait_listen "$p_in" || return 1 ;;
    hop)  # the -k 0 floor: one plain relay (haproxy, no TLS) between client and server
      port; p_in=$PORT
      printf '%s\n' global "  maxconn 5000" "  nbthread $(nproc)" defaults "  mode tcp" "  timeout connect 5s" \
        "  timeout client 60s" "  timeout server 60s" "listen hop" "  bind 127.0.0.1:$p_in" \
        "  server backend 127.0.0.1:$backend" > "$WORK/haproxy-$tag.cfg"
      start "hop-$tag" haproxy -db -f "$WORK/haproxy-$tag.cfg"; pi=$LAST_PID
      STACK_PORT[$v]=$p_in; STACK_PIDS[$v]="$pi"
      wait_listen "$p_in" || return 1 ;;
    raw|mux|raw-bp|mux-bp)  # -bp: with --busy-poll on both ends
      port; p_out=$PORT; port; p_in=$PORT
      local extra=(); [ "${v%-bp}" != "$v" ] && extra=(--busy-poll "$BUSY_POLL_US")
      start "tunnel-out-$v-$tag" "$B/tunnel-out" --listen "127.0.0.1:$p_out" --target "127.0.0.1:$backend" \
        "${SRV_CRED[@]}" "${OURS_COMMON[@]}" "${extra[@]}"; po=$LAST_PID
      wait_listen "$p_out" || return 1
      hop=$p_out
      if [ -n "$PATH_ONE_WAY_MS" ]; then via_line "$p_out" "$v-$tag" || return 1; hop=$LINE_PORT; STACK_LINE[$v]=$LINE_PID; fi
      local mode=(); [ $HAVE_MUX = 1 ] && mode=(--mode "${v%-bp}")
      start "tunnel-in-$v-$tag" "$B/tunnel-in" --listen "127.0.0.1:$p_in" --connect "127.0.0.1:$hop" \
        "${CLI_CRED[@]}" "${OURS_COMMON[@]}" "${mode[@]}" "${extra[@]}"; pi=$LAST_PID
      STACK_PORT[$v]=$p_in; STACK_PIDS[$v]="$pi $po"
      wait_listen "$p_in" || return 1 ;;
  esac
  return 0
}
stop_variant() {
  local v="$1"
  [ -n "${STACK_PIDS[$v]:-}" ] && stop ${STACK_PIDS[$v]}
  [ -n "${STACK_LINE[$v]:-}" ] && stop ${STACK_LINE[$v]}
  STACK_PIDS[$v]=""; STACK_LINE[$v]=""
}

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
threads_of() { awk '/^Threads:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print ""; exit} if(NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
rotate() {  # rotate REP ITEMS... : the items starting at REP mod N (spreads drift over variants)
  local r="$1"; shift; local a=("$@") n=$# i
  for ((i = 0; i < n; i++)); do printf '%s ' "${a[$(((i + r) % n))]}"; done
}
loadavg() { cut -d' ' -f1 /proc/loadavg; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }  # utime + stime
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- 6. ceiling
if want ceiling; then
  say "ceiling: mbedTLS AEAD and handshake CPU on one core"
  for ((rep = 1; rep <= REPS; rep++)); do
    "$B/bench_ceiling" "$PKI" "$CEIL_SECS" > "$WORK/ceiling.txt" 2>>"$LOGS/ceiling.log" || { note "bench_ceiling failed"; break; }
    while read -r k v; do
      [ "$k" = mbedtls_version ] && continue
      record ceiling mbedtls "$rep" "$k" "$v"
    done < "$WORK/ceiling.txt"
  done
fi

# ---------------------------------------------------------------- 1. bulk (iperf3)
if want bulk; then
  port; IPERF_PORT=$PORT
  start iperf3-server iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"; IPERF_PID=$LAST_PID
  wait_listen "$IPERF_PORT" || { note "iperf3 server did not start"; }
  declare -A BULK_OK
  for v in "${VARIANTS[@]}"; do
    BULK_OK[$v]=0
    if start_variant "$v" "$IPERF_PORT" bulk \
       && timeout 20 iperf3 -c 127.0.0.1 -p "${STACK_PORT[$v]}" -n 1M >/dev/null 2>>"$LOGS/iperf3-client.log"; then
      BULK_OK[$v]=1
    else
      note "bulk: $v failed its sanity transfer; not measured"
      record bulk "$v" 0 failed 1
    fi
  done
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in $(rotate "$rep" "${VARIANTS[@]}"); do
      [ "${BULK_OK[$v]}" = 1 ] || continue
      for par in 1 8; do
        say "bulk rep $rep $v x$par (load $(loadavg))"
        read -r pi po <<<"${STACK_PIDS[$v]:-} "
        ci0=0; co0=0; [ -n "${pi:-}" ] && ci0=$(cpu_ticks "$pi") && co0=$(cpu_ticks "$po")
        if timeout $((BULK_SECS + BULK_OMIT + 30)) iperf3 -c 127.0.0.1 -p "${STACK_PORT[$v]}" -t "$BULK_SECS" -O "$BULK_OMIT" \
             -P "$par" -J > "$WORK/iperf.json" 2>>"$LOGS/iperf3-client.log"; then
          bps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_received"]["bits_per_second"])' "$WORK/iperf.json" 2>/dev/null || echo "")
          bytes=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_received"]["bytes"])' "$WORK/iperf.json" 2>/dev/null || echo "")
          if [ -n "$bps" ]; then record bulk "$v" "$rep" "bulk_${par}_bps" "$bps"; else record bulk "$v" "$rep" "bulk_${par}_failed" 1; fi
          if [ -n "${pi:-}" ] && [ -n "$bytes" ]; then
            # CPU seconds each tunnel end spent on this run: bytes per CPU-second of the busier
            # end is what the tunnel would carry with a core to itself (load-independent).
            ci=$(python3 -c "print(($(cpu_ticks "$pi") - $ci0) / $CLK_TCK)"); co=$(python3 -c "print(($(cpu_ticks "$po") - $co0) / $CLK_TCK)")
            record bulk "$v" "$rep" "bulk_${par}_cpu_in_s" "$ci"; record bulk "$v" "$rep" "bulk_${par}_cpu_out_s" "$co"
            python3 -c "import sys; b,ci,co=map(float,sys.argv[1:]); m=max(ci,co); print(b/m if m>0 else '')" "$bytes" "$ci" "$co" \
              | { read -r x; [ -n "$x" ] && record bulk "$v" "$rep" "bulk_${par}_Bps_per_cpu" "$x" || true; }
          fi
        else
          record bulk "$v" "$rep" "bulk_${par}_failed" 1
          say "bulk $v x$par failed"
        fi
      done
    done
  done
  for v in "${VARIANTS[@]}"; do stop_variant "$v"; done
  stop "$IPERF_PID"
fi

# ---------------------------------------------------------------- 2./3. redis request/response
# 2: our closed-loop client (loadgen rr) times PINGs after every connection is up and a
#    warm-up has passed, so TLS handshakes do not pollute the steady-state percentiles.
# 3: redis-benchmark -k 0 (a new connection for every request), sized by a short probe.
# redis-benchmark --csv: "test","rps","avg_ms","min_ms","p50_ms","p95_ms","p99_ms","max_ms"
rb() {  # rb PORT N CLIENTS KEEPALIVE TIMEOUT -> prints the csv line or nothing
  timeout "$5" redis-benchmark -h 127.0.0.1 -p "$1" -t ping_mbulk -n "$2" -c "$3" -k "$4" --csv 2>>"$LOGS/redis-benchmark.log" \
    | tr -d '"' | awk -F, '$1=="PING_MBULK"{print}' | tail -1
}
cpr() {  # cpr VARIANT REP : one connection-per-request run (-k 0, 10 clients), recorded
  local v="$1" rep="$2" n=${CPR_N[$1]:-0} line rps avg mn p50 p95 p99 mx
  [ "$n" = 0 ] && return 0
  say "cpr rep $rep $v n=$n c=10 -k 0 (load $(loadavg))"
  # CPU the relay processes (both tunnel ends, stunnel's two, the hop's one) spend per
  # request: what the rate would follow with cores to spare (load-independent).
  local pids=(${STACK_PIDS[$v]:-}) p t0=0 t1=0
  for p in "${pids[@]}"; do t0=$((t0 + $(cpu_ticks "$p"))); done
  line=$(rb "${STACK_PORT[$v]}" "$n" 10 0 $((60 + 8 * ${RR_SECS%.*})))
  if [ -z "$line" ]; then record cpr "$v" "$rep" failed 1; say "cpr $v failed"; return 0; fi
  for p in "${pids[@]}"; do t1=$((t1 + $(cpu_ticks "$p"))); done
  IFS=, read -r _ rps avg mn p50 p95 p99 mx <<<"$line"
  record cpr "$v" "$rep" rps "$rps"
  [ ${#pids[@]} -gt 0 ] && record cpr "$v" "$rep" cpu_us_per_req "$(python3 -c "print(($t1 - $t0) / $CLK_TCK * 1e6 / $n)")"
  record cpr "$v" "$rep" p50_ms "$p50"
  record cpr "$v" "$rep" p99_ms "$p99"
}
kv() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<" $2"; }  # kv KEY LINE
if want redis; then
  port; REDIS_PORT=$PORT
  start redis-server redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --maxclients 12000; REDIS_PID=$LAST_PID
  wait_listen "$REDIS_PORT" || note "redis-server did not start"
  declare -A CPR_N RB_DEAD
  # What any relay that connects to the server for each connection costs at -k 0, with no
  # TLS and no second process: one plain haproxy hop, measured beside direct.
  HOP=()
  if command -v haproxy >/dev/null; then HOP=(hop); else note "redis: haproxy not installed; the -k 0 floor is not measured"; fi
  for v in "${REDIS_VARIANTS[@]}" "${HOP[@]}"; do
    RB_DEAD[$v]=0
    if ! start_variant "$v" "$REDIS_PORT" redis || [ "$(timeout 20 redis-cli -p "${STACK_PORT[$v]}" ping 2>/dev/null)" != PONG ]; then
      note "redis: $v failed its sanity PING; not measured"; RB_DEAD[$v]=1; record rr1 "$v" 0 failed 1; continue
    fi
    # Size the connection-per-request runs from a short probe so each lasts about RR_SECS.
    line=$(rb "${STACK_PORT[$v]}" 100 10 0 30)
    if [ -z "$line" ]; then
      CPR_N[$v]=0; note "redis: $v connection-per-request probe (100 requests, 10 clients, -k 0) failed or took > 30 s"
      record cpr "$v" 0 failed 1
    else
      CPR_N[$v]=$(python3 -c "import sys; print(max(200, min(200000, int(float(sys.argv[1]) * float(sys.argv[2])))))" "$(cut -d, -f2 <<<"$line")" "$RR_SECS")
    fi
  done
  # What any pair of forwarders adds to one client's latency, with no TLS at all: two more
  # processes to wake per direction. Measured with one client, beside direct.
  RELAY_OK=0
  if start_variant relay "$REDIS_PORT" redis && [ "$(timeout 20 redis-cli -p "${STACK_PORT[relay]}" ping 2>/dev/null)" = PONG ]; then
    RELAY_OK=1
  else
    note "redis: the plain relay pair (socat) failed its sanity PING; the latency floor is not measured"
  fi
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in $(rotate "$rep" "${REDIS_VARIANTS[@]}"); do
      [ "${RB_DEAD[$v]}" = 1 ] && continue
      for clients in 1 50; do
        say "rr$clients rep $rep $v (load $(loadavg))"
        line=$(timeout $((150 + ${RR_SECS%.*})) "$B/loadgen" rr "${STACK_PORT[$v]}" "$clients" 1 "$RR_SECS" 2>>"$LOGS/loadgen-rr.log" || true)
        echo "$v $line" >> "$LOGS/loadgen-rr.log"
        if [ -z "$(kv rps "$line")" ] || [ "$(kv errors "$line")" != 0 ]; then record "rr$clients" "$v" "$rep" failed 1; say "rr$clients $v failed: $line"; continue; fi
        for m in rps p50_ms p90_ms p99_ms p999_ms max_ms setup_secs; do record "rr$clients" "$v" "$rep" "$m" "$(kv $m "$line")"; done
      done
      if [ "$v" = direct ] && [ "$RELAY_OK" = 1 ]; then  # the floor, next to direct in every repetition
        say "rr1 rep $rep relay (load $(loadavg))"
        line=$(timeout $((150 + ${RR_SECS%.*})) "$B/loadgen" rr "${STACK_PORT[relay]}" 1 1 "$RR_SECS" 2>>"$LOGS/loadgen-rr.log" || true)
        echo "relay $line" >> "$LOGS/loadgen-rr.log"
        if [ -z "$(kv rps "$line")" ] || [ "$(kv errors "$line")" != 0 ]; then record rr1 relay "$rep" failed 1
        else for m in rps p50_ms p99_ms; do record rr1 relay "$rep" "$m" "$(kv $m "$line")"; done; fi
      fi
      # One client at a fixed 1,000 requests/s: latency and the tunnel ends' CPU when every
      # process on the path idles between requests (what busy polling costs and buys there).
      say "paced rep $rep $v 1000/s (load $(loadavg))"
      read -r pi po <<<"${STACK_PIDS[$v]:-} "
      ci0=0; co0=0; [ -n "${pi:-}" ] && ci0=$(cpu_ticks "$pi") && co0=$(cpu_ticks "$po")
      line=$(timeout $((60 + ${RR_SECS%.*})) python3 "$BENCH_DIR/paced.py" "${STACK_PORT[$v]}" 1000 "$RR_SECS" 2>>"$LOGS/paced.log" || true)
      echo "$v $line" >> "$LOGS/paced.log"
      if [ -z "$(kv p50_ms "$line")" ] || [ "$(kv errors "$line")" != 0 ]; then record paced "$v" "$rep" failed 1
      else
        for m in p50_ms p99_ms; do record paced "$v" "$rep" "$m" "$(kv $m "$line")"; done
        [ -n "${pi:-}" ] && record paced "$v" "$rep" cpu_pct_both \
          "$(python3 -c "print(100 * ($(cpu_ticks "$pi") - $ci0 + $(cpu_ticks "$po") - $co0) / $CLK_TCK / ${RR_SECS})")"
      fi
      cpr "$v" "$rep"
      if [ "$v" = direct ] && [ ${#HOP[@]} = 1 ] && [ "${RB_DEAD[hop]}" = 0 ]; then cpr hop "$rep"; fi  # the floor, beside direct
    done
  done
  for v in "${REDIS_VARIANTS[@]}" "${HOP[@]}" relay; do stop_variant "$v"; done
  stop "$REDIS_PID"
fi

# ---------------------------------------------------------------- 4. memory per idle connection
if want memory; then
  port; MREDIS_PORT=$PORT
  start redis-server-mem redis-server --port "$MREDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --maxclients 12000; MREDIS_PID=$LAST_PID
  wait_listen "$MREDIS_PORT" || note "redis-server (memory) did not start"
  for count in $MEM_COUNTS; do
    for v in "${VARIANTS[@]}"; do
      [ "$v" = direct ] && continue
      tag="mem$count"
      if ! start_variant "$v" "$MREDIS_PORT" "$tag" || [ "$(timeout 20 redis-cli -p "${STACK_PORT[$v]}" ping 2>/dev/null)" != PONG ]; then
        note "memory: $v failed to start"; record "mem$count" "$v" 1 failed 1; stop_variant "$v"; continue
      fi
      sleep 1
      read -r pi po <<<"${STACK_PIDS[$v]}"
      in0=$(rss_kib "$pi"); out0=$(rss_kib "$po")
      say "memory $v: $count idle connections (load $(loadavg))"
      coproc LG { exec "$B/loadgen" hold 127.0.0.1 "${STACK_PORT[$v]}" "$count" 64; }
      line=""
      read -r -t 400 line <&"${LG[0]}" || true
      ok=$(sed -n 's/.*ok=\([0-9]*\).*/\1/p' <<<"$line"); fail=$(sed -n 's/.*fail=\([0-9]*\).*/\1/p' <<<"$line")
      secs=$(sed -n 's/.*secs=\([0-9.]*\).*/\1/p' <<<"$line")
      sleep 2
      in1=$(rss_kib "$pi"); out1=$(rss_kib "$po")
      thr_in=$(threads_of "$pi"); thr_out=$(threads_of "$po")
      echo check >&"${LG[1]}"
      cline=""; read -r -t 300 cline <&"${LG[0]}" || true
      cok=$(sed -n 's/.*ok=\([0-9]*\).*/\1/p' <<<"$cline")
      lg_pid=$LG_PID
      eval "exec ${LG[1]}>&-"
      wait "$lg_pid" 2>/dev/null || true
      alive=1; kill -0 "$pi" 2>/dev/null && kill -0 "$po" 2>/dev/null || alive=0
      say "memory $v x$count: setup ok=${ok:-?} fail=${fail:-?} in ${secs:-?}s; recheck ok=${cok:-?}; rss in $in0->$in1 KiB, out $out0->$out1 KiB; threads $thr_in/$thr_out"
      record "mem$count" "$v" 1 setup_ok "${ok:-0}"
      record "mem$count" "$v" 1 setup_fail "${fail:-$count}"
      record "mem$count" "$v" 1 setup_secs "${secs:-0}"
      record "mem$count" "$v" 1 recheck_ok "${cok:-0}"
      record "mem$count" "$v" 1 processes_alive "$alive"
      record "mem$count" "$v" 1 rss_in_before_kib "$in0"
      record "mem$count" "$v" 1 rss_in_after_kib "$in1"
      record "mem$count" "$v" 1 rss_out_before_kib "$out0"
      record "mem$count" "$v" 1 rss_out_after_kib "$out1"
      record "mem$count" "$v" 1 threads_in "$thr_in"
      record "mem$count" "$v" 1 threads_out "$thr_out"
      if [ "${ok:-0}" -gt 0 ]; then
        record "mem$count" "$v" 1 kib_per_conn_in "$(python3 -c "print(($in1-$in0)/${ok})")"
        record "mem$count" "$v" 1 kib_per_conn_out "$(python3 -c "print(($out1-$out0)/${ok})")"
        record "mem$count" "$v" 1 kib_per_conn "$(python3 -c "print(($in1-$in0+$out1-$out0)/${ok})")"
      fi
      STOP_CONTEXT="$v, after holding $count connections" stop_variant "$v"
    done
  done
  stop "$MREDIS_PID"
fi

# ---------------------------------------------------------------- 5. UDP
if want udp; then
  UDP_VARIANTS=(direct socat)
  [ $HAVE_UDP = 1 ] && UDP_VARIANTS+=(raw)
  [ $HAVE_UDP_MUX = 1 ] && UDP_VARIANTS+=(mux)
  [ $HAVE_UDP = 1 ] && [ $HAVE_UDP_MUX = 0 ] && note "UDP over mux not available (tunnel-in --udp --udp-over-tls refused by --check-config)"
  port; SINK=$PORT
  port; export LOADGEN_SRC_PORT=$PORT   # one flow: socat serves a single peer
  declare -A UPORT UPIDS UDEAD
  start_udp_variant() {  # start_udp_variant VARIANT : sets UPORT/UPIDS
    local v="$1" p_in p_out pi po
    UPIDS[$v]=""
    case "$v" in
      direct) UPORT[$v]=$SINK ;;
      socat)
        # socat 1.7.4 checks the server name by looking the name up as an IPv6 address, so
        # "localhost" and "127.0.0.1" fail here; ::1 is one of the server certificate's IP SANs.
        port; p_out=$PORT; port; p_in=$PORT
        start socat-dtls-server socat -T 3600 \
          "OPENSSL-DTLS-SERVER:$p_out,bind=127.0.0.1,reuseaddr,cert=$PKI/server.crt,key=$PKI/server.key,cafile=$PKI/ca.crt,verify=1" \
          "UDP:127.0.0.1:$SINK"; po=$LAST_PID
        UPIDS[$v]="$po"
        wait_listen "$p_out" udp || return 1
        start socat-dtls-client socat -T 3600 \
          "UDP-LISTEN:$p_in,bind=127.0.0.1,reuseaddr" \
          "OPENSSL-DTLS-CLIENT:127.0.0.1:$p_out,cert=$PKI/client.crt,key=$PKI/client.key,cafile=$PKI/ca.crt,verify=1,commonname=::1"; pi=$LAST_PID
        UPORT[$v]=$p_in; UPIDS[$v]="$pi $po"
        wait_listen "$p_in" udp || return 1 ;;
      raw|mux)
        port; p_out=$PORT; port; p_in=$PORT
        # raw: DTLS; mux: datagram frames in a TLS connection to the same host:port (TCP).
        local carrier=(); [ "$v" = mux ] && carrier=(--udp-over-tls)
        start "tunnel-out-udp-$v" "$B/tunnel-out" --udp --listen "127.0.0.1:$p_out" --target "127.0.0.1:$SINK" \
          "${SRV_CRED[@]}" "${OURS_COMMON[@]}" "${carrier[@]}"; po=$LAST_PID
        UPIDS[$v]="$po"
        wait_listen "$p_out" udp || return 1
        start "tunnel-in-udp-$v" "$B/tunnel-in" --udp --listen "127.0.0.1:$p_in" --connect "127.0.0.1:$p_out" \
          "${CLI_CRED[@]}" "${OURS_COMMON[@]}" "${carrier[@]}"; pi=$LAST_PID
        UPORT[$v]=$p_in; UPIDS[$v]="$pi $po"
        wait_listen "$p_in" udp || return 1 ;;
    esac
  }
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in $(rotate "$rep" "${UDP_VARIANTS[@]}"); do
      [ "${UDEAD[$v]:-0}" = 1 ] && continue
      say "udp rep $rep $v offered $UDP_RATES/s x ${UDP_SIZE} B (load $(loadavg))"
      # Fresh processes for every run: socat ends its single session when the sink goes away.
      if ! start_udp_variant "$v"; then
        note "udp: $v did not start; marked unavailable"; UDEAD[$v]=1; record udp "$v" "$rep" unavailable 1
        [ -n "${UPIDS[$v]}" ] && stop ${UPIDS[$v]}; continue
      fi
      LOADGEN_WARMUP=10 timeout $((40 + 4 * UDP_SECS)) "$B/loadgen" udp "${UPORT[$v]}" "$SINK" "$UDP_SIZE" "$UDP_SECS" $UDP_RATES \
        > "$WORK/udp.txt" 2>>"$LOGS/loadgen-udp.log" || true
      cat "$WORK/udp.txt" >> "$LOGS/loadgen-udp.log"
      if ! grep -q 'warmup=ok' "$WORK/udp.txt"; then
        note "udp: $v carried no datagram within 10 s ($(head -1 "$WORK/udp.txt")); marked unavailable"
        UDEAD[$v]=1; record udp "$v" "$rep" unavailable 1
      fi
      while read -r line; do
        r=$(sed -n 's/.*offered_rate=\([0-9]*\).*/\1/p' <<<"$line"); [ -n "$r" ] || continue
        record udp "$v" "$rep" "rate_$r" "$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$line")"
        record udp "$v" "$rep" "loss_$r" "$(sed -n 's/.* loss=\([0-9.]*\).*/\1/p' <<<"$line")"
        record udp "$v" "$rep" "offered_$r" "$(sed -n 's/.* offered=\([0-9.]*\).*/\1/p' <<<"$line")"
      done < "$WORK/udp.txt"
      [ -n "${UPIDS[$v]}" ] && stop ${UPIDS[$v]}
      UPIDS[$v]=""
    done
  done
fi

# ---------------------------------------------------------------- 7. a long path (delay line)
# Bulk, one connection, through a delay line with a 50 ms round trip between the two ends
# (in front of iperf3 for direct): what flow control and windows allow, not CPU.
if want wan; then
  port; WAN_IPERF=$PORT
  start iperf3-wan iperf3 -s -B 127.0.0.1 -p "$WAN_IPERF"; WAN_IPERF_PID=$LAST_PID
  wait_listen "$WAN_IPERF" || note "iperf3 server (wan) did not start"
  # A fresh pair for every repetition: windows start from scratch.
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in $(rotate "$rep" "${VARIANTS[@]}"); do
      PATH_ONE_WAY_MS=$WAN_ONE_WAY_MS
      if ! start_variant "$v" "$WAN_IPERF" "wan$rep"; then
        PATH_ONE_WAY_MS=""; note "wan: $v did not start (rep $rep)"; record wan "$v" "$rep" wan_failed 1; stop_variant "$v"; continue
      fi
      PATH_ONE_WAY_MS=""
      sleep 1  # the mux pool connects through the line first
      say "wan rep $rep $v (load $(loadavg))"
      if timeout $((WAN_SECS + 30)) iperf3 -c 127.0.0.1 -p "${STACK_PORT[$v]}" -t "$WAN_SECS" -J > "$WORK/iperf.json" 2>>"$LOGS/iperf3-client.log"; then
        bps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_received"]["bits_per_second"])' "$WORK/iperf.json" 2>/dev/null || echo "")
        [ -n "$bps" ] && record wan "$v" "$rep" wan_bps "$bps" || record wan "$v" "$rep" wan_failed 1
      else
        record wan "$v" "$rep" wan_failed 1
      fi
      stop_variant "$v"
    done
  done
  stop "$WAN_IPERF_PID"
fi

echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.md"
say "report"
python3 "$BENCH_DIR/report.py" "$OUT" | tee "$OUT/summary.md"
say "results in $OUT"
