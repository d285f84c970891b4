"""Key derivation and record protection for reading (never writing) TLS records.

Everything here is a pure function of its arguments or a small object holding one direction's
keys: the TLS 1.3 key schedule tail (HKDF-Expand-Label), the TLS 1.0-1.2 and SSL 3.0 PRFs and
key blocks, and one "opener" per record protection scheme.  Openers raise :class:`OpenError`
when a record does not authenticate; the caller turns that into a result.

The cipher-suite table below is deliberately private and small: only what decrypting needs
(bulk cipher, MAC, PRF hash) for the suites we can open.  The IANA name table lives elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers import algorithms as _algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from tlsproxy.wire.registry import CIPHER_SUITES

try:  # cryptography >= 43 keeps the legacy ciphers here; older releases only in `algorithms`.
    from cryptography.hazmat.decrepit.ciphers import algorithms as _legacy
except ImportError:  # pragma: no cover - depends on the installed cryptography
    _legacy = _algorithms  # type: ignore[assignment]

SSL3 = 0x0300
TLS10 = 0x0301
TLS11 = 0x0302
TLS12 = 0x0303
TLS13 = 0x0304

_SEQ = struct.Struct(">Q")
_U16 = struct.Struct(">H")


class OpenError(ValueError):
    """A record that does not open under the keys we have (bad tag, MAC or padding)."""


# --------------------------------------------------------------------------------------------
# Cipher suites


@dataclass(frozen=True, slots=True)
class SuiteParams:
    """What decrypting a suite needs.  ``cipher`` is one of the keys of ``_BULK``; ``mac`` is a
    hashlib name or ``None`` for AEAD suites; ``prf_hash`` drives the TLS 1.2 PRF and the TLS
    1.3 HKDF."""

    code: int
    name: str
    cipher: str
    kind: str  # "aead" | "block" | "stream" | "null"
    key_len: int
    iv_len: int  # TLS 1.3 / 1.2 AEAD: implicit nonce part; block: block size; else 0
    tag_len: int  # AEAD tag length, else 0
    explicit_nonce_len: int  # bytes of nonce carried in each TLS 1.2 record (AEAD only)
    mac: str | None
    mac_len: int
    prf_hash: str
    tls13: bool


# bulk cipher name -> (kind, key_len, iv_len, tag_len, explicit_nonce_len)
_BULK: dict[str, tuple[str, int, int, int, int]] = {
    "AES_128_GCM": ("aead", 16, 4, 16, 8),
    "AES_256_GCM": ("aead", 32, 4, 16, 8),
    "AES_128_CCM": ("aead", 16, 4, 16, 8),
    "AES_256_CCM": ("aead", 32, 4, 16, 8),
    "AES_128_CCM_8": ("aead", 16, 4, 8, 8),
    "AES_256_CCM_8": ("aead", 32, 4, 8, 8),
    "CHACHA20_POLY1305": ("aead", 32, 12, 16, 0),
    "AES_128_CBC": ("block", 16, 16, 0, 0),
    "AES_256_CBC": ("block", 32, 16, 0, 0),
    "CAMELLIA_128_CBC": ("block", 16, 16, 0, 0),
    "CAMELLIA_256_CBC": ("block", 32, 16, 0, 0),
    "SEED_CBC": ("block", 16, 16, 0, 0),
    "3DES_EDE_CBC": ("block", 24, 8, 0, 0),
    "DES_CBC": ("block", 8, 8, 0, 0),
    "IDEA_CBC": ("block", 16, 8, 0, 0),
    "RC4_128": ("stream", 16, 0, 0, 0),
    "NULL": ("null", 0, 0, 0, 0),
}
_MACS = {"MD5": ("md5", 16), "SHA": ("sha1", 20), "SHA256": ("sha256", 32), "SHA384": ("sha384", 48)}

_TLS13_NAME = re.compile(r"TLS_(?P<bulk>[A-Z0-9_]+?)_(?P<hash>SHA256|SHA384)")
_TLS12_NAME = re.compile(r"TLS_\w+?_WITH_(?P<bulk>[A-Z0-9_]+?)(?:_(?P<mac>MD5|SHA|SHA256|SHA384))?")


def _params_from_name(code: int, name: str) -> SuiteParams:
    tls13 = 0x1300 <= code <= 0x13FF
    if tls13:
        m = _TLS13_NAME.fullmatch(name)
        assert m is not None, name
        bulk, prf, mac = m["bulk"], m["hash"].lower(), None
    else:
        m = _TLS12_NAME.fullmatch(name)
        assert m is not None, name
        bulk, suffix = m["bulk"], m["mac"]
        kind = _BULK[bulk][0]
        prf = "sha384" if suffix == "SHA384" else "sha256"
        mac = None if kind == "aead" else _MACS[suffix][0]  # type: ignore[index]
    kind, key_len, iv_len, tag_len, explicit = _BULK[bulk]
    if tls13:
        iv_len, explicit = 12, 0
    return SuiteParams(
        code=code,
        name=name,
        cipher=bulk,
        kind=kind,
        key_len=key_len,
        iv_len=iv_len,
        tag_len=tag_len,
        explicit_nonce_len=explicit,
        mac=mac,
        mac_len=hashlib.new(mac).digest_size if mac else 0,
        prf_hash=prf,
        tls13=tls13,
    )


def _openable(code: int, name: str) -> bool:
    """A registry suite whose record protection we implement (key exchange and authentication do
    not matter for decryption, so the parameters are read off the IANA name)."""
    if 0x1300 <= code <= 0x13FF:
        m = _TLS13_NAME.fullmatch(name)
        return m is not None and m["bulk"] in _BULK
    if "EXPORT" in name:  # 40-bit key derivation is not implemented
        return False
    m = _TLS12_NAME.fullmatch(name)
    if m is None or m["bulk"] not in _BULK:
        return False
    return _BULK[m["bulk"]][0] == "aead" or m["mac"] in _MACS


#: The suites we open: every entry of the IANA registry whose cipher and MAC are implemented here.
SUITES: dict[int, SuiteParams] = {
    code: _params_from_name(code, name) for code, name in CIPHER_SUITES.items() if _openable(code, name)
}


def suite_params(code: int) -> SuiteParams | None:
    """Decryption parameters for a suite, or ``None`` when we do not open it."""
    return SUITES.get(code)


# --------------------------------------------------------------------------------------------
# Key derivation


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand."""
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), hash_name)
        out += block
        counter += 1
    return out[:length]


