"""Capture files as a front end: every TCP connection in a pcap/pcapng that carries TLS goes
through the same pipeline as live traffic, with capture timestamps as its clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

from tlsproxy.capture import (
    CaptureFormatError,
    ConnectionFinished,
    ConnectionOpened,
    StreamClosed,
    StreamConflict,
    StreamData,
    StreamGap,
    TcpReassembler,
)
from tlsproxy.capture.packets import FieldsDecoder, SegmentFields, SegmentReader
from tlsproxy.capture.pcap import iter_batches
from tlsproxy.reports import ConnectionEnd, ConnectionInfo
from tlsproxy.wire import sniff
from tlsproxy.wire.events import Direction
from tlsproxy.wire.keylog import KeyLog

if TYPE_CHECKING:
    from tlsproxy.pipeline import Pipeline

# Ports where TLS is expected even when a connection's first bytes are not TLS (so that "the client
# spoke plain HTTP to a TLS port" is reported rather than silently skipped).
TLS_PORTS = frozenset({443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 4433, 5061, 5223, 5671, 6697,
                       8443, 8883, 9443})


@dataclass(slots=True)
class CaptureStats:
    packets: int = 0
    tcp_segments: int = 0
    connections: int = 0
    analysed: int = 0
    skipped_not_tls: int = 0
    skipped_empty: int = 0
    first_at: float | None = None
    last_at: float | None = None
    error: str | None = None  # the file is damaged from here on; what came before was analysed
    embedded_secrets: int = 0  # pcapng Decryption Secrets Blocks with TLS key log text


@dataclass(slots=True)
class _Pending:
    """A connection whose first bytes have not yet told whether it carries TLS."""

    opened: ConnectionOpened
    closes: list[StreamClosed] = field(default_factory=list)


def looks_like_tls_start(data: bytes) -> bool:
    if len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 3 and data[2] <= 4:
        return True
    return len(data) >= 3 and bool(data[0] & 0x80) and data[2] in (1, 4)  # SSL 2.0 hellos


def carries_tls(first: bytes, server_port: int) -> bool:
    """Decide from a connection's first payload whether to analyse it."""
    if looks_like_tls_start(first) or server_port in TLS_PORTS:
        return True
    protocol = sniff.guess_protocol(first)
    return protocol in sniff.UPGRADABLE


