"""Protocol versions: what each side offered or chose, deprecated and broken versions, downgrade
signals, SSL 2.0 and odd record-layer versions.

The client's offer is its supported_versions list when present; otherwise a legacy_version of
X means "X and, probably, some versions below" (the minimum is not on the wire).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.wire import events as ev
from tlsproxy.wire import extensions as ext
from tlsproxy.wire.events import Direction
from tlsproxy.wire.messages import ClientHello, ServerHello
from tlsproxy.wire.registry import SSL3_0, TLS1_0, TLS1_1, TLS1_2, TLS1_3, is_grease, version_name
from tlsproxy.wire.sslv2 import SSLv2ClientHello

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Side, Tracker

_DRAFT = 0x7F


def _is_draft(v: int) -> bool:
    return v >> 8 in (0x7F, 0x7E) or v in (0xFB17, 0xFB1A)


def _rank(v: int) -> int:
    """Order versions, TLS 1.3 drafts counting as 1.3."""
    return TLS1_3 if _is_draft(v) else v


def offered_versions(t: Tracker) -> tuple[tuple[int, ...], bool]:
    """(versions the client offered, explicit) — explicit is False for a legacy_version-only hello."""
    ch, v2 = t.client_hello, t.sslv2_hello
    memo = t.offered_versions_memo  # several rules and the diagnosis ask about the same hello
    if memo is not None and memo[0] is ch and memo[1] is v2:
        return memo[2]
    result = _offered_versions(ch, v2)
    t.offered_versions_memo = (ch, v2, result)
    return result


def _offered_versions(ch: ClientHello | None, v2: SSLv2ClientHello | None) -> tuple[tuple[int, ...], bool]:
    if ch is not None:
        sv = ch.ext(ext.SUPPORTED_VERSIONS)
        if sv is not None:
            offered = sv.value if isinstance(sv.value, tuple) else (ch.legacy_version,)  # ch.supported_versions
            return tuple(v for v in offered if not is_grease(v)), True
        return (ch.legacy_version,), False
    if v2 is not None:
        return (v2.version,), False
    return (), False


def offered_text(t: Tracker) -> str:
    return _offered_text(*offered_versions(t))


def _offered_text(versions: tuple[int, ...], explicit: bool) -> str:
    if not versions:
        return "nothing (no ClientHello seen)"
    if explicit:
        return ", ".join(version_name(v) for v in versions)
    return f"up to {version_name(versions[0])} (no supported_versions extension)"


def client_max(t: Tracker) -> int | None:
    versions, _ = offered_versions(t)
    return max(versions, key=_rank) if versions else None


def on_record(t: Tracker, seq: int, rec: ev.Record, side: Side) -> list[Finding]:
    if side.record_version_flagged:
        return []
    v = rec.version
    odd = None
    if not (SSL3_0 <= v <= TLS1_2):
        odd = f"record version {version_name(v)} ({v:#06x}) is outside SSL 3.0 .. TLS 1.2"
    elif t.server_hello is not None and not rec.encrypted and t.version is not None:
        expected = TLS1_2 if t.tls13 else t.version
        if v != expected and v != TLS1_0:
            odd = (f"record version {version_name(v)} after the ServerHello chose {version_name(t.version)} "
                   f"(expected {version_name(expected)})")
    if odd is None:
        return []
    side.record_version_flagged = True
    return [make_finding("RECORD_VERSION_UNUSUAL", f"The {rec.direction.sender}'s {odd}.",
                         direction=rec.direction, seq=seq, at=rec.at)]


def on_client_hello(t: Tracker, seq: int, hs: ev.HandshakeMessage, ch: ClientHello) -> list[Finding]:
    d, at = hs.direction, hs.at
    return [make_finding(code, detail, direction=d, seq=seq, at=at)
            for code, detail in _client_offer_notes(*offered_versions(t))]


@lru_cache(maxsize=256)
def _client_offer_notes(versions: tuple[int, ...], explicit: bool) -> tuple[tuple[str, str], ...]:
    """(finding code, detail) for what is wrong with an offer of ``versions``; cached because a
    client repeats its offer on every connection."""
    out: list[tuple[str, str]] = []

    def add(code: str, detail: str) -> None:
        out.append((code, detail))

    top = max(versions, key=_rank) if versions else None  # client_max
    if explicit and SSL3_0 in versions:
        add("VERSION_SSL3_OFFERED", "The client's supported_versions include SSL 3.0.")
    if top is not None and _rank(top) < TLS1_2:
        add("VERSION_CLIENT_MAX_DEPRECATED",
            f"The client offers at most {version_name(top)}: servers following RFC 8996 refuse it.")
    elif explicit and any(v in (TLS1_0, TLS1_1) for v in versions):
        add("VERSION_DEPRECATED_OFFERED",
            f"The client offers {_offered_text(versions, explicit)}, including deprecated TLS 1.0/1.1.")
    drafts = [v for v in versions if _is_draft(v)]
    if drafts:
        add("TLS13_DRAFT_VERSION",
            "The client offers pre-standard TLS 1.3 versions: " + ", ".join(version_name(v) for v in drafts) + ".")
    return tuple(out)


def on_server_hello(t: Tracker, seq: int, hs: ev.HandshakeMessage, sh: ServerHello) -> list[Finding]:
    out: list[Finding] = []
    d, at = hs.direction, hs.at
    v = sh.selected_version
    versions, explicit = offered_versions(t)
    if v == SSL3_0:
        out.append(make_finding("VERSION_SSL3", "The server chose SSL 3.0.", direction=d, seq=seq, at=at))
    elif v in (TLS1_0, TLS1_1):
        out.append(make_finding("VERSION_DEPRECATED", f"The server chose {version_name(v)}.",
                                direction=d, seq=seq, at=at))
    if _is_draft(v):
        out.append(make_finding("TLS13_DRAFT_VERSION", f"The server chose {version_name(v)}.",
                                direction=d, seq=seq, at=at))
    if versions and ((explicit and v not in versions) or (not explicit and _rank(v) > _rank(versions[0]))):
        out.append(make_finding(
            "SERVER_CHOSE_UNOFFERED",
            f"The server chose {version_name(v)}, but the client offered {offered_text(t)}.",
            direction=d, seq=seq, at=at))
    if sh.downgrade_sentinel and t.client_offered_tls13() and not is_tls13(v):
        out.append(make_finding(
            "DOWNGRADE_SENTINEL",
            f"The client offered TLS 1.3, the server chose {version_name(v)} and its random ends with the "
            f"RFC 8446 downgrade marker for {'TLS 1.2' if sh.downgrade_sentinel == 'tls12' else 'TLS 1.1 or below'}: "
            f"the server can do TLS 1.3, so the offer it saw did not include it.",
            direction=d, seq=seq, at=at))
    return out


def is_tls13(v: int) -> bool:
    return v == TLS1_3 or _is_draft(v)


def on_sslv2_hello(t: Tracker, seq: int, rec: ev.SSLv2Record, hello: SSLv2ClientHello) -> list[Finding]:
    if hello.version < SSL3_0:
        return [make_finding("SSLV2", "The client sent a genuine SSL 2.0 CLIENT-HELLO.", direction=rec.direction,
                             seq=seq, at=rec.at)]
    out = [make_finding(
        "SSLV2_COMPAT_HELLO",
        f"The client sent an SSL 2.0-format CLIENT-HELLO offering up to {version_name(hello.version)}.",
        direction=rec.direction, seq=seq, at=rec.at)]
    if hello.version < TLS1_2:
        out.append(make_finding(
            "VERSION_CLIENT_MAX_DEPRECATED",
            f"The client offers at most {version_name(hello.version)}: servers following RFC 8996 refuse it.",
            direction=rec.direction, seq=seq, at=rec.at))
    return out


def on_sslv2_server_hello(t: Tracker, seq: int, rec: ev.SSLv2Record) -> list[Finding]:
    return [make_finding("SSLV2", "The server answered with an SSL 2.0 SERVER-HELLO: SSL 2.0 is in use.",
                         direction=rec.direction, seq=seq, at=rec.at)]


def mismatch_explanation(t: Tracker, sender: Direction) -> tuple[str, tuple[str, ...]]:
    """Why the versions did not meet, from what each side offered or chose."""
    offered = offered_text(t)
    top = client_max(t)
    if sender is Direction.S2C:
        if top is not None and _rank(top) < TLS1_2:
            cause = (f"The client's highest version is {version_name(top)} (it offered {offered}) and the server "
                     f"accepts none of them; servers today usually require TLS 1.2 or newer.")
            checks = ("Enable TLS 1.2 (or 1.3) in the client, or update it.",
                      "Only if unavoidable, re-enable the old version on the server.")
        elif top is not None and is_tls13(top) and all(is_tls13(v) for v in offered_versions(t)[0]):
            cause = (f"The client offered only TLS 1.3 ({offered}) and the server does not accept it: the server "
                     f"tops out below TLS 1.3.")
            checks = ("Enable TLS 1.3 on the server, or allow TLS 1.2 in the client.",)
        else:
            cause = (f"The server accepts none of the versions the client offered ({offered}): the server's "
                     f"minimum is above the client's maximum, or the server only speaks an older version.")
            checks = ("Compare the server's allowed versions with the client's.",)
        return cause, checks
    chosen = version_name(t.version) if t.version is not None else "an older version"
    cause = (f"The server chose {chosen} and the client refuses it (the client offered {offered}): the client's "
             f"minimum is above what the server supports.")
    return cause, ("Enable TLS 1.2 or 1.3 on the server.", "Only if unavoidable, lower the client's minimum version.")
