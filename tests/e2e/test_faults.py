"""Hardening, fault part: the legacy server refusing, dying and coming back; tunnel-out
killed and restarted; a network partition between the two (in network namespaces made by
the test); running out of file descriptors; a name server that never answers. The tunnels must end what cannot go on
cleanly, never hang, and carry new connections as soon as the fault is gone."""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import threading
import time

import pytest

import fake_dns
import harness
import hardening as hd
from harness import TUNNEL_IN, TUNNEL_OUT, closed_by_peer, connect, echo_handler, echo_roundtrip, recv_exactly
from hardening import metric
from netns import NetnsPair, skip_unless_available
from test_config import credential_keys, start_with_config, write_config


def assert_echo(address, size: int = 4096, timeout: float = 10.0) -> None:
    payload = os.urandom(size)
    assert echo_roundtrip(address, payload, timeout) == payload


def no_errors_logged(*procs) -> None:
    for p in procs:
        errors = p.find_logs(lambda r: r.get("level") in ("error", "critical"))
        assert not errors, f"{p.name} logged errors: {errors[:3]}"


# --------------------------------------------------------------------------------------
# the legacy server: refusing, dying, restarting


@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_target_refusing_dying_and_restarting(procs, servers, mode):
    port = harness.free_tcp_port()
    target_address = f"127.0.0.1:{port}"
    out = procs.tunnel_out(target_address, level="info")
    tin = procs.tunnel_in(out.listen, "--mode", mode, level="info")

    # Nothing listens yet: the legacy client is closed at once, cleanly.
    with connect(tin.address) as s:
        s.sendall(b"anyone?\n")
        assert closed_by_peer(s, timeout=3), "a client of an unreachable target was kept"
    unreachable = out.wait_for_log("target unreachable")
    assert "refused" in unreachable["error"].lower(), unreachable

    # The target starts: new connections work, without touching the tunnels.
    first = servers.start(echo_handler, port=port)
    assert_echo(tin.address)
    live = [connect(tin.address) for _ in range(3)]
    for i, s in enumerate(live):
        s.sendall(b"live %d\n" % i)
        assert recv_exactly(s, 7) == b"live %d\n" % i
    first.wait_connections(4)

    # The target dies with connections open: each legacy client sees its end promptly.
    first.close()
    started = time.monotonic()
    for s in live:
        assert closed_by_peer(s, timeout=5), "a legacy client outlived its target connection"
        s.close()
    assert time.monotonic() - started < 3.0
    with connect(tin.address) as s:  # while it is down: refused cleanly again
        assert closed_by_peer(s, timeout=3)

    # Restarted on the same port: served again.
    second = servers.start(echo_handler, port=port)
    for _ in range(3):
        assert_echo(tin.address)
    assert second.connection_count == 3
    assert out.running() and tin.running()
    no_errors_logged(out, tin)


# --------------------------------------------------------------------------------------
# tunnel-out killed and restarted (mux mode: test_mux.py's
# test_tunnel_out_killed_mid_transfer_resets_streams_and_pool_recovers)


@pytest.mark.parametrize("mode", ["raw", "auto"])
def test_tunnel_out_sigkilled_and_restarted_on_its_port_is_found_again(procs, servers, mode):
    target = servers.echo()
    out = procs.tunnel_out(target.address, level="info")
    tin = procs.tunnel_in(out.listen, "--mode", mode, "--connect-timeout", "2s", level="info")
    assert_echo(tin.address)
    s = connect(tin.address)
    s.sendall(b"before\n")
    assert recv_exactly(s, 7) == b"before\n"
    baseline = hd.fd_count(tin)

    out.proc.kill()
    out.wait()
    assert closed_by_peer(s, timeout=3), "a legacy connection outlived tunnel-out"
    s.close()
    for _ in range(3):  # while it is down: no hang, every legacy connection closed at once
        started = time.monotonic()
        with connect(tin.address) as down:
            assert closed_by_peer(down, timeout=3)
        assert time.monotonic() - started < 1.5
    tin.wait_for_log("tunnel-out unreachable")

    again = procs.tunnel_out(target.address, listen=out.listen, level="info")
    hd.wait_until(lambda: again.running(), "tunnel-out is back")
    started = time.monotonic()
    assert_echo(tin.address, 256 * 1024)  # the first connection after the restart works
    assert time.monotonic() - started < 3.0
    for _ in range(5):
        assert_echo(tin.address)
    assert tin.running()
    hd.wait_until(lambda: hd.fd_count(tin) <= baseline + 2 * 2,  # a pooled mux connection or two
                  f"tunnel-in's descriptors return near {baseline}", timeout=5)


