"""End-to-end tests of UDP mode (--udp): the real binaries on loopback, DTLS 1.2 between
them, a UDP echo server as the legacy target.

With TUNNEL_UDP_OVER_TLS=1 the same suite runs with --udp-over-tls on both binaries: the
flows then travel as mux datagram frames over TLS. Tests of DTLS itself (cookies,
connection IDs, a lossy UDP path between the tunnels, openssl s_client -dtls) are skipped
then, each saying why."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import fake_dns
import harness
import udp_tools
from udp_tools import ping, run_flows

OVER_TLS = os.environ.get("TUNNEL_UDP_OVER_TLS", "") == "1"
MODE_ARGS = ["--udp", "--udp-over-tls"] if OVER_TLS else ["--udp"]


def dtls_only(why: str):
    return pytest.mark.skipif(OVER_TLS, reason=f"DTLS-specific ({why}); flows over TLS have none of it")


def udp_pair(procs, target, out_args=(), in_args=(), client_cred=None, via=None, level="debug", **out_kw):
    """tunnel-out --udp in front of `target`, tunnel-in --udp pointing at it (or at the
    relay `via(out_address)` returns); both with --udp-over-tls in that mode (tunnel-out
    then serves TLS on the same host:port, which tunnel-in connects to). `out_kw` goes to
    tunnel-out's Popen."""
    out = procs.tunnel_out(target, *MODE_ARGS, *out_args, level=level, **out_kw)
    connect = via(out.listen) if via else out.listen
    tin = procs.tunnel_in(connect, *MODE_ARGS, *in_args, cred=client_cred, level=level)
    return out, tin


def count(proc, msg: str) -> int:
    """Lines with `msg` so far. (To expect some, wait for them with wait_for_logs: a line
    can reach the log reader after the traffic it is about.)"""
    return len(proc.logs_with_msg(msg))


def test_echo_10000_datagrams_over_50_flows(procs, echo):
    out, tin = udp_pair(procs, echo.address, level="info")
    res = run_flows(tin.listen, flows=50, total=10_000, min_size=1, max_size=1200, window=4)
    print(f"\n10k echo: {res.answered} answered in {res.elapsed:.2f}s = {res.rate:.0f} datagrams/s "
          f"(round trips through both binaries), timed out {res.timed_out}, unexpected {res.unexpected}")
    assert res.sent == 10_000
    assert res.unexpected == 0, "an echo was duplicated or corrupted"
    assert res.timed_out == 0 and res.answered == 10_000
    assert echo.received == 10_000
    assert len(out.wait_for_logs("flow authorized", 50)) == 50
    assert len(tin.wait_for_logs("flow authorized", 50)) == 50
    # Each tunnel-out flow relays from a socket of its own.
    assert len(echo.sources) == 50


def test_a_named_target_is_looked_up_for_every_flow(procs, tmp_dir):
    """tunnel-out's --target is a name its name server does not know yet: tunnel-out still
    starts, and a flow then ends with "target unreachable". Each new flow looks the name up
    again: once it resolves, flows reach it, and after it moves new flows reach the new
    address while an older flow keeps its own. The name server answers after 0.5 s, so a
    flow's first datagram always arrives while its target is being looked up (it is held,
    not lost)."""
    fake_dns.skip_unless_available(tmp_dir)
    name = "target.tunnel.test"
    first = udp_tools.UdpEcho("127.0.0.1")
    port = first.sock.getsockname()[1]
    second = udp_tools.UdpEcho("127.0.0.2", port)
    dns = fake_dns.FakeDns(tmp_dir, answers={}, silent=set(), delays={name: 0.5})
    clients = [udp_tools.udp_socket() for _ in range(3)]
    try:
        out, tin = udp_pair(procs, f"{name}:{port}", level="info", preexec_fn=dns.preexec())
        assert ping(clients[0], tin.listen, b"too early", timeout=2) is None
        out.wait_for_log(lambda r: r.get("msg") == "target unreachable" and r.get("target") == f"{name}:{port}")
        tin.wait_for_log(lambda r: r.get("msg") == "flow closed" and r.get("peer") == udp_tools.addr_text(clients[0].getsockname()))

        dns.answers[name] = "127.0.0.1"
        assert ping(clients[1], tin.listen, b"to the first", timeout=5) == b"to the first"
        dns.answers[name] = "127.0.0.2"
        assert ping(clients[2], tin.listen, b"to the second", timeout=5) == b"to the second"
        assert ping(clients[1], tin.listen, b"still the first", timeout=5) == b"still the first"
        assert (first.received, second.received) == (2, 1)
        assert dns.count(name) == 3, dict(dns.queries)
        assert out.proc.poll() is None
    finally:
        for c in clients:
            c.close()
        dns.close()
        first.close()
        second.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _forged_unreachable(code: int, sport: int, dport: int) -> bytes:
    """An ICMP destination-unreachable with `code`, quoting a UDP datagram from
    127.0.0.1:sport to 127.0.0.1:dport, as a router on the path (or anyone) could send."""
    lo = socket.inet_aton("127.0.0.1")
    inner_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 8, 0, 0, 64, socket.IPPROTO_UDP, 0, lo, lo)
    inner_ip = inner_ip[:10] + struct.pack("!H", _checksum(inner_ip)) + inner_ip[12:]
    quoted = inner_ip + struct.pack("!HHHH", sport, dport, 16, 0) + b"\0" * 8
    header = struct.pack("!BBHI", 3, code, 0, 0)
    return struct.pack("!BBHI", 3, code, _checksum(header + quoted), 0) + quoted


