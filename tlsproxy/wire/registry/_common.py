"""Shared helpers for the registry lookups: unknown-value labels, GREASE, ``describe``.

Every lookup in this package is total: a value missing from its table is never an error, it becomes
``unknown(...)``.  Fields that are 16 bits wide on the wire (versions, cipher suites, groups,
signature schemes, extensions, certificate compression algorithms) render unknown values as
four-digit lower-case hex, ``unknown(0x1a2b)``; 8-bit fields (content types, handshake types,
alerts, and the small one-byte tables) render them in decimal, ``unknown(7)``, the way the RFCs
write those values.
"""

from __future__ import annotations

from collections.abc import Mapping

GREASE = "GREASE"


def unknown16(value: int) -> str:
    """Label for a 16-bit code point that no table knows."""
    return f"unknown({hex16(value)})"


def unknown8(value: int) -> str:
    """Label for an 8-bit code point that no table knows."""
    return f"unknown({value})"


def hex16(value: int) -> str:
    """``0x1301``-style rendering; negative or oversized values still render, never raise."""
    if value < 0:
        return f"-0x{-value:04x}"
    return f"0x{value:04x}"


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE for 16-bit fields: both bytes equal and of the form 0x?A."""
    return 0 <= value <= 0xFFFF and (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


#: RFC 8701 section 2: the one-byte GREASE values (PskKeyExchangeMode), 0x0B + 0x1F * n.
GREASE_U8: frozenset[int] = frozenset(0x0B + 0x1F * n for n in range(8))


def is_grease_u8(value: int) -> bool:
    """RFC 8701 GREASE for one-byte fields such as psk_key_exchange_modes (0x0B, 0x2A, ... 0xE4)."""
    return value in GREASE_U8


def name16(table: Mapping[int, str], value: int, *, grease: bool = True) -> str:
    """Look ``value`` up in a 16-bit table: its name, ``GREASE``, or ``unknown(0x....)``."""
    name = table.get(value)
    if name is not None:
        return name
    if grease and is_grease(value):
        return GREASE
    return unknown16(value)


def name8(table: Mapping[int, str], value: int) -> str:
    """Look ``value`` up in an 8-bit table: its name or ``unknown(n)``."""
    name = table.get(value)
    return name if name is not None else unknown8(value)


def describe(value: int, name: str, *, bits: int = 16) -> str:
    """Render a value with its name for transcripts: ``TLS_AES_128_GCM_SHA256(0x1301)``.

    16-bit fields (the default) show the value as four hex digits, 8-bit fields (``bits=8``) in
    decimal: ``handshake_failure(40)``.  ``GREASE`` keeps its value (``GREASE(0x0a0a)``) because
    the exact GREASE value matters when comparing hellos; an ``unknown(...)`` label already carries
    its value and is returned unchanged.
    """
    if name.startswith("unknown("):
        return name
    shown = hex16(value) if bits > 8 else str(value)
    return f"{name}({shown})"