# --------------------------------------------------------------------------------------
# reloads retiring mux connections under load


def test_mux_connections_retired_by_reloads_lose_no_stream(procs, servers):
    # Each reload makes tunnel-out retire every mux connection (GOAWAY) while tunnel-in keeps
    # opening streams on them: a stream whose OPEN crosses the GOAWAY must still be served.
    target = servers.echo()
    out = procs.tunnel_out(target.address, level="info")
    tin = procs.tunnel_in(out.listen, "--mode", "mux", level="info")
    tin.wait_for_log("mux connection up")
    stop = threading.Event()
    done: list[int] = []
    failures: list[str] = []

    def churn():
        while not stop.is_set():
            payload = os.urandom(512)
            try:
                got = echo_roundtrip(tin.address, payload, timeout=10)
                (done if got == payload else failures).append(len(got))
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            time.sleep(0.25)
            out.signal(signal.SIGHUP)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    # The last reload may still be on its way through the log reader.
    hd.wait_until(lambda: len(out.logs_with_msg("credentials reloaded")) >= 20, "every SIGHUP's reload is logged")
    assert len(out.logs_with_msg("credentials reloaded")) == 20
    assert len(out.logs_with_msg("mux connection authorized")) > 20  # the sessions really rotated
    assert failures == [], f"{len(failures)} of {len(failures) + len(done)} connections failed: {failures[:3]}"
    assert len(done) > 200


# --------------------------------------------------------------------------------------
# a network partition between tunnel-in and tunnel-out


@pytest.fixture
def netns():
    skip_unless_available("partition test")
    with NetnsPair() as pair:
        yield pair


# The settings that decide how long a silent partition is tolerated, by mode: raw mode ends
# a connection after --idle-timeout without a byte; mux mode ends a session after
# --keepalive without a frame from the peer (and resets its streams).
PARTITION_SETTINGS = {
    "raw": (["--idle-timeout", "3s"], 3.0),
    "mux": (["--keepalive", "3s"], 3.0),
}


@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_partition_ends_connections_by_the_timeouts_and_traffic_resumes_after(procs, servers, netns, mode):
    flags, limit = PARTITION_SETTINGS[mode]
    target = netns.call("b", servers.echo)  # the legacy server lives beside tunnel-out
    out = procs.tunnel_out(target.address, *flags, listen=f"{netns.SUBNET_B}:0", level="info",
                           preexec_fn=netns.preexec("b"))
    tin = procs.tunnel_in(out.listen, "--mode", mode, "--server-name", "localhost", "--connect-timeout", "2s",
                          *flags, level="info", preexec_fn=netns.preexec("a"))
    if mode == "mux":
        tin.wait_for_log("mux connection up")

    def client():
        return netns.call("a", connect, tin.address, 10)

    def echo(s, data: bytes, timeout: float = 10.0) -> None:
        s.settimeout(timeout)
        s.sendall(data)
        assert recv_exactly(s, len(data)) == data

    # 1. A short cut (1 s, under the limit): the open connection carries on afterwards.
    s = client()
    echo(s, b"before\n")
    netns.link(False)
    s.sendall(b"during\n")  # held in TCP's retransmission queue
    time.sleep(1.0)
    netns.link(True)
    assert recv_exactly(s, 7) == b"during\n"
    echo(s, b"after-short-cut\n")

    # 2. A long cut: the silent connection ends after `limit`, not before, not much after.
    netns.link(False)
    started = time.monotonic()
    assert closed_by_peer(s, timeout=limit + 4), f"{mode}: a connection outlived a partition"
    elapsed = time.monotonic() - started
    s.close()
    assert limit - 1.0 <= elapsed <= limit + 2.5, f"{mode}: ended after {elapsed:.1f}s with a {limit}s limit"
    if mode == "raw":
        tin.wait_for_log(lambda r: r.get("msg") == "connection closed" and r.get("reason") == "idle timeout")
    else:
        tin.wait_for_log(lambda r: r.get("msg") == "mux connection closed" and "keepalive" in r.get("reason", ""))
    # New connections while the link is down end within --connect-timeout, never hang.
    started = time.monotonic()
    with client() as down:
        assert closed_by_peer(down, timeout=6)
    assert time.monotonic() - started < 4.5

    # 3. The link is back: traffic resumes without restarting anything.
    netns.link(True)
    deadline = time.monotonic() + 8
    while True:
        try:
            with client() as again:
                echo(again, b"resumed\n", timeout=5)
            break
        except (OSError, AssertionError):
            assert time.monotonic() < deadline, f"{mode}: no traffic 8s after the link came back"
            time.sleep(0.2)
    assert out.running() and tin.running()


