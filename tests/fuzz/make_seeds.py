#!/usr/bin/python3
"""Writes the seeds of the tls_engine, dtls_engine and dtls_record fuzz targets from real
handshakes.

tls_engine: Python's ssl module (OpenSSL) plays both ends of in-memory TLS handshakes with
the end-to-end tests' throwaway PKI; what one end sent becomes a seed for our engine in the
other role (see tls_engine_fuzz.cpp for the control byte). dtls_record: a real DTLS 1.2
ClientHello from `openssl s_client -dtls1_2`, and hand-made records of the other kinds.
dtls_engine: the datagrams `openssl s_server -dtls1_2` sends in a handshake with
`openssl s_client`, captured by a relay between them. The seeds hold certificates but
never a private key.

Usage: /usr/bin/python3 tests/fuzz/make_seeds.py [tls_engine|dtls_engine|dtls_record]...
(rewrites the corpora named, or all three)
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import time
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
from pki import PKI  # noqa: E402
from udp_tools import capture_client_hello, udp_socket  # noqa: E402

# Control byte of tls_engine_fuzz.cpp.
CLIENT, TLS12, MUX = 1, 2, 4


def chunked(k: int) -> int:
    return k << 3


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> tuple[bytes, bytes]:
    """Runs a handshake in memory; returns (everything the client sent, everything the
    server sent)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    sent_by_client, sent_by_server = b"", b""
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        c, s = c_out.read(), s_out.read()
        sent_by_client += c
        sent_by_server += s
        s_in.write(c)
        c_in.write(s)
        if not c and not s:
            break
    return sent_by_client, sent_by_server


def records(data: bytes) -> list[bytes]:
    """Splits a TLS byte stream into its records."""
    out = []
    while len(data) >= 5:
        n = 5 + struct.unpack(">H", data[3:5])[0]
        out.append(data[:n])
        data = data[n:]
    return out


def until_encrypted(data: bytes) -> bytes:
    """The records up to and including the first encrypted one: the engine cannot decrypt
    what follows (the keys were agreed with a different peer), so it is never parsed."""
    kept = b""
    for record in records(data):
        kept += record
        if record[0] == 23:  # application_data: TLS 1.3's encrypted records
            break
    return kept


def until_change_cipher_spec(data: bytes) -> bytes:
    """TLS 1.2: the plaintext records before ChangeCipherSpec (all the handshake the engine
    can parse; Finished and what follows are encrypted)."""
    kept = b""
    for record in records(data):
        if record[0] == 20:
            break
        kept += record
    return kept


def contexts(pki: PKI, version: ssl.TLSVersion, alpn: list[str] | None = None, groups: str | None = None):
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(pki.ca_cert)
    client.load_cert_chain(pki.client_a.cert, pki.client_a.key)
    client.maximum_version = version
    if alpn:
        client.set_alpn_protocols(alpn)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server.cert, pki.server.key)
    server.load_verify_locations(pki.ca_cert)
    server.verify_mode = ssl.CERT_REQUIRED
    server.maximum_version = version
    if alpn:
        server.set_alpn_protocols(alpn)
    # No session ticket: a TLS 1.2 server answering a ClientHello that offers one echoes
    # the extension, which our engine (offering none) refuses before the certificate.
    client.options |= ssl.OP_NO_TICKET
    server.options |= ssl.OP_NO_TICKET
    if groups:
        server.set_ecdh_curve(groups)  # a group the client sent no key share for: HelloRetryRequest
    return client, server


def tls_seeds(pki: PKI) -> dict[str, bytes]:
    seeds = {}
    tls13_c, tls13_s = handshake(*contexts(pki, ssl.TLSVersion.TLSv1_3))
    mux_c, _ = handshake(*contexts(pki, ssl.TLSVersion.TLSv1_3, alpn=["tunnel-mux/1"]))
    tls12_c, tls12_s = handshake(*contexts(pki, ssl.TLSVersion.TLSv1_2))
    _, hrr_s = handshake(*contexts(pki, ssl.TLSVersion.TLSv1_3, groups="secp384r1"))
    tls13_c, tls13_s = until_encrypted(tls13_c), until_encrypted(tls13_s)
    tls12_c, tls12_s = until_change_cipher_spec(tls12_c), until_change_cipher_spec(tls12_s)
    hrr_s = records(hrr_s)[0]  # the HelloRetryRequest; the rest answers another ClientHello
    seeds["server_tls13_client_flights"] = bytes([0]) + tls13_c
    # Variants: the ClientHello alone (the replay test runs every prefix of every seed, and
    # each prefix past the ClientHello costs a whole server flight).
    seeds["server_tls13_client_hello_25_byte_pieces"] = bytes([chunked(5)]) + records(tls13_c)[0]
    seeds["server_tls13_mux_alpn_client_hello"] = bytes([MUX]) + records(mux_c)[0]
    seeds["server_tls12_client_flights"] = bytes([TLS12]) + tls12_c
    seeds["server_tls12_client_flights_1_byte_pieces"] = bytes([TLS12 | chunked(1)]) + tls12_c
    seeds["server_plaintext_http"] = bytes([0]) + b"GET / HTTP/1.1\r\nHost: tunnel-out\r\n\r\n"
    seeds["client_tls13_server_flight"] = bytes([CLIENT]) + tls13_s
    seeds["client_tls12_server_flight"] = bytes([CLIENT | TLS12]) + tls12_s
    seeds["client_tls13_hello_retry_request"] = bytes([CLIENT]) + hrr_s
    return seeds


