"""Saved sessions as a front end: re-run the analysis on the stored handshake bytes.

Each connection's two byte streams are rebuilt from its stored records: the 5-byte header plus
the stored plaintext payload, the stored ciphertext of a handshake-phase protected record, or zero
bytes where nothing was stored (application data never is).  The streams go through a fresh
:class:`Pipeline`, so the current rules judge old sessions.  A session without bytes (a redacted
copy) cannot be re-analysed; its stored findings and diagnoses are shown as they are.

With a key log (``replay --keylog``) the stored ciphertext is decrypted as it would have been
live: a session saved without keys is diagnosed exactly later.  Records rebuilt as zeros have no
ciphertext to open; :class:`StoredSessionDecryptor` steps over them (keeping the sequence numbers
right) and says so once, instead of reporting each as a record that failed to authenticate.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tlsproxy.analysis.model import ConnectionSummary, Diagnosis, Finding, Severity
from tlsproxy.pipeline import ConnectionEnd, ConnectionInfo, ConnectionReport, Pipeline, RunInfo, Sink
from tlsproxy.wire.decrypt import ConnectionDecryptor, DecryptResult
from tlsproxy.wire.events import ContentType, Direction, Event
from tlsproxy.wire.keylog import KeyLog

__all__ = ["FilterSink", "ReplayStats", "StoredSessionDecryptor", "can_reanalyse", "rebuild", "replay_document",
           "stored_decryptor_factory"]

# Content types whose plaintext the session stores; without it (redaction) the bytes are gone.
_STORED_TYPES = frozenset({ContentType.handshake, ContentType.alert, ContentType.change_cipher_spec,
                           ContentType.heartbeat})
# Largest record body a rebuilt application-data record may have (TLS 1.2 ciphertext limit).
_MAX_RECORD = 2**14 + 2048


@dataclass(slots=True)
class ReplayStats:
    connections: int = 0
    shown: int = 0
    reanalysed: bool = True


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a rebuilt connection: ``data`` / ``eof`` / ``gap`` in ``direction`` at ``t``."""

    kind: str
    direction: Direction
    t: float
    data: bytes = b""
    length: int = 0


def _dir(text: str) -> Direction:
    return Direction(text)


def _record_bytes(ct: int, version: int, body: bytes) -> bytes:
    return bytes((ct, version >> 8, version & 0xFF, len(body) >> 8, len(body) & 0xFF)) + body


def can_reanalyse(conn: dict[str, Any]) -> bool:
    """False when plaintext records lost their bytes (a redacted session)."""
    for e in conn.get("events", []):
        if e.get("kind") == "record" and not e.get("encrypted") and e.get("content_type_code") in _STORED_TYPES \
                and e.get("length", 0) and "payload" not in e:
            return False
        if e.get("kind") == "sslv2" and not e.get("encrypted") and "payload" not in e:
            return False
    return True


def rebuild(conn: dict[str, Any]) -> Iterator[Action]:
    """The byte streams of a stored connection, in the order the events were seen."""
    for e in conn.get("events", []):
        kind = e.get("kind")
        d = _dir(e["dir"])
        t = float(e.get("t", 0.0))
        if kind == "record":
            length = int(e["length"])
            stored = e.get("payload") if "payload" in e else e.get("ciphertext")
            body = base64.b64decode(stored) if stored is not None else bytes(length)
            if len(body) != length:
                body = bytes(length)
            yield Action("data", d, t, _record_bytes(int(e["content_type_code"]), int(e["record_version_code"]), body))
        elif kind == "application_data_run":
            count, total = int(e["count"]), int(e["bytes"])
            version = int(e.get("record_version_code", 0x0303))
            last_t = float(e.get("last_t", t))
            size, extra = divmod(total, count) if count else (0, 0)
            for i in range(count):
                n = min(size + (1 if i < extra else 0), _MAX_RECORD)
                at = t + (last_t - t) * (i / max(count - 1, 1))
                yield Action("data", d, at, _record_bytes(ContentType.application_data, version, bytes(n)))
        elif kind == "sslv2":
            length = int(e["length"])
            body = base64.b64decode(e["payload"]) if "payload" in e else bytes(length)
            if len(body) != length:
                body = bytes(length)
            yield Action("data", d, t, bytes((0x80 | (length >> 8), length & 0xFF)) + body)
        elif kind == "not_tls":
            line = e.get("first_line")
            yield Action("data", d, t, (line + "\r\n").encode("utf-8", "replace") if line else b"\x00" * 8)
        elif kind == "stream_gap":
            yield Action("gap", d, t, length=int(e["length"]))
        elif kind == "end_of_stream":
            yield Action("eof", d, t)


