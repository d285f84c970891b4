"""One core, three front ends: the live relay, capture files and saved sessions all hand bytes
of a connection to a :class:`Pipeline`, which runs the wire parser and the analyzer for each
connection and passes what they produce to the sinks.

The pipeline is sans-IO too (times come in as arguments); it is the one place where a failure of
the parser or the analyzer is contained: it becomes a finding on that connection, and the bytes
(which the relay has already forwarded) are unaffected.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tlsproxy.analysis.model import ConnectionSummary, Diagnosis, Finding, Severity
from tlsproxy.analysis.tracker import AnalysisOptions, Tracker
from tlsproxy.reports import ConnectionEnd, ConnectionInfo, ConnectionReport, RunInfo, Sink, build_end, build_report
from tlsproxy.wire.connection import Decryptor, TLSConnection
from tlsproxy.wire.handshake import DEFAULT_MAX_MESSAGE_SIZE
from tlsproxy.wire.events import Direction, Event

__all__ = ["ConnectionEnd", "ConnectionInfo", "ConnectionReport", "Pipeline", "RunInfo", "Sink"]

_C2S, _S2C = Direction.C2S, Direction.S2C  # enum member lookups are slow in Python 3.11: looked up once

@dataclass(slots=True)
class _Conn:
    info: ConnectionInfo
    wire: TLSConnection | None
    tracker: Tracker
    seq: int = 0
    bytes: dict[Direction, int] = field(default_factory=lambda: {_C2S: 0, _S2C: 0})
    eof: set[Direction] = field(default_factory=set)
    broken: bool = False


class Pipeline:
    """Routes each connection's bytes through its own parser and tracker, then to the sinks."""

    def __init__(self, sinks: Sequence[Sink], options: AnalysisOptions | None = None,
                 decryptor_factory: Callable[[], Decryptor | None] | None = None, *, show_data: int = 0,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        """``decryptor_factory`` makes each connection's key-log decryptor (or ``None``);
        ``show_data`` asks for the first N bytes of decrypted application data (screen only);
        ``max_message_size`` caps one handshake message's reassembly."""
        self.max_message_size = max_message_size
        self.sinks = list(sinks)
        self.options = options or AnalysisOptions()
        self.decryptor_factory = decryptor_factory
        self.show_data = show_data
        self._conns: dict[int, _Conn] = {}
        self.reports_count = 0
        self.worst: Severity | None = None

    # -- front-end API ----------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        for sink in self.sinks:
            sink.run_started(run)

    def run_finished(self, run: RunInfo, ended: float) -> None:
        for sink in self.sinks:
            sink.run_finished(run, ended)

    def open(self, info: ConnectionInfo) -> None:
        decryptor = self.decryptor_factory() if self.decryptor_factory is not None else None
        wire = TLSConnection(decryptor=decryptor, show_data=self.show_data if decryptor is not None else 0,
                             max_message_size=self.max_message_size)
        tracker = Tracker(self.options, wall_start=info.wall_start, started=info.started)
        self._conns[info.id] = _Conn(info=info, wire=wire, tracker=tracker)
        for sink in self.sinks:
            sink.connection_opened(info)

    def set_server(self, conn_id: int, server: tuple[str, int]) -> None:
        """The relay resolved and reached the upstream."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.info = replace(conn.info, server=server)

    def poll_keys(self, at: float) -> None:
        """The key log learned secrets: let every connection decrypt what it held."""
        for conn in list(self._conns.values()):
            if conn.broken or conn.wire is None:
                continue
            try:
                events = conn.wire.poll(at=at)
            except Exception as exc:  # noqa: BLE001
                self._internal_error(conn, "parser", exc, at)
                continue
            self._dispatch(conn, events)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or not data:
            return
        conn.bytes[direction] += len(data)
        if conn.broken or conn.wire is None:
            return
        try:
            events = conn.wire.feed(direction, data, at=at)
        except Exception as exc:  # noqa: BLE001 - contain a parser bug to this connection
            self._internal_error(conn, "parser", exc, at)
            return
        self._dispatch(conn, events)

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or direction in conn.eof:
            return
        conn.eof.add(direction)
        if conn.broken or conn.wire is None:
            return
        try:
            events = conn.wire.feed(direction, b"", at=at)
        except Exception as exc:  # noqa: BLE001
            self._internal_error(conn, "parser", exc, at)
            return
        self._dispatch(conn, events)

    def gap(self, conn_id: int, direction: Direction, length: int, at: float) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or conn.broken or conn.wire is None:
            return
        self._dispatch(conn, conn.wire.gap(direction, length, at=at))

    def stalls(self, now: float) -> None:
        """Live proxy: ask every open connection whether its handshake stopped moving."""
        for conn in list(self._conns.values()):
            if conn.broken:
                continue
            try:
                findings = conn.tracker.stalled(now)
            except Exception as exc:  # noqa: BLE001
                self._internal_error(conn, "analyzer", exc, now)
                continue
            if findings:
                self._emit_findings(conn, findings)

    def close(self, conn_id: int, end: ConnectionEnd) -> ConnectionReport | None:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return None
        counted = conn.bytes
        end = build_end(end.how, end.by, end.at, end.reason, end.bytes_c2s or counted[_C2S],
                        end.bytes_s2c or counted[_S2C])
        tracker = conn.tracker
        try:
            extra = tracker.on_end(how=end.how, by=end.by, reason=end.reason, at=end.at)
            if extra:
                self._emit_findings(conn, extra)
            diagnosis = tracker.diagnose()
            summary = tracker.summary()
        except Exception as exc:  # noqa: BLE001
            self._internal_error(conn, "analyzer", exc, end.at)
            diagnosis = Diagnosis(outcome="incomplete", certain=False, gave_up=None, step=None,
                                  cause="The analyzer failed on this connection; see the internal error finding.")
            summary = ConnectionSummary(outcome="incomplete", diagnosis=diagnosis.cause)
        findings = tuple(tracker.findings)
        report = build_report(conn.info, end, summary, diagnosis, findings)
        self.reports_count += 1
        if findings:
            top = max([f.severity for f in findings])
            if self.worst is None or top > self.worst:
                self.worst = top
        for sink in self.sinks:
            sink.connection_closed(report)
        return report

    def close_all(self, how: str, at: float) -> None:
        for conn_id in list(self._conns):
            self.close(conn_id, ConnectionEnd(how=how, by=None, at=at))

    # -- internals --------------------------------------------------------------------------

    def _dispatch(self, conn: _Conn, events: list[Event]) -> None:
        if not events:
            return
        on_event = conn.tracker.on_event  # bound once: this loop runs for every event of every connection
        sinks = self.sinks
        conn_id = conn.info.id
        seq = conn.seq  # kept in a local, written back once (also if a sink raises)
        try:
            for event in events:
                try:
                    findings = on_event(seq, event)
                except Exception as exc:  # noqa: BLE001
                    self._internal_error(conn, "analyzer", exc, event.at)
                    findings = []
                for sink in sinks:
                    sink.event(conn_id, seq, event, findings)
                seq += 1
                if conn.broken:  # only _internal_error above sets it
                    return
        finally:
            conn.seq = seq

    def _emit_findings(self, conn: _Conn, findings: list[Finding]) -> None:
        for sink in self.sinks:
            sink.event(conn.info.id, -1, None, findings)  # type: ignore[arg-type]

    def _internal_error(self, conn: _Conn, where: str, exc: Exception, at: float) -> None:
        conn.broken = True
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        finding = Finding(
            code="INTERNAL_ERROR",
            severity=Severity.warning,
            title=f"tlsproxy's {where} failed on this connection",
            detail=f"{tb}. Bytes were still relayed unchanged; only the analysis of this connection stopped.",
            hints=("Please report this with the session file or capture.",),
            at=at,
        )
        conn.tracker.add_finding(finding)
        self._emit_findings(conn, [finding])
