"""UDP over TLS: UDP flows as mux datagram frames (common/mux/PROTOCOL.md, "Datagrams").

The UDP suite itself also runs over TLS (TUNNEL_UDP_OVER_TLS=1, ctest e2e_udp_over_tls);
these tests cover what only this carrier has: the automatic fallback when tunnel-out's UDP
port gives no answer and the return to DTLS, flows and TCP streams sharing one mux
connection, per-flow authorization on a TLS port shared with TCP services, and the config
rules."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import harness
import udp_tools
from harness import TUNNEL_IN, TUNNEL_OUT, connect, recv_all, run_cli, sha256
from test_config import credential_keys, line_of, start_with_config, write_config
from udp_tools import ping

SWITCHED = "UDP to tunnel-out gets no answer: carrying flows over TLS"
BACK = "tunnel-out answers over UDP again: new flows use DTLS"


def count(proc, msg: str) -> int:
    return len(proc.logs_with_msg(msg))


def free_port_pair() -> int:
    """A port free for TCP on 127.0.0.1 whose UDP twin is free as well."""
    for _ in range(50):
        probe = udp_tools.udp_socket()
        port = probe.getsockname()[1]
        probe.close()
        if tcp_port_free(port):
            return port
    raise AssertionError("no free port pair")


def udp_blocker_with_free_tcp_twin() -> tuple[socket.socket, int]:
    """A bound UDP socket (a firewall that drops: takes datagrams, never answers) whose
    port is free for TCP on 127.0.0.1. Another test's outgoing connection may hold the
    first port's TCP twin: then another port is tried."""
    for _ in range(50):
        blocker = udp_tools.udp_socket()
        port = blocker.getsockname()[1]
        if tcp_port_free(port):
            blocker.setblocking(False)
            return blocker, port
        blocker.close()
    raise AssertionError("no UDP port with a free TCP twin")


def tcp_port_free(port: int) -> bool:
    with socket.socket() as t:
        try:
            t.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_flows_fall_back_to_tls_when_tunnel_out_udp_port_is_closed(procs, echo, client):
    # tunnel-out's DTLS port is elsewhere; on tunnel-in's --connect host:port only TCP answers.
    port = free_port_pair()
    out = procs.tunnel_out(echo.address, "--udp", "--udp-over-tls", "--tls-listen", f"127.0.0.1:{port}")
    tin = procs.tunnel_in(f"127.0.0.1:{port}", "--udp")
    started = time.monotonic()
    assert ping(client, tin.listen, b"first") == b"first"
    # The closed port answers at once (ICMP): no wait for --handshake-timeout (10s).
    assert time.monotonic() - started < 5
    switched = tin.wait_for_log(SWITCHED)
    assert switched["level"] == "warning"
    assert switched["tls"] == f"127.0.0.1:{port}"
    assert "refused" in switched["reason"]
    others = [udp_tools.udp_socket() for _ in range(3)]
    try:
        for i, s in enumerate(others):
            assert ping(s, tin.listen, b"other %d" % i) == b"other %d" % i
    finally:
        for s in others:
            s.close()
    assert ping(client, tin.listen, b"again") == b"again"
    # Logged once; every flow over TLS; tunnel-out's TLS port carried them.
    assert count(tin, SWITCHED) == 1
    flows = out.wait_for_logs("flow authorized", 4)
    assert len(flows) == 4 and all(f["transport"] == "tls" for f in flows)
    assert all(f["transport"] == "tls" for f in tin.wait_for_logs("flow authorized", 4))
    assert echo.received == 5


