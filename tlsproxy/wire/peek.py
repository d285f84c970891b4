"""Peek at the start of a client's stream for the ClientHello's server_name.

The SNI relay mode must choose the upstream before any byte is forwarded, so it looks at the
bytes buffered so far and asks: is the ClientHello complete yet, and which host does it name?
This module answers without consuming anything; the relay then forwards the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from tlsproxy.wire.reader import Reader, WireError

# The SNI mode holds the client's bytes until the ClientHello is complete.  A hello over 64 KiB
# exceeds every real implementation's limit (post-quantum hellos are ~1.8 KiB), so stop waiting.
MAX_PEEK = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class PeekResult:
    status: str  # "need_more" | "ok" | "not_tls" | "error"
    server_name: str | None = None
    reason: str | None = None
    needed: int = 0  # with need_more: no answer can change before this many bytes are buffered


def _handshake_prefix(data: bytes) -> tuple[bytes, bool, int]:
    """Concatenate handshake-record payloads from the start of ``data``.

    Returns the handshake bytes seen so far, whether a non-handshake record interrupted them, and
    where the record being read ends (the next point at which more can be known).
    """
    out = bytearray()
    pos = 0
    while pos + 5 <= len(data):
        ctype = data[pos]
        length = (data[pos + 3] << 8) | data[pos + 4]
        if ctype != 22:
            return bytes(out), True, pos
        out += data[pos + 5 : pos + 5 + length]
        if pos + 5 + length > len(data):
            return bytes(out), False, pos + 5 + length
        pos += 5 + length
    return bytes(out), False, pos + 5


def peek_server_name(data: bytes) -> PeekResult:
    """Look for a complete ClientHello at the start of ``data`` and return its host_name."""
    if not data:
        return PeekResult(status="need_more", needed=1)
    if data[0] != 22:
        return PeekResult(status="not_tls", reason=f"first byte 0x{data[0]:02x} is not a TLS handshake record")
    if len(data) >= 2 and data[1] != 3:
        return PeekResult(status="not_tls", reason=f"record version major byte 0x{data[1]:02x} is not 3")
    hs, interrupted, record_end = _handshake_prefix(data)
    if len(hs) < 4:
        if interrupted or len(data) > MAX_PEEK:
            return PeekResult(status="error", reason="no ClientHello before other records")
        return PeekResult(status="need_more", needed=record_end)
    if hs[0] != 1:
        return PeekResult(status="error", reason=f"first handshake message has type {hs[0]}, not client_hello")
    body_len = int.from_bytes(hs[1:4], "big")
    if len(hs) < 4 + body_len:
        if interrupted or len(data) > MAX_PEEK:
            return PeekResult(status="error", reason="ClientHello incomplete or too large")
        return PeekResult(status="need_more", needed=record_end)
    try:
        return PeekResult(status="ok", server_name=_server_name(Reader(hs, 4, 4 + body_len)))
    except WireError as exc:
        return PeekResult(status="error", reason=f"malformed ClientHello: {exc}")


def _server_name(r: Reader) -> str | None:
    r.u16("legacy_version")
    r.bytes(32, "random")
    r.vec(1, "legacy_session_id")
    r.vec(2, "cipher_suites")
    r.vec(1, "legacy_compression_methods")
    if r.at_end():
        return None
    exts = r.sub(2, "extensions")
    while not exts.at_end():
        ext_type = exts.u16("extension_type")
        body = exts.sub(2, "extension_data")
        if ext_type != 0:
            continue
        names = body.sub(2, "server_name_list")
        while not names.at_end():
            name_type = names.u8("name_type")
            name = names.vec(2, "host_name")
            if name_type == 0:
                return name.decode("ascii", "replace")
    return None
