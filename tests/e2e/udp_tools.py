"""UDP helpers for the end-to-end tests of UDP mode: an echo target, a lossy relay that
sits between tunnel-in and tunnel-out (drops, duplicates, reorders, changes its source
port), a many-flow load driver that checks every echoed datagram, and a ClientHello
captured from openssl for the amplification test."""

from __future__ import annotations

import random
import selectors
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field


def udp_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    s.bind((host, port))
    return s


def addr_text(addr) -> str:
    return f"{addr[0]}:{addr[1]}"


class _Threaded:
    """A selector loop on its own thread, stopped by close()."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self.sel.select(timeout=0.02):
                try:
                    key.data(key.fileobj)
                except OSError:
                    pass
            self.tick()

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


class UdpEcho(_Threaded):
    """The legacy UDP server: sends every datagram back to where it came from, and counts
    datagrams per source address (each tunnel-out flow relays from a socket of its own)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__()
        self.sock = udp_socket(host, port)
        self.sock.setblocking(False)
        self.received = 0
        self.sources: set[tuple] = set()
        self.sel.register(self.sock, selectors.EVENT_READ, self._on_read)
        self._thread.start()

    @property
    def address(self) -> str:
        return addr_text(self.sock.getsockname())

    def _on_read(self, sock) -> None:
        for _ in range(256):
            try:
                data, peer = sock.recvfrom(65535)
            except BlockingIOError:
                return
            with self._lock:
                self.received += 1
                self.sources.add(peer)
            sock.sendto(data, peer)


class LossyRelay(_Threaded):
    """Sits between tunnel-in (which sends to `address`) and tunnel-out (`upstream`). Per
    client address it forwards from an upstream socket of its own, like a NAT. Each
    datagram either way is dropped with probability `drop`, sent twice with `duplicate`,
    or held back and sent after later ones with `reorder`. rebind() gives every client a
    new upstream socket (a new source port), as a NAT rebinding does. gate() stops one
    direction after some datagrams, keeping the rest until release()."""

    def __init__(self, upstream: str, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
                 seed: int = 1):
        super().__init__()
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.drop, self.duplicate, self.reorder = drop, duplicate, reorder
        self.rng = random.Random(seed)
        self.down = udp_socket()
        self.down.setblocking(False)
        self.clients: dict[tuple, socket.socket] = {}
        self.held: list[tuple[float, socket.socket, bytes, tuple]] = []
        self.stats = {"forwarded": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self.passed = {"up": 0, "down": 0}  # datagrams through, towards upstream / clients
        self.gates: dict[str, int] = {}     # direction -> datagrams let through before it closes
        self.gated: list[tuple[str, socket.socket, bytes, tuple]] = []
        self.sel.register(self.down, selectors.EVENT_READ, self._from_client)
        self._thread.start()

    @property
    def address(self) -> str:
        return addr_text(self.down.getsockname())

    def _new_upstream(self, client) -> socket.socket:
        s = udp_socket()
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, lambda sock, c=client: self._from_server(sock, c))
        return s

    def gate(self, direction: str, after: int) -> None:
        """From now on `direction` ("up": towards upstream, "down": towards clients) lets
        `after` more datagrams through, then keeps the rest until release()."""
        with self._lock:
            self.gates[direction] = self.passed[direction] + after

    def gated_count(self, direction: str) -> int:
        with self._lock:
            return sum(1 for g in self.gated if g[0] == direction)

    def pass_kept(self) -> list[bytes]:
        """Sends what the gates kept, in order, and keeps them closed; returns what went."""
        with self._lock:
            kept, self.gated = self.gated, []
            for direction, *_ in kept:
                self.passed[direction] += 1
                self.gates[direction] += 1
        for _, sock, data, to in kept:
            sock.sendto(data, to)
        return [data for _, _, data, _ in kept]

    def send_to_client(self, data: bytes) -> None:
        """Sends `data` to the (one) client as if from upstream."""
        with self._lock:
            (client,) = self.clients
        self.down.sendto(data, client)

    def release(self) -> None:
        """Opens the gates and sends what they kept, in order."""
        with self._lock:
            self.gates.clear()
            kept, self.gated = self.gated, []
        for _, sock, data, to in kept:
            sock.sendto(data, to)

    def _pass(self, direction: str, sock, data: bytes, to) -> None:
        with self._lock:
            if direction in self.gates and self.passed[direction] >= self.gates[direction]:
                self.gated.append((direction, sock, data, to))
                return
            self.passed[direction] += 1
        self._emit(sock, data, to)

    def _emit(self, sock, data: bytes, to) -> None:
        r = self.rng.random()
        if r < self.drop:
            self.stats["dropped"] += 1
            return
        if r < self.drop + self.reorder:
            # Held back 5-30 ms: later datagrams overtake it.
            self.stats["reordered"] += 1
            self.held.append((time.monotonic() + self.rng.uniform(0.005, 0.03), sock, data, to))
            return
        sock.sendto(data, to)
        self.stats["forwarded"] += 1
        if r < self.drop + self.reorder + self.duplicate:
            self.stats["duplicated"] += 1
            sock.sendto(data, to)

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [h for h in self.held if h[0] <= now]
            self.held = [h for h in self.held if h[0] > now]
        for _, sock, data, to in due:
            try:
                sock.sendto(data, to)
            except OSError:
                pass

    def _from_client(self, sock) -> None:
        for _ in range(256):
            try:
                data, client = sock.recvfrom(65535)
            except BlockingIOError:
                return
            with self._lock:
                up = self.clients.get(client)
                if up is None:
                    up = self.clients[client] = self._new_upstream(client)
            self._pass("up", up, data, self.upstream)

    def _from_server(self, sock, client) -> None:
        for _ in range(256):
            try:
                data, _ = sock.recvfrom(65535)
            except BlockingIOError:
                return
            self._pass("down", self.down, data, client)

    def rebind(self) -> list[int]:
        """New upstream source ports for every client; returns them. The old sockets stay
        open (a real NAT would drop replies to them) so nothing errors meanwhile."""
        ports = []
        with self._lock:
            for client in list(self.clients):
                self.clients[client] = self._new_upstream(client)
                ports.append(self.clients[client].getsockname()[1])
        return ports