def test_flows_fall_back_to_tls_when_udp_is_silently_dropped(procs, echo):
    blocker, port = udp_blocker_with_free_tcp_twin()
    a, b = udp_tools.udp_socket(), udp_tools.udp_socket()
    try:
        procs.tunnel_out(echo.address, "--udp", "--udp-over-tls", "--tls-listen", f"127.0.0.1:{port}")
        tin = procs.tunnel_in(f"127.0.0.1:{port}", "--udp", "--handshake-timeout", "3s")
        host, lport = harness.split_address(tin.listen)
        started = time.monotonic()
        a.sendto(b"from a", (host, lport))
        time.sleep(0.5)
        b.sendto(b"from b", (host, lport))  # its own handshake would time out 0.5s later
        a.settimeout(8)
        b.settimeout(8)
        assert a.recv(100) == b"from a"
        assert b.recv(100) == b"from b"
        assert time.monotonic() - started >= 2.5, "fell back before the handshake timeout"
        switched = tin.wait_for_log(SWITCHED)
        assert "no answer from tunnel-out's UDP port within 3s" in switched["reason"]
        # b did not wait out its own timeout: it followed the service to TLS.
        # (Waited for: the data can arrive before our reader has seen the line about it.)
        tried = tin.wait_for_logs("no answer over UDP: trying TLS", 2)
        assert any(r["reason"] == "the service moved to TLS" for r in tried), tried
        assert count(tin, SWITCHED) == 1
        seen = 0
        while True:
            try:
                blocker.recv(65535)
                seen += 1
            except BlockingIOError:
                break
        assert seen > 0, "tunnel-in never tried DTLS"
    finally:
        for s in (blocker, a, b):
            s.close()


def test_junk_from_tunnel_outs_udp_address_does_not_stop_the_fallback(procs, echo):
    """Datagrams from tunnel-out's UDP address that are no DTLS answer (a stray service, a
    forger) are not "an answer": the flow still falls back to TLS."""
    blocker, port = udp_blocker_with_free_tcp_twin()
    stop = threading.Event()

    def answer_with_junk():
        while not stop.is_set():
            try:
                _, sender = blocker.recvfrom(65535)
                blocker.sendto(b"junk" * 20, sender)
            except BlockingIOError:
                time.sleep(0.01)

    junk = threading.Thread(target=answer_with_junk)
    junk.start()
    a = udp_tools.udp_socket()
    try:
        procs.tunnel_out(echo.address, "--udp", "--udp-over-tls", "--tls-listen", f"127.0.0.1:{port}")
        tin = procs.tunnel_in(f"127.0.0.1:{port}", "--udp", "--handshake-timeout", "2s")
        assert ping(a, tin.listen, b"through junk", timeout=8) == b"through junk"
        switched = tin.wait_for_log(SWITCHED)
        assert "no answer from tunnel-out's UDP port within 2s" in switched["reason"]
    finally:
        stop.set()
        junk.join(5)
        blocker.close()
        a.close()


def test_flows_falling_back_together_share_one_tls_attempt(procs, echo):
    """A burst of new flows (spoofed sources cost one datagram each) whose handshakes all
    hear nothing falls back together: one TLS connection is made for them, not one each."""
    blocker, port = udp_blocker_with_free_tcp_twin()
    clients = [udp_tools.udp_socket() for _ in range(20)]
    try:
        out = procs.tunnel_out(echo.address, "--udp", "--udp-over-tls", "--tls-listen", f"127.0.0.1:{port}")
        tin = procs.tunnel_in(f"127.0.0.1:{port}", "--udp", "--handshake-timeout", "2s")
        host, lport = harness.split_address(tin.listen)
        for i, c in enumerate(clients):
            c.sendto(b"burst %d" % i, (host, lport))
        for i, c in enumerate(clients):
            c.settimeout(10)
            assert c.recv(100) == b"burst %d" % i
        tin.wait_for_logs("flow authorized", len(clients))
        # The flows' shared attempt, adopted into the pool, and the pool's own connection.
        conns = out.logs_with_msg("mux connection authorized")
        assert len(conns) <= 2, conns  # (before: one per flow, 20)
    finally:
        blocker.close()
        for c in clients:
            c.close()


def test_returns_to_dtls_once_udp_answers_again(procs, echo, relays, client):
    out = procs.tunnel_out(echo.address, "--udp", "--udp-over-tls")  # DTLS and TLS on one host:port
    relay = relays(out.listen, drop=1.0)  # UDP between the sites: blocked for now
    tin = procs.tunnel_in(relay.address, "--udp", "--tls-fallback", out.listen, "--handshake-timeout", "2s",
                          "--dtls-retry", "1s")
    assert ping(client, tin.listen, b"over tls", timeout=8) == b"over tls"
    tin.wait_for_log(SWITCHED)
    relay.drop = 0.0  # the firewall opens
    back = tin.wait_for_log(BACK, timeout=10)
    assert back["level"] == "info"
    fresh = udp_tools.udp_socket()
    try:
        assert ping(fresh, tin.listen, b"over dtls") == b"over dtls"
    finally:
        fresh.close()
    # The new flow took DTLS; the one already over TLS stays there until it ends.
    tin.wait_for_logs("flow authorized", 2)
    assert tin.logs_with_msg("flow authorized")[-1]["transport"] == "dtls"
    assert ping(client, tin.listen, b"still tls") == b"still tls"
    # tunnel-out: the first flow over TLS, then DTLS only (the probe, the new flow).
    assert [f["transport"] for f in out.logs_with_msg("flow authorized")].count("tls") == 1


