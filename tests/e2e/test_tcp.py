"""End-to-end tests of tunnel-in / tunnel-out carrying plain TCP over mutual TLS 1.3.

Each test starts the real binaries (harness.TUNNEL_IN / TUNNEL_OUT) on ephemeral loopback
ports, drives real sockets through them, and asserts on bytes, connection counts at the
legacy target, exit codes and JSON log lines.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness
from hardening import cpu_seconds
from harness import (
    TUNNEL_IN,
    TUNNEL_OUT,
    closed_by_peer,
    connect,
    echo_roundtrip,
    recv_all,
    recv_exactly,
    run_cli,
    sha256,
)
MiB = 1 << 20


# --------------------------------------------------------------------------------------
# helpers


def tls_client_context(pki, cred=None, min_version=ssl.TLSVersion.TLSv1_3, max_version=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    ctx.load_verify_locations(cafile=str(pki.ca_cert))
    if cred is not None:
        ctx.load_cert_chain(str(cred.cert), str(cred.key))
    return ctx


def direct_tls_echo(pki, out_proc, cred, payload: bytes, timeout: float = 5.0) -> bytes:
    """Speaks TLS straight to tunnel-out with Python's ssl (as `cred`, or with no client
    certificate when cred is None), sends `payload`, and returns what came back (at most as
    many bytes) before the connection ended. A refusal shows up as an SSL error or as an early EOF."""
    ctx = tls_client_context(pki, cred)
    raw = connect(out_proc.address, timeout)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(payload)
        chunks = []
        while sum(map(len, chunks)) < len(payload):
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def refused_direct(pki, out_proc, cred) -> str:
    """Asserts that tunnel-out refuses a direct TLS client; returns what the client saw."""
    try:
        got = direct_tls_echo(pki, out_proc, cred, b"must-not-arrive\n")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        return f"{type(e).__name__}: {e}"
    assert got == b"", f"refused client received data: {got!r}"
    return "eof"


def wait_refused_by_pair(tin, payload: bytes = b"hello?\n", timeout: float = 5.0) -> None:
    """A legacy client of tunnel-in whose tunnel is refused: its connection is closed and it
    receives nothing."""
    with connect(tin.address) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(timeout)
        try:
            data = recv_all(s)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            raise AssertionError(
                f"tunnel-in kept the legacy client's connection open for {timeout}s although the tunnel was refused"
            )
        assert data == b"", f"legacy client of a refused tunnel received {data!r}"


def assert_echo(address, size: int = 64 * 1024) -> None:
    payload = os.urandom(size)
    got = echo_roundtrip(address, payload)
    assert sha256(got) == sha256(payload), f"echo mismatch: sent {len(payload)} bytes, got {len(got)}"


class OpenSSLTool:
    """openssl s_client / s_server with stdin piped in and stdout+stderr collected."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(
            ["openssl", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._buf = b""
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            data = self.proc.stdout.read1(65536)
            with self._cond:
                if not data:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buf += data
                self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", "replace")

    def wait_output(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while needle.encode() not in self._buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"openssl output lacks {needle!r}:\n{self.output}")
                self._cond.wait(remaining)
        return self.output

    def wait_output_re(self, pattern: str, timeout: float = 10.0) -> re.Match:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = re.search(pattern, self._buf.decode("utf-8", "replace"))
                if m:
                    return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"openssl output does not match {pattern!r}:\n{self.output}")
                self._cond.wait(remaining)

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def wait(self, timeout: float = 10.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        with self._cond:
            end = time.monotonic() + 5
            while not self._eof and time.monotonic() < end:
                self._cond.wait(0.1)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def openssl_tools():
    tools: list[OpenSSLTool] = []

    def start(args: list[str]) -> OpenSSLTool:
        t = OpenSSLTool(args)
        tools.append(t)
        return t

    try:
        yield start
    finally:
        for t in tools:
            t.close_stdin()
            t.kill()


def s_client_args(pki, out_proc, *extra: str, cred=None) -> list[str]:
    host, port = out_proc.address
    args = ["s_client", "-connect", f"{host}:{port}", "-servername", "localhost",
            "-CAfile", str(pki.ca_cert), "-verify_return_error", *extra]
    if cred is not None:
        args += ["-cert", str(cred.cert), "-key", str(cred.key)]
    return args


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------
# bulk data, concurrency, half-close


def test_64mib_each_way_at_once_arrives_intact(procs, servers):
    down = os.urandom(64 * MiB)
    up = os.urandom(64 * MiB)
    target = servers.sender(down)  # sends `down`, half-closes, hashes what it receives
    out, tin = procs.pair(target.address)

    with connect(tin.address, timeout=60) as s:
        def send():
            s.sendall(up)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        h = hashlib.sha256()
        received = 0
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            h.update(data)
            received += len(data)
        sender.join(60)
        assert not sender.is_alive()

    assert received == len(down)
    assert h.hexdigest() == sha256(down), "bytes from the target arrived altered"
    (conn,) = target.wait_connections(1)
    assert conn.done.wait(30), "target never saw the end of the upload"
    assert conn.error is None, conn.error
    assert conn.received == len(up)
    assert conn.sha256 == sha256(up), "bytes from the client arrived altered"

    closed = tin.wait_for_log("connection closed")
    assert closed["bytes_up"] == len(up) and closed["bytes_down"] == len(down)
    assert closed["reason"] == "closed"
    closed_out = out.wait_for_log("connection closed")
    assert closed_out["bytes_up"] == len(up) and closed_out["bytes_down"] == len(down)


def test_200_concurrent_connections_each_carry_their_own_data(procs, servers):
    target = servers.echo()
    out, tin = procs.pair(target.address)
    n = 200
    barrier = threading.Barrier(n, timeout=60)
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int):
        try:
            rng = random.Random(i)
            payload = f"connection {i:03d}\n".encode() + rng.randbytes(16 * 1024 + i * 97)
            with connect(tin.address, timeout=60) as s:
                barrier.wait()  # all 200 are open through the tunnel at the same time
                reader_out = {}

                def reader():
                    reader_out["data"] = recv_all(s)

                t = threading.Thread(target=reader, daemon=True)
                t.start()
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                t.join(60)
                got = reader_out.get("data", b"")
            if got != payload:
                raise AssertionError(f"connection {i}: sent {len(payload)} bytes, got back {len(got)} different")
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            with lock:
                errors.append(f"{i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, f"{len(errors)} connections failed, first: {errors[:3]}"
    assert target.connection_count == n
    wait_until(lambda: len(out.logs_with_msg("connection authorized")) == n, "tunnel-out authorized all")
    wait_until(lambda: len(tin.logs_with_msg("connection closed")) == n, "tunnel-in closed all")
    assert all(r["reason"] == "closed" for r in tin.logs_with_msg("connection closed"))


def test_half_close_client_request_then_large_reply(procs, servers):
    reply = os.urandom(1 * MiB)
    request = b"GET everything\n" + os.urandom(100_000)
    target = servers.reply_after_eof(reply)  # answers only once the request has ended
    out, tin = procs.pair(target.address)

    with connect(tin.address) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)  # our side is done; the reply must still come
        got = recv_all(s)

    assert len(got) == len(reply)
    assert sha256(got) == sha256(reply)
    (conn,) = target.wait_connections(1)
    assert conn.done.wait(10)
    assert conn.sha256 == sha256(request)
    assert tin.wait_for_log("connection closed")["reason"] == "closed"
    assert out.wait_for_log("connection closed")["reason"] == "closed"


