"""Helpers for the certificate-and-trust tests (test_trust.py): issuing replacement
certificates from the session CA, CRLs, Kubernetes-style secret directories, PSK files,
and a direct TLS client that reports which certificate tunnel-out presented.

Builds on harness.py and pki.py without changing them.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import harness


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --------------------------------------------------------------------------------------
# Issuing from an existing CA


@dataclass
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> "Authority":
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        return cls(cert, key)


def new_ca(cn: str, not_before: datetime.datetime | None = None,
           not_after: datetime.datetime | None = None) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now() - datetime.timedelta(days=1))
        .not_valid_after(not_after or now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


@dataclass
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def issue(ca: Authority, cn: str, server: bool = True, days: float = 7,
          sans: list[x509.GeneralName] | None = None, starts_in: datetime.timedelta | None = None) -> Leaf:
    """A leaf signed by `ca`; server leaves get localhost / 127.0.0.1 / ::1 by default.
    `days` (negative: already expired) and `starts_in` (not valid yet) count from now."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    if sans is None:
        sans = ([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.IPAddress(ipaddress.ip_address("::1"))] if server else [x509.DNSName(f"{cn}.test")])
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() + starts_in if starts_in else now() - datetime.timedelta(days=max(1, -days + 1)))
        .not_valid_after(now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Leaf(cert, key)


def make_crl(ca: Authority, revoked_serials: list[int], der: bool = False,
             next_update: datetime.timedelta = datetime.timedelta(days=7),
             last_update: datetime.timedelta | None = None, signing_key=None) -> bytes:
    """A CRL in `ca`'s name; `last_update` (from now) and `signing_key` (another key than
    `ca`'s) make broken ones."""
    if last_update is None:
        last_update = min(-datetime.timedelta(minutes=5), next_update - datetime.timedelta(days=1))
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now() + last_update)
        .next_update(now() + next_update)
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now() - datetime.timedelta(minutes=1)).build()
        )
    crl = builder.sign(signing_key or ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


# --------------------------------------------------------------------------------------
# Replacing files the way operators and Kubernetes do


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write-then-rename: a reader sees the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class SecretDir:
    """A directory laid out like a mounted Kubernetes secret: tls.crt -> ..data/tls.crt,
    ..data -> ..<version>/; an update writes a new version directory and swaps ..data in
    one rename (the file names the program reads never change, and their mtimes may not)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.version = 0

    def publish(self, files: dict[str, bytes]) -> None:
        self.version += 1
        vdir = self.root / f"..v{self.version}"
        vdir.mkdir()
        for name, data in files.items():
            p = vdir / name
            p.write_bytes(data)
            os.chmod(p, 0o600 if name.endswith(".key") else 0o644)
            # Kubernetes keeps one timestamp for every version: the mtime tells nothing.
            os.utime(p, (1_000_000_000, 1_000_000_000))
        tmp_link = self.root / "..data_tmp"
        os.symlink(vdir.name, tmp_link)
        os.replace(tmp_link, self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)

    def path(self, name: str) -> Path:
        return self.root / name


def write_psk(path: Path, identity: str, key: bytes, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(f"{identity}:{key.hex()}\n")
    os.chmod(path, mode)
    return path


# --------------------------------------------------------------------------------------
# Talking to tunnel-out directly


def presented_serial(out_proc, client_cert: Path, client_key: Path, ca: Path,
                     timeout: float = 5.0) -> int:
    """Handshakes with tunnel-out as a TLS client and returns the serial of the certificate
    it presented (the connection is closed right after)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(str(ca))
    ctx.load_cert_chain(str(client_cert), str(client_key))
    ctx.check_hostname = False
    host, port = harness.split_address(out_proc.listen)
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


# --------------------------------------------------------------------------------------
# Load: connections opened continuously through tunnel-in


@dataclass
class LoadStats:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


class ConnectionLoad:
    """Threads that each open a connection through `address`, echo a small payload, close,
    and repeat until stopped; every failure is recorded with its reason."""

    def __init__(self, address, workers: int = 4, payload_size: int = 2048):
        self.address = address
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._size = payload_size
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> "ConnectionLoad":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> LoadStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        return self.stats

    def wait_ok(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.stats.ok >= n:
                    return
            time.sleep(0.02)
        raise AssertionError(f"load made only {self.stats.ok} connections; failures: {self.stats.failures[:5]}")

    def _run(self) -> None:
        while not self._stop.is_set():
            payload = os.urandom(self._size)
            try:
                got = harness.echo_roundtrip(self.address, payload, timeout=10)
                error = None if got == payload else f"echo mismatch ({len(got)} of {len(payload)} bytes)"
            except Exception as e:  # noqa: BLE001 - every failure counts
                error = f"{type(e).__name__}: {e}"
            with self._lock:
                if error:
                    self.stats.failures.append(error)
                else:
                    self.stats.ok += 1


class SlowTransfer:
    """One connection through `address` that sends `total` bytes in chunks with pauses, so
    it stays in flight across a reload; the echo must come back intact."""

    def __init__(self, address, total: int = 4 << 20, chunk: int = 64 << 10, pause: float = 0.02):
        self.address, self.total, self.chunk, self.pause = address, total, chunk, pause
        self.sent_digest = ""
        self.received: bytes | None = None
        self.error: Exception | None = None
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "SlowTransfer":
        self._thread.start()
        return self

    def _run(self) -> None:
        import hashlib
        try:
            with harness.connect(self.address, timeout=30) as s:
                received = []

                def reader():
                    received.append(harness.recv_all(s))

                r = threading.Thread(target=reader, daemon=True)
                r.start()
                h = hashlib.sha256()
                sent = 0
                while sent < self.total:
                    block = os.urandom(min(self.chunk, self.total - sent))
                    s.sendall(block)
                    h.update(block)
                    sent += len(block)
                    self.started.set()
                    time.sleep(self.pause)
                s.shutdown(socket.SHUT_WR)
                r.join(30)
                self.sent_digest = h.hexdigest()
                self.received = received[0] if received else None
        except Exception as e:  # noqa: BLE001
            self.error = e
            self.started.set()

    def join(self, timeout: float = 60) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "slow transfer did not finish"
        assert self.error is None, f"slow transfer failed: {self.error!r}"
        assert self.received is not None
        assert len(self.received) == self.total, f"got {len(self.received)} of {self.total} bytes"
        assert harness.sha256(self.received) == self.sent_digest, "in-flight transfer damaged"


# --------------------------------------------------------------------------------------
# A chain that is cheap to make and dear to check


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _int(v: int) -> bytes:
    return _der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))


