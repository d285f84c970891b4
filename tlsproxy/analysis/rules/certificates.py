"""Certificates of either side: validity at the connection's time, names, chain shape, key and
signature strength, usages, and path validation against ``--ca-file`` or the system trust store.

The checks themselves live in ``tlsproxy.analysis.chain``; this module maps their codes to
findings and remembers a one-line list of problems for the diagnosis.  Path validation is cached
per (chain, time to the minute, trust bundle): a capture repeats the same chain thousands of times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from tlsproxy.analysis import chain as chainlib
from tlsproxy.analysis.catalog import CATALOG, make_finding
from tlsproxy.analysis.model import Finding, Severity
from tlsproxy.wire import events as ev
from tlsproxy.wire.certs import CertificateInfo
from tlsproxy.wire.messages import Certificate

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Tracker

_CODES = {
    "cert_expired": "CERT_EXPIRED",
    "cert_not_yet_valid": "CERT_NOT_YET_VALID",
    "cert_expiring_soon": "CERT_EXPIRING_SOON",
    "cert_validity_inverted": "CERT_VALIDITY_INVALID",
    "cert_validity_unknown": "CERT_VALIDITY_INVALID",
    "cert_undecodable": "CERT_UNPARSABLE",
    "chain_duplicate": "CHAIN_DUPLICATE",
    "chain_misordered": "CHAIN_MISORDERED",
    "chain_unrelated_certificate": "CHAIN_UNRELATED",
    "chain_extra_after_root": "CHAIN_EXTRA_AFTER_ROOT",
    "chain_missing_intermediate": "CHAIN_INCOMPLETE",
    "chain_self_signed": "CERT_SELF_SIGNED",
    "weak_rsa_key": "CERT_WEAK_KEY",
    "weak_ec_key": "CERT_WEAK_KEY",
    "dsa_key": "CERT_WEAK_KEY",
    "weak_signature_hash": "CERT_WEAK_SIGNATURE",
}
# Problems the diagnosis lists when a peer rejected the chain (info-level ones are left out).
_NOT_A_PROBLEM = {"CHAIN_EXTRA_AFTER_ROOT", "CERT_EXPIRING_SOON"}


def on_server_chain(t: Tracker, seq: int, hs: ev.HandshakeMessage, msg: Certificate) -> list[Finding]:
    d, at = hs.direction, hs.at
    if msg.is_empty:
        t.server_chain_problems.append("the server sent no certificate")
        return [make_finding("CERT_EMPTY_SERVER_CHAIN", direction=d, seq=seq, at=at)]
    chain = tuple(e.info for e in msg.entries)
    facts = _chain_facts(chain)
    out = [make_finding("CERT_CHAIN_SEEN", facts.seen, direction=d, seq=seq, at=at)]
    out += _check_chain(t, seq, hs, chain, facts, client=False)
    return out


def check_chain(t: Tracker, seq: int, hs: ev.HandshakeMessage, chain: Sequence[CertificateInfo], *,
                client: bool) -> list[Finding]:
    chain = tuple(chain)
    return _check_chain(t, seq, hs, chain, _chain_facts(chain), client=client)


def _check_chain(t: Tracker, seq: int, hs: ev.HandshakeMessage, chain: tuple[CertificateInfo, ...],
                 facts: _ChainFacts, *, client: bool) -> list[Finding]:
    d, at = hs.direction, hs.at
    who = "client" if client else "server"
    problems = t.client_chain_problems if client else t.server_chain_problems
    out: list[Finding] = []
    now = t.now_for(at)

    def add(code: str, message: str, severity: Severity | None = None) -> None:
        text = f"{who.capitalize()} chain: {message}."
        out.append(make_finding(code, text, title=f"{_title(code)} ({who})", direction=d, seq=seq, at=at,
                                severity=severity))
        if code not in _NOT_A_PROBLEM:
            problems.append(message)

    for index, info in enumerate(chain):
        if info.parse_error is not None:
            continue  # chain_order_problems reports it
        for p in chainlib.validity_problems(info, now, index=index):
            add(_CODES[p.code], p.message)
        for code, message, severity in facts.checks[index]:
            add(code, message, severity)
    trusted: bool | None = None
    if not client:
        trust_findings, trusted = _trust(t, seq, hs, facts, now)
    for p in facts.order:
        if p.code == "chain_empty":
            continue
        if p.code == "chain_missing_intermediate":
            _issuer_not_sent(t, chain, p, client=client, trusted=trusted, add=add, out=out, seq=seq, hs=hs)
            continue
        add(_CODES.get(p.code, "CHAIN_UNRELATED"), p.message)
    leaf = chain[0]
    if leaf.parse_error is None:
        if facts.ca_as_leaf is not None:
            add("CERT_CA_AS_LEAF", facts.ca_as_leaf)
        if not client:
            if facts.no_server_auth is not None:
                add("CERT_NO_SERVER_AUTH_EKU", facts.no_server_auth)
            out += _hostname(t, seq, hs, leaf, problems)
    if not client:
        out += trust_findings
        if any(f.code == "CERT_UNTRUSTED" for f in trust_findings):
            problems.append(f"not trusted: {t.server_chain_verified}")  # after the others, as before
    return out


@dataclass(frozen=True, slots=True)
class _ChainFacts:
    """What a chain says by itself, not at a time, for a host or against a trust store.  A capture
    shows the same chain on thousands of connections, so this is worked out once per chain
    (``_chain_facts``, cached by the certificates' values)."""

    seen: str  # the CERT_CHAIN_SEEN sentence
    checks: tuple[tuple[tuple[str, str, Severity | None], ...], ...]  # per certificate: (code, message, severity)
    order: tuple[chainlib.ChainProblem, ...]  # chain_order_problems
    ca_as_leaf: str | None  # the CERT_CA_AS_LEAF message
    no_server_auth: str | None  # the CERT_NO_SERVER_AUTH_EKU message (server chains)
    ders: tuple[bytes, ...]
    decodable: bool  # every certificate loaded (path validation needs that)


@lru_cache(maxsize=256)
def _chain_facts(chain: tuple[CertificateInfo, ...]) -> _ChainFacts:
    leaf = chain[0]
    validity = ""
    if leaf.not_before is not None and leaf.not_after is not None:
        validity = f", valid {leaf.not_before:%Y-%m-%d} .. {leaf.not_after:%Y-%m-%d}"
    key = f", {leaf.key_type} {leaf.key_bits or ''}".rstrip() if leaf.key_type else ""
    seen = (f"The server sent {len(chain)} certificate(s); leaf {leaf.subject or '?'} issued by "
            f"{leaf.issuer or '?'}{key}{validity}.")
    ca_as_leaf = None
    if leaf.is_ca and not leaf.self_signed:
        ca_as_leaf = f"the leaf {leaf.subject or '?'} is a CA certificate (basicConstraints CA:TRUE)"
    elif leaf.is_ca and leaf.self_signed and len(chain) == 1:
        ca_as_leaf = f"the only certificate, {leaf.subject or '?'}, is a self-signed CA certificate used as the " \
                     "server's own"
    eku = leaf.extended_key_usage
    no_server_auth = None
    if eku and "serverAuth" not in eku and "anyExtendedKeyUsage" not in eku:
        no_server_auth = f"the leaf's extended key usage is {', '.join(eku)}, without serverAuth"
    return _ChainFacts(seen=seen, checks=tuple(_certificate_checks(info, index) for index, info in enumerate(chain)),
                       order=chainlib.chain_order_problems(chain), ca_as_leaf=ca_as_leaf,
                       no_server_auth=no_server_auth, ders=tuple(c.der for c in chain),
                       decodable=not any(c.parse_error is not None for c in chain))


def _certificate_checks(info: CertificateInfo, index: int) -> tuple[tuple[str, str, Severity | None], ...]:
    """Key strength, signature hash and unreadable fields of the certificate at ``index``, as
    (finding code, message, severity override), in the order they are reported."""
    if info.parse_error is not None:
        return ()
    out: list[tuple[str, str, Severity | None]] = []
    weak = chainlib.weak_key(info, index=index)
    if weak is not None:
        out.append((_CODES[weak.code], weak.message, None))
    sig = chainlib.weak_signature(info, index=index)
    if sig is not None:
        out.append((_CODES[sig.code], sig.message, None))
    if info.errors:
        out.append(("CERT_UNPARSABLE", f"certificate {index}: fields that could not be read: "
                    f"{'; '.join(info.errors)}", Severity.warning))
    return tuple(out)


def _issuer_not_sent(t: Tracker, chain: Sequence[CertificateInfo], p: chainlib.ChainProblem, *, client: bool,
                     trusted: bool | None, add: Callable[..., None], out: list[Finding], seq: int,
                     hs: ev.HandshakeMessage) -> None:
    """CHAIN_INCOMPLETE, only where it may matter: a leaf issued straight by a root the peer holds is
    normal (private PKIs, client certificates), so it is left out when path validation succeeded or
    when the server named that issuer in its CertificateRequest."""
    if trusted:
        return
    end = chain[p.index] if p.index is not None and 0 <= p.index < len(chain) else chain[0]
    if not client:
        # A warning and a candidate cause: nothing shows the client holds that issuer.
        add("CHAIN_INCOMPLETE", f"{p.message}: a missing intermediate, unless the client has that issuer as a "
            f"trust anchor (a private CA that issues directly)")
        return
    cr = t.cert_request
    names = cr.certificate_authorities if cr is not None else ()
    if end.issuer is not None and names and chainlib.normalize_dn(end.issuer) in {chainlib.normalize_dn(n)
                                                                                  for n in names}:
        return  # the server asked for certificates from exactly that CA
    text = (f"{p.message}; fine if the server has that CA (client certificates are often issued directly by a "
            f"private root), otherwise a missing intermediate")
    if names:
        # The CA-name mismatch is reported on its own and is the likelier cause: information only.
        out.append(make_finding("CHAIN_INCOMPLETE", f"Client chain: {text}.", title=f"{_title('CHAIN_INCOMPLETE')} "
                                "(client)", direction=hs.direction, seq=seq, at=hs.at, severity=Severity.info))
        return
    add("CHAIN_INCOMPLETE", text, Severity.info)


def _title(code: str) -> str:
    return CATALOG[code].title


def expected_host(t: Tracker) -> tuple[str | None, str]:
    ch = t.client_hello
    return expected_host_for(t, ch.server_name if ch is not None else None)


def expected_host_for(t: Tracker, sni: str | None) -> tuple[str | None, str]:
    """(the name the server's certificate is checked against, where it comes from), given the SNI."""
    if t.options.expect_host:
        return t.options.expect_host, "--expect-host"
    if sni:
        return sni, "SNI"
    return None, ""


def _hostname(t: Tracker, seq: int, hs: ev.HandshakeMessage, leaf: CertificateInfo,
              problems: list[str]) -> list[Finding]:
    host, source = expected_host(t)
    if host is None or leaf.parse_error is not None:
        return []
    match = chainlib.hostname_matches(leaf, host)
    if match.matches and match.via == "cn":
        problems.append(f"{host} matches only the subject CN, not a subjectAltName")
        return [make_finding("CERT_HOSTNAME_CN_ONLY", f"{host} ({source}) matches the subject CN "
                             f"{leaf.subject_cn!r} only; the certificate has no DNS subjectAltName.",
                             direction=hs.direction, seq=seq, at=hs.at)]
    if match.matches:
        return []
    names = ", ".join(leaf.sans_dns[:8] + leaf.sans_ip[:4]) or "none"
    cn = f"; subject CN {leaf.subject_cn!r}" if leaf.subject_cn else ""
    problems.append(f"{host} is not among the certificate's names ({names})")
    return [make_finding("CERT_HOSTNAME_MISMATCH", f"{host} ({source}) is not in the server certificate's "
                         f"subjectAltName (DNS/IP names: {names}{cn}).", direction=hs.direction, seq=seq, at=hs.at)]


def _trust(t: Tracker, seq: int, hs: ev.HandshakeMessage, facts: _ChainFacts,
           now: datetime) -> tuple[list[Finding], bool | None]:
    """Path validation of the server chain: (findings, True when it validated, False when it did
    not, None when it could not run).  The finding's problem is added to the diagnosis's list by
    the caller, after the others."""
    trust = t.trust()
    if trust is None or not facts.decodable:
        return [], None
    minute = now.replace(second=0, microsecond=0)
    ok, code, reason = _verify(facts.ders, minute, trust)
    if ok:
        return [], True
    if code in ("no_trust_store", "no_trust_anchors"):
        return [], None
    t.server_chain_verified = reason
    if code in ("expired", "hostname_mismatch", "no_subject_alt_name"):
        return [], False  # already reported by a more specific check
    source = "--ca-file" if t.options.trust_pems is not None else "the system trust store"
    return [make_finding("CERT_UNTRUSTED", f"Path validation against {source} failed: {reason}.",
                         direction=hs.direction, seq=seq, at=hs.at)], False


@lru_cache(maxsize=512)
def _verify(ders: tuple[bytes, ...], now: datetime, trust: bytes) -> tuple[bool, str, str]:
    r = chainlib.verify_chain(list(ders), None, now, trust)
    return r.ok, r.code, r.reason