def test_half_close_server_finishes_first_while_client_keeps_sending(procs, servers):
    reply = os.urandom(1 * MiB)
    target = servers.sender(reply)  # sends at once, half-closes, then reads until EOF
    out, tin = procs.pair(target.address)
    upload = [os.urandom(64 * 1024) for _ in range(16)]

    with connect(tin.address) as s:
        got = recv_all(s)  # the server's whole reply, ending with its half-close
        assert sha256(got) == sha256(reply), f"reply altered ({len(got)} of {len(reply)} bytes)"
        # The server has finished sending; we keep sending, slowly, on the same connection.
        for chunk in upload:
            s.sendall(chunk)
            time.sleep(0.01)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""

    (conn,) = target.wait_connections(1)
    assert conn.done.wait(10), "server never saw the client's end"
    assert conn.error is None, conn.error
    assert conn.received == sum(map(len, upload))
    assert conn.sha256 == sha256(b"".join(upload))
    assert tin.wait_for_log("connection closed")["reason"] == "closed"


# --------------------------------------------------------------------------------------
# client authentication and authorization at tunnel-out


def test_client_from_foreign_ca_is_refused_and_target_not_contacted(pki, procs, servers):
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    tin = procs.tunnel_in(out.listen, cred=pki.foreign_client)

    wait_refused_by_pair(tin)
    failed = out.wait_for_log("handshake failed")
    assert failed["level"] == "warning"
    assert "trusted ca" in failed["reason"].lower() or "not correctly signed" in failed["reason"].lower(), failed
    time.sleep(0.2)
    assert target.connection_count == 0
    assert not out.logs_with_msg("connection authorized")


def test_client_without_certificate_is_refused_and_target_not_contacted(pki, procs, servers):
    target = servers.counter()
    out = procs.tunnel_out(target.address)

    seen = refused_direct(pki, out, cred=None)
    failed = out.wait_for_log("handshake failed")
    assert failed["reason"], failed
    assert failed["identity"] == "unknown"
    time.sleep(0.2)
    assert target.connection_count == 0, seen
    assert not out.logs_with_msg("connection authorized")


def test_client_not_on_allow_list_is_refused_and_target_not_contacted(pki, procs, servers):
    target = servers.counter()
    out = procs.tunnel_out(target.address, "--allow-cn", "client-b")
    tin = procs.tunnel_in(out.listen, cred=pki.client_a)

    wait_refused_by_pair(tin)
    failed = out.wait_for_log("handshake failed")
    assert failed["reason"] == "peer certificate not on the allow-list"
    assert failed["identity"].startswith("CN=client-a ")
    time.sleep(0.2)
    assert target.connection_count == 0
    assert not out.logs_with_msg("connection authorized")


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--allow-cn", "client-a"),
        ("--allow-dns", "client-a.test"),
        ("--allow-uri", "spiffe://test/client-a"),
        ("--allow-ip", "10.9.8.7"),
        ("--allow-spki-sha256", None),  # client-a's key digest, filled in below
    ],
    ids=["cn", "dns", "uri", "ip", "spki"],
)
def test_allow_list_entry_admits_matching_client_only(pki, procs, servers, flag, value):
    if value is None:
        value = pki.client_a.spki_sha256
    target = servers.echo()
    out = procs.tunnel_out(target.address, flag, value)
    tin = procs.tunnel_in(out.listen, cred=pki.client_a)

    assert_echo(tin.address)
    authorized = out.wait_for_log("connection authorized")
    assert authorized["identity"].startswith("CN=client-a ")
    # The same tunnel-out refuses client-b, which matches no entry: the flag really filters.
    refused_direct(pki, out, pki.client_b)
    failed = out.wait_for_log("handshake failed")
    assert failed["reason"] == "peer certificate not on the allow-list"
    assert failed["identity"].startswith("CN=client-b")
    assert failed["chain_verified"] is True  # client-b's certificate, only not admitted
    assert target.connection_count == 1


def test_expired_client_certificate_is_refused(pki, procs, servers):
    # tunnel-in refuses to start with an expired certificate of its own: the client here
    # is Python's ssl, so the check under test is tunnel-out's, in the handshake.
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    refused_direct(pki, out, pki.expired_client)
    failed = out.wait_for_log("handshake failed")
    assert "expired" in failed["reason"].lower(), failed
    time.sleep(0.2)
    assert target.connection_count == 0


# --------------------------------------------------------------------------------------
# server authentication at tunnel-in