_SHA256_RSA = _seq(bytes.fromhex("06092a864886f70d01010b"), b"\x05\x00")
_RSA_KEY = _seq(bytes.fromhex("06092a864886f70d010101"), b"\x05\x00")
_CA_TRUE = _der(0xa3, _seq(_seq(bytes.fromhex("0603551d13"), _der(0x01, b"\xff"), _der(0x04, _seq(_der(0x01, b"\xff"))))))


def _name(cn: str) -> bytes:
    return _seq(_der(0x31, _seq(bytes.fromhex("0603550403"), _der(0x0c, cn.encode()))))


def costly_chain(directory: Path, leaf_cn: str = "client-a", depth: int = 4) -> tuple[Path, Path]:
    """A client certificate chain nobody signed, whose `depth` intermediates carry RSA keys
    with an 8192-bit modulus and an 8190-bit public exponent (any odd numbers: no key is
    generated, no signature made). Each signature along it costs the verifier a full
    8192-bit exponentiation before the chain is found not to reach the CA. Returns the
    chain (PEM, leaf first) and the leaf's key."""
    import secrets
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = lambda t: _der(0x18, t.strftime("%Y%m%d%H%M%SZ").encode())
    validity = _seq(stamp(now - datetime.timedelta(days=1)), stamp(now + datetime.timedelta(days=1)))
    modulus = secrets.randbits(8192) | (1 << 8191) | 1
    signature = _der(0x03, b"\x00" + secrets.randbits(8000).to_bytes(1024, "big"))  # below the modulus

    def cert(serial: int, issuer: str, subject: str, spki: bytes, extensions: bytes = b"") -> bytes:
        tbs = _seq(_der(0xa0, _int(2)), _int(serial), _SHA256_RSA, _name(issuer), validity, _name(subject), spki,
                   extensions)
        return _seq(tbs, _SHA256_RSA, signature)

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_spki = leaf_key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    chain = [cert(1, "Costly 1", leaf_cn, leaf_spki)]
    for i in range(1, depth + 1):
        exponent = secrets.randbits(8190) | (1 << 8189) | 1
        spki = _seq(_RSA_KEY, _der(0x03, b"\x00" + _seq(_int(modulus), _int(exponent))))
        chain.append(cert(1 + i, f"Costly {i + 1}", f"Costly {i}", spki, _CA_TRUE))
    pem = b"".join(ssl.DER_cert_to_PEM_cert(c).encode() for c in chain)
    cert_path, key_path = directory / "costly-chain.pem", directory / "costly-chain.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return cert_path, key_path
