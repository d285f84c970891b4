"""Make real X.509 certificates for tests: CAs, intermediates, leaves, whole chains.

Everything is built with ``cryptography`` and signed for real, so the certificates load in Python's
``ssl``, in ``openssl`` and in ``cryptography``'s verifier.  The knobs are the ones the analysis
cares about: key type and size, signature hash (including SHA-1 and MD5, which ``cryptography``
refuses to sign with, so those are re-signed by hand below), validity window, SANs, CN-only,
extended key usage, key usage and basicConstraints.

Typical use::

    chain = make_chain("localhost")                 # root -> intermediate -> leaf, EC P-256
    paths = chain.write_pem(tmp_path)                # paths.cert, paths.key, paths.ca
    ctx.load_cert_chain(paths.cert, paths.key)

    root = make_ca("Test Root")
    leaf = make_leaf(root, "old.example", key="rsa1024", hash="sha1",
                     not_after=datetime.now(UTC) - timedelta(days=1))
    leaf.der                                         # bytes as a server would send them

Keys are generated fresh for every certificate (P-256 and Ed25519 are cheap; RSA-2048 costs a
few tens of milliseconds), so two CAs with the same name are still different CAs.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

__all__ = [
    "Chain",
    "ChainPaths",
    "Issued",
    "PemPaths",
    "PrivateKey",
    "make_ca",
    "make_chain",
    "make_key",
    "make_leaf",
    "make_self_signed",
]

PrivateKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
]

#: Key kinds accepted wherever a ``key=`` argument is taken (a private key object works too).
KEY_KINDS = (
    "rsa1024", "rsa2048", "rsa3072", "rsa4096",
    "p256", "p384", "p521", "p192",
    "ed25519", "ed448", "dsa1024", "dsa2048",
)
_KEY_ALIASES = {"rsa": "rsa2048", "ec": "p256", "ec256": "p256", "ec384": "p384"}

_EKU_NAMES = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
    "anyExtendedKeyUsage": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}

_KEY_USAGE_FLAGS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
    "sha1": hashes.SHA1(), "md5": hashes.MD5(),
}


def make_key(kind: str | PrivateKey = "p256") -> PrivateKey:
    """A fresh private key of ``kind`` (see ``KEY_KINDS``); a key object is returned unchanged."""
    if not isinstance(kind, str):
        return kind
    kind = _KEY_ALIASES.get(kind, kind)
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind.startswith("dsa"):
        return dsa.generate_private_key(key_size=int(kind[3:]))
    curves = {"p192": ec.SECP192R1, "p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}
    if kind in curves:
        return ec.generate_private_key(curves[kind]())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}; expected one of {KEY_KINDS}")


@dataclass(frozen=True, slots=True)
class PemPaths:
    """Where ``Issued.write_pem`` put the certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ChainPaths:
    """Files for a server or client: ``cert`` is leaf + intermediates (what ``load_cert_chain`` and
    ``openssl s_server -cert`` want), ``key`` the leaf key, ``ca`` the root alone (the trust anchor
    for the peer), ``fullchain`` leaf + intermediates + root."""

    cert: Path
    key: Path
    ca: Path
    fullchain: Path


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate together with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def name(self) -> x509.Name:
        """The subject, for use as an issuer name or for DN comparisons."""
        return self.cert.subject

    def write_pem(self, directory: Path | str, stem: str = "cert") -> PemPaths:
        """Write ``<stem>.pem`` and ``<stem>.key`` into ``directory`` and return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return PemPaths(cert=cert_path, key=key_path)


@dataclass(frozen=True, slots=True)
class Chain:
    """``root`` -> ``intermediates`` (top-down issuing order reversed: nearest the leaf first) -> ``leaf``."""

    leaf: Issued
    intermediates: tuple[Issued, ...]
    root: Issued

    @property
    def certs(self) -> tuple[Issued, ...]:
        """Leaf first, root last: the order a server sends (plus the root)."""
        return (self.leaf, *self.intermediates, self.root)

    def ders(self, *, include_root: bool = False) -> list[bytes]:
        """The DER certificates leaf first, as a server sends them (normally without the root)."""
        sent = (self.leaf, *self.intermediates, *((self.root,) if include_root else ()))
        return [c.der for c in sent]

    def write_pem(self, directory: Path | str, stem: str = "server") -> ChainPaths:
        """Write ``<stem>.pem`` (leaf + intermediates), ``<stem>.key``, ``<stem>-ca.pem`` (root) and
        ``<stem>-fullchain.pem`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = ChainPaths(
            cert=directory / f"{stem}.pem",
            key=directory / f"{stem}.key",
            ca=directory / f"{stem}-ca.pem",
            fullchain=directory / f"{stem}-fullchain.pem",
        )
        paths.cert.write_bytes(self.leaf.pem + b"".join(i.pem for i in self.intermediates))
        paths.key.write_bytes(self.leaf.key_pem)
        paths.key.chmod(0o600)
        paths.ca.write_bytes(self.root.pem)
        paths.fullchain.write_bytes(b"".join(c.pem for c in self.certs))
        return paths


def make_ca(
    name: str,
    *,
    issuer: Issued | None = None,
    key: str | PrivateKey = "p256",
    hash: str = "sha256",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    path_length: int | None = None,
    org: str | None = "tlsproxy tests",
    key_usage: Sequence[str] | None = ("key_cert_sign", "crl_sign", "digital_signature"),
) -> Issued:
    """A CA certificate named ``CN=name``: a self-signed root, or an intermediate when ``issuer``
    is given.  Validity defaults to a day ago .. ten years ahead."""
    now = datetime.now(UTC)
    return _issue(
        subject=_name(name, org),
        issuer=issuer,
        key=make_key(key),
        hash=hash,
        not_before=not_before or now - timedelta(days=1),
        not_after=not_after or now + timedelta(days=3650),
        sans=None,
        eku=None,
        key_usage=key_usage,
        basic_constraints=(True, path_length),
    )


def make_leaf(
    ca: Issued | None,
    cn: str | None,
    *,
    sans: Sequence[str] | None = None,
    key: str | PrivateKey = "p256",
    hash: str = "sha256",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    eku: Sequence[str] | None = ("serverAuth",),
    key_usage: Sequence[str] | None | str = "default",
    is_ca: bool | None = False,
    org: str | None = None,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> Issued:
    """An end-entity certificate issued by ``ca`` (self-signed when ``ca`` is None).

    ``sans`` defaults to ``[cn]``; entries that parse as IP addresses become iPAddress SANs, the
    rest dNSName SANs; pass ``sans=()`` for a CN-only certificate (no SAN extension).  ``cn=None``
    leaves the subject without a CN.  ``eku`` takes short names (``serverAuth``, ``clientAuth``,
    ...) or dotted OIDs; ``None`` omits the extension.  ``key_usage="default"`` means
    digital_signature (+ key_encipherment for RSA keys); ``None`` omits it.  ``is_ca=None`` omits
    basicConstraints.  Validity defaults to a day ago .. 90 days ahead.
    """
    now = datetime.now(UTC)
    private_key = make_key(key)
    if key_usage == "default":
        key_usage = ("digital_signature",)
        if isinstance(private_key, rsa.RSAPrivateKey):
            key_usage += ("key_encipherment",)
    if sans is None:
        sans = [cn] if cn else []
    return _issue(
        subject=_name(cn, org),
        issuer=ca,
        key=private_key,
        hash=hash,
        not_before=not_before or now - timedelta(days=1),
        not_after=not_after or now + timedelta(days=90),
        sans=list(sans),
        eku=eku,
        key_usage=key_usage,  # type: ignore[arg-type]
        basic_constraints=None if is_ca is None else (is_ca, None),
        extra_extensions=extra_extensions,
    )


def make_self_signed(cn: str, **leaf_kwargs: object) -> Issued:
    """A self-signed end-entity certificate (the "snake oil" case)."""
    return make_leaf(None, cn, **leaf_kwargs)  # type: ignore[arg-type]


def make_chain(
    cn: str = "localhost",
    *,
    intermediates: int = 1,
    root_name: str = "tlsproxy Test Root CA",
    ca_key: str | PrivateKey = "p256",
    **leaf_kwargs: object,
) -> Chain:
    """Root -> ``intermediates`` intermediate CAs -> leaf for ``cn`` (3 certificates by default).
    ``leaf_kwargs`` go to ``make_leaf`` (``sans``, ``key``, ``hash``, ``not_after``, ...)."""
    root = make_ca(root_name, key=ca_key)
    issuer, chain_cas = root, []
    for level in range(intermediates, 0, -1):
        issuer = make_ca(f"tlsproxy Test Intermediate CA {level}", issuer=issuer, key=ca_key)
        chain_cas.append(issuer)
    leaf = make_leaf(issuer, cn, **leaf_kwargs)  # type: ignore[arg-type]
    return Chain(leaf=leaf, intermediates=tuple(reversed(chain_cas)), root=root)


# -- internals ------------------------------------------------------------------------------------


def _name(cn: str | None, org: str | None) -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _issue(
    *,
    subject: x509.Name,
    issuer: Issued | None,
    key: PrivateKey,
    hash: str,
    not_before: datetime,
    not_after: datetime,
    sans: list[str] | None,
    eku: Sequence[str] | None,
    key_usage: Sequence[str] | None,
    basic_constraints: tuple[bool, int | None] | None,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> Issued:
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    # Like ``openssl req -x509``, self-signed certificates name their own key as the authority.
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
        critical=False,
    )
    if basic_constraints is not None:
        ca, path_length = basic_constraints
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_usage is not None:
        unknown = set(key_usage) - set(_KEY_USAGE_FLAGS)
        if unknown:
            raise ValueError(f"unknown key usage {sorted(unknown)}")
        flags = {flag: flag in key_usage for flag in _KEY_USAGE_FLAGS}
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if eku is not None:
        oids = [_EKU_NAMES.get(e) or ObjectIdentifier(e) for e in eku]
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=not subject
        )
    for extension, critical in extra_extensions:
        builder = builder.add_extension(extension, critical=critical)

    if isinstance(signer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return Issued(cert=builder.sign(signer_key, None), key=key)
    if hash not in _HASHES:
        raise ValueError(f"unknown hash {hash!r}; expected one of {sorted(_HASHES)}")
    if hash in ("sha1", "md5"):
        return Issued(cert=_sign_legacy(builder, signer_key, hash), key=key)
    return Issued(cert=builder.sign(signer_key, _HASHES[hash]), key=key)


# cryptography will not sign certificates with SHA-1 or MD5 any more, but servers still present
# such certificates, so we sign the TBSCertificate ourselves.  The AlgorithmIdentifier appears
# twice (inside the TBS and after it); both are swapped for the legacy one.
_ALG_IDS = {
    ("rsa", "sha256"): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", "sha1"): bytes.fromhex("300d06092a864886f70d0101050500"),
    ("rsa", "md5"): bytes.fromhex("300d06092a864886f70d0101040500"),
    ("ec", "sha256"): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ec", "sha1"): bytes.fromhex("300906072a8648ce3d0401"),
    ("dsa", "sha256"): bytes.fromhex("300b0609608648016503040302"),
    ("dsa", "sha1"): bytes.fromhex("300906072a8648ce380403"),
}


def _sign_legacy(builder: x509.CertificateBuilder, key: PrivateKey, hash: str) -> x509.Certificate:
    family = (
        "rsa" if isinstance(key, rsa.RSAPrivateKey)
        else "ec" if isinstance(key, ec.EllipticCurvePrivateKey)
        else "dsa" if isinstance(key, dsa.DSAPrivateKey)
        else None
    )
    if family is None or (family, hash) not in _ALG_IDS:
        raise ValueError(f"cannot sign with {hash} using a {type(key).__name__}")
    modern = builder.sign(key, hashes.SHA256())
    children = _der_children(modern.tbs_certificate_bytes)
    old, new = _ALG_IDS[(family, "sha256")], _ALG_IDS[(family, hash)]
    index = children.index(old)  # the signature field of TBSCertificate
    children[index] = new
    tbs = _der_tlv(0x30, b"".join(children))
    algorithm = _HASHES[hash]
    if family == "rsa":
        signature = key.sign(tbs, padding.PKCS1v15(), algorithm)  # type: ignore[union-attr, call-arg]
    elif family == "ec":
        signature = key.sign(tbs, ec.ECDSA(algorithm))  # type: ignore[union-attr, call-arg, arg-type]
    else:
        signature = key.sign(tbs, algorithm)  # type: ignore[union-attr, call-arg, arg-type]
    der = _der_tlv(0x30, tbs + new + _der_tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def _der_tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + length + content


def _der_children(der: bytes) -> list[bytes]:
    """The encoded elements directly inside a DER SEQUENCE (enough DER for our own output)."""

    def header(pos: int) -> tuple[int, int]:  # -> (content start, content length)
        first = der[pos + 1]
        if first < 0x80:
            return pos + 2, first
        count = first & 0x7F
        return pos + 2 + count, int.from_bytes(der[pos + 2 : pos + 2 + count], "big")

    start, length = header(0)
    children, pos, end = [], start, start + length
    while pos < end:
        content, size = header(pos)
        children.append(der[pos : content + size])
        pos = content + size
    return children
