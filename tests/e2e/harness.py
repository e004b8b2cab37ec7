"""Harness for the end-to-end tests: runs the real tunnel-in / tunnel-out binaries and small
threaded TCP (or unix-socket) servers that stand in for legacy servers.

Every process logs one JSON object per line on stderr (--log-format json); a background
thread keeps every line so tests can wait for, and assert on, what was logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

BIN_DIR = Path(os.environ.get("TUNNEL_BIN_DIR", "/work/main/build/bin"))
TUNNEL_IN = BIN_DIR / "tunnel-in"
TUNNEL_OUT = BIN_DIR / "tunnel-out"

DEFAULT_TIMEOUT = 10.0

# How tunnel-in carries connections (its --mode): "" leaves the default (auto); the TCP
# suite runs with TUNNEL_MODE=raw and TUNNEL_MODE=mux too.
TUNNEL_MODE = os.environ.get("TUNNEL_MODE", "")

# Worker threads of every tunnel process ("" leaves --threads at its default, the number of
# cores): the ThreadSanitizer run sets it so connections land on several threads on any
# machine.
TUNNEL_THREADS = os.environ.get("TUNNEL_THREADS", "")


# --------------------------------------------------------------------------------------
# Addresses


def split_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:5' -> ('127.0.0.1', 5); '[::1]:5' -> ('::1', 5)."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect(address, timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """Connects to (host, port) or to a unix socket path (str starting with '/')."""
    if isinstance(address, (str, Path)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(address))
        return s
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def recv_all(sock: socket.socket, limit: int | None = None) -> bytes:
    """Reads until EOF (or until `limit` bytes)."""
    chunks = []
    total = 0
    while limit is None or total < limit:
        data = sock.recv(min(1 << 20, limit - total) if limit is not None else 1 << 20)
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = recv_all(sock, n)
    if len(data) != n:
        raise AssertionError(f"connection ended after {len(data)} of {n} bytes")
    return data


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the peer ends the connection (EOF or reset) within `timeout`, reading
    and discarding anything that arrives meanwhile."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


# --------------------------------------------------------------------------------------
# The tunnel processes


class TunnelProcess:
    """A running tunnel-in or tunnel-out with its stderr collected line by line."""

    def __init__(self, binary: Path, args: list[str], name: str | None = None, **popen_kw):
        self.binary = binary
        self.args = list(args)
        # (With --config the file holds --threads too: a flag beside it would be refused.)
        if (TUNNEL_THREADS and "--threads" not in self.args and "--config" not in self.args
                and binary in (TUNNEL_IN, TUNNEL_OUT)):
            self.args += ["--threads", TUNNEL_THREADS]
        self.name = name or binary.name
        self.lines: list[str] = []  # every stderr line, raw
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            [str(binary), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen_kw,  # env, pass_fds, preexec_fn for the operations tests
        )
        self._stdout = b""
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()
        self.listen: str | None = None

    # -- stderr collection
    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self._stdout = self.proc.stdout.read()

    @property
    def stdout(self) -> str:
        self._out_reader.join(timeout=5)
        return self._stdout.decode("utf-8", "replace")

    def records(self) -> list[dict]:
        """Every stderr line that parses as a JSON object."""
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def find_logs(self, predicate: Callable[[dict], bool]) -> list[dict]:
        return [r for r in self.records() if predicate(r)]

    def logs_with_msg(self, msg: str) -> list[dict]:
        return self.find_logs(lambda r: r.get("msg") == msg)

    def wait_for_logs(self, msg: str, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
        """Waits until at least `count` log lines have `msg` (the process may have written
        them before our reader saw them) and returns them all."""
        deadline = time.monotonic() + timeout
        while len(found := self.logs_with_msg(msg)) < count:
            assert time.monotonic() < deadline, f"{self.name}: {len(found)} of {count} '{msg}' lines:\n" + self.log_text()
            time.sleep(0.05)
        return found

    def wait_for_log(self, predicate: Callable[[dict], bool] | str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Waits for a JSON log line matching `predicate` (or whose msg equals the string)
        and returns it; raises AssertionError with the collected log on timeout."""
        if isinstance(predicate, str):
            wanted = predicate
            predicate = lambda r: r.get("msg") == wanted  # noqa: E731
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and predicate(obj):
                        return obj
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._eof and seen >= len(self.lines)):
                    break
                self._cond.wait(min(remaining, 0.2))
        raise AssertionError(
            f"{self.name}: expected log line not seen within {timeout}s; log so far:\n" + self.log_text()
        )

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    # -- listening address
    def wait_listening(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        rec = self.wait_for_log("listening", timeout)
        self.listen = rec["listen"]
        return self.listen

    @property
    def address(self):
        """(host, port) for TCP, or the path (str) for a unix socket."""
        assert self.listen is not None, "process is not listening"
        if self.listen.startswith("unix:"):
            return self.listen[len("unix:"):]
        return split_address(self.listen)

    @property
    def port(self) -> int:
        return self.address[1]

    # -- life cycle
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def stop(self, timeout: float = DEFAULT_TIMEOUT, expect_rc: int | None = 0) -> int:
        """SIGTERM and wait; asserts the exit code (when expect_rc is not None)."""
        self.signal(signal.SIGTERM)
        try:
            rc = self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM; log:\n{self.log_text()}")
        if expect_rc is not None:
            assert rc == expect_rc, f"{self.name} exited {rc}, expected {expect_rc}; log:\n{self.log_text()}"
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def log_args(level: str = "debug") -> list[str]:
    return ["--log-format", "json", "--log-level", level]


class Processes:
    """Starts tunnel processes and guarantees every one is ended at teardown."""

    def __init__(self, pki):
        self.pki = pki
        self.all: list[TunnelProcess] = []

    def start(self, binary: Path, args: list[str], wait: bool = True, name: str | None = None,
              **popen_kw) -> TunnelProcess:
        p = TunnelProcess(binary, args, name, **popen_kw)
        self.all.append(p)
        if wait:
            try:
                p.wait_listening()
            except AssertionError:
                p.kill()
                raise
        return p

    def tunnel_out(
        self,
        target: str,
        *extra: str,
        listen: str = "127.0.0.1:0",
        cred=None,
        ca: Path | None = None,
        level: str = "debug",
        wait: bool = True,
        **popen_kw,
    ) -> TunnelProcess:
        cred = cred or self.pki.server
        args = [
            "--listen", listen,
            "--target", target,
            "--cert", str(cred.cert),
            "--key", str(cred.key),
            "--ca", str(ca or self.pki.ca_cert),
            *log_args(level),
            *extra,
        ]
        return self.start(TUNNEL_OUT, args, wait=wait, name="tunnel-out", **popen_kw)

    def tunnel_in(
        self,
        connect_to: str,
        *extra: str,
        listen: str = "127.0.0.1:0",
        cred=None,
        ca: Path | None = None,
        level: str = "debug",
        wait: bool = True,
        **popen_kw,
    ) -> TunnelProcess:
        cred = cred or self.pki.client_a
        args = [
            "--listen", listen,
            "--connect", connect_to,
            "--cert", str(cred.cert),
            "--key", str(cred.key),
            "--ca", str(ca or self.pki.ca_cert),
            *log_args(level),
            *(["--mode", TUNNEL_MODE] if TUNNEL_MODE else []),
            *extra,
        ]
        return self.start(TUNNEL_IN, args, wait=wait, name="tunnel-in", **popen_kw)

    def pair(
        self,
        target: str,
        out_args: Iterable[str] = (),
        in_args: Iterable[str] = (),
        host: str = "127.0.0.1",
        client_cred=None,
        in_listen: str | None = None,
    ) -> tuple[TunnelProcess, TunnelProcess]:
        """tunnel-out in front of `target`, and tunnel-in pointing at it."""
        listen = format_address(host, 0)
        out = self.tunnel_out(target, *out_args, listen=listen)
        tin = self.tunnel_in(out.listen, *in_args, listen=in_listen or listen, cred=client_cred)
        return out, tin

    def cleanup(self) -> None:
        for p in self.all:
            if p.running():
                p.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for p in self.all:
            try:
                p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            p.kill()
            for stream in (p.proc.stdout, p.proc.stderr):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass


def run_cli(binary: Path, args: list[str], timeout: float = 10, **kw) -> subprocess.CompletedProcess:
    """Runs a binary to completion (start-up error cases, --help, --version)."""
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


# --------------------------------------------------------------------------------------
# Stand-in legacy servers


@dataclass
class ConnResult:
    """What one accepted connection of a TestServer did."""

    received: int = 0
    sha256: str = ""
    sent: int = 0
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event | None = None  # set when the server is closed


class TestServer:
    """A threaded TCP (or unix) server: one thread per accepted connection running
    `handler(sock, result)`. Counts every connection accepted."""

    def __init__(self, handler: Callable[[socket.socket, ConnResult], None], host: str = "127.0.0.1",
                 unix_path: str | None = None, backlog: int = 512, port: int = 0):
        self.handler = handler
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.unix_path = unix_path
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))  # port 0: the kernel picks one
            self.unix_path = None
        self.sock.listen(backlog)
        self.host = host
        self._address = f"unix:{unix_path}" if unix_path else format_address(host, self.sock.getsockname()[1])
        self._lock = threading.Lock()
        self.results: list[ConnResult] = []
        self.conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._stop = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    @property
    def address(self) -> str:
        """The address as the tunnel's --target flag wants it."""
        return self._address

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self.results)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            result = ConnResult(stop=self._stop)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.results.append(result)
                self.conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn, result), daemon=True)
            t.start()
            with self._lock:
                self._threads.append(t)

    def _run(self, conn: socket.socket, result: ConnResult) -> None:
        try:
            conn.settimeout(60)
            self.handler(conn, result)
        except Exception as e:  # recorded, surfaced by tests that care, and shown on failure
            result.error = f"{type(e).__name__}: {e}"
            print(f"test server {self.address}: handler failed: {result.error}", file=sys.stderr)
        finally:
            try:
                conn.close()
            except OSError:
                pass
            result.done.set()

    def wait_connections(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[ConnResult]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.results) >= n:
                    return list(self.results)
            time.sleep(0.01)
        raise AssertionError(f"expected {n} connections at the target, saw {self.connection_count}")

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass


