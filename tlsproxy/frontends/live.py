"""The live relay as a front end: a ``RelayObserver`` that hands each connection's bytes to a
:class:`Pipeline`.

The relay reports after forwarding, on its event loop, so everything here must be quick; the
pipeline contains its own failures.  Times are the relay's monotonic clock; the wall clock at
accept anchors certificate checks.  With a key log file, new secrets are picked up as clients
append them (the file is looked at before each of a connection's first chunks, before a direction
ends, before a connection closes, and on the timer) and the records that waited for them are
decrypted then.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tlsproxy.pipeline import ConnectionEnd, ConnectionInfo, Pipeline
from tlsproxy.relay.config import format_hostport
from tlsproxy.relay.observer import CloseSummary, ConnectionMeta
from tlsproxy.wire.events import Direction

if TYPE_CHECKING:
    from tlsproxy.frontends.keylogfile import KeyLogFile

__all__ = ["PipelineObserver"]

#: How often (seconds, relay clock) open connections are asked whether their handshake stalled.
POLL_INTERVAL = 1.0
#: How often, at most, the key log file is looked at while bulk data flows (one ``stat``).
KEYLOG_POLL_INTERVAL = 0.01
#: A connection's first chunks carry its handshake: before each of them the key log is looked at
#: whatever the interval.  A client writes its secrets just before it sends the records they
#: protect, so records that wait for secrets are then decrypted in the order they came (the
#: server's flight before the client's answer).  The file is also looked at before a direction
#: ends and before a connection closes, so a short failed handshake is decrypted before its
#: diagnosis, not after.
KEYLOG_EAGER_CHUNKS = 32


class PipelineObserver:
    """Implements ``tlsproxy.relay.RelayObserver`` on top of a pipeline."""

    def __init__(self, pipeline: Pipeline, *, keylog: KeyLogFile | None = None) -> None:
        self.pipeline = pipeline
        self.keylog = keylog
        self._open: set[int] = set()
        self._last_poll = 0.0
        self._last_keylog_poll = 0.0
        self._chunks: dict[int, int] = {}  # data chunks seen per open connection, up to KEYLOG_EAGER_CHUNKS

    def connection_opened(self, meta: ConnectionMeta) -> None:
        target = format_hostport(*meta.target) if meta.target is not None else None
        self.pipeline.open(ConnectionInfo(id=meta.id, label=meta.listener, mode=meta.mode, client=meta.client,
                                          target=target, started=meta.started_monotonic, wall_start=meta.started))
        self._open.add(meta.id)

    def upstream_connected(self, conn_id: int, upstream: tuple[str, int], at: float) -> None:
        set_server = getattr(self.pipeline, "set_server", None)
        if callable(set_server):
            set_server(conn_id, upstream)

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        if self.keylog is not None:
            seen = self._chunks.get(conn_id, 0)
            if seen < KEYLOG_EAGER_CHUNKS:
                self._chunks[conn_id] = seen + 1
                self._poll_keylog(at)
            elif at - self._last_keylog_poll >= KEYLOG_POLL_INTERVAL:
                self._poll_keylog(at)
        self.tick(at)
        self.pipeline.data(conn_id, direction, data, at)

    def tick(self, at: float) -> None:
        """Periodic work: new key log lines (at most every ``KEYLOG_POLL_INTERVAL``) and, at most
        once per ``POLL_INTERVAL``, stalled handshakes."""
        if self.keylog is not None and at - self._last_keylog_poll >= KEYLOG_POLL_INTERVAL:
            self._poll_keylog(at)
        if at - self._last_poll >= POLL_INTERVAL:
            self._last_poll = at
            self.pipeline.stalls(at)

    def _poll_keylog(self, at: float) -> None:
        """Read what clients appended to the key log; when it learned secrets, every connection
        decrypts the records it held (one integer comparison for those that held none)."""
        assert self.keylog is not None
        self._last_keylog_poll = at
        if self.keylog.poll():
            self.pipeline.poll_keys(at)

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        if self.keylog is not None:
            self._poll_keylog(at)
        self.pipeline.eof(conn_id, direction, at)

    def connection_closed(self, conn_id: int, summary: CloseSummary) -> None:
        self._open.discard(conn_id)
        self._chunks.pop(conn_id, None)
        if self.keylog is not None:  # records still held get their last chance before the diagnosis
            self._poll_keylog(summary.ended_monotonic)
        self.pipeline.close(conn_id, ConnectionEnd(how=summary.how, by=summary.by, at=summary.ended_monotonic,
                                                   reason=summary.reason, bytes_c2s=summary.bytes_c2s,
                                                   bytes_s2c=summary.bytes_s2c))

    def flush(self) -> None:
        """Called by ``run_relay`` at shutdown: close what the relay did not report closed."""
        now = time.monotonic()
        for conn_id in list(self._open):
            self.pipeline.close(conn_id, ConnectionEnd(how="shutdown", by="proxy", at=now))
        self._open.clear()
