"""CompressionMethod values (ClientHello.legacy_compression_methods).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS Compression Method
Identifiers", checked 2025.  Anything but null(0) is a CRIME risk.  8-bit field:
unknown values render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

COMPRESSION_METHODS: Final[dict[int, str]] = {0: "null", 1: "DEFLATE", 64: "LZS"}


def compression_method_name(v: int) -> str:
    return name8(COMPRESSION_METHODS, v)