def echo_handler(conn: socket.socket, result: ConnResult) -> None:
    """Echoes everything; on EOF from the peer it half-closes back and ends."""
    h = hashlib.sha256()
    while True:
        data = conn.recv(1 << 16)
        if not data:
            break
        h.update(data)
        result.received += len(data)
        conn.sendall(data)
        result.sent += len(data)
    result.sha256 = h.hexdigest()
    conn.shutdown(socket.SHUT_WR)


def count_handler(conn: socket.socket, result: ConnResult) -> None:
    """Never answers; just reads until the peer goes (the count is what matters)."""
    while conn.recv(1 << 16):
        pass


def sink_handler(conn: socket.socket, result: ConnResult) -> None:
    """Hashes everything until EOF, then replies with the hex digest and closes."""
    h = hashlib.sha256()
    while True:
        data = conn.recv(1 << 16)
        if not data:
            break
        h.update(data)
        result.received += len(data)
    result.sha256 = h.hexdigest()
    conn.sendall(result.sha256.encode())
    result.sent = 64


def hold_handler(conn: socket.socket, result: ConnResult) -> None:
    """Reads until EOF, then holds the connection open without replying or closing
    until the server is closed (or 30 s pass)."""
    h = hashlib.sha256()
    while True:
        data = conn.recv(1 << 16)
        if not data:
            break
        h.update(data)
        result.received += len(data)
    result.sha256 = h.hexdigest()
    result.stop.wait(30)


