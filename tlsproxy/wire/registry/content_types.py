"""TLS ContentType values (record layer).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS ContentType"
(tls-parameters-5), checked 2025.  8-bit field: unknown values render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

CONTENT_TYPES: Final[dict[int, str]] = {
    20: "change_cipher_spec",
    21: "alert",
    22: "handshake",
    23: "application_data",
    24: "heartbeat",
    25: "tls12_cid",
    26: "ack",
}


def content_type_name(v: int) -> str:
    return name8(CONTENT_TYPES, v)
