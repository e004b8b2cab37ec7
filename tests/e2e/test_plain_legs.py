"""End-to-end tests of the plain legs (issue 6): PROXY protocol headers sent by tunnel-out
(--proxy-protocol) and accepted by tunnel-in (--accept-proxy-protocol), transparent
dialling on tunnel-out (--transparent, in network namespaces), Unix sockets on both plain
legs with the listening socket's mode and owner, and the start-up mistakes around them."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
import subprocess
import time

import pytest

import harness
import netns
import plain_leg_tools as pl
from harness import TUNNEL_IN, TUNNEL_OUT, closed_by_peer, connect, echo_roundtrip, run_cli, split_address

MODES = ["raw", "mux"]


def proxy_target(servers, host: str = "127.0.0.1"):
    headers: list[pl.ProxyHeader] = []
    return servers.start(pl.make_proxy_reading_handler(headers), host), headers


def wait_for(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def echo_from_client(address, payload: bytes) -> tuple[str, int]:
    """One legacy connection; returns the client's own address (what mux mode carries)."""
    with connect(address) as s:
        me = s.getsockname()[:2]
        assert pl.echo_once(s, payload) == payload
    return me


# --------------------------------------------------------------------------------------
# tunnel-out --proxy-protocol


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_names_the_client_before_the_data(procs, servers, version, mode):
    target, headers = proxy_target(servers)
    out, tin = procs.pair(target.address, out_args=["--proxy-protocol", version], in_args=["--mode", mode])
    client = echo_from_client(tin.address, b"hello through the tunnel\n" * 100)

    (h,) = wait_for(lambda: list(headers), "the target to read a header")
    assert h.version == int(version[1]) and h.family == "TCP4"
    # Destination: the address tunnel-out accepted the TLS connection on.
    assert h.destination == ("127.0.0.1", out.port)
    # Raw mode has no place for the client's address: the TLS peer, i.e. tunnel-in. Mux
    # mode carries it in the stream open, but this client is on tunnel-in's loopback, an
    # address that means tunnel-out's own host there: it is named by tunnel-in's address
    # too. (A client from another host is carried: the --accept-proxy-protocol tests.)
    msg = "mux connection authorized" if mode == "mux" else "connection authorized"  # (mux: one of the pool)
    wait_for(lambda: h.source in [split_address(r["peer"]) for r in out.logs_with_msg(msg)], "the TLS peer's line")
    assert h.source != client


def test_proxy_header_over_ipv6(procs, servers):
    target, headers = proxy_target(servers, host="::1")
    out, tin = procs.pair(target.address, out_args=["--proxy-protocol", "v1"], in_args=["--mode", "mux"], host="::1")
    client = echo_from_client(tin.address, b"six\n")
    (h,) = wait_for(lambda: list(headers), "a header")
    assert h.family == "TCP6"
    # (A loopback client: named by tunnel-in's address, as above.)
    wait_for(lambda: h.source in [split_address(r["peer"]) for r in out.logs_with_msg("mux connection authorized")],
             "the TLS peer's line")
    assert h.source != client and h.destination == ("::1", out.port)


@pytest.mark.parametrize("version,expected", [("v1", 1), ("v2", 2)])
def test_unix_client_gives_a_header_without_addresses(procs, servers, tmp_dir, version, expected):
    target, headers = proxy_target(servers)
    out = procs.tunnel_out(target.address, "--proxy-protocol", version)
    tin = procs.tunnel_in(out.listen, "--mode", "mux", listen=f"unix:{tmp_dir / 'in.sock'}")
    assert echo_roundtrip(tin.address, b"from a unix client\n") == b"from a unix client\n"
    (h,) = wait_for(lambda: list(headers), "a header")
    # UNKNOWN (v1) or LOCAL (v2): the target uses the connection's own addresses.
    assert h == pl.ProxyHeader(expected, None, None, None)


# --------------------------------------------------------------------------------------
# tunnel-in --accept-proxy-protocol


