"""Hardening, soak: a bounded mixed workload through a TCP tunnel (tunnel-out serving a
raw-mode and a mux-mode tunnel-in) and a UDP tunnel at once — connection churn, bulk
transfers, many datagrams — while tunnel-out's certificate is replaced and every process
gets a SIGHUP every few seconds.

Asserted: no corruption (every byte checked by SHA-256, every datagram matched), no
failed connection, flat memory (RSS at the end within a stated bound of RSS after the
warm-up) and no descriptor leak (back to the idle count). It prints its numbers.

TUNNEL_SOAK_SECONDS sets the duration (default 60, the in-suite run), e.g.
    TUNNEL_SOAK_SECONDS=600 python3 -m pytest -q -s tests/e2e/test_soak.py
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import harness
import hardening as hd
import trust_tools as tt
import udp_tools
from harness import connect, echo_roundtrip, recv_all
from hardening import metric

DURATION = float(os.environ.get("TUNNEL_SOAK_SECONDS", "60"))
WARM_UP = min(10.0, DURATION / 6)
RELOAD_EVERY = 5.0
BULK = 16 << 20
# Flat memory: RSS at the end may exceed RSS at the end of the warm-up by at most this,
# whatever the duration. The allocator's high-water mark rises in steps of up to ~2 MiB
# when more DTLS sessions than before happen to overlap (measured over 10 minutes: at most
# +2.6 MiB, flat for minutes between steps); a leak of 1 KiB per TCP connection would
# cross it within the first minute (about 5000 connections a minute here).
RSS_GROWTH_BOUND_KIB = 4 * 1024


@dataclass
class Tally:
    connections: int = 0
    bulk_transfers: int = 0
    bytes_checked: int = 0
    datagrams_sent: int = 0
    datagrams_answered: int = 0
    datagrams_unexpected: int = 0
    reloads: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def churn(addresses, tally: Tally, stop: threading.Event, seed: int) -> None:
    """Short connections of random size, alternating between the tunnel-ins."""
    rng = random.Random(seed)
    i = 0
    while not stop.is_set():
        address = addresses[i % len(addresses)]
        i += 1
        payload = rng.randbytes(rng.choice((1, 100, 1500, 20_000, 100_000)))
        try:
            got = echo_roundtrip(address, payload, timeout=15)
        except Exception as e:  # noqa: BLE001 - every failure counts
            tally.fail(f"churn via {address}: {type(e).__name__}: {e}")
            continue
        if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
            tally.fail(f"churn via {address}: corrupted ({len(got)} of {len(payload)} bytes)")
        else:
            tally.add(connections=1, bytes_checked=len(payload))


def bulk(addresses, tally: Tally, stop: threading.Event) -> None:
    """16 MiB each way through the echo target, alternating tunnel-ins, sent and read at once."""
    i = 0
    while not stop.is_set():
        address = addresses[i % len(addresses)]
        i += 1
        payload = os.urandom(BULK)
        try:
            with connect(address, timeout=30) as s:
                box: dict = {}
                reader = threading.Thread(target=lambda: box.setdefault("data", recv_all(s)), daemon=True)
                reader.start()
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                reader.join(60)
            got = box.get("data", b"")
        except Exception as e:  # noqa: BLE001
            tally.fail(f"bulk via {address}: {type(e).__name__}: {e}")
            continue
        if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
            tally.fail(f"bulk via {address}: corrupted ({len(got)} of {len(payload)} bytes)")
        else:
            tally.add(connections=1, bulk_transfers=1, bytes_checked=len(payload))


def datagrams(address: str, tally: Tally, stop: threading.Event) -> None:
    """Rounds of 8 flows x 50 datagrams; every echo must match a datagram sent."""
    seed = 0
    while not stop.is_set():
        seed += 1
        r = udp_tools.run_flows(address, flows=8, total=400, max_size=1200, seed=seed, deadline=30)
        tally.add(datagrams_sent=r.sent, datagrams_answered=r.answered, datagrams_unexpected=r.unexpected)


def reloads(out_tcp, others, crt, key, ca, tally: Tally, stop: threading.Event) -> None:
    """Every RELOAD_EVERY s: a new certificate for tunnel-out (TCP), then SIGHUP to all."""
    generation = 1
    while not stop.wait(RELOAD_EVERY):
        generation += 1
        leaf = tt.issue(ca, f"tunnel-out-v{generation}")
        tt.write_atomic(key, leaf.key_pem(), 0o600)
        tt.write_atomic(crt, leaf.cert_pem())
        for p in (out_tcp, *others):
            p.signal(signal.SIGHUP)
        tally.add(reloads=1)


def idle(p) -> bool:
    """Relays nothing: no legacy connection, stream or UDP flow (tunnel-out counts the
    mux connections it accepted as connections: those stay)."""
    m = hd.scrape(p)
    return (metric(m, "tunnel_connections_active") <= metric(m, "tunnel_mux_sessions", state="open")
            and metric(m, "tunnel_mux_streams_active") == 0 and metric(m, "tunnel_udp_flows_active") == 0)


def idle_counts(named: dict) -> dict[str, int]:
    """Descriptors of each process once it relays nothing."""
    for name, p in named.items():
        hd.wait_until(lambda: idle(p), f"{name} is idle", timeout=30)
    time.sleep(0.3)
    return {name: hd.fd_count(p) for name, p in named.items()}


def test_soak_mixed_tcp_udp_churn_bulk_and_reloads(pki, procs, servers, tmp_dir):
    ca = tt.Authority.load(pki.ca_cert, pki.ca_key)
    crt, key = tmp_dir / "server.crt", tmp_dir / "server.key"
    first = tt.issue(ca, "tunnel-out-v1")
    tt.write_atomic(crt, first.cert_pem())
    tt.write_atomic(key, first.key_pem(), 0o600)
    cred = type("cred", (), {"cert": crt, "key": key})
    udp_flags = ["--udp", "--status", "127.0.0.1:0", "--flow-idle-timeout", "2s"]

    target = servers.echo()
    echo = udp_tools.UdpEcho()
    try:
        out = procs.tunnel_out(target.address, "--status", "127.0.0.1:0", cred=cred, level="info")
        raw = procs.tunnel_in(out.listen, "--mode", "raw", "--status", "127.0.0.1:0", level="info")
        mux = procs.tunnel_in(out.listen, "--mode", "mux", "--status", "127.0.0.1:0", level="info")
        out_udp = procs.tunnel_out(echo.address, *udp_flags, level="info")
        in_udp = procs.tunnel_in(out_udp.listen, *udp_flags, level="info")
        named = {"tunnel-out": out, "tunnel-in-raw": raw, "tunnel-in-mux": mux,
                 "tunnel-out-udp": out_udp, "tunnel-in-udp": in_udp}
        mux.wait_for_log("mux connection up")
        tcp = [raw.address, mux.address]
        for address in tcp:  # every path once, so descriptors made on first use exist
            assert echo_roundtrip(address, b"hello\n") == b"hello\n"
        assert udp_tools.run_flows(in_udp.listen, flows=2, total=10).answered == 10
        fds_idle = idle_counts(named)

        tally = Tally()
        stop = threading.Event()
        workers = [threading.Thread(target=churn, args=(tcp, tally, stop, seed), daemon=True) for seed in range(3)]
        workers.append(threading.Thread(target=bulk, args=(tcp, tally, stop), daemon=True))
        workers.append(threading.Thread(target=datagrams, args=(in_udp.listen, tally, stop), daemon=True))
        workers.append(threading.Thread(target=reloads, args=(out, [raw, mux, out_udp, in_udp], crt, key, ca,
                                                               tally, stop), daemon=True))
        started = time.monotonic()
        for w in workers:
            w.start()
        time.sleep(WARM_UP)
        rss_warm = {name: hd.rss_kib(p) for name, p in named.items()}
        rss_peak = dict(rss_warm)
        trend = []  # (seconds, RSS of every process) every 30 s, printed at the end
        while time.monotonic() - started < DURATION:
            time.sleep(1.0)
            for name, p in named.items():
                assert p.running(), f"{name} died during the soak"
                rss_peak[name] = max(rss_peak[name], hd.rss_kib(p))
            if time.monotonic() - started >= 30 * (len(trend) + 1):
                trend.append((round(time.monotonic() - started), [hd.rss_kib(p) for p in named.values()]))
        rss_end = {name: hd.rss_kib(p) for name, p in named.items()}
        stop.set()
        for w in workers:
            w.join(90)
        elapsed = time.monotonic() - started
        fds_end = idle_counts(named)
        # A reload just before the end leaves replaced mux connections finishing their
        # goodbyes (GOAWAY, drain ping, close_notify) for a moment: a leak stays.
        deadline = time.monotonic() + 10
        while fds_end != fds_idle and time.monotonic() < deadline:
            time.sleep(0.2)
            fds_end = idle_counts(named)
    finally:
        echo.close()

    print(f"\nsoak {elapsed:.0f}s: {tally.connections} TCP connections ({tally.bulk_transfers} bulk of 16 MiB), "
          f"{tally.bytes_checked / (1 << 20):.0f} MiB checked each way, {tally.datagrams_answered}/"
          f"{tally.datagrams_sent} datagrams answered, {tally.reloads} reload rounds")
    print(f"RSS KiB after warm-up {rss_warm}\n        at the end    {rss_end}\n        peak          {rss_peak}")
    print(f"descriptors idle before {fds_idle}, after {fds_end}")
    print("RSS KiB every 30 s (" + ", ".join(named) + "): " + "; ".join(f"{t}s {r}" for t, r in trend))

    assert tally.failures == [], tally.failures[:5]
    assert tally.datagrams_unexpected == 0, "a datagram came back duplicated or corrupted"
    assert tally.datagrams_answered >= 0.99 * tally.datagrams_sent, "more than 1% of the datagrams were lost"
    assert tally.connections >= DURATION * 5 and tally.bulk_transfers >= 2, "the workload hardly ran"
    assert tally.reloads >= DURATION // RELOAD_EVERY - 2
    for name, p in named.items():
        # A UDP service's DTLS context (its TLS fallback context reloads beside it).
        transport = "dtls" if name.endswith("udp") else "tls"
        reloaded = p.find_logs(lambda r: r.get("msg") == "credentials reloaded" and r.get("trigger") == "SIGHUP"
                               and r.get("transport") == transport)
        assert len(reloaded) == tally.reloads, f"{name}: {len(reloaded)} reloads of {tally.reloads}"
        assert not p.logs_with_msg("credential reload failed; keeping the previous credentials")
    for name in rss_end:
        assert rss_end[name] - rss_warm[name] <= RSS_GROWTH_BOUND_KIB, f"{name}: RSS grew {rss_warm} -> {rss_end}"
    assert fds_end == fds_idle, "descriptors leaked"