def hkdf_expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """RFC 8446 section 7.1 HKDF-Expand-Label (the ``"tls13 "`` prefix is added here)."""
    full = b"tls13 " + label
    info = _U16.pack(length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    return hkdf_expand(hash_name, secret, info, length)


def tls13_traffic_keys(params: SuiteParams, secret: bytes) -> tuple[bytes, bytes]:
    """(key, iv) for one direction from its traffic secret (RFC 8446 section 7.3)."""
    h = params.prf_hash
    return (
        hkdf_expand_label(h, secret, b"key", b"", params.key_len),
        hkdf_expand_label(h, secret, b"iv", b"", params.iv_len),
    )


def tls13_next_secret(hash_name: str, secret: bytes) -> bytes:
    """application_traffic_secret_N+1 after a KeyUpdate (RFC 8446 section 7.2)."""
    return hkdf_expand_label(hash_name, secret, b"traffic upd", b"", hashlib.new(hash_name).digest_size)


def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    """RFC 5246 section 5 P_hash."""
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + seed, hash_name)
    return out[:length]


def prf_tls12(hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.2 PRF: P_<hash>(secret, label + seed)."""
    return _p_hash(hash_name, secret, label + seed, length)


def prf_tls10(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.0/1.1 PRF (RFC 2246 section 5): P_MD5 over the first half of the secret XOR
    P_SHA1 over the second half (the halves overlap by one byte for odd lengths)."""
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, length)
    sha = _p_hash("sha1", secret[len(secret) - half :], label + seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha, strict=True))


def ssl3_key_block(master: bytes, server_random: bytes, client_random: bytes, length: int) -> bytes:
    """SSL 3.0 key expansion: MD5(master + SHA1('A' + master + randoms)), then 'BB', 'CCC'..."""
    out = b""
    i = 0
    while len(out) < length:
        salt = bytes([0x41 + i]) * (i + 1)
        inner = hashlib.sha1(salt + master + server_random + client_random).digest()
        out += hashlib.md5(master + inner).digest()
        i += 1
    return out[:length]