def test_tunnel_in_refuses_server_without_expected_name(pki, procs, servers):
    target = servers.counter()
    out = procs.tunnel_out(target.address, cred=pki.wrong_name_server)
    tin = procs.tunnel_in(out.listen)  # expects 127.0.0.1 (host of --connect)

    wait_refused_by_pair(tin)
    failed = tin.wait_for_log("handshake with tunnel-out failed")
    assert failed["level"] == "warning"
    reason = failed["reason"].lower()
    assert "cn" in reason or "common name" in reason or "name" in reason, failed
    assert "elsewhere.test" in failed["identity"]
    time.sleep(0.2)
    assert target.connection_count == 0
    assert not tin.logs_with_msg("connection authorized")


def test_server_name_override_accepts_server_with_that_name(pki, procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address, cred=pki.wrong_name_server)
    tin = procs.tunnel_in(out.listen, "--server-name", "elsewhere.test")

    assert_echo(tin.address)
    assert "elsewhere.test" in tin.wait_for_log("connection authorized")["identity"]


def test_server_name_override_refuses_server_lacking_that_name(pki, procs, servers):
    target = servers.counter()
    out = procs.tunnel_out(target.address)  # the good server: localhost, 127.0.0.1, ::1
    tin = procs.tunnel_in(out.listen, "--server-name", "elsewhere.test")

    wait_refused_by_pair(tin)
    tin.wait_for_log("handshake with tunnel-out failed")
    time.sleep(0.2)
    assert target.connection_count == 0


def test_pinned_server_key_is_accepted(pki, procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address)
    tin = procs.tunnel_in(out.listen, "--pin-spki-sha256", pki.server.spki_sha256)

    assert_echo(tin.address)
    tin.wait_for_log("connection authorized")


def test_pin_replaces_name_check(pki, procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address, cred=pki.wrong_name_server)
    tin = procs.tunnel_in(out.listen, "--pin-spki-sha256", pki.wrong_name_server.spki_sha256)

    assert_echo(tin.address)
    tin.wait_for_log("connection authorized")


def test_wrong_pin_is_refused(pki, procs, servers):
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    tin = procs.tunnel_in(out.listen, "--pin-spki-sha256", pki.client_b.spki_sha256)

    wait_refused_by_pair(tin)
    failed = tin.wait_for_log("handshake with tunnel-out failed")
    assert failed["reason"] == "server key does not match any pin"
    time.sleep(0.2)
    assert target.connection_count == 0


# --------------------------------------------------------------------------------------
# interoperability with OpenSSL


def test_openssl_s_client_tls13_reaches_echo_target(pki, procs, servers, openssl_tools):
    target = servers.echo()
    out = procs.tunnel_out(target.address)
    client = openssl_tools(s_client_args(pki, out, "-tls1_3", cred=pki.client_a))

    token = f"ping-{os.urandom(8).hex()}"
    client.wait_output("Verify return code: 0 (ok)")
    client.write(f"{token}\n".encode())
    output = client.wait_output(token)
    client.close_stdin()
    client.wait()
    assert "New, TLSv1.3, Cipher is" in output
    authorized = out.wait_for_log("connection authorized")
    assert authorized["tls"] == "TLSv1.3"
    assert authorized["identity"].startswith("CN=client-a ")
    (conn,) = target.wait_connections(1)
    assert conn.done.wait(10)
    assert conn.sha256 == sha256(f"{token}\n".encode())


def test_tls12_only_client_is_refused_by_default(pki, procs, servers, openssl_tools):
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    client = openssl_tools(s_client_args(pki, out, "-tls1_2", cred=pki.client_a))
    client.close_stdin()
    rc = client.wait()

    assert rc != 0, client.output
    assert "New, TLSv1.2" not in client.output
    failed = out.wait_for_log("handshake failed")
    assert failed["reason"]
    time.sleep(0.2)
    assert target.connection_count == 0
    assert not out.logs_with_msg("connection authorized")


def test_tls_min_12_admits_tls12_client(pki, procs, servers, openssl_tools):
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--tls-min", "1.2")
    client = openssl_tools(s_client_args(pki, out, "-tls1_2", cred=pki.client_a))

    token = f"ping12-{os.urandom(8).hex()}"
    client.wait_output("Verify return code: 0 (ok)")
    client.write(f"{token}\n".encode())
    output = client.wait_output(token)
    client.close_stdin()
    client.wait()
    assert "New, TLSv1.2, Cipher is" in output
    assert out.wait_for_log("connection authorized")["tls"] == "TLSv1.2"


@pytest.mark.skipif(harness.TUNNEL_MODE == "mux", reason="s_server speaks plain TLS: --mode mux refuses it by design")
def test_tunnel_in_works_against_openssl_s_server(pki, procs, openssl_tools):
    server = openssl_tools([
        "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-Verify", "1", "-verify_return_error",
        "-tls1_3", "-cert", str(pki.server.cert), "-key", str(pki.server.key),
        "-CAfile", str(pki.ca_cert),
    ])
    port = int(server.wait_output_re(r"ACCEPT 127\.0\.0\.1:(\d+)\r?\n").group(1))
    tin = procs.tunnel_in(f"127.0.0.1:{port}", "--server-name", "localhost")

    request = f"request-{os.urandom(8).hex()}"
    reply = f"reply-{os.urandom(8).hex()}"
    with connect(tin.address) as s:
        s.sendall(f"{request}\n".encode())
        output = server.wait_output(request)  # s_server prints what it receives
        server.write(f"{reply}\n".encode())  # and sends its stdin to the client
        got = b""
        while b"\n" not in got:
            data = s.recv(4096)
            assert data, f"connection ended before the reply; got {got!r}"
            got += data
        assert got == f"{reply}\n".encode()

    # tunnel-in presented its client certificate and s_server verified it.
    assert "CN = client-a" in output
    assert "Client certificate" in output
    assert "verify error" not in output.lower()
    authorized = tin.wait_for_log("connection authorized")
    assert authorized["tls"] == "TLSv1.3"
    assert authorized["identity"].startswith("CN=tunnel-out")


# --------------------------------------------------------------------------------------
# junk on the TLS port, probes


