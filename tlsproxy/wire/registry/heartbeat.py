"""Heartbeat (RFC 6520) message types and modes.

Source: IANA "Transport Layer Security (TLS) Parameters", registries "Heartbeat Message Types" and
"Heartbeat Modes", checked 2025.  8-bit fields: unknown values render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

HEARTBEAT_MESSAGE_TYPES: Final[dict[int, str]] = {1: "heartbeat_request", 2: "heartbeat_response"}
HEARTBEAT_MODES: Final[dict[int, str]] = {1: "peer_allowed_to_send", 2: "peer_not_allowed_to_send"}


def heartbeat_message_type_name(v: int) -> str:
    return name8(HEARTBEAT_MESSAGE_TYPES, v)


def heartbeat_mode_name(v: int) -> str:
    return name8(HEARTBEAT_MODES, v)
