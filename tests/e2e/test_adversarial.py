"""Hardening, adversarial part: hostile and careless peers against the real binaries on
loopback. Silent and garbage connections, handshake floods, malformed TLS records, a
legacy reader that stops reading, the certificate cases test_tcp.py and test_trust.py do
not already cover, and proof that the secure leg carries ciphertext only.

Each test states the bound it holds the binaries to."""

from __future__ import annotations

import os
import random
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

import harness
import hardening as hd
import trust_tools as tt
import udp_tools
from harness import connect, echo_roundtrip, sha256
from hardening import metric
from test_tcp import OpenSSLTool, refused_direct

MiB = 1 << 20


def raw_pair(procs, target, out_args=(), in_args=(), **kw):
    """A pair whose tunnel-in makes one TLS connection per legacy connection, so every
    legacy connection costs tunnel-out a handshake (the harder case under load)."""
    return procs.pair(target.address, out_args=list(out_args), in_args=["--mode", "raw", *in_args], **kw)


def timed_echo(address, size: int = 32 * 1024, timeout: float = 10.0) -> float:
    payload = os.urandom(size)
    started = time.monotonic()
    got = echo_roundtrip(address, payload, timeout)
    elapsed = time.monotonic() - started
    assert sha256(got) == sha256(payload), f"echo mismatch: sent {len(payload)}, got {len(got)}"
    return elapsed


def settle(proc) -> int:
    """Waits until the process relays nothing, then returns its descriptor count."""
    hd.wait_until(lambda: metric(hd.scrape(proc), "tunnel_connections_active") == 0, "no connection is active")
    time.sleep(0.2)
    return hd.fd_count(proc)


# --------------------------------------------------------------------------------------
# silent and garbage connections


# Bytes that are no TLS record: the first byte is no TLS content type.
GARBAGE = b"\x42" + random.Random(9).randbytes(511)


def test_500_silent_and_200_garbage_connections_neither_starve_a_client_nor_leak(procs, servers):
    target = servers.echo()
    out, tin = raw_pair(procs, target, out_args=["--handshake-timeout", "2s", "--status", "127.0.0.1:0"])
    timed_echo(tin.address)  # warm-up: every lazily made descriptor exists now
    baseline = settle(out)

    flood_started = time.monotonic()
    silent = hd.open_many(out.address, 500)
    garbage = hd.open_many(out.address, 200, payload=GARBAGE)
    hostile = silent + garbage
    try:
        # A real client through tunnel-in, while all of those are open.
        elapsed = timed_echo(tin.address)
        assert elapsed < 3.0, f"the real client needed {elapsed:.2f}s beside 700 hostile connections"
        assert target.connection_count == 2
        # The garbage is refused at once; the silent ones by --handshake-timeout 2s.
        hd.wait_until(lambda: hd.closed_count(garbage) == 200, "every garbage connection is closed", timeout=3)
        hd.wait_until(lambda: hd.closed_count(silent) == 500, "every silent connection is closed", timeout=8)
    finally:
        hd.close_all(hostile)

    hd.wait_fds(out, baseline)
    m = hd.scrape(out)
    assert metric(m, "tunnel_handshake_failures_total", reason="timeout") == 500
    assert metric(m, "tunnel_handshake_failures_total", reason="protocol") == 200
    assert metric(m, "tunnel_connections_total", outcome="handshake_failed") == 700
    assert metric(m, "tunnel_connections_active") == 0
    # The log takes 20 lines of one message at once, then 5 a second: the 700 failures are
    # partly printed, the rest counted, and a printed line says how many it follows.
    suppressed = metric(m, "tunnel_log_lines_suppressed_total")
    assert suppressed >= 500
    printed = out.wait_for_logs("handshake failed", 700 - suppressed)
    assert len(printed) == 700 - suppressed
    assert len(printed) <= 20 + 5 * (time.monotonic() - flood_started + 1), len(printed)
    reported = sum(int(r.get("suppressed", 0)) for r in printed)
    assert 0 < reported <= suppressed, (reported, suppressed)
    assert out.running()
    timed_echo(tin.address)  # and still serving


# --------------------------------------------------------------------------------------
# handshake floods


