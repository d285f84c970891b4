"""The live relay as a front end: a ``RelayObserver`` that hands each connection's bytes to a
:class:`Pipeline`.

The relay reports after forwarding, on its event loop, so everything here must be quick; the
pipeline contains its own failures.  Times are the relay's monotonic clock; the wall clock at
accept anchors certificate checks.  With a key log file, new secrets are picked up as clients
append them and held records are decrypted then.
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

#: How often (seconds, relay clock) open connections are asked whether their handshake stalled,
#: and the key log file is polled.
POLL_INTERVAL = 1.0


class PipelineObserver:
    """Implements ``tlsproxy.relay.RelayObserver`` on top of a pipeline."""

    def __init__(self, pipeline: Pipeline, *, keylog: KeyLogFile | None = None) -> None:
        self.pipeline = pipeline
        self.keylog = keylog
        self._open: set[int] = set()
        self._last_poll = 0.0

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
        self.tick(at)
        self.pipeline.data(conn_id, direction, data, at)

    def tick(self, at: float) -> None:
        """Periodic work, at most once per ``POLL_INTERVAL``: new key log lines, stalled handshakes."""
        if at - self._last_poll >= POLL_INTERVAL:
            self._last_poll = at
            if self.keylog is not None and self.keylog.poll():
                self.pipeline.poll_keys(at)
            self.pipeline.stalls(at)

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        self.pipeline.eof(conn_id, direction, at)

    def connection_closed(self, conn_id: int, summary: CloseSummary) -> None:
        self._open.discard(conn_id)
        self.pipeline.close(conn_id, ConnectionEnd(how=summary.how, by=summary.by, at=summary.ended_monotonic,
                                                   reason=summary.reason, bytes_c2s=summary.bytes_c2s,
                                                   bytes_s2c=summary.bytes_s2c))

    def flush(self) -> None:
        """Called by ``run_relay`` at shutdown: close what the relay did not report closed."""
        now = time.monotonic()
        for conn_id in list(self._open):
            self.pipeline.close(conn_id, ConnectionEnd(how="shutdown", by="proxy", at=now))
        self._open.clear()
