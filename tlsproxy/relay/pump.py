"""The byte pump: one client connection, one upstream connection, bytes both ways, unchanged.

Built on asyncio Protocols and transports rather than streams: ``data_received`` hands each chunk
straight to the other transport's ``write``, and flow control is the transports' own
``pause_writing``/``resume_writing`` calls turned into ``pause_reading``/``resume_reading`` on the
other side.  Measured on loopback this style runs at haproxy speed while streams are three times
slower (docs/relay.md).  The pump forwards first and tells the observer after, so parsing is never
on the forwarding path, and an observer that raises is switched off for this connection only.

A connection goes through these states::

    preamble ──> connecting ──> relaying ──> closing ──> done
        └──────────┴──> rejecting ─────────────┘

``preamble`` reads what the mode needs (nothing for fixed and transparent), ``rejecting`` has sent
the mode's error reply and waits briefly for the client to close so the reply is not lost to a
reset.  What ended the connection is recorded once, by the first cause.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING

from tlsproxy.relay import modes as _modes
from tlsproxy.relay.config import FORWARD_MODES, ListenerSpec, destination_allowed, format_hostport
from tlsproxy.relay.modes import Connect, NeedMore, Reject
from tlsproxy.relay.observer import CloseSummary, ConnectionMeta, RelayObserver
from tlsproxy.relay.origdst import OriginalDstError, original_dst
from tlsproxy.relay.upstream import UpstreamError, open_upstream
from tlsproxy.wire.events import Direction

if TYPE_CHECKING:
    from tlsproxy.relay.server import RelayServer

log = logging.getLogger("tlsproxy.relay")

PREAMBLE, CONNECTING, RELAYING, REJECTING, CLOSING, DONE = (
    "preamble", "connecting", "relaying", "rejecting", "closing", "done",
)
#: After an error reply the client gets this long to read it and close before we close anyway.
REJECT_LINGER = 2.0
#: A closing connection whose write buffers make no progress for this long is aborted.
CLOSE_STALL = 5.0

_LINGER_ZERO = struct.pack("ii", 1, 0)
_ids = itertools.count(1)
_C2S, _S2C = Direction.C2S, Direction.S2C


def _reset_on_close(transport: asyncio.BaseTransport) -> None:
    """SO_LINGER {on, 0}: closing the socket sends RST instead of FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass


def _hostport(addr: object) -> tuple[str, int]:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    return (str(addr), 0)