def _connected_udp_ports(to_port: int) -> list[int]:
    """Local ports of the loopback UDP sockets connected to 127.0.0.1:to_port."""
    ports = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if remote == f"0100007F:{to_port:04X}":
            ports.append(int(local.split(":")[1], 16))
    return ports


@dtls_only("ICMP errors about DTLS datagrams; over TLS the path is TCP")
def test_forged_icmp_errors_do_not_end_an_established_flow(procs, echo, client):
    """ICMP errors quoting a flow's datagrams to tunnel-out (host unreachable,
    administratively prohibited, protocol unreachable: each makes the kernel fail the next
    receive) are no proof the session is gone, and anyone can send them: the flow carries
    on."""
    out, tin = udp_pair(procs, echo.address, level="info")
    assert ping(client, tin.listen, b"before") == b"before"
    out_port = int(out.listen.rpartition(":")[2])
    ports = _connected_udp_ports(out_port)
    assert len(ports) == 1, ports
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
        for code in (1, 13, 2):
            raw.sendto(_forged_unreachable(code, ports[0], out_port), ("127.0.0.1", 0))
            time.sleep(0.1)
            assert ping(client, tin.listen, f"after {code}".encode()) == f"after {code}".encode()
    assert count(tin, "flow closed") == 0


@dtls_only("the DTLS handshake; over TLS there is none per flow")
def test_an_icmp_error_during_a_handshake_does_not_end_it(procs, echo, client):
    """Without a TLS fallback, an ICMP error met by a flow's DTLS handshake is no reason to
    give up (anyone can send one, and spraying the port range would end every handshake):
    the handshake goes on, and its retransmission reaches a tunnel-out that has come up
    meanwhile."""
    probe = udp_tools.udp_socket()
    port = probe.getsockname()[1]
    probe.close()
    tin = procs.tunnel_in(f"127.0.0.1:{port}", "--udp", "--tls-fallback", "off")
    host, lport = harness.split_address(tin.listen)
    client.sendto(b"early", (host, lport))
    time.sleep(0.5)  # the ClientHello met the closed port: ICMP port unreachable
    procs.tunnel_out(echo.address, "--udp", listen=f"127.0.0.1:{port}")
    client.settimeout(10)
    assert client.recv(100) == b"early"  # (before: the flow ended at once, "port closed")
    assert count(tin, "handshake with tunnel-out failed") == 0


@dtls_only("DTLS cannot carry an empty datagram; over TLS it is carried")
def test_an_empty_datagram_from_a_new_client_costs_no_handshake(procs, echo, client):
    out, tin = udp_pair(procs, echo.address)
    host, port = harness.split_address(tin.listen)
    client.sendto(b"", (host, port))
    dropped = tin.wait_for_log("datagram dropped: empty")
    assert dropped["size"] == 0
    time.sleep(1.0)  # a handshake on loopback takes milliseconds
    assert count(out, "flow authorized") == 0  # (before: the empty datagram opened a flow)
    assert ping(client, tin.listen, b"then data") == b"then data"
    assert len(out.wait_for_logs("flow authorized", 1)) == 1


