"""Stalls: a handshake that stopped moving, whose turn it is and what that side owes.

``waiting`` reads the turn from the messages seen so far; the closes and the diagnosis use it too
("the server closed while the client owed its Finished" reads differently from "while the server
owed its ServerHello").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.wire.messages import HandshakeType as H

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Tracker

# Plain ints: enum attribute lookups are slow in Python 3.11 and waiting() runs once per connection or more.
_SERVER_HELLO = int(H.server_hello)
_SERVER_HELLO_DONE = int(H.server_hello_done)


def waiting(t: Tracker) -> tuple[str | None, str]:
    """(the side that must act next, what it is expected to send); (None, '') when nobody owes anything."""
    if t.client_hello is None and t.sslv2_hello is None:
        return "client", "its ClientHello"
    if t.server_hello is None and not t.sslv2:
        if _SERVER_HELLO in t.server.messages:
            return None, ""  # a ServerHello we could not decode: the turn is unknown
        if t.hello_retry is not None and t.client_hellos < 2:
            return "client", "its second ClientHello (after the HelloRetryRequest)"
        return "server", "a ServerHello"
    if t.complete or t.sslv2:
        return None, ""
    if t.tls13:
        if t.client_flight_at is None:
            return "client", "its Finished flight in answer to the server's encrypted flight"
        return None, ""
    sm = t.server.messages
    if t.resumed or (t.server.ccs and _SERVER_HELLO_DONE not in sm):
        if not t.server.finished:
            return "server", "its change_cipher_spec and Finished (resumed session)"
        return "client", "its change_cipher_spec and Finished"
    if _SERVER_HELLO_DONE not in sm:
        return "server", "the rest of its flight (Certificate ... ServerHelloDone)"
    if not t.client.ccs:
        return "client", "its ClientKeyExchange, change_cipher_spec and Finished"
    if not t.client.finished:
        return "client", "its Finished"
    if not t.server.finished:
        return "server", "its change_cipher_spec and Finished"
    return None, ""


def owes_handshake(t: Tracker, who: str) -> bool:
    """Whether ``who`` still had handshake messages of its own to send: a side that closes its
    direction then can no longer complete the handshake, so its close is where it gave up.  A TLS 1.3
    client is done after its Finished flight (the server's verdict may still come), a TLS 1.2 side
    after its Finished."""
    if t.complete or t.sslv2:
        return False
    if who == "client":
        if t.client_hello is None and t.sslv2_hello is None:
            return True
        if t.client.finished or (t.tls13 and t.client_flight_at is not None):
            return False
        return True
    if t.server_hello is None:
        return True
    return not t.server.finished


def check(t: Tracker, now: float) -> list[Finding]:
    if t.complete or t.end_how is not None or t.first_fatal is not None or t.hang_up is not None:
        return []
    if t.client.not_tls is not None or t.server.not_tls is not None:
        return []
    idle = now - t.progress_at
    if idle < t.options.stall_after:
        return []
    who, what = waiting(t)
    if who is None:
        return []
    key = f"{t.step}@{t.step_at}"
    if key in t.stall_reported:
        return []
    t.stall_reported.add(key)
    if t.step == "start":
        text = f"The connection has been open {idle:.1f} s and the client has not sent a ClientHello."
    else:
        text = (f"{(t.step_by or 'the connection').capitalize()} sent {t.step} {now - t.step_at:.1f} s ago; "
                f"the {who} has not answered with {what}.")
    return [make_finding("HANDSHAKE_STALLED", text, title=f"handshake stalled: waiting for the {who}", at=now)]