def _same_endpoint(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Address equality that sees through IPv4-mapped IPv6 (a dual-stack listener reports
    ``::ffff:127.0.0.1`` where SO_ORIGINAL_DST says ``127.0.0.1``)."""
    if a[1] != b[1]:
        return False
    try:
        x, y = ipaddress.ip_address(a[0].split("%")[0]), ipaddress.ip_address(b[0].split("%")[0])
    except ValueError:
        return a[0] == b[0]
    x = x.ipv4_mapped or x if isinstance(x, ipaddress.IPv6Address) else x
    y = y.ipv4_mapped or y if isinstance(y, ipaddress.IPv6Address) else y
    return x == y


class _Side(asyncio.Protocol):
    """One socket of the pair.  ``direction`` is the direction of the bytes it *receives*."""

    __slots__ = ("conn", "direction", "transport", "out", "peer", "nbytes", "eof", "lost", "who", "write_paused")

    def __init__(self, conn: RelayConnection, direction: Direction) -> None:
        self.conn = conn
        self.direction = direction
        self.who = direction.sender  # "client" or "server"
        self.transport: asyncio.Transport | None = None
        self.out: asyncio.Transport | None = None  # the other side's transport, once relaying
        self.peer: _Side | None = None
        self.nbytes = 0
        self.eof = False
        self.lost = False
        self.write_paused = False  # our write buffer is past the high-water mark

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn._side_made(self)

    def data_received(self, data: bytes) -> None:
        out = self.out
        if out is None:
            self.conn._early_data(data)
            return
        out.write(data)
        self.nbytes += len(data)
        conn = self.conn
        conn.activity += 1
        observer = conn.observer
        if observer is not None:
            try:
                observer.data(conn.id, self.direction, data, time.monotonic())
            except Exception as exc:
                conn._observer_failed("data", exc)

    def eof_received(self) -> bool:
        self.conn._eof(self)
        return True  # keep our sending half open: half-close is real traffic

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn._lost(self, exc)

    # Our socket's write buffer is past the high-water mark: stop reading the side that fills it.
    # A side that sent EOF is no longer read (asyncio removed its reader); pausing and resuming it
    # would start reading it again and report the EOF twice, so leave it alone.
    def pause_writing(self) -> None:
        self.write_paused = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.eof:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.eof and self.conn.state == RELAYING:
            peer.transport.resume_reading()


class RelayConnection:
    """One proxied connection: the client socket, the upstream socket and what happened."""

    __slots__ = (
        "server", "spec", "mode", "id", "observer", "client", "upstream", "state", "activity",
        "target", "upstream_peer", "pending", "over_limit", "started", "started_monotonic",
        "_observer", "_observer_note", "_opened_reported", "_how", "_by", "_reason", "_connect_task",
        "_state_since", "_seen_activity", "_idle_since", "_close_progress", "_close_progress_since",
        "_first_fin", "__weakref__",
    )

    def __init__(self, server: RelayServer, spec: ListenerSpec, observer: RelayObserver | None, *, over_limit: bool = False) -> None:
        self.server = server
        self.spec = spec
        self.mode = _modes.make_mode(spec.mode, upstream_port=spec.upstream_port)
        self.id = next(_ids)
        self.observer = observer
        self._observer = observer  # kept for the final connection_closed even after a failure
        self._observer_note = ""
        self.client = _Side(self, _C2S)
        self.upstream = _Side(self, _S2C)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.state = PREAMBLE
        self.activity = 0
        self.target: tuple[str, int] | None = None
        self.upstream_peer: tuple[str, int] | None = None
        self.pending: bytearray | None = None
        self.over_limit = over_limit
        self.started = time.time()
        self.started_monotonic = time.monotonic()
        self._opened_reported = False
        self._how: str | None = None
        self._by = "proxy"
        self._reason = ""
        self._connect_task: asyncio.Task[None] | None = None
        now = server.loop.time()
        self._state_since = now
        self._seen_activity = 0
        self._idle_since = now
        self._close_progress = -1
        self._close_progress_since = now
        self._first_fin: str | None = None

    # -- figures -----------------------------------------------------------------------------------

    @property
    def client_addr(self) -> tuple[str, int]:
        t = self.client.transport
        return _hostport(t.get_extra_info("peername")) if t is not None else ("", 0)

    @property
    def bytes_c2s(self) -> int:
        return self.client.nbytes

    @property
    def bytes_s2c(self) -> int:
        return self.upstream.nbytes

    @property
    def buffered_bytes(self) -> int:
        """Bytes this connection holds in user space right now: both write buffers plus client
        data held while the upstream connects.  Bounded by ``MAX_BUFFERED_PER_CONNECTION``."""
        n = len(self.pending) if self.pending else 0
        for side in (self.client, self.upstream):
            t = side.transport
            if t is not None and not side.lost:
                n += t.get_write_buffer_size()
        return n

    # -- observer ----------------------------------------------------------------------------------

    def _observer_failed(self, what: str, exc: BaseException) -> None:
        self.observer = None
        self._observer_note = f"observer failed in {what}: {type(exc).__name__}: {exc}"
        log.error("connection #%d: %s; observation of this connection stops, forwarding goes on", self.id, self._observer_note)

    def _report_opened(self) -> None:
        if self._opened_reported:
            return
        self._opened_reported = True
        observer = self.observer
        if observer is None:
            return
        meta = ConnectionMeta(
            id=self.id,
            listener=self.spec.name,
            mode=self.spec.mode,
            client=self.client_addr,
            target=self.target,
            started=self.started,
            started_monotonic=self.started_monotonic,
        )
        try:
            observer.connection_opened(meta)
        except Exception as exc:
            self._observer_failed("connection_opened", exc)

    # -- callbacks from the sides ------------------------------------------------------------------

    def _side_made(self, side: _Side) -> None:
        t = side.transport
        assert t is not None
        if side is self.upstream:
            self._upstream_made(t)
            return
        t.set_write_buffer_limits(self.server.config.high_water, self.server.config.low_water)
        if self.state != PREAMBLE:  # closed by the server before the transport existed
            t.abort()
            return
        spec = self.spec
        if spec.mode == "fixed":
            assert spec.upstream is not None
            self._target(spec.upstream[0], spec.upstream[1], b"")
        elif spec.mode == "transparent":
            sock = t.get_extra_info("socket")
            local = _hostport(t.get_extra_info("sockname"))
            try:
                dst = original_dst(sock)
            except (OriginalDstError, ValueError) as exc:
                self._reject(Reject(reason=f"no original destination (not a redirected connection?): {exc}", reset=True))
                return
            if _same_endpoint(dst, local):
                self._reject(Reject(
                    reason=f"connection was not redirected: its destination {format_hostport(*dst)} is the proxy itself",
                    reset=True,
                ))
                return
            self._target(dst[0], dst[1], b"")

    def _early_data(self, data: bytes) -> None:
        """Client bytes before the relay is set up."""
        state = self.state
        if state == PREAMBLE:
            self.activity += 1
            step = self.mode.feed(data)
            if isinstance(step, NeedMore):
                if step.reply and self.client.transport is not None:
                    self.client.transport.write(step.reply)
            elif isinstance(step, Connect):
                self._target(step.host, step.port, step.remainder)
            else:
                self._reject(step)
        elif state == CONNECTING and self.pending is not None:
            self.pending += data  # reading is paused while connecting; this is the last read
        # rejecting / closing: the client's bytes are read and dropped so that our close is a FIN

    def _eof(self, side: _Side) -> None:
        if side.eof:
            return
        side.eof = True
        state = self.state
        if state == RELAYING:
            if self._first_fin is None:
                self._first_fin = side.who
            out = side.out
            if out is not None and not side.peer.lost and out.can_write_eof():  # type: ignore[union-attr]
                try:
                    out.write_eof()
                except OSError:
                    pass
            observer = self.observer
            if observer is not None:
                try:
                    observer.eof(self.id, side.direction, time.monotonic())
                except Exception as exc:
                    self._observer_failed("eof", exc)
            if side.peer.eof:  # type: ignore[union-attr]
                first = self._first_fin or side.who
                self._close("fin", first, f"{first} closed first (FIN), then the {'server' if first == 'client' else 'client'}")
        elif state == PREAMBLE:
            self._close("fin", "client", "client closed (FIN) before the destination was known")
        elif state == REJECTING:
            self._close(None, "proxy", "")
        # connecting: reading is paused, so no EOF can arrive; closing: nothing more to do

    def _lost(self, side: _Side, exc: Exception | None) -> None:
        state = self.state
        if state in (CLOSING, DONE):
            self._maybe_finish()
            return
        if exc is None:  # we never close a side without being in CLOSING; be safe anyway
            self._close("fin", side.who, f"{side.who} connection closed")
            return
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            how, reason = "reset", f"{side.who} reset the connection ({exc.strerror or exc})"
        else:
            how, reason = "error", f"{side.who} socket error: {exc}"
        if state == REJECTING:
            self._close(None, side.who, reason)
        else:
            # A reset from one side becomes a reset towards the other, so each peer sees what it
            # would have seen without us.
            self._close(how, side.who, reason, reset=True)

    # -- state changes -----------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        self.state = state
        self._state_since = self.server.loop.time()

    def _record(self, how: str | None, by: str, reason: str) -> None:
        if self._how is None and how is not None:
            self._how, self._by, self._reason = how, by, reason

    def _target(self, host: str, port: int, remainder: bytes) -> None:
        self.target = (host, port)
        self._report_opened()
        if self.over_limit:
            limit = self.server.max_connections
            self._reject(
                self.mode.refuse(_modes.FULL, f"refused: {limit} connections open (--max-connections), --when-full refuse"),
                how="refused",
            )
            return
        if self.spec.mode in FORWARD_MODES and not destination_allowed(self.spec, host, port):
            reason = f"destination {format_hostport(host, port)} is not in the --allow list of {self.spec.name}"
            log.warning("connection #%d from %s: %s", self.id, format_hostport(*self.client_addr), reason)
            self._reject(self.mode.refuse(_modes.NOT_ALLOWED, reason), how="refused")
            return
        self._set_state(CONNECTING)
        self.pending = bytearray(remainder)
        assert self.client.transport is not None
        self.client.transport.pause_reading()  # the kernel holds what comes next until we are connected
        self._connect_task = self.server.loop.create_task(self._connect(host, port))
        self._connect_task.add_done_callback(self._connect_done)

    def _connect_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("connection #%d: connect failed unexpectedly: %r", self.id, exc)
            if self.state == CONNECTING:
                self._reject(Reject(reason=f"internal error while connecting: {exc!r}", reset=True), how="error")
                return
        if self.state == CLOSING:
            self._maybe_finish()

    async def _connect(self, host: str, port: int) -> None:
        loop = self.server.loop
        try:
            sock, peer = await open_upstream(loop, host, port, self.server.config.connect_timeout)
        except UpstreamError as exc:
            if self.state == CONNECTING:
                by = "server" if exc.kind in (_modes.REFUSED, _modes.RESET) else "proxy"
                # A server that accepted and reset at once was reached: the same end as when its
                # reset comes a moment later, after the connect was seen to finish.
                how = "reset" if exc.kind == _modes.RESET else "upstream_failed"
                self._reject(self.mode.failed(exc.kind, exc.reason), how=how, by=by)
            return
        if self.state != CONNECTING:
            sock.close()
            return
        self.upstream_peer = peer
        try:
            await loop.connect_accepted_socket(lambda: self.upstream, sock)
        except OSError as exc:
            sock.close()
            if self.state == CONNECTING:
                self._reject(self.mode.failed(_modes.ERROR, f"upstream socket: {exc}"), how="upstream_failed")

    def _upstream_made(self, t: asyncio.Transport) -> None:
        if self.state != CONNECTING:
            t.abort()
            return
        t.set_write_buffer_limits(self.server.config.high_water, self.server.config.low_water)
        client_t = self.client.transport
        assert client_t is not None
        self._set_state(RELAYING)
        self.client.out = t
        self.upstream.out = client_t
        now = time.monotonic()
        observer = self.observer
        if observer is not None:
            try:
                observer.upstream_connected(self.id, self.upstream_peer or _hostport(t.get_extra_info("peername")), now)
            except Exception as exc:
                self._observer_failed("upstream_connected", exc)
        reply = self.mode.connected(_hostport(t.get_extra_info("sockname")))
        if reply:
            client_t.write(reply)
        pending, self.pending = self.pending, None
        if pending:
            data = bytes(pending)
            t.write(data)
            self.client.nbytes += len(data)
            observer = self.observer
            if observer is not None:
                try:
                    observer.data(self.id, _C2S, data, time.monotonic())
                except Exception as exc:
                    self._observer_failed("data", exc)
        # Writing what the client sent while we connected may already have filled the upstream's
        # buffer; asyncio reports that only once, so resuming now would lose the backpressure.
        # ``resume_writing`` resumes the client when the upstream drains.
        if not self.upstream.write_paused:
            client_t.resume_reading()

    def _reject(self, step: Reject, *, how: str = "refused", by: str = "proxy") -> None:
        self._record(how, by, step.reason)
        self._report_opened()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        self.pending = None
        t = self.client.transport
        if t is None or self.client.lost:
            self._close(None, by, step.reason)
            return
        if step.reset:
            self._close(None, by, step.reason, reset=True)
            return
        self._set_state(REJECTING)
        if step.reply:
            t.write(step.reply)
        if t.can_write_eof():
            t.write_eof()
        t.resume_reading()  # read and drop until the client closes, so our close is not a reset

    def _close(self, how: str | None, by: str, reason: str, *, reset: bool = False) -> None:
        """Close both sockets (``reset``: abortively), recording why if nothing was recorded yet."""
        self._record(how, by, reason)
        if self.state in (CLOSING, DONE):
            if reset:
                self.abort()
            return
        self._set_state(CLOSING)
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        for side in (self.client, self.upstream):
            t = side.transport
            if t is not None and not side.lost:
                if reset:
                    _reset_on_close(t)
                    t.abort()
                else:
                    t.close()
        self._maybe_finish()

    def abort(self) -> None:
        """Drop both sockets now (with RST), whatever they still had to send."""
        if self.state != CLOSING:
            self._set_state(CLOSING)
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        for side in (self.client, self.upstream):
            t = side.transport
            if t is not None and not side.lost:
                _reset_on_close(t)
                t.abort()
        self._maybe_finish()

    def close(self, how: str, reason: str) -> None:
        """Close from the proxy's side (idle timeout, shutdown)."""
        self._close(how, "proxy", reason)

    def _maybe_finish(self) -> None:
        if self.state == DONE:
            return
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                return
        if self._connect_task is not None and not self._connect_task.done():
            return  # the task will see CLOSING and close its socket; finish below when it does
        self._finish()

    def _finish(self) -> None:
        self._set_state(DONE)
        self._report_opened()
        ended_mono = time.monotonic()
        reason = self._reason or "closed"
        if self._observer_note:
            reason = f"{reason}; {self._observer_note}"
        summary = CloseSummary(
            how=self._how or "error",
            by=self._by,
            reason=reason,
            bytes_c2s=self.client.nbytes,
            bytes_s2c=self.upstream.nbytes,
            started=self.started,
            ended=time.time(),
            duration=ended_mono - self.started_monotonic,
            ended_monotonic=ended_mono,
        )
        observer = self._observer
        if observer is not None:
            try:
                observer.connection_closed(self.id, summary)
            except Exception as exc:
                print(f"tlsproxy: connection #{self.id}: observer failed in connection_closed: {exc!r}", file=sys.stderr)
        self.server._connection_done(self)

    # -- timers (driven by the server's sweep) -------------------------------------------------------

    def sweep(self, now: float, idle_timeout: float | None) -> None:
        state = self.state
        if state == RELAYING or state == PREAMBLE:
            if self.activity != self._seen_activity:
                self._seen_activity = self.activity
                self._idle_since = now
            elif idle_timeout is not None and now - self._idle_since >= idle_timeout:
                self._close("idle_timeout", "proxy", f"no data either way for {idle_timeout:g} s (--idle-timeout)")
        elif state == REJECTING:
            if now - self._state_since >= REJECT_LINGER:
                self._close(None, "proxy", "")
        elif state == CLOSING:
            progress = self.buffered_bytes
            if progress != self._close_progress:
                self._close_progress = progress
                self._close_progress_since = now
            elif now - self._close_progress_since >= CLOSE_STALL:
                self.abort()
