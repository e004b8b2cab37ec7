"""End-to-end tests of certificates and trust: the tunnel-certs tool, hot reload of
credentials (SIGHUP and --reload-interval), CRLs, SPKI pins across reloads, expiry
warnings and PSK mode. Real binaries on loopback, credentials made fresh for each run."""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
import types
import urllib.request
from pathlib import Path

import pytest

import harness
import open_gate
import trust_tools as tt
from harness import TUNNEL_IN, TUNNEL_OUT, connect, echo_roundtrip, recv_all, run_cli, sha256

TUNNEL_CERTS = harness.BIN_DIR / "tunnel-certs"


def assert_echo(address, size: int = 16 * 1024) -> None:
    payload = os.urandom(size)
    got = echo_roundtrip(address, payload)
    assert sha256(got) == sha256(payload), f"echo mismatch: sent {len(payload)} bytes, got {len(got)}"


def assert_refused(tin, timeout: float = 5.0) -> None:
    """A legacy client of tunnel-in whose tunnel is refused gets its connection closed and
    receives nothing."""
    with connect(tin.address) as s:
        try:
            s.sendall(b"must-not-arrive\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(timeout)
        try:
            data = recv_all(s)
        except ConnectionResetError:
            data = b""
        assert data == b"", f"refused tunnel delivered {data!r}"


def wait_until_refused(tin, what: str, timeout: float = 10.0) -> None:
    """Retries a legacy connection until its tunnel is refused: live mux sessions end a
    moment after the reload that retires them. Fails with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_refused(tin, timeout=2)
            return
        except (AssertionError, OSError):
            assert time.monotonic() < deadline, what
            time.sleep(0.2)


def reloaded(proc, trigger: str, after: int = 0, timeout: float = 10.0) -> dict:
    """Waits for the (after+1)-th 'credentials reloaded' line with this trigger."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = proc.find_logs(lambda r: r.get("msg") == "credentials reloaded" and r.get("trigger") == trigger)
        if len(hits) > after:
            return hits[after]
        time.sleep(0.05)
    raise AssertionError(f"no reload ({trigger}) logged; log:\n{proc.log_text()}")


def serial_text(serial: int) -> str:
    """mbedTLS's serial notation: colon-separated upper-case hex bytes."""
    raw = serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")
    return ":".join(f"{b:02X}" for b in raw)


# These tests are about what each new TLS handshake presents and checks, so tunnel-in runs
# in raw mode (one TLS connection per legacy connection) where the build has mux mode.
_RAW = ["--mode", "raw"] if "--mode" in run_cli(TUNNEL_IN, ["--help"]).stdout else []


def tunnel_in_raw(procs, connect_to, *extra, **kw):
    udp = "--udp" in extra
    return procs.tunnel_in(connect_to, *extra, *([] if udp else _RAW), **kw)


@pytest.fixture
def ca(pki):
    return tt.Authority.load(pki.ca_cert, pki.ca_key)


@pytest.fixture
def server_files(ca, tmp_dir):
    """A replaceable server certificate and key for tunnel-out, issued by the session CA."""
    leaf = tt.issue(ca, "tunnel-out-v1")
    crt, key = tmp_dir / "server.crt", tmp_dir / "server.key"
    tt.write_atomic(crt, leaf.cert_pem())
    tt.write_atomic(key, leaf.key_pem(), 0o600)
    return crt, key, leaf


def start_out(procs, target, crt, key, *extra, ca_path=None):
    cred = type("cred", (), {"cert": crt, "key": key})
    return procs.tunnel_out(target.address, *extra, cred=cred, ca=ca_path)


# --------------------------------------------------------------------------------------
# tunnel-certs


def test_tunnel_certs_output_passes_openssl_verify_with_private_keys(tmp_dir):
    pki_dir = tmp_dir / "pki"
    r = run_cli(TUNNEL_CERTS, ["init", "--dir", str(pki_dir), "--client-cn", "poller"])
    assert r.returncode == 0, r.stderr
    for leaf in ("server.crt", "client.crt"):
        v = subprocess.run(["openssl", "verify", "-CAfile", str(pki_dir / "ca.crt"), str(pki_dir / leaf)],
                           capture_output=True, text=True)
        assert v.returncode == 0 and v.stdout.strip().endswith(": OK"), v.stdout + v.stderr
    purpose = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(pki_dir / "ca.crt"),
                              str(pki_dir / "server.crt")], capture_output=True, text=True)
    assert purpose.returncode == 0, purpose.stdout + purpose.stderr
    purpose = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(pki_dir / "ca.crt"),
                              str(pki_dir / "client.crt")], capture_output=True, text=True)
    assert purpose.returncode == 0, purpose.stdout + purpose.stderr
    for key in ("ca.key", "server.key", "client.key"):
        mode = stat.S_IMODE(os.stat(pki_dir / key).st_mode)
        assert mode == 0o600, f"{key} has mode {mode:o}"


def test_tunnel_certs_second_run_without_force_refuses_and_keeps_files(tmp_dir):
    pki_dir = tmp_dir / "pki"
    assert run_cli(TUNNEL_CERTS, ["init", "--dir", str(pki_dir)]).returncode == 0
    before = {p.name: p.read_bytes() for p in pki_dir.iterdir()}
    r = run_cli(TUNNEL_CERTS, ["init", "--dir", str(pki_dir)])
    assert r.returncode != 0
    assert "--force" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in pki_dir.iterdir()} == before
    r = run_cli(TUNNEL_CERTS, ["issue", "--dir", str(pki_dir), "--name", "server", "--server"])
    assert r.returncode != 0 and "--force" in r.stderr, r.stderr
    assert (pki_dir / "server.crt").read_bytes() == before["server.crt"]
    r = run_cli(TUNNEL_CERTS, ["init", "--dir", str(pki_dir), "--force"])
    assert r.returncode == 0, r.stderr
    assert (pki_dir / "ca.crt").read_bytes() != before["ca.crt"]