#: Why a rebuilt record is not decrypted.  It starts like the wire core's own "cannot decrypt: ..."
#: so that the analyzer reports a limit of the saved session, not a wrong key log.
NOT_STORED = "cannot decrypt: its ciphertext was not stored in the session (application data never is)"


class StoredSessionDecryptor(ConnectionDecryptor):
    """Key-log decryption of a rebuilt session.  A record that was not stored comes back as zero
    bytes (an AEAD or MAC'd record never is all zeros): its sequence number is spent, as the
    sender spent it, and it is reported as not decryptable rather than as a wrong key."""

    __slots__ = ()

    def decrypt(self, direction: Direction, content_type: int, record_version: int, payload: bytes) -> DecryptResult:
        if payload and payload.count(0) == len(payload):
            self.skip(direction, payload)
            return DecryptResult(status="unsupported", reason=NOT_STORED.removeprefix("cannot decrypt: "))
        return super().decrypt(direction, content_type, record_version, payload)


def stored_decryptor_factory(keylog: KeyLog | None) -> Callable[[], StoredSessionDecryptor] | None:
    """A per-connection decryptor maker for :class:`Pipeline` when replaying with a key log."""
    if keylog is None:
        return None
    return lambda: StoredSessionDecryptor(keylog)


class FilterSink:
    """Holds back each connection's output until it closes, then passes it on if it qualifies
    (``--connection N``, ``--only-failures``), so the filters can use the *new* diagnosis."""

    def __init__(self, sinks: Sequence[Sink], *, only_failures: bool = False) -> None:
        self.sinks = list(sinks)
        self.only_failures = only_failures
        self._held: dict[int, list[tuple[str, tuple[Any, ...]]]] = {}
        self.shown: list[ConnectionReport] = []

    def run_started(self, run: RunInfo) -> None:
        for s in self.sinks:
            s.run_started(run)

    def run_finished(self, run: RunInfo, ended: float) -> None:
        for s in self.sinks:
            s.run_finished(run, ended)

    def connection_opened(self, info: ConnectionInfo) -> None:
        self._held[info.id] = [("connection_opened", (info,))]

    def event(self, conn_id: int, seq: int, event: Event, findings: Sequence[Finding]) -> None:
        self._held.setdefault(conn_id, []).append(("event", (conn_id, seq, event, findings)))

    def connection_closed(self, report: ConnectionReport) -> None:
        held = self._held.pop(report.info.id, [])
        if self.only_failures and report.diagnosis.outcome == "established" and not any(
                f.severity >= Severity.error for f in report.findings):
            return
        self.shown.append(report)
        for name, args in held:
            for s in self.sinks:
                getattr(s, name)(*args)
        for s in self.sinks:
            s.connection_closed(report)


def _addr(value: Any) -> tuple[str, int] | None:
    if isinstance(value, dict) and "host" in value:
        return (str(value["host"]), int(value.get("port", 0)))
    return None


def _info(conn: dict[str, Any]) -> ConnectionInfo:
    return ConnectionInfo(id=int(conn["id"]), label=conn.get("label") or "", mode=conn.get("mode") or "",
                          client=_addr(conn.get("client")), server=_addr(conn.get("server")),
                          target=conn.get("target"), started=0.0, wall_start=float(conn.get("started_unix") or 0.0))