def no_certificate_handshake(pki, address) -> str:
    """A full TLS 1.3 handshake with Python's ssl and no client certificate: tunnel-out
    must refuse it. Returns how it ended on the client's side."""
    ctx = hd.client_context(pki, None)
    try:
        with ctx.wrap_socket(connect(address, 5), server_hostname="localhost") as s:
            s.sendall(b"must-not-arrive")
            data = s.recv(100)
            return "eof" if data == b"" else f"data {data!r}"
    except (ssl.SSLError, ConnectionError, socket.timeout) as e:
        return type(e).__name__


def test_handshake_flood_without_certificates_leaves_a_real_client_working(pki, procs, servers):
    target = servers.echo()
    out, tin = raw_pair(procs, target, out_args=["--handshake-timeout", "3s", "--status", "127.0.0.1:0"])
    timed_echo(tin.address)
    baseline = settle(out)

    # 300 connections that each send a real ClientHello and then stall: tunnel-out does its
    # share (key exchange, signature) for every one and holds it until the timeout.
    hello = hd.client_hello()
    stalled = hd.open_many(out.address, 300, payload=hello)
    # And complete handshakes without a certificate, as fast as 8 threads can make them.
    stop = threading.Event()
    endings: list[str] = []

    def flood():
        while not stop.is_set():
            endings.append(no_certificate_handshake(pki, out.address))

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        hd.wait_until(lambda: len(endings) >= 40, "the flood is under way")
        latencies = [timed_echo(tin.address) for _ in range(5)]
        assert max(latencies) < 3.0, f"real client latencies under the flood: {latencies}"
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    try:
        assert not any(e.startswith("data") for e in endings), set(endings)
        assert len(endings) >= 40
        # The stalled ClientHellos got tunnel-out's ServerHello flight (it did the work)...
        for s in (stalled[0], stalled[-1]):
            s.settimeout(5)
            assert harness.recv_exactly(s, 3) == b"\x16\x03\x03", "no ServerHello for a stalled ClientHello"
        # ...and then the timeout.
        hd.wait_until(lambda: hd.closed_count(stalled) == 300, "every stalled handshake is closed", timeout=8)
    finally:
        hd.close_all(stalled)

    hd.wait_fds(out, baseline)
    m = hd.scrape(out)
    refused = len(endings) + 300
    failed = metric(m, "tunnel_connections_total", outcome="handshake_failed")
    assert failed >= refused - 8, (failed, refused)  # a flood thread may have been cut mid-way
    assert metric(m, "tunnel_handshake_failures_total", reason="timeout") >= 300
    assert metric(m, "tunnel_connections_active") == 0
    assert target.connection_count == 6  # the warm-up and the five measured echoes only
    timed_echo(tin.address)


# --------------------------------------------------------------------------------------
# malformed records


