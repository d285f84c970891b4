"""Naming what a stream is when it is not TLS, and finding where TLS starts after a plaintext
prologue (STARTTLS, an HTTP CONNECT exchange, a SOCKS handshake)."""

from __future__ import annotations

import re

_HTTP_METHODS = (
    b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE ", b"PRI * HTTP/2",
)


def guess_protocol(data: bytes) -> str:
    """A best guess at the protocol of a stream that does not start with a TLS record."""
    if data.startswith(b"CONNECT "):
        return "http-connect"
    if data.startswith(_HTTP_METHODS):
        return "http-request"
    if data.startswith(b"HTTP/"):
        return "http-response"
    if data.startswith(b"SSH-"):
        return "ssh"
    if data.startswith(b"<?xml") or data.startswith(b"<stream:stream"):
        return "xmpp"
    if data.startswith(b"+OK") or data.startswith(b"-ERR"):
        return "pop3"
    if data.startswith(b"* OK") or data.startswith(b"* PREAUTH") or data.startswith(b"* BYE"):
        return "imap"
    if re.match(rb"220[ -]", data):
        head = data[:200].upper()
        return "ftp" if b"FTP" in head else "smtp"
    if re.match(rb"(EHLO|HELO) ", data, re.I):
        return "smtp"
    if re.match(rb"(USER|AUTH|FEAT|SYST) ", data, re.I):
        return "ftp"
    if re.match(rb"(CAPA|STLS)\r?\n", data, re.I):
        return "pop3"
    if re.match(rb"[A-Za-z0-9]+ (CAPABILITY|STARTTLS|LOGIN)", data, re.I):
        return "imap"
    if len(data) >= 2 and data[0] == 5 and (data[1] <= 9 or data[1] == 0xFF):
        return "socks5"  # a client greeting (method count) or a server's method choice
    if len(data) >= 8 and data[0] == 4 and data[1] in (1, 2):
        return "socks4"
    if len(data) >= 8 and data[0] == 0 and 0x5A <= data[1] <= 0x5D:
        return "socks4"  # the server's reply
    if _is_text(data):
        return "text"
    return "binary"


def _is_text(data: bytes) -> bool:
    sample = data[:256]
    if not sample:
        return False
    printable = sum(1 for b in sample if 32 <= b < 127 or b in (9, 10, 13))
    return printable >= len(sample) * 0.9


def first_line(data: bytes) -> str | None:
    """The first line of a text stream, for showing in a finding (``HTTP/1.1 400 Bad Request``)."""
    if not _is_text(data[:256]):
        return None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")[:200]
    return line.decode("ascii", "replace")


# Protocols whose plaintext prologue can be followed by TLS on the same connection.
UPGRADABLE = frozenset({"smtp", "pop3", "imap", "ftp", "xmpp", "http-connect", "http-response", "socks5", "socks4"})


def find_tls_start(data: bytes, start: int, hello_type: int, line_based: bool) -> int:
    """Offset of a TLS handshake record carrying a hello of ``hello_type`` (1 client, 2 server)
    in ``data[start:]``, or -1.  Text protocols switch at a line boundary (after ``\\n`` or an XML
    ``>``); SOCKS replies are binary, so any position is accepted there."""
    pos = start
    while True:
        pos = data.find(b"\x16\x03", pos)
        if pos < 0 or pos + 6 > len(data):
            return -1
        plausible = data[pos + 2] <= 4 and data[pos + 5] == hello_type
        boundary = not line_based or pos == 0 or data[pos - 1] in (0x0A, 0x3E)
        if plausible and boundary:
            return pos
        pos += 1
