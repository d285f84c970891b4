"""Handshake message bodies: one decoder per HandshakeType, reading like the RFC structs.

Some bodies depend on what was negotiated (a TLS 1.3 Certificate has a request context; a
ServerKeyExchange's layout follows the cipher suite's key exchange), so decoders take a
:class:`DecodeContext` built by the connection from the hellos it has seen.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

from tlsproxy.fastbuild import frozen_builder, remember
from tlsproxy.wire import extensions as ext
from tlsproxy.wire.certs import CertificateInfo, decode_certificate
from tlsproxy.wire.extensions import Extension, decode_extensions, find
from tlsproxy.wire.reader import Reader, WireError
from tlsproxy.wire.registry import DOWNGRADE_TLS11, DOWNGRADE_TLS12, HRR_RANDOM, cipher_suite_info

_M = dict(frozen=True, slots=True, kw_only=True)


class HandshakeType:
    """HandshakeType code points (IANA) that decoders and the connection refer to."""

    hello_request = 0
    client_hello = 1
    server_hello = 2
    hello_verify_request = 3
    new_session_ticket = 4
    end_of_early_data = 5
    encrypted_extensions = 8
    certificate = 11
    server_key_exchange = 12
    certificate_request = 13
    server_hello_done = 14
    certificate_verify = 15
    client_key_exchange = 16
    finished = 20
    certificate_url = 21
    certificate_status = 22
    key_update = 24
    compressed_certificate = 25
    message_hash = 254


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What the decoders need to know about the negotiation so far."""

    tls13: bool = False
    version: int | None = None  # negotiated version, once the ServerHello is seen
    cipher_suite: int | None = None


class _HasExtensions:
    __slots__ = ()
    extensions: tuple[Extension, ...]

    def ext(self, ext_type: int) -> Extension | None:
        return find(self.extensions, ext_type)

    def ext_value(self, ext_type: int) -> object:
        e = find(self.extensions, ext_type)
        return None if e is None else e.value


@dataclass(**_M)
class Message:
    """Base of every decoded handshake body."""


@dataclass(**_M)
class Empty(Message):
    """hello_request, server_hello_done, end_of_early_data: bodies that must be empty."""


@dataclass(**_M)
class ClientHello(_HasExtensions, Message):
    """What the client offers (RFC 8446 4.1.2; RFC 5246 7.4.1.2)."""

    legacy_version: int
    random: bytes = field(repr=False)
    session_id: bytes = field(repr=False)
    cipher_suites: tuple[int, ...]
    compression_methods: tuple[int, ...]
    extensions: tuple[Extension, ...]

    @property
    def server_name(self) -> str | None:
        names = self.ext_value(ext.SERVER_NAME)
        return names[0] if isinstance(names, tuple) and names else None

    @property
    def supported_versions(self) -> tuple[int, ...]:
        """Versions offered via the extension, or the legacy_version alone."""
        v = self.ext_value(ext.SUPPORTED_VERSIONS)
        return v if isinstance(v, tuple) else (self.legacy_version,)

    @property
    def alpn(self) -> tuple[str, ...]:
        v = self.ext_value(ext.ALPN)
        return v if isinstance(v, tuple) else ()


@dataclass(**_M)
class ServerHello(_HasExtensions, Message):
    """What the server chose; also a HelloRetryRequest (RFC 8446 4.1.3)."""

    legacy_version: int
    random: bytes = field(repr=False)
    session_id: bytes = field(repr=False)
    cipher_suite: int
    compression_method: int
    extensions: tuple[Extension, ...]
    is_hello_retry_request: bool
    downgrade_sentinel: str | None  # "tls12" / "tls11" when the random ends with the RFC 8446 marker

    @property
    def selected_version(self) -> int:
        v = self.ext_value(ext.SUPPORTED_VERSIONS)
        return v if isinstance(v, int) else self.legacy_version

    @property
    def alpn(self) -> str | None:
        v = self.ext_value(ext.ALPN)
        return v[0] if isinstance(v, tuple) and v else None


@dataclass(**_M)
class NewSessionTicket(_HasExtensions, Message):
    """A session ticket: lengths only, the ticket itself is never kept."""

    ticket_lifetime: int
    ticket_age_add: int | None
    ticket_nonce_length: int | None
    ticket_length: int
    extensions: tuple[Extension, ...] = ()