@dataclass(frozen=True, slots=True)
class KeyBlock:
    """One TLS <= 1.2 connection's keys, split per side."""

    client_mac: bytes
    server_mac: bytes
    client_key: bytes
    server_key: bytes
    client_iv: bytes
    server_iv: bytes


def tls12_key_block(
    params: SuiteParams, version: int, master: bytes, client_random: bytes, server_random: bytes
) -> KeyBlock:
    """Split the key block (RFC 5246 section 6.3).  IVs are always derived: TLS 1.0 and SSL 3.0
    CBC use them as the first record's IV, AEAD suites as the implicit nonce part, and TLS
    1.1+/1.2 CBC ignores them (they come last, so deriving them changes nothing else)."""
    mac, key, iv = params.mac_len, params.key_len, params.iv_len
    need = 2 * (mac + key + iv)
    seed = server_random + client_random
    if version == SSL3:
        block = ssl3_key_block(master, server_random, client_random, need)
    elif version in (TLS10, TLS11):
        block = prf_tls10(master, b"key expansion", seed, need)
    else:
        block = prf_tls12(params.prf_hash, master, b"key expansion", seed, need)
    parts = []
    pos = 0
    for n in (mac, mac, key, key, iv, iv):
        parts.append(block[pos : pos + n])
        pos += n
    return KeyBlock(*parts)


# --------------------------------------------------------------------------------------------
# Record openers


class Opener(Protocol):
    """Opens one direction's protected records in order; holds that direction's keys and any
    cipher state that runs across records (RC4 keystream, TLS 1.0 CBC IV chain)."""

    def open(self, seq: int, content_type: int, version: int, payload: bytes) -> bytes: ...

    def skip(self, length: int, tail: bytes) -> None:
        """Account for ``length`` bytes of records that will never be opened, the last of
        them ending in ``tail``, so cross-record cipher state stays right."""


def _aead(cipher: str, key: bytes) -> Any:
    if cipher.endswith("GCM"):
        return AESGCM(key)
    if cipher == "CHACHA20_POLY1305":
        return ChaCha20Poly1305(key)
    if cipher.endswith("CCM_8"):
        return AESCCM(key, tag_length=8)
    if cipher.endswith("CCM"):
        return AESCCM(key, tag_length=16)
    raise UnsupportedAlgorithm(f"{cipher} is not an AEAD")


def _xor_seq(iv: bytes, seq: int) -> bytes:
    """The per-record nonce of RFC 8446 section 5.3 (also RFC 7905 for TLS 1.2 ChaCha20)."""
    n = int.from_bytes(iv, "big") ^ seq
    return n.to_bytes(len(iv), "big")


class Tls13Opener:
    """TLS 1.3 AEAD records: nonce = iv XOR seq, additional data = the record header.  Returns
    the TLSInnerPlaintext (content + type byte + zero padding), unparsed."""

    __slots__ = ("_aead", "_iv", "_tag_len")

    def __init__(self, params: SuiteParams, key: bytes, iv: bytes) -> None:
        self._aead = _aead(params.cipher, key)
        self._iv = iv
        self._tag_len = params.tag_len

    def open(self, seq: int, content_type: int, version: int, payload: bytes) -> bytes:
        if len(payload) < self._tag_len + 1:
            raise OpenError(f"record of {len(payload)} bytes is shorter than the tag")
        header = bytes([content_type]) + _U16.pack(version) + _U16.pack(len(payload))
        try:
            return self._aead.decrypt(_xor_seq(self._iv, seq), payload, header)  # type: ignore[no-any-return]
        except InvalidTag:
            raise OpenError("authentication tag mismatch") from None

    def skip(self, length: int, tail: bytes) -> None:
        pass


def _tls12_ad(seq: int, content_type: int, version: int, length: int) -> bytes:
    return _SEQ.pack(seq) + bytes([content_type]) + _U16.pack(version) + _U16.pack(length)