@dtls_only("a lossy UDP path between the tunnels; over TLS that path is TCP")
def test_lossy_duplicating_reordering_path_keeps_datagrams_intact_and_unique(procs, echo, relays):
    relay = None

    def via(out_addr):
        nonlocal relay
        relay = relays(out_addr, drop=0.10, duplicate=0.05, reorder=0.05, seed=3)
        return relay.address

    out, tin = udp_pair(procs, echo.address, in_args=["--handshake-timeout", "30s"],
                        out_args=["--handshake-timeout", "30s"], via=via)
    res = run_flows(tin.listen, flows=10, total=600, window=4, answer_timeout=1.5, deadline=90)
    print(f"\nlossy: sent {res.sent}, answered {res.answered}, timed out {res.timed_out}, late {res.late}, "
          f"unexpected {res.unexpected}, relay {relay.stats}")
    assert relay.stats["dropped"] > 0 and relay.stats["duplicated"] > 0 and relay.stats["reordered"] > 0
    assert res.unexpected == 0, "an echo was duplicated or corrupted"
    # Every flow's handshake completed despite the losses and carried traffic.
    out.wait_for_logs("flow authorized", 10)
    assert all(n > 0 for n in res.per_flow_answered), res.per_flow_answered
    # Two crossings of a 10% lossy relay each way: roughly 0.9^2 of round trips survive.
    assert res.answered + res.late >= 0.6 * res.sent
    # Duplicated records never reached the target twice: it saw no more than was sent.
    assert echo.received <= res.sent


@dtls_only("DTLS connection IDs across a NAT rebinding")
def test_nat_rebinding_keeps_the_flow_without_a_new_handshake(procs, echo, relays, client):
    relay = None

    def via(out_addr):
        nonlocal relay
        relay = relays(out_addr)
        return relay.address

    out, tin = udp_pair(procs, echo.address, via=via)
    for i in range(5):
        assert ping(client, tin.listen, b"before-%d" % i) == b"before-%d" % i
    assert len(out.wait_for_logs("flow authorized", 1)) == 1
    new_ports = relay.rebind()
    assert len(new_ports) == 1
    for i in range(5):
        assert ping(client, tin.listen, b"after-%d" % i) == b"after-%d" % i
    moved = out.wait_for_log("flow moved to a new address")
    assert moved["to"].endswith(f":{new_ports[0]}")
    # Same session on both sides: no second handshake anywhere.
    assert len(out.wait_for_logs("flow authorized", 1)) == 1
    assert len(tin.wait_for_logs("flow authorized", 1)) == 1
    assert count(out, "flow closed") == 0


@dtls_only("HelloVerifyRequest cookies")
def test_clienthello_without_cookie_gets_a_small_hello_verify_request_and_no_state(procs, echo, client):
    out = procs.tunnel_out(echo.address, "--udp", "--max-flows", "1")
    hello = udp_tools.capture_client_hello()
    host, port = harness.split_address(out.listen)
    probes = [udp_tools.udp_socket() for _ in range(20)]
    try:
        for p in probes:
            p.settimeout(5)
            p.sendto(hello, (host, port))
            reply = p.recv(65535)
            assert reply[0] == udp_tools.HANDSHAKE and reply[13] == udp_tools.HELLO_VERIFY_REQUEST
            assert len(reply) <= len(hello), f"HelloVerifyRequest {len(reply)} > ClientHello {len(hello)}"
    finally:
        for p in probes:
            p.close()
    # Twenty unverified peers took no flow slot: the one allowed flow is still free.
    tin = procs.tunnel_in(out.listen, "--udp")
    assert ping(client, tin.listen, b"after probes") == b"after probes"
    assert len(out.wait_for_logs("flow authorized", 1)) == 1
    assert count(out, "flow refused: limit reached") == 0
    assert echo.received == 1