@dataclass(**_M)
class EncryptedExtensions(_HasExtensions, Message):
    """TLS 1.3: the server's extensions that need no cleartext."""

    extensions: tuple[Extension, ...]


@dataclass(**_M)
class CertificateEntry(_HasExtensions):
    """One certificate of a chain, with its TLS 1.3 per-entry extensions."""

    cert_data: bytes = field(repr=False)
    info: CertificateInfo
    extensions: tuple[Extension, ...] = ()


@dataclass(**_M)
class Certificate(Message):
    """TLS 1.0-1.2 certificate_list, or TLS 1.3 with a request context and per-entry extensions."""

    certificate_request_context: bytes | None
    entries: tuple[CertificateEntry, ...]

    @property
    def is_empty(self) -> bool:
        return not self.entries


@dataclass(**_M)
class ServerKeyExchange(Message):
    """Only what a diagnosis needs: the kind, the group or prime size, the signature algorithm."""

    kind: str  # "ecdhe" | "dhe" | "rsa_export" | "psk" | "unknown"
    named_group: int | None = None
    curve_type: int | None = None
    public_key_length: int | None = None
    dh_p_bits: int | None = None
    dh_g_length: int | None = None
    psk_identity_hint_length: int | None = None
    signature_algorithm: int | None = None  # SignatureScheme (TLS 1.2); None before 1.2 or anonymous
    signature_length: int | None = None


@dataclass(**_M)
class CertificateRequest(_HasExtensions, Message):
    """The server asks for a client certificate (TLS 1.3 or <= 1.2 layout)."""

    certificate_request_context: bytes | None  # TLS 1.3
    certificate_types: tuple[int, ...]  # TLS <= 1.2
    signature_algorithms: tuple[int, ...] | None
    certificate_authorities: tuple[str, ...]  # RFC 4514 strings
    extensions: tuple[Extension, ...] = ()


@dataclass(**_M)
class CertificateVerify(Message):
    """A proof of the certificate's key: the algorithm and the signature's length."""

    algorithm: int | None  # None before TLS 1.2
    signature_length: int


@dataclass(**_M)
class ClientKeyExchange(Message):
    """The client's key exchange (TLS <= 1.2): its kind and length only."""

    kind: str  # "rsa" | "dh" | "ecdh" | "psk" | "unknown"
    exchange_length: int


@dataclass(**_M)
class Finished(Message):
    """Finished: only the length of verify_data is kept."""

    verify_data_length: int


@dataclass(**_M)
class CertificateStatus(Message):
    """A stapled OCSP response (RFC 6066 8): its type and length."""

    status_type: int
    response_length: int


@dataclass(**_M)
class KeyUpdate(Message):
    """TLS 1.3 KeyUpdate (RFC 8446 4.6.3)."""

    request_update: int


@dataclass(**_M)
class CompressedCertificate(Message):
    """A Certificate compressed with RFC 8879: algorithm and both lengths."""

    algorithm: int
    uncompressed_length: int
    compressed_length: int


@dataclass(**_M)
class Opaque(Message):
    """A handshake type we do not decode; its bytes stay in the event's ``raw``."""

    length: int


def _client_hello(r: Reader, ctx: DecodeContext) -> ClientHello:
    data, pos, end = r.span()
    if end - pos >= 38 and type(data) is bytes:
        # Fast path: the fields before the extensions indexed directly when they are all there
        # (the checked reads below name the field of a short or odd hello).
        suites_at = pos + 35 + data[pos + 34]
        if suites_at + 2 <= end:
            compression_at = suites_at + 2 + ((data[suites_at] << 8) | data[suites_at + 1])
            if compression_at < end and not (compression_at - suites_at) % 2:
                extensions_at = compression_at + 1 + data[compression_at]
                if extensions_at <= end:
                    r.seek(extensions_at)
                    return _build_client_hello(
                        (data[pos] << 8) | data[pos + 1],
                        data[pos + 2 : pos + 34],
                        data[pos + 35 : suites_at],
                        _cipher_suites(data[suites_at + 2 : compression_at]),
                        tuple(data[compression_at + 1 : extensions_at]),
                        decode_extensions(r, ext.CLIENT_HELLO),
                    )
    legacy_version = r.u16("legacy_version")
    random = r.bytes(32, "random")
    session_id = r.vec(1, "legacy_session_id")
    suites = r.u16_list(2, "cipher_suites")
    compression = r.u8_list(1, "legacy_compression_methods")
    exts = decode_extensions(r, ext.CLIENT_HELLO)
    return _build_client_hello(legacy_version, random, session_id, suites, compression, exts)


