"""What the relay tells the rest of tlsproxy about each connection.

The relay forwards first and reports after: every ``data`` call comes once the bytes were handed to
the other side's socket.  Observers must not block (the relay calls them on its event loop); one
that raises is switched off for that connection only, and forwarding carries on regardless.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol, TextIO

from tlsproxy.netaddr import format_addr
from tlsproxy.wire.events import Direction

#: How a connection ended (``CloseSummary.how``).
CLOSE_HOWS = ("fin", "reset", "idle_timeout", "upstream_failed", "refused", "shutdown", "error")
#: Who ended it (``CloseSummary.by``).
CLOSE_BYS = ("client", "server", "proxy")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionMeta:
    """A connection as accepted: ``target`` is the destination as requested (before resolution);
    it is ``None`` when the connection ended before a destination was known."""

    id: int
    listener: str
    mode: str
    client: tuple[str, int]
    target: tuple[str, int] | None
    started: float  # time.time() at accept
    started_monotonic: float  # time.monotonic() at accept


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseSummary:
    """How a connection ended.  Byte counts are what was forwarded each way (tunnel bytes only:
    an HTTP CONNECT request or SOCKS negotiation is not counted)."""

    how: str  # one of CLOSE_HOWS
    by: str  # one of CLOSE_BYS
    reason: str
    bytes_c2s: int
    bytes_s2c: int
    started: float  # wall clock
    ended: float  # wall clock
    duration: float  # monotonic seconds from accept to close
    ended_monotonic: float


class RelayObserver(Protocol):
    def connection_opened(self, meta: ConnectionMeta) -> None: ...

    def upstream_connected(self, conn_id: int, upstream: tuple[str, int], at: float) -> None: ...

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None: ...

    def eof(self, conn_id: int, direction: Direction, at: float) -> None: ...

    def connection_closed(self, conn_id: int, summary: CloseSummary) -> None: ...


class NullObserver:
    """Observes nothing (benchmarks, tests of pure forwarding)."""

    def connection_opened(self, meta: ConnectionMeta) -> None:
        pass

    def upstream_connected(self, conn_id: int, upstream: tuple[str, int], at: float) -> None:
        pass

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        pass

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        pass

    def connection_closed(self, conn_id: int, summary: CloseSummary) -> None:
        pass


def _addr(a: tuple[str, int] | None) -> str:
    return format_addr(a, "-")


class PrintObserver:
    """One plain line per event, until the console sink exists.  Data events are printed as a
    byte count per chunk; ``quiet_data`` drops them."""

    def __init__(self, out: TextIO | None = None, *, quiet_data: bool = False) -> None:
        self._out = out if out is not None else sys.stdout
        self._quiet_data = quiet_data

    def _line(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def connection_opened(self, meta: ConnectionMeta) -> None:
        self._line(
            f"#{meta.id} open {meta.listener} mode={meta.mode} client={_addr(meta.client)} "
            f"target={_addr(meta.target)}"
        )

    def upstream_connected(self, conn_id: int, upstream: tuple[str, int], at: float) -> None:
        self._line(f"#{conn_id} upstream {_addr(upstream)}")

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        if not self._quiet_data:
            self._line(f"#{conn_id} {direction.value} {len(data)} bytes")

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        self._line(f"#{conn_id} {direction.value} eof ({direction.sender} sent FIN)")

    def connection_closed(self, conn_id: int, summary: CloseSummary) -> None:
        self._line(
            f"#{conn_id} closed how={summary.how} by={summary.by} c2s={summary.bytes_c2s} "
            f"s2c={summary.bytes_s2c} duration={summary.duration:.3f}s reason={summary.reason}"
        )