class Tls12AeadOpener:
    """TLS 1.2 AEAD records.  GCM/CCM: 4-byte implicit salt + 8-byte explicit nonce at the start
    of each record (RFC 5288, 6655); ChaCha20-Poly1305: iv XOR seq, nothing explicit (RFC 7905)."""

    __slots__ = ("_aead", "_iv", "_tag_len", "_explicit")

    def __init__(self, params: SuiteParams, key: bytes, iv: bytes) -> None:
        self._aead = _aead(params.cipher, key)
        self._iv = iv
        self._tag_len = params.tag_len
        self._explicit = params.explicit_nonce_len

    def open(self, seq: int, content_type: int, version: int, payload: bytes) -> bytes:
        explicit = self._explicit
        length = len(payload) - explicit - self._tag_len
        if length < 0:
            raise OpenError(f"record of {len(payload)} bytes is shorter than nonce and tag")
        if explicit:
            nonce = self._iv + payload[:explicit]
            payload = payload[explicit:]
        else:
            nonce = _xor_seq(self._iv, seq)
        try:
            return self._aead.decrypt(nonce, payload, _tls12_ad(seq, content_type, version, length))  # type: ignore[no-any-return]
        except InvalidTag:
            raise OpenError("authentication tag mismatch") from None

    def skip(self, length: int, tail: bytes) -> None:
        pass


_SSL3_PAD = {"md5": 48, "sha1": 40}


class _Mac:
    """The record MAC: HMAC over seq + type + version + length + data (TLS), or the SSL 3.0
    keyed hash that leaves the version out."""

    __slots__ = ("_key", "_hash", "_ssl3", "length")

    def __init__(self, params: SuiteParams, key: bytes, version: int) -> None:
        assert params.mac is not None
        self._key = key
        self._hash = params.mac
        self._ssl3 = version == SSL3
        self.length = params.mac_len

    def compute(self, seq: int, content_type: int, version: int, data: bytes) -> bytes:
        if self._ssl3:
            pad = _SSL3_PAD[self._hash]
            header = _SEQ.pack(seq) + bytes([content_type]) + _U16.pack(len(data))
            inner = hashlib.new(self._hash, self._key + b"\x36" * pad + header + data).digest()
            return hashlib.new(self._hash, self._key + b"\x5c" * pad + inner).digest()
        return hmac.digest(self._key, _tls12_ad(seq, content_type, version, len(data)) + data, self._hash)

    def check(self, seq: int, content_type: int, version: int, data: bytes, tag: bytes) -> None:
        if not hmac.compare_digest(self.compute(seq, content_type, version, data), tag):
            raise OpenError("record MAC mismatch")


def _block_algorithm(cipher: str, key: bytes) -> Any:
    if cipher.startswith("AES"):
        return _algorithms.AES(key)
    if cipher.startswith("CAMELLIA"):
        return _legacy.Camellia(key)
    if cipher in ("3DES_EDE_CBC", "DES_CBC"):
        # An 8-byte key makes it single DES, which cryptography warns about: the peers chose it,
        # we only read it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _legacy.TripleDES(key)
    if cipher == "SEED_CBC":
        return _legacy.SEED(key)
    if cipher == "IDEA_CBC":
        return _legacy.IDEA(key)
    raise UnsupportedAlgorithm(cipher)


