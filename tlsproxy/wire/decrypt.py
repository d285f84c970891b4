"""Per-connection record decryption from an NSS key log, sans-IO.

The connection layer tells a :class:`ConnectionDecryptor` what it learned from the cleartext
handshake (randoms, version, suite, encrypt_then_mac) and when each direction's protection
changes; the decryptor turns that into keys as soon as the key log has the secrets, and opens
records in order.

A record that cannot be opened *yet* (``"no_keys"``) consumes nothing, so the caller can hold
it and retry once :attr:`KeyLog.version` moves (a retry with an unchanged key log costs one
integer comparison).  A record that was opened and did not authenticate (``"failed"``) does
consume its sequence number: the sender used it.  Each epoch change snapshots the hello
parameters, so a renegotiation seen in one direction does not disturb the other's keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm

from tlsproxy.wire import crypto
from tlsproxy.wire.crypto import SSL3, TLS12, TLS13, OpenError, Opener
from tlsproxy.wire.events import Direction
from tlsproxy.wire.keylog import KeyLog

#: ``plaintext``: nothing to open (the start, and what ``change_epoch`` can return to);
#: ``early``/``handshake``/``application``: TLS 1.3 traffic secrets; ``tls12``: the key block
#: of TLS <= 1.2 (and SSL 3.0), started by that side's change_cipher_spec.
EPOCHS = ("plaintext", "early", "handshake", "application", "tls12")

_TLS13_LABELS: dict[tuple[Direction, str], str] = {
    (Direction.C2S, "early"): "CLIENT_EARLY_TRAFFIC_SECRET",
    (Direction.C2S, "handshake"): "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    (Direction.S2C, "handshake"): "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    (Direction.C2S, "application"): "CLIENT_TRAFFIC_SECRET_0",
    (Direction.S2C, "application"): "SERVER_TRAFFIC_SECRET_0",
}

# 0-RTT records come before the ServerHello names the suite.  The early secret's length gives
# the hash; the first record that authenticates under one of these suites pins it.
_EARLY_CANDIDATES = {
    32: tuple(crypto.SUITES[c] for c in (0x1301, 0x1303, 0x1304, 0x1305)),
    48: (crypto.SUITES[0x1302],),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptResult:
    """The outcome of one :meth:`ConnectionDecryptor.decrypt`.

    ``status``: ``"ok"``; ``"no_keys"`` (a secret or a hello fact is missing: nothing was
    consumed, retry later); ``"failed"`` (tag, MAC or padding wrong, or a TLS 1.3 record without
    a content type: the sequence number is spent); ``"unsupported"`` (a version or suite we do
    not open).  ``inner_type`` is the TLS 1.3 inner content type, or the outer type for TLS <=
    1.2; ``plaintext`` is the content without nonce, MAC, padding or type byte.
    """

    status: str
    inner_type: int | None = None
    plaintext: bytes | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The hello facts an epoch's keys derive from, frozen when the epoch starts."""

    client_random: bytes | None
    server_random: bytes | None
    version: int | None
    suite: int | None
    etm: bool


class _Direction:
    """One direction's protection: epoch, sequence number and (once known) its opener."""

    __slots__ = ("epoch", "snap", "generation", "seq", "opener", "inner", "tried", "skipped", "skipped_tail")

    def __init__(self) -> None:
        self.reset("plaintext", _Snapshot(None, None, None, None, False))

    def reset(self, epoch: str, snap: _Snapshot) -> None:
        self.epoch = epoch
        self.snap = snap
        self.generation = 0  # KeyUpdates seen in the TLS 1.3 application epoch
        self.seq = 0
        self.opener: Opener | None = None
        self.inner = False  # TLS 1.3 framing: type byte and zero padding inside
        self.tried = -1  # key log version of the last lookup that found nothing
        # Records the caller gave up on before the keys came: only their total length (RC4
        # keystream) and the last one's tail (TLS 1.0 CBC IV chain) matter, so nothing grows.
        self.skipped = 0
        self.skipped_tail = b""