def shared_port_configs(procs, pki, tmp_dir, echo, tcp_target, udp_allow=("client-a",), tin_services=None,
                        tin_top=None):
    """tunnel-out with a TCP service `tcp` and a UDP service `udp` whose flows come over TLS on
    the TCP service's port; then a tunnel-in (client-a) with `tin_services` against it."""
    top = {**credential_keys(pki.server), "ca": str(pki.ca_cert), "log-format": "json", "log-level": "debug"}
    services = {
        "tcp": {"listen": "127.0.0.1:0", "target": tcp_target},
        "udp": {"udp": True, "udp-over-tls": True, "listen": "127.0.0.1:0", "tls-listen": "127.0.0.1:0",
                "target": echo.address, "allow-cn": list(udp_allow)},
    }
    out, listens = start_with_config(procs, TUNNEL_OUT, write_config(tmp_dir / "out.toml", top, services), 3,
                                     "tunnel-out")
    port = listens["tcp"]
    assert listens["udp"] == port, listens
    itop = {**credential_keys(pki.client_a), "ca": str(pki.ca_cert), "log-format": "json", "log-level": "debug",
            "connect": port, "server-name": "localhost", **(tin_top or {})}
    tin, local = start_with_config(procs, TUNNEL_IN, write_config(tmp_dir / "in.toml", itop, tin_services),
                                   len(tin_services), "tunnel-in")
    return out, tin, local


def test_flows_and_streams_share_one_mux_connection_without_stalling_each_other(procs, pki, servers, echo, tmp_dir):
    flood = os.urandom(1 << 20) * 16
    bulk = servers.sender(flood)  # pours 16 MiB into every connection, then closes
    out, tin, local = shared_port_configs(
        procs, pki, tmp_dir, echo, bulk.address,
        tin_top={"threads": 1},  # one worker: one pooled connection serves everything
        tin_services={"tcp": {"listen": "127.0.0.1:0", "mode": "mux", "pool": 1},
                      "udp": {"udp": True, "udp-over-tls": True, "listen": "127.0.0.1:0"}})
    tin.wait_for_log("mux connection up")
    tcp_local = harness.split_address(local["tcp"])

    # A legacy TCP client that never reads: its stream fills its window and stalls.
    stalled = connect(tcp_local, timeout=30)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"x")
    bulk.wait_connections(1)
    time.sleep(1.0)
    c = udp_tools.udp_socket()
    try:
        worst = 0.0
        for i in range(200):
            t = time.monotonic()
            assert ping(c, local["udp"], b"ping %d" % i, timeout=2) == b"ping %d" % i
            worst = max(worst, time.monotonic() - t)
        assert worst < 1.0, f"a datagram waited {worst:.2f}s behind a stalled stream"

        # Bulk streams and a stream of datagrams at once: both get through. Only datagrams
        # answered while a transfer is under way count; a transfer takes 0.1-1 s depending
        # on the machine's load, so transfers repeat until enough datagrams were answered.
        answered = []
        transferring = threading.Event()
        stop = threading.Event()

        def datagrams():
            s = udp_tools.udp_socket()
            s.settimeout(0.5)
            host, port = harness.split_address(local["udp"])
            try:
                while not stop.is_set():
                    s.sendto(b"d" * 1000, (host, port))
                    try:
                        size = len(s.recv(2000))
                    except socket.timeout:
                        continue
                    if transferring.is_set():
                        answered.append(size)
            finally:
                s.close()

        t = threading.Thread(target=datagrams)
        t.start()
        transfers = 0
        try:
            while len(answered) <= 50 and transfers < 20:
                with connect(tcp_local, timeout=30) as s:
                    transferring.set()
                    s.sendall(b"y")
                    got = recv_all(s)
                    transferring.clear()
                transfers += 1
                assert sha256(got) == sha256(flood), f"got {len(got)} of {len(flood)} bytes"
        finally:
            stop.set()
            t.join(10)
        assert len(answered) > 50, \
            f"only {len(answered)} datagrams came back during {transfers} transfers"
        assert set(answered) == {1000}
    finally:
        c.close()
        stalled.close()
    # One mux connection carried the streams and the flows.
    conns = out.logs_with_msg("mux connection authorized")
    assert len(conns) == 1, conns
    flows = out.logs_with_msg("flow authorized")
    streams = out.logs_with_msg("connection authorized")
    assert flows and streams
    assert {r["peer"] for r in flows + streams} == {conns[0]["peer"]}