@pytest.mark.parametrize(
    "junk",
    [
        bytes(random.Random(7).randbytes(700)),
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: e2e\r\n\r\n",
    ],
    ids=["garbage", "plaintext-http"],
)
def test_junk_on_tls_port_is_closed_and_service_continues(pki, procs, servers, junk):
    target = servers.echo()
    out, tin = procs.pair(target.address)

    with connect(out.address) as s:
        local = "%s:%d" % s.getsockname()[:2]
        s.sendall(junk)
        assert closed_by_peer(s, timeout=5), "tunnel-out kept a junk connection open"
    failed = out.wait_for_log(lambda r: r.get("msg") == "handshake failed" and r.get("peer") == local)
    assert failed["level"] == "warning"
    assert failed["reason"]
    assert target.connection_count == 0

    assert_echo(tin.address)  # a good connection right after still works
    assert target.connection_count == 1


def test_tcp_probe_logs_only_at_debug(pki, procs, servers):
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    quiet = procs.tunnel_out(target.address, level="info")

    with connect(out.address) as s:
        local = "%s:%d" % s.getsockname()[:2]
    probe = out.wait_for_log(lambda r: r.get("peer") == local)
    assert probe["msg"] == "probe connection closed before handshake"
    assert probe["level"] == "debug"
    time.sleep(0.3)
    about_probe = out.find_logs(lambda r: r.get("peer") == local)
    assert [r["level"] for r in about_probe] == ["debug"], about_probe

    with connect(quiet.address) as s:
        quiet_local = "%s:%d" % s.getsockname()[:2]
    time.sleep(0.5)
    assert quiet.find_logs(lambda r: r.get("peer") == quiet_local) == []
    assert target.connection_count == 0


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],  # nothing / a ClientHello cut short
    ids=["silent", "partial-client-hello"],
)
def test_handshake_timeout_closes_stalled_client(procs, servers, sent):
    target = servers.counter()
    out = procs.tunnel_out(target.address, "--handshake-timeout", "500ms")

    with connect(out.address) as s:
        local = "%s:%d" % s.getsockname()[:2]
        if sent:
            s.sendall(sent)
        started = time.monotonic()
        assert closed_by_peer(s, timeout=4), "stalled handshake was not ended"
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s with --handshake-timeout 500ms"
    failed = out.wait_for_log(lambda r: r.get("msg") == "handshake failed" and r.get("peer") == local)
    assert failed["reason"].startswith("handshake timeout"), failed
    assert ("peer sent nothing" in failed["reason"]) == (sent == b"")
    assert target.connection_count == 0


# --------------------------------------------------------------------------------------
# shutdown


def assert_refuses_new_connections(proc, within: float = 1.0) -> None:
    """New TCP connections to `proc`'s port are refused (the listener is closed) within
    `within` seconds. (The log line may precede the close by a moment.)"""
    deadline = time.monotonic() + within
    while True:
        try:
            connect(proc.address, timeout=2).close()
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            pass  # caught in the listener's backlog as it closed: try again
        assert time.monotonic() < deadline, f"{proc.name} still accepts connections {within}s after SIGTERM"
        time.sleep(0.02)


@pytest.mark.parametrize("signalled", ["tunnel-in", "tunnel-out"])
def test_sigterm_lets_inflight_transfer_finish_and_exits_0(procs, servers, signalled):
    target = servers.sink()  # hashes everything, answers with the digest
    out, tin = procs.pair(target.address)
    proc = tin if signalled == "tunnel-in" else out
    chunks = [os.urandom(64 * 1024) for _ in range(20)]

    with connect(tin.address, timeout=20) as s:
        s.sendall(chunks[0])
        target.wait_connections(1)
        out.wait_for_log("connection authorized")

        proc.signal(signal.SIGTERM)
        proc.wait_for_log("shutting down: no longer accepting")
        assert_refuses_new_connections(proc)
        assert proc.running(), "exited while a transfer was still in flight"

        for chunk in chunks[1:]:  # ~1 s of slow sending after the signal
            s.sendall(chunk)
            time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        digest = recv_all(s).decode()

    assert digest == sha256(b"".join(chunks)), "in-flight transfer was damaged by shutdown"
    assert proc.wait(timeout=10) == 0, proc.log_text()
    proc.wait_for_log("stopped")
    assert not proc.logs_with_msg("shutdown timeout passed; closing remaining connections")
    other = out if proc is tin else tin
    assert other.running()


def _stuck_connection_then_sigterm(procs, servers, signalled):
    """A tunneled connection that never ends (the target holds it), then SIGTERM to one side
    started with --shutdown-timeout 1s. Returns (process, rc, seconds to exit, legacy socket)."""
    target = servers.hold()
    flags = ["--shutdown-timeout", "1s"]
    out, tin = procs.pair(target.address, out_args=flags, in_args=flags)
    proc = tin if signalled == "tunnel-in" else out
    s = connect(tin.address, timeout=20)
    s.sendall(b"stuck\n")
    target.wait_connections(1)
    out.wait_for_log("connection authorized")
    tin.wait_for_log("connection authorized")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    rc = proc.wait(timeout=10)
    return proc, rc, time.monotonic() - started, s


@pytest.mark.parametrize("signalled", ["tunnel-in", "tunnel-out"])
def test_shutdown_timeout_ends_stuck_connection_and_exits_0(procs, servers, signalled):
    proc, rc, elapsed, s = _stuck_connection_then_sigterm(procs, servers, signalled)
    with s:
        assert rc == 0, proc.log_text()
        assert 0.8 <= elapsed <= 4.0, f"exited after {elapsed:.2f}s with --shutdown-timeout 1s"
        proc.wait_for_log("shutdown timeout passed; closing remaining connections")
        assert closed_by_peer(s, timeout=5), f"legacy client still connected after {signalled} exited"


# --------------------------------------------------------------------------------------
# limits and timeouts


