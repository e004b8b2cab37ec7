#!/usr/bin/env python3
"""A stand-in legacy UDP service (think SNMP or a telemetry collector): answers each
datagram with "ACK <datagram uppercased>".

Usage: udp_service.py HOST PORT
"""
import socket
import sys

if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(b"ACK " + data.upper(), peer)
