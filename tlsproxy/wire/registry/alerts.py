"""TLS alert levels and descriptions, each description with one plain-English meaning.

Source: IANA "Transport Layer Security (TLS) Parameters", registry "TLS Alerts"
(tls-parameters-6), checked 2025; ``no_certificate`` (41) is SSL 3.0's (RFC 6101), and
``general_error`` (117) comes from draft-ietf-tls-rfc8446bis.  The meanings are ours, written for
an engineer reading a failed handshake: what the sender of the alert is telling you.  8-bit
fields: unknown values render as ``unknown(n)``.
"""

from __future__ import annotations

from typing import Final

from ._common import name8

ALERT_LEVELS: Final[dict[int, str]] = {1: "warning", 2: "fatal"}

ALERT_DESCRIPTIONS: Final[dict[int, str]] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    52: "too_many_cids_requested",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    117: "general_error",
    120: "no_application_protocol",
    121: "ech_required",
}

ALERT_MEANINGS: Final[dict[int, str]] = {
    0: "The sender is closing the connection cleanly and will send no more data.",
    10: "The sender received a message it did not expect at this point of the protocol.",
    20: "A record failed its integrity check: wrong keys, corruption in transit, or a "
    "middlebox that modified encrypted bytes.",
    21: "The sender could not decrypt a record (obsolete alert from TLS 1.0; should not be "
    "sent today).",
    22: "A record was longer than the protocol or the negotiated record size limit allows.",
    30: "The sender could not decompress a record (TLS compression is obsolete).",
    40: "The sender found no acceptable set of parameters (version, cipher suite, group or "
    "signature algorithm) in common with its peer.",
    41: "The SSL 3.0 client has no certificate to send in response to the server's request.",
    42: "The certificate the sender received is corrupt or its signature does not verify.",
    43: "The sender does not support the type of certificate (or key) it received.",
    44: "The certificate the sender received has been revoked by its issuer.",
    45: "The certificate the sender received has expired or is not yet valid (check the "
    "clocks on both ends).",
    46: "The sender rejected the received certificate for an unspecified reason, often a "
    "failed hostname or chain check.",
    47: "A field in a message the sender received was out of range or inconsistent with "
    "other fields.",
    48: "The sender does not trust the CA that issued the certificate it received (unknown "
    "root, or a missing intermediate).",
    49: "The certificate was valid, but the sender's access policy refused the peer.",
    50: "The sender could not parse a message: a length or field was malformed.",
    51: "A cryptographic check failed: a signature did not verify or the Finished message "
    "did not match.",
    52: "The peer asked for more DTLS connection IDs than the sender is willing to supply.",
    60: "An export-restricted negotiation was refused (obsolete alert from TLS 1.0).",
    70: "The sender does not support the protocol version its peer offered or chose.",
    71: "The peer's parameters were recognised but are weaker than the sender's minimum "
    "(for example, only weak ciphers or small keys).",
    80: "The sender hit a local error unrelated to the peer, such as a bug or memory "
    "allocation failure.",
    86: "The client retried with a lower version (TLS_FALLBACK_SCSV) although the server "
    "supports a higher one: a suspected downgrade.",
    90: "The sender is aborting the handshake for reasons of its own, not because of a "
    "protocol failure.",
    100: "The sender refuses to renegotiate the connection.",
    109: "The peer omitted an extension that the sender requires at this point of the "
    "handshake.",
    110: "The peer sent an extension that the sender never offered or that is not allowed "
    "in that message.",
    111: "The server could not fetch a certificate from the URL the client gave in "
    "client_certificate_url.",
    112: "The server has no certificate or virtual host for the name the client sent in SNI.",
    113: "The OCSP (stapled certificate status) response the client received was invalid or "
    "unacceptable.",
    114: "A certificate fetched via client_certificate_url did not match its advertised hash.",
    115: "The server does not recognise the PSK identity the client offered.",
    116: "The server requires a client certificate and the client did not send one (mutual "
    "TLS).",
    117: "The sender hit an error that no more specific alert describes.",
    120: "The server supports none of the application protocols offered in ALPN.",
    121: "The client offered Encrypted Client Hello and the server did not accept it; the client "
    "gives up (and may retry with the server's retry_configs).",
}


def alert_level_name(v: int) -> str:
    return name8(ALERT_LEVELS, v)


def alert_description_name(v: int) -> str:
    return name8(ALERT_DESCRIPTIONS, v)


def alert_meaning(v: int) -> str:
    """One plain-English sentence on what an alert tells the engineer; generic for unknown ones."""
    meaning = ALERT_MEANINGS.get(v)
    if meaning is not None:
        return meaning
    return f"The sender signalled alert {v}, which no registry this tool knows describes."