class ConnectionDecryptor:
    """Decryption state for one TCP connection, both directions."""

    __slots__ = ("_keylog", "_client_random", "_server_random", "_version", "_suite", "_etm", "_dirs")

    def __init__(self, keylog: KeyLog) -> None:
        self._keylog = keylog
        self._client_random: bytes | None = None
        self._server_random: bytes | None = None
        self._version: int | None = None
        self._suite: int | None = None
        self._etm = False
        self._dirs = {d: _Direction() for d in Direction}

    # -- facts from the cleartext handshake -------------------------------------------------

    def set_client_random(self, client_random: bytes) -> None:
        self._client_random = bytes(client_random)

    def set_server_hello(self, server_random: bytes, version: int, cipher_suite: int) -> None:
        """``version`` is the negotiated one (from ``supported_versions`` for TLS 1.3)."""
        self._server_random = bytes(server_random)
        self._version = version
        self._suite = cipher_suite

    def set_extensions(self, *, encrypt_then_mac: bool) -> None:
        """``encrypt_then_mac``: offered by the client and echoed by the server (RFC 7366)."""
        self._etm = encrypt_then_mac

    # -- protection changes -----------------------------------------------------------------

    def change_epoch(self, direction: Direction, epoch: str) -> None:
        """Records sent in ``direction`` are protected by ``epoch`` from now on, starting at
        sequence number 0, with keys from the hello facts known at this moment."""
        if epoch not in EPOCHS:
            raise ValueError(f"unknown epoch {epoch!r}; expected one of {EPOCHS}")
        snap = _Snapshot(self._client_random, self._server_random, self._version, self._suite, self._etm)
        self._dirs[direction].reset(epoch, snap)

    def key_update(self, direction: Direction) -> None:
        """A TLS 1.3 KeyUpdate sent in ``direction``: its next records use the next secret."""
        state = self._dirs[direction]
        if state.epoch != "application":
            raise ValueError(f"KeyUpdate in the {state.epoch} epoch")
        generation = state.generation + 1
        state.reset("application", state.snap)
        state.generation = generation

    def epoch(self, direction: Direction) -> str:
        return self._dirs[direction].epoch

    @property
    def keylog_version(self) -> int:
        """Changes whenever the key log learned a secret: the moment to retry held records."""
        return self._keylog.version

    def has_keys(self, direction: Direction) -> bool:
        """Whether records in ``direction`` can be opened now (consults the key log)."""
        state = self._dirs[direction]
        return state.opener is not None or self._install(state, direction) is None

    # -- records ----------------------------------------------------------------------------

    def decrypt(self, direction: Direction, content_type: int, record_version: int, payload: bytes) -> DecryptResult:
        """Open one protected record; ``payload`` is the fragment after the 5-byte header."""
        state = self._dirs[direction]
        if state.opener is None:
            problem = self._install(state, direction)
            if problem is _TRIAL:
                return self._trial_early(state, direction, content_type, record_version, payload)
            if problem is not None:
                return problem
            assert state.opener is not None
        seq = state.seq
        state.seq = seq + 1
        try:
            plain = state.opener.open(seq, content_type, record_version, payload)
        except OpenError as exc:
            return DecryptResult(status="failed", reason=f"record {seq}: {exc}")
        if state.inner:
            return _inner_plaintext(plain)
        return DecryptResult(status="ok", inner_type=content_type, plaintext=plain)

    def skip(self, direction: Direction, payload: bytes) -> None:
        """The caller gave up on a record it held after ``"no_keys"``: spend its sequence
        number (and, for RC4 or TLS 1.0 CBC, the cipher state it would have advanced)."""
        state = self._dirs[direction]
        state.seq += 1
        tail = bytes(payload[-16:])
        if state.opener is not None:
            state.opener.skip(len(payload), tail)
        else:
            state.skipped += len(payload)
            state.skipped_tail = tail

    # -- key installation ---------------------------------------------------------------------

    def _install(self, state: _Direction, direction: Direction) -> DecryptResult | None:
        """Give ``state`` its opener; otherwise say why not (``_TRIAL``: 0-RTT, suite unknown)."""
        if state.epoch == "plaintext":
            return DecryptResult(status="no_keys", reason="direction is not encrypted")
        snap = state.snap
        if snap.client_random is None:
            return DecryptResult(status="no_keys", reason="client random unknown")
        if state.epoch == "tls12":
            return self._install_tls12(state, direction, snap)
        return self._install_tls13(state, direction, snap)

    def _lookup(self, state: _Direction, client_random: bytes, label: str) -> bytes | None:
        if state.tried == self._keylog.version:  # nothing new since the last miss
            return None
        secret = self._keylog.secrets_for(client_random).get(label)
        if secret is None:
            state.tried = self._keylog.version
        return secret

    def _install_tls12(self, state: _Direction, direction: Direction, snap: _Snapshot) -> DecryptResult | None:
        if snap.server_random is None or snap.version is None or snap.suite is None:
            return DecryptResult(status="no_keys", reason="ServerHello not seen")
        if not SSL3 <= snap.version <= TLS12:
            return DecryptResult(status="unsupported", reason=f"version 0x{snap.version:04x}")
        params = crypto.suite_params(snap.suite)
        if params is None or params.tls13:
            return DecryptResult(status="unsupported", reason=f"cipher suite 0x{snap.suite:04x}")
        assert snap.client_random is not None
        master = self._lookup(state, snap.client_random, "CLIENT_RANDOM")
        if master is None:
            return DecryptResult(status="no_keys", reason="no CLIENT_RANDOM in the key log")
        block = crypto.tls12_key_block(params, snap.version, master, snap.client_random, snap.server_random)
        etm = snap.etm and params.kind == "block" and snap.version != SSL3
        try:
            opener = crypto.tls12_opener(params, snap.version, block, client=direction is Direction.C2S, etm=etm)
        except UnsupportedAlgorithm as exc:
            return DecryptResult(status="unsupported", reason=f"{params.name}: {exc}")
        _activate(state, opener, inner=False)
        return None

    def _install_tls13(self, state: _Direction, direction: Direction, snap: _Snapshot) -> DecryptResult | None:
        early = state.epoch == "early"
        if not early:
            if snap.version is None or snap.suite is None:
                return DecryptResult(status="no_keys", reason="ServerHello not seen")
            if snap.version != TLS13:
                return DecryptResult(status="unsupported", reason=f"version 0x{snap.version:04x}")
        label = _TLS13_LABELS.get((direction, state.epoch))
        if label is None:
            return DecryptResult(status="unsupported", reason=f"{direction.sender} has no {state.epoch} epoch")
        params = crypto.suite_params(snap.suite) if snap.suite is not None else None
        if params is None or not params.tls13:
            if early:
                return _TRIAL
            return DecryptResult(status="unsupported", reason=f"cipher suite 0x{snap.suite or 0:04x}")
        assert snap.client_random is not None
        secret = self._lookup(state, snap.client_random, label)
        if secret is None:
            return DecryptResult(status="no_keys", reason=f"no {label} in the key log")
        if len(secret) != hashlib.new(params.prf_hash).digest_size:
            return DecryptResult(status="failed", reason=f"{label} is {len(secret)} bytes, wrong for {params.name}")
        for _ in range(state.generation):
            secret = crypto.tls13_next_secret(params.prf_hash, secret)
        _activate(state, crypto.tls13_opener(params, secret), inner=True)
        return None

    def _trial_early(
        self, state: _Direction, direction: Direction, content_type: int, version: int, payload: bytes
    ) -> DecryptResult:
        assert state.snap.client_random is not None
        secret = self._lookup(state, state.snap.client_random, "CLIENT_EARLY_TRAFFIC_SECRET")
        if secret is None:
            return DecryptResult(status="no_keys", reason="no CLIENT_EARLY_TRAFFIC_SECRET in the key log")
        seq = state.seq
        state.seq = seq + 1
        for params in _EARLY_CANDIDATES.get(len(secret), ()):
            opener = crypto.tls13_opener(params, secret)
            try:
                plain = opener.open(seq, content_type, version, payload)
            except OpenError:
                continue
            _activate(state, opener, inner=True)
            return _inner_plaintext(plain)
        return DecryptResult(status="failed", reason=f"record {seq}: 0-RTT data opens under no TLS 1.3 suite")


_TRIAL = DecryptResult(status="no_keys", reason="0-RTT cipher suite not known yet")


def _activate(state: _Direction, opener: Opener, *, inner: bool) -> None:
    state.opener, state.inner = opener, inner
    if state.skipped:  # catch up on records the caller gave up on before the keys came
        opener.skip(state.skipped, state.skipped_tail)
        state.skipped, state.skipped_tail = 0, b""


def _inner_plaintext(plain: bytes) -> DecryptResult:
    """Split TLSInnerPlaintext: content, the real content type, then zero padding."""
    end = len(plain) if plain[-1:] not in (b"\x00", b"") else len(plain.rstrip(b"\x00"))  # usual: no padding
    if end == 0:
        return DecryptResult(status="failed", reason="inner plaintext has no content type")
    return DecryptResult(status="ok", inner_type=plain[end - 1], plaintext=plain[: end - 1])
