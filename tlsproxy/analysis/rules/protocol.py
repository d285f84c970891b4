"""Message order against the RFC state machines, and the parser's own notices (decode errors,
gaps, stopped parsing, failed decryption).

Order is checked with one rank per message and direction: each message must rank above the last
one from the same side (TLS 1.0-1.2: RFC 5246 7.3; TLS 1.3: RFC 8446 2 and 4), plus the few
rules that span both sides (a client Certificate only after a CertificateRequest, the client's
key exchange only after ServerHelloDone, a second ClientHello only after a HelloRetryRequest).
Optional messages may be skipped; post-handshake messages are not ranked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.wire import events as ev
from tlsproxy.wire.events import Direction
from tlsproxy.wire.messages import HandshakeType as H
from tlsproxy.wire.registry import handshake_type_name

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Side, Tracker

_T12 = {
    Direction.S2C: {H.server_hello: 2, H.certificate: 3, H.certificate_status: 4, H.server_key_exchange: 5,
                    H.certificate_request: 6, H.server_hello_done: 7, H.new_session_ticket: 8, H.finished: 9},
    Direction.C2S: {H.client_hello: 1, H.certificate: 2, H.client_key_exchange: 3, H.certificate_verify: 4,
                    H.finished: 5},
}
_T13 = {
    Direction.S2C: {H.server_hello: 2, H.encrypted_extensions: 3, H.certificate_request: 4, H.certificate: 5,
                    H.compressed_certificate: 5, H.certificate_verify: 6, H.finished: 7},
    Direction.C2S: {H.client_hello: 1, H.end_of_early_data: 2, H.certificate: 3, H.compressed_certificate: 3,
                    H.certificate_verify: 4, H.finished: 5},
}
_C2S, _S2C = Direction.C2S, Direction.S2C  # enum member lookups are slow in 3.11; checked per message
# Handshake types as plain ints for check_order, which runs on every handshake message.
_CERTIFICATE = int(H.certificate)
_CLIENT_HELLO = int(H.client_hello)
_CLIENT_KEY_EXCHANGE = int(H.client_key_exchange)
_NEW_SESSION_TICKET = int(H.new_session_ticket)
_SERVER_HELLO = int(H.server_hello)
_SERVER_HELLO_DONE = int(H.server_hello_done)
_SERVER_KEY_EXCHANGE = int(H.server_key_exchange)
_HRR_RANK = 1
_ANYTIME = {H.hello_request, H.new_session_ticket, H.key_update, H.message_hash}


def check_order(t: Tracker, seq: int, hs: ev.HandshakeMessage, side: Side) -> list[Finding]:
    if t.complete:
        return []
    d, mt = hs.direction, hs.msg_type
    problem = None
    if mt == _CLIENT_HELLO:
        if d is not _C2S:
            problem = "the server sent a ClientHello"
        elif t.client_hellos == 1 and t.hello_retry is None:
            problem = "a second ClientHello without a HelloRetryRequest"
        elif t.client_hellos >= 2:
            problem = "another ClientHello"
        side.rank = 1
    elif mt == _SERVER_HELLO and d is _S2C:
        msg = hs.message
        rank = _HRR_RANK if getattr(msg, "is_hello_retry_request", False) else 2
        if t.client_hello is None and t.sslv2_hello is None:
            problem = "a ServerHello before any ClientHello"
        elif rank <= side.rank:
            problem = "a second ServerHello" if rank == 2 else "a second HelloRetryRequest"
        side.rank = max(side.rank, rank)
    elif mt in _ANYTIME:
        if mt == _NEW_SESSION_TICKET and d is _C2S:
            problem = "the client sent a NewSessionTicket"
    else:
        table = (_T13 if t.tls13 else _T12)[d]
        rank = table.get(mt)
        if rank is None:
            if mt in _T12[d.peer] or mt in _T13[d.peer] or mt in (_SERVER_HELLO_DONE, _SERVER_KEY_EXCHANGE,
                                                                  _CLIENT_KEY_EXCHANGE):
                problem = f"the {d.sender} sent {handshake_type_name(mt)}, a message of the other side"
                if t.tls13 and mt in (_SERVER_HELLO_DONE, _SERVER_KEY_EXCHANGE, _CLIENT_KEY_EXCHANGE):
                    problem = f"{handshake_type_name(mt)} in a TLS 1.3 handshake"
        elif (d is _S2C and t.server_hello is None) or (d is _C2S and t.client_hello is None
                                                                 and t.sslv2_hello is None):
            problem = f"{handshake_type_name(mt)} before the {d.sender}'s hello"
        elif rank <= side.rank:
            problem = f"{handshake_type_name(mt)} after {_last(side)}"
        elif d is _C2S and not t.tls13:
            if mt == _CERTIFICATE and t.cert_request is None:
                problem = "a client Certificate although the server did not ask for one"
            elif mt == _CLIENT_KEY_EXCHANGE and _SERVER_HELLO_DONE not in t.server.messages:
                problem = "the client's key exchange before the server's ServerHelloDone"
        side.rank = max(side.rank, rank or 0)
    if problem is None:
        return []
    return [make_finding("UNEXPECTED_MESSAGE", f"Out of order: {problem} ({t.step_text()}).",
                         title=f"unexpected {handshake_type_name(mt)} from the {d.sender}",
                         direction=d, seq=seq, at=hs.at)]


def _last(side: Side) -> str:
    return handshake_type_name(side.messages[-1]) if side.messages else "nothing"


def decode_error(t: Tracker, seq: int, d: Direction, at: float, where: str, reason: str) -> list[Finding]:
    t.decode_errors += 1
    if t.decode_errors > t.max_decode_errors:
        return []
    return [make_finding("DECODE_ERROR", f"{d.sender} {where}: {reason}.", direction=d, seq=seq, at=at)]


def on_other(t: Tracker, seq: int, event: ev.Event) -> list[Finding]:
    d, at = event.direction, event.at
    if isinstance(event, ev.DecodeError):
        if event.where == "alert":
            return []  # ALERT_MALFORMED says it with the bytes
        return decode_error(t, seq, d, at, event.where, event.reason)
    if isinstance(event, ev.ParsingStopped):
        return [make_finding("PARSING_STOPPED", f"Stopped parsing the {d.sender}'s bytes: {event.reason}.",
                             direction=d, seq=seq, at=at)]
    if isinstance(event, ev.StreamGap):
        return [make_finding("STREAM_GAP", f"{event.length} bytes of the {d.sender}'s stream are missing from the "
                             "capture.", direction=d, seq=seq, at=at)]
    if isinstance(event, ev.DecryptionFailed):
        return decryption_failed(t, seq, event)
    return []


#: The wire core says ``cannot decrypt: ...`` when the key log has what it needs but the records
#: cannot be opened here (a version or suite not supported, ciphertext not stored in a session):
#: that is a limit of the view, not a wrong key log.
_UNSUPPORTED_PREFIX = "cannot decrypt"


def decryption_failed(t: Tracker, seq: int, event: ev.DecryptionFailed) -> list[Finding]:
    """One finding per side: later records fail for the same reason, and the first says it."""
    d, at = event.direction, event.at
    side = t.side(d)
    if event.reason.startswith(_UNSUPPORTED_PREFIX) or "not stored in the session" in event.reason:
        if side.decrypt_unsupported_flagged:
            return []
        side.decrypt_unsupported_flagged = True
        return [make_finding("DECRYPTION_UNSUPPORTED", f"The {d.sender}'s records are not decrypted: "
                             f"{event.reason.removeprefix(_UNSUPPORTED_PREFIX).lstrip(': ')}. They are judged by "
                             "their sizes instead.", direction=d, seq=seq, at=at)]
    t.decrypt_failures += 1
    if side.decrypt_failed_flagged:
        return []
    side.decrypt_failed_flagged = True
    return [make_finding("DECRYPTION_FAILED", f"A {event.length}-byte record from the {d.sender} did not "
                         f"authenticate with the key log's secrets ({event.reason}): wrong key log for this "
                         "connection, or the traffic was modified. Its records are judged by their sizes instead.",
                         direction=d, seq=seq, at=at)]
