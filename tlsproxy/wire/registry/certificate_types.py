"""ClientCertificateType values (the certificate_types list in a TLS <= 1.2 CertificateRequest).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS ClientCertificateType
Identifiers", checked 2025.  8-bit field: unknown values render as
``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

CERTIFICATE_TYPES: Final[dict[int, str]] = {
    1: "rsa_sign",
    2: "dss_sign",
    3: "rsa_fixed_dh",
    4: "dss_fixed_dh",
    5: "rsa_ephemeral_dh_RESERVED",
    6: "dss_ephemeral_dh_RESERVED",
    20: "fortezza_dms_RESERVED",
    64: "ecdsa_sign",
    65: "rsa_fixed_ecdh",
    66: "ecdsa_fixed_ecdh",
    67: "gost_sign256",
    68: "gost_sign512",
}


def certificate_type_name(v: int) -> str:
    return name8(CERTIFICATE_TYPES, v)
