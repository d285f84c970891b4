"""server_name NameType values (RFC 6066 section 3).

Source: RFC 6066 (IANA keeps no separate table beyond host_name).  8-bit field: unknown values
render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

NAME_TYPES: Final[dict[int, str]] = {0: "host_name"}


def name_type_name(v: int) -> str:
    return name8(NAME_TYPES, v)
