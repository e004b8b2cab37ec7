"""--config FILE: many services in one TOML file. One tunnel-out port serves several TCP
services, routed by SNI (raw mode) or by each stream's service name (mux mode), each with
its own allow-list; a UDP service beside them; config mistakes are refused at start-up with
the file, the line and the key."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import TUNNEL_IN, TUNNEL_OUT, connect, log_args, recv_all, run_cli, s_client
from udp_tools import UdpEcho, udp_socket

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"
TUNNEL_CERTS = TUNNEL_IN.parent / "tunnel-certs"


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def write_config(path: Path, top: dict, services: dict[str, dict]) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, keys in services.items():
        lines += ["", f"[services.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def line_of(path: Path, text: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(text):
            return n
    raise AssertionError(f"{text!r} not in {path}")


def start_with_config(procs, binary, path: Path, services: int, name: str, **popen_kw):
    """Starts `binary --config path` and returns {service: bound address} once all listen."""
    p = procs.start(binary, ["--config", str(path)], name=name, **popen_kw)
    deadline = time.monotonic() + harness.DEFAULT_TIMEOUT
    while len(p.logs_with_msg("listening")) < services:
        assert time.monotonic() < deadline and p.running(), f"{name} did not listen:\n{p.log_text()}"
        time.sleep(0.02)
    return p, {r["service"]: r["listen"] for r in p.logs_with_msg("listening")}


def greeting_through(address: str) -> bytes:
    with connect(harness.split_address(address)) as s:
        return recv_all(s)


def credential_keys(cred) -> dict:
    return {"cert": str(cred.cert), "key": str(cred.key)}


@pytest.fixture
def site(procs, servers, pki, tmp_dir):
    """tunnel-out with three TCP services on one port (A: client-a only, B: client-b only,
    C: both) and a UDP echo service (client-a only). Each TCP target greets with its name."""
    targets = {name: servers.sender(f"this is {name}\n".encode()) for name in ("a", "b", "c")}
    echo = UdpEcho()
    top = {**credential_keys(pki.server), "ca": str(pki.ca_cert), "log-format": "json", "log-level": "debug"}
    services = {
        "a": {"listen": "127.0.0.1:0", "target": targets["a"].address, "allow-cn": ["client-a"]},
        "b": {"listen": "127.0.0.1:0", "target": targets["b"].address, "allow-cn": ["client-b"]},
        "c": {"listen": "127.0.0.1:0", "target": targets["c"].address, "allow-cn": ["client-a", "client-b"]},
        "syslog": {"udp": True, "listen": "127.0.0.1:0", "target": echo.address, "allow-cn": ["client-a"]},
    }
    out, listens = start_with_config(procs, TUNNEL_OUT, write_config(tmp_dir / "out.toml", top, services), 4,
                                     "tunnel-out")
    assert len({listens[s] for s in "abc"}) == 1, f"TCP services must share one port: {listens}"
    yield {"out": out, "port": listens["a"], "udp": listens["syslog"], "targets": targets, "echo": echo}
    echo.close()


def tunnel_in_for(procs, pki, tmp_dir, site, cred, mode: str, names=("a", "b", "c"), udp: bool = False):
    top = {**credential_keys(cred), "ca": str(pki.ca_cert), "mode": mode, "log-format": "json",
           "log-level": "debug", "connect": site["port"], "server-name": "localhost"}
    services = {n: {"listen": "127.0.0.1:0"} for n in names}
    if udp:
        services["syslog"] = {"udp": True, "mode": "auto", "listen": "127.0.0.1:0", "connect": site["udp"]}
    path = write_config(tmp_dir / f"in-{cred.cert.stem}.toml", top, services)
    return start_with_config(procs, TUNNEL_IN, path, len(services), "tunnel-in")


@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_three_tcp_services_and_one_udp_service_behind_one_port(procs, pki, tmp_dir, site, mode):
    tin, local = tunnel_in_for(procs, pki, tmp_dir, site, pki.client_a, mode, udp=True)
    assert greeting_through(local["a"]) == b"this is a\n"
    assert greeting_through(local["c"]) == b"this is c\n"
    # client-a is not on service b's allow-list: refused before b's target is dialled.
    assert greeting_through(local["b"]) == b""
    out = site["out"]
    refusal = "handshake failed" if mode == "raw" else "stream refused"
    rec = out.wait_for_log(lambda r: r.get("msg") == refusal and "service b" in r.get("reason", ""))
    assert "allow-list" in rec["reason"]
    assert site["targets"]["b"].connection_count == 0
    assert site["targets"]["a"].connection_count == 1 and site["targets"]["c"].connection_count == 1
    for service in ("a", "c"):  # each connection's last line names its service
        out.wait_for_log(lambda r, s=service: r.get("msg") == "connection closed" and r.get("service") == s)
    # The UDP service beside them, on its own DTLS port.
    with udp_socket() as s:
        s.settimeout(5)
        s.sendto(b"<13>syslog line", harness.split_address(local["syslog"]))
        assert s.recvfrom(2048)[0] == b"<13>syslog line"


@pytest.mark.parametrize("mode", ["raw", "mux"])
def test_a_client_allowed_for_one_service_is_refused_by_another(procs, pki, tmp_dir, site, mode):
    tin, local = tunnel_in_for(procs, pki, tmp_dir, site, pki.client_b, mode, names=("a", "b"))
    assert greeting_through(local["b"]) == b"this is b\n"
    assert greeting_through(local["a"]) == b""
    site["out"].wait_for_log(lambda r: "not on the allow-list of service a" in r.get("reason", ""))
    assert site["targets"]["a"].connection_count == 0


def test_openssl_s_client_picks_the_service_by_sni(pki, site):
    got = s_client(pki, site["port"], "-servername", "c")
    assert b"this is c" in got.stdout, got.stderr.decode(errors="replace")
    got = s_client(pki, site["port"], "-servername", "B", cred=pki.client_b)  # names match case-insensitively
    assert b"this is b" in got.stdout, got.stderr.decode(errors="replace")


def test_unknown_service_or_no_sni_on_a_shared_port_is_refused_before_any_target(pki, site):
    got = s_client(pki, site["port"], "-servername", "nope")
    assert b"this is" not in got.stdout
    site["out"].wait_for_log(lambda r: r.get("msg") == "handshake failed" and r.get("reason") == "unknown service nope")
    got = s_client(pki, site["port"], "-noservername")
    assert b"this is" not in got.stdout
    site["out"].wait_for_log(lambda r: "no service named" in r.get("reason", ""))
    assert all(t.connection_count == 0 for t in site["targets"].values())


def test_one_service_on_a_port_ignores_sni(procs, pki, servers, tmp_dir):
    """Any TLS client works against a single service, whatever name it sends."""
    target = servers.sender(b"only one\n")
    top = {**credential_keys(pki.server), "ca": str(pki.ca_cert), "log-format": "json"}
    path = write_config(tmp_dir / "one.toml", top, {"db": {"listen": "127.0.0.1:0", "target": target.address}})
    out, listens = start_with_config(procs, TUNNEL_OUT, path, 1, "tunnel-out")
    got = s_client(pki, listens["db"], "-servername", "localhost")
    assert b"only one" in got.stdout, got.stderr.decode(errors="replace")


def test_max_conns_counts_each_service_on_its_own(procs, pki, servers, tmp_dir):
    """Connections held open on one service (no handshake needed) never use up another's
    --max-conns: the limit is the service's own, not the process's."""
    target = servers.sender(b"small but served\n")
    top = {**credential_keys(pki.server), "ca": str(pki.ca_cert), "log-format": "json"}
    services = {"big": {"listen": "127.0.0.1:0", "target": target.address, "max-conns": 1000},
                "small": {"listen": "[::1]:0", "target": target.address, "max-conns": 2}}  # another port
    out, listens = start_with_config(procs, TUNNEL_OUT, write_config(tmp_dir / "limits.toml", top, services), 2,
                                     "tunnel-out")
    held = [connect(harness.split_address(listens["big"])) for _ in range(3)]
    try:
        time.sleep(0.3)  # accepted and counted before the next connection arrives
        got = s_client(pki, listens["small"], "-servername", "localhost")
        assert b"small but served" in got.stdout, got.stderr.decode(errors="replace")
        assert not out.logs_with_msg("connection refused: limit reached"), out.log_text()
    finally:
        for s in held:
            s.close()


def test_services_together_stay_within_what_the_open_file_limit_allows(procs, pki, servers, tmp_dir):
    """Each service counts its own connections, but all of them together never take more
    than the descriptors allow: with 300 descriptors and one thread, 84 connections."""
    target = servers.sender(b"hello\n")
    top = {**credential_keys(pki.server), "ca": str(pki.ca_cert), "log-format": "json", "threads": 1}
    services = {"one": {"listen": "127.0.0.1:0", "target": target.address},
                "two": {"listen": "[::1]:0", "target": target.address}}
    path = write_config(tmp_dir / "fds.toml", top, services)
    out = procs.start(TUNNEL_OUT, ["--config", str(path)], wait=False, name="tunnel-out",
                      preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)))
    listens = {r["service"]: r["listen"] for r in out.wait_for_logs("listening", 2)}
    held = []
    try:
        for i in range(84):
            held.append(connect(harness.split_address(listens["one" if i % 2 else "two"])))
        time.sleep(0.3)
        assert not out.logs_with_msg("connection refused: limit reached"), out.log_text()
        held.append(connect(harness.split_address(listens["one"])))
        refused = out.wait_for_log("connection refused: limit reached")
        assert refused["limit"] == "process" and refused["max_conns"] == 84, refused
    finally:
        for s in held:
            s.close()


def test_mux_streams_count_against_what_the_open_file_limit_allows(procs, pki, servers, tmp_dir):
    """In mux mode one accepted connection carries many streams, each holding a descriptor
    to the target: they count against the process's limit, which is kept in descriptors (a
    connection two, a stream one). With 300 descriptors and one thread the limit is 84
    connections, 168 descriptors: the mux connection and 166 streams."""
    target = servers.echo()
    top = {**credential_keys(pki.server), "ca": str(pki.ca_cert), "log-format": "json", "threads": 1}
    services = {"one": {"listen": "127.0.0.1:0", "target": target.address, "max-conns": 1000}}
    path = write_config(tmp_dir / "fds.toml", top, services)
    out = procs.start(TUNNEL_OUT, ["--config", str(path)], wait=False, name="tunnel-out",
                      preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)))
    listen = out.wait_for_log("listening")["listen"]
    tin = procs.tunnel_in(listen, "--mode", "mux", "--pool", "1", "--threads", "1", level="info")
    tin.wait_for_log("mux connection up")
    held = []
    try:
        for i in range(166):
            s = connect(tin.address)
            s.sendall(b"x")
            assert harness.recv_exactly(s, 1) == b"x", f"stream {i} not served"
            held.append(s)
        assert not out.logs_with_msg("connection refused: limit reached"), out.log_text()
        with connect(tin.address) as s:
            assert harness.closed_by_peer(s, 10)
        refused = out.wait_for_log("connection refused: limit reached")
        assert refused["limit"] == "process" and refused["max_conns"] == 84, refused
        assert target.connection_count == 166
    finally:
        for s in held:
            s.close()
    # Streams give their units back: a new one is served once the others have closed.
    deadline = time.monotonic() + 10
    while True:
        try:
            with connect(tin.address) as s:
                s.sendall(b"y")
                if harness.recv_exactly(s, 1) == b"y":
                    break
        except (OSError, AssertionError):
            pass
        assert time.monotonic() < deadline, "no stream served after the others closed"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------
# mistakes: each refused with exit code 2, one line naming file, line and key


def base_out(pki) -> dict:
    return {**credential_keys(pki.server), "ca": str(pki.ca_cert)}


BAD_CONFIGS = {
    "unknown key": (
        lambda pki: ({}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9", "idle-timout": "5m"}}),
        "idle-timout", "services.a.idle-timout: unknown key"),
    "empty allow-list": (
        lambda pki: ({}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9", "allow-cn": []}}),
        "allow-cn", "services.a.allow-cn: an empty allow-list would admit every client of the CA (leave the key out)"),
    "wrong type": (
        lambda pki: ({}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9", "max-conns": "100"}}),
        "max-conns", "services.a.max-conns: expected an integer"),
    "bad value": (
        lambda pki: ({}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9", "idle-timeout": "5 minutes"}}),
        "idle-timeout", "services.a.idle-timeout: 5 minutes: not a duration"),
    "duplicate listener": (
        lambda pki: ({}, {"a": {"udp": True, "listen": "127.0.0.1:40514", "target": "127.0.0.1:9"},
                          "b": {"udp": True, "listen": "127.0.0.1:40514", "target": "127.0.0.1:10"}}),
        'listen = "127.0.0.1:40514"\n', None),
    "missing certificate": (
        lambda pki: ({"cert": "/nonexistent/server.crt"}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9"}}),
        "cert", "cert: /nonexistent/server.crt"),
    "conflicting options on one port": (
        lambda pki: ({}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9"},
                          "b": {"listen": "127.0.0.1:0", "target": "127.0.0.1:10", "tls-min": "1.2"}}),
        "tls-min", "services.b.tls-min: differs from services.a"),
    "conflicting credentials": (
        lambda pki: ({"psk-file": "/etc/tunnel/psk"}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9"}}),
        "cert", "cert: not with psk-file"),
    "process-wide key in a service": (
        lambda pki: ({}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9", "threads": 4}}),
        "threads", "services.a.threads: a process-wide setting"),
    "busy polling set per service": (
        lambda pki: ({}, {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9", "busy-poll": 50}}),
        "busy-poll", "services.a.busy-poll: a process-wide setting"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_refused_with_file_line_and_key(pki, tmp_dir, case):
    make, key_line, expected = BAD_CONFIGS[case]
    top, services = make(pki)
    path = write_config(tmp_dir / "bad.toml", {**base_out(pki), **top}, services)
    r = run_cli(TUNNEL_OUT, ["--config", str(path)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    if case == "duplicate listener":  # the second of the two listen lines
        line = [n for n, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("listen")][1]
        expected = "services.b.listen: 127.0.0.1:40514 is already the listener of services.a"
    else:
        line = line_of(path, key_line)
    assert f"tunnel-out: error: {path}:{line}: {expected}" in lines[0], lines[0]


def test_toml_syntax_error_names_line_and_column(tmp_dir):
    path = tmp_dir / "broken.toml"
    path.write_text('cert = "x"\n[services.a\nlisten = "127.0.0.1:0"\n')
    r = run_cli(TUNNEL_IN, ["--config", str(path)])
    assert r.returncode == 2
    assert re.match(rf"tunnel-in: error: {re.escape(str(path))}:2:\d+: ", r.stderr), r.stderr


def test_a_flag_beside_config_is_refused(tmp_dir, pki):
    path = write_config(tmp_dir / "x.toml", base_out(pki), {"a": {"listen": "127.0.0.1:0", "target": "127.0.0.1:9"}})
    r = run_cli(TUNNEL_OUT, ["--config", str(path), "--idle-timeout", "5m"])
    assert r.returncode == 2 and "--idle-timeout: not with --config" in r.stderr, r.stderr


def test_tunnel_in_duplicate_listener_is_refused(tmp_dir, pki):
    top = {**credential_keys(pki.client_a), "ca": str(pki.ca_cert), "connect": "127.0.0.1:8443"}
    path = write_config(tmp_dir / "in.toml", top, {"a": {"listen": "127.0.0.1:45432"}, "b": {"listen": "127.0.0.1:45432"}})
    r = run_cli(TUNNEL_IN, ["--config", str(path)])
    assert r.returncode == 2 and "services.b.listen: 127.0.0.1:45432 is already the listener of services.a" in r.stderr


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_check_config_passes_on_every_shipped_example(tmp_dir, example):
    """The examples name their certificates relative to themselves (pki/...): give them a
    fresh PKI there and check them as an operator would."""
    shutil.copy(EXAMPLES / example, tmp_dir / example)
    subprocess.run([str(TUNNEL_CERTS), "init", "--dir", str(tmp_dir / "pki")], check=True, capture_output=True)
    binary = TUNNEL_IN if example.startswith("tunnel-in") else TUNNEL_OUT
    r = run_cli(binary, ["--config", str(tmp_dir / example), "--check-config"])
    assert r.returncode == 0, r.stderr
    tables = re.findall(r"^\[services\.([\w.-]+)\]$", (EXAMPLES / example).read_text(), re.M)
    for name in tables:
        assert f"[services.{name}]\n" in r.stdout and f"service = {name}\n" in r.stdout, r.stdout
