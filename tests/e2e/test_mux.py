"""End-to-end tests of mux mode: many legacy TCP connections as streams over a few pooled,
pre-authenticated TLS connections (common/mux/PROTOCOL.md).

The whole TCP suite also runs in mux mode (TUNNEL_MODE=mux); these tests cover what only
mux mode has: the pool, flow-control isolation, keepalive, reconnection, rotation, and
the negotiation with raw-mode peers.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import harness
from delay_line import DelayLine
from harness import connect, echo_roundtrip, recv_all, sha256

MiB = 1 << 20


def mux_pair(procs, target, in_args=(), out_args=(), pool=2):
    out = procs.tunnel_out(target.address, *out_args, level="info")
    # As many workers as pool connections: a worker without one dials its own ("adopted"),
    # which these tests would count as extra handshakes on a machine with more cores.
    tin = procs.tunnel_in(out.listen, "--mode", "mux", "--pool", str(pool), "--threads", str(pool), *in_args,
                          level="info")
    wait_until(lambda: len(tin.logs_with_msg("mux connection up")) >= pool, "the pool is up")
    return out, tin


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def rss_kib(proc) -> int:
    with open(f"/proc/{proc.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_1000_short_connections_need_no_new_handshake(procs, servers):
    target = servers.echo()
    out, tin = mux_pair(procs, target)
    # The pool (--pool 2) is up once tunnel-out has logged both connections.
    wait_until(lambda: len(out.logs_with_msg("mux connection authorized")) == 2, "the pool is up")
    before = len(out.logs_with_msg("mux connection authorized"))

    started = time.monotonic()
    for i in range(1000):
        payload = f"request {i}\n".encode()
        assert echo_roundtrip(tin.address, payload) == payload
    elapsed = time.monotonic() - started

    assert len(out.logs_with_msg("mux connection authorized")) == before, "a legacy connection cost a handshake"
    assert not tin.logs_with_msg("mux connection failed")
    wait_until(lambda: len(out.logs_with_msg("connection closed")) == 1000, "tunnel-out logged every stream")
    assert all(r["reason"] == "closed" for r in out.logs_with_msg("connection closed"))
    print(f"1000 connections in {elapsed:.2f}s")


def test_stalled_legacy_reader_does_not_slow_another_stream(procs, servers):
    # The target pours 64 MiB into every connection; the first legacy client never reads.
    flood = os.urandom(MiB) * 64
    target = servers.sender(flood, shutdown_after_send=True)
    out, tin = mux_pair(procs, target, pool=1)
    rss_before = rss_kib(tin), rss_kib(out)

    stalled = connect(tin.address, timeout=30)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"x")
    target.wait_connections(1)
    time.sleep(1.0)  # let the stalled stream fill every buffer it may

    started = time.monotonic()
    with connect(tin.address, timeout=30) as s:
        s.sendall(b"y")
        got = recv_all(s)
    elapsed = time.monotonic() - started
    assert sha256(got) == sha256(flood), f"got {len(got)} of {len(flood)} bytes"
    assert elapsed < 15, f"64 MiB beside a stalled stream took {elapsed:.1f}s"

    # Memory stays within the windows: the stalled stream holds at most its window in each
    # process (plus socket buffers), not the 64 MiB the target sent. (Not measurable under
    # a sanitizer: ASan's quarantine keeps up to 256 MiB of freed blocks resident.)
    grown = rss_kib(tin) - rss_before[0], rss_kib(out) - rss_before[1]
    if not os.environ.get("TUNNEL_SANITIZED"):
        assert max(grown) < 24 * 1024, f"RSS grew by {grown} KiB"
    stalled.close()


def test_windows_grow_to_fill_a_long_path(procs, servers):
    # A 40 ms round trip between the pair. With the initial 256 KiB window a stream could
    # carry at most 6.5 MB/s over it; each side's receive window must grow (window_tuner.hpp)
    # while 24 MiB go up and come back. (How fast it goes is for bench/run.sh --only wan.)
    target = servers.echo()
    out = procs.tunnel_out(target.address, level="info")
    with DelayLine(out.listen, one_way_ms=20) as line:
        tin = procs.tunnel_in(line.address, "--mode", "mux", "--pool", "1", "--threads", "1", level="info")
        tin.wait_for_log("mux connection up")
        payload = os.urandom(24 * MiB)
        assert sha256(echo_roundtrip(tin.address, payload, timeout=60)) == sha256(payload)
        out.stop()  # its GOAWAY ends the connection: both sides log it, with its window
    windows = {}
    for proc in (tin, out):
        closed = [r for r in proc.wait_for_logs("mux connection closed", 1) if int(r["bytes_received"]) > MiB]
        assert len(closed) == 1, closed
        windows[proc.name] = int(closed[0]["receive_window"])
    print(f"receive windows after 24 MiB each way over 40 ms: {windows}")
    for name, window in windows.items():
        assert window > 256 * 1024, f"{name}'s receive window never grew"
        assert window <= 8 * MiB, f"{name}'s receive window passed its limit"


def test_tunnel_out_killed_mid_transfer_resets_streams_and_pool_recovers(procs, servers):
    target = servers.echo()
    out, tin = mux_pair(procs, target, in_args=["--keepalive", "2s"])
    port = out.port

    s = connect(tin.address, timeout=10)
    s.sendall(b"a" * 100_000)
    assert len(harness.recv_exactly(s, 100_000)) == 100_000
    out.proc.kill()  # SIGKILL: no GOAWAY, no close_notify
    started = time.monotonic()
    assert harness.closed_by_peer(s, timeout=5), "legacy client still connected after tunnel-out died"
    assert time.monotonic() - started < 2.5
    s.close()

    # While tunnel-out is down, legacy connections are closed promptly.
    with connect(tin.address) as s2:
        assert harness.closed_by_peer(s2, timeout=5)

    out2 = procs.tunnel_out(target.address, listen=f"127.0.0.1:{port}", level="info")
    wait_until(lambda: out2.logs_with_msg("mux connection authorized"), "the pool reconnected", timeout=15)
    payload = os.urandom(200_000)
    assert echo_roundtrip(tin.address, payload) == payload
    assert tin.running()


def test_keepalive_ends_streams_when_tunnel_out_freezes(procs, servers):
    target = servers.echo()
    out, tin = mux_pair(procs, target, in_args=["--keepalive", "1s"])
    s = connect(tin.address, timeout=10)
    s.sendall(b"ping\n")
    assert harness.recv_exactly(s, 5) == b"ping\n"
    out.signal(signal.SIGSTOP)  # alive for TCP, silent for the tunnel
    try:
        started = time.monotonic()
        assert harness.closed_by_peer(s, timeout=6), "stream outlived a silent tunnel-out"
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, f"streams reset after {elapsed:.1f}s with --keepalive 1s"
        closed = tin.wait_for_log(lambda r: r.get("msg") == "mux connection closed" and "keepalive" in r.get("reason", ""))
        assert closed["level"] in ("info", "warning")
    finally:
        out.signal(signal.SIGCONT)
        s.close()


def test_rotation_keeps_long_transfers_intact(procs, servers):
    target = servers.echo()
    out, tin = mux_pair(procs, target, in_args=["--rotate-after", "256KiB"], pool=1)
    payloads = [os.urandom(3 * MiB) for _ in range(3)]
    results = {}

    def transfer(i):
        results[i] = echo_roundtrip(tin.address, payloads[i], timeout=60)

    threads = [threading.Thread(target=transfer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.2)  # start on different connections as they rotate
    for t in threads:
        t.join(60)
    for i, p in enumerate(payloads):
        assert sha256(results.get(i, b"")) == sha256(p), f"transfer {i} damaged"
    more = os.urandom(MiB)
    assert echo_roundtrip(tin.address, more) == more
    # Rotation replaced the connection several times.
    assert len(out.logs_with_msg("mux connection authorized")) >= 3
    assert tin.logs_with_msg("mux connection closed")


def test_auto_mode_switches_to_mux_with_tunnel_out(procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address, level="info")
    tin = procs.tunnel_in(out.listen, "--mode", "auto", "--pool", "2", "--threads", "2", level="info")
    assert echo_roundtrip(tin.address, b"first\n") == b"first\n"
    wait_until(lambda: len(out.logs_with_msg("mux connection authorized")) >= 2, "the pool filled")
    n = len(out.logs_with_msg("mux connection authorized"))
    for i in range(20):
        assert echo_roundtrip(tin.address, b"more\n") == b"more\n"
    assert len(out.logs_with_msg("mux connection authorized")) <= n + 1


def test_a_connection_dialled_while_the_pool_was_down_closes_once_the_pool_is_up(procs, servers):
    """A legacy connection that finds no pool connection up dials its own ("adopted"); once
    it is idle and the pool's own connection is up, it is surplus and closes, rather than
    staying open beside the pool until something else happens on it."""
    target = servers.echo()
    with socket.socket() as s:  # a free port for tunnel-out, which is not up yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tin = procs.tunnel_in(f"127.0.0.1:{port}", "--mode", "mux", "--pool", "1", "--threads", "1")
    # The pool's slot retries with a growing backoff: wait until its next try is >= 3.2 s off.
    wait_until(lambda: any(r.get("retry_in_ms", 0) >= 6400 for r in tin.logs_with_msg("mux connection failed")),
               "the pool backs off", timeout=30)
    out = procs.tunnel_out(target.address, listen=f"127.0.0.1:{port}", level="info")
    assert echo_roundtrip(tin.address, b"early\n") == b"early\n"
    adopted = [r for r in tin.logs_with_msg("mux connection up") if r.get("adopted") == "true"]
    assert len(adopted) == 1, "the legacy connection did not dial its own mux connection"
    # The slot comes up within its backoff; the idle adopted connection then closes.
    wait_until(lambda: len(out.logs_with_msg("mux connection authorized")) == 2, "the pool is up", timeout=15)
    closed = out.wait_for_logs("mux connection closed", 1, timeout=5)
    assert closed[0]["streams"] == 1 and closed[0]["reason"] == "closed", closed
    assert echo_roundtrip(tin.address, b"later\n") == b"later\n"
    time.sleep(0.5)
    assert len(out.logs_with_msg("mux connection authorized")) == 2, "a third connection was dialled"


def test_connections_arriving_while_the_pool_connects_wait_for_it(procs, servers):
    """Legacy connections that arrive while the pool's connection is still being set up (here
    behind 300 ms each way) wait for it, and are served on it as soon as it is up, rather
    than each dialling a connection of its own."""
    target = servers.echo()
    out = procs.tunnel_out(target.address, level="info")
    with DelayLine(out.listen, one_way_ms=300) as line:
        tin = procs.tunnel_in(line.address, "--mode", "mux", "--pool", "1", "--threads", "1", level="debug")
        results: list[bytes] = [b""] * 4

        def one(i: int) -> None:
            results[i] = echo_roundtrip(tin.address, f"early {i}\n".encode(), timeout=20)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [f"early {i}\n".encode() for i in range(4)]
        up = tin.logs_with_msg("mux connection up")
        assert len(up) == 1 and up[0].get("adopted") != "true", up
        assert not tin.logs_with_msg("no mux connection ready on this worker")
        assert len(out.logs_with_msg("mux connection authorized")) == 1


def test_a_tunnel_out_that_hangs_up_at_once_is_not_redialled_in_a_tight_loop(procs, servers):
    """tunnel-out retires every connection moments after it comes up (a SIGHUP reload every
    100 ms sends GOAWAY on all of them, as a broken or hostile tunnel-out might): tunnel-in's
    slots back off instead of handshaking again at once each time, and traffic still
    flows."""
    target = servers.echo()
    out, tin = mux_pair(procs, target, pool=1)
    before = len(out.logs_with_msg("mux connection authorized"))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        out.signal(signal.SIGHUP)
        time.sleep(0.1)
    handshakes = len(out.logs_with_msg("mux connection authorized")) - before
    # At once after each of some 30 GOAWAYs, it would be about 30; backing off from 200 ms
    # and doubling, it is a handful.
    print(f"\n{handshakes} handshakes in 3 s of reloads")
    assert handshakes <= 10, handshakes
    assert echo_roundtrip(tin.address, b"still carried") == b"still carried"


def test_raw_mode_client_still_gets_plain_tls(procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address, level="info")
    tin = procs.tunnel_in(out.listen, "--mode", "raw", level="info")
    assert echo_roundtrip(tin.address, b"raw\n") == b"raw\n"
    out.wait_for_log("connection authorized")
    assert not out.logs_with_msg("mux connection authorized")


def test_sigterm_on_tunnel_out_drains_streams_with_goaway(procs, servers):
    target = servers.sink()
    out, tin = mux_pair(procs, target)
    chunks = [os.urandom(64 * 1024) for _ in range(10)]
    with connect(tin.address, timeout=20) as s:
        s.sendall(chunks[0])
        target.wait_connections(1)
        out.signal(signal.SIGTERM)
        out.wait_for_log("shutting down: no longer accepting")
        for c in chunks[1:]:
            s.sendall(c)
            time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s).decode() == sha256(b"".join(chunks))
    assert out.wait(10) == 0
    assert not out.logs_with_msg("shutdown timeout passed; closing remaining connections")


def test_sigterm_on_tunnel_in_closes_its_pool_cleanly(procs, servers):
    # tunnel-in says goodbye on every pooled connection (GOAWAY, close_notify) before it
    # exits: tunnel-out sees clean closes, not connections cut without close_notify.
    target = servers.echo()
    out, tin = mux_pair(procs, target)
    assert echo_roundtrip(tin.address, b"ping\n") == b"ping\n"
    tin.stop()
    for proc in (tin, out):
        closed = proc.wait_for_logs("mux connection closed", 2)
        assert [r["reason"] for r in closed] == ["closed", "closed"], closed
    assert out.running()


def test_a_client_offering_other_alpn_protocols_is_served_raw(procs, pki, servers):
    """tunnel-out offers mux only to clients asking for it; a TLS client asking for another
    protocol by ALPN (here PostgreSQL's direct TLS) gets plain TLS, not a refusal."""
    import ssl
    target = servers.echo()
    out = procs.tunnel_out(target.address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.client_a.cert), str(pki.client_a.key))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["postgresql", "h2"])
    host, port = out.address
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() is None
            s.sendall(b"select 1;\n")
            assert s.recv(100) == b"select 1;\n"
    rec = out.wait_for_log("connection authorized")
    assert rec["identity"].startswith("CN=client-a")
    assert not out.logs_with_msg("mux connection authorized")
