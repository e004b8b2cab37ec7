#!/usr/bin/env python3
"""A stand-in legacy TCP service: answers each line with "ACK <line uppercased>".

Plain TCP, no TLS, like the databases and PLC links the tunnel protects.
Usage: tcp_service.py HOST PORT
"""
import socketserver
import sys


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"ACK " + line.strip().upper() + b"\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    with Server((host, port), Handler) as server:
        server.serve_forever()
