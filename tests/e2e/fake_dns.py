"""A name server of the test's own on 127.0.0.77:53 and a way to point one child process at
it: the child gets a mount namespace of its own in which /etc/resolv.conf names only that
server (nothing outside the child sees the change). The server answers A queries for the
names it is given (after a delay, for the names given one), stays silent for the names it
is told to, says NXDOMAIN for the rest, and counts every query by name and type. The
answers may be changed while it runs.

Linux only; needs root (CAP_SYS_ADMIN) for the mount namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

ADDRESS = "127.0.0.77"
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
TYPES = {1: "A", 28: "AAAA"}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _parse_question(packet: bytes) -> tuple[str, int, int]:
    """(name, type, offset past the question) of a query's first question."""
    labels, i = [], 12
    while packet[i]:
        n = packet[i]
        labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype = struct.unpack_from("!H", packet, i + 1)[0]
    return ".".join(labels).lower(), qtype, i + 5


class FakeDns:
    def __init__(self, tmp_dir: Path, answers: dict[str, str], silent: set[str],
                 delays: dict[str, float] | None = None):
        self.answers = {k.lower(): v for k, v in answers.items()}
        self.silent = {s.lower() for s in silent}
        self.delays = {k.lower(): v for k, v in (delays or {}).items()}
        self.queries: Counter[tuple[str, str]] = Counter()
        self._cond = threading.Condition()
        # One try, and glibc's longest wait for it: a silent server holds a lookup 30 s.
        self.resolv_conf = tmp_dir / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {ADDRESS}\noptions timeout:30 attempts:1\n")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ADDRESS, 53))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                name, qtype, end = _parse_question(packet)
            except (IndexError, struct.error):
                continue
            with self._cond:
                self.queries[(name, TYPES.get(qtype, str(qtype)))] += 1
                self._cond.notify_all()
            if name in self.silent:
                continue
            answer = self._answer(packet[:end], name, qtype)
            if name in self.delays:
                threading.Timer(self.delays[name], self._send, (answer, peer)).start()
            else:
                self._send(answer, peer)

    def _send(self, answer: bytes, peer) -> None:
        try:
            self.sock.sendto(answer, peer)
        except OSError:
            pass  # closed meanwhile

    def _answer(self, query: bytes, name: str, qtype: int) -> bytes:
        known = name in self.answers
        records = b""
        if known and qtype == 1:
            records = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(self.answers[name])
        flags = 0x8180 | (0 if known else 3)  # a response, recursion available; NXDOMAIN if unknown
        header = struct.pack("!HHHHHH", struct.unpack_from("!H", query)[0], flags, 1, 1 if records else 0, 0, 0)
        return header + query[12:] + records

    def count(self, name: str, qtype: str = "A") -> int:
        with self._cond:
            return self.queries[(name, qtype)]

    def wait_for_query(self, name: str, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.queries[(name, "A")] > 0, timeout), \
                f"no query for {name}: {dict(self.queries)}"

    def preexec(self):
        """A Popen preexec_fn: the child's /etc/resolv.conf becomes this server's."""
        source = str(self.resolv_conf).encode()

        def enter() -> None:
            _check(_libc.unshare(CLONE_NEWNS), "unshare")
            _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
            _check(_libc.mount(source, b"/etc/resolv.conf", None, MS_BIND, None), "bind /etc/resolv.conf")
        return enter

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the serving thread's recvfrom
        except OSError:
            pass
        self._thread.join(5)
        self.sock.close()


def skip_unless_available(tmp_dir: Path) -> None:
    """Skips the test where a mount namespace cannot be made or the server's port is taken."""
    probe = tmp_dir / "probe.conf"
    probe.write_text("nameserver 127.0.0.77\n")
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {probe} /etc/resolv.conf"],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {r.stderr.strip()}")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((ADDRESS, 53))
    except OSError as e:
        pytest.skip(f"cannot serve DNS on {ADDRESS}:53: {e}")
