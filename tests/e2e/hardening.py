"""Helpers for the hardening tests (test_adversarial.py, test_faults.py, test_soak.py):
what a process holds (descriptors, memory, CPU), its metrics, a packet capture on the
loopback interface, and hand-made TLS records. The partition test's namespaces are in
netns.py.

Builds on harness.py without changing it. Linux only; the capture needs root (CAP_NET_RAW).
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field

import harness
from test_ops import http_get, metric, parse_metrics, status_address  # noqa: F401 (re-exported)

# --------------------------------------------------------------------------------------
# What a process holds


def fd_count(proc) -> int:
    """Open descriptors of a TunnelProcess (or a pid)."""
    pid = proc if isinstance(proc, int) else proc.proc.pid
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(proc) -> int:
    pid = proc if isinstance(proc, int) else proc.proc.pid
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(proc) -> float:
    """User + system CPU time the process has used so far."""
    pid = proc if isinstance(proc, int) else proc.proc.pid
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def wait_until(condition, what: str, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        time.sleep(interval)


def wait_fds(proc, baseline: int, timeout: float = 10.0) -> None:
    """Waits until the process holds at most `baseline` descriptors."""
    last = [0]

    def back():
        last[0] = fd_count(proc)
        return last[0] <= baseline

    try:
        wait_until(back, "descriptors are back to baseline", timeout)
    except AssertionError:
        raise AssertionError(f"{proc.name} holds {last[0]} descriptors, baseline {baseline}")


def scrape(proc) -> dict:
    """The process's /metrics (it must run with --status), parsed strictly."""
    code, text = http_get(status_address(proc), "/metrics")
    assert code == 200, text
    return parse_metrics(text)


# --------------------------------------------------------------------------------------
# Legacy endpoints that hold many connections


def open_many(address, n: int, payload: bytes | None = None, timeout: float = 10.0) -> list[socket.socket]:
    """n TCP connections to `address`, each sending `payload` (or nothing) and then left
    open. The caller closes them."""
    socks = []
    try:
        for _ in range(n):
            s = harness.connect(address, timeout)
            if payload:
                s.sendall(payload)
            socks.append(s)
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def closed_count(socks, timeout: float = 0.0) -> int:
    """How many of `socks` the peer has ended (EOF or reset), without blocking longer than
    `timeout` on each."""
    n = 0
    for s in socks:
        s.settimeout(timeout if timeout > 0 else 0.001)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    n += 1
                    break
        except (ConnectionResetError, BrokenPipeError):
            n += 1
        except (socket.timeout, BlockingIOError):
            pass
    return n


class ChunkSender:
    """A legacy server that pours `total` bytes (a repeated random block, so nothing big is
    held in memory) into the first connection and records how far it got and the digest
    of what it sent."""

    def __init__(self, total: int, block: int = 1 << 20):
        import hashlib

        self.total = total
        self.block = os.urandom(block)
        self.sent = 0
        self.finished = threading.Event()
        h = hashlib.sha256()
        whole, rest = divmod(total, block)
        for _ in range(whole):
            h.update(self.block)
        h.update(self.block[:rest])
        self.sha256 = h.hexdigest()

    def handler(self, conn: socket.socket, result) -> None:
        conn.settimeout(None)
        while self.sent < self.total:
            n = min(len(self.block), self.total - self.sent)
            conn.sendall(self.block[:n])
            self.sent += n
        conn.shutdown(socket.SHUT_WR)
        self.finished.set()
        result.stop.wait(60)  # keep the connection until the test reads it all

    def stalled(self, quiet: float = 1.0, timeout: float = 30.0) -> int:
        """Waits until `sent` stops moving for `quiet` seconds; returns it."""
        deadline = time.monotonic() + timeout
        last, since = self.sent, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return last
        raise AssertionError(f"the sender never stalled ({self.sent} bytes sent)")


def read_digest(sock: socket.socket, total: int) -> str:
    """Reads exactly `total` bytes and returns their SHA-256."""
    import hashlib

    h = hashlib.sha256()
    got = 0
    while got < total:
        data = sock.recv(min(1 << 20, total - got))
        if not data:
            raise AssertionError(f"connection ended after {got} of {total} bytes")
        h.update(data)
        got += len(data)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Hand-made TLS


HANDSHAKE, APPLICATION_DATA = 22, 23
MAX_CIPHERTEXT = (1 << 14) + 256  # RFC 8446 5.2: a TLSCiphertext.length above this is an error


def tls_record(content_type: int, body: bytes, length: int | None = None) -> bytes:
    """One TLS record; `length` overrides the header's length field (to lie about it)."""
    return struct.pack("!BHH", content_type, 0x0303, len(body) if length is None else length) + body


def client_hello(server_name: str = "localhost") -> bytes:
    """The first flight of a real TLS 1.3 ClientHello from Python's ssl (no certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class BioClient:
    """A TLS client over a plain socket through memory buffers, so a test can finish a real
    handshake and then write whatever bytes it likes on the raw socket."""

    def __init__(self, address, ctx: ssl.SSLContext, server_name: str = "localhost", timeout: float = 5.0):
        self.sock = harness.connect(address, timeout)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionResetError("EOF during handshake")
                self.incoming.write(data)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def recv(self, n: int = 65536) -> bytes:
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    self.incoming.write_eof()
                    return b""
                self.incoming.write(data)

    def close(self) -> None:
        self.sock.close()


def client_context(pki, cred) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(pki.ca_cert))
    if cred is not None:
        ctx.load_cert_chain(str(cred.cert), str(cred.key))
    return ctx


# --------------------------------------------------------------------------------------
# Capturing loopback traffic

ETH_P_ALL = 0x0003


@dataclass
class Packet:
    proto: str  # "tcp" or "udp"
    sport: int
    dport: int
    payload: bytes


@dataclass
class Capture:
    """Every IPv4 TCP/UDP packet on `lo` touching one of `ports`, captured with an AF_PACKET
    socket (needs CAP_NET_RAW) on a thread until stop()."""

    ports: set[int]
    packets: list[Packet] = field(default_factory=list)

    def __post_init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(1 << 17)
            except socket.timeout:
                continue
            except OSError:
                return
            packet = parse_frame(frame)
            if packet and (packet.sport in self.ports or packet.dport in self.ports):
                self.packets.append(packet)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def payload(self, port: int, proto: str) -> bytes:
        """Every payload byte sent to or from `port` over `proto`, concatenated."""
        return b"".join(p.payload for p in self.packets
                        if p.proto == proto and port in (p.sport, p.dport))


def capture_unavailable() -> str | None:
    """Why loopback traffic cannot be captured here, or None when it can."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except (PermissionError, OSError) as e:
        return f"a raw AF_PACKET socket needs CAP_NET_RAW (root): {e}"
    return None


def parse_frame(frame: bytes) -> Packet | None:
    """An Ethernet frame on lo (zero MACs) carrying IPv4 TCP or UDP; None for anything else."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    proto = ip[9]
    l4 = ip[ihl:total]
    if proto == 6 and len(l4) >= 20:
        sport, dport = struct.unpack("!HH", l4[:4])
        offset = (l4[12] >> 4) * 4
        return Packet("tcp", sport, dport, l4[offset:])
    if proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        return Packet("udp", sport, dport, l4[8:])
    return None