# A client stack offers the same cipher suite list on every connection: decoded lists are kept by
# their bytes (immutable tuples; cleared when full, so at most _SUITES_MEMO entries).
_SUITES_MEMO = 256
_suites_memo: dict[bytes, tuple[int, ...]] = {}


def _cipher_suites(raw: bytes) -> tuple[int, ...]:
    suites = _suites_memo.get(raw)
    if suites is None:
        suites = struct.unpack(f">{len(raw) // 2}H", raw)
        remember(_suites_memo, raw, suites, _SUITES_MEMO)
    return suites


def _server_hello(r: Reader, ctx: DecodeContext) -> ServerHello:
    data, pos, end = r.span()
    suite_at = pos + 35 + data[pos + 34] if end - pos >= 38 else end
    if suite_at + 3 <= end and type(data) is bytes:
        # Fast path: the fields before the extensions indexed directly when they are all there.
        legacy_version = (data[pos] << 8) | data[pos + 1]
        random = data[pos + 2 : pos + 34]
        session_id = data[pos + 35 : suite_at]
        suite = (data[suite_at] << 8) | data[suite_at + 1]
        compression = data[suite_at + 2]
        r.seek(suite_at + 3)
    else:
        legacy_version = r.u16("legacy_version")
        random = r.bytes(32, "random")
        session_id = r.vec(1, "legacy_session_id")
        suite = r.u16("cipher_suite")
        compression = r.u8("legacy_compression_method")
    hrr = random == HRR_RANDOM
    exts = decode_extensions(r, ext.HELLO_RETRY_REQUEST if hrr else ext.SERVER_HELLO)
    tail = random[-8:]
    sentinel = "tls12" if tail == DOWNGRADE_TLS12 else "tls11" if tail == DOWNGRADE_TLS11 else None
    return _build_server_hello(legacy_version, random, session_id, suite, compression, exts, hrr, sentinel)


def _empty(r: Reader, ctx: DecodeContext) -> Empty:
    r.expect_end("body")
    return _EMPTY


def _new_session_ticket(r: Reader, ctx: DecodeContext) -> NewSessionTicket:
    lifetime = r.u32("ticket_lifetime")
    if not ctx.tls13:
        return _build_new_session_ticket(lifetime, None, None, r.vec_len(2, "ticket"), ())
    age_add = r.u32("ticket_age_add")
    nonce_length = r.vec_len(1, "ticket_nonce")
    ticket_length = r.vec_len(2, "ticket")
    exts = decode_extensions(r, ext.NEW_SESSION_TICKET)
    return _build_new_session_ticket(lifetime, age_add, nonce_length, ticket_length, exts)


def _encrypted_extensions(r: Reader, ctx: DecodeContext) -> EncryptedExtensions:
    return EncryptedExtensions(extensions=decode_extensions(r, ext.ENCRYPTED_EXTENSIONS))


def _certificate(r: Reader, ctx: DecodeContext) -> Certificate:
    context = r.vec(1, "certificate_request_context") if ctx.tls13 else None
    lst = r.sub(3, "certificate_list")
    entries = []
    while not lst.at_end():
        der = lst.vec(3, "cert_data")
        exts = decode_extensions(lst, ext.CERTIFICATE) if ctx.tls13 else ()
        entries.append(_build_certificate_entry(der, decode_certificate(der), exts))
    return Certificate(certificate_request_context=context, entries=tuple(entries))


