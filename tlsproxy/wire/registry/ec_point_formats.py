"""ECPointFormat values (the ec_point_formats extension).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS EC Point Format",
checked 2025.  8-bit field: unknown values render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

EC_POINT_FORMATS: Final[dict[int, str]] = {
    0: "uncompressed",
    1: "ansiX962_compressed_prime",
    2: "ansiX962_compressed_char2",
}


def ec_point_format_name(v: int) -> str:
    return name8(EC_POINT_FORMATS, v)
