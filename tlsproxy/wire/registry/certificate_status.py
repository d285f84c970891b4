"""CertificateStatusType values (status_request / status_request_v2, CertificateStatus).

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS Certificate Status Types",
checked 2025.  8-bit field: unknown values render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

CERTIFICATE_STATUS_TYPES: Final[dict[int, str]] = {1: "ocsp", 2: "ocsp_multi"}


def certificate_status_type_name(v: int) -> str:
    return name8(CERTIFICATE_STATUS_TYPES, v)