def test_client_from_a_foreign_ca_is_refused(procs, pki, echo, client):
    out, tin = udp_pair(procs, echo.address, client_cred=pki.foreign_client, in_args=["--handshake-timeout", "3s"])
    assert ping(client, tin.listen, b"should not pass", timeout=3) is None
    out.wait_for_log("handshake failed")
    tin.wait_for_log("handshake with tunnel-out failed")
    assert count(out, "flow authorized") == 0
    assert echo.received == 0


def test_client_not_on_the_allow_list_is_refused(procs, echo, client):
    out, tin = udp_pair(procs, echo.address, out_args=["--allow-cn", "client-b"], in_args=["--handshake-timeout", "3s"])
    assert ping(client, tin.listen, b"should not pass", timeout=3) is None
    failed = out.wait_for_log("handshake failed")
    assert "allow-list" in failed["reason"]
    assert count(out, "flow authorized") == 0
    assert echo.received == 0


@dtls_only("openssl s_client -dtls1_2")
def test_openssl_s_client_dtls12_interoperates(procs, pki, echo):
    out = procs.tunnel_out(echo.address, "--udp")
    host, port = harness.split_address(out.listen)
    r = subprocess.run(
        ["bash", "-c",
         # s_client stays up after its input ends on DTLS: `timeout` ends it once the echo is in.
         f"(printf 'ping-from-openssl\\n'; sleep 2) | timeout 4 openssl s_client -dtls1_2 -connect {host}:{port} "
         f"-cert {pki.client_a.cert} -key {pki.client_a.key} -CAfile {pki.ca_cert} -quiet"],
        capture_output=True, text=True, timeout=20,
    )
    assert "ping-from-openssl" in r.stdout, r.stdout + r.stderr
    authorized = out.wait_for_log("flow authorized")
    assert authorized["tls"] == "DTLSv1.2"
    assert "client-a" in authorized["identity"]


@dtls_only("a DTLS client's certificate chain")
def test_a_chain_that_costs_seconds_to_check_gets_its_source_penalised(procs, pki, echo, tmp_dir):
    # As over TCP (test_adversarial.py): a chain free to make costs tunnel-out's UDP thread,
    # which every flow of the service waits for, a second or more. Its source is kept out.
    import hardening as hd
    import trust_tools as tt
    chain, key = tt.costly_chain(tmp_dir, depth=3)  # DTLS reassembles at most 16 KiB
    pems = chain.read_text().split("-----END CERTIFICATE-----\n")
    leaf, intermediates = tmp_dir / "leaf.pem", tmp_dir / "intermediates.pem"
    leaf.write_text(pems[0] + "-----END CERTIFICATE-----\n")
    intermediates.write_text("-----END CERTIFICATE-----\n".join(pems[1:]))
    out = procs.tunnel_out(echo.address, "--udp", "--status", "127.0.0.1:0", listen="[::]:0")
    port = harness.split_address(out.listen)[1]

    def attempt() -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", "-c", f"sleep 2 | timeout 5 openssl s_client -dtls1_2 -connect 127.0.0.1:{port} "
                           f"-cert {leaf} -cert_chain {intermediates} -key {key} -quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # Two at once from one source: the first whose chain is checked pays; the other is
    # refused at its next step (or, not past the cookie yet, dropped at its ClientHello).
    for p in [attempt(), attempt()]:
        p.wait(30)
    penalised = out.wait_for_log("source penalised: a failed handshake cost much CPU", timeout=30)
    assert penalised["cpu_ms"] >= 200 and penalised["refused_for_s"] == 10, penalised
    assert "127.0.0.1" in penalised["peer"]
    failed = out.logs_with_msg("handshake failed")
    costly = [r for r in failed if "source penalised" not in r["reason"]]
    assert len(costly) == 1 and costly[0]["identity"].startswith("CN=client-a"), failed
    assert len(out.logs_with_msg("source penalised: a failed handshake cost much CPU")) == 1
    # Again from that source: its ClientHello is dropped, not even asked for a cookie.
    dropped = hd.metric(hd.scrape(out), "tunnel_udp_datagrams_dropped_total", reason="penalised")
    hello, again = udp_tools.capture_client_hello(), udp_tools.udp_socket()
    again.sendto(hello, ("127.0.0.1", port))
    again.settimeout(1.0)
    with pytest.raises(socket.timeout):
        again.recv(65535)
    assert hd.metric(hd.scrape(out), "tunnel_udp_datagrams_dropped_total", reason="penalised") == dropped + 1
    assert "127.0.0.1" in out.wait_for_log("datagram dropped: source penalised")["peer"]
    assert len(out.logs_with_msg("handshake failed")) == len(failed)
    # Another source is served as ever.
    tin = procs.tunnel_in(f"[::1]:{port}", "--udp")
    assert ping(udp_tools.udp_socket(), tin.listen, b"from another source") == b"from another source"
    assert echo.received == 1


