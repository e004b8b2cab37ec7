#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, then runs a real tunnel pair
# on this machine with throwaway certificates and example legacy services, shows what
# crossed, and cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# The test suite runs this script after its own install and build: TUNNEL_SKIP_SETUP=1.
if [ -z "${TUNNEL_SKIP_SETUP:-}" ]; then
  bash scripts/install-deps.sh
  bash scripts/build.sh >/dev/null
fi
BIN="${TUNNEL_BIN_DIR:-$ROOT/build/bin}"  # ctest sets it per build directory
PY=/usr/bin/python3

WORK="$(mktemp -d /tmp/tunnel-quickstart.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listening() {  # file
  for _ in $(seq 1 100); do grep -q '"msg":"listening"' "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "quickstart: a process did not start; its log:" >&2; cat "$1" >&2; exit 1
}
field() {  # file msg key -> value of key on the first line whose msg matches
  "$PY" - "$@" <<'PYEOF'
import json, sys
path, msg, key = sys.argv[1:4]
for line in open(path):
    try:
        obj = json.loads(line)
    except ValueError:
        continue
    if obj.get("msg") == msg and key in obj:
        print(obj[key]); break
PYEOF
}

echo "== 1. a throwaway private CA, a server and a client certificate (tunnel-certs)"
"$BIN/tunnel-certs" init --dir "$WORK/pki" --client-cn plant-poller | sed 's/^/   /'

echo "== 2. the legacy service: plaintext TCP on 127.0.0.1 (examples/legacy/tcp_service.py)"
TCP_SVC=$(free_port)
"$PY" examples/legacy/tcp_service.py 127.0.0.1 "$TCP_SVC" & PIDS+=($!)

echo "== 3. tunnel-out in front of it (TLS 1.3, client certificates required, allow-list CN=plant-poller)"
OUT_PORT=$(free_port)
"$BIN/tunnel-out" --listen "127.0.0.1:$OUT_PORT" --target "127.0.0.1:$TCP_SVC" \
  --cert "$WORK/pki/server.crt" --key "$WORK/pki/server.key" --ca "$WORK/pki/ca.crt" \
  --allow-cn plant-poller --log-format json 2>"$WORK/out.log" & PIDS+=($!)
wait_listening "$WORK/out.log"

echo "== 4. tunnel-in beside the legacy client (plaintext in, TLS out)"
IN_PORT=$(free_port)
"$BIN/tunnel-in" --listen "127.0.0.1:$IN_PORT" --connect "localhost:$OUT_PORT" \
  --cert "$WORK/pki/client.crt" --key "$WORK/pki/client.key" --ca "$WORK/pki/ca.crt" \
  --log-format json 2>"$WORK/in.log" & PIDS+=($!)
wait_listening "$WORK/in.log"

echo "== 5. the legacy client talks plaintext to tunnel-in on 127.0.0.1:$IN_PORT"
"$PY" - "$IN_PORT" <<'PYEOF'
import socket, sys
port = int(sys.argv[1])
with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
    for req in [b"read holding register 40001", b"write coil 7 on", b"status"]:
        c.sendall(req + b"\n")
        reply = c.makefile("rb").readline()
        print("   sent %-32r got %r" % (req.decode(), reply.decode().strip()))
PYEOF
sleep 0.3

echo "== 5b. the same for UDP: a datagram service behind a DTLS 1.2 tunnel pair (--udp)"
UDP_SVC=$(free_port)
"$PY" examples/legacy/udp_service.py 127.0.0.1 "$UDP_SVC" & PIDS+=($!)
UOUT_PORT=$(free_port)
"$BIN/tunnel-out" --udp --listen "127.0.0.1:$UOUT_PORT" --target "127.0.0.1:$UDP_SVC" \
  --cert "$WORK/pki/server.crt" --key "$WORK/pki/server.key" --ca "$WORK/pki/ca.crt" \
  --allow-cn plant-poller --log-format json 2>"$WORK/uout.log" & PIDS+=($!)
wait_listening "$WORK/uout.log"
UIN_PORT=$(free_port)
"$BIN/tunnel-in" --udp --listen "127.0.0.1:$UIN_PORT" --connect "localhost:$UOUT_PORT" \
  --cert "$WORK/pki/client.crt" --key "$WORK/pki/client.key" --ca "$WORK/pki/ca.crt" \
  --log-format json 2>"$WORK/uin.log" & PIDS+=($!)
wait_listening "$WORK/uin.log"
"$PY" - "$UIN_PORT" <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for msg in [b"snmp get sysUpTime.0", b"syslog <13>pump 3 started", b"telemetry t=21.5"]:
    s.sendto(msg, ("127.0.0.1", int(sys.argv[1])))
    reply, _ = s.recvfrom(2048)
    print("   sent %-32r got %r" % (msg.decode(), reply.decode()))
PYEOF

echo "== 6. what happened"
echo "   tunnel-out authenticated the client as: $(field "$WORK/out.log" 'connection authorized' identity)"
echo "   tunnel-in authenticated the server as:  $(field "$WORK/in.log" 'connection authorized' identity)"
echo "   protocol: $(field "$WORK/out.log" 'connection authorized' tls), cipher $(field "$WORK/out.log" 'connection authorized' cipher)"
echo "   bytes client->server: $(field "$WORK/out.log" 'connection closed' bytes_up), server->client: $(field "$WORK/out.log" 'connection closed' bytes_down)"
echo "   UDP: tunnel-out authenticated the flow as $(field "$WORK/uout.log" 'flow authorized' identity) over $(field "$WORK/uout.log" 'flow authorized' tls)"

echo "== 7. a client with a certificate off the allow-list is refused before the service is contacted"
"$BIN/tunnel-certs" issue --dir "$WORK/pki" --name intruder --client >/dev/null
IN2_PORT=$(free_port)
"$BIN/tunnel-in" --listen "127.0.0.1:$IN2_PORT" --connect "localhost:$OUT_PORT" \
  --cert "$WORK/pki/intruder.crt" --key "$WORK/pki/intruder.key" --ca "$WORK/pki/ca.crt" \
  --log-format json 2>"$WORK/in2.log" & PIDS+=($!)
wait_listening "$WORK/in2.log"
"$PY" - "$IN2_PORT" <<'PYEOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as c:
    c.sendall(b"status\n")
    print("   intruder got %r (connection closed)" % c.recv(100))
PYEOF
sleep 0.3
echo "   tunnel-out said: $(field "$WORK/out.log" 'handshake failed' reason) ($(field "$WORK/out.log" 'handshake failed' identity))"

echo
echo "Done. Everything started here has been stopped and its files removed."
echo "Next: README.md — 'A first real deployment', every flag, --status metrics, systemd and"
echo "Kubernetes examples in examples/, and real certificates in 'Certificates'."