def make_sender_handler(payload: bytes, shutdown_after_send: bool = True):
    """Sends `payload` at once (concurrently with reading), optionally half-closes, and
    reads and hashes the rest until EOF."""

    def handler(conn: socket.socket, result: ConnResult) -> None:
        def send():
            try:
                conn.sendall(payload)
            except OSError as e:  # the tunnel reset the connection: result.sent stays 0
                result.error = f"send: {e}"
                return
            result.sent = len(payload)
            if shutdown_after_send:
                conn.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        h = hashlib.sha256()
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            h.update(data)
            result.received += len(data)
        result.sha256 = h.hexdigest()
        t.join(60)

    return handler


def make_reply_after_eof_handler(reply: bytes):
    """Reads the whole request until EOF, then sends `reply` and closes."""

    def handler(conn: socket.socket, result: ConnResult) -> None:
        h = hashlib.sha256()
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            h.update(data)
            result.received += len(data)
        result.sha256 = h.hexdigest()
        conn.sendall(reply)
        result.sent = len(reply)

    return handler


class Servers:
    """Creates stand-in servers and closes them all at teardown."""

    def __init__(self):
        self.all: list[TestServer] = []

    def start(self, handler, host: str = "127.0.0.1", unix_path: str | None = None, port: int = 0) -> TestServer:
        s = TestServer(handler, host=host, unix_path=unix_path, port=port)
        self.all.append(s)
        return s

    def echo(self, host: str = "127.0.0.1", unix_path: str | None = None) -> TestServer:
        return self.start(echo_handler, host, unix_path)

    def counter(self, host: str = "127.0.0.1") -> TestServer:
        return self.start(count_handler, host)

    def sink(self, host: str = "127.0.0.1") -> TestServer:
        return self.start(sink_handler, host)

    def hold(self, host: str = "127.0.0.1") -> TestServer:
        return self.start(hold_handler, host)

    def sender(self, payload: bytes, shutdown_after_send: bool = True, host: str = "127.0.0.1") -> TestServer:
        return self.start(make_sender_handler(payload, shutdown_after_send), host)

    def reply_after_eof(self, reply: bytes, host: str = "127.0.0.1") -> TestServer:
        return self.start(make_reply_after_eof_handler(reply), host)

    def cleanup(self) -> None:
        for s in self.all:
            s.close()