def test_oversized_datagram_is_dropped_counted_and_the_flow_keeps_working(procs, echo, client):
    out, tin = udp_pair(procs, echo.address, in_args=["--mtu", "1400"])
    assert ping(client, tin.listen, b"first") == b"first"
    # Over TLS the limit is one mux frame (16376 bytes), whatever --mtu says.
    too_big = 20_000 if OVER_TLS else 2000
    assert ping(client, tin.listen, b"x" * too_big, timeout=1) is None
    dropped = tin.wait_for_log("datagram dropped: larger than a mux datagram frame" if OVER_TLS
                               else "datagram dropped: larger than the DTLS payload for --mtu")
    assert dropped["size"] == too_big and dropped["dropped_total"] == 1
    assert dropped["max"] == 16376 if OVER_TLS else dropped["max"] < 1400
    big = b"y" * dropped["max"]
    assert ping(client, tin.listen, big) == big
    assert ping(client, tin.listen, b"after") == b"after"
    assert echo.received == 3
    assert len(out.wait_for_logs("flow authorized", 1)) == 1


def test_tunnel_in_max_flows_is_enforced(procs, echo):
    out, tin = udp_pair(procs, echo.address, in_args=["--max-flows", "2"])
    socks = [udp_tools.udp_socket() for _ in range(3)]
    try:
        assert ping(socks[0], tin.listen, b"a") == b"a"
        assert ping(socks[1], tin.listen, b"b") == b"b"
        assert ping(socks[2], tin.listen, b"c", timeout=2) is None
        refused = tin.wait_for_log("flow refused: limit reached")
        assert refused["max_flows"] == 2
        assert ping(socks[0], tin.listen, b"a2") == b"a2"
    finally:
        for s in socks:
            s.close()


def test_tunnel_out_max_flows_is_enforced(procs, echo):
    out, tin = udp_pair(procs, echo.address, out_args=["--max-flows", "1"], in_args=["--handshake-timeout", "3s"])
    socks = [udp_tools.udp_socket() for _ in range(2)]
    try:
        assert ping(socks[0], tin.listen, b"a") == b"a"
        assert ping(socks[1], tin.listen, b"b", timeout=4) is None
        refused = out.wait_for_log("flow refused: limit reached")
        assert refused["max_flows"] == 1
        assert len(out.wait_for_logs("flow authorized", 1)) == 1
        if not OVER_TLS:  # told by an alert, not left to its handshake timeout
            failed = tin.wait_for_log("handshake with tunnel-out failed")
            assert "alert" in failed["reason"], failed
        assert ping(socks[0], tin.listen, b"a2") == b"a2"
    finally:
        for s in socks:
            s.close()


def test_handshakes_left_half_open_do_not_lock_real_peers_out(procs, echo):
    if OVER_TLS:
        pytest.skip("DTLS only: over TLS a flow opens inside an authenticated connection")
    # A --max-flows slot is taken once the peer's certificate is verified: twenty clients
    # that pass the cookie exchange and stop (no certificate needed) hold none, and the
    # oldest of them is pushed out when more arrive.
    out, tin = udp_pair(procs, echo.address, out_args=["--max-flows", "2"])
    hello = udp_tools.capture_client_hello()
    stalled = [udp_tools.half_open_dtls(out.listen, hello)[0] for _ in range(20)]
    client = udp_tools.udp_socket()
    try:
        assert ping(client, tin.listen, b"real peer") == b"real peer"
        assert out.wait_for_log("handshake pushed out by newer ones")["half_open"] == 16
        assert not out.logs_with_msg("flow refused: limit reached")
    finally:
        client.close()
        for s in stalled:
            s.close()


