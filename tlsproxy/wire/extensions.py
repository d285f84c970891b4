"""Hello extensions: one decoder per extension type, chosen by the message that carries it.

Values stay wire integers (names come from the registry when rendering).  An extension we do not
know keeps its type and bytes; one we know but cannot decode keeps its bytes and an ``error``
naming the field, and never stops the decoding of the message around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tlsproxy.fastbuild import frozen_builder, remember
from tlsproxy.wire.certs import decode_distinguished_name
from tlsproxy.wire.reader import Reader, WireError

_V = dict(frozen=True, slots=True, kw_only=True)

# Extension type numbers (IANA "TLS ExtensionType Values") used by decoders here.
SERVER_NAME = 0
MAX_FRAGMENT_LENGTH = 1
STATUS_REQUEST = 5
SUPPORTED_GROUPS = 10
EC_POINT_FORMATS = 11
SIGNATURE_ALGORITHMS = 13
HEARTBEAT = 15
ALPN = 16
SIGNED_CERTIFICATE_TIMESTAMP = 18
PADDING = 21
ENCRYPT_THEN_MAC = 22
EXTENDED_MASTER_SECRET = 23
COMPRESS_CERTIFICATE = 27
RECORD_SIZE_LIMIT = 28
SESSION_TICKET = 35
PRE_SHARED_KEY = 41
EARLY_DATA = 42
SUPPORTED_VERSIONS = 43
COOKIE = 44
PSK_KEY_EXCHANGE_MODES = 45
CERTIFICATE_AUTHORITIES = 47
POST_HANDSHAKE_AUTH = 49
SIGNATURE_ALGORITHMS_CERT = 50
KEY_SHARE = 51
ENCRYPTED_CLIENT_HELLO = 0xFE0D
RENEGOTIATION_INFO = 0xFF01

# Where an extension appears changes its syntax (RFC 8446 section 4.2).
CLIENT_HELLO = "client_hello"
SERVER_HELLO = "server_hello"
HELLO_RETRY_REQUEST = "hello_retry_request"
ENCRYPTED_EXTENSIONS = "encrypted_extensions"
CERTIFICATE_REQUEST = "certificate_request"
CERTIFICATE = "certificate"
NEW_SESSION_TICKET = "new_session_ticket"


@dataclass(**_V)
class Extension:
    """One extension.  ``value`` is the decoded form (see each decoder), ``None`` when the type is
    unknown or decoding failed (``error`` then says why)."""

    type: int
    data: bytes = field(repr=False)
    value: object = None
    error: str | None = None


@dataclass(**_V)
class KeyShareEntry:
    """One key share: the group and the key's length (the key itself is not kept)."""

    group: int
    key_exchange_length: int


@dataclass(**_V)
class OfferedPsks:
    """A ClientHello's pre_shared_key: counts, ages and lengths, never the identities."""

    identity_count: int
    obfuscated_ticket_ages: tuple[int, ...]
    identity_lengths: tuple[int, ...]
    binder_lengths: tuple[int, ...]


@dataclass(**_V)
class StatusRequest:
    """status_request (RFC 6066 8): the request, or a TLS 1.3 entry's stapled response."""

    status_type: int
    responder_id_list_length: int = 0
    request_extensions_length: int = 0
    response_length: int = 0  # in a TLS 1.3 CertificateEntry: the stapled OCSP response


@dataclass(**_V)
class EchClientHello:
    """encrypted_client_hello in a ClientHello: the outer fields, lengths only."""

    ech_type: int  # 0 outer, 1 inner
    kdf_id: int | None = None
    aead_id: int | None = None
    config_id: int | None = None
    enc_length: int | None = None
    payload_length: int | None = None


@dataclass(**_V)
class Padding:
    """padding (RFC 7685): its length, and whether it is all zero bytes as required."""

    length: int
    all_zero: bool


