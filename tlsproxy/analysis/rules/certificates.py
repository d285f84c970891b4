"""Certificates of either side: validity at the connection's time, names, chain shape, key and
signature strength, usages, and path validation against ``--ca-file`` or the system trust store.

The checks themselves live in ``tlsproxy.analysis.chain``; this module maps their codes to
findings and remembers a one-line list of problems for the diagnosis.  Path validation is cached
per (chain, time to the minute, trust bundle): a capture repeats the same chain thousands of times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from tlsproxy.analysis import chain as chainlib
from tlsproxy.analysis.catalog import CATALOG, make_finding
from tlsproxy.analysis.model import Finding, Severity, build_finding
from tlsproxy.fastbuild import remember
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
    "serial_negative": "CERT_SERIAL_NEGATIVE",
}
# Problems the diagnosis lists when a peer rejected the chain (info-level ones are left out).
_NOT_A_PROBLEM = {"CHAIN_EXTRA_AFTER_ROOT", "CERT_EXPIRING_SOON"}


def on_server_chain(t: Tracker, seq: int, hs: ev.HandshakeMessage, msg: Certificate) -> list[Finding]:
    d, at = hs.direction, hs.at
    if msg.is_empty:
        t.server_chain_problems.append("the server sent no certificate")
        return [make_finding("CERT_EMPTY_SERVER_CHAIN", direction=d, seq=seq, at=at)]
    chain = chain_of(msg)
    facts = _facts_of(chain)
    out = [make_finding("CERT_CHAIN_SEEN", facts.seen, direction=d, seq=seq, at=at)]
    out += _check_server_chain(t, seq, hs, chain, facts)
    return out


# The wire layer's decode memo hands out one Certificate object per distinct message, so a chain a
# capture repeats arrives as the same object again: its certificates and facts are found by identity
# first, before the value-keyed cache, whose key hashes every field of every certificate.  Each entry
# keeps its key object alive, so an id cannot be reused while it is in the memo.
_CHAIN_BY_MESSAGE: dict[int, tuple[Certificate, tuple[CertificateInfo, ...]]] = {}
_FACTS_BY_CHAIN: dict[int, tuple[tuple[CertificateInfo, ...], _ChainFacts]] = {}
_IDENTITY_MEMO_ENTRIES = 256


def chain_of(msg: Certificate) -> tuple[CertificateInfo, ...]:
    """The certificates of a Certificate message, as a tuple (the same tuple for the same message)."""
    hit = _CHAIN_BY_MESSAGE.get(id(msg))
    if hit is not None and hit[0] is msg:
        return hit[1]
    chain = tuple(e.info for e in msg.entries)
    remember(_CHAIN_BY_MESSAGE, id(msg), (msg, chain), _IDENTITY_MEMO_ENTRIES)
    return chain


def _facts_of(chain: tuple[CertificateInfo, ...]) -> _ChainFacts:
    hit = _FACTS_BY_CHAIN.get(id(chain))
    if hit is not None and hit[0] is chain:
        return hit[1]
    facts = _chain_facts(chain)
    remember(_FACTS_BY_CHAIN, id(chain), (chain, facts), _IDENTITY_MEMO_ENTRIES)
    return facts


def check_chain(t: Tracker, seq: int, hs: ev.HandshakeMessage, chain: Sequence[CertificateInfo], *,
                client: bool) -> list[Finding]:
    chain = tuple(chain)
    return _check_chain(t, seq, hs, chain, _facts_of(chain), client=client)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What ``_check_chain`` did for a server chain, replayable on another connection whose time
    falls in [since, until): no certificate's validity is in question then and path validation
    (cached to the minute) gives the same answer, so only the host and the trust store are left,
    and they are in the key."""

    facts: _ChainFacts  # the key holds its id: kept alive here so that id is not reused
    trust: bytes | None
    since: datetime
    until: datetime
    findings: tuple[tuple[str, Severity, str, str, tuple[str, ...]], ...]  # (code, severity, title, detail, hints)
    problems: tuple[str, ...]  # appended to server_chain_problems
    verified: str | None  # set as server_chain_verified (None: left alone)


# A capture shows the same chain for the same host on thousands of connections within minutes.
_SERVER_VERDICTS: dict[tuple[int, str | None, str, bool], _Verdict] = {}
_SERVER_VERDICTS_ENTRIES = 256
_MINUTE = timedelta(minutes=1)
_ASK = object()  # _check_chain: ask the tracker