def test_flow_of_a_client_off_the_services_allow_list_is_refused(procs, pki, servers, echo, tmp_dir, client):
    target = servers.echo()
    out, tin, local = shared_port_configs(
        procs, pki, tmp_dir, echo, target.address, udp_allow=("client-b",),
        tin_services={"udp": {"udp": True, "udp-over-tls": True, "listen": "127.0.0.1:0"}})
    # The connection is admitted (service tcp takes any client of the CA); the flow is not.
    assert ping(client, local["udp"], b"should not pass", timeout=2) is None
    refused = out.wait_for_log("flow refused")
    assert refused["reason"] == "peer certificate not on the allow-list of service udp"
    assert refused["service"] == "udp"
    tin.wait_for_log("flow refused by tunnel-out")
    time.sleep(0.2)
    assert echo.received == 0
    assert not out.logs_with_msg("flow authorized")


def test_unknown_service_and_the_wrong_kind_of_service_are_refused(procs, pki, servers, echo, tmp_dir):
    target = servers.counter()
    # Services renamed with `service` log that name: give them addresses of their own.
    flow_to_tcp = f"127.0.0.1:{free_port_pair()}"
    stream_to_udp = f"127.0.0.1:{harness.free_tcp_port()}"
    out, tin, local = shared_port_configs(
        procs, pki, tmp_dir, echo, target.address,
        tin_top={"threads": 1},
        tin_services={
            "tcp": {"listen": "127.0.0.1:0", "mode": "mux", "pool": 1},
            # Flows over the TCP service's connection (same tunnel), naming what tunnel-out refuses.
            "nope": {"udp": True, "udp-over-tls": True, "listen": "127.0.0.1:0"},
            "flow-to-tcp": {"udp": True, "udp-over-tls": True, "service": "tcp", "listen": flow_to_tcp},
            # A stream naming the UDP service.
            "stream-to-udp": {"listen": stream_to_udp, "mode": "mux", "service": "udp"},
        })
    for address in (local["nope"], flow_to_tcp):
        s = udp_tools.udp_socket()
        try:
            assert ping(s, address, b"x", timeout=2) is None
        finally:
            s.close()
    out.wait_for_log(lambda r: r.get("msg") == "flow refused" and r["reason"] == "unknown service nope")
    out.wait_for_log(lambda r: r.get("msg") == "flow refused" and
                     r["reason"] == "service tcp carries TCP: open a stream, not a flow")
    with connect(harness.split_address(stream_to_udp)) as s:
        assert harness.closed_by_peer(s, timeout=5)
    out.wait_for_log(lambda r: r.get("msg") == "stream refused" and
                     r["reason"] == "service udp carries UDP: open a flow, not a stream")
    time.sleep(0.2)
    assert echo.received == 0 and target.connection_count == 0


def test_unknown_service_on_a_connection_of_its_own_is_refused_in_the_handshake(procs, pki, servers, echo,
                                                                                tmp_dir, client):
    target = servers.counter()
    out, _, local = shared_port_configs(procs, pki, tmp_dir, echo, target.address,
                                        tin_services={"tcp": {"listen": "127.0.0.1:0", "mode": "raw"}})
    # Its connections name the service in the SNI: on a port with several services an
    # unknown one is refused before any flow is opened.
    port = out.logs_with_msg("listening")[0]["listen"]
    tin = procs.tunnel_in(port, "--udp", "--udp-over-tls", "--service", "nope", "--server-name", "localhost",
                          "--handshake-timeout", "3s")
    assert ping(client, tin.listen, b"x", timeout=3) is None
    failed = out.wait_for_log("handshake failed")
    assert failed["reason"] == "unknown service nope"
    tin.wait_for_log("handshake with tunnel-out failed")
    assert echo.received == 0