def _server_name(r: Reader, ctx: str) -> tuple[str, ...]:
    if r.at_end():  # the server's acknowledgement is empty
        return ()
    names = r.sub(2, "server_name_list")
    out: list[str] = []
    while not names.at_end():
        name_type = names.u8("name_type")
        name = names.vec(2, "host_name")
        if name_type == 0:
            out.append(name.decode("ascii", "backslashreplace"))
    return tuple(out)


def _supported_versions(r: Reader, ctx: str) -> tuple[int, ...] | int:
    if ctx in (SERVER_HELLO, HELLO_RETRY_REQUEST):
        return r.u16("selected_version")
    return r.u16_list(1, "versions")


def _u16_list2(name: str) -> Callable[[Reader, str], tuple[int, ...]]:
    def decode(r: Reader, ctx: str) -> tuple[int, ...]:
        return r.u16_list(2, name)

    return decode


def _u8_list1(name: str) -> Callable[[Reader, str], tuple[int, ...]]:
    def decode(r: Reader, ctx: str) -> tuple[int, ...]:
        return r.u8_list(1, name)

    return decode


def _compress_certificate(r: Reader, ctx: str) -> tuple[int, ...]:
    return r.u16_list(1, "algorithms")


def _alpn(r: Reader, ctx: str) -> tuple[str, ...]:
    lst = r.sub(2, "protocol_name_list")
    out = []
    while not lst.at_end():
        out.append(lst.vec(1, "ProtocolName").decode("ascii", "backslashreplace"))
    return tuple(out)


def _key_share(r: Reader, ctx: str) -> tuple[KeyShareEntry, ...] | KeyShareEntry | int:
    if ctx == HELLO_RETRY_REQUEST:
        return r.u16("selected_group")
    if ctx == SERVER_HELLO:
        group = r.u16("group")
        return _key_share_entry(group, r.vec_len(2, "key_exchange"))
    shares = r.sub(2, "client_shares")
    out = []
    while not shares.at_end():
        group = shares.u16("group")
        # Only the length is kept: vec_len skips the key (1 KiB and more for a post-quantum
        # share) without copying it, with vec's checks.
        out.append(_key_share_entry(group, shares.vec_len(2, "key_exchange")))
    return tuple(out)


def _pre_shared_key(r: Reader, ctx: str) -> OfferedPsks | int:
    if ctx == SERVER_HELLO:
        return r.u16("selected_identity")
    ids = r.sub(2, "identities")
    lengths, ages = [], []
    while not ids.at_end():
        lengths.append(len(ids.vec(2, "identity")))
        ages.append(ids.u32("obfuscated_ticket_age"))
    binders = r.sub(2, "binders")
    binder_lengths = []
    while not binders.at_end():
        binder_lengths.append(len(binders.vec(1, "PskBinderEntry")))
    return OfferedPsks(
        identity_count=len(lengths),
        obfuscated_ticket_ages=tuple(ages),
        identity_lengths=tuple(lengths),
        binder_lengths=tuple(binder_lengths),
    )


def _early_data(r: Reader, ctx: str) -> int | bool:
    if ctx == NEW_SESSION_TICKET:
        return r.u32("max_early_data_size")
    return True


def _status_request(r: Reader, ctx: str) -> StatusRequest | bool:
    if r.at_end():  # ServerHello acknowledgement
        return True
    status_type = r.u8("status_type")
    if ctx == CERTIFICATE:
        return StatusRequest(status_type=status_type, response_length=len(r.vec(3, "OCSPResponse")))
    if status_type == 1:
        responders = len(r.vec(2, "responder_id_list"))
        exts = len(r.vec(2, "request_extensions"))
        return StatusRequest(status_type=1, responder_id_list_length=responders, request_extensions_length=exts)
    r.rest()
    return StatusRequest(status_type=status_type)


def _renegotiation_info(r: Reader, ctx: str) -> bytes:
    return r.vec(1, "renegotiated_connection")


def _flag(r: Reader, ctx: str) -> bool:
    return True


def _length_only(r: Reader, ctx: str) -> int:
    return len(r.rest())


