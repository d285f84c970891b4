"""What front ends say about connections and what sinks receive: the records of a run.

Kept apart from :mod:`tlsproxy.pipeline` so that front ends and sinks can use them without
importing the analyzer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tlsproxy.analysis.model import ConnectionSummary, Diagnosis, Finding
from tlsproxy.fastbuild import frozen_builder
from tlsproxy.wire.events import Event

_F = dict(frozen=True, slots=True, kw_only=True)


@dataclass(**_F)
class ConnectionInfo:
    """Who talked to whom.  ``started`` is on the caller's clock (monotonic for the relay, capture
    time for captures); ``wall_start`` is POSIX time, used for certificate validity checks."""

    id: int
    label: str = ""
    mode: str = ""
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    target: str | None = None
    started: float = 0.0
    wall_start: float = 0.0


@dataclass(**_F)
class ConnectionEnd:
    """How the connection ended: ``how`` is ``fin`` | ``reset`` | ``idle_timeout`` |
    ``upstream_failed`` | ``refused`` | ``shutdown`` | ``error`` | ``capture_end`` (the capture
    stops while it is open) | ``complete`` (both sides closed in a capture); ``by`` the side that
    started it (``client`` | ``server`` | ``proxy`` | ``None``)."""

    how: str
    by: str | None
    at: float
    reason: str | None = None
    bytes_c2s: int = 0
    bytes_s2c: int = 0


@dataclass(**_F)
class ConnectionReport:
    info: ConnectionInfo
    end: ConnectionEnd
    summary: ConnectionSummary
    diagnosis: Diagnosis
    findings: tuple[Finding, ...]


# Positional builders for Pipeline.close, once per connection (see tlsproxy.fastbuild).
build_end = frozen_builder(ConnectionEnd)  # (how, by, at, reason, bytes_c2s, bytes_s2c)
build_report = frozen_builder(ConnectionReport)  # (info, end, summary, diagnosis, findings)


@dataclass(**_F)
class RunInfo:
    """One run of the tool: a proxy session, an analysed capture, a replay."""

    tool: str = "tlsproxy"
    version: str = ""
    command: str = ""  # run | analyze | replay | demo
    source: str = ""  # capture or session file, for analyze/replay
    listeners: tuple[dict, ...] = ()
    started: float = 0.0  # POSIX time
    keylog: str | None = None


class Sink(Protocol):
    """Consumes what the core produced; never feeds anything back."""

    def run_started(self, run: RunInfo) -> None: ...
    def connection_opened(self, info: ConnectionInfo) -> None: ...
    def event(self, conn_id: int, seq: int, event: Event, findings: Sequence[Finding]) -> None: ...
    def connection_closed(self, report: ConnectionReport) -> None: ...
    def run_finished(self, run: RunInfo, ended: float) -> None: ...