@pytest.mark.parametrize("limited", ["tunnel-in", "tunnel-out"])
def test_max_conns_closes_extra_connection_at_once(procs, servers, limited):
    target = servers.echo()
    if limited == "tunnel-in":
        out, tin = procs.pair(target.address, in_args=["--max-conns", "2"])
    else:
        # In mux mode tunnel-in keeps a connection per worker (--pool defaults to --threads):
        # two workers, so its pool fits in tunnel-out's limit on a machine with more cores.
        out, tin = procs.pair(target.address, out_args=["--max-conns", "2"], in_args=["--threads", "2"])
    proc = tin if limited == "tunnel-in" else out

    first, second = connect(tin.address), connect(tin.address)
    try:
        for i, s in enumerate((first, second)):
            s.sendall(f"conn{i}\n".encode())
            assert recv_exactly(s, 6) == f"conn{i}\n".encode()
        target.wait_connections(2)

        started = time.monotonic()
        with connect(tin.address) as third:
            try:
                third.sendall(b"third\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert closed_by_peer(third, timeout=3), "third connection was not closed"
        assert time.monotonic() - started < 2.0
        refused = proc.wait_for_log("connection refused: limit reached")
        assert refused["level"] == "warning" and refused["max_conns"] == 2

        for i, s in enumerate((first, second)):  # the first two keep working
            s.sendall(f"more{i}\n".encode())
            assert recv_exactly(s, 6) == f"more{i}\n".encode()
        assert target.connection_count == 2
    finally:
        first.close()
        second.close()


def test_idle_timeout_closes_idle_connection(procs, servers):
    target = servers.echo()
    out, tin = procs.pair(target.address, out_args=["--idle-timeout", "500ms"])

    with connect(tin.address) as s:
        s.sendall(b"hello\n")
        assert recv_exactly(s, 6) == b"hello\n"
        started = time.monotonic()
        assert closed_by_peer(s, timeout=4), "idle connection was not closed"
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s with --idle-timeout 500ms"
    closed = out.wait_for_log("connection closed")
    assert closed["reason"] == "idle timeout"


def test_max_lifetime_closes_a_busy_connection(procs, servers):
    """--max-lifetime ends a connection however busy it is (the idle timeout never would)."""
    target = servers.echo()
    out, tin = procs.pair(target.address, out_args=["--max-lifetime", "1s"])
    with connect(tin.address) as s:
        started = time.monotonic()
        s.settimeout(0.5)
        ended = False
        while time.monotonic() - started < 8 and not ended:
            try:
                s.sendall(b"tick")
                data = recv_all(s, 4)
                ended = data != b"tick"
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                ended = True
            time.sleep(0.1)
        elapsed = time.monotonic() - started
    assert ended, "a connection busy for 8 s outlived --max-lifetime 1s"
    assert 0.8 <= elapsed <= 5.0, f"closed after {elapsed:.2f}s with --max-lifetime 1s"
    closed = out.wait_for_log(lambda r: r.get("msg") == "connection closed" and r.get("reason") == "max lifetime reached")
    assert closed["bytes_up"] > 0


def test_close_timeout_ends_connection_after_half_close(procs, servers):
    target = servers.hold()  # reads until EOF, then neither answers nor closes
    out, tin = procs.pair(target.address, out_args=["--close-timeout", "500ms"])
    request = os.urandom(10_000)

    with connect(tin.address) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        assert closed_by_peer(s, timeout=4), "half-closed connection was not ended"
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed <= 3.0, f"ended after {elapsed:.2f}s with --close-timeout 500ms"
    closed = out.wait_for_log("connection closed")
    assert closed["reason"] == "close timeout after half-close"
    (conn,) = target.wait_connections(1)
    assert conn.sha256 == sha256(request)


def test_unreachable_tunnel_out_closes_legacy_client(procs):
    port = harness.free_tcp_port()
    tin = procs.tunnel_in(f"127.0.0.1:{port}", "--connect-timeout", "2s")

    with connect(tin.address) as s:
        started = time.monotonic()
        assert closed_by_peer(s, timeout=3)
        assert time.monotonic() - started < 1.5
    failed = tin.wait_for_log("tunnel-out unreachable")
    assert failed["level"] == "warning"
    assert "refused" in failed["error"].lower(), failed


def test_connect_timeout_bounds_dial_to_unresponsive_tunnel_out(procs):
    # A listener with a full backlog that never accepts: the kernel drops further SYNs,
    # so a dial neither succeeds nor fails until the connect timeout.
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(3):
        f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        f.setblocking(False)
        try:
            f.connect(blackhole.getsockname())
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.1)
    try:
        tin = procs.tunnel_in("127.0.0.1:%d" % blackhole.getsockname()[1], "--connect-timeout", "300ms")
        with connect(tin.address) as s:
            started = time.monotonic()
            assert closed_by_peer(s, timeout=5)
            elapsed = time.monotonic() - started
        assert 0.25 <= elapsed <= 2.0, f"closed after {elapsed:.2f}s with --connect-timeout 300ms"
        failed = tin.wait_for_log("tunnel-out unreachable")
        assert failed["error"] == "connect timeout"
    finally:
        for f in fillers:
            f.close()
        blackhole.close()


def test_unreachable_target_closes_client_after_authorization(procs):
    port = harness.free_tcp_port()
    out, tin = procs.pair(f"127.0.0.1:{port}")

    with connect(tin.address) as s:
        s.sendall(b"anyone there?\n")
        assert closed_by_peer(s, timeout=5), "legacy client not closed although the target is down"
    failed = out.wait_for_log("target unreachable")
    assert failed["level"] == "warning"
    assert "refused" in failed["error"].lower(), failed
    assert out.wait_for_log("connection closed")["reason"] == "target unreachable"


def test_legacy_client_reset_ends_tunneled_connection(procs, servers):
    target = servers.echo()
    out, tin = procs.pair(target.address)

    s = connect(tin.address)
    s.sendall(b"x" * 1000)
    assert recv_exactly(s, 1000) == b"x" * 1000
    # Abortive close: SO_LINGER 0 makes close() send RST instead of FIN.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()

    (conn,) = target.wait_connections(1)
    assert conn.done.wait(5), "the target's connection outlived the client's reset"
    assert tin.wait_for_log("connection closed", timeout=5)["reason"] != "closed"
    out.wait_for_log("connection closed", timeout=5)


