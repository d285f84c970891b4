"""Signature schemes (TLS 1.3) and the TLS 1.2 (hash, signature) pairs they replaced.

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS SignatureScheme"
(tls-signaturescheme), checked 2025 against a copy listing mldsa44/65/87 and the
``*_legacy`` PKCS#1 draft values; for code points IANA leaves "reserved for backward
compatibility", the TLS 1.2 registries "TLS HashAlgorithm" and "TLS SignatureAlgorithm"
name the two bytes, rendered ``<hash>_<signature>``
(``sha224_rsa``, ``md5_rsa``, ``sha256_dsa``).  Unknown values render as ``unknown(0x1a2b)``,
RFC 8701 values as ``GREASE``.
"""

from __future__ import annotations

from typing import Final

from ._common import GREASE, is_grease, unknown16

SIGNATURE_SCHEMES: Final[dict[int, str]] = {
    0x0201: "rsa_pkcs1_sha1",
    0x0203: "ecdsa_sha1",
    0x0401: "rsa_pkcs1_sha256",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0420: "rsa_pkcs1_sha256_legacy",
    0x0501: "rsa_pkcs1_sha384",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0520: "rsa_pkcs1_sha384_legacy",
    0x0601: "rsa_pkcs1_sha512",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0620: "rsa_pkcs1_sha512_legacy",
    0x0704: "eccsi_sha256",
    0x0705: "iso_ibs1",
    0x0706: "iso_ibs2",
    0x0707: "iso_chinese_ibs",
    0x0708: "sm2sig_sm3",
    0x0709: "gostr34102012_256a",
    0x070A: "gostr34102012_256b",
    0x070B: "gostr34102012_256c",
    0x070C: "gostr34102012_256d",
    0x070D: "gostr34102012_512a",
    0x070E: "gostr34102012_512b",
    0x070F: "gostr34102012_512c",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0808: "ed448",
    0x0809: "rsa_pss_pss_sha256",
    0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512",
    0x081A: "ecdsa_brainpoolP256r1tls13_sha256",
    0x081B: "ecdsa_brainpoolP384r1tls13_sha384",
    0x081C: "ecdsa_brainpoolP512r1tls13_sha512",
    0x0904: "mldsa44",
    0x0905: "mldsa65",
    0x0906: "mldsa87",
}

#: TLS 1.2 HashAlgorithm (RFC 5246 7.4.1.4.1, RFC 8422, RFC 9189).
HASH_ALGORITHMS: Final[dict[int, str]] = {
    0: "none",
    1: "md5",
    2: "sha1",
    3: "sha224",
    4: "sha256",
    5: "sha384",
    6: "sha512",
    8: "intrinsic",
}

#: TLS 1.2 SignatureAlgorithm (RFC 5246, RFC 8422, RFC 9189).
SIGNATURE_ALGORITHMS: Final[dict[int, str]] = {
    0: "anonymous",
    1: "rsa",
    2: "dsa",
    3: "ecdsa",
    7: "ed25519",
    8: "ed448",
    64: "gostr34102012_256",
    65: "gostr34102012_512",
}

_KEY_TYPE_BY_SIG_BYTE: Final[dict[int, str]] = {
    1: "RSA",
    2: "DSA",
    3: "EC",
    7: "Ed25519",
    8: "Ed448",
    64: "GOST",
    65: "GOST",
}

# Name prefix -> certificate key type; first match wins, so longer prefixes come first.
_KEY_TYPE_BY_PREFIX: Final[tuple[tuple[str, str], ...]] = (
    ("rsa_pss_pss_", "RSA-PSS"),
    ("rsa_pss_rsae_", "RSA"),
    ("rsa_pkcs1_", "RSA"),
    ("ecdsa_", "EC"),
    ("ed25519", "Ed25519"),
    ("ed448", "Ed448"),
    ("sm2sig_", "SM2"),
    ("gostr3410", "GOST"),
    ("mldsa", "ML-DSA"),
    ("eccsi_", "ECCSI"),
    ("iso_", "IBS"),
)


def _legacy_name(v: int) -> str | None:
    """``<hash>_<signature>`` for a TLS 1.2 pair whose bytes both have names."""
    if not 0 <= v <= 0xFFFF:
        return None
    hash_name = HASH_ALGORITHMS.get(v >> 8)
    sig_name = SIGNATURE_ALGORITHMS.get(v & 0xFF)
    if hash_name is None or sig_name is None:
        return None
    return f"{hash_name}_{sig_name}"


def signature_scheme_name(v: int) -> str:
    name = SIGNATURE_SCHEMES.get(v)
    if name is not None:
        return name
    if is_grease(v):
        return GREASE
    return _legacy_name(v) or unknown16(v)


def signature_scheme_key_type(v: int) -> str | None:
    """The certificate key type a scheme needs (``RSA``, ``RSA-PSS``, ``EC``, ``Ed25519``...).

    ``rsa_pss_rsae_*`` needs an ordinary rsaEncryption key, ``rsa_pss_pss_*`` an id-RSASSA-PSS
    key; that difference is a classic cause of "no shared signature algorithm" failures.
    ``None`` for unknown, GREASE and anonymous values.
    """
    name = SIGNATURE_SCHEMES.get(v)
    if name is not None:
        for prefix, key_type in _KEY_TYPE_BY_PREFIX:
            if name.startswith(prefix):
                return key_type
        return None
    if _legacy_name(v) is None:
        return None
    return _KEY_TYPE_BY_SIG_BYTE.get(v & 0xFF)
