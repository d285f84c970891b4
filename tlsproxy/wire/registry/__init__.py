"""IANA TLS registries as data: every wire value maps to its registry name, never to an error.

Lookups are total.  A known value gives its IANA name (``TLS_AES_128_GCM_SHA256``,
``handshake_failure``); an RFC 8701 GREASE value in a 16-bit field gives ``GREASE``; anything else
gives ``unknown(0x1a2b)`` for 16-bit fields and ``unknown(7)`` for 8-bit ones.  Each module holds
one table and names its source and the date it was checked.  ``describe(value, name)`` renders
``name(0x1301)`` labels for transcripts.
"""

from __future__ import annotations

from ._common import GREASE, GREASE_U8, describe, is_grease, is_grease_u8
from .alerts import (
    ALERT_DESCRIPTIONS,
    ALERT_LEVELS,
    ALERT_MEANINGS,
    alert_description_name,
    alert_level_name,
    alert_meaning,
)
from .certificate_compression import (
    CERTIFICATE_COMPRESSION_ALGORITHMS,
    certificate_compression_algorithm_name,
)
from .certificate_status import CERTIFICATE_STATUS_TYPES, certificate_status_type_name
from .certificate_types import CERTIFICATE_TYPES, certificate_type_name
from .cipher_suites import (
    ALL_CIPHER_SUITES,
    CIPHER_SUITES,
    NON_IANA_CIPHER_SUITES,
    TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
    TLS_FALLBACK_SCSV,
    cipher_suite_name,
)
from .compression_methods import COMPRESSION_METHODS, compression_method_name
from .content_types import CONTENT_TYPES, content_type_name
from .ec_point_formats import EC_POINT_FORMATS, ec_point_format_name
from .extensions import ALL_EXTENSIONS, EXTENSIONS, NON_IANA_EXTENSIONS, extension_name
from .groups import GROUPS, group_name, is_ffdhe, is_post_quantum
from .handshake_types import HANDSHAKE_TYPES, handshake_type_name
from .heartbeat import (
    HEARTBEAT_MESSAGE_TYPES,
    HEARTBEAT_MODES,
    heartbeat_message_type_name,
    heartbeat_mode_name,
)
from .name_types import NAME_TYPES, name_type_name
from .psk_modes import PSK_KEY_EXCHANGE_MODES, psk_key_exchange_mode_name
from .signature_schemes import (
    SIGNATURE_SCHEMES,
    signature_scheme_key_type,
    signature_scheme_name,
)
from .suite_info import CipherSuiteInfo, cipher_suite_info, parse_suite_name
from .versions import (
    DOWNGRADE_TLS11,
    DOWNGRADE_TLS12,
    DTLS1_0,
    DTLS1_2,
    DTLS1_3,
    HRR_RANDOM,
    SSL2_0,
    SSL3_0,
    TLS1_0,
    TLS1_1,
    TLS1_2,
    TLS1_3,
    VERSIONS,
    is_tls13_variant,
    version_name,
)

__all__ = [
    "ALERT_DESCRIPTIONS",
    "ALERT_LEVELS",
    "ALERT_MEANINGS",
    "ALL_CIPHER_SUITES",
    "ALL_EXTENSIONS",
    "CERTIFICATE_COMPRESSION_ALGORITHMS",
    "CERTIFICATE_STATUS_TYPES",
    "CERTIFICATE_TYPES",
    "CIPHER_SUITES",
    "COMPRESSION_METHODS",
    "CONTENT_TYPES",
    "DOWNGRADE_TLS11",
    "DOWNGRADE_TLS12",
    "DTLS1_0",
    "DTLS1_2",
    "DTLS1_3",
    "EC_POINT_FORMATS",
    "EXTENSIONS",
    "GREASE",
    "GREASE_U8",
    "GROUPS",
    "HANDSHAKE_TYPES",
    "HEARTBEAT_MESSAGE_TYPES",
    "HEARTBEAT_MODES",
    "HRR_RANDOM",
    "NAME_TYPES",
    "NON_IANA_CIPHER_SUITES",
    "NON_IANA_EXTENSIONS",
    "PSK_KEY_EXCHANGE_MODES",
    "SIGNATURE_SCHEMES",
    "SSL2_0",
    "SSL3_0",
    "TLS1_0",
    "TLS1_1",
    "TLS1_2",
    "TLS1_3",
    "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    "TLS_FALLBACK_SCSV",
    "VERSIONS",
    "CipherSuiteInfo",
    "alert_description_name",
    "alert_level_name",
    "alert_meaning",
    "certificate_compression_algorithm_name",
    "certificate_status_type_name",
    "certificate_type_name",
    "cipher_suite_info",
    "cipher_suite_name",
    "compression_method_name",
    "content_type_name",
    "describe",
    "ec_point_format_name",
    "extension_name",
    "group_name",
    "handshake_type_name",
    "heartbeat_message_type_name",
    "heartbeat_mode_name",
    "is_ffdhe",
    "is_grease",
    "is_grease_u8",
    "is_post_quantum",
    "is_tls13_variant",
    "name_type_name",
    "parse_suite_name",
    "psk_key_exchange_mode_name",
    "signature_scheme_key_type",
    "signature_scheme_name",
    "version_name",
]
