"""Supported groups (named curves, finite-field groups, hybrid post-quantum KEMs).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS Supported Groups"
(tls-parameters-8), checked 2025 against a copy listing MLKEM512..1024 and the
X25519MLKEM768/SecP256r1MLKEM768/SecP384r1MLKEM1024 hybrids.  The pre-standard Kyber hybrids
(0x6399, 0x639A) keep their IANA names without IANA's "(OBSOLETE)" suffix.  Private-use
experiments (0xFE00-0xFEFF) are deliberately left unnamed: deployments disagree on them.  Unknown
values render as ``unknown(0x1a2b)``, RFC 8701 values as ``GREASE``.
"""

from __future__ import annotations

from typing import Final

from ._common import name16

GROUPS: Final[dict[int, str]] = {
    1: "sect163k1",
    2: "sect163r1",
    3: "sect163r2",
    4: "sect193r1",
    5: "sect193r2",
    6: "sect233k1",
    7: "sect233r1",
    8: "sect239k1",
    9: "sect283k1",
    10: "sect283r1",
    11: "sect409k1",
    12: "sect409r1",
    13: "sect571k1",
    14: "sect571r1",
    15: "secp160k1",
    16: "secp160r1",
    17: "secp160r2",
    18: "secp192k1",
    19: "secp192r1",
    20: "secp224k1",
    21: "secp224r1",
    22: "secp256k1",
    23: "secp256r1",
    24: "secp384r1",
    25: "secp521r1",
    26: "brainpoolP256r1",
    27: "brainpoolP384r1",
    28: "brainpoolP512r1",
    29: "x25519",
    30: "x448",
    31: "brainpoolP256r1tls13",
    32: "brainpoolP384r1tls13",
    33: "brainpoolP512r1tls13",
    34: "GC256A",
    35: "GC256B",
    36: "GC256C",
    37: "GC256D",
    38: "GC512A",
    39: "GC512B",
    40: "GC512C",
    41: "curveSM2",
    256: "ffdhe2048",
    257: "ffdhe3072",
    258: "ffdhe4096",
    259: "ffdhe6144",
    260: "ffdhe8192",
    512: "MLKEM512",
    513: "MLKEM768",
    514: "MLKEM1024",
    4587: "SecP256r1MLKEM768",
    4588: "X25519MLKEM768",
    4589: "SecP384r1MLKEM1024",
    25497: "X25519Kyber768Draft00",
    25498: "SecP256r1Kyber768Draft00",
    65281: "arbitrary_explicit_prime_curves",
    65282: "arbitrary_explicit_char2_curves",
}

ALL_GROUPS: Final[dict[int, str]] = GROUPS


def group_name(v: int) -> str:
    return name16(ALL_GROUPS, v)


def is_ffdhe(v: int) -> bool:
    """RFC 7919 finite-field groups (and their private-use range)."""
    return 256 <= v <= 511


def is_post_quantum(v: int) -> bool:
    """Groups whose key share includes a post-quantum KEM (pure ML-KEM or a hybrid)."""
    name = ALL_GROUPS.get(v, "")
    return "MLKEM" in name or "Kyber" in name
