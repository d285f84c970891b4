"""DER certificates and distinguished names -> plain facts, via ``cryptography``.

Certificates seen on the wire are whatever servers send: expired, SHA-1 signed, with unknown key
types, duplicate or malformed extensions.  ``cryptography`` loads the outer structure eagerly but
decodes most fields lazily, and several accessors raise on their own (``signature_hash_algorithm``
for unknown OIDs, ``extensions`` after a successful load, ``public_key`` for unsupported
algorithms).  So every field is read under its own guard: one bad field becomes an entry in
``errors`` naming it, and the rest of the facts survive.  Nothing here raises on bad input.

Decoding is cached by DER bytes because a capture shows the same chain on thousands of connections.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives.asymmetric import dh, dsa, ec, ed448, ed25519, padding, rsa, x448, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

__all__ = [
    "DN_ATTRIBUTE_NAMES",
    "CertificateInfo",
    "certificate_to_dict",
    "decode_certificate",
    "decode_distinguished_name",
]

_T = TypeVar("_T")

# Both caches hold immutable results; 256 certificates covers the distinct chains of a busy capture
# while bounding memory to a few hundred KB of DER.  CA name lists (CertificateRequest) repeat too.
_CERT_CACHE_SIZE = 256
_DN_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateInfo:
    """What one X.509 certificate says, decoded defensively.

    Strings follow common tool output: RFC 4514 DNs, lowercase hex fingerprint and serial,
    OpenSSL short names for extended key usages.  ``version`` is the human number (1 or 3), not
    the encoded value.  ``is_ca``/``path_length`` are ``None`` without a basicConstraints
    extension.  ``errors`` lists ``"field: reason"`` for each field that could not be read;
    ``parse_error`` is set when the DER could not be loaded at all (then only ``der`` and
    ``sha256`` are meaningful).
    """

    der: bytes = field(repr=False)
    sha256: str
    subject: str | None = None
    issuer: str | None = None
    subject_cn: str | None = None
    serial: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    sans_dns: tuple[str, ...] = ()
    sans_ip: tuple[str, ...] = ()
    sans_other: tuple[str, ...] = ()
    key_type: str | None = None
    key_bits: int | None = None
    curve: str | None = None
    signature_hash: str | None = None
    signature_algorithm: str | None = None
    is_ca: bool | None = None
    path_length: int | None = None
    key_usage: tuple[str, ...] = ()
    extended_key_usage: tuple[str, ...] = ()
    self_signed: bool = False
    version: int | None = None
    errors: tuple[str, ...] = ()
    parse_error: str | None = None


def decode_certificate(der: bytes | bytearray | memoryview) -> CertificateInfo:
    """Decode one DER certificate.  Never raises; repeated DER is served from a bounded cache."""
    return _decode_certificate(bytes(der))


def decode_distinguished_name(der: bytes | bytearray | memoryview) -> str:
    """A DER ``Name`` (as listed in CertificateRequest ``certificate_authorities``) as an RFC 4514
    string, formatted exactly like ``CertificateInfo.subject``; ``"<undecodable DN: N bytes>"``
    when it cannot be read.  Never raises."""
    return _decode_distinguished_name(bytes(der))


def certificate_to_dict(info: CertificateInfo) -> dict[str, Any]:
    """A JSON-ready dict: no DER, datetimes as ISO 8601 with ``Z``, tuples as lists."""
    out: dict[str, Any] = {}
    for f in fields(info):
        if f.name == "der":
            continue
        value = getattr(info, f.name)
        if isinstance(value, datetime):
            value = value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


# -- certificate decoding ---------------------------------------------------------------------------


class _Errors:
    """Collects ``field: reason`` strings while each field is read under its own guard."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def guard(self, name: str, read: Callable[[], _T], default: _T) -> _T:
        try:
            return read()
        except Exception as exc:  # cryptography raises many types for malformed fields
            self.items.append(f"{name}: {_describe(exc)}")
            return default
        except BaseException as exc:
            # A Rust panic surfaces as pyo3's PanicException, which derives from BaseException.
            if not _is_panic(exc):
                raise
            self.items.append(f"{name}: decoder panic: {_describe(exc)}")
            return default


