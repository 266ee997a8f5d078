"""The sandbox certificate authority: a CA, server certificates for 127.0.0.1, and deliberately bad ones.

Everything is written under ``<state>/ca``; keys are mode 600. The CA is created once and reused, so a
CA bundle handed to clients stays valid across ``down``/``up``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CertKind = Literal["good", "expired", "wrong-host"]


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key on disk (PEM)."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pec-cutover sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class SandboxCA:
    """Creates (once) and uses the sandbox CA in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_cert_path = directory / "ca.pem"
        self.ca_key_path = directory / "ca.key"

    def ensure(self) -> None:
        """Create the CA, the server certificate set and the PEC signing certificate if missing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.ca_cert_path.exists() and self.ca_key_path.exists()):
            self._create_ca()
        for kind in ("good", "expired", "wrong-host"):
            pair = self.server_pair(kind)
            if not (pair.cert.exists() and pair.key.exists()):
                self._issue_server(kind, pair)
        signer = self.signer_pair()
        if not (signer.cert.exists() and signer.key.exists()):
            self._issue_signer(signer)

    def server_pair(self, kind: CertKind = "good") -> CertPair:
        stem = {"good": "server", "expired": "server-expired", "wrong-host": "server-wrong-host"}[kind]
        return CertPair(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")

    def signer_pair(self) -> CertPair:
        """The certificate the sandbox 'PEC provider' signs envelopes with (smime.p7s)."""
        return CertPair(self.directory / "pec-signer.pem", self.directory / "pec-signer.key")

    def _create_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("pec-cutover sandbox CA"))
            .issuer_name(_name("pec-cutover sandbox CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca_key_path, key)
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(self, pair: CertPair, common_name: str, sans: list[x509.GeneralName], *,
               not_before: dt.datetime, not_after: dt.datetime, eku: list[x509.ObjectIdentifier],
               rsa_key: bool = False) -> None:
        ca_key = _load_key(self.ca_key_path)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        # PEC providers sign with RSA; RSA PKCS#1 v1.5 signatures are also deterministic (reproducible seeds).
        key = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(pair.key, key)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue_server(self, kind: CertKind, pair: CertPair) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        good_sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        if kind == "expired":
            # Valid for the right host, but it ran out a month ago.
            self._issue(pair, "localhost", good_sans, not_before=now - dt.timedelta(days=400),
                        not_after=now - dt.timedelta(days=30), eku=[ExtendedKeyUsageOID.SERVER_AUTH])
        elif kind == "wrong-host":
            self._issue(pair, "webmail.example.invalid", [x509.DNSName("webmail.example.invalid")],
                        not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=825),
                        eku=[ExtendedKeyUsageOID.SERVER_AUTH])
        else:
            self._issue(pair, "localhost", good_sans, not_before=now - dt.timedelta(days=1),
                        not_after=now + dt.timedelta(days=825), eku=[ExtendedKeyUsageOID.SERVER_AUTH])

    def _issue_signer(self, pair: CertPair) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self._issue(pair, "Posta Certificata sandbox", [x509.RFC822Name("posta-certificata@pec.fnofi.it")],
                    not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=3650),
                    eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION], rsa_key=True)
