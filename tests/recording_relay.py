"""A loopback TCP relay for tests that records what passes, and a driver that runs recorded
bytes through the wire core and the analyzer.

``RecordingRelay(upstream_port)`` listens on a free loopback port, accepts one connection,
connects to the upstream and pumps both ways in two threads, recording ``(direction, bytes, t)``
per chunk in arrival order; a FIN is passed on as a half-close and recorded as ``(direction, b"",
t)``; a reset is recorded in ``reset_by``.  Real peers (``openssl s_client``/``s_server``) talk
through it when the test needs bytes Python's ``ssl`` cannot produce.

``analyse(chunks, ...)`` feeds chunks to a ``TLSConnection`` and a ``Tracker`` the way the
pipeline does and ends the connection; ``analyse_capture(path)`` does the same for every TCP
connection of a pcap/pcapng file through the capture reader.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlsproxy.analysis.tracker import AnalysisOptions, Tracker
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.events import Direction

Chunk = tuple[Direction, bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RecordingRelay:
    upstream_port: int
    chunks: list[tuple[Direction, bytes, float]] = field(default_factory=list)
    reset_by: str | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _record(self, d: Direction, data: bytes) -> None:
        with self._lock:
            self.chunks.append((d, data, time.monotonic()))

    def _serve(self) -> None:
        self._listener.settimeout(20)
        try:
            client, _ = self._listener.accept()
        except OSError:
            self._done.set()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=20)
        pumps = [threading.Thread(target=self._pump, args=(client, upstream, Direction.C2S), daemon=True),
                 threading.Thread(target=self._pump, args=(upstream, client, Direction.S2C), daemon=True)]
        for p in pumps:
            p.start()
        for p in pumps:
            p.join(30)
        for s in (client, upstream, self._listener):
            s.close()
        self._done.set()

    def _pump(self, src: socket.socket, dst: socket.socket, d: Direction) -> None:
        src.settimeout(20)
        while True:
            try:
                data = src.recv(65536)
            except ConnectionResetError:
                self.reset_by = self.reset_by or d.sender
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            except OSError:
                data = b""
            self._record(d, data)
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                pass

    def wait(self, timeout: float = 20) -> list[tuple[Direction, bytes, float]]:
        self._done.wait(timeout)
        with self._lock:
            return list(self.chunks)


def analyse(
    chunks: Iterable[Chunk | tuple[Direction, bytes, float]],
    *,
    options: AnalysisOptions | None = None,
    eof: Sequence[Direction] = (Direction.C2S, Direction.S2C),
    how: str = "fin",
    by: str | None = None,
    wall_start: float | None = None,
) -> Tracker:
    """Run chunks through the wire core and a tracker, then EOF ``eof`` in order and end with ``how``."""
    conn = TLSConnection()
    tracker = Tracker(options or AnalysisOptions(), wall_start=time.time() if wall_start is None else wall_start,
                      started=0.0)
    seq = 0
    t = 0.0
    for item in chunks:
        d, data = item[0], item[1]
        t = item[2] if len(item) > 2 else t + 0.01  # type: ignore[misc]
        if not data:
            if d in eof:
                continue
            eof = (*eof, d)  # a recorded FIN: keep it where it happened
        for event in conn.feed(d, data, at=t):
            tracker.on_event(seq, event)
            seq += 1
    for d in eof:
        t += 0.01
        for event in conn.feed(d, b"", at=t):
            tracker.on_event(seq, event)
            seq += 1
    tracker.on_end(how=how, by=by, reason=None, at=t + 0.01)
    return tracker


def analyse_relay(chunks: list[tuple[Direction, bytes, float]], *, options: AnalysisOptions | None = None,
                  reset_by: str | None = None) -> Tracker:
    """Like ``analyse`` for a relay recording: FINs are fed where they were seen."""
    conn = TLSConnection()
    start = chunks[0][2] if chunks else 0.0
    tracker = Tracker(options or AnalysisOptions(), wall_start=time.time(), started=start)
    seq = 0
    t = start
    for d, data, at in chunks:
        t = at
        for event in conn.feed(d, data, at=at):
            tracker.on_event(seq, event)
            seq += 1
    how = "reset" if reset_by else "fin"
    tracker.on_end(how=how, by=reset_by, reason=None, at=t + 0.001)
    return tracker


def analyse_capture(path: Path, *, options: AnalysisOptions | None = None) -> list[Tracker]:
    """Every TCP connection of a capture through the capture reader, the wire core and a tracker."""
    from tlsproxy.capture.packets import PacketDecoder
    from tlsproxy.capture.pcap import iter_packets
    from tlsproxy.capture.tcp import ConnectionFinished, ConnectionOpened, StreamClosed, StreamData, StreamGap, \
        TcpReassembler

    decoder = PacketDecoder()
    reasm = TcpReassembler(idle_timeout=None)
    conns: dict[object, list] = {}
    done: list[Tracker] = []

    def handle(e: object) -> None:
        if isinstance(e, ConnectionOpened):
            conns[e.conn] = [TLSConnection(), Tracker(options or AnalysisOptions(), wall_start=e.at, started=e.at),
                             0, None]
            return
        state = conns.get(e.conn)  # type: ignore[attr-defined]
        if state is None:
            return
        wire, tracker = state[0], state[1]
        events = []
        if isinstance(e, StreamData):
            events = wire.feed(e.direction, e.data, at=e.at)
        elif isinstance(e, StreamGap):
            events = wire.gap(e.direction, e.length, at=e.at)
        elif isinstance(e, StreamClosed):
            if e.how == "fin":
                events = wire.feed(e.direction, b"", at=e.at)
            elif state[3] is None:
                state[3] = ("reset", getattr(e, "by", None)) if e.how == "rst" else ("capture_end", None)
        elif isinstance(e, ConnectionFinished):
            how, by = state[3] or ("complete", None)
            tracker.on_end(how=how, by=by, reason=None, at=e.at)
            done.append(tracker)
            del conns[e.conn]
            return
        for event in events:
            tracker.on_event(state[2], event)
            state[2] += 1

    for packet in iter_packets(path):
        seg = decoder.decode(packet)
        if seg is None:
            continue
        for e in reasm.feed(seg):
            handle(e)
    for e in reasm.finish():
        handle(e)
    return done
