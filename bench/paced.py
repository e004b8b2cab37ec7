#!/usr/bin/env python3
"""One client sending a Redis PING at a fixed rate (not back to back) and timing each reply.

    python3 bench/paced.py PORT RATE SECONDS

Connects to 127.0.0.1:PORT, sends one PING every 1/RATE seconds for SECONDS (after one
untimed PING that waits out a TLS handshake), and prints
"paced rate=R requests=N p50_ms=.. p99_ms=.. errors=E". Between requests every process on
the path goes idle: this is the traffic a window of busy polling may or may not bridge.
"""
import socket
import sys
import time


def main():
    port, rate, secs = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ping():
        s.sendall(b"PING\r\n")
        got = b""
        while not got.endswith(b"\r\n"):
            chunk = s.recv(64)
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        return got == b"+PONG\r\n"

    errors = 0 if ping() else 1
    n = int(rate * secs)
    times = []
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        ok = ping()
        times.append(time.perf_counter() - t0)
        errors += 0 if ok else 1
    times.sort()
    print(f"paced rate={rate:g} requests={n} p50_ms={1e3 * times[n // 2]:.4f} "
          f"p99_ms={1e3 * times[min(n - 1, n * 99 // 100)]:.4f} errors={errors}")


if __name__ == "__main__":
    main()
