"""TLS bridging: tunnel-out's target leg speaking TLS to a legacy server that already does
(its own CA, name, client certificate, ALPN), and tunnel-in accepting TLS from a legacy
client that already speaks it (ALPN such as PostgreSQL's direct TLS `postgresql`)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness
import trust_tools as tt
from harness import connect, free_tcp_port, recv_all, run_cli, TUNNEL_IN, TUNNEL_OUT


class SServer:
    """openssl s_server -rev: a TLS legacy server that sends every line back reversed."""

    def __init__(self, pki, *extra: str):
        self.port = free_tcp_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-rev", "-naccept", "20",
             "-cert", str(pki.legacy_server.cert), "-key", str(pki.legacy_server.key), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:  # listening once a TCP connect succeeds
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, "s_server did not start"
                time.sleep(0.05)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def s_servers(pki):
    started: list[SServer] = []

    def start(*extra: str) -> SServer:
        started.append(SServer(pki, *extra))
        return started[-1]

    yield start
    for s in started:
        s.close()


def reversed_line_through(address, line: bytes = b"hello bridge") -> bytes:
    with connect(address) as s:
        s.sendall(line + b"\n")
        got = b""
        s.settimeout(10)
        while not got.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got.strip()


def bridge_out_args(pki, *extra: str) -> list[str]:
    return ["--target-tls", "--target-ca", str(pki.legacy_ca_cert), "--target-server-name", "legacy-db.test", *extra]


def test_tunnel_out_speaks_tls_to_an_openssl_target_with_its_own_ca(procs, pki, s_servers):
    target = s_servers()
    out, tin = procs.pair(target.address, out_args=bridge_out_args(pki))
    assert reversed_line_through(tin.address) == b"egdirb olleh"
    rec = out.wait_for_log("target TLS up")
    assert rec["tls"].startswith("TLSv1.")


def test_target_leg_offers_alpn_and_presents_a_client_certificate(procs, pki, s_servers):
    # The target demands a certificate from its own CA and speaks only "postgresql".
    target = s_servers("-Verify", "1", "-verify_return_error", "-CAfile", str(pki.legacy_ca_cert),
                       "-alpn", "postgresql")
    out, tin = procs.pair(target.address, out_args=bridge_out_args(
        pki, "--target-cert", str(pki.legacy_client.cert), "--target-key", str(pki.legacy_client.key),
        "--target-alpn", "postgresql"))
    assert reversed_line_through(tin.address) == b"egdirb olleh"
    assert out.wait_for_log("target TLS up")["alpn"] == "postgresql"


def test_target_with_a_certificate_from_another_ca_is_refused(procs, pki, s_servers):
    target = s_servers()
    # The tunnel's CA did not issue the target's certificate.
    out, tin = procs.pair(target.address, out_args=["--target-tls", "--target-ca", str(pki.ca_cert),
                                                    "--target-server-name", "legacy-db.test"])
    assert reversed_line_through(tin.address) == b""
    rec = out.wait_for_log("target TLS handshake failed")
    assert "not correctly signed" in rec["reason"] or "trusted CA" in rec["reason"], rec
    closed = out.wait_for_log("connection closed")
    assert closed["reason"].startswith("target TLS handshake failed") and closed["bytes_up"] == 0


def legacy_crl(pki, tmp_dir, revoked) -> str:
    """A CRL of the legacy CA revoking the credentials `revoked`."""
    ca = tt.Authority.load(pki.legacy_ca_cert, pki.legacy_ca_key)
    path = tmp_dir / f"legacy-{len(revoked)}.crl"
    path.write_bytes(tt.make_crl(ca, [c.certificate.serial_number for c in revoked]))
    return str(path)


def test_a_revoked_target_certificate_is_refused_with_target_crl(procs, pki, s_servers, tmp_dir):
    target = s_servers()
    out, tin = procs.pair(target.address, out_args=bridge_out_args(pki, "--target-crl", legacy_crl(pki, tmp_dir, [])))
    assert reversed_line_through(tin.address) == b"egdirb olleh"  # a CRL revoking nothing
    out2, tin2 = procs.pair(target.address, out_args=bridge_out_args(
        pki, "--target-crl", legacy_crl(pki, tmp_dir, [pki.legacy_server])))
    assert reversed_line_through(tin2.address) == b""
    rec = out2.wait_for_log("target TLS handshake failed")
    assert "revoked" in rec["reason"].lower(), rec


def test_a_revoked_legacy_client_is_refused_with_listen_crl(procs, pki, servers, tmp_dir):
    echo = servers.echo()
    out, tin = procs.pair(echo.address, in_args=listen_tls_args(
        pki, "--listen-ca", str(pki.legacy_ca_cert), "--listen-crl", legacy_crl(pki, tmp_dir, [pki.legacy_client])))
    try:  # TLS 1.3: the refusal arrives after the client's side of the handshake
        got, _, _ = tls_echo(tin.address, legacy_client_context(pki, cert=pki.legacy_client), b"revoked")
    except (ssl.SSLError, OSError):
        got = b""
    assert got == b"", "a revoked legacy client must not get through"
    rec = tin.wait_for_log("legacy client TLS handshake failed")
    assert "revoked" in rec["reason"].lower(), rec
    assert echo.connection_count == 0


def test_a_target_handshake_a_reload_overtakes_is_checked_against_the_new_target_ca(procs, pki, s_servers, tmp_dir):
    # The target's answer takes 3 s (a delay line); meanwhile a reload replaces --target-ca
    # with a bundle that no longer holds the target's CA. The handshake, begun under the old
    # one, must be judged by the new one when it ends.
    import shutil
    import signal
    from delay_line import DelayLine
    target = s_servers()
    target_ca = tmp_dir / "target-ca.pem"
    shutil.copy(pki.legacy_ca_cert, target_ca)
    with DelayLine(target.address, one_way_ms=1500) as line:
        out, tin = procs.pair(line.address, out_args=["--target-tls", "--target-ca", str(target_ca),
                                                      "--target-server-name", "legacy-db.test"])
        box = {}
        t = threading.Thread(target=lambda: box.update(got=reversed_line_through(tin.address)))
        t.start()
        time.sleep(0.5)  # tunnel-out has dialled the target; its ClientHello is on the line
        shutil.copy(pki.ca_cert, target_ca)
        out.signal(signal.SIGHUP)
        out.wait_for_log(lambda r: r.get("msg") == "credentials reloaded" and r.get("leg") == "target")
        t.join(30)
    assert box.get("got") == b"", box
    rec = out.wait_for_log("target TLS handshake failed")
    assert rec["reason"] == "refused by the credentials reloaded during the handshake", rec
    assert not out.logs_with_msg("target TLS up")


def test_target_with_the_wrong_name_is_refused(procs, pki, s_servers):
    target = s_servers()
    out, tin = procs.pair(target.address, out_args=bridge_out_args(pki)[:-2] + ["--target-server-name", "other.test"])
    assert reversed_line_through(tin.address) == b""
    assert "CN" in out.wait_for_log("target TLS handshake failed")["reason"]


def legacy_client_context(pki, alpn=None, cert=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.legacy_ca_cert))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def tls_echo(address, ctx, payload: bytes):
    host, port = address
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="legacy-db.test") as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got, s.selected_alpn_protocol(), s.version()


def listen_tls_args(pki, *extra: str) -> list[str]:
    return ["--listen-cert", str(pki.legacy_server.cert), "--listen-key", str(pki.legacy_server.key), *extra]


def test_tunnel_in_accepts_tls_from_a_legacy_client_and_passes_alpn(procs, pki, servers):
    echo = servers.echo()
    out, tin = procs.pair(echo.address, in_args=listen_tls_args(pki, "--listen-alpn", "postgresql"))
    payload = os.urandom(200_000)
    got, alpn, version = tls_echo(tin.address, legacy_client_context(pki, ["postgresql"]), payload)
    assert got == payload
    assert alpn == "postgresql" and version in ("TLSv1.2", "TLSv1.3")
    rec = tin.wait_for_log("legacy client TLS accepted")
    assert rec["alpn"] == "postgresql"


def test_tunnel_in_listen_ca_requires_legacy_client_certificates(procs, pki, servers):
    echo = servers.echo()
    out, tin = procs.pair(echo.address, in_args=listen_tls_args(pki, "--listen-ca", str(pki.legacy_ca_cert)))
    got, _, _ = tls_echo(tin.address, legacy_client_context(pki, cert=pki.legacy_client), b"with a certificate")
    assert got == b"with a certificate"
    try:  # TLS 1.3: the refusal arrives after the client's side of the handshake
        got, _, _ = tls_echo(tin.address, legacy_client_context(pki), b"without one")
    except (ssl.SSLError, OSError):
        got = b""
    assert got == b"", "a legacy client without a certificate must not get through"
    tin.wait_for_log("legacy client TLS handshake failed")
    assert echo.connection_count == 1


def test_a_legacy_handshake_a_reload_overtakes_is_checked_against_the_new_listen_ca(procs, pki, servers, tmp_dir):
    # A legacy client opens TCP, the reload replaces --listen-ca with a bundle that no longer
    # holds its CA, and only then does the client handshake: judged by the CA in force, not
    # the one of the moment it connected.
    import signal
    import shutil
    echo = servers.echo()
    listen_ca = tmp_dir / "listen-ca.pem"
    shutil.copy(pki.legacy_ca_cert, listen_ca)
    out, tin = procs.pair(echo.address, in_args=listen_tls_args(pki, "--listen-ca", str(listen_ca)))
    early = socket.create_connection(tin.address, timeout=10)
    try:
        time.sleep(0.2)  # accepted: its snapshot of the credentials is taken
        shutil.copy(pki.ca_cert, listen_ca)  # another CA: the legacy client's is withdrawn
        tin.signal(signal.SIGHUP)
        tin.wait_for_log(lambda r: r.get("msg") == "credentials reloaded" and r.get("leg") == "listener")
        ctx = legacy_client_context(pki, cert=pki.legacy_client)
        try:
            with ctx.wrap_socket(early, server_hostname="legacy-db.test") as s:
                s.settimeout(10)
                s.sendall(b"withdrawn but in?")
                got = s.recv(100)
        except (ssl.SSLError, OSError):
            got = b""
        assert got == b"", "a legacy client the reload withdrew got through"
    finally:
        early.close()
    failed = tin.wait_for_log("legacy client TLS handshake failed")
    assert failed["reason"] == "refused by the credentials reloaded during the handshake", failed
    assert echo.connection_count == 0
    # A new connection is judged by the new CA from the start.
    with pytest.raises((ssl.SSLError, OSError, AssertionError)):
        got, _, _ = tls_echo(tin.address, legacy_client_context(pki, cert=pki.legacy_client), b"again")
        assert got == b"again"


def test_a_legacy_client_chain_that_costs_seconds_to_check_gets_its_source_penalised(procs, pki, servers, tmp_dir):
    # tunnel-in checks legacy clients' chains with --listen-ca as tunnel-out checks
    # tunnel-in's: a chain free to make costs it a second or more, and the source that sent
    # it is kept out after (the same penalty box, test_adversarial.py).
    import trust_tools as tt
    chain, key = tt.costly_chain(tmp_dir)
    echo = servers.echo()
    out, tin = procs.pair(echo.address, in_args=listen_tls_args(pki, "--listen-ca", str(pki.legacy_ca_cert)),
                          in_listen="[::]:0")
    port = harness.split_address(tin.listen)[1]
    costly = legacy_client_context(pki)
    costly.load_cert_chain(str(chain), str(key))

    def attempt() -> bytes:
        try:
            return tls_echo(("127.0.0.1", port), costly, b"costly")[0]
        except (ssl.SSLError, OSError):
            return b""

    assert attempt() == b""
    penalised = tin.wait_for_log("source penalised: a failed handshake cost much CPU", timeout=60)
    assert penalised["cpu_ms"] >= 200 and penalised["refused_for_s"] == 10, penalised
    assert attempt() == b""  # refused at accept now, before any handshake
    refused = tin.wait_for_log(lambda r: r.get("msg") == "connection refused" and "penalised" in r.get("reason", ""))
    assert "127.0.0.1" in refused["peer"]
    assert len(tin.logs_with_msg("legacy client TLS handshake failed")) == 1
    # Another source with a good certificate is served as ever.
    got, _, _ = tls_echo(("::1", port), legacy_client_context(pki, cert=pki.legacy_client), b"from another source")
    assert got == b"from another source"
    assert echo.connection_count == 1


def test_plain_client_on_a_tls_listener_is_closed_without_reaching_the_tunnel(procs, pki, servers):
    echo = servers.echo()
    out, tin = procs.pair(echo.address, in_args=listen_tls_args(pki))
    with connect(tin.address) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert recv_all(s) == b""
    tin.wait_for_log("legacy client TLS handshake failed")
    assert echo.connection_count == 0


def test_tls_on_both_legacy_legs_end_to_end(procs, pki, s_servers):
    target = s_servers("-alpn", "postgresql")
    out, tin = procs.pair(target.address,
                          out_args=bridge_out_args(pki, "--target-alpn", "postgresql"),
                          in_args=listen_tls_args(pki, "--listen-alpn", "postgresql"))
    got, alpn, _ = tls_echo(tin.address, legacy_client_context(pki, ["postgresql"]), b"select 1\n")
    assert got == b"1 tceles\n" and alpn == "postgresql"


def test_tunnel_in_resumes_tls13_sessions_with_an_openssl_server(procs, pki, s_servers):
    # Interop the other way round: an OpenSSL server in tunnel-out's place (mutual TLS,
    # tickets on by default). tunnel-in keeps its tickets and resumes, keeping the server's
    # identity that the first, full handshake verified.
    server = s_servers("-cert", str(pki.server.cert), "-key", str(pki.server.key), "-Verify", "1",
                       "-CAfile", str(pki.ca_cert), "-verify_return_error", "-tls1_3")
    tin = procs.tunnel_in(server.address, "--mode", "raw")
    for line in (b"first", b"second", b"third"):
        assert reversed_line_through(tin.address, line) == line[::-1]
    lines = tin.wait_for_logs("connection authorized", 3)
    assert [r.get("resumed") for r in lines] == [None, "true", "true"], lines
    assert all(r["identity"].startswith("CN=tunnel-out") for r in lines), lines


@pytest.mark.parametrize("binary,args,message", [
    (TUNNEL_OUT, ["--target-ca", "x.pem"], "--target-ca: only with --target-tls"),
    (TUNNEL_OUT, ["--target-tls"], "--target-ca is required with --target-tls"),
    (TUNNEL_OUT, ["--target-tls", "--target-ca", "/nonexistent/ca.pem"], "--target-ca /nonexistent/ca.pem: cannot read file"),
    (TUNNEL_OUT, ["--target-tls", "--target-ca", "x", "--target-cert", "c"], "--target-cert and --target-key go together"),
    (TUNNEL_OUT, ["--target-tls", "--target-ca", "x", "--target-alpn", "bad name"], "--target-alpn bad name: not an ALPN"),
    (TUNNEL_IN, ["--listen-cert", "c"], "--listen-cert and --listen-key go together"),
    (TUNNEL_IN, ["--listen-ca", "c"], "--listen-ca: only with --listen-cert and --listen-key"),
    (TUNNEL_IN, ["--listen-cert", "c", "--listen-key", "k", "--listen-crl", "r"], "--listen-crl: only with --listen-ca"),
    (TUNNEL_OUT, ["--target-crl", "r"], "--target-crl: only with --target-tls"),
    (TUNNEL_IN, ["--listen-cert", "c", "--listen-key", "k", "--udp"], "--listen-cert: not with --udp"),
])
def test_bridge_mistakes_exit_2_with_one_line(pki, binary, args, message):
    base = ["--listen", "127.0.0.1:0", "--cert", str(pki.server.cert), "--key", str(pki.server.key),
            "--ca", str(pki.ca_cert), "--log-level", "error"]
    base += ["--target", "127.0.0.1:9"] if binary == TUNNEL_OUT else ["--connect", "127.0.0.1:9"]
    r = run_cli(binary, base + args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