def handshake_with_chain(address: tuple, cert: Path, key: Path) -> None:
    """One TLS 1.3 client handshake presenting `cert` (the chain) and reading until closed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection(address, timeout=30) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.settimeout(30)
                s.recv(10)
        except (ssl.SSLError, ConnectionError, socket.timeout):
            pass


def test_a_chain_that_costs_seconds_to_check_gets_its_source_penalised(procs, servers, tmp_dir):
    # mbedTLS checks each signature along a client's chain, with whatever RSA exponent the
    # chain's keys carry, before it finds the chain does not reach the CA: a chain free to
    # make costs tunnel-out a second or more. The source that sent it is kept out after.
    cert, key = tt.costly_chain(tmp_dir)
    target = servers.echo()
    # IPv4 and IPv6: two sources. One worker: the handshakes' steps take their turns on it.
    out = procs.tunnel_out(target.address, "--threads", "1", listen="[::]:0")
    port = int(out.listen.rsplit(":", 1)[1])
    # Four at once from one source: all are accepted before the first costly failure is
    # known, but the source is checked again before each handshake step.
    burst = [threading.Thread(target=handshake_with_chain, args=(("127.0.0.1", port), cert, key)) for _ in range(4)]
    for t in burst:
        t.start()
    for t in burst:
        t.join(timeout=120)
    penalised = out.wait_for_log("source penalised: a failed handshake cost much CPU", timeout=60)
    assert penalised["cpu_ms"] >= 200 and penalised["refused_for_s"] == 10, penalised
    assert "127.0.0.1" in penalised["peer"]
    stopped = out.wait_for_logs("handshake failed", 4)
    assert sum("source penalised" in r["reason"] for r in stopped) == 3, stopped
    assert len(out.logs_with_msg("source penalised: a failed handshake cost much CPU")) == 1
    # Again from the same source: refused at accept, before any handshake.
    handshake_with_chain(("127.0.0.1", port), cert, key)
    refused = out.wait_for_log(lambda r: r.get("msg") == "connection refused" and "penalised" in r.get("reason", ""))
    assert "127.0.0.1" in refused["peer"]
    costly = [r for r in out.logs_with_msg("handshake failed") if "source penalised" not in r["reason"]]
    assert len(costly) == 1 and len(out.logs_with_msg("handshake failed")) == 4
    assert costly[0]["identity"].startswith("CN=client-a") and costly[0]["chain_verified"] is False
    # Another source is served as ever.
    tin = procs.tunnel_in(f"[::1]:{port}", "--mode", "raw")
    assert echo_roundtrip(tin.address, b"from another source") == b"from another source"
    assert target.connection_count == 1


def assert_closed_with_log(out, sock, what: str, msg: str, within: float = 2.0) -> dict:
    local = "%s:%d" % sock.getsockname()[:2]
    started = time.monotonic()
    assert harness.closed_by_peer(sock, timeout=within + 1), f"tunnel-out kept a connection with {what} open"
    elapsed = time.monotonic() - started
    assert elapsed < within, f"{what}: closed only after {elapsed:.2f}s"
    rec = out.wait_for_log(lambda r: r.get("msg") == msg and r.get("peer") == local)
    assert rec["level"] in ("warning", "info", "debug"), rec
    return rec


EXPECTED_REASON = {
    "truncated": "peer closed the connection during the handshake",
    "oversized": "record longer than TLS allows (record_overflow)",
}


@pytest.mark.parametrize("shape", ["truncated", "oversized"])
def test_malformed_record_before_the_handshake_is_refused_with_a_clear_log(procs, servers, shape):
    target = servers.echo()
    out, tin = raw_pair(procs, target)
    hello = hd.client_hello()
    with connect(out.address) as s:
        if shape == "truncated":
            s.sendall(hello[: len(hello) // 2])  # a record cut in the middle, then EOF
            s.shutdown(socket.SHUT_WR)
        else:  # a handshake record claiming more than 2^14 + 256 bytes
            s.sendall(hd.tls_record(hd.HANDSHAKE, hello[5:], length=hd.MAX_CIPHERTEXT + 1))
        rec = assert_closed_with_log(out, s, f"a {shape} record", "handshake failed")
    assert rec["level"] == "warning"
    assert rec["reason"] == EXPECTED_REASON[shape], rec
    assert target.connection_count == 0
    timed_echo(tin.address)  # the process keeps serving
    assert target.connection_count == 1


@pytest.mark.parametrize("shape", ["truncated", "oversized"])
def test_malformed_record_from_an_authenticated_client_ends_only_that_connection(pki, procs, servers, shape):
    target = servers.echo()
    out, tin = raw_pair(procs, target)
    client = hd.BioClient(out.address, hd.client_context(pki, pki.client_a))
    try:
        client.handshake()
        client.send(b"authorized\n")
        assert client.recv() == b"authorized\n"
        if shape == "truncated":  # an application record cut short, then EOF
            client.sock.sendall(hd.tls_record(hd.APPLICATION_DATA, os.urandom(40), length=400))
            client.sock.shutdown(socket.SHUT_WR)
        else:
            client.sock.sendall(hd.tls_record(hd.APPLICATION_DATA, os.urandom(400), length=hd.MAX_CIPHERTEXT + 1))
        rec = assert_closed_with_log(out, client.sock, f"a {shape} record", "connection closed")
    finally:
        client.close()
    expected = {"truncated": "connection ended without TLS close_notify"}.get(shape, EXPECTED_REASON[shape])
    assert rec["reason"] == f"client read: {expected}", rec
    assert rec["bytes_up"] == len(b"authorized\n")
    timed_echo(tin.address)
    assert out.running()


# --------------------------------------------------------------------------------------
# a legacy reader that stops reading

# What the processes may hold for one stalled connection, however much is pushed at it:
# raw mode 16 KiB per direction plus mbedTLS's record buffers; mux mode a 256 KiB stream
# window (4 MiB per connection at most) plus a 256 KiB send queue. The bound: each process
# grows by less than 8 MiB (raw) / 12 MiB (mux) over its idle size and stays under 32 MiB
# of RSS, while the gigabyte passes through (measured: under 1 MiB of growth, 8 MiB peak).
RSS_GROWTH_BOUND_KIB = {"raw": 8 * 1024, "mux": 12 * 1024}
RSS_ABSOLUTE_BOUND_KIB = 32 * 1024


@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_1gib_pushed_at_a_stalled_reader_keeps_both_processes_small(procs, servers, mode):
    if os.environ.get("TUNNEL_SANITIZED"):
        pytest.skip("memory bounds are not measurable under a sanitizer (its shadow memory and quarantine)")
    total = 1 << 30
    sender = hd.ChunkSender(total)
    target = servers.start(sender.handler)
    out = procs.tunnel_out(target.address, level="info")
    tin = procs.tunnel_in(out.listen, "--mode", mode, level="info")
    if mode == "mux":
        tin.wait_for_log("mux connection up")
    before = {p.name: hd.rss_kib(p) for p in (out, tin)}
    peak = dict(before)
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            for p in (out, tin):
                peak[p.name] = max(peak[p.name], hd.rss_kib(p))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    reader = connect(tin.address, timeout=60)
    try:
        target.wait_connections(1)
        held = sender.stalled(quiet=1.5)
        # Backpressure: the target is stopped by full buffers, not by the tunnel swallowing it.
        assert held < 64 * MiB, f"{held >> 20} MiB went in while nobody read"
        # Now read the whole gigabyte: it arrives intact, and memory stays bounded throughout.
        assert hd.read_digest(reader, total) == sender.sha256
        assert sender.finished.wait(10)
    finally:
        sampling.set()
        sampler.join(5)
        reader.close()
    growth = {name: peak[name] - before[name] for name in peak}
    print(f"{mode}: held {held >> 20} MiB while stalled; RSS KiB before {before}, peak {peak}")
    for name in peak:
        assert growth[name] < RSS_GROWTH_BOUND_KIB[mode], f"{name} grew by {growth[name]} KiB"
        assert peak[name] < RSS_ABSOLUTE_BOUND_KIB, f"{name} peaked at {peak[name]} KiB"


# --------------------------------------------------------------------------------------
# certificate matrix: the cases test_tcp.py and test_trust.py do not already have


def test_client_certificate_not_yet_valid_is_refused(pki, procs, servers):
    # tunnel-in refuses to start with it (test_trust.py): the client here is Python's ssl.
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    refused_direct(pki, out, pki.not_yet_valid_client)
    failed = out.wait_for_log("handshake failed")
    assert "future" in failed["reason"].lower(), failed
    time.sleep(0.3)
    assert target.connection_count == 0
    assert not out.logs_with_msg("connection authorized")


def test_client_certificate_with_server_auth_only_is_refused(pki, procs, servers):
    # tunnel-in refuses to start with such a certificate (below): the client here is
    # Python's ssl, so the check under test is tunnel-out's, in the handshake.
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    refused_direct(pki, out, pki.server_eku_client)
    failed = out.wait_for_log("handshake failed")
    assert "usage" in failed["reason"].lower() or "purpose" in failed["reason"].lower(), failed
    time.sleep(0.3)
    assert target.connection_count == 0
    assert not out.logs_with_msg("connection authorized")


@pytest.mark.parametrize("side", ["tunnel-out", "tunnel-in"])
def test_own_certificate_for_the_other_side_is_refused_at_start(pki, side):
    # A server certificate without serverAuth, a client certificate without clientAuth:
    # every peer would refuse it, so it is a configuration mistake, reported at start-up.
    if side == "tunnel-out":
        cred, args, purpose = pki.client_eku_server, ["--target", "127.0.0.1:9"], "serverAuth"
        binary = harness.TUNNEL_OUT
    else:
        cred, args, purpose = pki.server_eku_client, ["--connect", "127.0.0.1:9"], "clientAuth"
        binary = harness.TUNNEL_IN
    r = harness.run_cli(binary, ["--listen", "127.0.0.1:0", *args, "--cert", str(cred.cert), "--key", str(cred.key),
                                 "--ca", str(pki.ca_cert)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and purpose in lines[0] and str(cred.cert) in lines[0], r.stderr


def refused_by_tunnel_in(pki, procs, cred, words: tuple[str, ...]) -> None:
    """tunnel-in against openssl s_server presenting `cred` (a certificate tunnel-out would
    refuse to start with): the check under test is tunnel-in's, in the handshake."""
    server = OpenSSLTool([
        "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-tls1_3", "-Verify", "1",
        "-cert", str(cred.cert), "-key", str(cred.key), "-CAfile", str(pki.ca_cert),
    ])
    try:
        port = int(server.wait_output_re(r"ACCEPT 127\.0\.0\.1:(\d+)\r?\n").group(1))
        tin = procs.tunnel_in(f"127.0.0.1:{port}", "--mode", "raw", "--server-name", "localhost")
        with connect(tin.address) as s:
            s.sendall(b"must-not-arrive\n")
            assert harness.closed_by_peer(s, timeout=5)
        failed = tin.wait_for_log("handshake with tunnel-out failed")
        assert any(w in failed["reason"].lower() for w in words), failed
        assert "must-not-arrive" not in server.output
    finally:
        server.kill()


