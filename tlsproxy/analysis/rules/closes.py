"""How the connection ended: who closed or reset it, at which step, whether an alert came first,
and whether application data ended without close_notify.

Who closed first comes from the wire ``EndOfStream`` events (a FIN per direction) when there are
any, else from the front end's ``by``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.analysis.rules.stalls import waiting

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Tracker

FINS = ("fin", "complete")


def closer(t: Tracker, how: str, by: str | None) -> str | None:
    """The side that ended the connection."""
    if how == "reset":
        return by
    if t.first_eof is not None:
        return t.first_eof.sender
    return by if by in ("client", "server") else None


def on_end(t: Tracker, *, how: str, by: str | None, reason: str | None, at: float) -> list[Finding]:
    if how in ("upstream_failed", "refused"):
        return [make_finding("UPSTREAM_UNREACHABLE", f"The proxy could not connect to the server"
                             f"{': ' + reason if reason else ''}.", at=at)]
    if not t.client.bytes_seen and not t.server.bytes_seen:
        if how in FINS or how == "reset":
            return [make_finding("NO_CLIENT_HELLO", f"The connection ended ({how}) before any byte was sent.", at=at)]
        return []
    if t.client.not_tls is not None or t.server.not_tls is not None:
        return []
    who = closer(t, how, by)
    if not t.complete:
        if t.first_fatal is not None:
            return []
        turn, what = waiting(t)
        owed = f" The {turn} still owed {what}." if turn else ""
        step = t.step_text()
        out: list[Finding] = []
        if who == "server" and how in FINS + ("reset",) and t.server_hello is None:
            from tlsproxy.analysis.rules.versions import client_max, offered_text

            top = client_max(t)
            if top is not None and top < 0x0303:
                out.append(make_finding("VERSION_MISMATCH", f"The server hung up right after a ClientHello offering "
                                        f"{offered_text(t)}: most likely it refuses anything below TLS 1.2 "
                                        f"(inferred: it sent no protocol_version alert).", at=at))
        if how == "reset":
            return out + [make_finding("RESET_MID_HANDSHAKE", f"The connection was reset"
                                 f"{' by the ' + who if who else ''} {step}, without an alert.{owed}",
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
        if side.app_records and not side.close_notify:
            return [make_finding("TRUNCATED_NO_CLOSE_NOTIFY", f"The {who} closed after {side.app_records} "
                                 f"application data record(s) without sending close_notify first.",
                                 direction=side.direction, at=at)]
    return []
