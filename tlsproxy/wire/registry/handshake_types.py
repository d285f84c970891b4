"""TLS HandshakeType values.

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS HandshakeType"
(tls-parameters-7), checked 2025.  IANA lists value 6 as hello_retry_request_RESERVED (RFC 8446
made HelloRetryRequest a ServerHello) but TLS 1.3 drafts up to -21 sent it as its own message, so
it keeps its working name.  Two widely deployed non-IANA types are included and marked below.
8-bit field: unknown values render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

HANDSHAKE_TYPES: Final[dict[int, str]] = {
    0: "hello_request",
    1: "client_hello",
    2: "server_hello",
    3: "hello_verify_request",
    4: "new_session_ticket",
    5: "end_of_early_data",
    6: "hello_retry_request",
    8: "encrypted_extensions",
    9: "request_connection_id",
    10: "new_connection_id",
    11: "certificate",
    12: "server_key_exchange",
    13: "certificate_request",
    14: "server_hello_done",
    15: "certificate_verify",
    16: "client_key_exchange",
    17: "client_certificate_request",
    20: "finished",
    21: "certificate_url",
    22: "certificate_status",
    23: "supplemental_data",
    24: "key_update",
    25: "compressed_certificate",
    26: "ekt_key",
    254: "message_hash",
    # Not IANA-assigned, but seen on the wire:
    67: "next_protocol",  # NPN (draft-agl-tls-nextprotoneg), pre-ALPN Chrome/OpenSSL
    203: "channel_id",  # Google Channel ID / Token Binding predecessor
}


def handshake_type_name(v: int) -> str:
    return name8(HANDSHAKE_TYPES, v)