class CaptureAnalysis:
    """Feeds stream events of a capture into a pipeline (sans-IO: packets come from the caller).

    Connections are tracked by ``ConnKey.index`` (unique per connection): an int is the cheapest
    dictionary key, and the events of one connection are looked up several times each.
    """

    def __init__(self, pipeline: Pipeline, *, all_connections: bool = False) -> None:
        self.pipeline = pipeline
        self.all_connections = all_connections
        self.stats = CaptureStats()
        self.decoder = FieldsDecoder()  # for packet(); analyze_capture decodes as it reads
        self.tcp = TcpReassembler()
        self._pending: dict[int, _Pending] = {}
        self._active: set[int] = set()
        self._ignored: set[int] = set()
        self._closes: dict[int, list[StreamClosed]] = {}
        # Event type -> handler; StreamData of an analysed connection is handled inline.
        self._handlers: dict[type, Callable[[Any], None]] = {
            StreamData: self._data, ConnectionOpened: self._opened, StreamGap: self._gap,
            StreamClosed: self._closed, ConnectionFinished: self._finished, StreamConflict: self._conflict,
        }

    def packet(self, raw) -> None:  # noqa: ANN001 - a capture.RawPacket
        """One packet at a time (``analyze_capture`` decodes as it reads, in batches)."""
        self.segments([self.decoder.decode(raw) or raw.timestamp])

    def segments(self, items: Sequence[SegmentFields | float]) -> None:
        """``frames`` for packets already decoded by a ``SegmentReader``: per packet its
        ``SegmentFields``, or its timestamp when it carries no TCP segment."""
        if not items:
            return
        st = self.stats
        st.packets += len(items)
        if st.first_at is None:
            first = items[0]
            st.first_at = first if type(first) is float else first[8]  # type: ignore[index]
        last = items[-1]
        st.last_at = last if type(last) is float else last[8]  # type: ignore[index]
        feed = self.tcp.feed_fields
        active = self._active
        data = self.pipeline.data
        handlers = self._handlers
        segments = 0
        try:
            for seg in items:
                if type(seg) is float:
                    continue
                segments += 1
                for event in feed(seg):  # type: ignore[arg-type]
                    if type(event) is StreamData:  # the bulk of events: bytes of an analysed connection
                        index = event.conn.index
                        if index in active:
                            data(index, event.direction, event.data, event.at)
                            continue
                    handlers[type(event)](event)
        finally:
            st.tcp_segments += segments

    def finish(self) -> CaptureStats:
        for event in self.tcp.finish():
            self._stream_event(event)
        return self.stats

    def _stream_event(self, event) -> None:  # noqa: ANN001 - a capture StreamEvent
        self._handlers[type(event)](event)

    def _data(self, event: StreamData) -> None:
        index = event.conn.index
        if index in self._active:
            self.pipeline.data(index, event.direction, event.data, event.at)
        elif index in self._pending:
            pending = self._pending.pop(index)
            if self.all_connections or carries_tls(event.data, event.conn.server[1]):
                self._activate(pending)
                self.pipeline.data(index, event.direction, event.data, event.at)
            else:
                self._ignored.add(index)
                self.stats.skipped_not_tls += 1

    def _conflict(self, event: StreamConflict) -> None:
        pass  # the first copy was delivered; the analysis has nothing to add

    def _opened(self, event: ConnectionOpened) -> None:
        self.stats.connections += 1
        self._pending[event.conn.index] = _Pending(opened=event)

    def _gap(self, event: StreamGap) -> None:
        index = event.conn.index
        if index in self._active:
            self.pipeline.gap(index, event.direction, event.length, event.at)

    def _closed(self, event: StreamClosed) -> None:
        index = event.conn.index
        if index in self._active:
            self._closes.setdefault(index, []).append(event)
            if event.how == "fin":
                self.pipeline.eof(index, event.direction, event.at)
        elif index in self._pending:
            self._pending[index].closes.append(event)

    def _finished(self, event: ConnectionFinished) -> None:
        index = event.conn.index
        if index in self._active:
            self._active.discard(index)
            self.pipeline.close(index, self._end(self._closes.pop(index, []), event.at))
        elif self._pending.pop(index, None) is not None:
            self.stats.skipped_empty += 1
        self._ignored.discard(index)

    def _activate(self, pending: _Pending) -> None:
        opened = pending.opened
        key = opened.conn
        self._active.add(key.index)
        self.stats.analysed += 1
        self.pipeline.open(ConnectionInfo(
            id=key.index,
            label=str(key),
            mode="capture",
            client=opened.client,
            server=opened.server,
            started=opened.at,
            wall_start=opened.at,
        ))
        for close in pending.closes:
            self._stream_event(close)

    @staticmethod
    def _end(closes: list[StreamClosed], at: float) -> ConnectionEnd:
        """How the connection ended, from the per-direction closes in the order they happened."""
        fins = [c for c in closes if c.how == "fin"]
        resets = [c for c in closes if c.how == "rst"]
        if resets:
            by = getattr(resets[0], "by", None)
            return ConnectionEnd(how="reset", by=by, at=resets[0].at)
        if closes and all(c.how == "fin" for c in closes) and len(closes) == 2:
            first = fins[0]
            return ConnectionEnd(how="fin", by=first.direction.sender, at=first.at)
        if fins:
            return ConnectionEnd(how="fin", by=fins[0].direction.sender, at=fins[0].at,
                                 reason="the capture ends before the other side closed")
        how = "capture_end" if any(c.how == "end" for c in closes) else "idle_timeout"
        return ConnectionEnd(how=how, by=None, at=at)


def analyze_capture(path: str | PathLike[str], pipeline: Pipeline, *, all_connections: bool = False,
                    keylog: KeyLog | None = None) -> CaptureStats:
    """Run every TLS connection of a capture file through ``pipeline`` (the only I/O is reading).

    Key log text embedded in a pcapng (Decryption Secrets Blocks) is added to ``keylog``.
    """
    analysis = CaptureAnalysis(pipeline, all_connections=all_connections)
    on_secrets = None
    if keylog is not None:
        def on_secrets(text: str) -> None:
            keylog.feed_text(text if text.endswith("\n") else text + "\n")
            analysis.stats.embedded_secrets += 1
    try:
        for items in iter_batches(path, SegmentReader(), on_secrets=on_secrets):
            analysis.segments(items)
    except CaptureFormatError as exc:
        analysis.stats.error = str(exc)
    return analysis.finish()


__all__ = ["CaptureAnalysis", "CaptureStats", "analyze_capture", "carries_tls", "Direction"]