def test_tunnel_certs_refuses_names_outside_its_directory_and_leaves_nothing_half_made(tmp_dir):
    pki_dir = tmp_dir / "pki"
    r = run_cli(TUNNEL_CERTS, ["init", "--dir", str(pki_dir), "--server-ip", "not-an-ip"])
    assert r.returncode == 2 and "not-an-ip" in r.stderr, r.stderr
    assert not pki_dir.exists() or not any(pki_dir.iterdir()), list(pki_dir.iterdir())  # no CA left behind
    assert run_cli(TUNNEL_CERTS, ["init", "--dir", str(pki_dir)]).returncode == 0
    ca_key = (pki_dir / "ca.key").read_bytes()
    for name in ("../escape", "/etc/escape", ".hidden", "ca", "a b", ""):
        r = run_cli(TUNNEL_CERTS, ["issue", "--dir", str(pki_dir), "--name", name, "--client", "--force"])
        assert r.returncode == 2 and "--name" in r.stderr, (name, r.stderr)
    assert not (tmp_dir / "escape.key").exists()
    assert (pki_dir / "ca.key").read_bytes() == ca_key
    assert sorted(p.name for p in pki_dir.iterdir()) == sorted(
        f"{n}.{e}" for n in ("ca", "server", "client") for e in ("crt", "key"))  # no .tmp left


def test_a_private_key_others_can_read_is_used_with_a_warning(procs, servers, pki, tmp_dir):
    key = tmp_dir / "server.key"
    shutil.copy(pki.server.key, key)
    os.chmod(key, 0o644)
    out = procs.tunnel_out(servers.echo().address, cred=types.SimpleNamespace(cert=pki.server.cert, key=key))
    rec = out.wait_for_log("private key file readable by every user: chmod o-rwx it")
    assert rec["mode"] == "0644" and rec["flag"] == "--key" and rec["path"] == str(key), rec
    tin = procs.tunnel_in(out.listen)
    assert echo_roundtrip(tin.address, b"still served") == b"still served"
    assert not tin.logs_with_msg("private key file readable by every user: chmod o-rwx it")  # 0600


def test_pair_runs_end_to_end_with_tunnel_certs_output(procs, servers, tmp_dir):
    pki_dir = tmp_dir / "pki"
    assert run_cli(TUNNEL_CERTS, ["init", "--dir", str(pki_dir), "--client-cn", "poller"]).returncode == 0
    r = run_cli(TUNNEL_CERTS, ["issue", "--dir", str(pki_dir), "--name", "plc-7", "--client",
                               "--uri", "spiffe://plant/plc-7"])
    assert r.returncode == 0, r.stderr
    target = servers.echo()
    server = type("cred", (), {"cert": pki_dir / "server.crt", "key": pki_dir / "server.key"})
    out = procs.tunnel_out(target.address, "--allow-cn", "poller", "--allow-uri", "spiffe://plant/plc-7",
                           cred=server, ca=pki_dir / "ca.crt")
    for name in ("client", "plc-7"):
        client = type("cred", (), {"cert": pki_dir / f"{name}.crt", "key": pki_dir / f"{name}.key"})
        tin = tunnel_in_raw(procs, out.listen, cred=client, ca=pki_dir / "ca.crt")
        assert_echo(tin.address)
    # Both lines, waited for: the echo can come back before tunnel-out's second line is read.
    identities = [r["identity"] for r in authorized(out, 2)]
    assert any(i.startswith("CN=poller") for i in identities), identities
    assert any("URI=spiffe://plant/plc-7" in i for i in identities), identities


# --------------------------------------------------------------------------------------
# hot reload


def test_sighup_reload_under_load_has_zero_failures_and_new_serial(pki, ca, procs, servers, server_files):
    crt, key, old = server_files
    target = servers.echo()
    out = start_out(procs, target, crt, key, "--threads", "2")
    tin = tunnel_in_raw(procs, out.listen)
    assert tt.presented_serial(out, pki.client_a.cert, pki.client_a.key, pki.ca_cert) == old.serial

    slow = tt.SlowTransfer(tin.address, total=6 << 20, chunk=64 << 10, pause=0.02).start()
    assert slow.started.wait(10)
    new = tt.issue(ca, "tunnel-out-v2")
    with tt.ConnectionLoad(tin.address, workers=4) as load:
        load.wait_ok(20)
        # Replace both files (each atomically), then tell tunnel-out.
        tt.write_atomic(key, new.key_pem(), 0o600)
        tt.write_atomic(crt, new.cert_pem())
        out.signal(signal.SIGHUP)
        rec = reloaded(out, "SIGHUP")
        assert rec["serial"] == serial_text(new.serial)
        ok_at_reload = load.stats.ok
        load.wait_ok(ok_at_reload + 30)
    stats = load.stats
    assert stats.failures == [], stats.failures[:5]
    assert stats.ok > 50
    slow.join()
    assert tt.presented_serial(out, pki.client_a.cert, pki.client_a.key, pki.ca_cert) == new.serial
    # Handshakes after the reload carried the new certificate to tunnel-in as well.
    assert any("CN=tunnel-out-v2" in r["identity"] for r in tin.logs_with_msg("connection authorized"))
    assert not out.logs_with_msg("credential reload failed")


def test_symlink_swap_is_picked_up_by_reload_interval(pki, ca, procs, servers, tmp_dir):
    secret = tt.SecretDir(tmp_dir / "secret")
    old = tt.issue(ca, "tunnel-out-v1")
    ca_pem = Path(pki.ca_cert).read_bytes()
    secret.publish({"tls.crt": old.cert_pem(), "tls.key": old.key_pem(), "ca.crt": ca_pem})
    target = servers.echo()
    out = start_out(procs, target, secret.path("tls.crt"), secret.path("tls.key"), "--reload-interval", "1s",
                    ca_path=secret.path("ca.crt"))
    tin = tunnel_in_raw(procs, out.listen)

    slow = tt.SlowTransfer(tin.address, total=6 << 20, chunk=64 << 10, pause=0.03).start()
    assert slow.started.wait(10)
    new = tt.issue(ca, "tunnel-out-v2")
    with tt.ConnectionLoad(tin.address, workers=4) as load:
        load.wait_ok(20)
        secret.publish({"tls.crt": new.cert_pem(), "tls.key": new.key_pem(), "ca.crt": ca_pem})
        rec = reloaded(out, "interval", timeout=5)
        assert rec["serial"] == serial_text(new.serial)
        load.wait_ok(load.stats.ok + 30)
    assert load.stats.failures == [], load.stats.failures[:5]
    slow.join()
    assert tt.presented_serial(out, pki.client_a.cert, pki.client_a.key, pki.ca_cert) == new.serial
    # Unchanged content is not reloaded again, tick after tick.
    time.sleep(2.5)
    assert len(out.find_logs(lambda r: r.get("msg") == "credentials reloaded")) == 1