@lru_cache(maxsize=_CERT_CACHE_SIZE)
def _decode_certificate(der: bytes) -> CertificateInfo:
    # Old certificates trip cryptography's deprecation warnings (zero or negative serials);
    # they are facts about the certificate, not about our code, so keep them off the console.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return _decode(der)


def _decode(der: bytes) -> CertificateInfo:
    sha256 = hashlib.sha256(der).hexdigest()
    load = _Errors()
    cert = load.guard("certificate", lambda: x509.load_der_x509_certificate(der), None)
    if cert is None:
        reason = load.items[0].partition(": ")[2] if load.items else "not loadable"
        return CertificateInfo(der=der, sha256=sha256, parse_error=reason, errors=tuple(load.items))

    errs = _Errors()
    subject_name = errs.guard("subject", lambda: cert.subject, None)
    issuer_name = errs.guard("issuer", lambda: cert.issuer, None)
    subject = errs.guard("subject", lambda: _rfc4514(subject_name), None)
    issuer = errs.guard("issuer", lambda: _rfc4514(issuer_name), None)
    subject_cn = errs.guard("subject_cn", lambda: _common_name(subject_name), None)
    serial = errs.guard("serial", lambda: _hex_serial(cert.serial_number), None)
    not_before = errs.guard("not_before", lambda: cert.not_valid_before_utc, None)
    not_after = errs.guard("not_after", lambda: cert.not_valid_after_utc, None)
    version = errs.guard("version", lambda: {0: 1, 1: 2, 2: 3}[cert.version.value], None)
    public_key = errs.guard("public_key", cert.public_key, None)
    if public_key is not None:
        key_type, key_bits, curve = errs.guard("public_key", lambda: _key_facts(public_key), ("unknown", None, None))
    else:
        # The key itself is unreadable (unsupported algorithm or bad encoding); its OID may still say
        # what kind it is.
        oid = errs.guard("public_key_algorithm", lambda: cert.public_key_algorithm_oid.dotted_string, None)
        key_type, key_bits, curve = _KEY_TYPES_BY_OID.get(oid or "", "unknown"), None, None
        if key_type == "unknown" and oid:
            errs.items.append(f"key_type: unsupported public key algorithm {oid}")
    signature_algorithm = errs.guard("signature_algorithm", lambda: _oid_label(cert.signature_algorithm_oid), None)
    signature_hash = errs.guard("signature_hash", lambda: _signature_hash(cert), None)
    if signature_hash is None:
        signature_hash = _LEGACY_SIGNATURE_HASHES.get(signature_algorithm or "")

    sans_dns: tuple[str, ...] = ()
    sans_ip: tuple[str, ...] = ()
    sans_other: tuple[str, ...] = ()
    is_ca: bool | None = None
    path_length: int | None = None
    key_usage: tuple[str, ...] = ()
    eku: tuple[str, ...] = ()
    extensions = errs.guard("extensions", lambda: cert.extensions, None)
    if extensions is None:
        # cryptography rejects the whole extension list for one DER slip (real CAs have encoded
        # BasicConstraints cA=FALSE explicitly); the identity facts still matter, so read them
        # leniently from the raw TBS.  The error above stays, so the slip is still reported.
        tbs = errs.guard("tbs_certificate", lambda: cert.tbs_certificate_bytes, None)
        if tbs is not None:
            lenient = _lenient_extensions(tbs, errs)
            sans_dns, sans_ip, sans_other = lenient.sans
            is_ca, path_length = lenient.is_ca, lenient.path_length
            key_usage, eku = lenient.key_usage, lenient.eku
    else:
        for ext in extensions:
            value = ext.value
            if isinstance(value, x509.SubjectAlternativeName):
                sans_dns, sans_ip, sans_other = errs.guard(
                    "subject_alt_name", lambda v=value: _split_sans(v), ((), (), ()))
            elif isinstance(value, x509.BasicConstraints):
                is_ca, path_length = value.ca, value.path_length
            elif isinstance(value, x509.KeyUsage):
                key_usage = errs.guard("key_usage", lambda v=value: _key_usage_names(v), ())
            elif isinstance(value, x509.ExtendedKeyUsage):
                eku = tuple(_EKU_SHORT_NAMES.get(oid.dotted_string, oid.dotted_string) for oid in value)

    self_signed = False
    if subject_name is not None and issuer_name is not None and subject_name == issuer_name:
        self_signed = errs.guard("self_signed", lambda: _signed_by_own_key(cert, public_key), True)

    return CertificateInfo(
        der=der,
        sha256=sha256,
        subject=subject,
        issuer=issuer,
        subject_cn=subject_cn,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        sans_dns=sans_dns,
        sans_ip=sans_ip,
        sans_other=sans_other,
        key_type=key_type,
        key_bits=key_bits,
        curve=curve,
        signature_hash=signature_hash,
        signature_algorithm=signature_algorithm,
        is_ca=is_ca,
        path_length=path_length,
        key_usage=key_usage,
        extended_key_usage=eku,
        self_signed=self_signed,
        version=version,
        errors=tuple(dict.fromkeys(errs.items)),
    )


