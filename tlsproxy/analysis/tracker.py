"""One tracker per connection: wire events in, findings out, and a diagnosis at the end.

The tracker is sans-IO like the wire core: times come from the events and from the caller, it
never reads a clock, a file or a socket, and it never prints.  It keeps a bounded model of the
connection (hellos, the certificate chains, the last few alerts and handshake messages, counters
and last times for application data, never the data itself) and hands each event to the rule
modules in ``tlsproxy.analysis.rules``, which return findings.

Steps and phases
----------------
``step`` is the last handshake milestone and who reached it, as the diagnosis names it:
``client_hello``, ``server_hello``, ``certificate``, ``server_hello_done``, ``client_key_exchange``,
``change_cipher_spec``, ``finished`` (TLS <= 1.2, seen or inferred from the first protected
handshake record after a change_cipher_spec), ``encrypted flight`` (TLS 1.3 without keys: a side's
encrypted flight, whose end is inferred from the other side starting to send) and ``complete``.

Handshake completion: TLS <= 1.2 when both Finished went by.  TLS 1.3 without keys: the server's
flight ends when the client's first protected record arrives; the client's flight is accepted when
the server then sends a record that is not alert-sized, or sends anything the client answers.  A
server record of alert size after the client's flight followed by a close is a failed handshake
(inferred, ``certain=False``).

With a key log (decrypted events) the Finished messages decide, and what was inferred gives way:
records that arrived before their secrets were first seen encrypted (and judged by size), then
decrypted when the secrets came, so a decrypted handshake message undoes an inferred completion
and a decrypted alert replaces the pending size-based guess for its side.  In TLS 1.3 both
Finished messages do not make a success on their own: the server checks the client's flight
after its own Finished, so a fatal alert from the server before it sent anything else is a failed
handshake (certificate_required, bad_certificate, unknown_ca...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tlsproxy.analysis import diagnosis as _diagnosis
from tlsproxy.analysis.catalog import make_finding
from tlsproxy.analysis.model import ConnectionSummary, Diagnosis, Finding
from tlsproxy.analysis.rules import (
    alerts,
    certificates,
    ciphers,
    clientauth,
    closes,
    nottls,
    protocol,
    stalls,
    versions,
)
from tlsproxy.analysis.rules.alerts import AlertSeen, PendingAlert
from tlsproxy.wire import events as ev
from tlsproxy.wire.certs import CertificateInfo
from tlsproxy.wire.events import ContentType, Direction
from tlsproxy.wire.messages import (
    Certificate,
    CertificateRequest,
    ClientHello,
    EncryptedExtensions,
    HandshakeType,
    ServerHello,
    ServerKeyExchange,
)
from tlsproxy.wire.registry import SSL3_0, TLS1_2, TLS1_3, handshake_type_name, is_tls13_variant
from tlsproxy.wire.sslv2 import SSL2_MT_CLIENT_HELLO, SSL2_MT_SERVER_HELLO, SSLv2ClientHello

__all__ = ["AnalysisOptions", "HangUp", "Tracker"]

# Enum members and their properties are slow to look up in Python 3.11 (about 0.4 us each), and the
# tracker asks on every event: plain module-level aliases instead.
_C2S, _S2C = Direction.C2S, Direction.S2C
_SENDER = {_C2S: "client", _S2C: "server"}  # Direction.sender
_APPLICATION_DATA = int(ContentType.application_data)
_HANDSHAKE = int(ContentType.handshake)
_ALERT = int(ContentType.alert)
_HEARTBEAT = int(ContentType.heartbeat)
# Handshake types as plain ints, for the same reason (_on_handshake tests several per message).
_CLIENT_HELLO = int(HandshakeType.client_hello)
_SERVER_HELLO = int(HandshakeType.server_hello)
_CERTIFICATE = int(HandshakeType.certificate)
_SERVER_KEY_EXCHANGE = int(HandshakeType.server_key_exchange)
_CERTIFICATE_REQUEST = int(HandshakeType.certificate_request)
_ENCRYPTED_EXTENSIONS = int(HandshakeType.encrypted_extensions)
_CLIENT_KEY_EXCHANGE = int(HandshakeType.client_key_exchange)
_CERTIFICATE_VERIFY = int(HandshakeType.certificate_verify)
_FINISHED = int(HandshakeType.finished)
_SERVER_HELLO_DONE = int(HandshakeType.server_hello_done)
_CERTIFICATE_STATUS = int(HandshakeType.certificate_status)
_NEW_SESSION_TICKET = int(HandshakeType.new_session_ticket)
_KEY_UPDATE = int(HandshakeType.key_update)
_HELLO_REQUEST = int(HandshakeType.hello_request)

# Bounds on what a connection remembers: a renegotiating or hostile peer must not grow them.
_MAX_MESSAGES = 64  # handshake messages kept per connection (a full handshake has ~12)
_MAX_ALERTS = 16
_MAX_DECODE_ERRORS = 8  # reported per connection; more are counted only


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisOptions:
    """How to judge connections.

    ``trust_pems`` are trust anchors as PEM (``--ca-file``); else ``trust_loader`` is called once,
    lazily, when a chain needs verifying (the front end passes
    :func:`tlsproxy.frontends.trust.system_trust_loader`); with
    neither, chains are not path-validated (the other certificate checks still run).
    """

    now: datetime | None = None
    expect_host: str | None = None
    trust_pems: bytes | None = None
    trust_loader: Callable[[], bytes | None] | None = None
    keylog: bool = False
    stall_after: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HangUp:
    """A side closed its direction (FIN) while it still owed handshake messages: the handshake could
    not complete after that, so this is where that side gave up, whatever the peer did next (an
    alert in answer, a reset).  The state is kept as it was at that moment, because the diagnosis
    must not read the step and the turn from what happened afterwards."""

    side: str  # "client" | "server"
    at: float
    seq: int
    step: str  # Tracker.step_text() then
    turn: str | None  # whose turn it was then (stalls.waiting)
    owed: str
    server_hello: bool  # a ServerHello (or SSL 2.0 SERVER-HELLO) had arrived, even one we could not decode
    sent_nothing: bool  # the side had not sent a single byte
    since_client_hello: float | None  # seconds from the first ClientHello to the close
    since_start: float  # seconds from the connection's start to the close


@dataclass(slots=True)
class Side:
    """What one direction did."""

    direction: Direction
    messages: list[int] = field(default_factory=list)  # handshake types in order (bounded)
    rank: int = 0  # position in the RFC order reached so far (see rules.protocol)
    bytes_seen: bool = False
    first_at: float | None = None
    last_at: float | None = None
    last_seq: int = -1
    ccs: bool = False  # TLS <= 1.2 change_cipher_spec that starts encryption
    finished: bool = False
    finished_at: float | None = None
    finished_inferred: bool = False  # TLS 1.3 without keys: from the other side starting to send
    protected: int = 0
    app_records: int = 0
    app_bytes: int = 0
    last_app_at: float | None = None
    last_app_seq: int | None = None
    close_notify: bool = False
    close_notify_seq: int | None = None  # the (decoded or inferred) close_notify's event
    eof_at: float | None = None
    eof_seq: int | None = None
    pending: PendingAlert | None = None
    certs: tuple[CertificateInfo, ...] | None = None
    certificate_msg: Certificate | None = None
    certificate_verify: bool = False
    not_tls: ev.NotTLS | None = None
    not_tls_seq: int = 0
    not_tls_reported: bool = False
    record_version_flagged: bool = False
    decrypt_failed_flagged: bool = False
    decrypt_unsupported_flagged: bool = False
    decrypted_alert: bool = False  # a decrypted alert replaced the size-based guess for this side
    heartbeat_request_len: int | None = None
    first_protected_len: int | None = None


class Tracker:
    """Follows one connection; see the module docstring."""

    # Slots: with more attributes than CPython 3.11 shares between instance dicts (30), every attribute
    # read and write of a plain class went through a per-instance dict; the rules read these on every event.
    __slots__ = (
        "options", "wall_start", "started", "findings", "client", "server", "client_hello", "client_hello_at",
        "client_hellos", "sslv2_hello", "sslv2", "hello_retry", "server_hello", "server_hello_at", "_version",
        "tls13", "cipher_suite", "server_key_exchange", "cert_request", "cert_request_at", "ssl3_no_certificate",
        "alpn_chosen", "encrypted_extensions", "resumed", "complete", "complete_at", "complete_inferred",
        "server_flight_done_at", "client_flight_at", "client_flight_seq", "server_answered_flight",
        "server_chain_problems", "client_chain_problems", "server_chain_verified", "alerts", "first_fatal", "step",
        "step_by", "step_at", "progress_at", "stall_reported", "first_eof", "hang_up", "end_how", "end_by",
        "end_reason", "end_at", "renegotiation_flagged", "early_data_flagged", "decode_errors", "starttls",
        "decrypted", "decrypt_failures", "server_went_on", "_diagnosis", "offered_versions_memo",
    )

    def __init__(self, options: AnalysisOptions, *, wall_start: float, started: float) -> None:
        self.options = options
        self.wall_start = wall_start
        self.started = started
        self.findings: list[Finding] = []
        self.client = Side(_C2S)
        self.server = Side(_S2C)
        self.client_hello: ClientHello | None = None
        self.client_hello_at: float | None = None
        self.client_hellos = 0
        self.sslv2_hello: SSLv2ClientHello | None = None
        self.sslv2 = False  # genuine SSL 2.0 negotiated
        self.hello_retry: ServerHello | None = None
        self.server_hello: ServerHello | None = None
        self.server_hello_at: float | None = None
        self._version: int | None = None
        self.tls13 = False  # TLS 1.3 (or a draft of it) chosen: kept with ``version`` by its setter
        self.cipher_suite: int | None = None
        self.server_key_exchange: ServerKeyExchange | None = None
        self.cert_request: CertificateRequest | None = None
        self.cert_request_at: float | None = None
        self.ssl3_no_certificate = False
        self.alpn_chosen: str | None = None
        self.encrypted_extensions: EncryptedExtensions | None = None
        self.resumed: bool | None = None
        self.complete = False
        self.complete_at: float | None = None
        self.complete_inferred = False
        self.server_flight_done_at: float | None = None  # TLS 1.3: client's first protected record
        self.client_flight_at: float | None = None
        self.client_flight_seq: int | None = None
        self.server_answered_flight = False
        self.server_chain_problems: list[str] = []
        self.client_chain_problems: list[str] = []
        self.server_chain_verified: str | None = None  # VerifyResult.reason when it failed
        self.alerts: list[AlertSeen] = []
        self.first_fatal: AlertSeen | None = None
        self.step = "start"
        self.step_by: str | None = None
        self.step_at: float = started
        self.progress_at: float = started
        self.stall_reported: set[str] = set()
        self.first_eof: Direction | None = None
        self.hang_up: HangUp | None = None  # see HangUp
        self.end_how: str | None = None
        self.end_by: str | None = None
        self.end_reason: str | None = None
        self.end_at: float | None = None
        self.renegotiation_flagged = False
        self.early_data_flagged = False
        self.decode_errors = 0
        self.starttls = False
        self.decrypted = False  # a decrypted handshake message or alert was seen: the exact view
        self.decrypt_failures = 0  # records that did not authenticate with the key log's secrets
        self.server_went_on = False  # TLS 1.3: the server sent more than an alert after the client's flight
        self._diagnosis: Diagnosis | None = None
        # rules.versions.offered_versions: (client_hello, sslv2_hello, answer) for the hellos it was asked about
        self.offered_versions_memo: tuple[object, object, tuple[tuple[int, ...], bool]] | None = None

    # -- helpers used by the rules ---------------------------------------------------------

    def side(self, direction: Direction) -> Side:
        return self.client if direction is _C2S else self.server

    @property
    def version(self) -> int | None:
        """The version the server chose (a HelloRetryRequest's, until the ServerHello)."""
        return self._version

    @version.setter
    def version(self, value: int | None) -> None:
        # ``tls13`` is asked for on every record: a plain attribute, worked out here when the version changes.
        self._version = value
        self.tls13 = value is not None and is_tls13_variant(value)

    @property
    def any_fatal(self) -> bool:
        return self.first_fatal is not None

    def now_for(self, at: float | None) -> datetime:
        """The time certificates are judged by: ``--now``, else the wall clock at ``at``."""
        if self.options.now is not None:
            return self.options.now
        offset = 0.0 if at is None else at - self.started
        return datetime.fromtimestamp(self.wall_start + offset, UTC)

    def trust(self) -> bytes | None:
        if self.options.trust_pems is not None:
            return self.options.trust_pems
        if self.options.trust_loader is not None:
            return self.options.trust_loader()
        return None

    def set_step(self, name: str, by: Direction | None, at: float) -> None:
        self.step = name
        self.step_by = _SENDER[by] if by is not None else None
        self.step_at = at

    def step_text(self) -> str:
        """``after the server's server_hello_done`` style label for the last milestone."""
        if self.step == "start":
            return "before the ClientHello"
        if self.step_by is None:
            return f"after {self.step}"
        return f"after the {self.step_by}'s {self.step}"

    def mark_complete(self, at: float, *, inferred: bool) -> None:
        if self.complete:
            return
        if inferred and self.decrypted:
            return  # the decrypted Finished messages decide
        self.complete = True
        for side in (self.client, self.server):
            if side.pending is not None and side.pending.during_handshake:
                side.pending = None  # the handshake went on: that small record was data, not an abort
        self.complete_at = at
        self.complete_inferred = inferred
        self.set_step("complete", None, at)

    def undo_complete(self) -> None:
        """Decrypted events showed the handshake did not complete after all (see the module doc)."""
        self.complete = False
        self.complete_at = None
        self.complete_inferred = False

    def saw_decrypted(self) -> None:
        """The first decrypted handshake message or alert: inference from sizes gives way."""
        if self.decrypted:
            return
        self.decrypted = True
        for side in (self.client, self.server):
            if side.finished_inferred:
                side.finished = side.finished_inferred = False
                side.finished_at = None
        if self.complete and self.complete_inferred:
            self.undo_complete()

    # -- the interface the pipeline uses ----------------------------------------------------

    def add_finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def on_event(self, seq: int, event: ev.Event) -> list[Finding]:
        out: list[Finding] = []
        side = self.client if event.direction is _C2S else self.server
        handler = _HANDLERS.get(type(event))
        if handler is None:
            handler = _handler_for(type(event))
        if handler is not _EOS_HANDLER:
            side.bytes_seen = True
            at = event.at
            if side.first_at is None:
                side.first_at = at
            side.last_at = at
            side.last_seq = seq
            self.progress_at = at
        handler(self, seq, event, side, out)
        if out:
            self.findings.extend(out)
        self._diagnosis = None
        return out

    # One handler per event type, all with the same signature, picked by _HANDLERS below.

    def _on_alert(self, seq: int, event: ev.Alert, side: Side, out: list[Finding]) -> None:
        out += alerts.on_alert(self, seq, event)

    def _on_heartbeat(self, seq: int, event: ev.Heartbeat, side: Side, out: list[Finding]) -> None:
        out += ciphers.on_heartbeat(self, seq, event)

    def _on_sslv2_record(self, seq: int, event: ev.SSLv2Record, side: Side, out: list[Finding]) -> None:
        self._on_sslv2(seq, event, out)

    def _on_not_tls(self, seq: int, event: ev.NotTLS, side: Side, out: list[Finding]) -> None:
        side.not_tls = event
        side.not_tls_seq = seq
        if nottls.unambiguous(self, event):
            side.not_tls_reported = True
            out += nottls.on_not_tls(self, seq, event)

    def _on_starttls(self, seq: int, event: ev.StartTLS, side: Side, out: list[Finding]) -> None:
        self.starttls = True
        for s in (self.client, self.server):
            if not s.not_tls_reported:
                s.not_tls = None  # a plaintext preamble (STARTTLS, CONNECT, SOCKS), not a mistake
        out += nottls.on_starttls(self, seq, event)

    def _on_end_of_stream(self, seq: int, event: ev.EndOfStream, side: Side, out: list[Finding]) -> None:
        side.eof_at = event.at
        side.eof_seq = seq
        if self.first_eof is None:
            self.first_eof = event.direction
            self._note_hang_up(seq, event)
        out += alerts.resolve_pending(self, side, closing=True)

    def _on_other(self, seq: int, event: ev.Event, side: Side, out: list[Finding]) -> None:
        out += protocol.on_other(self, seq, event)

    def _note_hang_up(self, seq: int, event: ev.EndOfStream) -> None:
        who = event.direction.sender
        if self.hang_up is not None or not stalls.owes_handshake(self, who):
            return
        turn, owed = stalls.waiting(self)
        ch = self.client_hello_at
        self.hang_up = HangUp(side=who, at=event.at, seq=seq, step=self.step_text(), turn=turn, owed=owed,
                              server_hello=(self.server_hello is not None or self.sslv2
                                            or _SERVER_HELLO in self.server.messages),
                              sent_nothing=not self.side(event.direction).bytes_seen,
                              since_client_hello=None if ch is None else max(0.0, event.at - ch),
                              since_start=max(0.0, event.at - self.started))

    def on_end(self, *, how: str, by: str | None, reason: str | None, at: float) -> list[Finding]:
        self.end_how, self.end_by, self.end_reason, self.end_at = how, by, reason, at
        out: list[Finding] = []
        for side in (self.client, self.server):
            if side.not_tls is not None and not side.not_tls_reported:
                side.not_tls_reported = True
                out += nottls.on_not_tls(self, side.not_tls_seq, side.not_tls)
        closing = how not in ("capture_end", "shutdown")
        for side in (self.client, self.server):
            out += alerts.resolve_pending(self, side, closing=closing)
        if (self.tls13 and not self.complete and self.client_flight_at is not None and self.first_fatal is None
                and self.client.close_notify):
            self.mark_complete(self.client.last_at or at, inferred=True)  # the client finished, then closed cleanly
        out += closes.on_end(self, how=how, by=by, reason=reason, at=at)
        self.findings.extend(out)
        self._diagnosis = None
        return out

    def stalled(self, now: float) -> list[Finding]:
        out = stalls.check(self, now)
        self.findings.extend(out)
        return out

    def diagnose(self) -> Diagnosis:
        if self._diagnosis is None:
            self._diagnosis = _diagnosis.diagnose(self)
        return self._diagnosis

    def summary(self) -> ConnectionSummary:
        return _diagnosis.summarize(self, self.diagnose())

    # -- records ----------------------------------------------------------------------------

    def _on_record(self, seq: int, rec: ev.Record, side: Side, out: list[Finding]) -> None:
        # versions.on_record reports an odd record version once per side; a protected record with a
        # version from SSL 3.0 to TLS 1.2 is never odd, so the common case skips the call.
        if not side.record_version_flagged and not (rec.encrypted and SSL3_0 <= rec.version <= TLS1_2):
            out += versions.on_record(self, seq, rec, side)
        if not rec.encrypted:
            if rec.content_type == _APPLICATION_DATA:
                self._app_data(rec, side)
            return
        if rec.decrypted:
            if rec.inner_type == _APPLICATION_DATA:
                self._app_data(rec, side)
                if rec.direction is _S2C and self.client.finished:
                    self.server_went_on = True
            return  # the decoded events that follow say the rest
        # A record that follows a pending candidate means the candidate was not the last word.
        if side.pending is not None:
            out += alerts.resolve_pending(self, side, closing=False)
        if self.tls13 or (self.server_hello is None and rec.content_type == _APPLICATION_DATA
                          and rec.direction is _C2S):
            self._on_tls13_protected(seq, rec, side, out)
            return
        side.protected += 1
        ctype = rec.content_type
        if ctype == _HANDSHAKE:
            if side.ccs and not side.finished:
                side.finished = True
                side.finished_at = rec.at
                self.set_step("finished", rec.direction, rec.at)
                if self.client.finished and self.server.finished:
                    self.mark_complete(rec.at, inferred=False)
            elif self.complete:
                out += ciphers.renegotiation(self, seq, rec, "an encrypted handshake record after the handshake")
        elif ctype == _ALERT:
            side.pending = alerts.candidate(self, seq, rec, side, certain_alert=True)
        elif ctype == _APPLICATION_DATA:
            self._app_data(rec, side)
        elif ctype == _HEARTBEAT:
            out += ciphers.on_encrypted_heartbeat(self, seq, rec, side)

    def _on_tls13_protected(self, seq: int, rec: ev.Record, side: Side, out: list[Finding]) -> None:
        side.protected += 1
        if side.first_protected_len is None:
            side.first_protected_len = rec.length
        if self.server_hello is None:  # 0-RTT
            out += ciphers.early_data(self, seq, rec)
            return
        length = rec.length
        sized = alerts.tls13_alert_size(self, length) if length <= alerts.MAX_TLS13_ALERT else ""
        if rec.direction is _S2C:
            if self.client_flight_at is None:
                self.set_step("encrypted flight", rec.direction, rec.at)
                return
            self.server_answered_flight = True
            if not sized:
                self.server_went_on = True
            elif (self.complete and not self.complete_inferred and not self.server_went_on
                  and self.client.finished):
                # Both Finished were decrypted but this record was not (its ciphertext was not kept, or
                # the key log lacks the secret): an alert-sized first answer to the client's flight,
                # followed by a close, is the server rejecting that flight (see the module doc).
                side.pending = alerts.candidate(self, seq, rec, side, certain_alert=False)
                side.pending.during_handshake = True
                side.pending.step = "after the client's finished"
                return
            if not self.complete:
                if sized:
                    side.pending = alerts.candidate(self, seq, rec, side, certain_alert=False)
                    return
                self.mark_complete(rec.at, inferred=True)
                return
            self._app_data(rec, side)
            if sized:
                side.pending = alerts.candidate(self, seq, rec, side, certain_alert=False)
            return
        # client
        if self.client_flight_at is None:
            self.client_flight_at = rec.at
            self.client_flight_seq = seq
            self.server_flight_done_at = rec.at
            if not self.decrypted:
                self.server.finished = True
                self.server.finished_at = rec.at
                self.server.finished_inferred = True
            self.set_step("encrypted flight", rec.direction, rec.at)
            if sized:
                side.pending = alerts.candidate(self, seq, rec, side, certain_alert=False)
            return
        if self.complete:
            self._app_data(rec, side)
            if sized:
                side.pending = alerts.candidate(self, seq, rec, side, certain_alert=False)
            return
        if self.client_flight_seq is not None and self.server_answered_flight:
            self._app_data(rec, side)
            server_pending = self.server.pending
            if server_pending is not None and server_pending.during_handshake:
                # The server's answer was alert-sized: the client may have sent this before reading it
                # (a TLS 1.3 client sends its request right behind its Finished).  What the server
                # does next decides: more records (accepted) or a close (it was an abort).
                return
            # The client keeps talking after the server answered its flight: accepted.
            self.mark_complete(rec.at, inferred=True)
        elif sized:
            # Too small for a Finished or CertificateVerify: an alert sent after the client's own Finished,
            # i.e. after the handshake from the client's point of view (close_notify when it closes).
            side.pending = alerts.candidate(self, seq, rec, side, certain_alert=False)
            side.pending.during_handshake = False

    def _app_data(self, rec: ev.Record, side: Side) -> None:
        side.app_records += 1
        side.app_bytes += rec.length
        side.last_app_at = rec.at
        side.last_app_seq = side.last_seq

    def _on_ccs(self, seq: int, event: ev.ChangeCipherSpec, side: Side, out: list[Finding]) -> None:
        if not event.valid:
            out.append(make_finding("CCS_INVALID", f"{event.direction.sender} sent change_cipher_spec "
                                    f"{event.raw.hex(' ') or '(empty)'}", direction=event.direction, seq=seq,
                                    at=event.at))
        if not event.starts_encryption:
            return
        side.ccs = True
        self.set_step("change_cipher_spec", event.direction, event.at)
        if event.direction is _C2S:
            out += clientauth.on_client_ccs(self, seq, event)
        else:
            out += ciphers.on_server_ccs(self, seq, event)

    # -- handshake messages -----------------------------------------------------------------

    def _on_handshake(self, seq: int, hs: ev.HandshakeMessage, side: Side, out: list[Finding]) -> None:
        d = hs.direction
        out += protocol.check_order(self, seq, hs, side)
        if len(side.messages) < _MAX_MESSAGES:
            side.messages.append(hs.msg_type)
        msg = hs.message
        t = hs.msg_type
        if hs.decrypted:
            self.saw_decrypted()
            if (d is _S2C and self.client.finished
                    and t in (_NEW_SESSION_TICKET, _KEY_UPDATE)):
                self.server_went_on = True
        if msg is None:
            return
        renegotiating = self.complete and hs.decrypted and t in (_CLIENT_HELLO, _HELLO_REQUEST)
        if renegotiating:
            out += ciphers.renegotiation(self, seq, hs, f"a {'ClientHello' if t == 1 else 'HelloRequest'}")
            return
        if self.complete and t not in (_NEW_SESSION_TICKET, _KEY_UPDATE, _FINISHED):
            return  # a renegotiation's messages: not re-judged
        if t == _CLIENT_HELLO and isinstance(msg, ClientHello):
            self.client_hellos += 1
            first = self.client_hello is None
            self.client_hello = msg
            if first:
                self.client_hello_at = hs.at
            self.set_step("client_hello", d, hs.at)
            if first:
                out += versions.on_client_hello(self, seq, hs, msg)
                out += ciphers.on_client_hello(self, seq, hs, msg)
        elif t == _SERVER_HELLO and isinstance(msg, ServerHello):
            if msg.is_hello_retry_request:
                self.hello_retry = msg
                self.version = msg.selected_version
                self.set_step("hello_retry_request", d, hs.at)
                out += ciphers.on_hello_retry(self, seq, hs, msg)
                return
            self.server_hello = msg
            self.server_hello_at = hs.at
            self.version = msg.selected_version
            self.cipher_suite = msg.cipher_suite
            self.alpn_chosen = msg.alpn
            self.set_step("server_hello", d, hs.at)
            out += versions.on_server_hello(self, seq, hs, msg)
            out += ciphers.on_server_hello(self, seq, hs, msg)
        elif t == _CERTIFICATE and isinstance(msg, Certificate):
            side.certificate_msg = msg
            side.certs = certificates.chain_of(msg)
            self.set_step("certificate", d, hs.at)
            if d is _S2C:
                out += certificates.on_server_chain(self, seq, hs, msg)
            else:
                out += clientauth.on_client_certificate(self, seq, hs, msg)
        elif t == _SERVER_KEY_EXCHANGE and isinstance(msg, ServerKeyExchange):
            self.server_key_exchange = msg
            self.set_step("server_key_exchange", d, hs.at)
            out += ciphers.on_server_key_exchange(self, seq, hs, msg)
        elif t == _CERTIFICATE_REQUEST and isinstance(msg, CertificateRequest):
            self.cert_request = msg
            self.cert_request_at = hs.at
            self.set_step("certificate_request", d, hs.at)
            out += clientauth.on_certificate_request(self, seq, hs, msg)
        elif t == _ENCRYPTED_EXTENSIONS and isinstance(msg, EncryptedExtensions):
            self.encrypted_extensions = msg
            out += ciphers.on_encrypted_extensions(self, seq, hs, msg)
        elif t == _CLIENT_KEY_EXCHANGE:
            self.set_step("client_key_exchange", d, hs.at)
            out += clientauth.on_client_key_exchange(self, seq, hs)
        elif t == _CERTIFICATE_VERIFY:
            side.certificate_verify = True
            self.set_step("certificate_verify", d, hs.at)
        elif t == _FINISHED:
            side.finished = True
            side.finished_at = hs.at
            side.finished_inferred = False
            self.set_step("finished", d, hs.at)
            if d is _C2S and self.tls13 and self.client_flight_at is None:
                self.client_flight_at = hs.at
            if self.client.finished and self.server.finished:
                self.mark_complete(hs.at, inferred=False)
        elif t in (_SERVER_HELLO_DONE, _CERTIFICATE_STATUS,
                   _NEW_SESSION_TICKET):
            if not self.complete:
                self.set_step(_hs_name(t), d, hs.at)

    # -- SSL 2.0 ----------------------------------------------------------------------------

    def _on_sslv2(self, seq: int, rec: ev.SSLv2Record, out: list[Finding]) -> None:
        if rec.msg_type == SSL2_MT_CLIENT_HELLO and isinstance(rec.message, SSLv2ClientHello):
            self.sslv2_hello = rec.message
            self.client_hellos += 1
            self.client_hello_at = rec.at
            self.set_step("client_hello", rec.direction, rec.at)
            out += versions.on_sslv2_hello(self, seq, rec, rec.message)
            out += ciphers.on_sslv2_hello(self, seq, rec, rec.message)
        elif rec.msg_type == SSL2_MT_SERVER_HELLO:
            self.sslv2 = True
            self.version = 0x0002
            self.server_hello_at = rec.at
            self.set_step("server_hello", rec.direction, rec.at)
            out += versions.on_sslv2_server_hello(self, seq, rec)
        elif rec.encrypted:
            side = self.side(rec.direction)
            side.protected += 1
            if self.client.protected and self.server.protected:
                self.mark_complete(rec.at, inferred=True)
        if rec.error is not None:
            out += protocol.decode_error(self, seq, rec.direction, rec.at, "sslv2", rec.error)

    @property
    def max_decode_errors(self) -> int:
        return _MAX_DECODE_ERRORS

    @property
    def max_alerts(self) -> int:
        return _MAX_ALERTS

    def client_offered_tls13(self) -> bool:
        ch = self.client_hello
        return ch is not None and any(v == TLS1_3 or v >> 8 == 0x7F for v in ch.supported_versions)


_Handler = Callable[[Tracker, int, ev.Event, Side, list[Finding]], None]

# isinstance order of the event classes: the first match handles the event (subclasses included).
_BY_CLASS: tuple[tuple[type, _Handler], ...] = (
    (ev.Record, Tracker._on_record),
    (ev.HandshakeMessage, Tracker._on_handshake),
    (ev.Alert, Tracker._on_alert),
    (ev.ChangeCipherSpec, Tracker._on_ccs),
    (ev.Heartbeat, Tracker._on_heartbeat),
    (ev.SSLv2Record, Tracker._on_sslv2_record),
    (ev.NotTLS, Tracker._on_not_tls),
    (ev.StartTLS, Tracker._on_starttls),
    (ev.EndOfStream, Tracker._on_end_of_stream),
)
# Event type -> handler: one dict hit per event instead of a chain of isinstance tests.  Filled
# from _BY_CLASS, then by _handler_for for other types (bounded by the number of event classes).
_HANDLERS: dict[type, _Handler] = dict(_BY_CLASS)
_EOS_HANDLER: _Handler = Tracker._on_end_of_stream  # the one event that is not bytes from a side


def _handler_for(kind: type) -> _Handler:
    handler = next((h for cls, h in _BY_CLASS if issubclass(kind, cls)), Tracker._on_other)
    _HANDLERS[kind] = handler
    return handler


def _hs_name(msg_type: int) -> str:
    return handshake_type_name(msg_type)