@dtls_only("half-open DTLS handshakes")
def test_one_host_holding_many_handshakes_pushes_out_only_its_own(procs, echo, relays, client):
    # With the half-open list full (16 for --max-flows 16), a host that passes the cookie on
    # port after port must push out its own handshakes, not a real peer's slower one.
    out = procs.tunnel_out(echo.address, "--udp", "--max-flows", "16")
    relay = relays(out.listen)
    tin = procs.tunnel_in(relay.address, "--udp", "--handshake-timeout", "20s")
    relay.gate("up", 2)  # the real peer's handshake waits at tunnel-out, half-open
    client.sendto(b"real peer", harness.split_address(tin.listen))
    deadline = time.monotonic() + 10
    while relay.gated_count("up") == 0:
        assert time.monotonic() < deadline, "the handshake never reached the gate"
        time.sleep(0.02)
    hello = udp_tools.capture_client_hello()
    flood = [udp_tools.half_open_dtls(out.listen, hello, source="127.0.0.2")[0] for _ in range(40)]
    try:
        pushed = out.wait_for_log("handshake pushed out by newer ones")
        assert pushed["peer"].startswith("127.0.0.2:"), pushed
        relay.release()
        client.settimeout(10)
        assert client.recv(100) == b"real peer"
    finally:
        for s in flood:
            s.close()


def test_copies_of_a_handshake_record_do_not_make_tunnel_out_resend_its_flight(procs, echo):
    if OVER_TLS:
        pytest.skip("DTLS only")
    # mbedTLS answers each copy of the peer's last handshake record with its whole flight
    # again: copies with fresh record numbers, sent quickly, get nothing more.
    out, _ = udp_pair(procs, echo.address)
    s, record = udp_tools.half_open_dtls(out.listen, udp_tools.capture_client_hello())
    try:
        host, port = out.listen.rsplit(":", 1)
        s.settimeout(0.2)
        flight = 1  # datagrams in the first flight (half_open_dtls took the first)
        while True:
            try:
                s.recv(65535)
                flight += 1
            except socket.timeout:
                break
        answered = 0
        for seq in range(2, 12):
            copy = record[:5] + seq.to_bytes(6, "big") + record[11:]
            s.sendto(copy, (host, int(port)))
            try:
                while True:
                    s.recv(65535)
                    answered += 1
            except socket.timeout:
                pass
        # Ten copies over about two seconds: at most one resend per half second (four
        # flights), where each copy was answered with the whole flight (ten) before.
        assert answered <= 4 * flight, (answered, flight)
    finally:
        s.close()