def _end(conn: dict[str, Any], last_t: float) -> ConnectionEnd:
    close = conn.get("close")
    duration = conn.get("duration")
    at = float(duration) if isinstance(duration, (int, float)) else last_t
    nbytes = conn.get("bytes") or {}
    if not isinstance(close, dict):  # the run was killed while this connection was open
        return ConnectionEnd(how="capture_end", by=None, at=at, reason="the session ends while the connection is open",
                             bytes_c2s=int(nbytes.get("c2s", 0)), bytes_s2c=int(nbytes.get("s2c", 0)))
    return ConnectionEnd(how=close.get("how") or "fin", by=close.get("by"), at=at, reason=close.get("reason"),
                         bytes_c2s=int(nbytes.get("c2s", 0)), bytes_s2c=int(nbytes.get("s2c", 0)))


def stored_finding(d: dict[str, Any]) -> Finding:
    return Finding(code=d.get("code", ""), severity=Severity.parse(d.get("severity", "info")),
                   title=d.get("title", ""), detail=d.get("detail", ""), hints=tuple(d.get("hints") or ()),
                   direction=Direction(d["dir"]) if d.get("dir") else None, event_seq=d.get("event_seq"),
                   at=d.get("t"))


def stored_report(conn: dict[str, Any]) -> ConnectionReport:
    """The report a session file holds, as it was written (no re-analysis)."""
    diag = conn.get("diagnosis") or {}
    summ = conn.get("summary") or {}
    diagnosis = Diagnosis(outcome=diag.get("outcome", "incomplete"), certain=bool(diag.get("certain", False)),
                          gave_up=diag.get("gave_up"), step=diag.get("step"), cause=diag.get("cause", ""),
                          checks=tuple(diag.get("checks") or ()), negotiation=dict(diag.get("negotiation") or {}),
                          timings=dict(diag.get("timings") or {}))
    known = {f for f in ConnectionSummary.__dataclass_fields__}  # type: ignore[attr-defined]
    summary = ConnectionSummary(**{k: v for k, v in summ.items() if k in known})
    events = conn.get("events") or [{}]
    return ConnectionReport(info=_info(conn), end=_end(conn, float(events[-1].get("t", 0.0) if events else 0.0)),
                            summary=summary, diagnosis=diagnosis,
                            findings=tuple(stored_finding(f) for f in conn.get("findings", [])))


def replay_document(doc: dict[str, Any], pipeline: Pipeline, *, run: RunInfo,
                    connections: set[int] | None = None) -> ReplayStats:
    """Feed every selected connection of ``doc`` through ``pipeline`` (whose sinks should include
    a :class:`FilterSink` for ``--only-failures``).  Calls ``run_started``/``run_finished``."""
    stats = ReplayStats()
    pipeline.run_started(run)
    for conn in doc.get("connections", []):
        if connections is not None and int(conn["id"]) not in connections:
            continue
        stats.connections += 1
        if not can_reanalyse(conn):
            stats.reanalysed = False
            _show_stored(pipeline, conn)
            continue
        pipeline.open(_info(conn))
        last_t = 0.0
        for action in rebuild(conn):
            last_t = max(last_t, action.t)
            if action.kind == "data":
                pipeline.data(int(conn["id"]), action.direction, action.data, action.t)
            elif action.kind == "eof":
                pipeline.eof(int(conn["id"]), action.direction, action.t)
            else:
                pipeline.gap(int(conn["id"]), action.direction, action.length, action.t)
        pipeline.close(int(conn["id"]), _end(conn, last_t))
    pipeline.run_finished(run, time.time())
    return stats


def _show_stored(pipeline: Pipeline, conn: dict[str, Any]) -> None:
    """A connection that cannot be re-analysed: hand its stored findings and diagnosis to the sinks."""
    report = stored_report(conn)
    for sink in pipeline.sinks:
        sink.connection_opened(report.info)
        if report.findings:
            sink.event(report.info.id, -1, None, report.findings)  # type: ignore[arg-type]
    pipeline.reports_count += 1
    for f in report.findings:
        if pipeline.worst is None or f.severity > pipeline.worst:
            pipeline.worst = f.severity
    for sink in pipeline.sinks:
        sink.connection_closed(report)
