"""PskKeyExchangeMode values (the psk_key_exchange_modes extension).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS PskKeyExchangeMode",
checked 2025; RFC 8701 one-byte GREASE values render as ``GREASE``.  8-bit field: unknown values
render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import GREASE, is_grease_u8, name8

PSK_KEY_EXCHANGE_MODES: Final[dict[int, str]] = {0: "psk_ke", 1: "psk_dhe_ke"}


def psk_key_exchange_mode_name(v: int) -> str:
    if v not in PSK_KEY_EXCHANGE_MODES and is_grease_u8(v):
        return GREASE
    return name8(PSK_KEY_EXCHANGE_MODES, v)