def dtls_header(content_type: int, epoch: int, seq: int, minor: int = 253) -> bytes:
    return bytes([content_type, 254, minor]) + struct.pack(">H", epoch) + seq.to_bytes(6, "big")


def dtls_seeds() -> dict[str, bytes]:
    cid = bytes.fromhex("0123456789abcdef")
    payload = bytes(range(48))
    app = dtls_header(23, 1, 7) + struct.pack(">H", len(payload)) + payload
    return {
        "client_hello_openssl": capture_client_hello(),
        "cid_record": dtls_header(25, 1, 9) + cid + struct.pack(">H", len(payload)) + payload,
        "application_data_epoch_1": app,
        "two_records": app + app,
        "alert_epoch_0": dtls_header(21, 0, 3) + struct.pack(">H", 2) + bytes([2, 40]),
        "change_cipher_spec": dtls_header(20, 0, 4) + struct.pack(">H", 1) + bytes([1]),
        "tls_not_dtls": bytes([22, 3, 3, 0, 4, 1, 0, 0, 0]) + bytes(8),
    }


def dtls_server_datagrams(pki: PKI) -> list[bytes]:
    """What `openssl s_server -dtls1_2` sends during a handshake with client certificates,
    relayed between it and `openssl s_client` (offering a suite and no extension that
    our client lacks, so our client gets as far as the certificate)."""
    relay, probe = udp_socket(), udp_socket()
    server_port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        ["openssl", "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{server_port}", "-quiet", "-no_ticket",
         "-cert", str(pki.server.cert), "-key", str(pki.server.key), "-CAfile", str(pki.ca_cert), "-Verify", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # s_server binds
    client = subprocess.Popen(
        ["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{relay.getsockname()[1]}", "-quiet",
         "-no_ticket", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305", "-cert", str(pki.client_a.cert),
         "-key", str(pki.client_a.key), "-CAfile", str(pki.ca_cert)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    sent_by_server, client_addr = [], None
    relay.settimeout(1.0)
    try:
        while True:
            try:
                data, addr = relay.recvfrom(65536)
            except socket.timeout:
                break  # the handshake is over
            if addr[1] == server_port:
                sent_by_server.append(data)
                relay.sendto(data, client_addr)
            else:
                client_addr = addr
                relay.sendto(data, ("127.0.0.1", server_port))
    finally:
        for p in (client, server):
            p.kill()
            p.wait()
        relay.close()
    return sent_by_server


def length_prefixed(datagrams: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(d)) + d for d in datagrams)


def dtls_engine_seeds(pki: PKI) -> dict[str, bytes]:
    datagrams = dtls_server_datagrams(pki)
    return {
        "openssl_server_flights": length_prefixed(datagrams),
        "hello_verify_request_only": length_prefixed(datagrams[:1]),
        "empty_datagram_then_flights": length_prefixed([b""] + datagrams),
    }


def write(target: str, seeds: dict[str, bytes]) -> None:
    directory = HERE / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for name, data in seeds.items():
        (directory / name).write_bytes(data)
        print(f"{target}/{name}: {len(data)} bytes")


def main(targets: list[str]) -> None:
    targets = targets or ["tls_engine", "dtls_engine", "dtls_record"]
    with tempfile.TemporaryDirectory(prefix="tunnel-seeds-") as tmp:
        pki = PKI(Path(tmp))
        if "tls_engine" in targets:
            write("tls_engine", tls_seeds(pki))
        if "dtls_engine" in targets:
            write("dtls_engine", dtls_engine_seeds(pki))
    if "dtls_record" in targets:
        write("dtls_record", dtls_seeds())


if __name__ == "__main__":
    main(sys.argv[1:])
