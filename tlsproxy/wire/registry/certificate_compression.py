"""Certificate compression algorithms (RFC 8879 compress_certificate extension).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS Certificate Compression
Algorithm IDs", checked 2025.  16-bit field: unknown values render as ``unknown(0x1a2b)``,
RFC 8701 values as ``GREASE``.
"""

from __future__ import annotations

from typing import Final

from ._common import name16

CERTIFICATE_COMPRESSION_ALGORITHMS: Final[dict[int, str]] = {1: "zlib", 2: "brotli", 3: "zstd"}


def certificate_compression_algorithm_name(v: int) -> str:
    return name16(CERTIFICATE_COMPRESSION_ALGORITHMS, v)