def test_tunnel_in_refuses_a_server_certificate_not_yet_valid(pki, procs):
    refused_by_tunnel_in(pki, procs, pki.not_yet_valid_server, ("future",))


def test_tunnel_in_refuses_a_server_certificate_with_client_auth_only(pki, procs):
    refused_by_tunnel_in(pki, procs, pki.client_eku_server, ("usage", "purpose"))


# --------------------------------------------------------------------------------------
# ciphertext on the wire

needs_capture = pytest.mark.skipif(hd.capture_unavailable() is not None,
                                   reason=f"no loopback capture: {hd.capture_unavailable()}")


@needs_capture
@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_marker_crosses_plain_legs_in_clear_and_secure_leg_encrypted_tcp(procs, servers, mode):
    target = servers.echo()
    out = procs.tunnel_out(target.address, level="info")
    tin = procs.tunnel_in(out.listen, "--mode", mode, level="info")
    target_port = harness.split_address(target.address)[1]
    marker = b"CLEAR-MARKER-" + os.urandom(8).hex().encode()
    payload = marker * 3000
    capture = hd.Capture({tin.port, out.port, target_port})
    try:
        assert echo_roundtrip(tin.address, payload) == payload
        time.sleep(0.3)
    finally:
        capture.stop()
    client_leg = capture.payload(tin.port, "tcp")
    secure_leg = capture.payload(out.port, "tcp")
    target_leg = capture.payload(target_port, "tcp")
    assert marker in client_leg and marker in target_leg, "the capture missed the plain legs"
    assert len(secure_leg) > 2 * len(payload), f"only {len(secure_leg)} bytes seen on the secure leg"
    # TLS records (TLS 1.3 application data, 0x17 0x03 0x03), one at least per 16 KiB.
    assert secure_leg.count(b"\x17\x03\x03") >= 2 * len(payload) // 16384, secure_leg[:16]
    assert marker not in secure_leg
    assert marker[:8] not in secure_leg  # not even a prefix of it