def _break_unreadable(crt, key, ca_path, tmp_dir):
    key.unlink()


def _break_key_mismatch(crt, key, ca_path, tmp_dir):
    other = tt.issue(tt.new_ca("unrelated"), "x")
    tt.write_atomic(key, other.key_pem(), 0o600)


def _break_parse_error(crt, key, ca_path, tmp_dir):
    tt.write_atomic(crt, b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")


def _break_expired_ca(crt, key, ca_path, tmp_dir):
    past = tt.new_ca("expired CA", not_before=tt.now() - datetime.timedelta(days=60),
                     not_after=tt.now() - datetime.timedelta(days=1))
    from cryptography.hazmat.primitives import serialization
    tt.write_atomic(ca_path, Path(ca_path).read_bytes() + past.cert.public_bytes(serialization.Encoding.PEM))


def _break_not_yet_valid_cert(crt, key, ca_path, tmp_dir):
    # A certificate and key that match, but not valid for another day: a "successful"
    # reload would have every peer refuse us.
    leaf = tt.issue(tt.new_ca("next year's CA"), "tunnel-out-v2", starts_in=datetime.timedelta(days=1))
    tt.write_atomic(crt, leaf.cert_pem())
    tt.write_atomic(key, leaf.key_pem(), 0o600)


def _break_fifo_ca(crt, key, ca_path, tmp_dir):
    # A FIFO in place of the CA: reading it must not block the reload (and the process).
    os.unlink(ca_path)
    os.mkfifo(ca_path)


@pytest.mark.parametrize(
    "breakage,words",
    [(_break_unreadable, "--key"), (_break_key_mismatch, "does not match"),
     (_break_parse_error, "--cert"), (_break_expired_ca, "expired"), (_break_fifo_ca, "not a regular file"),
     (_break_not_yet_valid_cert, "not valid before")],
    ids=["unreadable-file", "key-not-matching", "parse-error", "expired-ca", "fifo-ca", "not-yet-valid-cert"],
)
def test_failed_reload_keeps_old_credentials_and_process(pki, procs, servers, server_files, tmp_dir,
                                                         breakage, words):
    crt, key, old = server_files
    ca_path = tmp_dir / "ca.crt"
    shutil.copy(pki.ca_cert, ca_path)
    target = servers.echo()
    out = start_out(procs, target, crt, key, ca_path=ca_path)
    tin = tunnel_in_raw(procs, out.listen)
    assert_echo(tin.address)

    breakage(crt, key, ca_path, tmp_dir)
    out.signal(signal.SIGHUP)
    failed = out.wait_for_log("credential reload failed; keeping the previous credentials")
    assert failed["level"] == "error"
    assert words in failed["reason"], failed
    assert failed["trigger"] == "SIGHUP"
    time.sleep(0.2)
    assert out.running()
    for _ in range(5):
        assert_echo(tin.address)
    assert tt.presented_serial(out, pki.client_a.cert, pki.client_a.key, pki.ca_cert) == old.serial
    assert not out.logs_with_msg("credentials reloaded")


def test_failed_interval_reload_is_logged_once_then_recovers(pki, ca, procs, servers, server_files):
    crt, key, old = server_files
    target = servers.echo()
    out = start_out(procs, target, crt, key, "--reload-interval", "1s")
    tin = tunnel_in_raw(procs, out.listen)
    new = tt.issue(ca, "tunnel-out-v2")
    tt.write_atomic(crt, new.cert_pem())  # the key still belongs to the old certificate
    out.wait_for_log("credential reload failed; keeping the previous credentials", timeout=5)
    time.sleep(2.5)
    assert len(out.logs_with_msg("credential reload failed; keeping the previous credentials")) == 1
    assert_echo(tin.address)
    tt.write_atomic(key, new.key_pem(), 0o600)  # now the pair matches
    assert reloaded(out, "interval", timeout=5)["serial"] == serial_text(new.serial)
    assert_echo(tin.address)


# --------------------------------------------------------------------------------------
# revocation


def test_revoked_client_is_refused_with_crl(pki, ca, procs, servers, tmp_dir):
    crl = tmp_dir / "ca.crl"
    crl.write_bytes(tt.make_crl(ca, [pki.client_b.certificate.serial_number]))
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--crl", str(crl))
    good = tunnel_in_raw(procs, out.listen, cred=pki.client_a)
    revoked = tunnel_in_raw(procs, out.listen, cred=pki.client_b)
    assert_echo(good.address)
    assert_refused(revoked)
    failed = out.wait_for_log("handshake failed")
    assert "revoked" in failed["reason"].lower(), failed
    assert failed["identity"].startswith("CN=client-b")
    assert failed["chain_verified"] is False  # the CA no longer vouches for it
    assert target.connection_count == 1


def test_a_reload_stuck_reading_a_file_stalls_nothing_else(pki, procs, servers, server_files, tmp_dir):
    """The key file's opens hang (fanotify holds tunnel-out's, as a hung network mount
    would) while a SIGHUP reload reads it. The event loops go on: the status endpoint
    answers and connections are served; a second SIGHUP says a reload is under way and runs
    once it ends; and SIGTERM during another stuck reload still stops the process at once.
    (Under the sanitizers the process is killed after its "stopped" line: LeakSanitizer, at
    exit, waits for every thread, and the stuck one cannot be stopped.)"""
    open_gate.skip_unless_available(tmp_dir)
    crt, key, _ = server_files
    status = f"127.0.0.1:{harness.free_tcp_port()}"
    out = start_out(procs, servers.echo(), crt, key, "--status", status)
    out.wait_for_log("status endpoint listening")
    tin = tunnel_in_raw(procs, out.listen)
    assert_echo(tin.address)
    gate = open_gate.OpenGate(key, out.proc.pid)
    try:
        out.signal(signal.SIGHUP)
        gate.wait_for_held()
        time.sleep(0.2)
        with urllib.request.urlopen(f"http://{status}/healthz", timeout=3) as r:
            assert r.status == 200
        assert_echo(tin.address)
        out.signal(signal.SIGHUP)
        out.wait_for_log("SIGHUP received while a reload is still under way; another reload follows it")
        assert not out.logs_with_msg("credentials reloaded")
        gate.release()
        reloaded(out, "SIGHUP")
        reloaded(out, "SIGHUP", after=1)  # the one the second SIGHUP asked for

        gate.hold()
        out.signal(signal.SIGHUP)
        gate.wait_for_held(gate.held_total + 1)
        out.signal(signal.SIGTERM)
        out.wait_for_log("stopped", timeout=5)
        if os.environ.get("TUNNEL_SANITIZED"):
            out.kill()
        else:
            assert out.wait(timeout=5) == 0
    finally:
        gate.close()


def test_crl_reloaded_on_sighup_applies_to_new_connections(pki, ca, procs, servers, tmp_dir):
    crl = tmp_dir / "ca.crl"
    crl.write_bytes(tt.make_crl(ca, [], der=True))  # DER, revoking nothing yet
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--crl", str(crl))
    tin_b = tunnel_in_raw(procs, out.listen, cred=pki.client_b)
    tin_a = tunnel_in_raw(procs, out.listen, cred=pki.client_a)
    assert_echo(tin_b.address)
    # A connection opened before the reload stays up after it.
    live = connect(tin_b.address)
    live.sendall(b"before\n")
    assert recv_all(live, 7) == b"before\n"

    tt.write_atomic(crl, tt.make_crl(ca, [pki.client_b.certificate.serial_number]))  # now PEM
    out.signal(signal.SIGHUP)
    reloaded(out, "SIGHUP")
    assert_refused(tin_b)
    assert "revoked" in out.wait_for_log("handshake failed")["reason"].lower()
    assert_echo(tin_a.address)
    live.sendall(b"after\n")
    assert recv_all(live, 6) == b"after\n"
    live.close()


@pytest.mark.parametrize("alpn", [None, "tunnel-mux/1"])
def test_a_connection_opened_before_a_crl_reload_cannot_handshake_by_the_old_crl(pki, ca, procs, servers, tmp_dir,
                                                                                alpn):
    # A client opens TCP, waits for the reload that revokes it, and only then handshakes:
    # the connection's credentials snapshot is the old one, so the handshake would pass by
    # the old CRL. It must be refused (and the target never dialled).
    crl = tmp_dir / "ca.crl"
    crl.write_bytes(tt.make_crl(ca, []))
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--crl", str(crl))
    host, port = harness.split_address(out.listen)
    early = socket.create_connection((host, port), timeout=5)
    try:
        time.sleep(0.2)  # accepted: its snapshot of the credentials is taken
        tt.write_atomic(crl, tt.make_crl(ca, [pki.client_b.certificate.serial_number]))
        out.signal(signal.SIGHUP)
        reloaded(out, "SIGHUP")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.client_b.cert), str(pki.client_b.key))
        if alpn:
            ctx.set_alpn_protocols([alpn])
        refused = False
        try:
            with ctx.wrap_socket(early, server_hostname="localhost") as s:
                s.settimeout(5)
                s.sendall(b"revoked but in?\n")
                refused = s.recv(100) == b""
        except (ssl.SSLError, ConnectionError):
            refused = True
        assert refused, "a revoked client got in over a connection opened before the reload"
        failed = out.wait_for_log("handshake failed")
        assert "reloaded during the handshake" in failed["reason"], failed  # the new CRL revokes it
        assert target.connection_count == 0
    finally:
        early.close()