#: Attribute names that RFC 4514 lacks but OpenSSL (and so Zeek, Wireshark, people) print; without
#: them cryptography writes the dotted OID.  ``normalize_dn`` in analysis reads them back.
DN_ATTRIBUTE_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "title",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
    NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
    NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}


def _rfc4514(name: x509.Name | None) -> str | None:
    return None if name is None else name.rfc4514_string(DN_ATTRIBUTE_NAMES)


def _common_name(name: x509.Name | None) -> str | None:
    if name is None:
        return None
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    # RFC 6125 6.4.4: with several CNs the most specific (last) one is the identifier.
    value = values[-1].value
    return value if isinstance(value, str) else value.hex()


def _hex_serial(serial: int) -> str:
    return f"-{-serial:x}" if serial < 0 else f"{serial:x}"


def _key_facts(key: object) -> tuple[str, int | None, str | None]:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.key_size, key.curve.name
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, None
    if isinstance(key, dh.DHPublicKey):
        return "DH", key.key_size, None
    if isinstance(key, x25519.X25519PublicKey):
        return "X25519", 256, None
    if isinstance(key, x448.X448PublicKey):
        return "X448", 448, None
    return "unknown", None, None


_KEY_TYPES_BY_OID = {
    "1.2.840.113549.1.1.1": "RSA",  # rsaEncryption
    "1.2.840.113549.1.1.10": "RSA",  # id-RSASSA-PSS
    "1.2.840.10045.2.1": "EC",  # id-ecPublicKey
    "1.3.101.112": "Ed25519",
    "1.3.101.113": "Ed448",
    "1.2.840.10040.4.1": "DSA",
    "1.2.840.10046.2.1": "DH",  # dhpublicnumber (X9.42)
    "1.2.840.113549.1.3.1": "DH",  # dhKeyAgreement (PKCS #3)
}


def _oid_label(oid: ObjectIdentifier) -> str:
    """cryptography's name for an OID, or the dotted form when it has none."""
    name = getattr(oid, "_name", None)
    if not name or name.startswith("Unknown"):
        return oid.dotted_string
    return name


def _signature_hash(cert: x509.Certificate) -> str | None:
    algorithm = cert.signature_hash_algorithm  # None for Ed25519/Ed448; raises for unknown OIDs
    return None if algorithm is None else algorithm.name


# When cryptography does not know a signature OID's hash (md2, md4, ...), the name still says it.
_LEGACY_SIGNATURE_HASHES = {
    "1.2.840.113549.1.1.2": "md2",
    "1.2.840.113549.1.1.3": "md4",
    "md2WithRSAEncryption": "md2",
    "md4WithRSAEncryption": "md4",
    "md5WithRSAEncryption": "md5",
    "sha1WithRSAEncryption": "sha1",
    "1.3.14.3.2.29": "sha1",  # sha1WithRSASignature (OIW)
    "1.2.840.10045.4.1": "sha1",  # ecdsa-with-SHA1
    "1.2.840.10040.4.3": "sha1",  # dsa-with-sha1
}


