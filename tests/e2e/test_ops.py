"""Operations: the status endpoint and its metrics, systemd notification and socket
activation, privilege drop, and the shipped example files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

import harness
from harness import TUNNEL_IN, TUNNEL_OUT, connect, recv_exactly, run_cli

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------
# helpers

def status_address(proc) -> str:
    return proc.wait_for_log("status endpoint listening")["status"]


def http_get(address: str, path: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|\+Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Parses the Prometheus text format strictly: HELP and TYPE before each family's
    samples, every sample well formed, counters named *_total, histograms complete."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset], float] = {}
    types: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name in helped, f"TYPE before HELP for {name}"
            assert kind in ("counter", "gauge", "histogram"), line
            if kind == "counter":
                assert name.endswith("_total"), f"counter {name} must end in _total"
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name, _, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} has no TYPE line"
        parsed = frozenset(LABEL.findall(labels or ""))
        assert len(parsed) == len(LABEL.findall(labels or "")), line
        key = (name, parsed)
        assert key not in samples, f"duplicate sample {line}"
        samples[key] = float(value)
    return samples


def metric(samples, name: str, **labels) -> float:
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def echo_through(address: str, payload: bytes) -> None:
    with connect(address) as s:
        s.sendall(payload)
        assert recv_exactly(s, len(payload)) == payload


# --------------------------------------------------------------------------------------
# /metrics, /healthz, /readyz

def test_metrics_move_by_the_bytes_and_connections_relayed(procs, servers):
    echo = servers.echo()
    # Raw mode: one TLS connection per legacy connection, so both sides count the same.
    out, tin = procs.pair(echo.address, out_args=["--status", "127.0.0.1:0"],
                          in_args=["--status", "127.0.0.1:0", "--mode", "raw"])
    payloads = [os.urandom(1000), os.urandom(70000)]
    for p in payloads:
        echo_through(tin.address, p)
    total = sum(len(p) for p in payloads)
    for proc in (out, tin):
        proc.wait_for_log(lambda r: r.get("msg") == "connection closed" and r["bytes_down"] == 70000)
        # The gauge drops when the connection's coroutine has finished, just after its log line.
        deadline = time.monotonic() + 3
        while True:
            code, text = http_get(status_address(proc), "/metrics")
            assert code == 200
            m = parse_metrics(text)
            if metric(m, "tunnel_connections_active") == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert metric(m, "tunnel_bytes_total", direction="up") == total
        assert metric(m, "tunnel_bytes_total", direction="down") == total
        assert metric(m, "tunnel_connections_total", outcome="closed") == 2
        assert metric(m, "tunnel_connections_active") == 0
        assert metric(m, "tunnel_handshake_duration_seconds_count") == 2
        assert metric(m, "tunnel_handshake_duration_seconds_bucket", le="+Inf") == 2
        program = "tunnel-out" if proc is out else "tunnel-in"
        assert metric(m, "tunnel_build_info", program=program, service="default") == 1
        assert all(dict(labels).get("service") == "default" for _, labels in m), "a series without its service"


def test_metrics_count_a_refused_client_by_reason(procs, servers, pki):
    target = servers.counter()
    out = procs.tunnel_out(target.address, "--allow-cn", "client-b", "--status", "127.0.0.1:0")
    tin = procs.tunnel_in(out.listen, "--mode", "raw")  # exactly one handshake per connection
    with connect(tin.address) as s:
        s.sendall(b"x")
        assert harness.closed_by_peer(s, timeout=5)
    out.wait_for_log("handshake failed")
    m = parse_metrics(http_get(status_address(out), "/metrics")[1])
    assert metric(m, "tunnel_handshake_failures_total", reason="policy") == 1
    assert metric(m, "tunnel_connections_total", outcome="handshake_failed") == 1
    assert metric(m, "tunnel_bytes_total", direction="up") == 0
    assert target.connection_count == 0


def test_metrics_count_resumed_handshakes_on_both_sides(procs, servers):
    out, tin = procs.pair(servers.echo().address, out_args=["--status", "127.0.0.1:0"],
                          in_args=["--mode", "raw", "--status", "127.0.0.1:0"])
    for i in range(4):
        echo_through(tin.address, b"ping %d\n" % i)
    tin.wait_for_logs("connection closed", 4)
    for proc in (out, tin):
        m = parse_metrics(http_get(status_address(proc), "/metrics")[1])
        assert metric(m, "tunnel_handshake_duration_seconds_count") == 4
        assert metric(m, "tunnel_handshakes_resumed_total") == 3  # all but the first


def test_metrics_count_connections_refused_by_the_limit(procs, servers):
    hold = servers.hold()
    out, tin = procs.pair(hold.address, in_args=["--max-conns", "1", "--status", "127.0.0.1:0"])
    with connect(tin.address) as first:
        first.sendall(b"x")
        hold.wait_connections(1)
        with connect(tin.address) as second:
            assert harness.closed_by_peer(second, timeout=5)
        tin.wait_for_log("connection refused: limit reached")
        m = parse_metrics(http_get(status_address(tin), "/metrics")[1])
        assert metric(m, "tunnel_connections_total", outcome="limit") == 1
        assert metric(m, "tunnel_connections_active") == 1


def test_healthz_answers_and_unknown_paths_are_404(procs, servers):
    out = procs.tunnel_out(servers.echo().address, "--status", "127.0.0.1:0")
    address = status_address(out)
    assert http_get(address, "/healthz") == (200, "ok\n")
    assert http_get(address, "/nope")[0] == 404
    with socket.create_connection(harness.split_address(address), timeout=5) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")


def test_a_request_head_in_pieces_is_answered(procs, servers):
    out = procs.tunnel_out(servers.echo().address, "--status", "127.0.0.1:0")
    with socket.create_connection(harness.split_address(status_address(out)), timeout=5) as s:
        for piece in (b"GET /healthz HTTP/1.1\r", b"\nHost: x\r\n\r", b"\n"):  # the end split too
            s.sendall(piece)
            time.sleep(0.05)
        assert harness.recv_all(s).startswith(b"HTTP/1.1 200")


def test_idle_connections_cannot_lock_the_probes_out(procs, servers):
    # 64 connections that never send a request fill the endpoint; a probe after them is
    # still answered (the oldest silent one is pushed out), again and again.
    out = procs.tunnel_out(servers.echo().address, "--status", "127.0.0.1:0")
    address = status_address(out)
    idle = [socket.create_connection(harness.split_address(address), timeout=5) for _ in range(64)]
    try:
        for _ in range(3):
            assert http_get(address, "/healthz", timeout=3) == (200, "ok\n")
            idle.append(socket.create_connection(harness.split_address(address), timeout=5))
    finally:
        for s in idle:
            s.close()


def test_readyz_follows_tunnel_out_going_away_and_returning(procs, servers):
    echo = servers.echo()
    out = procs.tunnel_out(echo.address)
    port = out.port
    tin = procs.tunnel_in(out.listen, "--status", "127.0.0.1:0")
    address = status_address(tin)
    assert http_get(address, "/readyz") == (200, "ready\n")
    out.stop()
    deadline = time.monotonic() + 5
    while http_get(address, "/readyz")[0] != 503:
        assert time.monotonic() < deadline, "/readyz stayed ready without tunnel-out"
        time.sleep(0.2)
    assert "unreachable" in http_get(address, "/readyz")[1]
    procs.tunnel_out(echo.address, listen=f"127.0.0.1:{port}")
    deadline = time.monotonic() + 5
    while http_get(address, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "/readyz did not return to ready"
        time.sleep(0.2)
    echo_through(tin.address, b"back again")


def syn_sent_by(pid: int, port: int) -> int:
    """Connection attempts of process `pid` to 127.0.0.1:`port` still waiting for an answer."""
    out = subprocess.run(["ss", "-tnpH", "state", "syn-sent", "dst", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, check=True).stdout
    return sum(f"pid={pid}," in line for line in out.splitlines())


@contextmanager
def unanswering_port():
    """A port whose listener's backlog is full: the kernel drops further SYNs, so a dial to
    it lasts its whole timeout."""
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    for _ in range(3):
        f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(f)
    try:
        yield port
    finally:
        for f in fillers:
            f.close()
        blackhole.close()


def test_readyz_probes_during_a_slow_dial_share_it(procs):
    # tunnel-out behind a full backlog: each dial lasts the probe's whole 2 s. Twenty probes
    # in that time must make one dial, not twenty.
    with unanswering_port() as port:
        # raw mode: no mux pool dialling beside the probes.
        tin = procs.tunnel_in(f"127.0.0.1:{port}", "--mode", "raw", "--status", "127.0.0.1:0")
        address = status_address(tin)
        results: list[tuple[int, str]] = []
        probes = [threading.Thread(target=lambda: results.append(http_get(address, "/readyz", timeout=10)))
                  for _ in range(20)]
        for t in probes:
            t.start()
        deadline = time.monotonic() + 1.5
        most = 0
        while time.monotonic() < deadline:
            most = max(most, syn_sent_by(tin.proc.pid, port))
            time.sleep(0.1)
        for t in probes:
            t.join(timeout=10)
        assert most == 1, f"{most} dials at once for 20 probes"
        assert len(results) == 20
        for status, body in results:
            assert status == 503 and "unreachable" in body, (status, body)


def raw_get(address: str, path: str, timeout: float = 10) -> tuple[int, str]:
    """GET over a plain socket, the request sent as the connection opens; (status, body), or
    (0, what went wrong) when the connection failed or was closed unanswered."""
    try:
        with socket.create_connection(harness.split_address(address), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = harness.recv_all(s).decode(errors="replace")
    except OSError as e:
        return 0, repr(e)
    head, _, body = reply.partition("\r\n\r\n")
    parts = head.split(" ", 2)
    return (int(parts[1]), body) if len(parts) > 1 and parts[1].isdigit() else (0, reply)


def test_readiness_requests_cannot_lock_healthz_out(procs):
    """70 /readyz requests while the next-hop probe's dial hangs (tunnel-out behind a full
    backlog): those waiting for the check are capped, the rest answered 503 at once, so a
    liveness probe among them is still answered."""
    with unanswering_port() as port:
        tin = procs.tunnel_in(f"127.0.0.1:{port}", "--mode", "raw", "--status", "127.0.0.1:0")
        address = status_address(tin)
        results: list[tuple[int, str]] = []
        probes = [threading.Thread(target=lambda: results.append(raw_get(address, "/readyz")))
                  for _ in range(70)]
        for t in probes:
            t.start()
        time.sleep(0.5)  # all sent; the dial under way lasts 2 s
        assert raw_get(address, "/healthz", timeout=1.5) == (200, "ok\n")
        for t in probes:
            t.join(timeout=10)
        assert len(results) == 70
        # Each answered 503, or (under load: 64 open, some still sending) pushed out unanswered.
        assert all(status in (503, 0) for status, _ in results), [r for r in results if r[0] not in (503, 0)][:3]
        assert sum(status == 503 for status, _ in results) >= 32, results
        assert any("too many readiness checks" in body for _, body in results)


def test_status_endpoint_answers_through_the_drain(procs, servers):
    """After SIGTERM, while a connection finishes, /readyz says 503 (shutting down) and
    /healthz still 200; the process then ends normally."""
    out = procs.tunnel_out(servers.echo().address, "--status", "127.0.0.1:0", "--shutdown-timeout", "20s")
    address = status_address(out)
    tin = procs.tunnel_in(out.listen, "--mode", "raw")
    held = harness.connect(tin.address)
    try:
        held.sendall(b"x")
        assert harness.recv_exactly(held, 1) == b"x"
        out.signal(signal.SIGTERM)
        out.wait_for_log("shutting down: no longer accepting")
        assert http_get(address, "/readyz") == (503, "not ready: shutting down\n")
        assert http_get(address, "/healthz") == (200, "ok\n")
    finally:
        held.close()
    assert out.wait(timeout=10) == 0


def test_status_address_in_use_is_a_start_up_error(pki, servers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", str(pki.server.cert),
                                 "--key", str(pki.server.key), "--ca", str(pki.ca_cert),
                                 "--status", f"127.0.0.1:{port}"])
    assert r.returncode == 2
    assert "127.0.0.1:%d" % port in r.stderr


# --------------------------------------------------------------------------------------
# systemd

@pytest.fixture
def notify_socket(tmp_dir):
    path = tmp_dir / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    yield path, s
    s.close()


def receive_states(sock, until: str, timeout: float = 5) -> list[str]:
    states: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states.extend(sock.recv(4096).decode().split("\n"))
        except socket.timeout:
            continue
        if until in states:
            return states
    raise AssertionError(f"{until} not received; got {states}")


def test_notify_socket_receives_ready_reloading_and_stopping(procs, servers, notify_socket, tmp_dir):
    path, sock = notify_socket
    env = dict(os.environ, NOTIFY_SOCKET=str(path))
    key = tmp_dir / "server.key"
    shutil.copy(procs.pki.server.key, key)
    out = procs.start(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", servers.echo().address,
                                   "--cert", str(procs.pki.server.cert), "--key", str(key),
                                   "--ca", str(procs.pki.ca_cert), *harness.log_args()], env=env)
    assert "READY=1" in receive_states(sock, "READY=1")
    out.signal(signal.SIGHUP)
    states = receive_states(sock, "RELOADING=1")
    assert any(s.startswith("MONOTONIC_USEC=") for s in states), states
    assert "STATUS=credentials reloaded" in receive_states(sock, "READY=1")
    key.write_text("not a key\n")  # the next reload fails: the manager is told so
    out.signal(signal.SIGHUP)
    states = receive_states(sock, "READY=1")
    assert "STATUS=credential reload failed; old credentials kept (see the log)" in states, states
    out.signal(signal.SIGTERM)
    assert "STOPPING=1" in receive_states(sock, "STOPPING=1")
    assert out.wait() == 0


def test_watchdog_pings_when_systemd_asks_for_them(procs, servers, notify_socket):
    path, sock = notify_socket
    env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="200000")
    procs.start(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", servers.echo().address,
                             "--cert", str(procs.pki.server.cert), "--key", str(procs.pki.server.key),
                             "--ca", str(procs.pki.ca_cert), *harness.log_args()], env=env)
    states = receive_states(sock, "READY=1")
    pings = states.count("WATCHDOG=1")
    deadline = time.monotonic() + 3
    while pings < 3:
        assert time.monotonic() < deadline, "fewer than 3 watchdog pings in 3 s at a 200 ms interval"
        try:
            pings += sock.recv(4096).decode().split("\n").count("WATCHDOG=1")
        except socket.timeout:
            pass


def test_socket_activation_serves_the_inherited_socket(procs, servers):
    echo = servers.echo()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # LISTEN_PID must be the pid of the process that reads it: bash sets it and execs.
    args = ["--listen", "0.0.0.0:1", "--target", echo.address, "--cert", str(procs.pki.server.cert),
            "--key", str(procs.pki.server.key), "--ca", str(procs.pki.ca_cert), *harness.log_args()]
    # The shell moves the listening socket to descriptor 3, as systemd passes it.
    script = (f"exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "
              + " ".join(shlex.quote(a) for a in [str(TUNNEL_OUT), *args]))
    out = procs.start(Path("/bin/bash"), ["-c", script], wait=False, name="tunnel-out", pass_fds=(fd,))
    out.binary = TUNNEL_OUT  # bash execs tunnel-out: its log lines name that program
    out.wait_for_log("using the listening socket passed by systemd instead of binding --listen")
    listener.close()
    tin = procs.tunnel_in(f"127.0.0.1:{port}")
    echo_through(tin.address, b"through an inherited socket")


def _tunnel_in_config(procs, tmp_dir, services: dict) -> Path:
    from test_config import credential_keys, write_config
    top = {**credential_keys(procs.pki.client_a), "ca": str(procs.pki.ca_cert), "log-format": "json",
           "log-level": "debug", "server-name": "localhost"}
    return write_config(tmp_dir / "in.toml", top, services)


def _activated(listener: socket.socket, binary: Path, args: list[str]) -> str:
    """A bash script that passes `listener` as descriptor 3, as systemd does, then execs."""
    fd = listener.fileno()
    return (f"exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "
            + " ".join(shlex.quote(a) for a in [str(binary), *args]))


def test_socket_activation_with_several_services_goes_to_the_one_listening_there(procs, servers, tmp_dir):
    """The passed socket is served by the service whose --listen names its address, not by
    whichever service starts first ("a" sorts before "z")."""
    echo, silent = servers.echo(), servers.counter()
    to_echo = procs.tunnel_out(echo.address)
    to_silent = procs.tunnel_out(silent.address)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = _tunnel_in_config(procs, tmp_dir, {
        "a": {"listen": "127.0.0.1:0", "connect": to_silent.listen},
        "z": {"listen": f"127.0.0.1:{port}", "connect": to_echo.listen},
    })
    tin = procs.start(Path("/bin/bash"), ["-c", _activated(listener, TUNNEL_IN, ["--config", str(config)])],
                      wait=False, name="tunnel-in", pass_fds=(listener.fileno(),))
    tin.binary = TUNNEL_IN
    used = tin.wait_for_log("using the listening socket passed by systemd instead of binding --listen")
    assert used["listen"] == f"127.0.0.1:{port}"
    listener.close()
    echo_through(("127.0.0.1", port), b"to the service that listens there")
    assert silent.connection_count == 0  # (before: service "a" took the socket)


def test_socket_activation_with_a_socket_no_service_names_exits_2(procs, tmp_dir):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    config = _tunnel_in_config(procs, tmp_dir, {
        "a": {"listen": "127.0.0.1:0", "connect": "127.0.0.1:9"},
        "b": {"listen": "127.0.0.1:0", "connect": "127.0.0.1:9"},
    })
    try:
        r = subprocess.run(["/bin/bash", "-c", _activated(listener, TUNNEL_IN, ["--config", str(config)])],
                           pass_fds=(listener.fileno(),), capture_output=True, text=True, timeout=20)
    finally:
        listener.close()
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("tunnel-in: error: socket activation: descriptor 3") and "matches no --listen" in last, r.stderr


@pytest.mark.parametrize("kind,words", [("udp", "not a stream socket"), ("unlistened", "not listening")])
def test_socket_activation_with_a_socket_that_cannot_accept_exits_2(pki, kind, words):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    fd = s.fileno()
    args = ["--listen", "127.0.0.1:1", "--target", "127.0.0.1:9", "--cert", str(pki.server.cert),
            "--key", str(pki.server.key), "--ca", str(pki.ca_cert)]
    script = (f"exec 3<&{fd} {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "
              + " ".join(shlex.quote(a) for a in [str(TUNNEL_OUT), *args]))
    try:
        r = subprocess.run(["/bin/bash", "-c", script], pass_fds=(fd,), capture_output=True, text=True, timeout=20)
    finally:
        s.close()
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("tunnel-out: error: socket activation") and words in last, r.stderr


# --------------------------------------------------------------------------------------
# privilege drop

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_user_flag_drops_root_after_binding_and_serves(procs, servers):
    echo = servers.echo()
    out = procs.tunnel_out(echo.address, "--user", "nobody")
    out.wait_for_log("dropped privileges")
    status = Path(f"/proc/{out.proc.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["65534"] * 4, status
    tin = procs.tunnel_in(out.listen)
    echo_through(tin.address, b"served as nobody")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_the_process_is_not_dumpable_even_without_user(pki):
    # Started as an unprivileged user with no --user (as under DynamicUser= or in a
    # container): its memory holds the key, so it must not be dumpable. The kernel then
    # gives its /proc files to root.
    own = Path(tempfile.mkdtemp(prefix="tunnel-nd-"))  # the test's tmp_dir is root's only
    own.chmod(0o755)
    files = {}
    for name, source in (("cert", pki.server.cert), ("key", pki.server.key), ("ca", pki.ca_cert)):
        files[name] = own / f"{name}.pem"
        shutil.copy(source, files[name])
        os.chown(files[name], 65534, 65534)
        os.chmod(files[name], 0o600)
    p = subprocess.Popen([str(TUNNEL_OUT), "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
                          "--cert", str(files["cert"]), "--key", str(files["key"]), "--ca", str(files["ca"])],
                         user=65534, group=65534, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if "listening" in line:
                break
        else:
            raise AssertionError("tunnel-out did not start: " + p.stderr.read())
        status = Path(f"/proc/{p.pid}/status").read_text()
        assert next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1] == "65534"
        assert os.stat(f"/proc/{p.pid}/environ").st_uid == 0, "dumpable: /proc files belong to the user"
    finally:
        # What this test asserts is above; the stop is cleanup. (Under ThreadSanitizer a
        # SIGTERM sent this early, while the workers start, was once lost: its interceptor
        # dropped it. The process then served on, and a second SIGTERM stopped it.)
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        shutil.rmtree(own, ignore_errors=True)


def test_user_flag_with_unknown_user_is_a_start_up_error(pki):
    r = run_cli(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", str(pki.server.cert),
                             "--key", str(pki.server.key), "--ca", str(pki.ca_cert), "--user", "no-such-user-x"])
    assert r.returncode == 2
    assert "no-such-user-x" in r.stderr


# --------------------------------------------------------------------------------------
# the shipped examples: every tunnel command they contain is accepted by --check-config

def credential_dir(pki, tmp_dir: Path) -> Path:
    """A directory holding every file name the examples refer to."""
    d = tmp_dir / "creds"
    d.mkdir()
    files = {
        "server.crt": pki.server.cert, "server.key": pki.server.key,
        "client.crt": pki.client_a.cert, "client.key": pki.client_a.key,
        "ca.crt": pki.ca_cert, "tls.crt": pki.server.cert, "tls.key": pki.server.key,
    }
    for name, src in files.items():
        (d / name).write_bytes(Path(src).read_bytes())
        os.chmod(d / name, 0o600)
    return d


def check_command(argv: list[str], creds: Path) -> None:
    binary = {"tunnel-out": TUNNEL_OUT, "tunnel-in": TUNNEL_IN}[Path(argv[0]).name]
    args = []
    for a in argv[1:]:
        a = a.replace("${CREDENTIALS_DIRECTORY}", str(creds))
        a = re.sub(r"^/(pki|tls|etc/tunnel)/", str(creds) + "/", a)
        args.append(a)
    r = run_cli(binary, [*args, "--check-config"])
    assert r.returncode == 0, f"{' '.join(argv)}\n{r.stderr}"
    assert "role = " in r.stdout


def test_systemd_units_use_only_accepted_flags(pki, tmp_dir):
    creds = credential_dir(pki, tmp_dir)
    units = sorted((REPO / "examples" / "systemd").glob("*.service"))
    assert units
    for unit in units:
        text = unit.read_text().replace("\\\n", " ")
        execs = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]
        assert len(execs) == 1, unit
        check_command(shlex.split(execs[0]), creds)


def test_compose_and_kubernetes_files_parse_and_use_only_accepted_flags(pki, tmp_dir):
    import yaml  # python3-yaml, installed by scripts/install-deps.sh
    creds = credential_dir(pki, tmp_dir)
    compose = yaml.safe_load((REPO / "examples" / "compose" / "docker-compose.yml").read_text())
    checked = 0
    for name, svc in compose["services"].items():
        entry = svc.get("entrypoint") or []
        if entry and Path(entry[0]).name in ("tunnel-in", "tunnel-out"):
            check_command([entry[0], *svc["command"]], creds)
            checked += 1
    assert checked == 2
    docs = list(yaml.safe_load_all((REPO / "examples" / "kubernetes" / "tunnel-out-sidecar.yaml").read_text()))
    containers = [c for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]
    tunnels = [c for c in containers if Path(c.get("command", [""])[0]).name.startswith("tunnel-")]
    assert len(tunnels) == 1
    for c in tunnels:
        check_command([*c["command"], *c["args"]], creds)
        probe_port = c["readinessProbe"]["httpGet"]["port"]
        assert probe_port in [p["name"] for p in c["ports"]]
        assert "--status" in c["args"]


def test_mux_pool_and_streams_show_in_metrics_and_readyz(procs, servers):
    hold = servers.hold()
    out = procs.tunnel_out(hold.address, "--status", "127.0.0.1:0")
    tin = procs.tunnel_in(out.listen, "--mode", "mux", "--pool", "2", "--threads", "2", "--status", "127.0.0.1:0")
    address = status_address(tin)
    deadline = time.monotonic() + 5
    while http_get(address, "/readyz")[0] != 200:  # ready once the pool has answered
        assert time.monotonic() < deadline, http_get(address, "/readyz")
        time.sleep(0.1)
    # Ready with the first pooled connection up; the second follows on its own worker.
    while metric(parse_metrics(http_get(address, "/metrics")[1]), "tunnel_mux_sessions", state="ready") != 2:
        assert time.monotonic() < deadline, http_get(address, "/metrics")[1]
        time.sleep(0.05)
    with connect(tin.address) as a, connect(tin.address) as b:
        a.sendall(b"x")
        b.sendall(b"y")
        hold.wait_connections(2)
        for proc in (tin, out):
            m = parse_metrics(http_get(status_address(proc), "/metrics")[1])
            assert metric(m, "tunnel_mux_streams_active") == 2
            assert metric(m, "tunnel_mux_sessions", state="open") == 2
    out.kill()  # tunnel-out gone at once (a drain would wait for the held streams)
    deadline = time.monotonic() + 10
    while http_get(address, "/readyz")[0] != 503:  # the pool is gone with tunnel-out
        assert time.monotonic() < deadline, "/readyz stayed ready without tunnel-out"
        time.sleep(0.2)