def test_target_reset_ends_legacy_connection(procs, servers):
    def reset_after_first_read(conn, result):
        result.received = len(conn.recv(100))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    target = servers.start(reset_after_first_read)
    out, tin = procs.pair(target.address)

    with connect(tin.address) as s:
        s.sendall(b"trigger\n")
        assert closed_by_peer(s, timeout=5), "legacy client still connected after the target reset"
    assert out.wait_for_log("connection closed", timeout=5)["reason"] != "closed"
    tin.wait_for_log("connection closed", timeout=5)


def test_sighup_does_not_stop_the_service(procs, servers):
    target = servers.echo()
    out, tin = procs.pair(target.address)
    assert_echo(tin.address)  # both event loops are running (see the start-up race test)

    for proc in (out, tin):
        proc.signal(signal.SIGHUP)
        proc.wait_for_log(lambda r: r.get("msg", "").startswith("SIGHUP received"))
    time.sleep(0.2)
    assert out.running() and tin.running()
    assert_echo(tin.address)


# --------------------------------------------------------------------------------------
# busy polling


def test_busy_poll_carries_traffic_and_costs_nothing_when_idle(procs, servers):
    target = servers.echo()
    out, tin = procs.pair(target.address, out_args=["--busy-poll", "1000"], in_args=["--busy-poll", "1000"])
    for proc in (out, tin):
        assert proc.wait_for_log("listening")["busy_poll_us"] == 1000

    assert_echo(tin.address, 2 * MiB)
    with connect(tin.address) as s:  # many small round trips, each picked up while polling
        for i in range(200):
            message = f"ping {i}\n".encode()
            s.sendall(message)
            assert recv_exactly(s, len(message)) == message

    # Idle: each worker polls for 1 ms after its last work, then sleeps. Two workers that
    # kept polling would use about 2 s of CPU in these 1.5 s (or all there is).
    time.sleep(0.3)
    before = {p.name: cpu_seconds(p) for p in (out, tin)}
    time.sleep(1.5)
    for p in (out, tin):
        used = cpu_seconds(p) - before[p.name]
        assert used < 0.3, f"{p.name} used {used:.2f} s of CPU while idle with --busy-poll"
    assert_echo(tin.address)


# --------------------------------------------------------------------------------------
# address families


def test_ipv6_pair_carries_data(procs, servers):
    target = servers.echo(host="::1")
    out, tin = procs.pair(target.address, host="::1")
    assert out.listen.startswith("[::1]:") and tin.listen.startswith("[::1]:")

    assert_echo(tin.address, 256 * 1024)
    (conn,) = target.wait_connections(1)
    assert conn.received == 256 * 1024
    tin.wait_for_log("connection authorized")  # name check passed on the IP SAN ::1


def test_unix_sockets_carry_data(procs, servers, tmp_dir):
    target = servers.echo(unix_path=str(tmp_dir / "target.sock"))
    out = procs.tunnel_out(target.address)
    tin = procs.tunnel_in(out.listen, listen=f"unix:{tmp_dir / 'in.sock'}")
    assert tin.address == str(tmp_dir / "in.sock")

    assert_echo(tin.address, 256 * 1024)
    (conn,) = target.wait_connections(1)
    assert conn.received == 256 * 1024
    assert tin.wait_for_log("connection closed")["reason"] == "closed"


# --------------------------------------------------------------------------------------
# start-up mistakes


def _base_args(pki, binary, **override):
    """A valid command line for `binary` with some flags replaced (value None drops it)."""
    if binary == TUNNEL_OUT:
        flags = {"--listen": "127.0.0.1:0", "--target": "127.0.0.1:9", "--cert": str(pki.server.cert),
                 "--key": str(pki.server.key), "--ca": str(pki.ca_cert)}
    else:
        flags = {"--listen": "127.0.0.1:0", "--connect": "127.0.0.1:9", "--cert": str(pki.client_a.cert),
                 "--key": str(pki.client_a.key), "--ca": str(pki.ca_cert)}
    extra = override.pop("extra", [])
    for k, v in override.items():
        flags["--" + k.replace("_", "-")] = v
    args = []
    for k, v in flags.items():
        if v is not None:
            args += [k, v]
    return args + list(extra)


