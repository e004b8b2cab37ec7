"""Tools for the plain-leg tests: a PROXY protocol parser written from the specification
independently of the C++ codec (so the two check each other), a stand-in legacy server that
reads the header and then echoes, headers as a load balancer would send them, and clients
that connect from a given address. Transparent mode's namespaces are in netns.py."""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@dataclass
class ProxyHeader:
    version: int
    family: str | None  # "TCP4", "TCP6" (v1 names; v2 maps to them) or None for UNKNOWN/LOCAL
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection ended inside the PROXY header after {len(data)} bytes")
        data += chunk
    return data


def read_proxy_header(sock: socket.socket) -> ProxyHeader:
    """Reads exactly one PROXY header (v1 or v2) from the start of `sock`."""
    first = _recv_exactly(sock, 1)
    if first == b"P":
        line = first
        while not line.endswith(b"\r\n"):
            assert len(line) < 107, f"v1 line too long: {line!r}"
            line += _recv_exactly(sock, 1)
        parts = line[:-2].decode("ascii").split(" ")
        assert parts[0] == "PROXY", line
        if parts[1] == "UNKNOWN":
            return ProxyHeader(1, None, None, None)
        assert parts[1] in ("TCP4", "TCP6") and len(parts) == 6, line
        family = socket.AF_INET if parts[1] == "TCP4" else socket.AF_INET6
        for addr in parts[2:4]:
            socket.inet_pton(family, addr)  # raises on a malformed literal
        return ProxyHeader(1, parts[1], (parts[2], int(parts[4])), (parts[3], int(parts[5])))
    rest = _recv_exactly(sock, 15)
    head = first + rest
    assert head[:12] == V2_SIGNATURE, f"not a PROXY header: {head!r}"
    ver_cmd, fam, length = struct.unpack("!BBH", head[12:16])
    body = _recv_exactly(sock, length)
    assert ver_cmd >> 4 == 2, head
    if ver_cmd & 0xF == 0:  # LOCAL
        return ProxyHeader(2, None, None, None)
    assert ver_cmd & 0xF == 1 and fam & 0xF == 1, head  # PROXY over a stream
    if fam >> 4 == 1:
        src, dst = socket.inet_ntop(socket.AF_INET, body[0:4]), socket.inet_ntop(socket.AF_INET, body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
        return ProxyHeader(2, "TCP4", (src, sport), (dst, dport))
    assert fam >> 4 == 2, head
    src, dst = socket.inet_ntop(socket.AF_INET6, body[0:16]), socket.inet_ntop(socket.AF_INET6, body[16:32])
    sport, dport = struct.unpack("!HH", body[32:36])
    return ProxyHeader(2, "TCP6", (src, sport), (dst, dport))


def make_proxy_reading_handler(headers: list):
    """A TestServer handler: reads the PROXY header (appended to `headers`), then echoes."""

    def handler(conn: socket.socket, result) -> None:
        headers.append(read_proxy_header(conn))
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            result.received += len(data)
            conn.sendall(data)
            result.sent += len(data)
        conn.shutdown(socket.SHUT_WR)

    return handler


def make_peer_recording_handler(peers: list):
    """A TestServer handler: records the connecting peer's address, then echoes."""

    def handler(conn: socket.socket, result) -> None:
        peers.append(conn.getpeername()[:2])
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    return handler


def v1_header(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    family = "TCP6" if ":" in src[0] else "TCP4"
    return f"PROXY {family} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()


def v2_header(src: tuple[str, int] | None, dst: tuple[str, int] | None, tlvs: bytes = b"") -> bytes:
    """PROXY over TCP, or LOCAL when src is None; `tlvs` appended as given."""
    if src is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(tlvs)) + tlvs
    v6 = ":" in src[0]
    family = socket.AF_INET6 if v6 else socket.AF_INET
    block = (socket.inet_pton(family, src[0]) + socket.inet_pton(family, dst[0]) +
             struct.pack("!HH", src[1], dst[1]))
    body = block + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21 if v6 else 0x11, len(body)) + body


def connect_from(source: str, to: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(to)
    return s


def echo_once(sock: socket.socket, payload: bytes) -> bytes:
    """Sends, half-closes, reads until EOF."""
    out: dict = {}

    def reader():
        chunks = []
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            chunks.append(data)
        out["data"] = b"".join(chunks)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    t.join(15)
    assert not t.is_alive(), "echo did not finish"
    return out.get("data", b"")