@pytest.mark.parametrize("incoming", ["v1", "v2"])
def test_accepted_header_names_the_client_all_the_way_to_the_target(procs, servers, incoming):
    target, headers = proxy_target(servers)
    out, tin = procs.pair(target.address, out_args=["--proxy-protocol", "v2"],
                          in_args=["--mode", "mux", "--accept-proxy-protocol"])
    balancer_says = ("203.0.113.7", 40000)
    header = (pl.v1_header(balancer_says, ("192.0.2.1", 5432)) if incoming == "v1"
              else pl.v2_header(balancer_says, ("192.0.2.1", 5432), tlvs=b"\x01\x00\x02h2\x04\x00\x03xyz"))
    payload = b"payload right behind the header\n" * 50
    with connect(tin.address) as s:
        lb = s.getsockname()[:2]
        # Header and payload in one segment: the bytes after the header must not be lost.
        assert pl.echo_once(s, header + payload) == payload

    (h,) = wait_for(lambda: list(headers), "a header")
    assert h.source == balancer_says
    closed = tin.wait_for_log("connection closed")
    assert closed["peer"] == "203.0.113.7:40000"
    assert closed["via"] == harness.format_address(*lb)
    assert closed["bytes_up"] == len(payload)


def test_accepted_header_in_raw_mode_is_logged_but_not_carried(procs, servers):
    target, headers = proxy_target(servers)
    out, tin = procs.pair(target.address, out_args=["--proxy-protocol", "v1"],
                          in_args=["--mode", "raw", "--accept-proxy-protocol"])
    with connect(tin.address) as s:
        assert pl.echo_once(s, pl.v1_header(("198.51.100.9", 1234), ("192.0.2.1", 80)) + b"x") == b"x"
    assert tin.wait_for_log("connection closed")["peer"] == "198.51.100.9:1234"
    (h,) = wait_for(lambda: list(headers), "a header")
    assert h.source == split_address(out.wait_for_log("connection authorized")["peer"])


def test_header_arriving_in_pieces_is_accepted(procs, servers):
    target = servers.echo()
    _, tin = procs.pair(target.address, in_args=["--accept-proxy-protocol"])
    header = pl.v2_header(("2001:db8::5", 7), ("2001:db8::1", 8))
    with connect(tin.address) as s:
        for piece in (header[:5], header[5:14], header[14:30], header[30:]):
            s.sendall(piece)
            time.sleep(0.05)
        assert pl.echo_once(s, b"after") == b"after"
    assert tin.wait_for_log("connection closed")["peer"] == "[2001:db8::5]:7"


def test_local_header_keeps_the_connections_own_address(procs, servers):
    target = servers.echo()
    _, tin = procs.pair(target.address, in_args=["--accept-proxy-protocol"])
    with connect(tin.address) as s:
        me = s.getsockname()[:2]
        assert pl.echo_once(s, pl.v2_header(None, None) + b"ping") == b"ping"
    closed = tin.wait_for_log("connection closed")
    assert closed["peer"] == closed["via"] == harness.format_address(*me)


