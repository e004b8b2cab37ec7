#!/usr/bin/env python3
"""Benchmark: one new legacy TCP connection per request through a tunnel-in/tunnel-out pair,
raw mode vs mux mode. Prints requests/s and latency percentiles; asserts nothing.

    python3 tests/bench/connect_per_request.py [--requests 2000] [--concurrency 8]

Starts an echo target, tunnel-out, and tunnel-in (once per mode) on loopback with a fresh
PKI from tunnel-certs in build/bin.
"""
import argparse, os, socket, statistics, subprocess, sys, tempfile, threading, time, json
from pathlib import Path

BIN = Path(os.environ.get("TUNNEL_BIN_DIR", Path(__file__).resolve().parents[2] / "build" / "bin"))


def echo_server():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0)); s.listen(1024)
    def serve(c):
        with c:
            while (d := c.recv(65536)):
                c.sendall(d)
    def loop():
        while True:
            c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def start(args):
    p = subprocess.Popen([str(a) for a in args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in p.stderr:
        if '"listening"' in line:
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, json.loads(line)["listen"]
    raise SystemExit(f"{args[0]} did not start")


def run(mode, pki, target, n, conc, threads):
    out, out_addr = start([BIN / "tunnel-out", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{target}",
                           "--cert", pki / "server.crt", "--key", pki / "server.key", "--ca", pki / "ca.crt",
                           "--log-format", "json", "--log-level", "info", "--threads", threads])
    tin, in_addr = start([BIN / "tunnel-in", "--listen", "127.0.0.1:0", "--connect", out_addr, "--server-name", "localhost",
                          "--cert", pki / "client.crt", "--key", pki / "client.key", "--ca", pki / "ca.crt",
                          "--log-format", "json", "--log-level", "info", "--mode", mode, "--threads", threads])
    host, port = in_addr.rsplit(":", 1); port = int(port)
    time.sleep(1.0)
    lat = []; lock = threading.Lock(); counter = iter(range(n)); errors = [0]
    def worker():
        mine = []
        for _ in iter(lambda: next(counter, None), None):
            t = time.perf_counter()
            try:
                with socket.create_connection((host, port)) as s:
                    s.sendall(b"PING\r\n"); s.shutdown(socket.SHUT_WR)
                    got = b""
                    while (d := s.recv(100)):
                        got += d
                    if got != b"PING\r\n": errors[0] += 1
            except OSError:
                errors[0] += 1
            mine.append(time.perf_counter() - t)
        with lock: lat.extend(mine)
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    [t.start() for t in ts]; [t.join() for t in ts]
    wall = time.perf_counter() - t0
    for p in (tin, out): p.terminate(); p.wait(10)
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000
    print(f"{mode:4}: {n} requests, concurrency {conc}: {n / wall:7.0f} req/s  "
          f"p50 {q(.5):.2f} ms  p99 {q(.99):.2f} ms  errors {errors[0]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", default="2")
    a = ap.parse_args()
    pki = Path(tempfile.mkdtemp(prefix="bench-pki-"))
    subprocess.run([BIN / "tunnel-certs", "init", "--dir", pki], check=True, capture_output=True)
    target = echo_server()
    for mode in ("raw", "mux"):
        run(mode, pki, target, a.requests, a.concurrency, a.threads)


if __name__ == "__main__":
    main()
