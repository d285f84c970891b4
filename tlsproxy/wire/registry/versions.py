"""Protocol version code points, draft/experiment versions and the RFC 8446 magic randoms.

Source: the ProtocolVersion values of RFC 6101 (SSL 3.0), RFC 2246/4346/5246/8446 (TLS 1.0-1.3)
and RFC 4347/6347/9147 (DTLS); IANA keeps no registry for them.  Pre-standard TLS 1.3 values are
decoded by rule because peers still send them: 0x7fNN is draft-ietf-tls-tls13-NN, 0x7eNN
BoringSSL's (Google's) TLS 1.3 experiments, 0xfbNN Facebook's Fizz builds of draft NN.
Checked 2025 against RFC text.  Unknown values render as ``unknown(0x1a2b)``; GREASE
(RFC 8701) as ``GREASE``.
"""

from __future__ import annotations

from typing import Final

from ._common import GREASE, is_grease, unknown16

SSL2_0: Final = 0x0002
SSL3_0: Final = 0x0300
TLS1_0: Final = 0x0301
TLS1_1: Final = 0x0302
TLS1_2: Final = 0x0303
TLS1_3: Final = 0x0304
DTLS1_0: Final = 0xFEFF
DTLS1_2: Final = 0xFEFD
DTLS1_3: Final = 0xFEFC

VERSIONS: Final[dict[int, str]] = {
    SSL2_0: "SSL 2.0",
    SSL3_0: "SSL 3.0",
    TLS1_0: "TLS 1.0",
    TLS1_1: "TLS 1.1",
    TLS1_2: "TLS 1.2",
    TLS1_3: "TLS 1.3",
    DTLS1_0: "DTLS 1.0",
    DTLS1_2: "DTLS 1.2",
    DTLS1_3: "DTLS 1.3",
    0x0100: "DTLS 1.0 (OpenSSL pre-standard)",
}

#: RFC 8446 4.1.3: a ServerHello whose random is this value is a HelloRetryRequest
#: (it is SHA-256 of the ASCII string "HelloRetryRequest").
HRR_RANDOM: Final = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

#: RFC 8446 4.1.3: last 8 bytes of ServerHello.random from a TLS 1.3 server that negotiated
#: TLS 1.2 (``DOWNGRADE_TLS12``) or TLS 1.1 and below (``DOWNGRADE_TLS11``).
DOWNGRADE_TLS12: Final = b"DOWNGRD\x01"
DOWNGRADE_TLS11: Final = b"DOWNGRD\x00"


def version_name(v: int) -> str:
    """Name a ProtocolVersion value as people write it: ``TLS 1.2``, ``TLS 1.3 (draft 23)``."""
    name = VERSIONS.get(v)
    if name is not None:
        return name
    if is_grease(v):
        return GREASE
    high, low = v >> 8, v & 0xFF
    if high == 0x7F and v <= 0xFFFF:
        return f"TLS 1.3 (draft {low})"
    if high == 0x7E:
        return f"TLS 1.3 (experiment 0x{v:04x})"
    if high == 0xFB:
        return f"TLS 1.3 (Facebook draft {low})"
    return unknown16(v)


def is_tls13_variant(v: int) -> bool:
    """True for TLS 1.3 and its pre-standard draft/experiment code points."""
    return v == TLS1_3 or ((v >> 8) in (0x7F, 0x7E, 0xFB) and 0 <= v <= 0xFFFF)