def test_a_plain_tls_client_cannot_use_a_udp_service(procs, pki, echo):
    out = procs.tunnel_out(echo.address, "--udp", "--udp-over-tls")
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.client_a.cert), str(pki.client_a.key))
    with connect(harness.split_address(out.listen)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.settimeout(5)
            try:
                assert tls.recv(100) == b""
            except (ssl.SSLError, ConnectionResetError):
                pass  # closed without close_notify: the same refusal
    refused = out.wait_for_log("connection refused")
    assert "carries UDP" in refused["reason"]


def test_config_mistakes_name_the_file_line_and_key(pki, tmp_dir):
    creds = {**credential_keys(pki.server), "ca": str(pki.ca_cert)}
    cases = [
        ({"u": {"udp": True, "listen": "127.0.0.1:0", "target": "127.0.0.1:9", "tls-listen": "127.0.0.1:0"}},
         "tls-listen", "u", "only with udp-over-tls"),
        ({"t": {"listen": "127.0.0.1:7000", "target": "127.0.0.1:9"},
          "u": {"udp": True, "udp-over-tls": True, "listen": "127.0.0.1:7001", "tls-listen": "127.0.0.1:7000",
                "target": "127.0.0.1:9", "handshake-timeout": "3s"}},
         "handshake-timeout", "u",
         "differs from services.t, which listens on 127.0.0.1:7000 too (services on one port share its TLS settings)"),
        ({"t": {"listen": "127.0.0.1:7000", "target": "127.0.0.1:9"},
          "u": {"udp": True, "udp-over-tls": True, "listen": "127.0.0.1:7000", "target": "127.0.0.1:9",
                "service": "T"}},
         "service", "u", "service name T is also services.t's on 127.0.0.1:7000"),
    ]
    for services, key, table, message in cases:
        path = write_config(tmp_dir / "out.toml", creds, services)
        r = run_cli(TUNNEL_OUT, ["--config", str(path), "--check-config"])
        assert r.returncode == 2, r.stdout + r.stderr
        line = line_of(path, f"{key} = ")
        assert r.stderr.strip() == f"tunnel-out: error: {path}:{line}: services.{table}.{key}: {message}"
    path = write_config(tmp_dir / "in.toml", {**credential_keys(pki.client_a), "ca": str(pki.ca_cert)},
                        {"u": {"udp": True, "udp-over-tls": True, "tls-fallback": "127.0.0.1:9",
                               "listen": "127.0.0.1:0", "connect": "127.0.0.1:9"}})
    r = run_cli(TUNNEL_IN, ["--config", str(path), "--check-config"])
    assert r.returncode == 2
    assert r.stderr.strip() == (f"tunnel-in: error: {path}:{line_of(path, 'tls-fallback = ')}: services.u.tls-fallback: "
                                "not with udp-over-tls (every flow goes over TLS already)")


def test_port_0_finds_one_number_free_for_tls_and_udp(procs, echo):
    """--listen host:0 with --udp --udp-over-tls serves TLS and DTLS on one host:port. The
    kernel picks the TCP number; when another program holds it for UDP, tunnel-out asks for
    another instead of failing to start. Half of the numbers the kernel hands out for port 0
    (odd ones, on Linux) are held for UDP here, so most starts meet a taken one."""
    lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    held = []
    try:
        for port in range(lo | 1, hi + 1, 4):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.1", port))
                held.append(s)
            except OSError:
                s.close()
        assert len(held) > 3000, len(held)
        taken = 0
        for _ in range(6):
            out = procs.tunnel_out(echo.address, "--udp", "--udp-over-tls")
            listening = out.wait_for_logs("listening", 2)
            assert {r["transport"] for r in listening} == {"udp", "udp over tls"}, listening
            assert len({r["listen"] for r in listening}) == 1, listening
            taken += count(out, "port number taken for UDP; asking for another")
            connect(out.address).close()  # the TLS port takes connections
            out.stop()
        print(f"\n6 starts met {taken} port numbers taken for UDP")
    finally:
        for s in held:
            s.close()