STARTUP_MISTAKES = [
    # id, binary, overrides, words the one stderr line must contain
    ("missing-cert", TUNNEL_OUT, {"cert": "/nonexistent/server.crt"}, ["--cert", "/nonexistent/server.crt"]),
    ("missing-ca", TUNNEL_IN, {"ca": "/nonexistent/ca.crt"}, ["--ca", "/nonexistent/ca.crt"]),
    ("key-not-matching-cert", TUNNEL_OUT, {"key": "CLIENT_A_KEY"}, ["--key", "does not match"]),
    ("not-a-certificate", TUNNEL_IN, {"cert": "CA_KEY"}, ["--cert", "not a valid certificate"]),
    ("bad-listen-address", TUNNEL_OUT, {"listen": "127.0.0.1"}, ["--listen", "127.0.0.1"]),
    ("bad-target-port", TUNNEL_OUT, {"target": "127.0.0.1:70000"}, ["--target", "port"]),
    ("unbracketed-ipv6", TUNNEL_IN, {"connect": "::1:8443"}, ["--connect", "brackets"]),
    ("bad-duration", TUNNEL_OUT, {"idle_timeout": "5x"}, ["--idle-timeout", "5x", "duration"]),
    ("bad-connect-timeout", TUNNEL_IN, {"connect_timeout": "soon"}, ["--connect-timeout", "soon"]),
    ("unknown-flag", TUNNEL_OUT, {"extra": ["--frobnicate", "1"]}, ["--frobnicate"]),
    ("bad-tls-min", TUNNEL_OUT, {"tls_min": "1.1"}, ["--tls-min", "1.1"]),
    ("bad-allow-ip", TUNNEL_OUT, {"extra": ["--allow-ip", "10.9.8"]}, ["--allow-ip", "10.9.8"]),
    ("bad-allow-spki", TUNNEL_OUT, {"extra": ["--allow-spki-sha256", "abc"]}, ["--allow-spki-sha256", "hex"]),
    ("bad-pin-hex", TUNNEL_IN, {"extra": ["--pin-spki-sha256", "zz" * 32]}, ["--pin-spki-sha256", "hex"]),
    ("short-pin", TUNNEL_IN, {"extra": ["--pin-spki-sha256", "ab" * 31]}, ["--pin-spki-sha256", "hex"]),
    ("missing-required-flag", TUNNEL_OUT, {"target": None}, ["--target"]),
    ("tunnel-out-on-unix-socket", TUNNEL_OUT, {"listen": "unix:/tmp/x.sock"}, ["--listen", "TCP"]),
    ("bad-log-level", TUNNEL_IN, {"log_level": "loud"}, ["--log-level", "loud"]),
    ("zero-max-conns", TUNNEL_OUT, {"max_conns": "0"}, ["--max-conns"]),
    ("busy-poll-too-long", TUNNEL_IN, {"extra": ["--busy-poll", "20000"]}, ["--busy-poll", "0..10000"]),
    ("busy-poll-negative", TUNNEL_OUT, {"extra": ["--busy-poll", "-5"]}, ["--busy-poll", "0..10000"]),
    ("resumption-too-long", TUNNEL_OUT, {"extra": ["--resumption", "25h"]}, ["--resumption", "1s to 24h"]),
    ("resumption-too-short", TUNNEL_IN, {"extra": ["--resumption", "500ms"]}, ["--resumption", "1s to 24h"]),
    # -1 once meant "not given" inside; from the user it is a mistake like any other.
    ("threads-minus-one", TUNNEL_OUT, {"extra": ["--threads", "-1"]}, ["--threads -1", "1..256"]),
    ("max-conns-minus-one", TUNNEL_IN, {"max_conns": "-1"}, ["--max-conns -1", "1..1000000"]),
    ("mtu-minus-one-without-udp", TUNNEL_OUT, {"extra": ["--mtu", "-1"]}, ["--mtu", "only with --udp"]),
    # Numbers are decimal: CLI11 alone would read 0x10 as 16 and 010 as 8, and clamp a value
    # past 64 bits to its largest, echoing a number nobody typed.
    ("threads-in-hex", TUNNEL_OUT, {"extra": ["--threads", "0x10"]}, ["--threads", "0x10: not a decimal whole number"]),
    ("pool-with-leading-zero", TUNNEL_IN, {"extra": ["--pool", "010"]}, ["--pool", "010: not a decimal whole number"]),
    ("max-conns-past-64-bits", TUNNEL_IN, {"max_conns": "99999999999999999999"},
     ["--max-conns", "99999999999999999999: not a decimal whole number"]),
    ("connect-to-itself", TUNNEL_IN, {"listen": "127.0.0.1:28500", "connect": "127.0.0.1:28500"},
     ["--connect 127.0.0.1:28500", "loop back"]),
    ("target-on-own-wildcard-port", TUNNEL_OUT, {"listen": "0.0.0.0:28501", "target": "127.0.0.1:28501"},
     ["--target 127.0.0.1:28501", "loop back"]),
]


@pytest.mark.parametrize(
    "binary,overrides,words",
    [pytest.param(b, o, w, id=i) for i, b, o, w in STARTUP_MISTAKES],
)
def test_startup_mistake_exits_2_with_one_line(pki, binary, overrides, words):
    overrides = dict(overrides)
    for k, v in list(overrides.items()):
        if v == "CLIENT_A_KEY":
            overrides[k] = str(pki.client_a.key)
        elif v == "CA_KEY":
            overrides[k] = str(pki.ca_key)
    r = run_cli(binary, _base_args(pki, binary, **overrides))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {r.stderr!r}"
    line = lines[0]
    assert line.startswith(f"{binary.name}: error: "), line
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    assert r.stdout == ""


def test_unreadable_file_exits_2_with_one_line(pki, tmp_dir):
    unreadable = tmp_dir / "unreadable.crt"
    unreadable.write_bytes(pki.server.cert.read_bytes())
    unreadable.chmod(0o000)
    kwargs = {}
    binary = TUNNEL_OUT
    if os.geteuid() == 0:
        # root reads any file: run the binary as nobody, who can reach this file but not read it.
        tmp_dir.chmod(0o755)
        kwargs["user"] = 65534
        kwargs["group"] = 65534
        kwargs["extra_groups"] = []
        # A copy of the binary, in case nobody cannot traverse the build directory.
        binary = tmp_dir / "tunnel-out"
        binary.write_bytes(TUNNEL_OUT.read_bytes())
        binary.chmod(0o755)
        # nobody must be able to read the other files: copy them next to it.
        for src, name in ((pki.server.key, "server.key"), (pki.ca_cert, "ca.crt")):
            dst = tmp_dir / name
            dst.write_bytes(src.read_bytes())
            dst.chmod(0o644)
        key, ca = tmp_dir / "server.key", tmp_dir / "ca.crt"
    else:
        key, ca = pki.server.key, pki.ca_cert
    args = ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", str(unreadable),
            "--key", str(key), "--ca", str(ca)]
    r = run_cli(binary, args, cwd=str(tmp_dir), **kwargs)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("tunnel-out: error: --cert ") and str(unreadable) in lines[0], lines[0]
    assert "read" in lines[0], lines[0]


