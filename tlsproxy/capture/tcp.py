"""TCP reassembly: captured segments in, per-connection, per-direction ordered byte streams out.

``TcpReassembler.feed(segment)`` returns ``StreamEvent``s, ``finish()`` flushes what is left at the
end of the capture.  Policy, in short:

* The client is the side that sent the SYN without ACK (or, if only the SYN-ACK was captured, the
  other side).  Without a handshake in the capture the client is *guessed* at the first payload:
  a TLS/SSLv2 ClientHello marks its sender as client, a TLS ServerHello marks its sender as server,
  else the higher (ephemeral) port is the client.  ``ConnectionOpened.basis`` says which rule
  decided, ``syn_seen`` whether it was the handshake.
* Each byte is delivered once and the first copy wins; a retransmission whose bytes differ from
  what was delivered (as far as the recent window kept for that check reaches) or from what is
  buffered gives a ``StreamConflict``.
* Segments ahead of the next expected byte wait in a bounded per-direction buffer; a hole that is
  never filled becomes a ``StreamGap`` (when the buffer overflows, when the direction closes, or at
  ``finish()``) and delivery continues after it.
* Sequence numbers are unwrapped to unbounded integers, so 32-bit wrap-around is invisible.
* SYN and FIN each take one sequence number.  A direction closes on FIN once every byte before it
  has been delivered (or declared missing), at the end of the capture, or on RST: the resetting
  side's direction at once, the other one after a short grace period for bytes still in flight.
* A SYN with a new initial sequence number on a known 4-tuple starts a new connection (port
  reuse); ``ConnKey.index`` tells them apart.  Finished connections are forgotten; only a bounded
  table of recently closed 4-tuples is kept so that their last ACKs do not open phantom
  connections.
* Keep-alive probes (sequence number one below the next expected, 0 or 1 byte of garbage) are
  ignored; zero-window probes need no special case (their byte is the next byte, sent again later).

The in-order case (a segment starting exactly at the next expected byte while nothing is buffered)
is handled before any of the above machinery is touched.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from heapq import heappop, heappush

from tlsproxy.capture.packets import ACK, FIN, RST, SYN, SegmentFields, SegmentRecord, TcpSegment, format_endpoint
from tlsproxy.fastbuild import frozen_builder
from tlsproxy.wire.events import Direction

__all__ = [
    "ConnKey", "StreamEvent", "ConnectionOpened", "StreamData", "StreamGap", "StreamConflict",
    "StreamClosed", "ConnectionFinished", "TcpReassembler", "ReassemblyStats",
    "looks_like_client_hello", "MAX_OUT_OF_ORDER", "RECENT_WINDOW",
]

_INF = float("inf")
_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_SYN_FIN_RST = SYN | FIN | RST  # any of these takes the general path

MAX_OUT_OF_ORDER = 4 << 20
"""Bytes buffered ahead of a hole, per direction (4 MiB).  Larger than any real TCP window a
capture point sees reordered, small enough that a capture full of losses cannot exhaust memory.
When exceeded, the hole is declared a gap and delivery continues after it."""

MAX_AHEAD = 1 << 30
"""A segment starting more than 1 GiB (the largest scaled TCP window) past the next expected byte
cannot belong to this stream position: it is dropped instead of opening an absurd gap."""

RECENT_WINDOW = 16 << 10
"""Delivered bytes kept per direction (16 KiB, at most twice that between trims) so that a
retransmission can be compared with the first copy.  Retransmissions further back are counted but
not compared; keeping more would cost memory per open connection."""

RESET_GRACE = 5.0
"""Seconds (capture time) a direction stays open after the *other* side sent a RST, for the bytes
that were already in flight: a capture taken near the resetting host sees them after the RST (and
they can matter: a server's Heartbleed leak often arrives after the client gave up).  Zeek waits
the same 5 s (``tcp_reset_delay``) before forgetting a reset connection."""

TOMBSTONES = 65_536
"""Recently finished 4-tuples remembered (oldest forgotten first), so that trailing ACKs and
retransmissions after a close are recognised rather than opening a new, headless connection."""

TOMBSTONE_SECONDS = 240.0
"""How long (capture time) a finished 4-tuple absorbs stray segments: 2 x the classic 2-minute MSL,
TCP's own TIME-WAIT bound."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnKey:
    """Identifies one TCP connection.  ``index`` counts connections in order of first appearance
    (a reused 4-tuple gets a new index)."""

    client: tuple[str, int]
    server: tuple[str, int]
    index: int

    def __hash__(self) -> int:
        # The index alone (equal keys have equal indexes): the generated hash would hash both
        # endpoint tuples again on every set or dict lookup.
        return self.index

    def __str__(self) -> str:
        return f"{format_endpoint(self.client)} -> {format_endpoint(self.server)} #{self.index}"


_EV = dict(frozen=True, slots=True, kw_only=True)


@dataclass(**_EV)
class StreamEvent:
    conn: ConnKey
    at: float


@dataclass(**_EV)
class ConnectionOpened(StreamEvent):
    """First event of a connection.  ``basis`` is how the client was chosen: ``"syn"``,
    ``"syn-ack"`` (both seen on the wire) or the heuristics ``"client_hello"``, ``"server_hello"``,
    ``"port"`` (higher port is the client).  ``at`` is the time of its first segment."""

    client: tuple[str, int]
    server: tuple[str, int]
    syn_seen: bool
    basis: str


@dataclass(**_EV)
class StreamData(StreamEvent):
    """In-order bytes of one direction; ``offset`` is the stream offset of ``data[0]`` (missing
    bytes count, so offsets match the sender's stream)."""

    direction: Direction
    data: bytes
    offset: int


@dataclass(**_EV)
class StreamGap(StreamEvent):
    """``length`` bytes at ``offset`` were never captured; delivery continues after them."""

    direction: Direction
    length: int
    offset: int


@dataclass(**_EV)
class StreamConflict(StreamEvent):
    """A later copy of ``length`` bytes at ``offset`` differs from the copy already taken (which
    wins).  Normal TCP never does this: it points at a broken middlebox or an evasion attempt."""

    direction: Direction
    length: int
    offset: int


@dataclass(**_EV)
class StreamClosed(StreamEvent):
    """The direction ended: ``how`` is ``"fin"``, ``"rst"`` (either side reset), ``"end"`` (end of
    capture, or the 4-tuple was reused) or ``"idle"`` (no segment for ``idle_timeout``).
    ``offset`` is the stream's final length.  ``by`` is who ended it: ``"client"`` or
    ``"server"`` (for ``"fin"`` the direction's sender, for ``"rst"`` the side that sent the reset),
    ``None`` when nobody did (end of capture, idle)."""

    direction: Direction
    how: str
    offset: int
    by: str | None = None


@dataclass(**_EV)
class ConnectionFinished(StreamEvent):
    """Both directions are closed; the connection's state has been dropped."""


# Positional builders (fields in declaration order: conn, at, then the class's own): every event
# of every connection is built by one of these.
_stream_data = frozen_builder(StreamData)  # (conn, at, direction, data, offset): the hot path
_make_key = frozen_builder(ConnKey)  # (client, server, index)
_make_opened = frozen_builder(ConnectionOpened)  # (conn, at, client, server, syn_seen, basis)
_make_gap = frozen_builder(StreamGap)  # (conn, at, direction, length, offset)
_make_conflict = frozen_builder(StreamConflict)  # (conn, at, direction, length, offset)
_make_closed = frozen_builder(StreamClosed)  # (conn, at, direction, how, offset, by)
_make_finished = frozen_builder(ConnectionFinished)  # (conn, at)


def _by_reset_order(entry: tuple[float, int, int]) -> int:
    return entry[1]


def looks_like_client_hello(payload: bytes) -> bool:
    """True for the start of a TLS ClientHello record or an SSL 2.0 CLIENT-HELLO."""
    n = len(payload)
    if n >= 6 and payload[0] == 0x16 and payload[1] == 3 and payload[2] <= 4 and payload[5] == 1:
        return True
    # SSL 2.0 two-byte header (high bit set), message type 1, version 0x0002 or 0x03xx.
    return n >= 5 and payload[0] & 0x80 != 0 and payload[2] == 1 and payload[3] in (0, 3)


def _looks_like_server_hello(payload: bytes) -> bool:
    return (len(payload) >= 6 and payload[0] == 0x16 and payload[1] == 3 and payload[2] <= 4
            and payload[5] == 2)


@dataclass(slots=True)
class ReassemblyStats:
    """Counters for a capture summary (retransmissions, probes, segments that fit nowhere)."""

    segments: int = 0
    connections: int = 0
    retransmitted_bytes: int = 0
    conflicts: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    keepalives: int = 0
    late_segments: int = 0
    out_of_window: int = 0
    idle_closed: int = 0


class _Half:
    """One sender's side of a connection."""

    __slots__ = ("endpoint", "direction", "isn", "next", "base", "fast", "starts", "ooo",
                 "ooo_bytes", "fin_at", "closed", "tail")

    def __init__(self, endpoint: tuple[str, int]) -> None:
        self.endpoint = endpoint
        self.direction: Direction | None = None
        self.isn: int | None = None  # from the SYN, if seen
        self.next: int | None = None  # unwrapped sequence number of the next expected byte
        self.base = 0  # unwrapped sequence number of stream offset 0
        # True when a segment at ``next`` can be delivered without looking at anything else.
        self.fast = False
        self.starts: list[int] = []  # sorted starts of buffered out-of-order pieces
        self.ooo: dict[int, bytes] = {}  # start -> bytes; pieces never overlap
        self.ooo_bytes = 0
        self.fin_at: int | None = None
        self.closed = False
        self.tail = bytearray()  # the last bytes delivered, ending at ``next``

    def update_fast(self) -> None:
        self.fast = (self.next is not None and not self.starts and self.fin_at is None
                     and not self.closed and self.direction is not None)


class _Conn:
    __slots__ = ("index", "a", "b", "key", "first_at", "last_at", "opened", "reset_by")

    def __init__(self, index: int, a: _Half, b: _Half, at: float) -> None:
        self.index = index
        self.a = a  # the sender of the first segment seen
        self.b = b
        self.key: ConnKey | None = None  # set once the client is known
        self.first_at = at
        self.last_at = at
        self.opened = False
        self.reset_by: _Half | None = None  # the side that sent a RST, if one did


class TcpReassembler:
    """Reassembles interleaved TCP connections.  Sans-IO: it only sees ``TcpSegment``s.

    ``idle_timeout`` (capture seconds, ``None`` for never) closes connections that stopped
    sending without FIN or RST, so that state does not accumulate over a long capture.
    """

    def __init__(self, *, idle_timeout: float | None = 900.0) -> None:
        # (sender, receiver) -> (connection, sender's half); both orientations of every 4-tuple.
        self._table: dict[tuple[tuple[str, int], tuple[str, int]], tuple[_Conn, _Half]] = {}
        self._conns: dict[int, _Conn] = {}  # open connections by index, in order of creation
        self._tombstones: OrderedDict[tuple[tuple[str, int], tuple[str, int]], float] = OrderedDict()
        self._next_index = 0
        self._idle_timeout = idle_timeout
        self._next_sweep = 0.0 if idle_timeout is not None else _INF
        # Connections reset by one side, waiting for the other side's bytes still in flight:
        # index -> deadline, in the order the resets happened.
        self._resets: dict[int, float] = {}
        # The same deadlines as a heap of (deadline, order of the reset, index), so that finding
        # the earliest (and the due ones) does not walk every pending reset.  Entries of
        # connections that finished meanwhile (no longer in ``_resets``) are dropped lazily.
        self._reset_heap: list[tuple[float, int, int]] = []
        self._reset_order = 0
        self._timer_at = 0.0  # the earliest capture time at which a timer above is due
        self.stats = ReassemblyStats()

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # feeding -----------------------------------------------------------------------------------

    def feed(self, seg: TcpSegment) -> list[StreamEvent]:
        self.stats.segments += 1
        at = seg.timestamp
        timers_due = at >= self._timer_at
        entry = self._table.get((seg.src, seg.dst))
        if entry is not None and not timers_due:
            conn, half = entry
            conn.last_at = at
            # Fast path: plain data exactly at the next expected byte, nothing buffered.
            if half.fast and not seg.flags & _SYN_FIN_RST and not seg.truncated:
                data = seg.payload
                if not data:
                    return []
                nxt = half.next
                if (seg.seq - nxt) & _MASK == 0:
                    half.next = nxt + len(data)
                    tail = half.tail
                    tail += data
                    if len(tail) > 2 * RECENT_WINDOW:
                        del tail[:-RECENT_WINDOW]
                    return [_stream_data(conn.key, at, half.direction, data, nxt - half.base)]
            out: list[StreamEvent] = []
            self._segment(conn, half, seg, out)
            return out
        out = []
        if timers_due:
            self._timers(seg.timestamp, out)
            entry = self._table.get((seg.src, seg.dst))
        if entry is not None:
            conn, half = entry
            conn.last_at = seg.timestamp
            self._segment(conn, half, seg, out)
        else:
            self._new_tuple(seg, out)
        return out

    def feed_fields(self, fields: SegmentFields) -> Sequence[StreamEvent]:
        """``feed`` of a segment given as its fields (``packets.SegmentFields``), for the capture
        front end's loop: the same events, as a list or a tuple.

        The lean path is ``feed``'s own for its commonest case, plain data (or a bare ACK) exactly
        at the next expected byte of a direction with nothing buffered, with no timer due; it is
        decided before anything is changed, so every other segment takes ``feed`` unaltered.
        """
        src, dst, seq, _ack, flags, _window, data, _length, at, truncated, _options = fields
        if at < self._timer_at and not flags & _SYN_FIN_RST and not truncated:
            entry = self._table.get((src, dst))
            if entry is not None:
                conn, half = entry
                if half.fast:
                    if not data:
                        self.stats.segments += 1
                        conn.last_at = at
                        return ()
                    nxt = half.next
                    if (seq - nxt) & _MASK == 0:
                        self.stats.segments += 1
                        conn.last_at = at
                        half.next = nxt + len(data)
                        tail = half.tail
                        tail += data
                        if len(tail) > 2 * RECENT_WINDOW:
                            del tail[:-RECENT_WINDOW]
                        return (_stream_data(conn.key, at, half.direction, data, nxt - half.base),)
        return self.feed(SegmentRecord(*fields))

    def finish(self) -> list[StreamEvent]:
        """End of capture: flush buffered data (declaring holes as gaps) and close everything."""
        out: list[StreamEvent] = []
        for conn in list(self._conns.values()):
            self._end(conn, "end", conn.last_at, out)
        return out

    # connections -------------------------------------------------------------------------------

    def _new_tuple(self, seg: TcpSegment, out: list[StreamEvent]) -> None:
        tkey = (seg.src, seg.dst)
        closed_at = self._tombstones.get(tkey)
        if closed_at is not None:
            fresh_syn = seg.flags & (SYN | ACK) == SYN
            if not fresh_syn and seg.timestamp - closed_at < TOMBSTONE_SECONDS:
                self.stats.late_segments += 1
                return
        conn = self._open(seg)
        self._segment(conn, conn.a, seg, out)

    def _open(self, seg: TcpSegment) -> _Conn:
        a, b = _Half(seg.src), _Half(seg.dst)
        conn = _Conn(self._next_index, a, b, seg.timestamp)
        self._next_index += 1
        self.stats.connections += 1
        self._tombstones.pop((seg.src, seg.dst), None)
        self._tombstones.pop((seg.dst, seg.src), None)
        self._conns[conn.index] = conn
        self._table[(seg.src, seg.dst)] = (conn, a)
        self._table[(seg.dst, seg.src)] = (conn, b)
        return conn

    def _decide(self, conn: _Conn, client: _Half, basis: str, out: list[StreamEvent]) -> None:
        server = conn.b if client is conn.a else conn.a
        client.direction = Direction.C2S
        server.direction = Direction.S2C
        conn.key = _make_key(client.endpoint, server.endpoint, conn.index)
        conn.opened = True
        out.append(_make_opened(conn.key, conn.first_at, client.endpoint, server.endpoint,
                                basis in ("syn", "syn-ack"), basis))
        client.update_fast()
        server.update_fast()

    def _decide_by_port(self, conn: _Conn, out: list[StreamEvent]) -> None:
        a, b = conn.a, conn.b
        # Ephemeral ports are high; on a tie the first sender is the better guess.
        client = b if b.endpoint[1] > a.endpoint[1] else a
        self._decide(conn, client, "port", out)

    def _end(self, conn: _Conn, how: str, at: float, out: list[StreamEvent],
             by: _Half | None = None) -> None:
        """Close whatever is still open and drop the connection (``by``: who sent the RST)."""
        if not conn.opened:
            self._decide_by_port(conn, out)
        if conn.reset_by is not None:
            how, by = "rst", conn.reset_by  # the other side's reset ends whatever is left
        for half in (conn.a, conn.b) if conn.a.direction is Direction.C2S else (conn.b, conn.a):
            if not half.closed:
                self._flush(conn, half, at, out)
                if half.fin_at is not None:
                    self._close(conn, half, "fin", at, out, half.direction.sender)
                else:
                    self._close(conn, half, how, at, out, by.direction.sender if by else None)
        self._finished(conn, at, out)

    def _reset(self, conn: _Conn, half: _Half, at: float, out: list[StreamEvent]) -> None:
        """``half``'s side sent a RST: it will send nothing more, so its direction ends now.  The
        other side may still have bytes in flight (a capture near the resetting host sees them
        after the RST), so its direction stays open for ``RESET_GRACE`` seconds."""
        if not conn.opened:
            self._decide_by_port(conn, out)
        if not half.closed:  # (it may have closed with a FIN, or reset before)
            self._flush(conn, half, at, out)
            self._close(conn, half, "rst", at, out, half.direction.sender)  # type: ignore[union-attr]
        peer = conn.b if half is conn.a else conn.a
        if peer.closed:
            self._finished(conn, at, out)
        elif conn.reset_by is None:
            conn.reset_by = half
            deadline = at + RESET_GRACE
            self._resets[conn.index] = deadline
            heappush(self._reset_heap, (deadline, self._reset_order, conn.index))
            self._reset_order += 1
            self._reschedule()

    def _finished(self, conn: _Conn, at: float, out: list[StreamEvent]) -> None:
        out.append(_make_finished(conn.key, at))
        del self._conns[conn.index]
        if self._resets.pop(conn.index, None) is not None:
            self._reschedule()
        ka, kb = (conn.a.endpoint, conn.b.endpoint), (conn.b.endpoint, conn.a.endpoint)
        if self._table.get(ka, (None,))[0] is conn:
            del self._table[ka]
            del self._table[kb]
        tomb = self._tombstones
        tomb[ka] = at
        tomb[kb] = at
        tomb.move_to_end(ka)
        tomb.move_to_end(kb)
        while len(tomb) > TOMBSTONES:
            tomb.popitem(last=False)

    def _timers(self, now: float, out: list[StreamEvent]) -> None:
        """Run what is due at capture time ``now``: reset grace periods, then the idle sweep."""
        heap = self._reset_heap
        if heap and heap[0][0] <= now:
            due: list[tuple[float, int, int]] = []
            while heap and heap[0][0] <= now:
                due.append(heappop(heap))
            due.sort(key=_by_reset_order)  # ended in the order the resets happened
            resets, conns = self._resets, self._conns
            for _deadline, _order, index in due:
                if index in resets:  # (else it finished meanwhile)
                    conn = conns[index]
                    self._end(conn, "rst", conn.last_at, out, by=conn.reset_by)
        timeout = self._idle_timeout
        if timeout is not None and now >= self._next_sweep:
            self._next_sweep = now + min(timeout / 4, 60.0)
            for conn in [c for c in self._conns.values() if now - c.last_at > timeout]:
                self.stats.idle_closed += 1
                self._end(conn, "idle", conn.last_at, out)
        self._reschedule()

    def _reschedule(self) -> None:
        heap, resets = self._reset_heap, self._resets
        while heap and heap[0][2] not in resets:
            heappop(heap)  # that connection finished before its grace period ran out
        self._timer_at = min(self._next_sweep, heap[0][0]) if heap else self._next_sweep

    # segments ----------------------------------------------------------------------------------

    def _segment(self, conn: _Conn, half: _Half, seg: TcpSegment, out: list[StreamEvent]) -> None:
        flags = seg.flags
        at = seg.timestamp
        if flags & RST:
            self._reset(conn, half, at, out)
            return
        data_seq = seg.seq
        if flags & SYN:
            data_seq = (seg.seq + 1) & _MASK
            if half.isn is None and half.next is None:
                half.isn = seg.seq
                half.next = half.base = seg.seq + 1
                if not conn.opened:
                    if flags & ACK:
                        self._decide(conn, conn.b if half is conn.a else conn.a, "syn-ack", out)
                    else:
                        self._decide(conn, half, "syn", out)
                half.update_fast()
            elif half.isn is not None and seg.seq == half.isn:
                pass  # a retransmitted SYN: its data (if any) is handled as a retransmission
            elif not flags & ACK:
                # A new SYN on a 4-tuple we still track: the port was reused (we missed the close).
                self._end(conn, "end", conn.last_at, out)
                conn = self._open(seg)
                self._segment(conn, conn.a, seg, out)
                return
            else:
                return  # a SYN-ACK that fits nothing we know: ignore it
        if half.closed:
            if seg.length or flags & FIN:
                self.stats.late_segments += 1
            return
        payload = seg.payload
        if not conn.opened:
            if payload:
                if looks_like_client_hello(payload):
                    self._decide(conn, half, "client_hello", out)
                elif _looks_like_server_hello(payload):
                    self._decide(conn, conn.b if half is conn.a else conn.a, "server_hello", out)
                else:
                    self._decide_by_port(conn, out)
            elif flags & FIN:
                self._decide_by_port(conn, out)
            else:
                return  # a pure ACK tells us nothing yet
        if half.next is None:
            if not payload and not flags & FIN:
                return
            # No SYN seen from this side: its stream starts with the first byte we see.
            half.next = half.base = data_seq
            half.update_fast()
        nxt = half.next
        delta = (data_seq - nxt) & _MASK
        if delta >= _HALF:
            delta -= 1 << 32
        start = nxt + delta
        if payload or seg.length:
            self._data(conn, half, start, payload, seg.length, at, out)
        if flags & FIN and half.fin_at is None:
            fin = start + seg.length
            if fin >= half.next:
                half.fin_at = fin
                half.fast = False
        if half.fin_at is not None and half.next >= half.fin_at:
            self._flush(conn, half, at, out)
            self._close(conn, half, "fin", at, out, half.direction.sender)
            peer = conn.b if half is conn.a else conn.a
            if peer.closed:
                self._finished(conn, at, out)

    def _data(self, conn: _Conn, half: _Half, start: int, data: bytes, length: int, at: float,
              out: list[StreamEvent]) -> None:
        nxt = half.next
        assert nxt is not None
        wire_end = start + length  # where the segment really ends (past ``data`` if truncated)
        end = start + len(data)
        if end <= nxt:
            if start == nxt - 1 and length <= 1:
                self.stats.keepalives += 1  # keep-alive probe: its byte is garbage by design
                return
            self.stats.retransmitted_bytes += len(data)
            self._compare_tail(conn, half, start, data, at, out)
            if wire_end > end:
                self._missing(conn, half, wire_end, at, out)
            return
        if start < nxt:
            self.stats.retransmitted_bytes += nxt - start
            self._compare_tail(conn, half, start, data[:nxt - start], at, out)
            data = data[nxt - start:]
            start = nxt
        if start == nxt:
            if half.starts:
                # Buffered pieces may already hold some of these bytes: they came first and win.
                self._insert(conn, half, start, data, at, out)
                self._drain(conn, half, at, out)
            else:
                self._deliver(conn, half, data, at, out)
            if wire_end > end:
                self._missing(conn, half, wire_end, at, out)
            return
        if start - nxt > MAX_AHEAD:
            self.stats.out_of_window += 1
            return
        self._insert(conn, half, start, data, at, out)
        half.update_fast()
        if half.ooo_bytes > MAX_OUT_OF_ORDER:
            # Give up on the hole: what fills it would arrive too late to be believed anyway.
            self._gap(conn, half, half.starts[0] - half.next, at, out)
            self._drain(conn, half, at, out)

    def _missing(self, conn: _Conn, half: _Half, until: int, at: float,
                 out: list[StreamEvent]) -> None:
        """A truncated segment's uncaptured bytes up to ``until`` are gone: declare them now, so a
        header-only capture does not wait for retransmissions that will be truncated too."""
        nxt = half.next
        assert nxt is not None
        if until > nxt:
            if half.starts and half.starts[0] < until:
                until = half.starts[0]  # anything buffered beyond is real data
            if until > nxt:
                self._gap(conn, half, until - nxt, at, out)

    def _deliver(self, conn: _Conn, half: _Half, data: bytes, at: float,
                 out: list[StreamEvent]) -> None:
        if not data:
            return
        nxt = half.next
        assert nxt is not None
        if half.fin_at is not None and nxt + len(data) > half.fin_at:
            data = data[:half.fin_at - nxt]  # bytes past the FIN cannot be part of the stream
            if not data:
                return
        half.next = nxt + len(data)
        tail = half.tail
        tail += data
        if len(tail) > 2 * RECENT_WINDOW:
            del tail[:-RECENT_WINDOW]
        out.append(_stream_data(conn.key, at, half.direction, data, nxt - half.base))

    def _gap(self, conn: _Conn, half: _Half, length: int, at: float, out: list[StreamEvent]) -> None:
        if length <= 0:
            return
        nxt = half.next
        assert nxt is not None
        half.next = nxt + length
        half.tail.clear()  # the recent window must end at ``next`` and be contiguous
        self.stats.gaps += 1
        self.stats.gap_bytes += length
        out.append(_make_gap(conn.key, at, half.direction, length, nxt - half.base))

    def _compare_tail(self, conn: _Conn, half: _Half, start: int, data: bytes, at: float,
                      out: list[StreamEvent]) -> None:
        """Compare a late copy with what was delivered, as far as the recent window reaches."""
        nxt = half.next
        assert nxt is not None
        tail = half.tail
        t0 = nxt - len(tail)
        lo = max(start, t0)
        hi = min(start + len(data), nxt)
        if lo >= hi:
            return
        if tail[lo - t0:hi - t0] != data[lo - start:hi - start]:
            self._conflict(conn, half, lo, hi - lo, at, out)

    def _conflict(self, conn: _Conn, half: _Half, start: int, length: int, at: float,
                  out: list[StreamEvent]) -> None:
        self.stats.conflicts += 1
        out.append(_make_conflict(conn.key, at, half.direction, length, start - half.base))

    def _insert(self, conn: _Conn, half: _Half, start: int, data: bytes, at: float,
                out: list[StreamEvent]) -> None:
        """Buffer ``data`` at ``start`` (> next), keeping only bytes no earlier copy covers."""
        starts, ooo = half.starts, half.ooo
        end = start + len(data)
        i = bisect_right(starts, start)
        if i:
            ps = starts[i - 1]
            pd = ooo[ps]
            pe = ps + len(pd)
            if pe > start:
                hi = min(pe, end)
                if pd[start - ps:hi - ps] != data[:hi - start]:
                    self._conflict(conn, half, start, hi - start, at, out)
                self.stats.retransmitted_bytes += hi - start
                if pe >= end:
                    return
                data = data[pe - start:]
                start = pe
        while data and i < len(starts) and starts[i] < end:
            ss = starts[i]
            sd = ooo[ss]
            if ss > start:
                piece = data[:ss - start]
                starts.insert(i, start)
                ooo[start] = piece
                half.ooo_bytes += len(piece)
                i += 1
                data = data[ss - start:]
                start = ss
            se = ss + len(sd)
            hi = min(se, end)
            if sd[:hi - ss] != data[:hi - ss]:
                self._conflict(conn, half, ss, hi - ss, at, out)
            self.stats.retransmitted_bytes += hi - ss
            data = data[hi - start:]
            start = hi
            i += 1
        if data:
            starts.insert(i, start)
            ooo[start] = data
            half.ooo_bytes += len(data)

    def _drain(self, conn: _Conn, half: _Half, at: float, out: list[StreamEvent]) -> None:
        """Deliver buffered pieces that now continue the stream, as one ``StreamData``."""
        starts, ooo = half.starts, half.ooo
        nxt = half.next
        assert nxt is not None
        parts: list[bytes] = []
        pos = nxt
        while starts and starts[0] <= pos:
            s = starts.pop(0)
            d = ooo.pop(s)
            half.ooo_bytes -= len(d)
            e = s + len(d)
            if e <= pos:
                continue  # covered by a gap already declared
            parts.append(d[pos - s:] if s < pos else d)
            pos = e
        if parts:
            self._deliver(conn, half, parts[0] if len(parts) == 1 else b"".join(parts), at, out)
        half.update_fast()

    def _flush(self, conn: _Conn, half: _Half, at: float, out: list[StreamEvent]) -> None:
        """Deliver everything buffered, declaring the holes in between (and before a FIN) gaps."""
        if half.next is None:
            return
        while half.starts:
            self._gap(conn, half, half.starts[0] - half.next, at, out)
            self._drain(conn, half, at, out)
        if half.fin_at is not None and half.next < half.fin_at:
            self._gap(conn, half, half.fin_at - half.next, at, out)

    def _close(self, conn: _Conn, half: _Half, how: str, at: float, out: list[StreamEvent],
               by: str | None) -> None:
        half.closed = True
        half.fast = False
        half.starts.clear()
        half.ooo.clear()
        half.ooo_bytes = 0
        half.tail = bytearray()
        length = (half.next - half.base) if half.next is not None else 0
        out.append(_make_closed(conn.key, at, half.direction, how, length, by))
