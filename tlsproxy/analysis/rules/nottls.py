"""Not TLS: a client speaking plain HTTP to a TLS port, a server answering in plain text, protocol
banners that want STARTTLS first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import Finding
from tlsproxy.wire import events as ev
from tlsproxy.wire.events import Direction

if TYPE_CHECKING:
    from tlsproxy.analysis.tracker import Tracker

BANNERS = {"smtp": "SMTP", "ftp": "FTP", "pop3": "POP3", "imap": "IMAP", "xmpp": "XMPP", "ssh": "SSH"}
_STARTTLS = {"smtp": "STARTTLS", "ftp": "AUTH TLS", "pop3": "STLS", "imap": "STARTTLS", "xmpp": "<starttls/>"}


def describe(e: ev.NotTLS) -> str:
    first = f" {e.first_line!r}" if e.first_line else f" (first bytes {e.first_bytes[:16].hex(' ')})"
    return f"{e.protocol}{first}"


def unambiguous(t: Tracker, e: ev.NotTLS) -> bool:
    """Report at once, or wait for a STARTTLS-style upgrade (SMTP banner, HTTP CONNECT, SOCKS)?
    A plain HTTP request, and plaintext from a server after a TLS ClientHello, never upgrade."""
    if e.direction is Direction.C2S:
        return e.protocol == "http-request"
    return t.client_hello is not None or t.sslv2_hello is not None


def on_not_tls(t: Tracker, seq: int, e: ev.NotTLS) -> list[Finding]:
    d = e.direction
    if d is Direction.C2S:
        if e.protocol == "http-request":
            text = (f"The client sent a plain HTTP request ({e.first_line!r}) where a TLS ClientHello belongs: "
                    "it uses http:// (or plaintext) against a TLS port.")
        else:
            text = f"The client's first bytes are not TLS: {describe(e)}."
        return [make_finding("NOT_TLS_CLIENT", text, direction=d, seq=seq, at=e.at)]
    hints: tuple[str, ...] = ()
    if e.protocol in BANNERS:
        text = (f"The server greeted with a {BANNERS[e.protocol]} banner ({e.first_line!r}): it speaks plaintext "
                f"{BANNERS[e.protocol]} here.")
        if e.protocol in _STARTTLS:
            hints = (f"Use {_STARTTLS[e.protocol]} (the client's STARTTLS mode) on this port, or the implicit-TLS "
                     f"port of the service.",)
    elif e.protocol == "http-response":
        text = (f"The server answered in plain HTTP ({e.first_line!r}): this port serves HTTP without TLS"
                + (", and it did not understand the ClientHello." if t.client_hello is not None else "."))
    else:
        text = f"The server's bytes are not TLS: {describe(e)}."
    return [make_finding("NOT_TLS_SERVER", text, hints=hints, direction=d, seq=seq, at=e.at)]


def on_starttls(t: Tracker, seq: int, e: ev.StartTLS) -> list[Finding]:
    return [make_finding("STARTTLS", f"The {e.direction.sender}'s {e.protocol} session switched to TLS.",
                         direction=e.direction, seq=seq, at=e.at)]