def _bad_credential_file(kind: str, pki, tmp_dir):
    """A credential file with one structural mistake, for --ca (or --cert for der-trailing)."""
    ca_pem = pki.ca_cert.read_bytes()
    path = tmp_dir / f"{kind}.pem"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "unterminated-block":
        path.write_bytes(ca_pem + b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    elif kind == "damaged-header":
        # Four dashes: the label must not run on into the key and out in the error line.
        key = pki.ca_key.read_bytes().replace(b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN PRIVATE KEY----", 1)
        path.write_bytes(ca_pem + key)
    elif kind == "der-trailing":
        der = subprocess.run(["openssl", "x509", "-in", str(pki.ca_cert), "-outform", "DER"],
                             capture_output=True, check=True).stdout
        path.write_bytes(der + b"\0\0\0")
    elif kind == "huge":
        with open(path, "wb") as f:
            f.write(ca_pem)
            f.truncate(17 * 1024 * 1024)
    return path


CREDENTIAL_FILE_MISTAKES = [
    ("fifo", "not a regular file (a FIFO)"),
    ("directory", "not a regular file (a directory)"),
    ("unterminated-block", "unterminated PEM block (CERTIFICATE)"),
    ("damaged-header", "malformed PEM header"),
    ("der-trailing", "bytes after its DER content"),
    ("huge", "larger than"),
]


@pytest.mark.parametrize("kind,words", CREDENTIAL_FILE_MISTAKES, ids=[k for k, _ in CREDENTIAL_FILE_MISTAKES])
def test_credential_file_mistake_exits_2_at_once(pki, tmp_dir, kind, words):
    # A FIFO must not block start-up (nor --check-config) waiting for a writer, and stray or
    # half-written content must not be skipped silently.
    bad = _bad_credential_file(kind, pki, tmp_dir)
    r = run_cli(TUNNEL_OUT, _base_args(pki, TUNNEL_OUT, ca=str(bad), extra=["--check-config"]), timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"tunnel-out: error: --ca {bad}: "), lines[0]
    assert words in lines[0], lines[0]


def test_credential_files_as_tools_write_them_are_accepted(pki, tmp_dir):
    # Text around the PEM blocks (openssl pkcs12's "Bag Attributes", a certificate's text
    # dump, comment lines in a CA bundle) and a certificate and its key in one file load as
    # OpenSSL would load them.
    ca = tmp_dir / "bundle.pem"
    ca.write_bytes(b"# the site CA\nBag Attributes\n    friendlyName: ca\nsubject=CN = ca\n\n"
                   + pki.ca_cert.read_bytes() + b"\n# end\n")
    both = tmp_dir / "server-and-key.pem"
    both.write_bytes(b"Certificate:\n    Data: ...\n" + pki.server.cert.read_bytes() + pki.server.key.read_bytes())
    both.chmod(0o600)
    r = run_cli(TUNNEL_OUT, _base_args(pki, TUNNEL_OUT, cert=str(both), key=str(both), ca=str(ca),
                                       extra=["--check-config"]))
    assert r.returncode == 0, r.stderr


def test_a_fifo_as_the_config_file_is_refused_at_once(tmp_dir):
    fifo = tmp_dir / "tunnel.toml"
    os.mkfifo(fifo)
    r = run_cli(TUNNEL_OUT, ["--config", str(fifo), "--check-config"], timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and "not a regular file (a FIFO)" in r.stderr, r.stderr


def test_version_and_help_exit_0():
    for binary in (TUNNEL_IN, TUNNEL_OUT):
        v = run_cli(binary, ["--version"])
        assert v.returncode == 0, v.stderr
        assert v.stdout.startswith(f"{binary.name} ") and "mbedTLS" in v.stdout, v.stdout
        h = run_cli(binary, ["--help"])
        assert h.returncode == 0, h.stderr
        assert "Usage:" in h.stdout and "--listen" in h.stdout and "--cert" in h.stdout
        assert bool(re.search(r"--target\b(?!-)", h.stdout)) == (binary == TUNNEL_OUT)
        assert bool(re.search(r"--connect\b(?!-)", h.stdout)) == (binary == TUNNEL_IN)


# --------------------------------------------------------------------------------------
# logs


def test_every_json_log_line_has_time_level_program_msg(pki, procs, servers):
    target = servers.echo()
    out, tin = procs.pair(target.address, out_args=["--allow-cn", "client-a"])
    refused_in = procs.tunnel_in(out.listen, cred=pki.weird_client)  # names that need escaping

    assert_echo(tin.address)
    wait_refused_by_pair(refused_in)
    connect(out.address).close()  # a probe
    with connect(out.address) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert closed_by_peer(s, 5)
    out.wait_for_log("probe connection closed before handshake")
    weird = out.wait_for_log(lambda r: r.get("msg") == "handshake failed" and "weird" in r.get("identity", ""))
    # Decoded back to the very characters of the certificate (é and ü, not their UTF-8 bytes).
    assert weird["identity"].startswith('CN=we"ird\\name\t\u00e9\u00fc'), weird["identity"]
    tin.stop()
    refused_in.stop()
    out.stop()

    for proc in (out, tin, refused_in):
        assert len(proc.lines) >= 3, proc.log_text()
        for line in proc.lines:
            harness.check_json_log_line(line, proc.binary.name)


# --------------------------------------------------------------------------------------
# signal and shutdown edge cases (last: under -x they must not hide the core tests)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_right_after_listening_is_handled(procs, sig):
    # A supervisor may signal as soon as the "listening" line appears. The signal must be
    # handled (SIGTERM: clean exit 0; SIGHUP: keep running), never kill the process by
    # its default action. Repeated because the window is short.
    outcomes = []
    for _ in range(15):
        p = procs.tunnel_in("127.0.0.1:9", level="info")
        p.signal(sig)
        if sig == signal.SIGTERM:
            try:
                rc = p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rc = "still running"
            outcomes.append(rc)
        else:
            time.sleep(0.05)
            outcomes.append(p.proc.poll())
            if p.running():
                p.stop()
    expected = 0 if sig == signal.SIGTERM else None
    bad = [o for o in outcomes if o != expected]
    assert not bad, f"{len(bad)} of {len(outcomes)} runs ended {bad} instead of {expected}"


@pytest.mark.parametrize("signalled", ["tunnel-in", "tunnel-out"])
def test_shutdown_timeout_logs_cut_connection_as_closed_not_as_error(procs, servers, signalled):
    # Cutting connections when the shutdown timeout passes is the documented behaviour: each
    # must get its "connection closed" line (bytes, identity, reason), not an error.
    proc, rc, _, s = _stuck_connection_then_sigterm(procs, servers, signalled)
    s.close()
    assert rc == 0
    errors = proc.find_logs(lambda r: r["level"] in ("error", "critical"))
    assert errors == [], f"expected no error-level lines, got {errors}"
    closed = proc.logs_with_msg("connection closed")
    assert len(closed) == 1, f"the cut connection was not logged as closed: {proc.log_text()}"
    assert closed[0]["bytes_up"] == len(b"stuck\n")