def _server_key_exchange(r: Reader, ctx: DecodeContext) -> ServerKeyExchange:
    info = cipher_suite_info(ctx.cipher_suite) if ctx.cipher_suite is not None else None
    kx = info.key_exchange if info is not None else ""
    auth = info.authentication if info is not None else ""
    sig_alg_present = ctx.version is not None and ctx.version >= 0x0303
    named_group = curve_type = public_key_length = dh_p_bits = dh_g_length = None
    hint_len = signature_algorithm = signature_length = None
    if "PSK" in kx:
        hint_len = r.vec_len(2, "psk_identity_hint")
    if kx.startswith("ECDH"):
        curve_type = r.u8("curve_type")
        if curve_type == 3:  # named_curve
            named_group = r.u16("namedcurve")
        else:
            raise WireError("curve_type", r.offset - 1, f"explicit curves ({curve_type}) are not decoded")
        public_key_length = r.vec_len(1, "point")
        kind = "ecdhe"
    elif kx.startswith("DH") or kx == "DHE_PSK":
        p = r.vec(2, "dh_p")
        dh_p_bits = int.from_bytes(p, "big").bit_length()
        dh_g_length = r.vec_len(2, "dh_g")
        public_key_length = r.vec_len(2, "dh_Ys")
        kind = "dhe"
    elif kx == "RSA":
        public_key_length = r.vec_len(2, "rsa_modulus")
        r.vec_len(2, "rsa_exponent")
        kind = "rsa_export"
    elif kx == "PSK" or kx == "RSA_PSK":
        kind = "psk"
    else:
        return ServerKeyExchange(kind="unknown")
    if not r.at_end() and auth not in ("anon", "PSK"):
        if sig_alg_present:
            signature_algorithm = r.u16("algorithm")
        signature_length = r.vec_len(2, "signature")
    r.expect_end("ServerKeyExchange")
    return _build_server_key_exchange(kind, named_group, curve_type, public_key_length, dh_p_bits, dh_g_length,
                                      hint_len, signature_algorithm, signature_length)


def _certificate_request(r: Reader, ctx: DecodeContext) -> CertificateRequest:
    if ctx.tls13:
        context = r.vec(1, "certificate_request_context")
        exts = decode_extensions(r, ext.CERTIFICATE_REQUEST)
        algs = find(exts, ext.SIGNATURE_ALGORITHMS)
        cas = find(exts, ext.CERTIFICATE_AUTHORITIES)
        return CertificateRequest(
            certificate_request_context=context,
            certificate_types=(),
            signature_algorithms=algs.value if algs is not None and isinstance(algs.value, tuple) else None,
            certificate_authorities=cas.value if cas is not None and isinstance(cas.value, tuple) else (),
            extensions=exts,
        )
    types = r.u8_list(1, "certificate_types")
    algs12 = None
    if ctx.version is None or ctx.version >= 0x0303:
        algs12 = r.u16_list(2, "supported_signature_algorithms")
    authorities = ext.decode_dn_list(r.sub(2, "certificate_authorities"))
    return CertificateRequest(
        certificate_request_context=None,
        certificate_types=types,
        signature_algorithms=algs12,
        certificate_authorities=authorities,
    )


def _certificate_verify(r: Reader, ctx: DecodeContext) -> CertificateVerify:
    algorithm = None
    if ctx.version is None or ctx.version >= 0x0303:
        algorithm = r.u16("algorithm")
    return CertificateVerify(algorithm=algorithm, signature_length=len(r.vec(2, "signature")))


def _client_key_exchange(r: Reader, ctx: DecodeContext) -> ClientKeyExchange:
    info = cipher_suite_info(ctx.cipher_suite) if ctx.cipher_suite is not None else None
    kx = info.key_exchange if info is not None else ""
    if "PSK" in kx:
        r.vec_len(2, "psk_identity")
        if kx == "PSK":
            return _build_client_key_exchange("psk", 0)
    if kx.startswith("ECDH"):
        return _build_client_key_exchange("ecdh", r.vec_len(1, "ecdh_Yc"))
    if kx.startswith("DH"):
        return _build_client_key_exchange("dh", r.vec_len(2, "dh_Yc"))
    if kx.startswith("RSA"):
        if ctx.version == 0x0300:  # SSL 3.0 sends the encrypted premaster secret without a length
            return _build_client_key_exchange("rsa", len(r.rest()))
        return _build_client_key_exchange("rsa", r.vec_len(2, "EncryptedPreMasterSecret"))
    return _build_client_key_exchange("unknown", len(r.rest()))


def _finished(r: Reader, ctx: DecodeContext) -> Finished:
    return Finished(verify_data_length=len(r.rest()))


def _certificate_status(r: Reader, ctx: DecodeContext) -> CertificateStatus:
    status_type = r.u8("status_type")
    return CertificateStatus(status_type=status_type, response_length=len(r.vec(3, "response")))


def _key_update(r: Reader, ctx: DecodeContext) -> KeyUpdate:
    return KeyUpdate(request_update=r.u8("request_update"))


def _compressed_certificate(r: Reader, ctx: DecodeContext) -> CompressedCertificate:
    algorithm = r.u16("algorithm")
    uncompressed = r.u24("uncompressed_length")
    return CompressedCertificate(
        algorithm=algorithm,
        uncompressed_length=uncompressed,
        compressed_length=len(r.vec(3, "compressed_certificate_message")),
    )