class CbcOpener:
    """Block cipher records, MAC-then-encrypt (RFC 5246 section 6.2.3.2) or encrypt-then-MAC
    (RFC 7366).  TLS 1.1+ carries an explicit IV in each record; TLS 1.0 and SSL 3.0 chain the
    IV from the previous record's last ciphertext block, so that chain is kept here."""

    __slots__ = ("_algorithm", "_block", "_mac", "_explicit_iv", "_iv", "_etm", "_ssl3")

    def __init__(
        self, params: SuiteParams, key: bytes, iv: bytes, mac_key: bytes, version: int, etm: bool
    ) -> None:
        self._algorithm = _block_algorithm(params.cipher, key)
        # Build one cipher now so an algorithm the backend lacks fails at install time.
        Cipher(self._algorithm, modes.CBC(b"\x00" * params.iv_len)).decryptor()
        self._block = params.iv_len
        self._mac = _Mac(params, mac_key, version)
        self._explicit_iv = version >= TLS11
        self._iv = iv
        self._etm = etm
        self._ssl3 = version == SSL3

    def _decrypt(self, iv: bytes, ciphertext: bytes) -> bytes:
        dec = Cipher(self._algorithm, modes.CBC(iv)).decryptor()
        return dec.update(ciphertext) + dec.finalize()  # type: ignore[no-any-return]

    def _split_iv(self, body: bytes) -> tuple[bytes, bytes]:
        """(iv, ciphertext); advances the TLS 1.0 chain."""
        if self._explicit_iv:
            return body[: self._block], body[self._block :]
        iv = self._iv
        self._iv = body[-self._block :]
        return iv, body

    def _unpad(self, plain: bytes) -> bytes:
        pad = plain[-1]
        if pad + 1 > len(plain):
            raise OpenError("padding length exceeds the record")
        if self._ssl3:
            # SSL 3.0 padding bytes are arbitrary; only its length is bounded.
            if pad >= self._block:
                raise OpenError("SSL 3.0 padding longer than a block")
        elif plain[-pad - 1 :] != bytes([pad]) * (pad + 1):
            raise OpenError("bad CBC padding")
        return plain[: -pad - 1]

    def open(self, seq: int, content_type: int, version: int, payload: bytes) -> bytes:
        block, mac = self._block, self._mac
        if self._etm:
            body, tag = payload[: -mac.length], payload[-mac.length :]
            minimum = block * (2 if self._explicit_iv else 1)
            if len(payload) < mac.length + minimum or len(body) % block:
                raise OpenError(f"record of {len(payload)} bytes does not fit block size and MAC")
            iv, ciphertext = self._split_iv(body)
            mac.check(seq, content_type, version, body, tag)
            return self._unpad(self._decrypt(iv, ciphertext))
        minimum = (block if self._explicit_iv else 0) + max(block, mac.length + 1)
        if len(payload) < minimum or len(payload) % block:
            raise OpenError(f"record of {len(payload)} bytes does not fit block size and MAC")
        iv, ciphertext = self._split_iv(payload)
        plain = self._unpad(self._decrypt(iv, ciphertext))
        if len(plain) < mac.length:
            raise OpenError("record shorter than its MAC")
        content, tag = plain[: len(plain) - mac.length], plain[len(plain) - mac.length :]
        mac.check(seq, content_type, version, content, tag)
        return content

    def skip(self, length: int, tail: bytes) -> None:
        if not self._explicit_iv and len(tail) >= self._block:
            self._iv = tail[-self._block :]


class StreamOpener:
    """RC4 or NULL encryption with a MAC.  The RC4 keystream runs across records, so even a
    record that fails its MAC has consumed keystream."""

    __slots__ = ("_decryptor", "_mac")

    def __init__(self, params: SuiteParams, key: bytes, mac_key: bytes, version: int) -> None:
        self._decryptor: Callable[[bytes], bytes] | None = None
        if params.kind == "stream":
            self._decryptor = Cipher(_legacy.ARC4(key), mode=None).decryptor().update
        self._mac = _Mac(params, mac_key, version)

    def open(self, seq: int, content_type: int, version: int, payload: bytes) -> bytes:
        plain = self._decryptor(payload) if self._decryptor else payload
        n = self._mac.length
        if len(plain) < n:
            raise OpenError("record shorter than its MAC")
        content, tag = plain[: len(plain) - n], plain[len(plain) - n :]
        self._mac.check(seq, content_type, version, content, tag)
        return content

    def skip(self, length: int, tail: bytes) -> None:
        if self._decryptor:
            zeros = bytes(min(length, 1 << 16))  # bounded: a long skip runs in 64 KiB steps
            while length > 0:
                self._decryptor(zeros[:length])
                length -= len(zeros)


def tls12_opener(
    params: SuiteParams, version: int, keys: KeyBlock, *, client: bool, etm: bool
) -> Opener:
    """The opener for one side of a TLS <= 1.2 connection.  Raises ``UnsupportedAlgorithm``
    when the cryptography backend lacks the cipher."""
    key, iv, mac_key = (
        (keys.client_key, keys.client_iv, keys.client_mac)
        if client
        else (keys.server_key, keys.server_iv, keys.server_mac)
    )
    if params.kind == "aead":
        return Tls12AeadOpener(params, key, iv)
    if params.kind == "block":
        return CbcOpener(params, key, iv, mac_key, version, etm)
    return StreamOpener(params, key, mac_key, version)


def tls13_opener(params: SuiteParams, secret: bytes) -> Tls13Opener:
    key, iv = tls13_traffic_keys(params, secret)
    return Tls13Opener(params, key, iv)