@pytest.mark.parametrize("revoking", ["tunnel-out", "tunnel-in"])
def test_a_dtls_handshake_a_crl_reload_overtakes_is_refused(pki, ca, procs, echo, relays, client, tmp_dir, revoking):
    # As above, over DTLS: a flow's credentials are the ones in force when its handshake
    # began. A relay holds the handshake while the peer's certificate is on its way to the
    # side whose new CRL revokes it: that side must refuse at the end, and nothing passes.
    crl = tmp_dir / "ca.crl"
    crl.write_bytes(tt.make_crl(ca, []))
    on_out = revoking == "tunnel-out"
    crl_args = ["--crl", str(crl)]
    out = procs.tunnel_out(echo.address, "--udp", *(crl_args if on_out else []))
    relay = relays(out.listen)
    tin = procs.tunnel_in(relay.address, "--udp", "--handshake-timeout", "20s", *([] if on_out else crl_args),
                          cred=pki.client_b)
    # tunnel-out gets tunnel-in's certificate in its second flight (after ClientHello and the
    # ClientHello with the cookie); tunnel-in gets tunnel-out's right after the cookie request.
    direction = "up" if on_out else "down"
    relay.gate(direction, 2 if on_out else 1)
    client.sendto(b"revoked?", harness.split_address(tin.listen))
    deadline = time.monotonic() + 10
    while relay.gated_count(direction) == 0:
        assert time.monotonic() < deadline, "the handshake never reached the gate"
        time.sleep(0.02)
    revoking_proc, revoked = (out, pki.client_b) if on_out else (tin, pki.server)
    tt.write_atomic(crl, tt.make_crl(ca, [revoked.certificate.serial_number]))
    revoking_proc.signal(signal.SIGHUP)
    reloaded(revoking_proc, "SIGHUP")
    relay.release()
    failed = revoking_proc.wait_for_log("handshake failed" if on_out else "handshake with tunnel-out failed")
    assert failed["reason"] == "refused by the credentials reloaded during the handshake", failed
    if on_out:
        assert not out.logs_with_msg("flow authorized")
    else:  # tunnel-out finished first; tunnel-in's close_notify ends its flow at once
        closed = out.wait_for_log("flow closed")
        assert closed["reason"] == "closed by tunnel-in", closed
    time.sleep(0.3)
    assert echo.received == 0