def _split_sans(
    sans: x509.SubjectAlternativeName,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    dns: list[str] = []
    ips: list[str] = []
    other: list[str] = []
    for name in sans:
        if isinstance(name, x509.DNSName):
            dns.append(name.value)
        elif isinstance(name, x509.IPAddress):
            ips.append(str(name.value))
        elif isinstance(name, x509.RFC822Name):
            other.append(f"email:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            other.append(f"uri:{name.value}")
        elif isinstance(name, x509.DirectoryName):
            other.append(f"dirname:{name.value.rfc4514_string(DN_ATTRIBUTE_NAMES)}")
        elif isinstance(name, x509.RegisteredID):
            other.append(f"rid:{name.value.dotted_string}")
        elif isinstance(name, x509.OtherName):
            other.append(f"othername:{name.type_id.dotted_string}")
        else:
            other.append(f"{type(name).__name__}:{name.value!r}")
    return tuple(dns), tuple(ips), tuple(other)


_KEY_USAGE_FLAGS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)


def _key_usage_names(usage: x509.KeyUsage) -> tuple[str, ...]:
    names = [flag for flag in _KEY_USAGE_FLAGS if getattr(usage, flag)]
    # encipher_only / decipher_only raise unless key_agreement is set.
    if usage.key_agreement:
        names += [flag for flag in ("encipher_only", "decipher_only") if getattr(usage, flag)]
    return tuple(names)


# OpenSSL's short names, which is what people search for and what `openssl x509 -text` prints.
_EKU_SHORT_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH.dotted_string: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING.dotted_string: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION.dotted_string: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING.dotted_string: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING.dotted_string: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string: "anyExtendedKeyUsage",
    "1.3.6.1.5.5.7.3.17": "ipsecIKE",
    "1.3.6.1.4.1.311.20.2.2": "msSmartcardLogin",
    "1.3.6.1.4.1.311.10.3.3": "msSGC",  # Microsoft Server Gated Crypto
    "2.16.840.1.113730.4.1": "nsSGC",  # Netscape Server Gated Crypto
}


def _signed_by_own_key(cert: x509.Certificate, key: object) -> bool:
    """Whether the certificate's signature verifies with its own public key.

    ``verify_directly_issued_by`` refuses SHA-1/MD5 signatures, which old self-signed roots use,
    so the signature is checked with the key directly.  Raises when the algorithm is not one we
    can check; the caller then keeps the name-based answer and records why.
    """
    if key is None:
        raise ValueError("public key unreadable; judged by names only")
    signature, data = cert.signature, cert.tbs_certificate_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            pad = params if isinstance(params, (padding.PSS, padding.PKCS1v15)) else padding.PKCS1v15()
            key.verify(signature, data, pad, _hash_or_raise(cert))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_hash_or_raise(cert)))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, data, _hash_or_raise(cert))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        else:
            raise ValueError(f"cannot check signatures made with {type(key).__name__}; judged by names only")
    except InvalidSignature:
        return False
    return True


def _hash_or_raise(cert: x509.Certificate) -> Any:
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        raise ValueError("signature algorithm has no hash; judged by names only")
    return algorithm


# -- lenient extension reading -----------------------------------------------------------------------

_SAN_OID = "2.5.29.17"
_BASIC_CONSTRAINTS_OID = "2.5.29.19"
_KEY_USAGE_OID = "2.5.29.15"
_EKU_OID = "2.5.29.37"
_KEY_USAGE_BITS = _KEY_USAGE_FLAGS + ("encipher_only", "decipher_only")  # RFC 5280 bit order


@dataclass(slots=True)
class _LenientExtensions:
    sans: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ())
    is_ca: bool | None = None
    path_length: int | None = None
    key_usage: tuple[str, ...] = ()
    eku: tuple[str, ...] = ()


