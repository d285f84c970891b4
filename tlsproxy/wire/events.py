"""Typed events produced by the sans-IO wire core.

Every event says which direction it belongs to, where in that direction's byte stream it starts
(``offset``) and when the bytes that completed it were fed (``at``, whatever clock the caller uses).
Events are frozen, slotted and keyword-only so that they can be shared between sinks without copies
and compared in tests.  Application data only ever carries its length.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlsproxy.wire.messages import Message
    from tlsproxy.wire.sslv2 import SSLv2Message


class Direction(enum.Enum):
    """Which way bytes travel; the client is the side that opened the TCP connection."""

    C2S = "c2s"
    S2C = "s2c"

    # Members are singletons: identity hashing is correct and, unlike Enum's default (a Python
    # function hashing the name), costs nothing on the per-record dictionary lookups.
    __hash__ = object.__hash__

    @property
    def peer(self) -> Direction:
        return Direction.S2C if self is Direction.C2S else Direction.C2S

    @property
    def sender(self) -> str:
        return "client" if self is Direction.C2S else "server"

    @property
    def arrow(self) -> str:
        return "→" if self is Direction.C2S else "←"


class ContentType(enum.IntEnum):
    """TLS ContentType values (IANA "TLS ContentType" registry)."""

    change_cipher_spec = 20
    alert = 21
    handshake = 22
    application_data = 23
    heartbeat = 24
    tls12_cid = 25
    ack = 26


_EV = dict(frozen=True, slots=True, kw_only=True)


@dataclass(**_EV)
class Event:
    """Base of every event: the direction, the stream offset and the feed time."""

    direction: Direction
    offset: int
    at: float


@dataclass(**_EV)
class Record(Event):
    """One TLS record, emitted for every record before the events decoded from its content.

    ``payload`` holds the plaintext fragment for records the core decodes (handshake, alert,
    change_cipher_spec, heartbeat, unknown types) and, for protected records of the handshake
    phase, their ciphertext (so that a saved session can be decrypted later with a key log).  It is
    ``None`` for application data and application-phase ciphertext, so the hot path never copies
    bulk data.

    ``encrypted`` is true when the record is protected (TLS <= 1.2 after its direction's
    change_cipher_spec; TLS 1.3 application_data-typed records after the ServerHello; 0-RTT data).
    ``phase`` then says where it appeared: ``early_data``, ``handshake`` (before the handshake
    completed, as far as the core can tell) or ``application``.  ``decrypted`` is true when the
    core could read it: with a key log, or because the suite is a NULL cipher (a MAC, no
    encryption); ``inner_type`` is then the real content type.
    """

    content_type: int
    version: int
    length: int
    encrypted: bool = False
    phase: str = ""
    decrypted: bool = False
    inner_type: int | None = None
    payload: bytes | None = None


@dataclass(**_EV)
class HandshakeMessage(Event):
    """A complete handshake message, reassembled across records if needed.

    ``raw`` is the whole message including its 4-byte header.  ``message`` is the decoded body or
    ``None`` when decoding failed, in which case ``error`` names the field and offset.
    ``offset`` is the stream offset of the record that carried the message's first byte.
    """

    msg_type: int
    length: int
    raw: bytes
    message: Message | None
    error: str | None = None
    decrypted: bool = False


@dataclass(**_EV)
class Alert(Event):
    """A plaintext (or decrypted) alert.  ``malformed`` is set when the body is not exactly two bytes;
    ``level``/``description`` are then taken from what is there (or ``None``)."""

    level: int | None
    description: int | None
    raw: bytes
    malformed: bool = False
    decrypted: bool = False


@dataclass(**_EV)
class ChangeCipherSpec(Event):
    """A change_cipher_spec record.  ``valid`` is false when its body is not the single byte 0x01.
    ``starts_encryption`` is false for the TLS 1.3 middlebox-compatibility message."""

    raw: bytes
    valid: bool
    starts_encryption: bool


@dataclass(**_EV)
class Heartbeat(Event):
    """A heartbeat message (RFC 6520).  ``payload_length`` is what the message claims;
    ``record_length`` what the record actually holds: a claim larger than the record is the
    Heartbleed probe signature."""

    hb_type: int | None
    payload_length: int | None
    record_length: int
    encrypted: bool = False


@dataclass(**_EV)
class SSLv2Record(Event):
    """An SSL 2.0 format record (RFC 6101 appendix E / the SSLv2 spec).  ``message`` is the decoded
    CLIENT-HELLO or SERVER-HELLO when the record is a cleartext hello, else ``None``."""

    length: int
    msg_type: int | None
    raw: bytes | None
    message: SSLv2Message | None
    encrypted: bool = False
    error: str | None = None


@dataclass(**_EV)
class NotTLS(Event):
    """The direction's bytes are not TLS.  ``protocol`` is a best guess (``http-request``,
    ``http-response``, ``ssh``, ``smtp``, ``ftp``, ``pop3``, ``imap``, ``xmpp``, ``text``,
    ``binary``); ``first_line`` is the first line when the data is text."""

    protocol: str
    first_bytes: bytes
    first_line: str | None = None


@dataclass(**_EV)
class StartTLS(Event):
    """A plaintext protocol upgraded to TLS in this direction (STARTTLS, STLS, AUTH TLS, XMPP
    <starttls/>): TLS records start at ``offset``."""

    protocol: str


@dataclass(**_EV)
class DecodeError(Event):
    """Something could not be parsed.  ``where`` is the layer (``record``, ``handshake``,
    ``alert``, ``heartbeat``, ``sslv2``, ``decrypt``), ``reason`` a sentence naming the field."""

    where: str
    reason: str


@dataclass(**_EV)
class ParsingStopped(Event):
    """This direction is no longer parsed (bytes keep flowing; only the view stops)."""

    reason: str


@dataclass(**_EV)
class DecryptionFailed(Event):
    """A record could not be opened with the keys we have (wrong key log or tampering)."""

    content_type: int
    length: int
    reason: str


@dataclass(**_EV)
class DecryptedData(Event):
    """The first bytes of a decrypted application-data record, emitted only when the connection
    was asked to show them (``--show-data N``).  For the screen only: sinks that keep sessions
    must not store it (application data is never saved)."""

    length: int
    preview: bytes


@dataclass(**_EV)
class StreamGap(Event):
    """Bytes are missing from the stream (a capture lost segments).  The direction stops being
    parsed because record boundaries cannot be recovered reliably."""

    length: int


@dataclass(**_EV)
class EndOfStream(Event):
    """The direction was closed (FIN).  ``buffered`` counts bytes of an incomplete record left."""

    buffered: int = 0
