"""Network namespaces for the tests that need more than loopback: whether this machine can
make them, the `ip` runner, entering a namespace, and the two topologies built with them:
NetnsPair (the partition test in test_faults.py) and TransparentLab (transparent mode in
test_plain_legs.py). Nothing outside the namespaces a test makes is touched.

Linux only; needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
import uuid
from contextlib import contextmanager

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> None:
    """Runs `ip ARGS`; raises OSError with its stderr when it fails."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")


# --------------------------------------------------------------------------------------
# Entering a namespace


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def enter(name: str) -> None:
    """Moves the calling thread into namespace `name` for good (a Popen preexec_fn, or a
    thread of its own): sockets it makes and processes it starts live there."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextmanager
def inside(name: str):
    """Runs the body with the calling thread in namespace `name`, then brings it home:
    sockets it creates and processes it starts live there (and stay there afterwards)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


# --------------------------------------------------------------------------------------
# Making and deleting namespaces


class Namespaces:
    """Namespaces made for one test, loopback up in each; close() deletes them all, and so
    the veth links inside them. Usable as a context manager."""

    def __init__(self):
        self.made: list[str] = []

    def add(self, name: str) -> None:
        ip("netns", "add", name)
        self.made.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.made.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_veth(ns: str, dev: str, peer_ns: str, peer_dev: str) -> None:
    """A veth pair made inside `ns` with its peer moved to `peer_ns`: never in the host's."""
    ip("-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", peer_ns)


def link_up(ns: str, dev: str, *cidrs: str) -> None:
    """Gives `dev` in `ns` the addresses `cidrs` and brings it up."""
    for cidr in cidrs:
        ip("-n", ns, "addr", "add", cidr, "dev", dev)
    ip("-n", ns, "link", "set", dev, "up")


# --------------------------------------------------------------------------------------
# Whether they can be made here


def unavailable() -> str | None:
    """Why this machine cannot make network namespaces joined by a veth pair, or None when
    it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    tag = uuid.uuid4().hex[:6]
    try:
        with Namespaces() as probe:
            probe.add(f"probe-a-{tag}")
            probe.add(f"probe-b-{tag}")
            add_veth(f"probe-a-{tag}", f"pa{tag}", f"probe-b-{tag}", f"pb{tag}")
    except OSError as e:
        return f"cannot create network namespaces: {e}"
    return None


def skip_unless_available(purpose: str) -> None:
    """Skips the current test, saying why, where namespaces cannot be made."""
    why = unavailable()
    if why:
        pytest.skip(f"{purpose} needs network namespaces: {why}")


# --------------------------------------------------------------------------------------
# The topologies


class NetnsPair(Namespaces):
    """Namespaces "a" and "b" made for one test, joined by a veth pair with 10.77.0.1 (a)
    and 10.77.0.2 (b) on a /30 that exists only inside them; loopback up in both. Nothing
    is routed anywhere else. close() deletes both (and so the link)."""

    SUBNET_A, SUBNET_B = "10.77.0.1", "10.77.0.2"

    def __init__(self):
        super().__init__()
        tag = uuid.uuid4().hex[:6]
        self.names = {"a": f"tun-a-{tag}", "b": f"tun-b-{tag}"}
        self.links = {"a": f"va{tag}", "b": f"vb{tag}"}
        try:
            for side in ("a", "b"):
                self.add(self.names[side])
            add_veth(self.names["a"], self.links["a"], self.names["b"], self.links["b"])
            for side, addr in (("a", self.SUBNET_A), ("b", self.SUBNET_B)):
                link_up(self.names[side], self.links[side], f"{addr}/30")
        except BaseException:
            self.close()
            raise

    def link(self, up: bool) -> None:
        """Takes tunnel-out's end of the link down (or up again)."""
        ip("-n", self.names["b"], "link", "set", self.links["b"], "up" if up else "down")

    def preexec(self, side: str):
        """A Popen preexec_fn that moves the child into the namespace before exec."""
        name = self.names[side]
        return lambda: enter(name)

    def call(self, side: str, fn, *args, **kw):
        """Runs fn on a thread of its own that has entered the namespace: sockets it makes
        live there (a namespace is a per-thread attribute; the thread then ends)."""
        box: dict = {}

        def body():
            try:
                enter(self.names[side])
                box["value"] = fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e

        t = threading.Thread(target=body)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["value"]


class TransparentLab(Namespaces):
    """Three namespaces, nothing outside them touched:

        cli  10.77.1.2 (tunnel-in), 10.77.1.3 (the legacy client)
          |  veth
        gw   10.77.1.1 | 10.77.2.1  (tunnel-out)
          |  veth
        tgt  10.77.2.2 (the target), default route via gw

    gw delivers packets that arrive from tgt for the client subnet locally (policy rule on
    the incoming interface + a `local` route), which is what a transparent socket needs to
    receive the target's replies to an address that is not gw's own."""

    CLIENT_SIDE, TARGET_SIDE = "10.77.1", "10.77.2"

    def __init__(self):
        super().__init__()
        tag = f"tnp{os.getpid()}"
        self.cli, self.gw, self.tgt = f"{tag}-cli", f"{tag}-gw", f"{tag}-tgt"
        try:
            for ns in (self.cli, self.gw, self.tgt):
                self.add(ns)
            add_veth(self.cli, "c0", self.gw, "g0")
            add_veth(self.tgt, "t0", self.gw, "g1")
            link_up(self.cli, "c0", "10.77.1.2/24", "10.77.1.3/24")
            link_up(self.gw, "g0", "10.77.1.1/24")
            link_up(self.gw, "g1", "10.77.2.1/24")
            link_up(self.tgt, "t0", "10.77.2.2/24")
            ip("-n", self.tgt, "route", "add", "default", "via", f"{self.TARGET_SIDE}.1")
            ip("-n", self.gw, "rule", "add", "iif", "g1", "lookup", "100")
            ip("-n", self.gw, "route", "add", "local", f"{self.CLIENT_SIDE}.0/24", "dev", "lo", "table", "100")
        except BaseException:
            self.close()
            raise