def _check_server_chain(t: Tracker, seq: int, hs: ev.HandshakeMessage, chain: tuple[CertificateInfo, ...],
                        facts: _ChainFacts) -> list[Finding]:
    """``_check_chain`` for a server chain, replayed from ``_SERVER_VERDICTS`` when it can be."""
    d, at = hs.direction, hs.at
    now = t.now_for(at)
    trust = t.trust()
    host, source = expected_host(t)
    key = (id(facts), host, source, t.options.trust_pems is not None)
    hit = _SERVER_VERDICTS.get(key)
    if (hit is not None and hit.facts is facts and hit.trust is trust and now.tzinfo is not None
            and hit.since <= now < hit.until):
        t.server_chain_problems.extend(hit.problems)
        if hit.verified is not None:
            t.server_chain_verified = hit.verified
        return [build_finding(code, severity, title, detail, hints, d, seq, at)
                for code, severity, title, detail, hints in hit.findings]
    problems = t.server_chain_problems
    before = len(problems)
    previous, t.server_chain_verified = t.server_chain_verified, None  # to see whether this check sets it
    out = _check_chain(t, seq, hs, chain, facts, client=False, now=now, trust=trust)
    verified = t.server_chain_verified
    if verified is None:
        t.server_chain_verified = previous
    window = _quiet_minute(facts, now)
    if window is not None and all(f.direction is d and f.event_seq == seq and f.at == at for f in out):
        remember(_SERVER_VERDICTS, key, _Verdict(
            facts, trust, window[0], window[1], tuple((f.code, f.severity, f.title, f.detail, f.hints) for f in out),
            tuple(problems[before:]), verified), _SERVER_VERDICTS_ENTRIES)
    return out


def _quiet_minute(facts: _ChainFacts, now: datetime) -> tuple[datetime, datetime] | None:
    """The part of ``now``'s minute (path validation's granularity) in which no certificate of the
    chain has a validity problem, or None when ``now`` is not in such a time."""
    quiet = facts.quiet
    if quiet is None or now.tzinfo is None or not quiet[0] <= now < quiet[1]:
        return None
    minute = now.replace(second=0, microsecond=0)  # as _trust rounds it
    return max(quiet[0], minute), min(quiet[1], minute + _MINUTE)


def _check_chain(t: Tracker, seq: int, hs: ev.HandshakeMessage, chain: tuple[CertificateInfo, ...],
                 facts: _ChainFacts, *, client: bool, now: datetime | None = None,
                 trust: bytes | None | object = _ASK) -> list[Finding]:
    """``now`` and ``trust`` are the tracker's (``t.now_for``, ``t.trust()``) unless given."""
    d, at = hs.direction, hs.at
    who = "client" if client else "server"
    problems = t.client_chain_problems if client else t.server_chain_problems
    out: list[Finding] = []
    if now is None:
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
        trust_findings, trusted = _trust(t, seq, hs, facts, now, t.trust() if trust is _ASK else trust)
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
    quiet: tuple[datetime, datetime] | None  # [since, until): no validity problem in any certificate then


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _quiet_window(chain: tuple[CertificateInfo, ...]) -> tuple[datetime, datetime] | None:
    """When ``chainlib.validity_problems`` finds nothing in any certificate of the chain (valid,
    and not within the expiry warning), as [since, until); None for never (or an unreadable date)."""
    since, until = _EARLIEST, _LATEST
    try:
        for info in chain:
            if info.parse_error is not None:
                continue  # not judged for validity
            start, end = info.not_before, info.not_after
            if start is None or end is None or end < start:
                return None
            since = max(since, start)
            until = min(until, end - chainlib.EXPIRY_WARNING)  # end - now > warning  <=>  now < end - warning
    except (TypeError, OverflowError):  # naive dates, or a notAfter too close to year 1
        return None
    return (since, until) if since < until else None


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
                       decodable=not any(c.parse_error is not None for c in chain), quiet=_quiet_window(chain))


def _certificate_checks(info: CertificateInfo, index: int) -> tuple[tuple[str, str, Severity | None], ...]:
    """Key strength, signature hash, serial number and unreadable fields of the certificate at
    ``index``, as (finding code, message, severity override), in the order they are reported."""
    if info.parse_error is not None:
        return ()
    out: list[tuple[str, str, Severity | None]] = []
    weak = chainlib.weak_key(info, index=index)
    if weak is not None:
        out.append((_CODES[weak.code], weak.message, None))
    sig = chainlib.weak_signature(info, index=index)
    if sig is not None:
        out.append((_CODES[sig.code], sig.message, None))
    serial = chainlib.serial_problem(info, index=index)
    if serial is not None:
        out.append((_CODES[serial.code], serial.message, None))
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


def _trust(t: Tracker, seq: int, hs: ev.HandshakeMessage, facts: _ChainFacts, now: datetime,
           trust: bytes | None) -> tuple[list[Finding], bool | None]:
    """Path validation of the server chain: (findings, True when it validated, False when it did
    not, None when it could not run).  The finding's problem is added to the diagnosis's list by
    the caller, after the others.  ``trust`` is ``t.trust()``."""
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