def _lenient_extensions(tbs: bytes, errs: _Errors) -> _LenientExtensions:
    """Read SAN, basicConstraints, keyUsage and extendedKeyUsage from a TBSCertificate with a
    forgiving DER walk (BER-ish slips such as encoded defaults are accepted).  Each extension that
    still cannot be read is recorded in ``errs`` under its own name."""
    out = _LenientExtensions()
    extensions = errs.guard("extensions_raw", lambda: _raw_extensions(tbs), [])
    for oid, value in extensions:
        if oid == _SAN_OID:
            out.sans = errs.guard("subject_alt_name", lambda v=value: _lenient_sans(v), ((), (), ()))
        elif oid == _BASIC_CONSTRAINTS_OID:
            out.is_ca, out.path_length = errs.guard(
                "basic_constraints", lambda v=value: _lenient_basic_constraints(v), (None, None))
        elif oid == _KEY_USAGE_OID:
            out.key_usage = errs.guard("key_usage", lambda v=value: _lenient_key_usage(v), ())
        elif oid == _EKU_OID:
            out.eku = errs.guard("extended_key_usage", lambda v=value: tuple(
                _EKU_SHORT_NAMES.get(o, o) for o in (_oid_text(c) for c in _children(v, 0x30))), ())
    return out


def _raw_extensions(tbs: bytes) -> list[tuple[str, bytes]]:
    """(OID, extnValue contents) for each Extension in a TBSCertificate's [3] field."""
    (tag, body), = _elements(tbs)
    if tag != 0x30:
        raise ValueError("TBSCertificate is not a SEQUENCE")
    found = []
    for tag, content in _elements(body):
        if tag != 0xA3:  # [3] EXPLICIT Extensions
            continue
        for extension in _children(content, 0x30):
            parts = _elements(extension)
            if len(parts) < 2 or parts[0][0] != 0x06 or parts[-1][0] != 0x04:
                raise ValueError("Extension is not {extnID, critical?, extnValue}")
            found.append((_oid_text(parts[0][1]), parts[-1][1]))
    return found


def _lenient_sans(value: bytes) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    dns: list[str] = []
    ips: list[str] = []
    other: list[str] = []
    (tag, body), = _elements(value)
    for tag, content in _elements(body):
        if tag == 0x82:  # dNSName
            dns.append(content.decode("ascii", "backslashreplace"))
        elif tag == 0x87 and len(content) in (4, 16):  # iPAddress
            ips.append(str(ipaddress.ip_address(content)))
        elif tag == 0x81:
            other.append(f"email:{content.decode('ascii', 'backslashreplace')}")
        elif tag == 0x86:
            other.append(f"uri:{content.decode('ascii', 'backslashreplace')}")
        elif tag == 0xA0 and content[:1] == b"\x06":
            other.append(f"othername:{_oid_text(_elements(content)[0][1])}")
        elif tag == 0x88:
            other.append(f"rid:{_oid_text(content)}")
        else:
            other.append(f"tag{tag:#04x}:{content.hex()}")
    return tuple(dns), tuple(ips), tuple(other)


def _lenient_basic_constraints(value: bytes) -> tuple[bool, int | None]:
    (tag, body), = _elements(value)
    ca, path_length = False, None
    for tag, content in _elements(body):
        if tag == 0x01:
            ca = any(content)
        elif tag == 0x02:
            path_length = int.from_bytes(content, "big", signed=True)
    return ca, path_length


