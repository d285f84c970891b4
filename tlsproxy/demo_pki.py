"""Throwaway certificates for ``tlsproxy demo``: two CAs (servers, clients), leaves signed by them,
written as PEM files into a directory the demo deletes afterwards.  EC P-256 throughout: fast to
make and accepted by every TLS stack the demo uses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DemoPki", "make_demo_pki"]


@dataclass(frozen=True, slots=True)
class DemoPki:
    server_ca: Path  # trust anchor clients use
    server_cert: Path  # localhost + 127.0.0.1, valid now; the file holds the chain (leaf, CA)
    server_key: Path
    expired_cert: Path  # localhost, expired yesterday
    expired_key: Path
    client_ca: Path  # trust anchor the server uses for client certificates
    client_cert: Path
    client_key: Path


def _name(cn: str, org: str = "tlsproxy demo") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(cn)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, *, client: bool,
          not_before: datetime, not_after: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                              else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> tuple[Path, Path | None]:
    cert_path = directory / f"{stem}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = None
    if key is not None:
        key_path = directory / f"{stem}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
    return cert_path, key_path


def make_demo_pki(directory: str | Path, *, now: datetime | None = None) -> DemoPki:
    directory = Path(directory)
    now = now or datetime.now(UTC)
    server_ca, server_ca_key = _ca("tlsproxy demo Server CA", now)
    client_ca, client_ca_key = _ca("tlsproxy demo Client CA", now)
    server, server_key = _leaf(server_ca, server_ca_key, "localhost", client=False,
                               not_before=now - timedelta(hours=1), not_after=now + timedelta(days=90))
    expired, expired_key = _leaf(server_ca, server_ca_key, "localhost", client=False,
                                 not_before=now - timedelta(days=20), not_after=now - timedelta(days=1))
    client, client_key = _leaf(client_ca, client_ca_key, "demo-client", client=True,
                               not_before=now - timedelta(hours=1), not_after=now + timedelta(days=90))
    sca, _ = _write(directory, "server-ca", server_ca, None)
    cca, _ = _write(directory, "client-ca", client_ca, None)
    sc, sk = _write(directory, "server", server, server_key)
    ec_, ek = _write(directory, "expired", expired, expired_key)
    cc, ck = _write(directory, "client", client, client_key)
    for leaf, ca in ((sc, server_ca), (ec_, server_ca), (cc, client_ca)):
        # Peers send their chain up to (and including) the demo CA.
        leaf.write_bytes(leaf.read_bytes() + ca.public_bytes(serialization.Encoding.PEM))
    assert sk and ek and ck
    return DemoPki(server_ca=sca, server_cert=sc, server_key=sk, expired_cert=ec_, expired_key=ek,
                   client_ca=cca, client_cert=cc, client_key=ck)