# --------------------------------------------------------------------------------------
# running out of file descriptors


def test_descriptor_exhaustion_backs_off_logs_once_per_episode_and_recovers(procs, servers):
    target = servers.echo()
    out = procs.tunnel_out(target.address, "--threads", "1", "--max-conns", "1000", "--status", "127.0.0.1:0",
                           level="info")
    status = hd.status_address(out)
    tin = procs.tunnel_in(out.listen, "--mode", "raw", "--handshake-timeout", "20s", level="info")
    assert_echo(tin.address)  # every descriptor made on first use exists now
    hd.wait_until(lambda: metric(hd.scrape(out), "tunnel_connections_active") == 0, "tunnel-out is idle")
    time.sleep(0.2)
    # Room for exactly `fit` relayed connections (two descriptors each: client and target).
    fit = 6
    resource.prlimit(out.proc.pid, resource.RLIMIT_NOFILE, (hd.fd_count(out) + 2 * fit,) * 2)

    def open_echoing(n: int) -> list[socket.socket]:
        socks = [connect(tin.address, timeout=15) for _ in range(n)]
        for i, s in enumerate(socks):
            s.sendall(b"%04d\n" % i)
        return socks

    def answered(socks, timeout: float) -> int:
        n = 0
        for i, s in enumerate(socks):
            s.settimeout(timeout)
            try:
                n += recv_exactly(s, 5) == b"%04d\n" % i
            except (socket.timeout, AssertionError, OSError):
                pass
        return n

    def logged(msg: str) -> int:  # on the tunnel port (the status port has its own)
        return len(out.find_logs(lambda r: r.get("msg") == msg and r.get("listen") == out.listen))

    held = open_echoing(fit)
    extra: list[socket.socket] = []
    try:
        assert answered(held, 5) == fit
        for episode in (1, 2):
            extra = open_echoing(4)  # accepted by the kernel, but tunnel-out has no descriptor left
            time.sleep(1.5)  # about 15 accept attempts at 100 ms
            assert answered(extra, 0.1) == 0
            assert logged("accept failed; backing off") == episode, "one warning per episode, not per attempt"
            # Backing off, not spinning: the process is nearly idle; in the second episode
            # its status endpoint, which cannot accept either, has a client waiting too.
            status_probe = connect(harness.split_address(status), timeout=5) if episode == 2 else None
            cpu = hd.cpu_seconds(out)
            time.sleep(1.0)
            used = hd.cpu_seconds(out) - cpu
            if status_probe:
                status_probe.close()
            assert used < 0.3, f"tunnel-out used {used:.2f}s of CPU in 1s while out of descriptors"
            # Descriptors come free: the connections that waited are served.
            hd.close_all(held[:5])
            held = held[5:] + extra
            extra = []
            assert answered(held[-4:], 5) == 4, "the connections that waited were not served after recovery"
            # Accepting works again for a second: the episode ends, with one line.
            time.sleep(1.1)
            assert_echo(tin.address)
            hd.wait_until(lambda: logged("accept resumed") == episode, f"episode {episode} is logged as over")
            if episode == 1:
                held += open_echoing(1)  # full again for the next episode
                assert answered(held[-1:], 5) == 1
    finally:
        hd.close_all(held + extra)
    resumed = out.find_logs(lambda r: r.get("msg") == "accept resumed" and r.get("listen") == out.listen)
    assert all(r["failed_attempts"] >= 10 for r in resumed), resumed
    assert logged("accept failed; backing off") == 2
    hd.wait_until(lambda: metric(hd.scrape(out), "tunnel_connections_active") == 0, "tunnel-out is idle")
    assert metric(hd.scrape(out), "tunnel_accept_failures_total") >= 20
    assert out.running()
    assert_echo(tin.address)