def _padding(r: Reader, ctx: str) -> Padding:
    data = r.rest()
    return Padding(length=len(data), all_zero=not any(data))


def _u16_value(name: str) -> Callable[[Reader, str], int]:
    def decode(r: Reader, ctx: str) -> int:
        return r.u16(name)

    return decode


def _u8_value(name: str) -> Callable[[Reader, str], int]:
    def decode(r: Reader, ctx: str) -> int:
        return r.u8(name)

    return decode


def _certificate_authorities(r: Reader, ctx: str) -> tuple[str, ...]:
    return decode_dn_list(r.sub(2, "authorities"))


def decode_dn_list(lst: Reader) -> tuple[str, ...]:
    """A vector of DistinguishedName<1..2^16-1> (CertificateRequest, certificate_authorities)."""
    out = []
    while not lst.at_end():
        out.append(decode_distinguished_name(lst.vec(2, "DistinguishedName")))
    return tuple(out)


def _cookie(r: Reader, ctx: str) -> int:
    return len(r.vec(2, "cookie"))


def _ech(r: Reader, ctx: str) -> EchClientHello | int:
    if ctx != CLIENT_HELLO:
        # EncryptedExtensions carries retry configs; a HelloRetryRequest an 8-byte confirmation.
        return len(r.rest())
    ech_type = r.u8("ECHClientHelloType")
    if ech_type == 1:
        return EchClientHello(ech_type=1)
    kdf = r.u16("kdf_id")
    aead = r.u16("aead_id")
    config_id = r.u8("config_id")
    enc = r.vec(2, "enc")
    payload = r.vec(2, "payload")
    return EchClientHello(
        ech_type=ech_type,
        kdf_id=kdf,
        aead_id=aead,
        config_id=config_id,
        enc_length=len(enc),
        payload_length=len(payload),
    )


_DECODERS: dict[int, Callable[[Reader, str], object]] = {
    SERVER_NAME: _server_name,
    MAX_FRAGMENT_LENGTH: _u8_value("max_fragment_length"),
    STATUS_REQUEST: _status_request,
    SUPPORTED_GROUPS: _u16_list2("named_group_list"),
    EC_POINT_FORMATS: _u8_list1("ec_point_format_list"),
    SIGNATURE_ALGORITHMS: _u16_list2("supported_signature_algorithms"),
    HEARTBEAT: _u8_value("mode"),
    ALPN: _alpn,
    SIGNED_CERTIFICATE_TIMESTAMP: _length_only,
    PADDING: _padding,
    ENCRYPT_THEN_MAC: _flag,
    EXTENDED_MASTER_SECRET: _flag,
    COMPRESS_CERTIFICATE: _compress_certificate,
    RECORD_SIZE_LIMIT: _u16_value("RecordSizeLimit"),
    SESSION_TICKET: _length_only,
    PRE_SHARED_KEY: _pre_shared_key,
    EARLY_DATA: _early_data,
    SUPPORTED_VERSIONS: _supported_versions,
    COOKIE: _cookie,
    PSK_KEY_EXCHANGE_MODES: _u8_list1("ke_modes"),
    CERTIFICATE_AUTHORITIES: _certificate_authorities,
    POST_HANDSHAKE_AUTH: _flag,
    SIGNATURE_ALGORITHMS_CERT: _u16_list2("supported_signature_algorithms"),
    KEY_SHARE: _key_share,
    ENCRYPTED_CLIENT_HELLO: _ech,
    RENEGOTIATION_INFO: _renegotiation_info,
}

# Built positionally (see fastbuild), fields in declaration order.
_extension = frozen_builder(Extension)
_key_share_entry = frozen_builder(KeyShareEntry)

# Extensions whose body must be empty where they appear; anything else is reported.
_EMPTY_EXPECTED = {ENCRYPT_THEN_MAC, EXTENDED_MASTER_SECRET, POST_HANDSHAKE_AUTH}