BAD_HEADERS = [
    ("missing", b"GET / HTTP/1.1\r\n\r\n", "does not start with a PROXY"),
    ("leading-zero-port", b"PROXY TCP4 10.0.0.1 10.0.0.2 0123 80\r\n", "malformed"),
    ("no-crlf-in-107-bytes", b"PROXY UNKNOWN " + b"x" * 150, "107"),
    ("lf-without-cr", b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n", "CRLF"),
    ("v2-tlv-overrun", pl.v2_header(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs=b"\x01\x00\x09ab"), "TLV"),
    ("v2-udp", pl.V2_SIGNATURE + bytes([0x21, 0x12, 0, 12]) + bytes(12), "TCP"),
    ("v2-too-long", pl.V2_SIGNATURE + bytes([0x21, 0x11, 0xff, 0xff]), "longer"),
]


@pytest.mark.parametrize("data,words", [pytest.param(d, w, id=i) for i, d, w in BAD_HEADERS])
def test_bad_or_missing_header_is_refused(procs, servers, data, words):
    target = servers.counter()
    out, tin = procs.pair(target.address, in_args=["--mode", "raw", "--accept-proxy-protocol"])
    with connect(tin.address) as s:
        s.sendall(data)
        assert closed_by_peer(s, 5), "tunnel-in kept a connection without a valid PROXY header"
    refused = tin.wait_for_log("connection refused: no valid PROXY header")
    assert refused["level"] == "warning" and words in refused["reason"], refused
    assert target.connection_count == 0
    assert not out.logs_with_msg("connection authorized"), "tunnel-in dialled tunnel-out anyway"


def test_only_the_balancers_may_send_the_header(procs, servers):
    """With --accept-proxy-from, a connection from an address outside the ranges is closed
    before its header is read: whoever sends the header chooses the client's address."""
    target, headers = proxy_target(servers)
    out, tin = procs.pair(target.address, out_args=["--proxy-protocol", "v2"],
                          in_args=["--mode", "mux", "--accept-proxy-protocol", "--accept-proxy-from", "192.0.2.0/24,10.0.0.0/8"])
    forged = pl.v1_header(("203.0.113.66", 4000), ("192.0.2.1", 80)) + b"x"
    with connect(tin.address) as s:
        s.sendall(forged)
        assert closed_by_peer(s, 5), "tunnel-in took a header from a sender not in --accept-proxy-from"
    refused = tin.wait_for_log("connection refused: not allowed to send a PROXY header")
    assert refused["level"] == "warning" and refused["peer"].startswith("127.0.0.1:")
    assert not headers and not out.logs_with_msg("connection authorized")

    # The loopback sender allowed: the header is taken and carried to the target.
    out2, tin2 = procs.pair(target.address, out_args=["--proxy-protocol", "v2"],
                            in_args=["--mode", "mux", "--accept-proxy-protocol", "--accept-proxy-from", "127.0.0.0/8"])
    with connect(tin2.address) as s:
        assert pl.echo_once(s, forged) == b"x"
    (h,) = wait_for(lambda: list(headers), "a header")
    assert h.source == ("203.0.113.66", 4000)


def test_header_that_never_completes_is_refused_at_the_handshake_timeout(procs, servers):
    target = servers.counter()
    _, tin = procs.pair(target.address, in_args=["--accept-proxy-protocol", "--handshake-timeout", "1s"])
    with connect(tin.address) as s:
        s.sendall(b"PROXY TCP4 10.0.")
        started = time.monotonic()
        assert closed_by_peer(s, 5)
        assert 0.8 < time.monotonic() - started < 3.5
    refused = tin.wait_for_log("connection refused: no valid PROXY header")
    assert "--handshake-timeout" in refused["reason"]
    assert target.connection_count == 0


def test_health_check_without_bytes_is_a_debug_line(procs, servers):
    target = servers.counter()
    _, tin = procs.pair(target.address, in_args=["--accept-proxy-protocol"])
    connect(tin.address).close()
    line = tin.wait_for_log("probe connection closed before the PROXY header")
    assert line["level"] == "debug"
    assert not tin.logs_with_msg("connection refused: no valid PROXY header")


# --------------------------------------------------------------------------------------
# tunnel-out --transparent


@pytest.fixture
def lab():
    netns.skip_unless_available("transparent mode")
    with netns.TransparentLab() as lab:
        yield lab


def _tunnel_args(pki, cred, listen: str, other: str, *extra: str) -> list[str]:
    return ["--listen", listen, other[0], other[1], "--cert", str(cred.cert), "--key", str(cred.key),
            "--ca", str(pki.ca_cert), *harness.log_args("debug"), *extra]


@pytest.mark.parametrize("mode", MODES)
def test_transparent_target_sees_the_original_client(procs, servers, pki, lab, mode):
    peers: list = []
    with netns.inside(lab.tgt):
        target = servers.start(pl.make_peer_recording_handler(peers), host=f"{lab.TARGET_SIDE}.2")
    with netns.inside(lab.gw):
        out = procs.start(TUNNEL_OUT, _tunnel_args(pki, pki.server, f"{lab.CLIENT_SIDE}.1:0",
                                                   ("--target", target.address), "--transparent"), name="tunnel-out")
    with netns.inside(lab.cli):
        tin = procs.start(TUNNEL_IN, _tunnel_args(pki, pki.client_a, f"{lab.CLIENT_SIDE}.2:0",
                                                  ("--connect", out.listen), "--server-name", "localhost",
                                                  "--mode", mode), name="tunnel-in")
        client = pl.connect_from(f"{lab.CLIENT_SIDE}.3", tin.address)
    with client:
        assert pl.echo_once(client, b"who am I?\n" * 1000) == b"who am I?\n" * 1000
        legacy_client = client.getsockname()[:2]

    (seen,) = wait_for(lambda: list(peers), "the target to see a connection")
    if mode == "mux":
        # The legacy client's own address (its port is the kernel's choice, see README).
        assert seen[0] == legacy_client[0] == f"{lab.CLIENT_SIDE}.3"
    else:
        # Raw mode: the TLS peer, tunnel-in.
        assert seen[0] == f"{lab.CLIENT_SIDE}.2"
    assert tin.wait_for_log("connection closed")["reason"] == "closed"


def test_transparent_without_the_capability_exits_2(pki, tmp_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to start the binary as an unprivileged user")
    tmp_dir.chmod(0o755)
    binary = tmp_dir / "tunnel-out"
    binary.write_bytes(TUNNEL_OUT.read_bytes())
    binary.chmod(0o755)
    args = ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", str(pki.server.cert),
            "--key", str(pki.server.key), "--ca", str(pki.ca_cert), "--transparent"]
    r = run_cli(binary, args, cwd=str(tmp_dir), user=65534, group=65534, extra_groups=[])
    assert r.returncode == 2, (r.returncode, r.stderr)
    (line,) = r.stderr.splitlines()
    assert line.startswith("tunnel-out: error: --transparent: not permitted") and "CAP_NET_ADMIN" in line, line


# --------------------------------------------------------------------------------------
# Unix sockets on the plain legs


@pytest.mark.parametrize("mode", MODES)
def test_unix_sockets_on_both_plain_legs(procs, servers, tmp_dir, mode):
    target = servers.echo(unix_path=str(tmp_dir / "target.sock"))
    out = procs.tunnel_out(target.address)
    tin = procs.tunnel_in(out.listen, "--mode", mode, listen=f"unix:{tmp_dir / 'in.sock'}")
    payload = os.urandom(300_000)
    assert echo_roundtrip(tin.address, payload) == payload
    assert tin.wait_for_log("connection closed")["peer"] == "unix"
    assert out.wait_for_log("connection closed")["target"] == f"unix:{tmp_dir / 'target.sock'}"


def _connect_as_nobody(path) -> str:
    """Tries a connection to `path` as uid/gid 65534; returns 'ok' or the error's name."""
    code = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1]); print('ok')\nexcept OSError as e: print(type(e).__name__)")
    r = subprocess.run(["/usr/bin/python3", "-c", code, str(path)], capture_output=True, text=True, timeout=10,
                       user=65534, group=65534, extra_groups=[])
    return r.stdout.strip()