# --------------------------------------------------------------------------------------
# Data helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bound, then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def echo_roundtrip(address, payload: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """Sends `payload`, half-closes, and returns everything received until EOF."""
    with connect(address, timeout) as s:
        result: dict = {}

        def reader():
            try:
                result["data"] = recv_all(s)
            except OSError as e:
                result["error"] = e

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(timeout)
        if t.is_alive():
            raise AssertionError("echo round trip did not finish in time")
        if "error" in result:
            raise result["error"]
        return result["data"]


REQUIRED_LOG_KEYS = ("time", "level", "program", "msg")
LOG_LEVELS = {"trace", "debug", "info", "warning", "error", "critical"}


def s_client(pki, address: str, *extra: str, cred=None, quiet: bool = True) -> subprocess.CompletedProcess:
    """One `openssl s_client` connection with a client certificate (client-a unless `cred`),
    verifying against the test CA, sending nothing and reading until the server ends.
    `quiet`: only the data on stdout (otherwise s_client's report too: New/Reused, ...)."""
    host, port = split_address(address)
    cred = cred or pki.client_a
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    args = ["openssl", "s_client", "-connect", target, "-CAfile", str(pki.ca_cert),
            "-cert", str(cred.cert), "-key", str(cred.key), "-verify_return_error", "-ign_eof",
            *(["-quiet"] if quiet else []), *extra]
    return subprocess.run(args, input=b"", capture_output=True, timeout=20)


def check_json_log_line(line: str, program: str) -> dict:
    """Asserts that one stderr line is a JSON object with the keys every log line carries."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise AssertionError(f"{program}: log line is not JSON ({e}): {line!r}")
    assert isinstance(obj, dict), f"{program}: log line is not a JSON object: {line!r}"
    missing = [k for k in REQUIRED_LOG_KEYS if k not in obj]
    assert not missing, f"{program}: log line lacks {missing}: {line!r}"
    assert obj["program"] == program, f"{program}: wrong program in {line!r}"
    assert obj["level"] in LOG_LEVELS, f"{program}: unknown level in {line!r}"
    assert isinstance(obj["msg"], str) and obj["msg"], f"{program}: empty msg in {line!r}"
    assert isinstance(obj["time"], str) and obj["time"].endswith("Z"), f"{program}: bad time in {line!r}"
    return obj
