"""Facts about a cipher suite, derived by parsing its IANA name.

Nothing here is typed in per suite: ``TLS_<kx>[_<auth>][_EXPORT]_WITH_<cipher>_<mac>`` (TLS <= 1.2)
and ``TLS_<aead>_<hash>`` (TLS 1.3) are split into parts, and the flags follow from the parts.  That
keeps the facts consistent with the name table in ``cipher_suites`` (the single source of truth).

Conventions:
- ``key_exchange`` is the name's key-exchange part with the authentication removed: ``RSA``,
  ``DH``/``DHE``, ``ECDH``/``ECDHE``, ``PSK``, ``DHE_PSK``, ``ECDHE_PSK``, ``RSA_PSK``, ``SRP``,
  ``KRB5``, ``ECCPWD``, ``GOST``, ``FORTEZZA``, ``NULL``; ``TLS13`` for TLS 1.3 suites (which do
  not fix the key exchange) and ``SCSV`` for the signalling values.
- ``authentication``: ``RSA``, ``DSS``, ``ECDSA``, ``PSK``, ``SRP``, ``KRB5``, ``anon``, ``NULL``,
  ... and ``TLS13`` for TLS 1.3 suites.
- ``cipher`` is the bulk-cipher part verbatim (``AES_128_GCM``, ``3DES_EDE_CBC``, ``RC4_40``);
  ``mac`` is ``AEAD`` for AEAD ciphers, else the MAC hash (``SHA``, ``SHA256``, ``MD5``);
  ``prf_hash`` is the hash named at the end of the suite, if any.
- ``weak`` is any of null/anonymous/export/RC4/DES/3DES or a key under 112 bits (40- and
  56-bit ciphers, 80-bit FORTEZZA).
- Anonymous DH/ECDH suites use ephemeral keys, so they count as ``forward_secret``; they are
  still flagged ``anonymous`` and ``weak``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .cipher_suites import ALL_CIPHER_SUITES


@dataclass(frozen=True, slots=True, kw_only=True)
class CipherSuiteInfo:
    """Facts about one cipher suite, derived from its name (see the module docstring)."""

    name: str
    key_exchange: str
    authentication: str
    cipher: str
    mac: str
    prf_hash: str | None = None
    key_bits: int | None = None
    tls13: bool = False
    aead: bool = False
    null_cipher: bool = False
    anonymous: bool = False
    export: bool = False
    rc4: bool = False
    des: bool = False
    triple_des: bool = False
    cbc: bool = False
    weak: bool = False
    forward_secret: bool = False


# The part before _WITH_ (export markers removed) -> (key exchange, authentication).
_KX_AUTH: dict[str, tuple[str, str]] = {
    "NULL": ("NULL", "NULL"),
    "RSA": ("RSA", "RSA"),
    "DH_DSS": ("DH", "DSS"),
    "DH_RSA": ("DH", "RSA"),
    "DHE_DSS": ("DHE", "DSS"),
    "DHE_RSA": ("DHE", "RSA"),
    "DH_anon": ("DH", "anon"),
    "ECDH_ECDSA": ("ECDH", "ECDSA"),
    "ECDH_RSA": ("ECDH", "RSA"),
    "ECDHE_ECDSA": ("ECDHE", "ECDSA"),
    "ECDHE_RSA": ("ECDHE", "RSA"),
    "ECDH_anon": ("ECDH", "anon"),
    "PSK": ("PSK", "PSK"),
    "DHE_PSK": ("DHE_PSK", "PSK"),
    "PSK_DHE": ("DHE_PSK", "PSK"),  # IANA's spelling for 0xC0AA/0xC0AB
    "ECDHE_PSK": ("ECDHE_PSK", "PSK"),
    "RSA_PSK": ("RSA_PSK", "RSA"),
    "KRB5": ("KRB5", "KRB5"),
    "SRP_SHA": ("SRP", "SRP"),
    "SRP_SHA_RSA": ("SRP", "RSA"),
    "SRP_SHA_DSS": ("SRP", "DSS"),
    "ECCPWD": ("ECCPWD", "ECCPWD"),
    "GOSTR341094": ("GOST", "GOST"),
    "GOSTR341001": ("GOST", "GOST"),
    "GOSTR341112_256": ("GOST", "GOST"),
    "FORTEZZA_KEA": ("FORTEZZA", "FORTEZZA"),
}

_EPHEMERAL_KX = frozenset({"DHE", "ECDHE", "DHE_PSK", "ECDHE_PSK", "ECCPWD", "TLS13"})
_MAC_NAMES = frozenset(
    {"NULL", "MD5", "SHA", "SHA256", "SHA384", "SHA512", "SM3", "IMIT", "OMAC", "GOSTR3411"}
)
_AEAD_MARKERS = ("GCM", "CCM", "CHACHA20_POLY1305", "MGM", "AEGIS")
_HASH_NAMES = frozenset({"SHA256", "SHA384", "SHA512", "SM3"})


def _key_bits(cipher: str) -> int | None:
    """Effective secret-key bits of a cipher part, from what the name says."""
    if cipher == "NULL":
        return 0
    if cipher.startswith("3DES"):
        return 112  # 168-bit key, 112 bits of strength (meet-in-the-middle)
    if cipher.startswith("DES40") or cipher.endswith("_40"):
        return 40
    if cipher.startswith("DES") or cipher.endswith("_56"):
        return 56
    if cipher.startswith("FORTEZZA"):
        return 80  # Skipjack
    if cipher.startswith(("IDEA", "SEED", "SM4")):
        return 128
    if cipher.startswith(("CHACHA20", "KUZNYECHIK", "MAGMA", "28147")):
        return 256
    m = re.search(r"_(\d+)", cipher)
    return int(m.group(1)) if m else None


def _split_cipher_mac(rest: str) -> tuple[str, str | None]:
    """``AES_128_CBC_SHA256`` -> (``AES_128_CBC``, ``SHA256``); ``AES_128_CCM`` -> (..., None)."""
    head, _, last = rest.rpartition("_")
    if head and last in _MAC_NAMES:
        return head, last
    return rest, None


def parse_suite_name(name: str) -> CipherSuiteInfo:
    """Derive a ``CipherSuiteInfo`` from an IANA-style cipher suite name."""
    if name.endswith("_SCSV"):
        return CipherSuiteInfo(
            name=name, key_exchange="SCSV", authentication="SCSV", cipher="NULL", mac="NULL",
            key_bits=0,
        )
    body = name.split("_", 1)[1] if name.startswith(("TLS_", "SSL_")) else name
    body = body.removesuffix("_OLD")

    export = False
    tls13 = False
    if "_WITH_" in body:
        kx_part, rest = body.split("_WITH_", 1)
        tokens = kx_part.split("_")
        export = any(t.startswith("EXPORT") for t in tokens)
        tokens = [t for t in tokens if not t.startswith("EXPORT") and t not in ("FIPS", "OLDFIPS")]
        kx_key = "_".join(tokens)
        key_exchange, authentication = _KX_AUTH.get(kx_key, (kx_key, kx_key))
        cipher, hash_part = _split_cipher_mac(rest)
        if "_MGM_" in rest:  # RFC 9367 GOST suites are TLS 1.3 only
            tls13 = True
            key_exchange = authentication = "TLS13"
    else:
        # TLS 1.3 style: TLS_<AEAD>_<HASH>; RFC 9150 integrity-only suites are TLS_<HASH>_<HASH>.
        tls13 = True
        key_exchange = authentication = "TLS13"
        cipher, _, hash_part = body.rpartition("_")
        if not cipher:
            cipher, hash_part = body, None
        if cipher in _HASH_NAMES:
            cipher = "NULL"

    aead = any(marker in cipher for marker in _AEAD_MARKERS)
    if aead:
        mac, prf_hash = "AEAD", hash_part
    else:
        mac = hash_part or "NULL"
        prf_hash = hash_part if hash_part in _HASH_NAMES else None

    null_cipher = cipher == "NULL"
    anonymous = authentication in ("anon", "NULL")
    rc4 = cipher.startswith("RC4")
    triple_des = cipher.startswith("3DES")
    des = cipher.startswith("DES")
    bits = _key_bits(cipher)
    small_key = bits is not None and 0 < bits < 112
    weak = null_cipher or anonymous or export or rc4 or des or triple_des or small_key
    forward_secret = key_exchange in _EPHEMERAL_KX or authentication == "anon"
    return CipherSuiteInfo(
        name=name,
        key_exchange=key_exchange,
        authentication=authentication,
        cipher=cipher,
        mac=mac,
        prf_hash=prf_hash,
        key_bits=bits,
        tls13=tls13,
        aead=aead,
        null_cipher=null_cipher,
        anonymous=anonymous,
        export=export,
        rc4=rc4,
        des=des,
        triple_des=triple_des,
        cbc="CBC" in cipher.split("_"),
        weak=weak,
        forward_secret=forward_secret,
    )


# Parsed on first lookup, not at import: parsing every name (a few hundred) cost ~10 ms of start-up
# while a run meets a few dozen suites.  Bounded by the name table; values are frozen.
_parsed: dict[int, CipherSuiteInfo] = {}


def cipher_suite_info(v: int) -> CipherSuiteInfo | None:
    """Parsed facts for a known cipher suite (SCSVs included); ``None`` for unknown and GREASE."""
    info = _parsed.get(v)
    if info is None:
        name = ALL_CIPHER_SUITES.get(v)
        if name is None:
            return None
        info = _parsed[v] = parse_suite_name(name)
    return info


def __getattr__(name: str) -> object:
    """``SUITE_INFO``, every known suite parsed, built when first asked for (see ``_parsed``)."""
    if name == "SUITE_INFO":
        table = {value: cipher_suite_info(value) for value in ALL_CIPHER_SUITES}
        globals()["SUITE_INFO"] = table
        return table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
