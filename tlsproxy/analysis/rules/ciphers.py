"""Cipher suites and the other negotiated parameters: weak suites, DHE prime size, secure
renegotiation, compression, heartbeat and Heartbleed probes, SNI, ALPN, HelloRetryRequest,
resumption and 0-RTT."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.wire import events as ev
from tlsproxy.wire import extensions as ext
from tlsproxy.wire.events import Direction
from tlsproxy.wire.messages import ClientHello, EncryptedExtensions, ServerHello, ServerKeyExchange
from tlsproxy.wire.registry import (
    ALL_CIPHER_SUITES,
    TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
    cipher_suite_info,
    cipher_suite_name,
    group_name,
    is_grease,
)
from tlsproxy.wire.sslv2 import SSLv2ClientHello

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Side, Tracker

_MIN_DH_BITS = 2048


_WEAK_FLAGS = (("null_cipher", "NULL"), ("anonymous", "anonymous"), ("export", "EXPORT"), ("rc4", "RC4"),
               ("des", "DES"), ("triple_des", "3DES"))


def _weakness_of(suite: int) -> str | None:
    info = cipher_suite_info(suite)
    if info is None or info.key_exchange == "SCSV":
        return None
    for flag, name in _WEAK_FLAGS:
        if getattr(info, flag):
            return name
    return None


# Every ClientHello lists 15-40 suites and every connection asks again: one dict hit instead of a
# dozen attribute reads.  Only registered suites have facts (cipher_suite_info is None otherwise).
_WEAKNESS: dict[int, str] = {s: why for s in ALL_CIPHER_SUITES if (why := _weakness_of(s)) is not None}


def weakness(suite: int) -> str | None:
    """Why a suite is weak ('RC4', 'EXPORT', ...) or None."""
    return _WEAKNESS.get(suite)


def _weak_offer(t: Tracker, suites: tuple[int, ...], d: Direction, seq: int, at: float) -> list[Finding]:
    text = _weak_offer_text(suites)
    if text is None:
        return []
    return [make_finding("CIPHER_WEAK_OFFERED", text, direction=d, seq=seq, at=at)]


@lru_cache(maxsize=256)
def _weak_offer_text(suites: tuple[int, ...]) -> str | None:
    """The CIPHER_WEAK_OFFERED sentence for an offer, or None; cached because clients repeat their
    offer on every connection."""
    weak: dict[str, list[str]] = {}
    for s in suites:
        why = _WEAKNESS.get(s)
        if why is not None:
            weak.setdefault(why, []).append(cipher_suite_name(s))
    if not weak:
        return None
    parts = [f"{k}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}" for k, v in weak.items()]
    return f"The client offers {sum(map(len, weak.values()))} weak suites (" + "; ".join(parts) + ")."


def on_client_hello(t: Tracker, seq: int, hs: ev.HandshakeMessage, ch: ClientHello) -> list[Finding]:
    d, at = hs.direction, hs.at
    out = _weak_offer(t, ch.cipher_suites, d, seq, at)
    if ch.server_name is None:
        out.append(make_finding("NO_SNI", "The ClientHello carries no server_name (SNI).", direction=d, seq=seq,
                                at=at))
    if ch.ext(ext.HEARTBEAT) is not None:
        out.append(make_finding("HEARTBEAT_EXTENSION", "The client offers the heartbeat extension.",
                                direction=d, seq=seq, at=at))
    return out


def on_sslv2_hello(t: Tracker, seq: int, rec: ev.SSLv2Record, hello: SSLv2ClientHello) -> list[Finding]:
    return _weak_offer(t, hello.tls_cipher_suites, rec.direction, seq, rec.at)


def on_server_hello(t: Tracker, seq: int, hs: ev.HandshakeMessage, sh: ServerHello) -> list[Finding]:
    out: list[Finding] = []
    d, at = hs.direction, hs.at
    ch = t.client_hello
    suite = sh.cipher_suite
    why = weakness(suite)
    if why is not None:
        out.append(make_finding("CIPHER_WEAK_CHOSEN", f"The server chose {cipher_suite_name(suite)} ({why}).",
                                direction=d, seq=seq, at=at))
    if ch is not None and suite not in ch.cipher_suites:
        out.append(make_finding("SERVER_CHOSE_UNOFFERED", f"The server chose {cipher_suite_name(suite)}, which "
                                f"is not among the client's {len(ch.cipher_suites)} offered suites.",
                                direction=d, seq=seq, at=at))
    if sh.compression_method != 0:
        out.append(make_finding("TLS_COMPRESSION", f"The server chose compression method {sh.compression_method}.",
                                direction=d, seq=seq, at=at))
    tls13 = t.tls13
    if ch is not None and not tls13:
        client_ri = ch.ext(ext.RENEGOTIATION_INFO) is not None or TLS_EMPTY_RENEGOTIATION_INFO_SCSV in ch.cipher_suites
        server_ri = sh.ext(ext.RENEGOTIATION_INFO) is not None
        if not client_ri or not server_ri:
            who = "the client sent neither renegotiation_info nor the SCSV" if not client_ri else \
                "the server did not answer with renegotiation_info"
            out.append(make_finding("RENEGOTIATION_INFO_MISSING", f"In this {'pre-1.3'} handshake {who}.",
                                    direction=d if client_ri else Direction.C2S, seq=seq, at=at))
        if ch.alpn and sh.alpn is None:
            out.append(alpn_none(t, seq, d, at))
    if sh.ext(ext.HEARTBEAT) is not None:
        out.append(make_finding("HEARTBEAT_EXTENSION", "The server accepted the heartbeat extension.",
                                direction=d, seq=seq, at=at))
    resumed = None
    if tls13:
        resumed = sh.ext(ext.PRE_SHARED_KEY) is not None
    elif ch is not None:
        resumed = bool(sh.session_id) and sh.session_id == ch.session_id
    t.resumed = resumed
    if resumed:
        how = "a TLS 1.3 pre-shared key" if tls13 else "the session ID"
        out.append(make_finding("SESSION_RESUMED", f"The server resumed the session with {how}.",
                                direction=d, seq=seq, at=at))
    return out


def alpn_none(t: Tracker, seq: int, d: Direction, at: float) -> Finding:
    offered = ", ".join(t.client_hello.alpn) if t.client_hello is not None else ""
    return make_finding("ALPN_NO_AGREEMENT", f"The client offered ALPN ({offered}) and the server chose none.",
                        direction=d, seq=seq, at=at)


def on_server_ccs(t: Tracker, seq: int, event: ev.ChangeCipherSpec) -> list[Finding]:
    """TLS <= 1.2: a server CCS without a Certificate or ServerHelloDone before it is an abbreviated
    (resumed) handshake, whether by session ID or by ticket."""
    msgs = t.server.messages
    if t.resumed or t.tls13 or 11 in msgs or 14 in msgs or t.server_hello is None:
        return []
    t.resumed = True
    return [make_finding("SESSION_RESUMED", "The server resumed the session (abbreviated handshake: "
                         "change_cipher_spec right after its hello, no certificate).",
                         direction=event.direction, seq=seq, at=event.at)]


def on_encrypted_extensions(t: Tracker, seq: int, hs: ev.HandshakeMessage, ee: EncryptedExtensions) -> list[Finding]:
    v = ee.ext_value(ext.ALPN)
    t.alpn_chosen = v[0] if isinstance(v, tuple) and v else None
    if t.client_hello is not None and t.client_hello.alpn and t.alpn_chosen is None:
        return [alpn_none(t, seq, hs.direction, hs.at)]
    return []


def on_hello_retry(t: Tracker, seq: int, hs: ev.HandshakeMessage, hrr: ServerHello) -> list[Finding]:
    ks = hrr.ext_value(ext.KEY_SHARE)
    group = group_name(ks) if isinstance(ks, int) else "an unnamed group"
    offered = ""
    ch = t.client_hello
    if ch is not None:
        shares = ch.ext_value(ext.KEY_SHARE)
        if isinstance(shares, tuple):
            names = [group_name(s.group) for s in shares if not is_grease(s.group)]
            offered = f" (the client's first key shares: {', '.join(names) or 'none'})"
    cookie = " and sent a cookie" if hrr.ext(ext.COOKIE) is not None else ""
    return [make_finding("HELLO_RETRY_REQUEST", f"The server asked for a key share for {group}{offered}{cookie}; "
                         f"one extra round trip.", direction=hs.direction, seq=seq, at=hs.at)]


def on_server_key_exchange(t: Tracker, seq: int, hs: ev.HandshakeMessage, ske: ServerKeyExchange) -> list[Finding]:
    if ske.kind == "dhe" and ske.dh_p_bits is not None and ske.dh_p_bits < _MIN_DH_BITS:
        return [make_finding("DHE_PRIME_WEAK", f"The server's DHE prime is {ske.dh_p_bits} bits.",
                             direction=hs.direction, seq=seq, at=hs.at)]
    return []


def on_heartbeat(t: Tracker, seq: int, hb: ev.Heartbeat) -> list[Finding]:
    d = hb.direction
    kind = {1: "request", 2: "response"}.get(hb.hb_type or 0, f"type {hb.hb_type}")
    # RFC 6520: type(1) + payload_length(2) + payload + at least 16 bytes of padding.
    if hb.payload_length is not None and hb.payload_length + 3 + 16 > hb.record_length:
        return [make_finding(
            "HEARTBLEED_PROBE",
            f"The {d.sender}'s heartbeat {kind} claims a {hb.payload_length}-byte payload in a "
            f"{hb.record_length}-byte record, more than the record can hold (with the 16 bytes of padding RFC "
            f"6520 requires).", direction=d, seq=seq, at=hb.at)]
    t.side(d).heartbeat_request_len = hb.record_length
    return [make_finding("HEARTBEAT_RECORD", f"The {d.sender} sent a heartbeat {kind} of {hb.record_length} bytes.",
                         direction=d, seq=seq, at=hb.at)]


def on_encrypted_heartbeat(t: Tracker, seq: int, rec: ev.Record, side: Side) -> list[Finding]:
    d = rec.direction
    peer = t.side(d.peer)
    if peer.heartbeat_request_len is not None and rec.length > 4 * peer.heartbeat_request_len + 1024:
        req = peer.heartbeat_request_len
        peer.heartbeat_request_len = None
        return [make_finding(
            "HEARTBLEED_PROBE",
            f"The {d.sender} answered a {req}-byte encrypted heartbeat with {rec.length} bytes: a response that "
            f"large means it returned memory beyond the request (Heartbleed, vulnerable and exploited).",
            direction=d, seq=seq, at=rec.at)]
    side.heartbeat_request_len = rec.length
    return [make_finding("HEARTBEAT_RECORD", f"The {d.sender} sent an encrypted heartbeat record of "
                         f"{rec.length} bytes.", direction=d, seq=seq, at=rec.at)]


def early_data(t: Tracker, seq: int, rec: ev.Record) -> list[Finding]:
    if t.early_data_flagged:
        return []
    t.early_data_flagged = True
    return [make_finding("EARLY_DATA", "The client sent 0-RTT data right after its ClientHello.",
                         direction=rec.direction, seq=seq, at=rec.at)]


def renegotiation(t: Tracker, seq: int, event: ev.Event, what: str) -> list[Finding]:
    if t.renegotiation_flagged:
        return []
    t.renegotiation_flagged = True
    return [make_finding("RENEGOTIATION_SEEN", f"The {event.direction.sender} started a renegotiation ({what}).",
                         direction=event.direction, seq=seq, at=event.at)]