@pytest.mark.parametrize("revoking", ["tunnel-out", "tunnel-in"])
def test_crl_reload_retires_live_mux_sessions(pki, ca, procs, servers, tmp_dir, revoking):
    # In mux mode each side holds pre-authenticated sessions; a reload whose CRL revokes the
    # peer must stop its new streams too, not only its new handshakes.
    crl = tmp_dir / "ca.crl"
    crl.write_bytes(tt.make_crl(ca, []))
    on_out = revoking == "tunnel-out"
    target = servers.echo()
    out = procs.tunnel_out(target.address, *(["--crl", str(crl)] if on_out else []))
    tin = procs.tunnel_in(out.listen, "--mode", "mux", *([] if on_out else ["--crl", str(crl)]), cred=pki.client_b)
    assert_echo(tin.address)
    revoked = pki.client_b if on_out else pki.server
    tt.write_atomic(crl, tt.make_crl(ca, [revoked.certificate.serial_number]))
    reloader = out if on_out else tin
    reloader.signal(signal.SIGHUP)
    reloaded(reloader, "SIGHUP")
    before = target.connection_count
    # Once the old sessions are retired, reconnecting needs a handshake: refused.
    wait_until_refused(tin, f"{revoking} still served streams over a session with a revoked peer")
    # (A reconnect already under way at the reload is refused as overtaken by it; the next
    # ones as revoked.)
    msg = "handshake failed" if on_out else "handshake with tunnel-out failed"
    (out if on_out else tin).wait_for_log(lambda r: r.get("msg") == msg and "revoked" in r.get("reason", "").lower())
    assert target.connection_count <= before + 1  # at most a stream racing the reload


def test_tunnel_in_refuses_revoked_server(pki, ca, procs, servers, tmp_dir):
    crl = tmp_dir / "ca.crl"
    crl.write_bytes(tt.make_crl(ca, [pki.server.certificate.serial_number]))
    target = servers.counter()
    out = procs.tunnel_out(target.address)
    tin = tunnel_in_raw(procs, out.listen, "--crl", str(crl))
    assert_refused(tin)
    assert "revoked" in tin.wait_for_log("handshake with tunnel-out failed")["reason"].lower()
    assert target.connection_count == 0


# --------------------------------------------------------------------------------------
# session resumption (TLS 1.3 tickets that carry the verified identity)


def authorized(proc, count: int) -> list[dict]:
    return proc.wait_for_logs("connection authorized", count)


def test_raw_connections_after_the_first_resume_with_the_identity_kept(pki, procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--allow-cn", "client-a")
    tin = tunnel_in_raw(procs, out.listen, cred=pki.client_a)
    for _ in range(5):
        assert_echo(tin.address, size=4096)
    for proc, identity in ((out, "CN=client-a"), (tin, "CN=tunnel-out")):
        lines = authorized(proc, 5)
        assert [r.get("resumed") for r in lines] == [None] + ["true"] * 4, lines
        assert all(r["identity"].startswith(identity) for r in lines), lines
    assert target.connection_count == 5


def test_resumption_0_makes_every_handshake_a_full_one(pki, procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--resumption", "0")
    tin = tunnel_in_raw(procs, out.listen)
    for _ in range(3):
        assert_echo(tin.address, size=1024)
    assert all("resumed" not in r for r in authorized(out, 3) + authorized(tin, 3))


def test_idle_ends_erase_expired_ticket_keys_and_sessions_without_a_handshake(pki, procs, servers):
    # --resumption 1s: tunnel-out's first key is two periods old after 2 s, tunnel-in's four
    # sessions are past their window after 1 s. No connection follows: a periodic sweep
    # (every 5 s) must erase them, not the next handshake.
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--resumption", "1s")
    tin = tunnel_in_raw(procs, out.listen, "--resumption", "1s")
    assert_echo(tin.address, size=1024)
    authorized(tin, 1)
    assert tin.wait_for_log("expired resumption secrets erased", timeout=15)["count"] == 4
    # The first key, and a second one if the handshake came over a period after the start.
    assert out.wait_for_log("expired resumption secrets erased", timeout=15)["count"] in (1, 2)
    assert_echo(tin.address, size=1024)  # and the pair goes on: a full handshake, a fresh key
    assert "resumed" not in authorized(out, 2)[1]


def openssl_session(pki, address: str, session_file: Path, *extra: str) -> str:
    """One openssl s_client connection that saves its session to `session_file` (and offers
    the one already there); returns s_client's output, which says New or Reused."""
    offer = ["-sess_in", str(session_file)] if session_file.exists() else []
    got = harness.s_client(pki, address, "-sess_out", str(session_file), *offer, *extra, quiet=False)
    out = got.stdout.decode(errors="replace")
    assert "hello from the target" in out, out + got.stderr.decode(errors="replace")
    return out


def test_openssl_resumes_tls13_sessions_of_tunnel_out_but_never_tls12_ones(pki, procs, servers, tmp_dir):
    # Interop: a third-party TLS 1.3 client (OpenSSL, X25519 key share) resumes with our
    # tickets, also after a HelloRetryRequest, and is the identity its certificate showed; a
    # TLS 1.2 client never resumes.
    out = procs.tunnel_out(servers.sender(b"hello from the target\n").address, "--tls-min", "1.2",
                           "--allow-cn", "client-a")
    tls13 = tmp_dir / "tls13.session"
    assert "New, TLSv1.3" in openssl_session(pki, out.listen, tls13)
    assert "Reused, TLSv1.3" in openssl_session(pki, out.listen, tls13)
    # A key share for a group tunnel-out does not take (X448): a HelloRetryRequest (a second
    # ServerHello) asks for P-256, and the session still resumes after it.
    hrr = openssl_session(pki, out.listen, tls13, "-groups", "X448:P-256", "-msg")
    assert "Reused, TLSv1.3" in hrr and hrr.count("ServerHello") == 2, hrr
    lines = authorized(out, 3)
    assert [r.get("resumed") for r in lines] == [None, "true", "true"], lines
    assert all(r["identity"].startswith("CN=client-a") for r in lines), lines
    tls12 = tmp_dir / "tls12.session"
    for _ in range(2):
        assert "New, TLSv1.2" in openssl_session(pki, out.listen, tls12, "-tls1_2")
    assert all("resumed" not in r for r in authorized(out, 5)[3:])


def test_a_session_resumed_before_a_crl_reload_is_not_resumed_after_it(pki, ca, procs, servers, tmp_dir):
    # Tickets are sealed with a key made with the credentials: a reload forgets them all,
    # so a peer revoked by the new CRL meets a full handshake, and fails it.
    crl = tmp_dir / "ca.crl"
    crl.write_bytes(tt.make_crl(ca, []))
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--crl", str(crl))
    tin = tunnel_in_raw(procs, out.listen, cred=pki.client_b)
    assert_echo(tin.address)
    assert_echo(tin.address)
    assert authorized(out, 2)[1].get("resumed") == "true"
    tt.write_atomic(crl, tt.make_crl(ca, [pki.client_b.certificate.serial_number]))
    out.signal(signal.SIGHUP)
    reloaded(out, "SIGHUP")
    assert_refused(tin)
    assert "revoked" in out.wait_for_log("handshake failed")["reason"].lower()
    assert target.connection_count == 2


@pytest.mark.parametrize("when,words", [("expired", "expired on"), ("not-yet-valid", "not valid before")])
def test_own_certificate_outside_its_validity_exits_2_at_start(ca, pki, tmp_dir, when, words):
    leaf = (tt.issue(ca, "tunnel-out", days=-1) if when == "expired"
            else tt.issue(ca, "tunnel-out", starts_in=datetime.timedelta(days=1)))
    crt, key = tmp_dir / "server.crt", tmp_dir / "server.key"
    tt.write_atomic(crt, leaf.cert_pem())
    tt.write_atomic(key, leaf.key_pem(), 0o600)
    r = run_cli(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", str(crt),
                             "--key", str(key), "--ca", str(pki.ca_cert)])
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"tunnel-out: error: --cert {crt}: {words}"), r.stderr


