"""SSL 2.0 handshake messages (the Netscape SSL 2.0 specification; RFC 6101 appendix E.2 for the
SSLv2-compatible ClientHello that SSL 3.0 and TLS clients used to send).

Only cleartext hellos and CLIENT-MASTER-KEY are decoded: once the master key is sent, every
further SSL 2.0 record is encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tlsproxy.wire.reader import Reader, WireError

_M = dict(frozen=True, slots=True, kw_only=True)

SSL2_MT_ERROR = 0
SSL2_MT_CLIENT_HELLO = 1
SSL2_MT_CLIENT_MASTER_KEY = 2
SSL2_MT_SERVER_HELLO = 4

MESSAGE_NAMES = {
    0: "SSLv2 ERROR",
    1: "SSLv2 CLIENT-HELLO",
    2: "SSLv2 CLIENT-MASTER-KEY",
    3: "SSLv2 CLIENT-FINISHED",
    4: "SSLv2 SERVER-HELLO",
    5: "SSLv2 SERVER-VERIFY",
    6: "SSLv2 SERVER-FINISHED",
    7: "SSLv2 REQUEST-CERTIFICATE",
    8: "SSLv2 CLIENT-CERTIFICATE",
}


@dataclass(**_M)
class SSLv2Message:
    """Base for decoded SSL 2.0 messages."""


@dataclass(**_M)
class SSLv2ClientHello(SSLv2Message):
    """``version`` 0x0002 is a genuine SSL 2.0 client; 0x0300+ an SSLv2-compatible hello that
    offers SSL 3.0/TLS.  ``cipher_specs`` are 24-bit: values below 0x010000 are TLS suites."""

    version: int
    cipher_specs: tuple[int, ...]
    session_id: bytes = field(repr=False)
    challenge: bytes = field(repr=False)

    @property
    def tls_cipher_suites(self) -> tuple[int, ...]:
        return tuple(c for c in self.cipher_specs if c >> 16 == 0)


@dataclass(**_M)
class SSLv2ServerHello(SSLv2Message):
    """An SSL 2.0 SERVER-HELLO."""

    session_id_hit: int
    certificate_type: int
    version: int
    certificate: bytes = field(repr=False)
    cipher_specs: tuple[int, ...]
    connection_id_length: int


@dataclass(**_M)
class SSLv2ClientMasterKey(SSLv2Message):
    """An SSL 2.0 CLIENT-MASTER-KEY: after it, every record is encrypted."""

    cipher_kind: int
    clear_key_length: int
    encrypted_key_length: int
    key_arg_length: int


def _specs(raw: bytes) -> tuple[int, ...]:
    if len(raw) % 3:
        raise WireError("cipher_specs", 0, f"length {len(raw)} is not a multiple of 3")
    return tuple(int.from_bytes(raw[i : i + 3], "big") for i in range(0, len(raw), 3))


def decode_sslv2(payload: bytes) -> tuple[int | None, SSLv2Message | None, str | None]:
    """Decode a cleartext SSL 2.0 record body: ``(msg_type, message, error)``."""
    if not payload:
        return None, None, "empty SSLv2 record"
    r = Reader(payload)
    try:
        msg_type = r.u8("msg_type")
        if msg_type == SSL2_MT_CLIENT_HELLO:
            version = r.u16("version")
            specs_len = r.u16("cipher_specs_length")
            sid_len = r.u16("session_id_length")
            ch_len = r.u16("challenge_length")
            specs = _specs(r.bytes(specs_len, "cipher_specs"))
            sid = r.bytes(sid_len, "session_id")
            challenge = r.bytes(ch_len, "challenge")
            return msg_type, SSLv2ClientHello(version=version, cipher_specs=specs, session_id=sid,
                                              challenge=challenge), None
        if msg_type == SSL2_MT_SERVER_HELLO:
            hit = r.u8("session_id_hit")
            cert_type = r.u8("certificate_type")
            version = r.u16("server_version")
            cert_len = r.u16("certificate_length")
            specs_len = r.u16("cipher_specs_length")
            conn_len = r.u16("connection_id_length")
            cert = r.bytes(cert_len, "certificate")
            specs = _specs(r.bytes(specs_len, "cipher_specs"))
            r.bytes(conn_len, "connection_id")
            return msg_type, SSLv2ServerHello(session_id_hit=hit, certificate_type=cert_type, version=version,
                                              certificate=cert, cipher_specs=specs,
                                              connection_id_length=conn_len), None
        if msg_type == SSL2_MT_CLIENT_MASTER_KEY:
            kind = int.from_bytes(r.bytes(3, "cipher_kind"), "big")
            clear = r.u16("clear_key_length")
            enc = r.u16("encrypted_key_length")
            arg = r.u16("key_arg_length")
            return msg_type, SSLv2ClientMasterKey(cipher_kind=kind, clear_key_length=clear,
                                                  encrypted_key_length=enc, key_arg_length=arg), None
        return msg_type, None, None
    except WireError as exc:
        return payload[0], None, str(exc)