def _lenient_key_usage(value: bytes) -> tuple[str, ...]:
    (tag, body), = _elements(value)
    if tag != 0x03 or not body:
        raise ValueError("keyUsage is not a BIT STRING")
    bits = body[1:]
    return tuple(
        name for i, name in enumerate(_KEY_USAGE_BITS)
        if i // 8 < len(bits) and bits[i // 8] & (0x80 >> (i % 8))
    )


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    """Split concatenated DER TLVs (low-tag-number form, definite lengths) into (tag, contents)."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError(f"truncated TLV header at offset {pos}")
        tag, first = data[pos], data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + count > len(data):
                raise ValueError(f"unsupported length encoding at offset {pos - 1}")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise ValueError(f"TLV at offset {pos} overruns its container")
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def _children(data: bytes, expected_tag: int) -> list[bytes]:
    """The contents of the elements inside one constructed element with ``expected_tag``."""
    (tag, body), = _elements(data)
    if tag != expected_tag:
        raise ValueError(f"expected tag {expected_tag:#04x}, found {tag:#04x}")
    return [content for _, content in _elements(body)]


def _oid_text(content: bytes) -> str:
    if not content:
        raise ValueError("empty OBJECT IDENTIFIER")
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if content[-1] & 0x80:
        raise ValueError("truncated OBJECT IDENTIFIER")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


# -- distinguished names ------------------------------------------------------------------------------

# cryptography has no public loader for a bare Name, but it parses the issuer of a CRL exactly as
# it parses a certificate's subject.  Wrapping the Name in the smallest well-formed CRL therefore
# gives byte-for-byte the same RFC 4514 formatting as CertificateInfo.subject/issuer, which is what
# lets analysis compare CertificateRequest CA names with certificate issuers.
_CRL_ALG = bytes.fromhex("300d06092a864886f70d01010b0500")  # sha256WithRSAEncryption; never verified
_CRL_THIS_UPDATE = b"\x17\x0d700101000000Z"  # UTCTime 1970-01-01


@lru_cache(maxsize=_DN_CACHE_SIZE)
def _decode_distinguished_name(der: bytes) -> str:
    undecodable = f"<undecodable DN: {len(der)} bytes>"
    if not _is_one_sequence(der):
        return undecodable
    tbs = _der_tlv(0x30, _CRL_ALG + der + _CRL_THIS_UPDATE)
    crl_der = _der_tlv(0x30, tbs + _CRL_ALG + b"\x03\x01\x00")
    errs = _Errors()
    name = errs.guard("name", lambda: x509.load_der_x509_crl(crl_der).issuer.rfc4514_string(DN_ATTRIBUTE_NAMES), None)
    return undecodable if name is None else name


def _is_one_sequence(der: bytes) -> bool:
    """Whether ``der`` is exactly one DER SEQUENCE TLV (no trailing bytes, definite length)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return 2 + first == len(der)
    count = first & 0x7F
    if count == 0 or count > 4 or len(der) < 2 + count:
        return False
    return 2 + count + int.from_bytes(der[2 : 2 + count], "big") == len(der)


def _der_tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + content


# -- helpers ----------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _is_panic(exc: BaseException) -> bool:
    return type(exc).__name__ == "PanicException"


# -- reading RFC 4514 strings back ---------------------------------------------------------------

_DN_ESCAPE = re.compile(r"\\([0-9a-fA-F]{2}|.)")


def parse_dn(text: str) -> list[list[tuple[str, str]]] | None:
    """RFC 4514 text (as this module writes it) back to RDNs of ``(type, escaped value)``, in
    order, multi-valued RDNs kept together; ``None`` when it does not parse.  Used to compare DNs
    and to rewrite them attribute by attribute."""
    rdns: list[list[tuple[str, str]]] = [[]]
    current: list[str] = []
    escaped = False

    def end_attribute() -> bool:
        kind, sep, value = "".join(current).partition("=")
        if not sep or not kind.strip():
            return False
        rdns[-1].append((kind.strip(), value))
        current.clear()
        return True

    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char in ",+":
            if not end_attribute():
                return None
            if char == ",":
                rdns.append([])
        else:
            current.append(char)
    if escaped or not end_attribute():
        return None
    return rdns


def unescape_dn_value(value: str) -> str:
    """RFC 4514 escapes to characters; ``\\C3\\B6`` hex pairs are UTF-8 bytes."""
    if "\\" not in value:
        return value
    raw = bytearray()
    pos = 0
    for match in _DN_ESCAPE.finditer(value):
        raw += value[pos : match.start()].encode()
        token = match.group(1)
        raw += bytes.fromhex(token) if len(token) == 2 else token.encode()
        pos = match.end()
    raw += value[pos:].encode()
    return raw.decode("utf-8", "replace")