@pytest.mark.parametrize("starts_in,accepted", [(datetime.timedelta(minutes=2), True),
                                                 (datetime.timedelta(hours=1), False)])
def test_a_ca_valid_from_minutes_ahead_is_taken_as_a_leaf_would_be(procs, servers, tmp_dir, pki, starts_in, accepted):
    """A CA made a moment ago on a host whose clock runs ahead: within the 10 minutes of
    clock skew allowed for our own leaf it is taken; beyond that it is refused."""
    from cryptography.hazmat.primitives import serialization
    fresh = tt.new_ca("fresh", not_before=tt.now() + starts_in)
    ca_path = tmp_dir / "fresh-ca.crt"
    tt.write_atomic(ca_path, fresh.cert.public_bytes(serialization.Encoding.PEM))
    args = ["--listen", "127.0.0.1:0", "--target", servers.echo().address, "--cert", str(pki.server.cert),
            "--key", str(pki.server.key), "--ca", str(ca_path)]
    if accepted:
        procs.start(TUNNEL_OUT, args + harness.log_args("info"))  # waits until it listens
    else:
        r = run_cli(TUNNEL_OUT, args)
        assert r.returncode == 2 and "not valid before" in r.stderr, r.stderr


@pytest.mark.parametrize("problem,words", [("stale", "stale since"), ("foreign-issuer", "issued by none"),
                                           ("from-the-future", "not valid before"),
                                           ("not-signed-by-the-ca", "signature does not verify")])
def test_unusable_crl_exits_2_at_start(pki, ca, tmp_dir, problem, words):
    # Each of these would make every peer refused; refuse the CRL instead.
    crl = tmp_dir / "ca.crl"
    if problem == "stale":
        crl.write_bytes(tt.make_crl(ca, [], next_update=datetime.timedelta(days=-1)))
    elif problem == "from-the-future":
        crl.write_bytes(tt.make_crl(ca, [], last_update=datetime.timedelta(days=2)))
    elif problem == "not-signed-by-the-ca":
        crl.write_bytes(tt.make_crl(ca, [], signing_key=tt.new_ca("impostor").key))
    else:
        crl.write_bytes(tt.make_crl(tt.new_ca("other"), []))
    r = run_cli(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", str(pki.server.cert),
                             "--key", str(pki.server.key), "--ca", str(pki.ca_cert), "--crl", str(crl)])
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("tunnel-out: error: --crl "), r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert words in r.stderr, r.stderr


# --------------------------------------------------------------------------------------
# pins across reloads, expiry


def test_pin_is_checked_against_reloaded_key(pki, ca, procs, servers, server_files):
    crt, key, old = server_files
    target = servers.echo()
    out = start_out(procs, target, crt, key)
    old_pin = tt_spki(old)
    pinned_old = tunnel_in_raw(procs, out.listen, "--pin-spki-sha256", old_pin)
    new = tt.issue(ca, "tunnel-out-v2")
    both = tunnel_in_raw(procs, out.listen, "--pin-spki-sha256", old_pin, "--pin-spki-sha256", tt_spki(new))
    assert_echo(pinned_old.address)
    tt.write_atomic(key, new.key_pem(), 0o600)
    tt.write_atomic(crt, new.cert_pem())
    out.signal(signal.SIGHUP)
    reloaded(out, "SIGHUP")
    assert_refused(pinned_old)  # the pin holds: a new key is not trusted by name alone
    assert pinned_old.wait_for_log("handshake with tunnel-out failed")["reason"] == "server key does not match any pin"
    assert_echo(both.address)  # rotating pins first makes the key change seamless


def tt_spki(leaf: tt.Leaf) -> str:
    from pki import spki_sha256
    return spki_sha256(leaf.cert)