def test_socket_mode_and_owner_are_applied(procs, servers, tmp_dir):
    if os.geteuid() != 0:
        pytest.skip("changing a socket's owner needs root")
    tmp_dir.chmod(0o755)
    target = servers.echo()
    out = procs.tunnel_out(target.address)
    nobody, nogroup = pwd.getpwuid(65534).pw_name, grp.getgrgid(65534).gr_name
    open_sock, closed_sock = tmp_dir / "open.sock", tmp_dir / "closed.sock"
    procs.tunnel_in(out.listen, "--socket-mode", "0660", "--socket-owner", f"{nobody}:{nogroup}",
                    listen=f"unix:{open_sock}")
    procs.tunnel_in(out.listen, "--socket-mode", "0600", listen=f"unix:{closed_sock}")

    st = os.stat(open_sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    st = os.stat(closed_sock)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    # The modes decide who gets in.
    assert _connect_as_nobody(open_sock) == "ok"
    assert _connect_as_nobody(closed_sock) == "PermissionError"


def test_stale_socket_file_is_replaced(procs, servers, tmp_dir):
    path = tmp_dir / "in.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(path))
    leftover.close()  # the file stays, nobody listens: what a killed process leaves behind
    target = servers.echo()
    out = procs.tunnel_out(target.address)
    tin = procs.tunnel_in(out.listen, listen=f"unix:{path}")
    assert echo_roundtrip(tin.address, b"fresh\n") == b"fresh\n"


@pytest.mark.parametrize("occupant", ["live-socket", "regular-file"])
def test_listen_path_in_use_or_not_a_socket_exits_2(pki, tmp_dir, occupant):
    path = tmp_dir / "in.sock"
    holder = None
    if occupant == "live-socket":
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(str(path))
        holder.listen(4)
    else:
        path.write_text("not a socket")
    try:
        r = run_cli(TUNNEL_IN, ["--listen", f"unix:{path}", "--connect", "127.0.0.1:9", "--cert",
                                str(pki.client_a.cert), "--key", str(pki.client_a.key), "--ca", str(pki.ca_cert)])
    finally:
        if holder:
            holder.close()
    assert r.returncode == 2, (r.returncode, r.stderr)
    # Binding comes after the credentials are loaded (and logged): the error is the last line.
    line = r.stderr.splitlines()[-1]
    expected = "is in use by a running process" if occupant == "live-socket" else "is not a socket"
    assert line.startswith("tunnel-in: error: ") and str(path) in line and expected in line, line
    assert path.exists(), "tunnel-in removed a path it does not own"


# --------------------------------------------------------------------------------------
# Start-up mistakes

MISTAKES = [
    # id, binary, extra args, listen (None: TCP), target/connect override, words in the line
    ("proxy-protocol-v3", TUNNEL_OUT, ["--proxy-protocol", "v3"], None, None, ["--proxy-protocol v3", "v1 or v2"]),
    ("proxy-protocol-udp", TUNNEL_OUT, ["--proxy-protocol", "v1", "--udp"], None, None, ["--proxy-protocol", "--udp"]),
    ("transparent-udp", TUNNEL_OUT, ["--transparent", "--udp"], None, None, ["--transparent", "--udp"]),
    ("transparent-unix-target", TUNNEL_OUT, ["--transparent"], None, "unix:/tmp/t.sock", ["--transparent", "host:port"]),
    ("transparent-user", TUNNEL_OUT, ["--transparent", "--user", "nobody"], None, None, ["--transparent", "--user"]),
    ("accept-proxy-udp", TUNNEL_IN, ["--accept-proxy-protocol", "--udp"], None, None, ["--accept-proxy-protocol"]),
    ("accept-proxy-from-alone", TUNNEL_IN, ["--accept-proxy-from", "10.0.0.0/8"], None, None,
     ["--accept-proxy-from", "only with --accept-proxy-protocol"]),
    ("accept-proxy-from-host-bits", TUNNEL_IN, ["--accept-proxy-protocol", "--accept-proxy-from", "10.0.0.0/8,10.0.0.1/8"],
     None, None, ["--accept-proxy-from 10.0.0.1/8", "10.0.0.0/8"]),
    ("accept-proxy-from-unix", TUNNEL_IN, ["--accept-proxy-protocol", "--accept-proxy-from", "10.0.0.0/8"],
     "unix:/tmp/np.sock", None, ["--accept-proxy-from", "IP --listen"]),
    ("socket-mode-unwritable", TUNNEL_IN, ["--socket-mode", "0444"], "unix:/tmp/np.sock", None,
     ["--socket-mode 0444", "no one may write"]),
    ("socket-mode-tcp", TUNNEL_IN, ["--socket-mode", "0660"], None, None, ["--socket-mode", "unix:"]),
    ("socket-owner-tcp", TUNNEL_IN, ["--socket-owner", "root"], None, None, ["--socket-owner", "unix:"]),
    ("socket-mode-not-octal", TUNNEL_IN, ["--socket-mode", "0689"], "unix:/tmp/np.sock", None, ["--socket-mode 0689"]),
    ("socket-mode-setuid", TUNNEL_IN, ["--socket-mode", "4660"], "unix:/tmp/np.sock", None, ["--socket-mode 4660"]),
    ("socket-mode-short", TUNNEL_IN, ["--socket-mode", "66"], "unix:/tmp/np.sock", None, ["--socket-mode 66"]),
    ("socket-owner-unknown-user", TUNNEL_IN, ["--socket-owner", "no-such-user-np"], "unix:/tmp/np.sock", None,
     ["--socket-owner", "no such user"]),
    ("socket-owner-unknown-group", TUNNEL_IN, ["--socket-owner", "root:no-such-group-np"], "unix:/tmp/np.sock", None,
     ["--socket-owner", "no such group"]),
    ("socket-owner-empty-group", TUNNEL_IN, ["--socket-owner", "root:"], "unix:/tmp/np.sock", None,
     ["--socket-owner", "USER:GROUP"]),
]


@pytest.mark.parametrize("binary,extra,listen,other,words",
                         [pytest.param(b, e, l, o, w, id=i) for i, b, e, l, o, w in MISTAKES])
def test_startup_mistake_exits_2_with_one_line(pki, binary, extra, listen, other, words):
    server = binary == TUNNEL_OUT
    cred = pki.server if server else pki.client_a
    args = ["--listen", listen or "127.0.0.1:0", "--target" if server else "--connect", other or "127.0.0.1:9",
            "--cert", str(cred.cert), "--key", str(cred.key), "--ca", str(pki.ca_cert), *extra]
    r = run_cli(binary, args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{binary.name}: error: "), lines[0]
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


def test_check_config_shows_the_plain_leg_settings(pki, tmp_dir):
    r = run_cli(TUNNEL_OUT, ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--cert", str(pki.server.cert),
                             "--key", str(pki.server.key), "--ca", str(pki.ca_cert), "--proxy-protocol", "v2",
                             "--check-config"])
    assert r.returncode == 0, r.stderr
    assert "proxy_protocol = v2\n" in r.stdout and "transparent = no\n" in r.stdout
    r = run_cli(TUNNEL_IN, ["--listen", f"unix:{tmp_dir / 'x.sock'}", "--connect", "127.0.0.1:9", "--cert",
                            str(pki.client_a.cert), "--key", str(pki.client_a.key), "--ca", str(pki.ca_cert),
                            "--accept-proxy-protocol", "--socket-mode", "660", "--check-config"])
    assert r.returncode == 0, r.stderr
    for line in ("accept_proxy_protocol = yes", "socket_mode = 0660", "socket_owner = (unchanged)"):
        assert line + "\n" in r.stdout
    r = run_cli(TUNNEL_IN, ["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9", "--cert", str(pki.client_a.cert),
                            "--key", str(pki.client_a.key), "--ca", str(pki.ca_cert), "--accept-proxy-protocol",
                            "--accept-proxy-from", "10.0.0.0/8,2001:db8::/32", "--check-config"])
    assert r.returncode == 0, r.stderr
    assert "accept_proxy_from = 10.0.0.0/8,2001:db8::/32\n" in r.stdout