@dataclass
class LoadResult:
    sent: int = 0
    answered: int = 0
    unexpected: int = 0       # echoes that matched nothing sent: duplicated or corrupted
    timed_out: int = 0
    late: int = 0             # first echo of a datagram that had already timed out
    elapsed: float = 0.0
    per_flow_answered: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0


def run_flows(target: str, flows: int, total: int, min_size: int = 1, max_size: int = 1200,
              window: int = 4, answer_timeout: float = 5.0, seed: int = 7,
              deadline: float = 120.0) -> LoadResult:
    """Sends `total` datagrams (sizes uniform in [min_size, max_size]) over `flows` client
    sockets (one flow each) to `target`, at most `window` unanswered per flow, and checks
    every echo against the datagrams still outstanding on that flow: an echo that matches
    none is a duplicate or corrupted and counted as unexpected. A datagram unanswered after
    `answer_timeout` counts as timed out and frees its window slot; its echo, if it comes
    later (queued behind a slow handshake), counts as late, a second one as unexpected."""
    host, _, port = target.rpartition(":")
    dest = (host, int(port))
    rng = random.Random(seed)
    socks = [udp_socket() for _ in range(flows)]
    for s in socks:
        s.setblocking(False)
    sel = selectors.DefaultSelector()
    outstanding: list[dict[bytes, float]] = [dict() for _ in range(flows)]
    expired: list[set[bytes]] = [set() for _ in range(flows)]
    answered = [0] * flows
    res = LoadResult()
    quota = [total // flows + (1 if i < total % flows else 0) for i in range(flows)]
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)

    def send_one(i: int) -> None:
        while True:
            size = rng.randint(min_size, max_size)
            payload = rng.randbytes(size)
            # Tiny payloads: keep every payload that may still be echoed distinct.
            if payload not in outstanding[i] and payload not in expired[i]:
                break
        outstanding[i][payload] = time.monotonic()
        socks[i].sendto(payload, dest)
        quota[i] -= 1
        res.sent += 1

    start = time.monotonic()
    for i in range(flows):
        for _ in range(min(window, quota[i])):
            send_one(i)
    while any(outstanding) and time.monotonic() - start < deadline:
        for key, _ in sel.select(timeout=0.05):
            i = key.data
            while True:
                try:
                    data = socks[i].recv(65535)
                except BlockingIOError:
                    break
                if outstanding[i].pop(data, None) is None:
                    if data in expired[i]:
                        expired[i].discard(data)  # a second copy would be unexpected
                        res.late += 1
                    else:
                        res.unexpected += 1
                    continue
                res.answered += 1
                answered[i] += 1
                if quota[i] > 0:
                    send_one(i)
        now = time.monotonic()
        for i in range(flows):
            for payload, t in list(outstanding[i].items()):
                if now - t > answer_timeout:
                    del outstanding[i][payload]
                    expired[i].add(payload)
                    res.timed_out += 1
                    if quota[i] > 0:
                        send_one(i)
    res.elapsed = time.monotonic() - start
    res.per_flow_answered = answered
    # Late echoes after the end still count as unexpected if they match nothing.
    for s in socks:
        s.close()
    sel.close()
    return res


