"""How the connection ended: who closed or reset it, at which step, whether an alert came first,
and whether application data ended without close_notify.

Who closed first comes from the wire ``EndOfStream`` events (a FIN per direction) when there are
any, else from the front end's ``by``.  A side that closes its direction while it still owes
handshake messages has given up at that moment (``Tracker.hang_up``): an alert or a reset from the
peer after it is the peer's reaction, and the step and the turn are the ones at the close, not at
the end of the connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.analysis.rules.stalls import waiting
from tlsproxy.wire.events import Direction

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import HangUp, Tracker

FINS = ("fin", "complete")


def closer(t: Tracker, how: str, by: str | None) -> str | None:
    """The side that ended the connection."""
    if how == "reset":
        return by
    if t.first_eof is not None:
        return t.first_eof.sender
    return by if by in ("client", "server") else None


def gave_up_first(t: Tracker) -> HangUp | None:
    """The mid-handshake FIN (``Tracker.hang_up``) when it came before any fatal alert: then that side
    gave up, and an alert or reset from the peer afterwards only answers it."""
    h = t.hang_up
    if h is None or t.complete:
        return None
    fatal = t.first_fatal
    if fatal is not None and fatal.seq < h.seq:
        return None
    return h


def after_hang_up(t: Tracker, h: HangUp) -> str:
    """What the peer did after ``h``: ' The server answered ... with decode_error(50).' or ''."""
    from tlsproxy.analysis.rules.alerts import label

    other = "server" if h.side == "client" else "client"
    fatal = t.first_fatal
    if fatal is not None and fatal.direction.sender == other:
        what = "an encrypted alert" if fatal.inferred else label(fatal.description)
        closing = "empty connection" if h.sent_nothing and h.side == "client" else "hang-up"
        return f" The {other} answered the {h.side}'s {closing} with {what}."
    if t.end_how == "reset" and t.end_by == other:
        return f" The {other} then reset the connection."
    if h.side == "client" and not h.server_hello and t.server_hello is not None:
        return " The server's ServerHello only came after the client had closed."
    return ""


def _hung_up(t: Tracker, h: HangUp) -> list[Finding]:
    direction = Direction.C2S if h.side == "client" else Direction.S2C
    after = after_hang_up(t, h)
    if h.sent_nothing and h.side == "client":
        return [make_finding("NO_CLIENT_HELLO", f"The client closed the connection without sending a byte (a port "
                             f"check, a health probe or a client that changed its mind).{after}",
                             direction=direction, at=h.at)]
    out: list[Finding] = []
    if h.side == "server" and not h.server_hello and h.since_client_hello is not None:
        out += _version_guess(t, h.at)
    when = h.step
    if h.side == "client" and not h.server_hello and h.since_client_hello is not None:
        when = f"{duration(h.since_client_hello)} after its ClientHello, before any ServerHello,"
    owed = f" The {h.turn} still owed {h.owed}." if h.turn else ""
    return out + [make_finding("CLOSED_MID_HANDSHAKE", f"The {h.side} closed its side of the connection (FIN) {when} "
                               f"without an alert.{owed}{after}",
                               title=f"{h.side} closed during the handshake", direction=direction, at=h.at)]


def _version_guess(t: Tracker, at: float) -> list[Finding]:
    from tlsproxy.analysis.rules.versions import client_max, offered_text

    top = client_max(t)
    if top is not None and top < 0x0303:
        return [make_finding("VERSION_MISMATCH", f"The server hung up right after a ClientHello offering "
                             f"{offered_text(t)}: most likely it refuses anything below TLS 1.2 "
                             f"(inferred: it sent no protocol_version alert).", at=at)]
    return []


def duration(seconds: float) -> str:
    """``1.7 ms`` / ``450 ms`` / ``13.0 s``."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def on_end(t: Tracker, *, how: str, by: str | None, reason: str | None, at: float) -> list[Finding]:
    if how in ("upstream_failed", "refused"):
        return [make_finding("UPSTREAM_UNREACHABLE", f"The proxy could not connect to the server"
                             f"{': ' + reason if reason else ''}.", at=at)]
    if not t.client.bytes_seen and not t.server.bytes_seen:
        if how in FINS or how == "reset" or t.hang_up is not None:
            return [make_finding("NO_CLIENT_HELLO", f"The connection ended ({how}) before either side sent a "
                                 f"byte.", at=at)]
        return []
    if t.client.not_tls is not None or t.server.not_tls is not None:
        return []
    who = closer(t, how, by)
    if not t.complete:
        h = gave_up_first(t)
        if h is not None:
            return _hung_up(t, h)
        if t.first_fatal is not None:
            return []
        turn, what = waiting(t)
        owed = f" The {turn} still owed {what}." if turn else ""
        step = t.step_text()
        out: list[Finding] = []
        if who == "server" and how in FINS + ("reset",) and t.server_hello is None:
            out += _version_guess(t, at)
        when = step
        if how == "reset" and who == "client" and t.server_hello is None and t.client_hello_at is not None:
            when = f"{duration(max(0.0, at - t.client_hello_at))} after its ClientHello, before any ServerHello"
        if how == "reset":
            return out + [make_finding("RESET_MID_HANDSHAKE", f"The connection was reset"
                                 f"{' by the ' + who if who else ''} {when}, without an alert.{owed}",
                                 title=f"{who or 'connection'} reset during the handshake", at=at)]
        if how in FINS:
            return out + [make_finding("CLOSED_MID_HANDSHAKE", f"The {who or 'one side'} closed the connection {step} "
                                 f"without an alert.{owed}",
                                 title=f"{who or 'connection'} closed during the handshake", at=at)]
        if how == "idle_timeout":
            return [make_finding("CONNECTION_IDLE_TIMEOUT", f"The connection sat idle {step} until the timeout."
                                 f"{owed}", at=at)]
        return []
    if how == "reset":
        return [make_finding("RESET_AFTER_HANDSHAKE", f"The connection was reset{' by the ' + who if who else ''} "
                             "after the handshake.", at=at)]
    if how in FINS and who is not None:
        side = t.client if who == "client" else t.server
        other = t.server if who == "client" else t.client
        said = other.close_notify_seq
        if (said is not None and (side.eof_seq is None or said < side.eof_seq)
                and (side.last_app_seq is None or said > side.last_app_seq)):
            # The peer had said close_notify after this side's last data: closing without answering
            # it is normal, nothing of this side's was cut.  (Data sent after the peer's close_notify,
            # or a small record of the peer's that came before this side's data, does not count.)
            return []
        if side.app_records and not side.close_notify:
            return [make_finding("TRUNCATED_NO_CLOSE_NOTIFY", f"The {who} closed after {side.app_records} "
                                 f"application data record(s) without sending close_notify first.",
                                 direction=side.direction, at=at)]
    return []