@needs_capture
def test_marker_crosses_plain_legs_in_clear_and_secure_leg_encrypted_udp(procs):
    echo = udp_tools.UdpEcho()
    client = udp_tools.udp_socket()
    try:
        out = procs.tunnel_out(echo.address, "--udp", level="info")
        tin = procs.tunnel_in(out.listen, "--udp", level="info")
        echo_port = harness.split_address(echo.address)[1]
        marker = b"CLEAR-MARKER-" + os.urandom(8).hex().encode()
        capture = hd.Capture({tin.port, out.port, echo_port})
        try:
            answered = 0
            for i in range(40):
                datagram = marker * 30 + b"#%d" % i
                if udp_tools.ping(client, f"127.0.0.1:{tin.port}", datagram, timeout=2) == datagram:
                    answered += 1
            time.sleep(0.3)
        finally:
            capture.stop()
        assert answered >= 35, f"only {answered} of 40 datagrams came back"
        client_leg = capture.payload(tin.port, "udp")
        secure_leg = capture.payload(out.port, "udp")
        target_leg = capture.payload(echo_port, "udp")
        assert marker in client_leg and marker in target_leg, "the capture missed the plain legs"
        assert len(secure_leg) > 2 * answered * len(marker) * 30
        assert secure_leg[0] in (22, 23, 25), secure_leg[:16]  # DTLS handshake / application / CID
        assert marker not in secure_leg and marker[:8] not in secure_leg
    finally:
        client.close()
        echo.close()
