"""A throwaway certificate authority for servers the platform runs itself where no real
CA is (local mode's slapd, the rehearsal's FreeIPA and ALB): EC P-256, a week long."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LIFETIME = datetime.timedelta(days=7)
_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class ServerFiles:
    certificate: Path
    key: Path


class CertificateAuthority:
    """A CA key and self-signed certificate, kept in memory; issues server certificates."""

    def __init__(self, common_name: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name).issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(_PEM).decode()

    def write_certificate(self, path: Path) -> Path:
        path.write_text(self.pem)
        return path

    def issue(self, directory: Path, name: str, hosts: list[str]) -> ServerFiles:
        """A server certificate for ``hosts`` (DNS names or IP addresses) in
        ``directory``: ``<name>.crt`` and ``<name>.key`` (0600)."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        files = ServerFiles(directory / f"{name}.crt", directory / f"{name}.key")
        files.certificate.write_bytes(cert.public_bytes(_PEM))
        files.key.touch(mode=0o600)
        files.key.write_bytes(key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        return files