def test_allow_spki_pin_admits_after_client_cert_renewal_with_same_key(pki, ca, procs, servers, tmp_dir):
    # tunnel-out's SPKI allow-list follows the key, not the certificate: a renewed
    # certificate for the same key is admitted, another key is not.
    import ipaddress  # noqa: F401
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    original = tt.issue(ca, "renewing", server=False)
    renewed = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "renewing")]))
        .issuer_name(ca.cert.subject).public_key(original.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(tt.now() - datetime.timedelta(hours=1))
        .not_valid_after(tt.now() + datetime.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--allow-spki-sha256", tt_spki(original))
    crt, key = tmp_dir / "c.crt", tmp_dir / "c.key"
    tt.write_atomic(crt, original.cert_pem())
    tt.write_atomic(key, original.key_pem(), 0o600)
    tin = tunnel_in_raw(procs, out.listen, "--reload-interval", "1s", cred=type("c", (), {"cert": crt, "key": key}))
    assert_echo(tin.address)
    from cryptography.hazmat.primitives import serialization
    tt.write_atomic(crt, renewed.public_bytes(serialization.Encoding.PEM))
    reloaded(tin, "interval", timeout=5)
    assert_echo(tin.address)
    other = tunnel_in_raw(procs, out.listen, cred=pki.client_a)
    assert_refused(other)


def test_expiry_warnings_for_own_and_peer_certificates(pki, procs, servers):
    # The session PKI's certificates expire in 7 days: inside a 30-day warning window.
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--expiry-warning", "30d")
    own = out.wait_for_log("our certificate expires soon")
    assert own["level"] == "warning" and 6 < own["days_left"] <= 7, own
    tin = tunnel_in_raw(procs, out.listen, "--expiry-warning", "30d")
    tin.wait_for_log("our certificate expires soon")
    for _ in range(3):
        assert_echo(tin.address)
    peer = out.wait_for_log("peer certificate expires soon")
    assert peer["identity"].startswith("CN=client-a")
    tin.wait_for_log("peer certificate expires soon")
    time.sleep(0.2)
    # Rate-limited: three handshakes with the same certificate, one warning.
    assert len(out.logs_with_msg("peer certificate expires soon")) == 1
    # With a window shorter than the remaining lifetime, nothing is said.
    quiet = procs.tunnel_out(target.address, "--expiry-warning", "3d")
    time.sleep(0.2)
    assert not quiet.logs_with_msg("our certificate expires soon")


# --------------------------------------------------------------------------------------
# PSK mode


@pytest.fixture
def psk_key():
    return os.urandom(32)


def psk_pair(procs, target, psk_out: Path, psk_in: Path, *extra):
    out = procs.start(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", target.address, "--psk-file",
                                   str(psk_out), *harness.log_args(), *extra], name="tunnel-out")
    raw = [] if "--udp" in extra else _RAW
    tin = procs.start(TUNNEL_IN, ["--listen", "127.0.0.1:0", "--connect", out.listen, "--psk-file", str(psk_in),
                                  *harness.log_args(), *extra, *raw], name="tunnel-in")
    return out, tin


def test_psk_pair_carries_data_over_tcp(procs, servers, tmp_dir, psk_key):
    psk = tt.write_psk(tmp_dir / "psk", "plc-7", psk_key)
    target = servers.echo()
    out, tin = psk_pair(procs, target, psk, psk)
    assert_echo(tin.address, 256 * 1024)
    auth = out.wait_for_log("connection authorized")
    assert auth["identity"] == "PSK=plc-7"
    assert auth["tls"] == "TLSv1.3"
    assert not out.logs_with_msg("no allow-list given: every client certificate issued by --ca is admitted")
    log = out.log_text() + tin.log_text()
    assert psk_key.hex() not in log.lower()


def test_psk_pair_with_tls12_allowed_still_negotiates_tls13(procs, servers, tmp_dir, psk_key):
    psk = tt.write_psk(tmp_dir / "psk", "plc-7", psk_key)
    target = servers.echo()
    out, tin = psk_pair(procs, target, psk, psk, "--tls-min", "1.2")
    assert_echo(tin.address)
    assert out.wait_for_log("connection authorized")["tls"] == "TLSv1.3"


@pytest.mark.parametrize("mismatch", ["key", "identity"])
def test_wrong_psk_is_refused(procs, servers, tmp_dir, psk_key, mismatch):
    good = tt.write_psk(tmp_dir / "good", "plc-7", psk_key)
    if mismatch == "key":
        bad = tt.write_psk(tmp_dir / "bad", "plc-7", os.urandom(32))
    else:
        bad = tt.write_psk(tmp_dir / "bad", "plc-8", psk_key)
    target = servers.counter()
    out, tin = psk_pair(procs, target, good, bad)
    assert_refused(tin)
    out.wait_for_log("handshake failed")
    tin.wait_for_log("handshake with tunnel-out failed")
    time.sleep(0.2)
    assert target.connection_count == 0


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_group_or_world_readable_psk_file_exits_2(tmp_dir, psk_key, mode):
    psk = tt.write_psk(tmp_dir / "psk", "plc-7", psk_key, mode)
    for binary, flag in ((TUNNEL_OUT, "--target"), (TUNNEL_IN, "--connect")):
        r = run_cli(binary, ["--listen", "127.0.0.1:0", flag, "127.0.0.1:9", "--psk-file", str(psk)])
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f"{binary.name}: error: --psk-file {psk}"), r.stderr
        assert "chmod 600" in r.stderr
        assert psk_key.hex() not in r.stderr