def ping(sock: socket.socket, target: str, payload: bytes, timeout: float = 5.0) -> bytes | None:
    """Sends one datagram and waits for one reply (None on timeout)."""
    host, _, port = target.rpartition(":")
    sock.settimeout(timeout)
    sock.sendto(payload, (host, int(port)))
    try:
        return sock.recv(65535)
    except socket.timeout:
        return None


def capture_client_hello(timeout: float = 5.0) -> bytes:
    """The first datagram `openssl s_client -dtls1_2` sends: a real ClientHello without a
    cookie, captured on a socket that never answers."""
    trap = udp_socket()
    trap.settimeout(timeout)
    port = trap.getsockname()[1]
    proc = subprocess.Popen(
        ["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        data, _ = trap.recvfrom(65535)
        return data
    finally:
        proc.kill()
        proc.wait(timeout=5)
        trap.close()


# A DTLS record's content type and, for a handshake record, the message type at byte 13.
HANDSHAKE = 22
HELLO_VERIFY_REQUEST = 3


def half_open_dtls(server: str, client_hello: bytes, timeout: float = 5.0,
                   source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """A DTLS client that passes the cookie exchange and stops: it sends `client_hello`
    (capture_client_hello's), answers the HelloVerifyRequest with the same hello carrying
    the cookie, waits for the server's first flight and says nothing more. Returns the
    socket (keep it open: the flow is half-open until the server gives up) and the
    ClientHello record with the cookie. `source`: the address it sends from."""
    s = udp_socket(source)
    s.settimeout(timeout)
    host, port = server.rsplit(":", 1)
    s.sendto(client_hello, (host, int(port)))
    hvr = s.recv(65535)
    assert hvr[0] == HANDSHAKE and hvr[13] == HELLO_VERIFY_REQUEST, hvr[:16]
    cookie = hvr[13 + 12 + 3:13 + 12 + 3 + hvr[13 + 12 + 2]]
    # The ClientHello body: version (2), random (32), session id (1 + n), cookie (1 + m), ...
    body = client_hello[13 + 12:]
    at = 2 + 32 + 1 + body[34]
    body = body[:at] + bytes([len(cookie)]) + cookie + body[at + 1 + body[at]:]
    n = len(body).to_bytes(3, "big")
    handshake = bytes([1]) + n + (1).to_bytes(2, "big") + b"\0\0\0" + n + body  # message_seq 1
    record = client_hello[:3] + b"\0\0" + (1).to_bytes(6, "big") + len(handshake).to_bytes(2, "big") + handshake
    s.sendto(record, (host, int(port)))
    s.recv(65535)  # the server's flight: it now holds a flow for us
    return s, record
