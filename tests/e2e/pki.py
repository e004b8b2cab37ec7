"""A throwaway PKI for the end-to-end tests, made fresh for every test session.

Everything is ECDSA P-256, written as PEM into a private temporary directory; private keys
are unencrypted PKCS#8 with mode 0600. Nothing here is ever used outside the tests.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Credential:
    """A certificate and its key on disk, plus the parsed certificate."""

    name: str
    cert: Path
    key: Path
    certificate: x509.Certificate

    @property
    def spki_sha256(self) -> str:
        return spki_sha256(self.certificate)


def spki_sha256(cert: x509.Certificate | Path | str) -> str:
    """SHA-256 (hex) of a certificate's DER SubjectPublicKeyInfo."""
    if not isinstance(cert, x509.Certificate):
        cert = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tunnel e2e tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


class _Authority:
    def __init__(self, directory: Path, cn: str, file_stem: str):
        self.key = _new_key()
        self.name = _name(cn)
        now = _now()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / f"{file_stem}.crt"
        self.key_path = directory / f"{file_stem}.key"
        _write_cert(self.cert_path, self.certificate)
        _write_key(self.key_path, self.key)

    def issue(
        self,
        directory: Path,
        stem: str,
        cn: str,
        sans: list[x509.GeneralName],
        eku: x509.ObjectIdentifier,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Credential:
        key = _new_key()
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(hours=1))
            .not_valid_after(not_after or now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
        return Credential(stem, cert_path, key_path, cert)


def _dns(name: str) -> x509.GeneralName:
    return x509.DNSName(name)


def _ip(addr: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(addr))


def _uri(uri: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(uri)


class PKI:
    """All the credentials the tests use, created under `directory`."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        d = self.dir
        server_eku = ExtendedKeyUsageOID.SERVER_AUTH
        client_eku = ExtendedKeyUsageOID.CLIENT_AUTH

        ca = _Authority(d, "tunnel e2e CA", "ca")
        self.ca_cert = ca.cert_path
        self.ca_key = ca.key_path
        self.ca_certificate = ca.certificate

        foreign = _Authority(d, "foreign CA", "foreign-ca")
        self.foreign_ca_cert = foreign.cert_path

        self.server = ca.issue(
            d, "server", "tunnel-out",
            [_dns("localhost"), _ip("127.0.0.1"), _ip("::1")], server_eku,
        )
        self.client_a = ca.issue(
            d, "client-a", "client-a",
            [_dns("client-a.test"), _uri("spiffe://test/client-a"), _ip("10.9.8.7")], client_eku,
        )
        self.client_b = ca.issue(
            d, "client-b", "client-b",
            [_dns("client-b.test"), _uri("spiffe://test/client-b"), _ip("10.9.8.8")], client_eku,
        )
        # Same names as client-a, but issued by a CA the tunnel does not trust.
        self.foreign_client = foreign.issue(
            d, "foreign-client", "client-a",
            [_dns("client-a.test"), _uri("spiffe://test/client-a"), _ip("10.9.8.7")], client_eku,
        )
        now = _now()
        self.expired_client = ca.issue(
            d, "expired-client", "client-a",
            [_dns("client-a.test"), _uri("spiffe://test/client-a"), _ip("10.9.8.7")], client_eku,
            not_before=now - datetime.timedelta(days=10),
            not_after=now - datetime.timedelta(days=2),
        )
        # A server certificate from the right CA whose names cover neither localhost nor
        # 127.0.0.1 / ::1.
        self.wrong_name_server = ca.issue(
            d, "wrong-name-server", "elsewhere.test",
            [_dns("elsewhere.test"), _ip("192.0.2.10")], server_eku,
        )
        # The hardening tests' certificate matrix: right CA, wrong in one way each.
        self.not_yet_valid_client = ca.issue(
            d, "not-yet-valid-client", "client-a",
            [_dns("client-a.test"), _uri("spiffe://test/client-a"), _ip("10.9.8.7")], client_eku,
            not_before=now + datetime.timedelta(days=2),
            not_after=now + datetime.timedelta(days=10),
        )
        self.server_eku_client = ca.issue(  # a client certificate with serverAuth only
            d, "server-eku-client", "client-a",
            [_dns("client-a.test"), _uri("spiffe://test/client-a"), _ip("10.9.8.7")], server_eku,
        )
        self.client_eku_server = ca.issue(  # a server certificate with clientAuth only
            d, "client-eku-server", "tunnel-out",
            [_dns("localhost"), _ip("127.0.0.1"), _ip("::1")], client_eku,
        )
        self.not_yet_valid_server = ca.issue(
            d, "not-yet-valid-server", "tunnel-out",
            [_dns("localhost"), _ip("127.0.0.1"), _ip("::1")], server_eku,
            not_before=now + datetime.timedelta(days=2),
            not_after=now + datetime.timedelta(days=10),
        )
        # A client whose names hold characters a log line must escape (quote, backslash,
        # tab, non-ASCII), to prove JSON log lines stay parseable whatever a peer presents.
        self.weird_client = ca.issue(
            d, "weird-client", 'we"ird\\name\t\u00e9\u00fc',
            [_dns("weird.test"), _uri('spiffe://test/"odd"\\path')], client_eku,
        )
        # TLS bridging: the legacy ends' own PKI, apart from the tunnel's.
        legacy = _Authority(d, "legacy CA", "legacy-ca")
        self.legacy_ca_cert = legacy.cert_path
        self.legacy_ca_key = legacy.key_path
        self.legacy_server = legacy.issue(
            d, "legacy-server", "legacy-db", [_dns("legacy-db.test"), _ip("127.0.0.1")], server_eku,
        )
        self.legacy_client = legacy.issue(d, "legacy-client", "legacy-app", [_dns("legacy-app.test")], client_eku)