def decode_extension(ext_type: int, data: bytes, ctx: str) -> Extension:
    decoder = _DECODERS.get(ext_type)
    if decoder is None:
        return _extension(ext_type, data, None, None)
    r = Reader(data)
    try:
        if ext_type in _EMPTY_EXPECTED and data:
            raise WireError("extension_data", 0, f"{len(data)} bytes where the extension must be empty")
        if ext_type == EARLY_DATA and ctx != NEW_SESSION_TICKET and data:
            raise WireError("extension_data", 0, f"{len(data)} bytes where the extension must be empty")
        value = decoder(r, ctx)
        r.expect_end("extension_data")
    except WireError as exc:
        return _extension(ext_type, data, None, str(exc))
    return _extension(ext_type, data, value, None)


# Extensions repeat byte for byte across connections: one client stack sends the same groups,
# signature algorithms, versions, ALPN list and often the same server name every time.  Decoding
# is therefore memoised per context by the extension's bytes (header included).  An Extension is
# frozen and every decoded value is immutable (ints, strings, tuples, frozen dataclasses), so one
# object may be shared by many messages (errors name offsets within the extension, so they hold
# wherever it sits).  Extensions carrying per-connection randomness would only churn the memo and
# are decoded every time, unless empty (as a ClientHello's session_ticket often is).  Bound: each
# context's memo is cleared when it reaches _MEMO_ENTRIES, and nothing over _MEMO_MAX_BYTES is kept
# (at most ~0.5 MB per context).
_MEMO_ENTRIES = 1024
_MEMO_MAX_BYTES = 512
_NOT_MEMOISED = frozenset({KEY_SHARE, PRE_SHARED_KEY, SESSION_TICKET, ENCRYPTED_CLIENT_HELLO, COOKIE})
_MEMOS: dict[str, dict[bytes, Extension]] = {
    c: {} for c in (CLIENT_HELLO, SERVER_HELLO, HELLO_RETRY_REQUEST, ENCRYPTED_EXTENSIONS, CERTIFICATE_REQUEST,
                    CERTIFICATE, NEW_SESSION_TICKET)
}


def decode_extensions(r: Reader, ctx: str) -> tuple[Extension, ...]:
    """The ``extensions<0..2^16-1>`` block; absent (end of message) means no extensions."""
    if r.at_end():
        return ()
    data, pos, end = r.span()
    memo = _MEMOS.get(ctx)
    if memo is None or type(data) is not bytes or end - pos < 2:
        return _decode_extensions_checked(r.sub(2, "extensions"), ctx, [])
    block_end = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if block_end > end:
        r.sub(2, "extensions")  # raises, naming the field
    r.seek(block_end)
    # Fast path over whole extensions; a truncated one is left to the checked loop.
    out = []
    pos += 2
    while block_end - pos >= 4:
        stop = pos + 4 + ((data[pos + 2] << 8) | data[pos + 3])
        if stop > block_end:
            break
        key = data[pos:stop]
        extension = memo.get(key)
        if extension is None:
            ext_type = (data[pos] << 8) | data[pos + 1]
            extension = decode_extension(ext_type, key[4:], ctx)
            if stop - pos - 4 <= _MEMO_MAX_BYTES and (stop - pos == 4 or ext_type not in _NOT_MEMOISED):
                remember(memo, key, extension, _MEMO_ENTRIES)
        out.append(extension)
        pos = stop
    if pos == block_end:
        return tuple(out)
    return _decode_extensions_checked(Reader(data, pos, block_end), ctx, out)


def _decode_extensions_checked(block: Reader, ctx: str, out: list[Extension]) -> tuple[Extension, ...]:
    while not block.at_end():
        ext_type = block.u16("extension_type")
        data = block.vec(2, "extension_data")
        out.append(decode_extension(ext_type, data, ctx))
    return tuple(out)


def find(extensions: tuple[Extension, ...], ext_type: int) -> Extension | None:
    for ext in extensions:
        if ext.type == ext_type:
            return ext
    return None