def _wait(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def _last_record(datagram: bytes) -> bytes:
    at = 0
    while True:
        end = at + 13 + int.from_bytes(datagram[at + 11:at + 13], "big")
        if end >= len(datagram):
            return datagram[at:end]
        at = end


@dtls_only("DTLS handshake flights")
def test_copies_of_a_handshake_record_do_not_make_tunnel_in_resend_its_flight(procs, echo, relays, client):
    """The other way round: while tunnel-in waits for tunnel-out's last flight, copies of
    tunnel-out's previous record (anyone on the path can copy one, with fresh record
    numbers) would each make tunnel-in send its whole flight, certificate chain included,
    again; at most one resend per half second goes out."""
    out = procs.tunnel_out(echo.address, *MODE_ARGS)
    relay = relays(out.listen)
    relay.gate("down", 1)  # the HelloVerifyRequest passes; tunnel-out's next flights wait
    tin = procs.tunnel_in(relay.address, *MODE_ARGS)
    client.sendto(b"hello", harness.split_address(tin.listen))
    _wait(lambda: relay.gated_count("down") > 0, "tunnel-out sent its second flight")
    time.sleep(0.3)
    flight2 = relay.pass_kept()
    _wait(lambda: relay.gated_count("down") > 0, "tunnel-out sent its last flight")
    time.sleep(0.3)
    flight = relay.passed["up"] - 2  # tunnel-in's third flight (after two ClientHellos)
    before = relay.passed["up"]
    record = _last_record(flight2[-1])
    for seq in range(100, 110):
        relay.send_to_client(record[:5] + seq.to_bytes(6, "big") + record[11:])
        time.sleep(0.2)
    answered = relay.passed["up"] - before
    # Ten copies over two seconds: at most one resend per half second (four flights, and
    # mbedTLS's own timer's), where each copy was answered with the whole flight before.
    assert answered <= 5 * flight, (answered, flight)
    # (The copies' record numbers may have made tunnel-in's replay window pass the real
    # ones: that flow's handshake is the copier's to spoil. Another flow is served.)
    relay.release()
    other = udp_tools.udp_socket()
    try:
        assert ping(other, tin.listen, b"another flow") == b"another flow"
    finally:
        other.close()


def test_idle_flows_expire_and_the_next_datagram_opens_a_new_one(procs, echo, client):
    out, tin = udp_pair(procs, echo.address, out_args=["--flow-idle-timeout", "1s"],
                        in_args=["--flow-idle-timeout", "1s"])
    assert ping(client, tin.listen, b"one") == b"one"
    # Both sides expire at about the same time; whichever is first tells the other.
    closed_in = tin.wait_for_log("flow closed", timeout=5)
    closed_out = out.wait_for_log("flow closed", timeout=5)
    assert closed_in["reason"] in ("idle timeout", "closed by tunnel-out")
    assert closed_out["reason"] in ("idle timeout", "closed by tunnel-in")
    assert "idle timeout" in (closed_in["reason"], closed_out["reason"])
    assert ping(client, tin.listen, b"two") == b"two"
    # The reply can overtake the harness's reading of tunnel-out's log: wait for the line.
    out.wait_for_log(lambda r: r.get("msg") == "flow authorized" and r["time"] > closed_out["time"])
    assert len(out.wait_for_logs("flow authorized", 2)) == 2


@dtls_only("DTLS records and connection IDs on tunnel-out's UDP port")
def test_garbage_and_unknown_connection_ids_are_dropped_without_harm(procs, echo, client):
    out, tin = udp_pair(procs, echo.address)
    assert ping(client, tin.listen, b"before") == b"before"
    host, port = harness.split_address(out.listen)
    junk = udp_tools.udp_socket()
    try:
        junk.sendto(os.urandom(300), (host, port))                          # not DTLS
        junk.sendto(bytes([23, 254, 253, 0, 1]), (host, port))             # truncated header
        cid_record = bytes([25, 254, 253, 0, 1, 0, 0, 0, 0, 0, 9]) + os.urandom(8) + bytes([0, 40]) + os.urandom(40)
        junk.sendto(cid_record, (host, port))                              # unknown CID
        hs = bytes([22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 1]) + os.urandom(59)
        junk.sendto(hs, (host, port))                                      # malformed ClientHello
    finally:
        junk.close()
    out.wait_for_log("datagram dropped: unknown connection ID")
    out.wait_for_log("datagram dropped: not DTLS")
    assert ping(client, tin.listen, b"after") == b"after"
    assert out.running() and tin.running()


def test_sigterm_stops_both_and_tells_tunnel_out(procs, echo, client):
    out, tin = udp_pair(procs, echo.address)
    assert ping(client, tin.listen, b"x") == b"x"
    tin.stop()
    closed = out.wait_for_log("flow closed", timeout=5)
    assert closed["reason"] == "closed by tunnel-in"
    out.stop()


@pytest.mark.parametrize("args, message", [
    (["--mtu", "100"], "--mtu 100: must be 576..16384"),
    (["--max-flows", "0"], "--max-flows 0: must be 1..1000000"),
    (["--flow-idle-timeout", "0"], "--flow-idle-timeout: must be greater than 0"),
])
def test_bad_udp_flags_exit_2_with_one_line(pki, args, message):
    r = harness.run_cli(harness.TUNNEL_OUT, ["--udp", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9",
                                             "--cert", str(pki.server.cert), "--key", str(pki.server.key),
                                             "--ca", str(pki.ca_cert), *args])
    assert r.returncode == 2
    assert r.stderr.strip() == f"tunnel-out: error: {message}"


def test_udp_flags_without_udp_are_refused(pki):
    r = harness.run_cli(harness.TUNNEL_IN, ["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:9",
                                            "--cert", str(pki.client_a.cert), "--key", str(pki.client_a.key),
                                            "--ca", str(pki.ca_cert), "--mtu", "1400"])
    assert r.returncode == 2
    assert r.stderr.strip() == "tunnel-in: error: --mtu: only with --udp"