@pytest.mark.parametrize(
    "extra,words",
    [(["--cert", "x.crt"], "--cert: not with --psk-file"),
     (["--ca", "ca.crt"], "--ca: not with --psk-file"),
     (["--crl", "ca.crl"], "--crl: not with --psk-file"),
     (["--allow-cn", "x"], "--allow-*: not with --psk-file")],
    ids=["cert", "ca", "crl", "allow"],
)
def test_psk_with_certificate_flags_exits_2(tmp_dir, psk_key, extra, words):
    psk = tt.write_psk(tmp_dir / "psk", "plc-7", psk_key)
    r = run_cli(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--psk-file", str(psk), *extra])
    assert r.returncode == 2 and words in r.stderr, r.stderr


def test_malformed_psk_file_exits_2_without_echoing_it(tmp_dir):
    psk = tmp_dir / "psk"
    fd = os.open(psk, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"plc-7:" + b"ab" * 8 + b"\n")  # 8 bytes: too short
    os.close(fd)
    r = run_cli(TUNNEL_IN, ["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9", "--psk-file", str(psk)])
    assert r.returncode == 2
    assert "16..48 bytes" in r.stderr and "abab" not in r.stderr, r.stderr


def test_psk_rotation_on_sighup(procs, servers, tmp_dir, psk_key):
    out_psk = tt.write_psk(tmp_dir / "out.psk", "plc-7", psk_key)
    in_psk = tt.write_psk(tmp_dir / "in.psk", "plc-7", psk_key)
    target = servers.echo()
    out, tin = psk_pair(procs, target, out_psk, in_psk)
    assert_echo(tin.address)
    rotated = os.urandom(32)
    tt.write_psk(out_psk, "plc-7", rotated)
    out.signal(signal.SIGHUP)
    reloaded(out, "SIGHUP")
    assert_refused(tin)  # tunnel-in still has the old key
    tt.write_psk(in_psk, "plc-7", rotated)
    tin.signal(signal.SIGHUP)
    reloaded(tin, "SIGHUP")
    assert_echo(tin.address)


def _udp_supported() -> bool:
    r = run_cli(TUNNEL_OUT, ["--help"])
    return "--udp" in r.stdout


@pytest.mark.skipif(not _udp_supported(), reason="this build has no --udp")
def test_psk_pair_carries_udp(procs, tmp_dir, psk_key):
    import socket
    psk = tt.write_psk(tmp_dir / "psk", "sensor-1", psk_key)
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.settimeout(0.2)
    stop = False

    def serve():
        while not stop:
            try:
                data, peer = echo.recvfrom(65535)
            except OSError:
                continue
            echo.sendto(data, peer)

    import threading
    threading.Thread(target=serve, daemon=True).start()
    try:
        target = type("t", (), {"address": f"127.0.0.1:{echo.getsockname()[1]}"})
        out, tin = psk_pair(procs, target, psk, psk, "--udp")
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(1.0)
        got = None
        for attempt in range(10):
            client.sendto(b"reading-%d" % attempt, tin.address)
            try:
                got, _ = client.recvfrom(65535)
                break
            except socket.timeout:
                continue
        assert got is not None and got.startswith(b"reading-"), tin.log_text() + out.log_text()
        assert out.wait_for_log("flow authorized")["identity"] == "PSK=sensor-1"
        assert out.wait_for_log("flow authorized")["cipher"].startswith("TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305")
        client.close()
    finally:
        stop = True
        echo.close()


class UdpEcho:
    def __init__(self):
        import socket
        import threading
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.stopped = False
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.sock.sendto(data, peer)

    def close(self):
        self.stopped = True
        self.sock.close()


def udp_roundtrip(address, payload: bytes, attempts: int = 10) -> bytes | None:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:  # a new flow: a new source port
        c.settimeout(1.0)
        for _ in range(attempts):
            c.sendto(payload, address)
            try:
                return c.recvfrom(65535)[0]
            except socket.timeout:
                continue
    return None


@pytest.mark.skipif(not _udp_supported(), reason="this build has no --udp")
def test_udp_new_flows_use_reloaded_certificate(pki, ca, procs, server_files):
    crt, key, old = server_files
    echo = UdpEcho()
    try:
        out = start_out(procs, echo, crt, key, "--udp")
        tin = tunnel_in_raw(procs, out.listen, "--udp")
        assert udp_roundtrip(tin.address, b"one") == b"one"
        new = tt.issue(ca, "tunnel-out-v2")
        tt.write_atomic(key, new.key_pem(), 0o600)
        tt.write_atomic(crt, new.cert_pem())
        out.signal(signal.SIGHUP)
        reloaded(out, "SIGHUP")
        assert udp_roundtrip(tin.address, b"two") == b"two"
        identities = [r["identity"] for r in tin.logs_with_msg("flow authorized")]
        assert any("CN=tunnel-out-v1" in i for i in identities), identities
        assert any("CN=tunnel-out-v2" in i for i in identities), identities
    finally:
        echo.close()


def _metrics(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.split("{")[0]] = float(value)
    return out


def test_reloads_failures_and_expiry_are_in_metrics(pki, ca, procs, servers, server_files):
    if "--status" not in run_cli(TUNNEL_OUT, ["--help"]).stdout:
        pytest.skip("this build has no --status")
    crt, key, old = server_files
    status = f"127.0.0.1:{harness.free_tcp_port()}"
    out = start_out(procs, servers.echo(), crt, key, "--status", status)
    out.wait_for_log("status endpoint listening")
    m = _metrics(status)
    assert m["tunnel_reloads_total"] == 0 and m["tunnel_reload_failures_total"] == 0
    assert 6.9 * 86400 < m["tunnel_certificate_expiry_seconds"] <= 7 * 86400  # server_files: 7 days

    longer = tt.issue(ca, "tunnel-out-v2", days=20)
    tt.write_atomic(key, longer.key_pem(), 0o600)
    tt.write_atomic(crt, longer.cert_pem())
    out.signal(signal.SIGHUP)
    reloaded(out, "SIGHUP")
    m = _metrics(status)
    assert m["tunnel_reloads_total"] == 1
    assert 19.9 * 86400 < m["tunnel_certificate_expiry_seconds"] <= 20 * 86400

    crt.write_bytes(b"garbage")
    out.signal(signal.SIGHUP)
    out.wait_for_log("credential reload failed; keeping the previous credentials")
    m = _metrics(status)
    assert m["tunnel_reloads_total"] == 1 and m["tunnel_reload_failures_total"] == 1
    assert 19.9 * 86400 < m["tunnel_certificate_expiry_seconds"]
