"""Feeding recorded chunks to the wire core in different splits, and summarising what came out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from tlsproxy.wire import events as ev
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.events import Direction
from tlsproxy.wire.messages import Certificate, HandshakeType
from tlsproxy.wire.registry import alert_description_name, alert_level_name

Chunks = Sequence[tuple[Direction, bytes]]


def feed_all(chunks: Chunks, split: Callable[[bytes], list[bytes]] | None = None, *, eof: bool = True,
             conn: TLSConnection | None = None) -> list[ev.Event]:
    conn = conn or TLSConnection()
    out: list[ev.Event] = []
    for direction, data in chunks:
        for piece in (split(data) if split else [data]):
            out.extend(conn.feed(direction, piece, at=0.0))
    if eof:
        out.extend(conn.feed(Direction.C2S, b"", at=0.0))
        out.extend(conn.feed(Direction.S2C, b"", at=0.0))
    return out


def of_type(events: Iterable[ev.Event], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def messages(events: Iterable[ev.Event], direction: Direction | None = None) -> list:
    return [e.message for e in events
            if isinstance(e, ev.HandshakeMessage) and (direction is None or e.direction is direction)]


_TSHARK_NAMES = {
    HandshakeType.hello_request: "HelloRequest",
    HandshakeType.client_hello: "ClientHello",
    HandshakeType.server_hello: "ServerHello",
    HandshakeType.new_session_ticket: "NewSessionTicket",
    HandshakeType.encrypted_extensions: "EncryptedExtensions",
    HandshakeType.certificate: "Certificate",
    HandshakeType.server_key_exchange: "ServerKeyExchange",
    HandshakeType.certificate_request: "CertificateRequest",
    HandshakeType.server_hello_done: "ServerHelloDone",
    HandshakeType.certificate_verify: "CertificateVerify",
    HandshakeType.client_key_exchange: "ClientKeyExchange",
    HandshakeType.finished: "Finished",
    HandshakeType.certificate_status: "CertificateStatus",
    HandshakeType.key_update: "KeyUpdate",
    HandshakeType.end_of_early_data: "EndOfEarlyData",
}


def tshark_style(events: Iterable[ev.Event]) -> str:
    """The message sequence in the notation of the corpus' tshark summaries (see MANIFEST.md):
    ``C: ClientHello | S: ServerHello,Certificate(2),...``, consecutive equal labels as ``xN``."""
    flights: list[tuple[str, list[str]]] = []

    def add(direction: Direction, label: str) -> None:
        side = "C" if direction is Direction.C2S else "S"
        if not flights or flights[-1][0] != side:
            flights.append((side, []))
        flights[-1][1].append(label)

    for e in events:
        if isinstance(e, ev.HandshakeMessage):
            m = e.message
            if e.msg_type == HandshakeType.server_hello and m is not None and m.is_hello_retry_request:
                label = "HelloRetryRequest"
            elif isinstance(m, Certificate):
                label = f"Certificate({len(m.entries)})"
            else:
                label = _TSHARK_NAMES.get(e.msg_type, f"Handshake({e.msg_type})")
            add(e.direction, label)
        elif isinstance(e, ev.Record) and e.decrypted:
            if e.inner_type == 23:
                add(e.direction, "AppData")
        elif isinstance(e, ev.Record) and e.encrypted:
            if e.content_type == 22:
                add(e.direction, "EncryptedHandshake")
            elif e.content_type == 20:  # a renegotiation's change_cipher_spec, under the old keys
                add(e.direction, "ChangeCipherSpec")
            elif e.content_type == 21:
                add(e.direction, "Alert(encrypted)")
            elif e.content_type == 23:
                add(e.direction, "AppData")
            elif e.content_type == 24:
                add(e.direction, "Heartbeat")
        elif isinstance(e, ev.Record) and e.content_type == 23:
            add(e.direction, "AppData")
        elif isinstance(e, ev.Record) and e.content_type == 24:
            add(e.direction, "Heartbeat")
        elif isinstance(e, ev.ChangeCipherSpec):
            add(e.direction, "ChangeCipherSpec")
        elif isinstance(e, ev.Alert) and not e.malformed:
            add(e.direction, f"Alert({alert_level_name(e.level)}:{alert_description_name(e.description)})")
        elif isinstance(e, ev.SSLv2Record):
            names = {1: "SSLv2-ClientHello", 2: "SSLv2-ClientMasterKey", 4: "SSLv2-ServerHello"}
            add(e.direction, "SSLv2-encrypted" if e.encrypted else names.get(e.msg_type, "SSLv2-other"))
    parts = []
    for side, labels in flights:
        grouped: list[str] = []
        i = 0
        while i < len(labels):
            j = i
            while j < len(labels) and labels[j] == labels[i]:
                j += 1
            grouped.append(labels[i] + (f"x{j - i}" if j - i > 1 else ""))
            i = j
        parts.append(f"{side}: " + ",".join(grouped))
    return " | ".join(parts)