_EMPTY = Empty()  # immutable: one instance serves every empty body

# The messages every handshake has, built positionally (see fastbuild), fields in declaration order.
_build_client_hello = frozen_builder(ClientHello)
_build_server_hello = frozen_builder(ServerHello)
_build_certificate_entry = frozen_builder(CertificateEntry)
_build_new_session_ticket = frozen_builder(NewSessionTicket)
_build_server_key_exchange = frozen_builder(ServerKeyExchange)
_build_client_key_exchange = frozen_builder(ClientKeyExchange)

_DECODERS: dict[int, Callable[[Reader, DecodeContext], Message]] = {
    HandshakeType.hello_request: _empty,
    HandshakeType.client_hello: _client_hello,
    HandshakeType.server_hello: _server_hello,
    HandshakeType.new_session_ticket: _new_session_ticket,
    HandshakeType.end_of_early_data: _empty,
    HandshakeType.encrypted_extensions: _encrypted_extensions,
    HandshakeType.certificate: _certificate,
    HandshakeType.server_key_exchange: _server_key_exchange,
    HandshakeType.certificate_request: _certificate_request,
    HandshakeType.server_hello_done: _empty,
    HandshakeType.certificate_verify: _certificate_verify,
    HandshakeType.client_key_exchange: _client_key_exchange,
    HandshakeType.finished: _finished,
    HandshakeType.certificate_status: _certificate_status,
    HandshakeType.key_update: _key_update,
    HandshakeType.compressed_certificate: _compressed_certificate,
}

# ClientHello and ServerHello may carry bytes after their extensions in the wild; the RFCs do not
# allow it, so it is an error, but the decoded fields are still useful.  Others must end exactly.


def decode_message(msg_type: int, body: bytes, ctx: DecodeContext) -> tuple[Message | None, str | None]:
    """Decode one handshake body; returns ``(message, None)`` or ``(None, error)``."""
    decoder = _DECODERS.get(msg_type)
    if decoder is None:
        return Opaque(length=len(body)), None
    return _decode(decoder, body, ctx)


def decode_handshake(msg_type: int, raw: bytes, ctx: DecodeContext) -> tuple[Message | None, str | None]:
    """:func:`decode_message` for a whole message, ``raw`` with its 4-byte header: bodies that
    repeat across connections are served from a memo keyed by ``raw`` (no copy of the body)."""
    decoder = _DECODERS.get(msg_type)
    if decoder is None:
        return Opaque(length=len(raw) - 4), None
    if msg_type in _MEMOISED and type(raw) is bytes and len(raw) <= _MEMO_MAX_BYTES:
        key = (ctx.tls13, ctx.version, raw)
        result = _memo.get(key)
        if result is None:
            result = _decode(decoder, raw[4:], ctx)
            remember(_memo, key, result, _MEMO_ENTRIES)
        return result
    return _decode(decoder, raw[4:], ctx)


def _decode(decoder: Callable[[Reader, DecodeContext], Message], body: bytes,
            ctx: DecodeContext) -> tuple[Message | None, str | None]:
    r = Reader(body)
    try:
        msg = decoder(r, ctx)
        r.expect_end("message body")
    except WireError as exc:
        return None, str(exc)
    return msg, None


# A server sends the same certificate chain (and CertificateRequest, OCSP staple, empty
# ServerHelloDone...) on every connection: those bodies are decoded once and the result, immutable, is shared, keyed by the
# body and the parts of the context their decoders read.  Bodies carrying per-connection randomness
# (hellos, key exchanges, tickets, signatures, Finished) are never memoised.  Bounded: cleared when
# it reaches _MEMO_ENTRIES, and no message over _MEMO_MAX_BYTES is kept (at most ~4 MB).
_MEMOISED = frozenset({HandshakeType.certificate, HandshakeType.certificate_request,
                       HandshakeType.certificate_status, HandshakeType.encrypted_extensions,
                       HandshakeType.compressed_certificate, HandshakeType.server_hello_done,
                       HandshakeType.hello_request, HandshakeType.end_of_early_data})
_MEMO_ENTRIES = 256
_MEMO_MAX_BYTES = 16 * 1024
_memo: dict[tuple[bool, int | None, bytes], tuple[Message | None, str | None]] = {}
