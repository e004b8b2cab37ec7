"""pytest fixtures: a fresh PKI per session, and process/server fixtures that clean up
everything they started, whether the test passed or not."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import udp_tools  # noqa: E402
from pki import PKI  # noqa: E402


def pytest_sessionstart(session):
    for binary in (harness.TUNNEL_IN, harness.TUNNEL_OUT):
        if not binary.is_file():
            raise pytest.UsageError(f"{binary} not found: build first (ninja -C build) or set TUNNEL_BIN_DIR")


@pytest.fixture(scope="session")
def pki():
    directory = Path(tempfile.mkdtemp(prefix="tunnel-e2e-pki-"))
    try:
        yield PKI(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tmp_dir():
    """A short private directory under /tmp (unix socket paths must stay under 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="te2e-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def servers():
    s = harness.Servers()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def procs(pki):
    p = harness.Processes(pki)
    try:
        yield p
    finally:
        p.cleanup()
    # Every process that got as far as logging must have logged only well-formed JSON lines.
    for proc in p.all:
        if proc.proc.returncode == 2:
            continue  # a start-up error: one plain line on stderr, by design
        for line in proc.lines:
            harness.check_json_log_line(line, proc.binary.name)


@pytest.fixture
def echo():
    """A UDP echo server: the legacy target of the UDP tests."""
    e = udp_tools.UdpEcho()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def relays():
    """Makes LossyRelay(upstream, ...) between tunnel-in and tunnel-out; closes them all."""
    made = []

    def make(*args, **kw):
        r = udp_tools.LossyRelay(*args, **kw)
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


@pytest.fixture
def client():
    """A UDP socket standing for one legacy client."""
    s = udp_tools.udp_socket()
    try:
        yield s
    finally:
        s.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach every tunnel process's stderr to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("call", "teardown"):
        procs = item.funcargs.get("procs") if hasattr(item, "funcargs") else None
        if procs is not None:
            for i, proc in enumerate(procs.all):
                report.sections.append(
                    (f"{proc.name} #{i} stderr (args: {' '.join(proc.args)})", proc.log_text())
                )
