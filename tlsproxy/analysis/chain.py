"""Checks over certificate chains as a peer presented them.

The functions take ``CertificateInfo`` values (or DER for ``verify_chain``) plus the time to judge
by, and return small frozen values with a stable ``code`` and a sentence for people; the rules
module turns those into findings.  Nothing here reads clocks or files: the trust anchors come in as
PEM bytes (a front end reads the system's with ``tlsproxy.frontends.trust.load_system_trust``).

Codes returned (``ChainProblem.code``):

``cert_expired``, ``cert_not_yet_valid``, ``cert_expiring_soon``, ``cert_validity_inverted``,
``cert_validity_unknown`` (validity_problems);
``chain_empty``, ``cert_undecodable``, ``chain_duplicate``, ``chain_misordered``,
``chain_unrelated_certificate``, ``chain_extra_after_root``, ``chain_missing_intermediate``,
``chain_self_signed`` (chain_order_problems);
``weak_rsa_key``, ``weak_ec_key``, ``dsa_key`` (weak_key); ``weak_signature_hash`` (weak_signature);
``serial_negative`` (serial_problem).

``VerifyResult.code``: ``verified``, ``hostname_mismatch``, ``no_subject_alt_name``, ``expired``,
``not_yet_valid``, ``untrusted_issuer``, ``forbidden_signature_algorithm``, ``weak_issuer_key``, ``wrong_key_usage``,
``invalid_extension``, ``chain_too_long``, ``verification_failed``, ``no_certificates``,
``undecodable_certificate``, ``invalid_hostname``, ``no_trust_store``, ``no_trust_anchors``.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification

from tlsproxy.wire.certs import (
    DN_ATTRIBUTE_NAMES,
    CertificateInfo,
    decode_certificate,
    parse_dn,
    unescape_dn_value,
)

__all__ = [
    "EXPIRY_WARNING",
    "ChainProblem",
    "HostnameMatch",
    "VerifyResult",
    "chain_order_problems",
    "chains_to_any",
    "hostname_matches",
    "hostname_matches_names",
    "normalize_dn",
    "serial_problem",
    "validity_problems",
    "verify_chain",
    "weak_key",
    "weak_signature",
]

#: How close to notAfter a certificate must be for ``cert_expiring_soon``.
EXPIRY_WARNING = timedelta(days=30)

_MIN_RSA_BITS = 2048  # NIST SP 800-131A / CA/Browser Forum baseline minimum
_MIN_EC_BITS = 224  # NIST SP 800-57 floor for elliptic curves (P-192 and smaller fall below)
_WEAK_HASHES = {"md2": "MD2", "md4": "MD4", "md5": "MD5", "sha1": "SHA-1"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainProblem:
    """One thing wrong with a certificate or chain.  ``index`` is the position in the chain as
    sent (0 = leaf) when the problem is about one certificate."""

    code: str
    message: str
    index: int | None = None


class HostnameMatch(NamedTuple):
    """Whether a name matched, and through what: ``"san"``, ``"cn"`` (legacy fallback) or None."""

    matches: bool
    via: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """Outcome of ``verify_chain``.  ``path`` lists the SHA-256 fingerprints of the verified path
    from leaf to trust anchor when ``ok``."""

    ok: bool
    code: str
    reason: str
    path: tuple[str, ...] = ()


# -- validity --------------------------------------------------------------------------------------


def validity_problems(
    info: CertificateInfo,
    now: datetime,
    *,
    index: int | None = None,
    warn_within: timedelta = EXPIRY_WARNING,
) -> tuple[ChainProblem, ...]:
    """Expired, not yet valid (saying by how much) or expiring within ``warn_within``.

    ``now`` is the time to judge by (the capture's packet time for offline analysis); a naive
    datetime is taken as UTC.
    """
    if info.parse_error is not None:
        return ()
    now = _aware(now)
    start, end = info.not_before, info.not_after
    if start is None or end is None:
        return (ChainProblem(code="cert_validity_unknown",
                             message=f"{_who(info, index)}: the validity period could not be read", index=index),)
    if start <= now <= end and end - now > warn_within and start <= end:
        return ()  # the common case, decided before formatting any name
    who = _who(info, index)
    problems = []
    if end < start:
        problems.append(ChainProblem(
            code="cert_validity_inverted",
            message=f"{who}: notAfter {_when(end)} is before notBefore {_when(start)}", index=index))
    if now > end:
        problems.append(ChainProblem(
            code="cert_expired",
            message=f"{who} expired {_span(now - end)} ago (notAfter {_when(end)})", index=index))
    elif now < start:
        problems.append(ChainProblem(
            code="cert_not_yet_valid",
            message=f"{who} is not valid for another {_span(start - now)} (notBefore {_when(start)}); "
                    "check the clocks", index=index))
    elif end - now <= warn_within:
        problems.append(ChainProblem(
            code="cert_expiring_soon",
            message=f"{who} expires in {_span(end - now)} (notAfter {_when(end)})", index=index))
    return tuple(problems)


# -- names -----------------------------------------------------------------------------------------


def hostname_matches(info: CertificateInfo, host: str) -> HostnameMatch:
    """Match ``host`` against the certificate the way RFC 6125 says a client should.

    IP addresses match only iPAddress SANs.  DNS names match dNSName SANs; the subject CN is
    consulted only when the certificate has no DNS, URI or SRV identifiers (a legacy fallback
    browsers have dropped, hence ``via="cn"``).  Comparison is case-insensitive and ignores a
    trailing dot.  A wildcard is honoured only as the whole left-most label, matches exactly one
    non-empty label, and needs at least two labels after it (``*.com`` matches nothing).
    Internationalised names are compared as given: pass A-labels (``xn--...``).
    """
    # Every connection to a host checks the same name against the same certificate: cached by the
    # only fields the answer depends on.
    return hostname_matches_names(host, info.sans_ip, info.sans_dns, info.sans_other, info.subject_cn)


@lru_cache(maxsize=1024)
def hostname_matches_names(host: str, sans_ip: tuple[str, ...], sans_dns: tuple[str, ...],
                           sans_other: tuple[str, ...], subject_cn: str | None) -> HostnameMatch:
    """:func:`hostname_matches` from the certificate's names alone (cached by them)."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = _ip(host)
    if address is not None:
        matched = any(_ip(san) == address for san in sans_ip)
        return HostnameMatch(matched, "san" if matched else None)
    name = host.rstrip(".").lower()
    if not name:
        return HostnameMatch(False, None)
    if sans_dns or any(o.startswith(_CN_BLOCKING_SANS) for o in sans_other):
        matched = any(_dns_name_matches(pattern, name) for pattern in sans_dns)
        return HostnameMatch(matched, "san" if matched else None)
    if subject_cn and _dns_name_matches(subject_cn, name):
        return HostnameMatch(True, "cn")
    return HostnameMatch(False, None)


# URI-ID and SRV-ID (id-on-dnsSRV) also rule out the CN fallback (RFC 6125 section 6.4.4).
_CN_BLOCKING_SANS = ("uri:", "othername:1.3.6.1.5.5.7.8.7")


def _dns_name_matches(pattern: str, name: str) -> bool:
    pattern = pattern.strip().rstrip(".").lower()
    if not pattern:
        return False
    if "*" not in pattern:
        return pattern == name
    pattern_labels, name_labels = pattern.split("."), name.split(".")
    if pattern_labels[0] != "*" or any("*" in label for label in pattern_labels[1:]):
        return False  # partial ("w*.example") or non-left-most wildcards are not honoured
    if len(pattern_labels) < 3 or len(pattern_labels) != len(name_labels):
        return False
    return bool(name_labels[0]) and pattern_labels[1:] == name_labels[1:]


def normalize_dn(dn: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """A comparison key for an RFC 4514 string: attribute types by OID, values case-folded with
    runs of white space collapsed (RFC 5280 section 7.1's simplified matching), the attributes of
    a multi-valued RDN in a fixed order.  Strings that do not parse fall back to a case-folded,
    space-collapsed copy of the whole text."""
    return _normalize_dn(dn)


# Attribute type names -> OIDs, matched case-insensitively (RFC 4514 section 3 names plus the
# OpenSSL names certs.py prints).
_DN_TYPES = {
    "cn": "2.5.4.3", "c": "2.5.4.6", "l": "2.5.4.7", "st": "2.5.4.8", "street": "2.5.4.9",
    "o": "2.5.4.10", "ou": "2.5.4.11", "dc": "0.9.2342.19200300.100.1.25",
    "uid": "0.9.2342.19200300.100.1.1",
    **{name.lower(): oid.dotted_string for oid, name in DN_ATTRIBUTE_NAMES.items()},
}


@lru_cache(maxsize=1024)
def _normalize_dn(dn: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    parsed = parse_dn(dn) if dn.strip() else []
    if parsed is None:
        return ((("", _fold(dn)),),)
    rdns = []
    for rdn in parsed:
        attrs = []
        for kind, value in rdn:
            kind = kind.lower()
            attrs.append((_DN_TYPES.get(kind, kind.removeprefix("oid.")), _fold(unescape_dn_value(value.strip()))))
        rdns.append(tuple(sorted(attrs)))
    return tuple(rdns)


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def chains_to_any(chain: Sequence[CertificateInfo], ca_names: Sequence[str]) -> bool:
    """Whether any certificate in ``chain`` is one of ``ca_names`` or was issued by one of them.

    ``ca_names`` are RFC 4514 strings (as ``decode_distinguished_name`` gives for a
    CertificateRequest's ``certificate_authorities``); names are compared with ``normalize_dn``.
    An empty ``ca_names`` gives False: TLS reads an empty list as "any CA", which the caller
    must decide on.
    """
    wanted = {normalize_dn(name) for name in ca_names} - {()}
    if not wanted:
        return False
    for info in chain:
        for dn in (info.issuer, info.subject):
            if dn is not None and normalize_dn(dn) in wanted:
                return True
    return False


# -- chain shape -----------------------------------------------------------------------------------


def chain_order_problems(chain: Sequence[CertificateInfo]) -> tuple[ChainProblem, ...]:
    """Problems with how the chain was assembled, judged by names alone (no trust store).

    Each certificate should be issued by the one after it (RFC 5246 section 7.4.2; TLS 1.3
    tolerates disorder but still wants the leaf first).  The root may be left out; a chain that
    ends at a non-CA certificate whose issuer was not sent is either a forgotten intermediate or a
    leaf issued directly by a root the peer holds (private PKIs, client certificates): the caller
    tells them apart with path validation or the CertificateRequest's CA names.
    """
    if not chain:
        return (ChainProblem(code="chain_empty", message="the peer sent an empty certificate chain"),)
    problems: list[ChainProblem] = []
    first_seen: dict[str, int] = {}
    unique: list[tuple[int, CertificateInfo]] = []
    for index, info in enumerate(chain):
        if info.parse_error is not None:
            problems.append(ChainProblem(
                code="cert_undecodable",
                message=f"certificate {index} could not be decoded: {info.parse_error}", index=index))
        if info.sha256 in first_seen:
            problems.append(ChainProblem(
                code="chain_duplicate",
                message=f"{_who(info, index)} is sent again (same as certificate {first_seen[info.sha256]})",
                index=index))
            continue
        first_seen[info.sha256] = index
        unique.append((index, info))

    readable = [(i, c) for i, c in unique if c.subject is not None and c.issuer is not None]
    subjects: dict[tuple, list[int]] = {}
    for index, info in readable:
        subjects.setdefault(normalize_dn(info.subject), []).append(index)  # type: ignore[arg-type]

    for (index, info), (next_index, following) in zip(readable, readable[1:]):
        issuer_key = normalize_dn(info.issuer)  # type: ignore[arg-type]
        if issuer_key == normalize_dn(following.subject):  # type: ignore[arg-type]
            continue
        elsewhere = [i for i in subjects.get(issuer_key, []) if i not in (index, next_index)]
        reversed_link = normalize_dn(following.issuer) == normalize_dn(info.subject)  # type: ignore[arg-type]
        if elsewhere or reversed_link:
            if elsewhere:
                how = f"is issued by certificate {elsewhere[0]}, not by the one after it"
            else:
                how = f"is followed by certificate {next_index}, which it issued"
            problems.append(ChainProblem(
                code="chain_misordered",
                message=f"{_who(info, index)} {how}: the chain is out of order",
                index=index))
        elif info.self_signed:
            problems.append(ChainProblem(
                code="chain_extra_after_root",
                message=f"certificates after the self-signed {_who(info, index)} are not part of its path",
                index=next_index))
        else:
            problems.append(ChainProblem(
                code="chain_unrelated_certificate",
                message=f"{_who(following, next_index)} did not issue {_who(info, index)} "
                        f"(which names {info.issuer} as issuer)",
                index=next_index))

    end_index, end = _path_end(readable)
    if end is None:
        return tuple(problems)
    if end.self_signed:
        if end_index == readable[0][0]:
            problems.append(ChainProblem(
                code="chain_self_signed",
                message=f"{_who(end, end_index)} is self-signed: only a client that pins it will accept it",
                index=end_index))
    elif end.is_ca is not True:
        problems.append(ChainProblem(
            code="chain_missing_intermediate",
            message=f"the chain ends at {_who(end, end_index)}, which is not a CA certificate, and its issuer "
                    f"{end.issuer} was not sent",
            index=end_index))
    return tuple(problems)


def _path_end(readable: list[tuple[int, CertificateInfo]]) -> tuple[int, CertificateInfo | None]:
    """Follow issuer -> subject links from the first certificate through the ones sent, in any
    order, and return where the path stops."""
    if not readable:
        return -1, None
    by_subject: dict[tuple, tuple[int, CertificateInfo]] = {}
    for index, info in readable:
        by_subject.setdefault(normalize_dn(info.subject), (index, info))  # type: ignore[arg-type]
    index, current = readable[0]
    visited = {index}
    while not current.self_signed:
        step = by_subject.get(normalize_dn(current.issuer))  # type: ignore[arg-type]
        if step is None or step[0] in visited:
            break
        index, current = step
        visited.add(index)
    return index, current


# -- algorithms ------------------------------------------------------------------------------------


def weak_key(info: CertificateInfo, *, index: int | None = None) -> ChainProblem | None:
    """RSA keys under 2048 bits, EC keys under 224 bits, and any DSA key."""
    bits = info.key_bits
    if info.key_type == "RSA" and bits is not None and bits < _MIN_RSA_BITS:
        return ChainProblem(code="weak_rsa_key",
                            message=f"{_who(info, index)} has a {bits}-bit RSA key (minimum {_MIN_RSA_BITS})",
                            index=index)
    if info.key_type == "EC" and bits is not None and bits < _MIN_EC_BITS:
        curve = f" ({info.curve})" if info.curve else ""
        return ChainProblem(code="weak_ec_key",
                            message=f"{_who(info, index)} has a {bits}-bit EC key{curve} (minimum {_MIN_EC_BITS})",
                            index=index)
    if info.key_type == "DSA":
        return ChainProblem(code="dsa_key",
                            message=f"{_who(info, index)} has a DSA key, which TLS 1.3 and current clients do not accept",
                            index=index)
    return None


def weak_signature(
    info: CertificateInfo, *, index: int | None = None, include_roots: bool = False
) -> ChainProblem | None:
    """A signature made with MD2/MD4/MD5/SHA-1.

    Self-signed CA certificates are skipped unless ``include_roots``: a trust anchor's own
    signature is never checked, so its hash does not weaken anything.
    """
    name = _WEAK_HASHES.get(info.signature_hash or "")
    if name is None or (info.self_signed and info.is_ca and not include_roots):
        return None
    return ChainProblem(code="weak_signature_hash",
                        message=f"{_who(info, index)} is signed with {name} ({info.signature_algorithm})",
                        index=index)


def serial_problem(info: CertificateInfo, *, index: int | None = None) -> ChainProblem | None:
    """A negative serial number, which RFC 5280 (4.1.2.2) forbids.  Most TLS stacks accept it, but
    Go (since 1.23) refuses to parse it, so the same chain works with curl and fails from a Go
    client.  A zero serial, as some long-trusted roots have, is left alone: no common client
    refuses it."""
    serial = info.serial
    if serial is None or not serial.startswith("-"):
        return None
    return ChainProblem(code="serial_negative",
                        message=f"{_who(info, index)} has a negative serial number (-0x{serial[1:]}); Go clients "
                                f"since 1.23 refuse to parse it (\"x509: negative serial number\")",
                        index=index)


# -- verification ----------------------------------------------------------------------------------


def verify_chain(
    chain_ders: Sequence[bytes],
    host: str | None,
    now: datetime,
    trust_pems: bytes | None,
    *,
    client: bool = False,
) -> VerifyResult:
    """Path-validate a chain as sent (leaf first) with cryptography's web PKI verifier.

    ``trust_pems`` are the trust anchors as concatenated PEM (``tlsproxy.frontends.trust.load_system_trust()`` for the
    system store); ``None`` means the caller has none, and the result says so.  With
    ``client=True`` the chain is checked as a TLS client certificate (clientAuth usage, no name);
    with ``host=None`` a server chain is checked without a name (and without end-entity
    extension rules).  Never raises.
    """
    if not chain_ders:
        return VerifyResult(ok=False, code="no_certificates", reason="no certificates were presented")
    if trust_pems is None:
        return VerifyResult(ok=False, code="no_trust_store",
                            reason="no trust anchors were given, so the chain was not verified")
    store, anchor_count = _store(bytes(trust_pems))
    if store is None:
        return VerifyResult(ok=False, code="no_trust_anchors",
                            reason="the trust bundle holds no usable certificates")
    try:
        with warnings.catch_warnings():  # zero or negative serials: a fact about the certificate, not for stderr
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certs = [x509.load_der_x509_certificate(bytes(der)) for der in chain_ders]
    except Exception as exc:
        return VerifyResult(ok=False, code="undecodable_certificate",
                            reason=f"a certificate could not be loaded: {exc}")
    try:
        builder = verification.PolicyBuilder().store(store).time(_aware(now))
        leaf, intermediates = certs[0], certs[1:]
        if client:
            verified = builder.build_client_verifier().verify(leaf, intermediates).chain
            what = "client certificate chain"
        elif host is None:
            builder = builder.extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
            verified = builder.build_client_verifier().verify(leaf, intermediates).chain
            what = "chain (no hostname checked)"
        else:
            subject = _verification_subject(host)
            if subject is None:
                return VerifyResult(ok=False, code="invalid_hostname",
                                    reason=f"{host!r} is neither a DNS name nor an IP address")
            verified = builder.build_server_verifier(subject).verify(leaf, intermediates)
            what = f"chain for {host}"
    except verification.VerificationError as exc:
        code = _classify(str(exc))
        reason = _explain(code, str(exc), chain_ders, _aware(now))
        return VerifyResult(ok=False, code=code, reason=reason)
    except Exception as exc:
        return VerifyResult(ok=False, code="verification_failed", reason=f"verification could not run: {exc}")
    path = tuple(decode_certificate(c.public_bytes(Encoding.DER)).sha256 for c in verified)
    return VerifyResult(ok=True, code="verified",
                        reason=f"{what} verified against {anchor_count} trust anchors ({len(path)} certificates)",
                        path=path)


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@lru_cache(maxsize=4)
def _store(trust_pems: bytes) -> tuple[verification.Store | None, int]:
    """Build (once per bundle) a Store from every certificate in the bundle that loads; system
    bundles occasionally carry one cryptography rejects, which must not void the rest."""
    anchors = []
    with warnings.catch_warnings():  # old roots with zero serials are still roots
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for block in _PEM_CERT.findall(trust_pems):
            try:
                anchors.append(x509.load_pem_x509_certificate(block))
            except Exception:
                continue
    if not anchors:
        return None, 0
    try:
        return verification.Store(anchors), len(anchors)
    except Exception:
        return None, 0


def _verification_subject(host: str) -> verification.DNSName | verification.IPAddress | None:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = _ip(host)
    if address is not None:
        return verification.IPAddress(address)
    name = host.rstrip(".").lower()
    if not name or not re.fullmatch(r"[a-z0-9_*-]+(\.[a-z0-9_*-]+)*", name):
        return None
    try:
        return verification.DNSName(name)
    except Exception:
        return None


# Substrings of cryptography's VerificationError messages, most specific first.
_VERIFY_MESSAGES = (
    ("no matching subjectAltName", "hostname_mismatch"),
    ("has no subjectAltName", "no_subject_alt_name"),
    ("not valid at validation time", "expired"),
    ("Forbidden signature algorithm", "forbidden_signature_algorithm"),
    ("Forbidden public key", "forbidden_signature_algorithm"),
    ("EKU", "wrong_key_usage"),
    ("key usage", "wrong_key_usage"),
    ("key is too weak", "weak_issuer_key"),
    ("max depth", "chain_too_long"),
    ("basicConstraints", "invalid_extension"),
    ("extension", "invalid_extension"),
    ("candidates exhausted", "untrusted_issuer"),
)


def _classify(message: str) -> str:
    for fragment, code in _VERIFY_MESSAGES:
        if fragment in message:
            return code
    return "verification_failed"


def _explain(code: str, message: str, chain_ders: Sequence[bytes], now: datetime) -> str:
    """cryptography's message, made specific where we can say more from the certificates."""
    detail = message.removeprefix("validation failed: ")
    if code == "expired":
        for index, der in enumerate(chain_ders):
            for problem in validity_problems(decode_certificate(der), now, index=index):
                if problem.code in ("cert_expired", "cert_not_yet_valid"):
                    return problem.message
    if code == "untrusted_issuer":
        return f"no path to a trusted root ({detail}); a missing intermediate or an unknown CA"
    return detail


# -- helpers ---------------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _who(info: CertificateInfo, index: int | None) -> str:
    label = info.subject_cn or info.subject or info.sha256[:16]
    return f"certificate {index} ({label})" if index is not None else f"certificate {label}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _span(delta: timedelta) -> str:
    seconds = abs(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = int(seconds)
    return f"{count} second{'s' if count != 1 else ''}"
