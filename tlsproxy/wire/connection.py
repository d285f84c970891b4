"""Both directions of one TCP connection, and every state transition of the wire view.

``TLSConnection.feed(direction, data, at=t)`` returns the events those bytes complete.  The
rules that decide what is encrypted live here and only here:

====================================  ==========================================================
seen                                  effect
====================================  ==========================================================
client_hello                          remembers what the client offered (1.3? early_data?)
server_hello selecting <= TLS 1.2     version and suite known; nothing encrypted yet
server_hello selecting TLS 1.3        both directions: application_data records are protected;
                                      alert/handshake/ccs records stay plaintext
hello_retry_request                   nothing changes epochs (a second ClientHello follows)
change_cipher_spec, TLS <= 1.2        only its own direction: every later record is protected
change_cipher_spec, TLS 1.3           middlebox compatibility: starts nothing
application_data before server_hello  0-RTT data when the ClientHello offered early_data
SSLv2 CLIENT-MASTER-KEY               every later SSL 2.0 record, both ways, is encrypted
SSLv2 CLIENT-HELLO offering >= 3.0    the client's stream continues as TLS records
====================================  ==========================================================

An unexpected or malformed message is an event, never an exception; only misuse (feeding after
EOF) raises.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from tlsproxy.fastbuild import frozen_builder
from tlsproxy.wire import events as ev
from tlsproxy.wire.events import ContentType, Direction
from tlsproxy.wire.handshake import DEFAULT_MAX_MESSAGE_SIZE, HandshakeReassembler
from tlsproxy.wire.registry import cipher_suite_info
from tlsproxy.wire.messages import ClientHello, DecodeContext, HandshakeType, ServerHello, decode_handshake
from tlsproxy.wire.records import SSLV2, TLS, LayerNotice, RawRecord, RecordLayer
from tlsproxy.wire.sslv2 import (
    SSL2_MT_CLIENT_HELLO,
    SSL2_MT_CLIENT_MASTER_KEY,
    SSL2_MT_SERVER_HELLO,
    SSLv2ClientHello,
    decode_sslv2,
)

TLS1_3 = 0x0304
_EARLY_DATA_EXT = 42
_ENCRYPT_THEN_MAC_EXT = 22

# Ciphertext of handshake-phase records kept per direction (for decrypting a saved session
# later): a server's whole encrypted flight with a long chain fits; an upload that the phase
# heuristic cannot tell from a flight does not get copied record after record.
MAX_KEPT_CIPHERTEXT = 64 * 1024

# Protected records a TLS 1.3 client sends for its handshake flight at most (Certificate,
# CertificateVerify, Finished), when each is in a record of its own.
CLIENT_FLIGHT_RECORDS = 3

# MAC sizes of the TLS <= 1.2 NULL-cipher suites, by the MAC named in the suite.
_MAC_LENGTHS = {"MD5": 16, "SHA": 20, "SHA256": 32, "SHA384": 48}

# Records that arrive before their secrets are in the key log wait, per direction, up to this
# many bytes (a whole handshake flight is a few KiB; a client writes its secrets before it sends
# its Finished, so the wait is short).  Beyond it the oldest are given up on.
MAX_HELD_BYTES = 1 << 20

_NO_CONTEXT = DecodeContext()
# ``end`` of a record handed to _on_tls_record whose payload the record layer already fetched.
_DECIDED = -1
# Enum members and IntEnum values as plain module constants: a class attribute lookup on an Enum
# costs ~0.2 µs, and these are read on every record.
_C2S = Direction.C2S
_S2C = Direction.S2C
_CHANGE_CIPHER_SPEC = int(ContentType.change_cipher_spec)
_ALERT = int(ContentType.alert)
_HANDSHAKE = int(ContentType.handshake)
_APPLICATION_DATA = int(ContentType.application_data)
_HEARTBEAT = int(ContentType.heartbeat)
_CLIENT_HELLO = HandshakeType.client_hello
_SERVER_HELLO = HandshakeType.server_hello
_FINISHED = HandshakeType.finished
# The handshake messages _on_message acts on; the others only become events.
_STATE_CHANGING = frozenset({HandshakeType.client_hello, HandshakeType.server_hello, HandshakeType.finished,
                             HandshakeType.end_of_early_data, HandshakeType.encrypted_extensions,
                             HandshakeType.key_update})


class FeedAfterEOF(RuntimeError):
    """Misuse of the API: bytes fed to a direction after its end of stream."""


class Decryptor(Protocol):
    """What the connection needs from the key-log decryption layer (``tlsproxy.wire.decrypt``)."""

    def set_client_random(self, client_random: bytes) -> None: ...
    def set_server_hello(self, server_random: bytes, version: int, cipher_suite: int) -> None: ...
    def set_extensions(self, *, encrypt_then_mac: bool) -> None: ...
    def change_epoch(self, direction: Direction, epoch: str) -> None: ...
    def key_update(self, direction: Direction) -> None: ...
    def decrypt(self, direction: Direction, content_type: int, record_version: int, payload: bytes) -> Any: ...
    def skip(self, direction: Direction, payload: bytes) -> None: ...
    def epoch(self, direction: Direction) -> str: ...
    @property
    def keylog_version(self) -> int: ...


@dataclass(slots=True)
class _Side:
    records: RecordLayer
    handshake: HandshakeReassembler
    encrypted: bool = False  # TLS <= 1.2: after this side's change_cipher_spec
    handshake_stopped: bool = False
    eof: bool = False
    encrypted_seen: int = 0  # protected records seen (phase estimation without keys)
    finished: bool = False  # this side's Finished went by (seen, or inferred without keys)
    sslv2: bool = False


@dataclass(slots=True)
class ConnectionState:
    """What the wire view knows about the negotiation; read by the analyzer and the sinks."""

    client_hello: ClientHello | None = None
    sslv2_client_hello: SSLv2ClientHello | None = None
    server_hello: ServerHello | None = None
    hello_retry_request: ServerHello | None = None
    version: int | None = None
    cipher_suite: int | None = None
    sslv2_encrypted: bool = False
    client_hellos: int = 0

    @property
    def tls13(self) -> bool:
        return self.version is not None and (self.version == TLS1_3 or self.version >> 8 == 0x7F)

    @property
    def client_offered_tls13(self) -> bool:
        ch = self.client_hello
        return ch is not None and any(v == TLS1_3 or v >> 8 == 0x7F for v in ch.supported_versions)


class TLSConnection:
    """The sans-IO wire view of one connection: feed bytes of either direction, get events."""

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, decryptor: Decryptor | None = None,
                 show_data: int = 0) -> None:
        """``show_data``: emit the first N bytes of each decrypted application-data record as a
        :class:`~tlsproxy.wire.events.DecryptedData` event (0: never)."""
        self.state = ConnectionState()
        self.decryptor = decryptor
        self.show_data = show_data
        self._client_flight_started = False
        self._null_mac: int | None = None
        # Records waiting for their secrets, both directions in arrival order, so that when the
        # secrets come the analyzer sees the messages in the order the peers sent them.
        self._held: deque[tuple[Direction, RawRecord]] = deque()
        self._held_bytes = {_C2S: 0, _S2C: 0}
        self._keylog_version = -1
        self._unsupported_said: set[Direction] = set()
        self._kept_ciphertext = {_C2S: 0, _S2C: 0}
        self._client_records_after_hello = 0
        # ``state.tls13`` and the decoders' context, kept up to date where the version or suite
        # changes (_set_version, _decode_context) because every record asks.
        self._tls13 = False
        self._ctx = _NO_CONTEXT
        # A client's stream opens with a ClientHello (1), a server's with a ServerHello (2).
        self._sides = {
            _C2S: _Side(RecordLayer(1), HandshakeReassembler(max_message_size)),
            _S2C: _Side(RecordLayer(2), HandshakeReassembler(max_message_size)),
        }

    # -- public API -------------------------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, *, at: float) -> list[ev.Event]:
        """Bytes of ``direction``; an empty ``data`` means that direction was closed (FIN)."""
        side = self._sides[direction]
        if side.eof:
            if not data:
                return []
            raise FeedAfterEOF(f"{direction.value} fed after its end of stream")
        out: list[ev.Event] = []
        if self.decryptor is not None:
            self._retry_held(at, out)
        if not data:
            side.eof = True
            out.extend(self._flush_at_eof(direction, side, at))
            out.append(_end_of_stream(direction, side.records.offset, at, side.records.buffered))
            return out
        # The callbacks are handed over per call, not kept by the layer: kept, they would make
        # every connection a reference cycle that only the garbage collector frees.
        layer = side.records
        context = (direction, side, at, out)
        on_record = self._on_tls_record
        pos = layer.feed_whole(data, on_record, context)  # the usual case: whole TLS records
        if pos == len(data):
            return out
        for item in layer.feed(data, partial(self._want_payload, direction), on_record, context, pos):
            if type(item) is RawRecord:
                if item.fmt == TLS:
                    on_record(context, item.offset, item.content_type, item.version, item.length, item.payload,
                              _DECIDED)
                else:
                    self._on_sslv2(direction, side, item, at, out)
            else:
                self._on_notice(direction, item, at, out)
        return out

    def poll(self, *, at: float) -> list[ev.Event]:
        """Decrypt held records if the key log learned new secrets (live proxy: call when the key
        log file grew, even if no bytes arrived)."""
        out: list[ev.Event] = []
        if self.decryptor is not None:
            self._retry_held(at, out)
        return out

    def gap(self, direction: Direction, length: int, *, at: float) -> list[ev.Event]:
        """Bytes were lost (a capture's missing segments): record boundaries are gone."""
        side = self._sides[direction]
        offset = side.records.offset
        side.records.stop()
        return [
            ev.StreamGap(direction=direction, offset=offset, at=at, length=length),
            ev.ParsingStopped(direction=direction, offset=offset, at=at,
                              reason=f"{length} bytes missing from the capture"),
        ]

    # -- records ----------------------------------------------------------------------------

    def _is_protected(self, direction: Direction, ctype: int) -> bool:
        if self._tls13:
            return ctype == _APPLICATION_DATA
        if self._sides[direction].encrypted:
            return True
        return (
            ctype == _APPLICATION_DATA
            and direction is _C2S
            and self.state.server_hello is None
            and self._early_data_offered()
        )

    def _early_data_offered(self) -> bool:
        ch = self.state.client_hello
        return ch is not None and ch.ext(_EARLY_DATA_EXT) is not None

    def _want_payload(self, direction: Direction, ctype: int) -> bool:
        if ctype != _APPLICATION_DATA and (self._tls13 or not self._sides[direction].encrypted):
            return True  # plaintext handshake, alert, change_cipher_spec...: the common question
        if self._is_protected(direction, ctype):
            # Handshake-phase ciphertext is kept (a few records) so that a saved session can be
            # decrypted later with a key log; application-phase ciphertext never is.
            return (self.decryptor is not None or self._null_mac is not None
                    or (self._phase(direction, ctype) == "handshake"
                        and self._kept_ciphertext[direction] < MAX_KEPT_CIPHERTEXT))
        return ctype != _APPLICATION_DATA

    def _null_mac_length(self) -> int | None:
        """A TLS <= 1.2 NULL-cipher suite protects with a MAC only: the content is readable
        without keys, followed by this many MAC bytes (set when the ServerHello is seen)."""
        return self._null_mac

    def _suite_chosen(self) -> None:
        st = self.state
        info = None if self._tls13 or st.cipher_suite is None else cipher_suite_info(st.cipher_suite)
        self._null_mac = _MAC_LENGTHS.get(info.mac) if info is not None and info.null_cipher else None

    def _phase(self, direction: Direction, ctype: int) -> str:
        if self.state.server_hello is None and not self._tls13:
            return "early_data"
        sides = self._sides  # _handshake_done(), inlined: asked for every protected record
        if sides[_C2S].finished and sides[_S2C].finished:
            return "application"
        return "handshake"

    def _handshake_done(self) -> bool:
        sides = self._sides
        return sides[_C2S].finished and sides[_S2C].finished

    def _on_tls_record(self, context: tuple[Direction, _Side, float, list[ev.Event]], offset: int, ctype: int,
                       version: int, length: int, data: bytes | None, end: int) -> None:
        """One TLS record: the record layer's ``on_record`` callback.  Its payload is
        ``data[end - length : end]``, sliced here only when wanted (the question
        :meth:`_want_payload` answers for the layer's other records, inlined); ``end == _DECIDED``:
        ``data`` is the payload itself, already fetched (or, ``None``, skipped) by the layer."""
        direction, side, at, out = context
        if self._tls13:
            protected = ctype == _APPLICATION_DATA
        else:
            protected = side.encrypted or (ctype == _APPLICATION_DATA and self._is_protected(direction, ctype))
        if not protected:
            if end == _DECIDED:
                payload = data
            else:  # plaintext application data: only its length matters
                payload = None if ctype == _APPLICATION_DATA else data[end - length : end]  # type: ignore[index]
            out.append(_record(direction, offset, at, ctype, version, length, False, "", False, None, payload))
            if payload is None:
                return
            if ctype == _HANDSHAKE:
                self._on_handshake_payload(direction, side, payload, offset, at, out)
            elif ctype == _ALERT:
                self._on_alert(direction, payload, offset, at, out)
            elif ctype == _CHANGE_CIPHER_SPEC:
                self._on_ccs(direction, side, payload, offset, at, out)
            elif ctype == _HEARTBEAT:
                out.append(_heartbeat(direction, payload, offset, at))
            return
        # The phase as the record arrives (_phase(), inlined: asked for every protected record).
        sides = self._sides
        if self.state.server_hello is None and not self._tls13:
            phase = "early_data"
        elif sides[_C2S].finished and sides[_S2C].finished:
            phase = "application"
        else:
            phase = "handshake"
        keys = self.decryptor is not None or self._null_mac is not None
        if end == _DECIDED:
            payload = data
        elif keys or (phase == "handshake" and self._kept_ciphertext[direction] < MAX_KEPT_CIPHERTEXT):
            # Handshake-phase ciphertext is kept (a few records) so that a saved session can be
            # decrypted later with a key log; application-phase ciphertext never is.
            payload = data[end - length : end]  # type: ignore[index]
        else:
            payload = None
        if keys and payload is not None:
            rec = RawRecord(offset, ctype, version, length, payload)
            if self.decryptor is not None and self._try_decrypt(direction, side, rec, at, out):
                return
            mac_length = self._null_mac
            if mac_length is not None and len(payload) >= mac_length:
                self._on_null_cipher(direction, side, rec, mac_length, at, out)
                return
        side.encrypted_seen += 1
        if phase == "application":
            # Both Finished went by: inferring them again would change nothing.
            out.append(_record(direction, offset, at, ctype, version, length, True, phase, False, None, None))
            return
        if self._tls13:  # a TLS 1.3 record tells about the *other* side's flight: infer first
            self._infer_finished(direction, ctype)
            phase = self._phase(direction, ctype)
        else:  # a TLS <= 1.2 Finished is itself a handshake record: infer after
            self._infer_finished(direction, ctype)
        out.append(_record(direction, offset, at, ctype, version, length, True, phase, False, None,
                           self._keep_ciphertext(direction, phase, payload)))

    # -- decryption (only with a key log) ---------------------------------------------------

    def _try_decrypt(self, direction: Direction, side: _Side, rec: RawRecord, at: float, out: list[ev.Event]) -> bool:
        """Open a protected record; ``True`` when its events were produced here."""
        assert self.decryptor is not None and rec.payload is not None
        if self._held_bytes[direction]:  # keep the order: queue behind records still waiting
            self._hold(direction, rec, at, out)
            return False
        result = self.decryptor.decrypt(direction, rec.content_type, rec.version, rec.payload)
        if result.status == "ok":
            phase = self._phase(direction, rec.content_type)
            out.append(ev.Record(direction=direction, offset=rec.offset, at=at, content_type=rec.content_type,
                                 version=rec.version, length=rec.length, encrypted=True, phase=phase,
                                 decrypted=True, inner_type=result.inner_type,
                                 payload=self._keep_ciphertext(direction, phase, rec.payload)))
            self._on_plaintext(direction, side, rec.offset, result.inner_type, result.plaintext, at, out)
            return True
        if result.status == "no_keys":
            self._hold(direction, rec, at, out)
        else:
            self._decrypt_problem(direction, rec, result, at, out)
        return False

    def _decrypt_problem(self, direction: Direction, rec: RawRecord, result: Any, at: float,
                         out: list[ev.Event]) -> None:
        """``failed``: every record is reported (wrong keys or tampering); ``unsupported``: once per
        direction, its reason prefixed ``cannot decrypt:`` so consumers can tell the two apart."""
        if result.status == "failed":
            out.append(ev.DecryptionFailed(direction=direction, offset=rec.offset, at=at,
                                           content_type=rec.content_type, length=rec.length,
                                           reason=result.reason or "failed"))
        elif direction not in self._unsupported_said:
            self._unsupported_said.add(direction)
            out.append(ev.DecryptionFailed(direction=direction, offset=rec.offset, at=at,
                                           content_type=rec.content_type, length=rec.length,
                                           reason=f"cannot decrypt: {result.reason}"))

    def _keep_ciphertext(self, direction: Direction, phase: str, payload: bytes | None) -> bytes | None:
        """Handshake-phase ciphertext, within the per-direction budget, for saved sessions."""
        if payload is None or phase != "handshake" or self._kept_ciphertext[direction] >= MAX_KEPT_CIPHERTEXT:
            return None
        self._kept_ciphertext[direction] += len(payload)
        return payload

    def _on_plaintext(self, direction: Direction, side: _Side, offset: int, inner_type: int, plaintext: bytes,
                      at: float, out: list[ev.Event]) -> None:
        if inner_type == ContentType.handshake:
            self._on_handshake_payload(direction, side, plaintext, offset, at, out, decrypted=True)
        elif inner_type == ContentType.alert:
            self._on_alert(direction, plaintext, offset, at, out, decrypted=True)
        elif inner_type == ContentType.change_cipher_spec:
            self._on_ccs(direction, side, plaintext, offset, at, out)
        elif inner_type == ContentType.heartbeat:
            out.append(_heartbeat(direction, plaintext, offset, at))
        elif inner_type == ContentType.application_data and self.show_data:
            out.append(ev.DecryptedData(direction=direction, offset=offset, at=at, length=len(plaintext),
                                        preview=bytes(plaintext[: self.show_data])))

    def _on_null_cipher(self, direction: Direction, side: _Side, rec: RawRecord, mac_length: int, at: float,
                        out: list[ev.Event]) -> None:
        assert rec.payload is not None
        phase = self._phase(direction, rec.content_type)
        out.append(ev.Record(direction=direction, offset=rec.offset, at=at, content_type=rec.content_type,
                             version=rec.version, length=rec.length, encrypted=True, phase=phase,
                             decrypted=True, inner_type=rec.content_type))
        content = rec.payload[: len(rec.payload) - mac_length]
        self._on_plaintext(direction, side, rec.offset, rec.content_type, content, at, out)

    def _hold(self, direction: Direction, rec: RawRecord, at: float, out: list[ev.Event]) -> None:
        assert rec.payload is not None and self.decryptor is not None
        self._held.append((direction, rec))
        self._held_bytes[direction] += len(rec.payload)
        dropped = 0
        while self._held_bytes[direction] > MAX_HELD_BYTES:
            index = next(i for i, (d, _) in enumerate(self._held) if d is direction)
            _, old = self._held[index]
            del self._held[index]
            assert old.payload is not None
            self._held_bytes[direction] -= len(old.payload)
            self.decryptor.skip(direction, old.payload)
            dropped += 1
        if dropped:
            out.append(ev.DecodeError(direction=direction, offset=rec.offset, at=at, where="decrypt",
                                      reason=f"gave up waiting for key log secrets on {dropped} record(s)"))

    def _retry_held(self, at: float, out: list[ev.Event]) -> None:
        assert self.decryptor is not None
        version = self.decryptor.keylog_version
        if version == self._keylog_version or not self._held:
            self._keylog_version = version
            return
        self._keylog_version = version
        blocked: set[Direction] = set()
        waiting: deque[tuple[Direction, RawRecord]] = deque()
        while self._held:
            direction, rec = self._held.popleft()
            assert rec.payload is not None
            if direction in blocked:
                waiting.append((direction, rec))
                continue
            result = self.decryptor.decrypt(direction, rec.content_type, rec.version, rec.payload)
            if result.status == "no_keys":
                blocked.add(direction)
                waiting.append((direction, rec))
                continue
            self._held_bytes[direction] -= len(rec.payload)
            if result.status == "ok":
                self._on_plaintext(direction, self._sides[direction], rec.offset, result.inner_type,
                                   result.plaintext, at, out)
            else:
                self._decrypt_problem(direction, rec, result, at, out)
        self._held = waiting

    def _infer_finished(self, direction: Direction, ctype: int) -> None:
        """Without keys, guess when each side's Finished went by, for the phase of later records.

        TLS <= 1.2: a side's first protected handshake record after its change_cipher_spec is its
        Finished.  TLS 1.3: the server's flight ends before the client's first protected record;
        the client's flight ends before the server's next protected record.
        """
        side = self._sides[direction]
        peer = self._sides[_S2C if direction is _C2S else _C2S]
        if self._tls13:
            if self.state.server_hello is None:
                return  # 0-RTT data says nothing about the handshake flights
            if direction is _C2S:
                peer.finished = True
                self._client_flight_started = True
                # The client's flight is Certificate, CertificateVerify, Finished at most: a
                # fourth protected record is application data even if the server stays silent.
                self._client_records_after_hello += 1
                if self._client_records_after_hello > CLIENT_FLIGHT_RECORDS:
                    side.finished = True
            elif self._client_flight_started:
                peer.finished = True
        elif ctype == _HANDSHAKE:
            side.finished = True

    # -- handshake --------------------------------------------------------------------------

    def _on_handshake_payload(self, direction: Direction, side: _Side, payload: bytes, offset: int, at: float,
                              out: list[ev.Event], decrypted: bool = False) -> None:
        if side.handshake_stopped:
            return
        reassembler = side.handshake
        msg_type = reassembler.whole(payload)
        if msg_type >= 0:  # the usual record: one whole message
            self._on_handshake_message(direction, offset, msg_type, payload, at, out, decrypted)
            return
        raws, too_large = reassembler.feed(payload, offset)
        for raw in raws:
            self._on_handshake_message(direction, raw.offset, raw.msg_type, raw.raw, at, out, decrypted)
        if too_large is not None:
            side.handshake_stopped = True
            side.handshake.reset()
            out.append(ev.DecodeError(direction=direction, offset=too_large.offset, at=at, where="handshake",
                                      reason=str(too_large)))
            out.append(ev.ParsingStopped(direction=direction, offset=too_large.offset, at=at,
                                         reason="handshake reassembly stopped: message over the size cap"))

    def _on_handshake_message(self, direction: Direction, offset: int, msg_type: int, data: bytes, at: float,
                              out: list[ev.Event], decrypted: bool) -> None:
        """One reassembled message, ``data`` with its 4-byte header; ``offset``: its first record."""
        st = self.state
        ctx = self._ctx  # _decode_context(), inlined: asked for every message
        if ctx.version != st.version or ctx.cipher_suite != st.cipher_suite:
            ctx = self._decode_context()
        message, error = decode_handshake(msg_type, data, ctx)
        out.append(_handshake_message(direction, offset, at, msg_type, len(data) - 4, data, message, error,
                                      decrypted))
        if error is not None:
            out.append(ev.DecodeError(direction=direction, offset=offset, at=at, where="handshake",
                                      reason=f"{_hs_label(msg_type)}: {error}"))
        elif msg_type in _STATE_CHANGING:
            self._on_message(direction, msg_type, message)

    def _decode_context(self) -> DecodeContext:
        """The decoders' view of the negotiation, rebuilt only when the version or suite changed
        (``tls13`` follows from the version)."""
        st = self.state
        ctx = self._ctx
        if ctx.version != st.version or ctx.cipher_suite != st.cipher_suite:
            ctx = self._ctx = DecodeContext(tls13=st.tls13, version=st.version, cipher_suite=st.cipher_suite)
        return ctx

    def _set_version(self, version: int | None) -> None:
        self.state.version = version
        self._tls13 = self.state.tls13

    def _on_message(self, direction: Direction, msg_type: int, message: object) -> None:
        st = self.state
        dec = self.decryptor
        if msg_type == _CLIENT_HELLO and isinstance(message, ClientHello):
            st.client_hellos += 1
            st.client_hello = message
            if dec is not None:
                dec.set_client_random(message.random)
                if st.server_hello is None and st.client_offered_tls13 and message.ext(_EARLY_DATA_EXT):
                    dec.change_epoch(_C2S, "early")
        elif msg_type == _SERVER_HELLO and isinstance(message, ServerHello):
            if message.is_hello_retry_request:
                st.hello_retry_request = message
                self._set_version(message.selected_version)
                if dec is not None and dec.epoch(_C2S) == "early":
                    dec.change_epoch(_C2S, "plaintext")  # 0-RTT is refused after a retry
                return
            st.server_hello = message
            self._set_version(message.selected_version)
            st.cipher_suite = message.cipher_suite
            self._suite_chosen()
            if dec is not None:
                dec.set_server_hello(message.random, st.version, message.cipher_suite)
                ch = st.client_hello
                etm = ch is not None and ch.ext(_ENCRYPT_THEN_MAC_EXT) is not None
                dec.set_extensions(encrypt_then_mac=etm and message.ext(_ENCRYPT_THEN_MAC_EXT) is not None)
                if self._tls13:
                    dec.change_epoch(_S2C, "handshake")
                    if dec.epoch(_C2S) != "early":
                        dec.change_epoch(_C2S, "handshake")
        elif msg_type == _FINISHED:
            self._sides[direction].finished = True
            if dec is not None and self._tls13:
                dec.change_epoch(direction, "application")
        elif dec is not None and self._tls13:
            if msg_type == HandshakeType.end_of_early_data:
                dec.change_epoch(_C2S, "handshake")
            elif msg_type == HandshakeType.encrypted_extensions and dec.epoch(_C2S) == "early":
                if getattr(message, "ext", lambda t: None)(_EARLY_DATA_EXT) is None:
                    dec.change_epoch(_C2S, "handshake")  # the server refused 0-RTT
            elif msg_type == HandshakeType.key_update:
                try:
                    dec.key_update(direction)
                except ValueError:
                    pass  # a KeyUpdate before the application epoch: the analyzer flags the order

    # -- other content types ----------------------------------------------------------------

    def _on_alert(self, direction: Direction, payload: bytes, offset: int, at: float, out: list[ev.Event],
                  decrypted: bool = False) -> None:
        if len(payload) >= 2 and len(payload) % 2 == 0:
            for i in range(0, len(payload), 2):
                out.append(_alert(direction, offset, at, payload[i], payload[i + 1], payload[i : i + 2], False,
                                  decrypted))
            return
        out.append(ev.Alert(direction=direction, offset=offset, at=at,
                            level=payload[0] if payload else None,
                            description=payload[1] if len(payload) > 1 else None,
                            raw=payload, malformed=True, decrypted=decrypted))
        out.append(ev.DecodeError(direction=direction, offset=offset, at=at, where="alert",
                                  reason=f"alert body of {len(payload)} bytes, expected 2"))

    def _on_ccs(self, direction: Direction, side: _Side, payload: bytes, offset: int, at: float,
                out: list[ev.Event]) -> None:
        st = self.state
        compat = self._tls13 or (st.server_hello is None and st.client_offered_tls13)
        out.append(_change_cipher_spec(direction, offset, at, payload, payload == b"\x01", not compat))
        if compat:
            return
        side.encrypted = True
        dropped = side.handshake.reset()
        if dropped:
            out.append(ev.DecodeError(direction=direction, offset=offset, at=at, where="handshake",
                                      reason=f"{dropped} bytes of an incomplete handshake message before "
                                             "change_cipher_spec"))
        if self.decryptor is not None:
            self.decryptor.change_epoch(direction, "tls12")

    def _on_notice(self, direction: Direction, notice: LayerNotice, at: float, out: list[ev.Event]) -> None:
        if notice.kind == "not_tls":
            out.append(ev.NotTLS(direction=direction, offset=notice.offset, at=at, protocol=notice.protocol,
                                 first_bytes=notice.first_bytes, first_line=notice.first_line))
        elif notice.kind == "starttls":
            out.append(ev.StartTLS(direction=direction, offset=notice.offset, at=at, protocol=notice.protocol))
        elif notice.kind == "error":
            out.append(ev.DecodeError(direction=direction, offset=notice.offset, at=at, where="record",
                                      reason=notice.text))
        elif notice.kind == "stopped":
            out.append(ev.ParsingStopped(direction=direction, offset=notice.offset, at=at, reason=notice.text))

    # -- SSL 2.0 ----------------------------------------------------------------------------

    def _on_sslv2(self, direction: Direction, side: _Side, rec: RawRecord, at: float, out: list[ev.Event]) -> None:
        st = self.state
        side.sslv2 = True
        if st.sslv2_encrypted:
            out.append(ev.SSLv2Record(direction=direction, offset=rec.offset, at=at, length=rec.length,
                                      msg_type=None, raw=None, message=None, encrypted=True))
            return
        payload = rec.payload or b""
        msg_type, message, error = decode_sslv2(payload)
        out.append(ev.SSLv2Record(direction=direction, offset=rec.offset, at=at, length=rec.length,
                                  msg_type=msg_type, raw=payload, message=message, error=error))
        if error is not None:
            out.append(ev.DecodeError(direction=direction, offset=rec.offset, at=at, where="sslv2", reason=error))
        if msg_type == SSL2_MT_CLIENT_HELLO and isinstance(message, SSLv2ClientHello):
            st.sslv2_client_hello = message
            st.client_hellos += 1
            if message.version >= 0x0300:
                side.records.switch_to_tls()
        elif msg_type == SSL2_MT_SERVER_HELLO:
            self._set_version(0x0002)
        elif msg_type == SSL2_MT_CLIENT_MASTER_KEY:
            st.sslv2_encrypted = True

    # -- end of stream ----------------------------------------------------------------------

    def _flush_at_eof(self, direction: Direction, side: _Side, at: float) -> list[ev.Event]:
        out: list[ev.Event] = []
        layer = side.records
        for item in layer.flush_undecided():
            self._on_notice(direction, item, at, out)  # type: ignore[arg-type]
        if layer.mode == "detect" and layer.buffered:
            # Fewer bytes than it takes to tell what the stream is.
            head = bytes(layer._buf)  # noqa: SLF001 - the layer's own sniff buffer
            out.append(ev.DecodeError(direction=direction, offset=layer.offset, at=at, where="record",
                                      reason=f"stream ended after {len(head)} bytes ({head.hex(' ')})"))
        elif layer.buffered and layer.mode in (TLS, SSLV2):
            out.append(ev.DecodeError(direction=direction, offset=layer.offset - layer.buffered, at=at, where="record",
                                      reason=f"stream ended inside a record ({layer.buffered} bytes of it seen)"))
        if side.handshake.pending and not side.handshake_stopped:
            out.append(ev.DecodeError(direction=direction, offset=layer.offset, at=at, where="handshake",
                                      reason=f"stream ended inside a handshake message "
                                             f"({side.handshake.pending} bytes buffered)"))
        return out


# Records are the one event per record, bulk traffic included: built positionally (see fastbuild).
# Fields: direction, offset, at, content_type, version, length, encrypted, phase, decrypted,
# inner_type, payload.
_record = frozen_builder(ev.Record)
# (direction, offset, at, msg_type, length, raw, message, error, decrypted)
_handshake_message = frozen_builder(ev.HandshakeMessage)
# The events of every connection, built positionally too.
_change_cipher_spec = frozen_builder(ev.ChangeCipherSpec)  # (direction, offset, at, raw, valid, starts_encryption)
_end_of_stream = frozen_builder(ev.EndOfStream)  # (direction, offset, at, buffered)
_alert = frozen_builder(ev.Alert)  # (direction, offset, at, level, description, raw, malformed, decrypted)



def _heartbeat(direction: Direction, payload: bytes, offset: int, at: float) -> ev.Heartbeat:
    hb_type = payload[0] if payload else None
    claimed = (payload[1] << 8) | payload[2] if len(payload) >= 3 else None
    return ev.Heartbeat(direction=direction, offset=offset, at=at, hb_type=hb_type, payload_length=claimed,
                        record_length=len(payload))


def _hs_label(msg_type: int) -> str:
    from tlsproxy.wire.registry import handshake_type_name

    return handshake_type_name(msg_type)