@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_dial_without_a_free_descriptor_waits_for_one_instead_of_dropping_the_client(procs, servers, mode, tmp_dir):
    # Under the sanitizers, a Unix-socket target: its dials always take the patient path
    # (with_timeout's parallel group), so the first connection shows UBSan that type while
    # descriptors are free. A type first checked with none left makes UBSan's probe (a pipe)
    # fail and report a false "invalid vptr". The release build dials an IP literal, the
    # path that meets EMFILE first and then falls back to the patient one.
    sanitized = bool(os.environ.get("TUNNEL_SANITIZED"))
    target = servers.echo(unix_path=str(tmp_dir / "echo.sock")) if sanitized else servers.echo()
    out = procs.tunnel_out(target.address, "--threads", "1", "--status", "127.0.0.1:0", level="info")
    tin = procs.tunnel_in(out.listen, "--mode", mode, "--threads", "1", level="info")
    assert_echo(tin.address)  # every descriptor made on first use exists now (mux: its connection too)
    hd.wait_until(lambda: metric(hd.scrape(out), "tunnel_connections_active") == (1 if mode == "mux" else 0),
                  "only tunnel-in's mux connection, if any, is left")
    time.sleep(0.2)
    # Room for the first connection only, and in raw mode for the second one's TLS
    # connection (accepted with the last descriptor; in mux mode a stream needs none of its
    # own). Either way the second one's dial to the target finds no descriptor.
    room = 2 + 1 if mode == "raw" else 1
    limit = resource.prlimit(out.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(out.proc.pid, resource.RLIMIT_NOFILE, (hd.fd_count(out) + room, limit[1]))
    # The second connection only once the first has its target connection: in raw mode two
    # handshakes under way at once may finish in either order, and whichever dials first
    # takes the last descriptor.
    first = connect(tin.address, timeout=10)
    second = None
    try:
        first.sendall(b"0000\n")
        assert recv_exactly(first, 5) == b"0000\n"
        second = connect(tin.address, timeout=10)
        second.sendall(b"0001\n")
        second.settimeout(1.0)  # a second of failed dials (every 100 ms)
        with pytest.raises(socket.timeout):
            second.recv(5)
        first.close()  # its two descriptors come free: the waiting dial gets one
        second.settimeout(5)
        assert recv_exactly(second, 5) == b"0001\n"
        second.sendall(b"more\n")
        assert recv_exactly(second, 5) == b"more\n"
    finally:
        hd.close_all([first] + ([second] if second else []))
        # Descriptors back before the processes are stopped: the sanitizer builds' checks
        # open a pipe to probe memory, and without a descriptor report a false "invalid vptr".
        resource.prlimit(out.proc.pid, resource.RLIMIT_NOFILE, limit)
    assert not out.find_logs(lambda r: r.get("msg") == "target unreachable"), out.log_text()
    assert out.running()


# --------------------------------------------------------------------------------------
# the name server: silent for one name


@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_a_silent_name_server_holds_connections_no_longer_than_the_connect_timeout(procs, servers, pki, tmp_dir,
                                                                                     mode):
    """Targets named by host name, looked up through a name server that never answers for one
    of them (glibc would wait 30 s). Connections to that service end at --connect-timeout, all
    share one lookup, and a connection to the other name meanwhile is served at once: its
    lookup does not queue behind the silent one (one worker thread, so it would)."""
    fake_dns.skip_unless_available(tmp_dir)
    echo = servers.echo()
    dns = fake_dns.FakeDns(tmp_dir, answers={"quick.tunnel.test": "127.0.0.1"}, silent={"silent.tunnel.test"})
    try:
        port = harness.split_address(echo.address)[1]
        top = {**credential_keys(pki.server), "ca": str(pki.ca_cert), "log-format": "json", "log-level": "debug",
               "threads": 1, "connect-timeout": "1s"}
        services = {"slow": {"listen": "127.0.0.1:0", "target": f"silent.tunnel.test:{port}"},
                    "fast": {"listen": "127.0.0.1:0", "target": f"quick.tunnel.test:{port}"}}
        out, listens = start_with_config(procs, TUNNEL_OUT, write_config(tmp_dir / "out.toml", top, services), 2,
                                         "tunnel-out", preexec_fn=dns.preexec())
        itop = {**credential_keys(pki.client_a), "ca": str(pki.ca_cert), "mode": mode, "log-format": "json",
                "log-level": "debug", "connect": listens["slow"], "server-name": "localhost"}
        tin, local = start_with_config(
            procs, TUNNEL_IN, write_config(tmp_dir / "in.toml", itop, {n: {"listen": "127.0.0.1:0"} for n in services}),
            2, "tunnel-in")

        started = time.monotonic()
        slow = [connect(harness.split_address(local["slow"])) for _ in range(3)]
        dns.wait_for_query("silent.tunnel.test")
        assert_echo(harness.split_address(local["fast"]))  # while the silent lookup is still under way
        for s in slow:
            assert closed_by_peer(s, 10), "a connection to the silent name was not ended"
            s.close()
        assert time.monotonic() - started < 10, "connections waited for the lookup, not the connect timeout"
        # A connection after those timed out joins the same lookup (still under way) too.
        with connect(harness.split_address(local["slow"])) as s:
            assert closed_by_peer(s, 10)
        assert dns.count("silent.tunnel.test") == 1, dict(dns.queries)
        out.wait_for_log(lambda r: r.get("msg") == "target unreachable" and r.get("error") == "name lookup timeout")
        assert out.stop() == 0  # with that lookup still blocked in getaddrinfo
    finally:
        dns.close()


def mux_pair_to_a_silent_name(procs, dns):
    """A mux pair whose tunnel-out target is a name `dns` never answers for (a dial waits
    out --connect-timeout, 20 s, in the lookup), once its pool connection is up."""
    out = procs.tunnel_out("silent.tunnel.test:9", "--connect-timeout", "20s", level="info",
                           preexec_fn=dns.preexec())
    tin = procs.tunnel_in(out.listen, "--mode", "mux", "--pool", "1", "--threads", "1", level="info")
    tin.wait_for_log("mux connection up")
    return out, tin


def test_a_stream_reset_while_its_target_is_dialled_stops_the_dial(procs, tmp_dir):
    """A legacy client resets its connection (RST) while tunnel-out is still dialling the
    stream's target (its name server is silent): tunnel-in's RESET stops that dial at once,
    rather than the dial going on for the whole --connect-timeout (and a peer opening and
    resetting streams in a loop starting dial after dial)."""
    fake_dns.skip_unless_available(tmp_dir)
    dns = fake_dns.FakeDns(tmp_dir, answers={}, silent={"silent.tunnel.test"})
    try:
        out, tin = mux_pair_to_a_silent_name(procs, dns)
        s = connect(tin.address)
        dns.wait_for_query("silent.tunnel.test")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
        started = time.monotonic()
        out.wait_for_log(lambda r: r.get("msg") == "connection closed"
                         and r.get("reason") == "reset by tunnel-in while dialling the target", timeout=10)
        assert time.monotonic() - started < 5
        assert not out.logs_with_msg("target unreachable")
        assert not out.logs_with_msg("mux connection closed")  # the connection carries on
    finally:
        dns.close()


def test_a_stream_still_dialling_stops_when_its_mux_connection_ends(procs, servers, tmp_dir):
    """tunnel-in dies while tunnel-out is still dialling a stream's target (its name server
    is silent): the dial stops with the connection, rather than going on for the whole
    --connect-timeout and then connecting for a tunnel that is gone."""
    fake_dns.skip_unless_available(tmp_dir)
    dns = fake_dns.FakeDns(tmp_dir, answers={}, silent={"silent.tunnel.test"})
    try:
        out, tin = mux_pair_to_a_silent_name(procs, dns)
        with connect(tin.address):
            dns.wait_for_query("silent.tunnel.test")
            tin.kill()
            rec = out.wait_for_log(lambda r: r.get("msg") == "connection closed"
                                   and r.get("reason") == "mux connection ended while dialling the target")
        assert not out.logs_with_msg("target unreachable")
        out.wait_for_log("mux connection closed")
    finally:
        dns.close()
