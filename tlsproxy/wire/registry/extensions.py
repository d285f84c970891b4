"""TLS ExtensionType values.

Source: IANA "Transport Layer Security (TLS) Extensions", registry "TLS ExtensionType Values"
(tls-extensiontype-values-1), checked 2025 (through ``rrc`` (61), ``ech_outer_extensions``
(0xfd00) and ``encrypted_client_hello`` (0xfe0d)).  Values IANA reserved after TLS 1.3 drafts used
them (40, 46) keep their draft names, and ``NON_IANA_EXTENSIONS`` holds code points that browsers
and servers send without an assignment (NPN, ALPS, Channel ID, pre-RFC ECH/ESNI drafts); their
names follow the implementations.  Unknown values render as ``unknown(0x1a2b)``, RFC 8701 values as
``GREASE``.
"""

from __future__ import annotations

from typing import Final

from ._common import name16

EXTENSIONS: Final[dict[int, str]] = {
    0: "server_name",
    1: "max_fragment_length",
    2: "client_certificate_url",
    3: "trusted_ca_keys",
    4: "truncated_hmac",
    5: "status_request",
    6: "user_mapping",
    7: "client_authz",
    8: "server_authz",
    9: "cert_type",
    10: "supported_groups",
    11: "ec_point_formats",
    12: "srp",
    13: "signature_algorithms",
    14: "use_srtp",
    15: "heartbeat",
    16: "application_layer_protocol_negotiation",
    17: "status_request_v2",
    18: "signed_certificate_timestamp",
    19: "client_certificate_type",
    20: "server_certificate_type",
    21: "padding",
    22: "encrypt_then_mac",
    23: "extended_master_secret",
    24: "token_binding",
    25: "cached_info",
    26: "tls_lts",
    27: "compress_certificate",
    28: "record_size_limit",
    29: "pwd_protect",
    30: "pwd_clear",
    31: "password_salt",
    32: "ticket_pinning",
    33: "tls_cert_with_extern_psk",
    34: "delegated_credential",
    35: "session_ticket",
    36: "TLMSP",
    37: "TLMSP_proxying",
    38: "TLMSP_delegate",
    39: "supported_ekt_ciphers",
    40: "key_share_draft",  # IANA: Reserved (key_share in TLS 1.3 drafts -22 and earlier)
    41: "pre_shared_key",
    42: "early_data",
    43: "supported_versions",
    44: "cookie",
    45: "psk_key_exchange_modes",
    46: "ticket_early_data_info_draft",  # IANA: Reserved (TLS 1.3 drafts)
    47: "certificate_authorities",
    48: "oid_filters",
    49: "post_handshake_auth",
    50: "signature_algorithms_cert",
    51: "key_share",
    52: "transparency_info",
    53: "connection_id_deprecated",
    54: "connection_id",
    55: "external_id_hash",
    56: "external_session_id",
    57: "quic_transport_parameters",
    58: "ticket_request",
    59: "dnssec_chain",
    60: "sequence_number_encryption_algorithms",
    61: "rrc",
    0xFD00: "ech_outer_extensions",
    0xFE0D: "encrypted_client_hello",
    0xFF01: "renegotiation_info",
}

NON_IANA_EXTENSIONS: Final[dict[int, str]] = {
    13172: "next_protocol_negotiation",  # 0x3374, draft-agl-tls-nextprotoneg
    17513: "application_settings_old",  # 0x4469, ALPS as first shipped by Chrome
    17613: "application_settings",  # 0x44cd, ALPS (draft-vvv-tls-alps), current Chrome
    30031: "channel_id_old",  # 0x754f
    30032: "channel_id",  # 0x7550, Google Channel ID
    0xFFCE: "encrypted_server_name",  # ESNI drafts (draft-ietf-tls-esni-00..06)
    # Pre-RFC ECH drafts, one code point per interop round.
    0xFE08: "encrypted_client_hello_draft_fe08",
    0xFE09: "encrypted_client_hello_draft_fe09",
    0xFE0A: "encrypted_client_hello_draft_fe0a",
    0xFE0B: "encrypted_client_hello_draft_fe0b",
    0xFE0C: "encrypted_client_hello_draft_fe0c",
}

ALL_EXTENSIONS: Final[dict[int, str]] = {**NON_IANA_EXTENSIONS, **EXTENSIONS}


def extension_name(v: int) -> str:
    return name16(ALL_EXTENSIONS, v)
