"""Capture analysis on several cores: connections are independent, so each one is given to one of
N worker processes, and what the workers print comes back in the order one process would print it.

The parent keeps the only packet reader and TCP reassembler (so connection numbers and stream
events are exactly those of a single process) and drives a :class:`ShardedPipeline`, which has
the front-end API of :class:`~tlsproxy.pipeline.Pipeline`.  Every call gets a global sequence
number and goes to the worker that owns the connection, in batches over a pipe.  A worker runs a
real ``Pipeline`` with the command's sinks, rendering into memory, and answers each batch with
what each call produced (transcript text, session-journal lines, exit-table rows).  The parent
writes those out in sequence order once no worker can still produce anything earlier, so the
output is byte-for-byte that of ``--jobs 1``.

Memory stays bounded: a worker that falls behind fills its input pipe and the parent waits for
it, so neither side can run far ahead of the other.  Workers are forked (the analysis state they
need, such as the key log and the trust store, is already loaded) and never touch the terminal.
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from multiprocessing import get_context
from multiprocessing.connection import Connection
from operator import attrgetter
from typing import Any, Protocol

from tlsproxy.analysis.model import Severity
from tlsproxy.fastbuild import frozen_builder
from tlsproxy.reports import ConnectionEnd, ConnectionInfo
from tlsproxy.wire.events import Direction

__all__ = ["ShardOutput", "ShardedPipeline", "WorkerSide", "usable_cpus"]

BATCH_CALLS = 128
"""Calls sent to a worker in one message: enough to make the pipe cost per call negligible, few
enough that both workers get work early and the transcript flows."""

BATCH_BYTES = 256 << 10
"""Payload bytes after which a batch is sent even when it has fewer calls (bulk transfers)."""

PIPE_SIZE = 1 << 20
"""The capacity asked for each worker's input pipe (Linux's default limit for unprivileged processes)."""


# Calls travel as flat tuples (sequence number, operation, arguments...), pickled in batches.
# Directions travel as 0/1 and connection records as field tuples: an Enum member unpickles
# through a Python-level call and a slotted dataclass through one per field, for every call.
_OPEN, _DATA, _EOF, _GAP, _CLOSE, _KEYLOG = range(6)
_DIRECTIONS = (Direction.C2S, Direction.S2C)
_DIRECTION_CODE = {d: i for i, d in enumerate(_DIRECTIONS)}
_INFO_FIELDS = attrgetter(*(f.name for f in fields(ConnectionInfo)))
_END_FIELDS = attrgetter(*(f.name for f in fields(ConnectionEnd)))
_make_info = frozen_builder(ConnectionInfo)
_make_end = frozen_builder(ConnectionEnd)


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(slots=True)
class ShardOutput:
    """What one call produced in a worker, to be written out by the parent in order."""

    text: str = ""
    journal: list[str] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)


class WorkerSide(Protocol):
    """What a worker needs: its own pipeline, where key-log text goes, and how to collect output."""

    pipeline: Any

    def feed_keylog(self, text: str) -> None: ...

    def collect(self) -> ShardOutput | None:
        """What the calls since the last collect produced (``None`` when nothing)."""
        ...


@dataclass(slots=True)
class _Shard:
    index: int
    process: Any
    send: Connection
    recv: Connection
    batch: list[tuple[Any, ...]] = field(default_factory=list)  # (seq, operation, *arguments)
    batch_bytes: int = 0
    sent_through: int = 0  # highest sequence number sent
    done_through: int = 0  # highest sequence number the worker has answered for
    results: deque[tuple[Any, ...]] = field(default_factory=deque)  # (seq, text, journal, rows)
    worst: Severity | None = None
    reports: int = 0
    finished: bool = False
    thread: threading.Thread | None = None


class WorkerFailed(RuntimeError):
    """A worker process died; the analysis cannot be completed."""


class ShardedPipeline:
    """The pipeline API over worker processes (see the module docstring)."""

    def __init__(self, jobs: int, build: Callable[[], WorkerSide], emit: Callable[[ShardOutput], None]) -> None:
        """``build`` runs in each worker after the fork and makes its pipeline; ``emit`` runs in
        the parent for each output, in sequence order."""
        self.emit = emit
        self._seq = 0
        self._owner: dict[int, _Shard] = {}
        self._next = 0
        self._inbox: queue.Queue[tuple[_Shard, Any]] = queue.Queue()
        self.shards: list[_Shard] = []
        ctx = get_context("fork")
        # Everything loaded so far (modules, the trust store) is shared with the workers; frozen,
        # the collectors on either side never touch it, so its pages are never copied.
        gc.freeze()
        sys.stdout.flush()
        sys.stderr.flush()
        for i in range(jobs):
            recv_in, send_in = ctx.Pipe(duplex=False)
            recv_out, send_out = ctx.Pipe(duplex=False)
            _widen(send_in)
            foreign = [c for s in self.shards for c in (s.send, s.recv)] + [send_in, recv_out]
            proc = ctx.Process(target=_serve, args=(recv_in, send_out, build, foreign), daemon=True,
                               name=f"tlsproxy-analyze-{i}")
            proc.start()
            recv_in.close()
            send_out.close()
            shard = _Shard(index=i, process=proc, send=send_in, recv=recv_out)
            shard.thread = threading.Thread(target=self._receive, args=(shard,), daemon=True,
                                            name=f"tlsproxy-analyze-recv-{i}")
            shard.thread.start()
            self.shards.append(shard)

    # -- the Pipeline front-end API ---------------------------------------------------------

    @property
    def worst(self) -> Severity | None:
        worst = None
        for s in self.shards:
            if s.worst is not None and (worst is None or s.worst > worst):
                worst = s.worst
        return worst

    @property
    def reports_count(self) -> int:
        return sum(s.reports for s in self.shards)

    def open(self, info: ConnectionInfo) -> None:
        shard = self.shards[self._next % len(self.shards)]
        self._next += 1
        self._owner[info.id] = shard
        self._call(shard, (_OPEN, _INFO_FIELDS(info)), 0)

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        # The call for nearly every packet: _call inlined.
        shard = self._owner.get(conn_id)
        if shard is not None and data:
            self._seq = seq = self._seq + 1
            batch = shard.batch
            batch.append((seq, _DATA, conn_id, _DIRECTION_CODE[direction], data, at))
            shard.batch_bytes += len(data)
            if len(batch) >= BATCH_CALLS or shard.batch_bytes >= BATCH_BYTES:
                self._flush(shard)

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        shard = self._owner.get(conn_id)
        if shard is not None:
            self._call(shard, (_EOF, conn_id, _DIRECTION_CODE[direction], at), 0)

    def gap(self, conn_id: int, direction: Direction, length: int, at: float) -> None:
        shard = self._owner.get(conn_id)
        if shard is not None:
            self._call(shard, (_GAP, conn_id, _DIRECTION_CODE[direction], length, at), 0)

    def close(self, conn_id: int, end: ConnectionEnd) -> None:
        shard = self._owner.pop(conn_id, None)
        if shard is not None:
            self._call(shard, (_CLOSE, conn_id, _END_FIELDS(end)), 0)

    def close_all(self, how: str, at: float) -> None:
        for conn_id in list(self._owner):  # in the order they opened, like Pipeline.close_all
            self.close(conn_id, ConnectionEnd(how=how, by=None, at=at))

    def feed_keylog(self, text: str) -> None:
        """Key-log text found in the capture: every worker needs it, before the calls after it."""
        self._seq += 1
        for shard in self.shards:
            shard.batch.append((self._seq, _KEYLOG, text))
            self._flush(shard)

    def sync(self) -> None:
        """Wait until every call so far has been answered and what it printed written out (so
        that a message about one capture file comes after that file's transcript)."""
        for shard in self.shards:
            self._flush(shard)
        while any(s.done_through < s.sent_through and not s.finished for s in self.shards):
            self._take(block=True)
        self._emit_ready()

    def finish(self) -> None:
        """Send what is left, let the workers finish, and write out everything in order."""
        for shard in self.shards:
            self._flush(shard)
            if not shard.finished:
                shard.send.send_bytes(pickle.dumps(None))
        while not all(s.finished for s in self.shards):
            self._take(block=True)
            self._emit_ready()
        self._emit_ready()
        for shard in self.shards:
            shard.process.join()
            shard.send.close()
            shard.recv.close()

    def abort(self) -> None:
        """Stop the workers now (an error or an interrupt in the parent)."""
        for shard in self.shards:
            if shard.process.is_alive():
                shard.process.terminate()
        for shard in self.shards:
            shard.process.join()

    # -- internals --------------------------------------------------------------------------

    def _call(self, shard: _Shard, call: tuple[Any, ...], nbytes: int) -> None:
        self._seq += 1
        shard.batch.append((self._seq, *call))
        shard.batch_bytes += nbytes
        if len(shard.batch) >= BATCH_CALLS or shard.batch_bytes >= BATCH_BYTES:
            self._flush(shard)

    def _flush(self, shard: _Shard) -> None:
        if not shard.batch:
            return
        if shard.finished:
            raise WorkerFailed(self._failure(shard))
        shard.sent_through = shard.batch[-1][0]
        payload = pickle.dumps(shard.batch, protocol=pickle.HIGHEST_PROTOCOL)
        shard.batch = []
        shard.batch_bytes = 0
        try:
            shard.send.send_bytes(payload)
        except OSError:
            raise WorkerFailed(self._failure(shard)) from None
        self._take(block=False)
        self._emit_ready()

    def _receive(self, shard: _Shard) -> None:
        """Reader thread: the parent never blocks a worker that is writing its answers."""
        try:
            while True:
                self._inbox.put((shard, pickle.loads(shard.recv.recv_bytes())))
        except (EOFError, OSError):
            self._inbox.put((shard, None))

    def _take(self, *, block: bool) -> None:
        try:
            item = self._inbox.get(block=block)
        except queue.Empty:
            return
        while True:
            shard, message = item
            if message is None:
                if not shard.finished:
                    shard.finished = True
                    if shard.done_through < shard.sent_through:
                        raise WorkerFailed(self._failure(shard))
            else:
                done, results, worst, reports = message
                shard.done_through = done
                shard.results.extend(results)
                shard.worst = worst
                shard.reports = reports
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _emit_ready(self) -> None:
        """Write out, in sequence order, every result no worker can still precede."""
        shards = self.shards
        while True:
            best: _Shard | None = None
            for s in shards:
                if s.results and (best is None or s.results[0][0] < best.results[0][0]):
                    best = s
            if best is None:
                return
            head = best.results[0][0]
            if any(_earliest_pending(s) < head for s in shards):
                return  # a call before ``head`` may still print something
            _seq, text, journal, rows = best.results.popleft()
            self.emit(ShardOutput(text, journal, rows))

    def _failure(self, shard: _Shard) -> str:
        shard.process.join(timeout=1.0)
        code = shard.process.exitcode
        return f"analysis worker {shard.index} exited unexpectedly (exit code {code})"


def _widen(conn: Connection) -> None:
    """A pipe as wide as Linux allows an unprivileged process (1 MiB, against 64 KiB): a batch of
    bulk data then goes in one write instead of a dozen turns of the parent blocking and the
    worker waking."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):  # not Linux, or a lower pipe-max-size
        pass


def _earliest_pending(shard: _Shard) -> float:
    """The lowest sequence number this worker may still answer for (a lower bound)."""
    if shard.done_through < shard.sent_through:
        return shard.done_through + 1
    if shard.batch:
        return shard.batch[0][0]
    return float("inf")


def _serve(recv: Connection, send: Connection, build: Callable[[], WorkerSide], foreign: list[Connection]) -> None:
    """A worker: apply each batch of calls to its own pipeline and answer with what they produced."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops the workers
    try:
        signal.set_wakeup_fd(-1)  # the parent's event loop owns that pipe
    except ValueError:  # pragma: no cover - not the main thread
        pass
    for c in foreign:  # other workers' pipe ends: a dead parent must mean EOF here
        c.close()
    side = build()
    pipeline = side.pipeline
    data = pipeline.data
    directions = _DIRECTIONS
    others: dict[int, Callable[..., Any]] = {
        _OPEN: lambda info: pipeline.open(_make_info(*info)),
        _EOF: lambda conn_id, d, at: pipeline.eof(conn_id, directions[d], at),
        _GAP: lambda conn_id, d, length, at: pipeline.gap(conn_id, directions[d], length, at),
        _CLOSE: lambda conn_id, end: pipeline.close(conn_id, _make_end(*end)),
        _KEYLOG: side.feed_keylog,
    }
    collect = side.collect
    while True:
        try:
            batch = pickle.loads(recv.recv_bytes())
        except EOFError:
            return
        if batch is None:
            return
        # Outputs travel as plain tuples: a slotted dataclass unpickles through Python-level code.
        results: list[tuple[Any, ...]] = []
        for call in batch:
            if call[1] == _DATA:
                _seq, _op, conn_id, d, payload, at = call
                data(conn_id, directions[d], payload, at)
            else:
                others[call[1]](*call[2:])
            out = collect()
            if out is not None:
                results.append((call[0], out.text, out.journal, out.rows))
        send.send_bytes(pickle.dumps((batch[-1][0], results, pipeline.worst, pipeline.reports_count),
                                     protocol=pickle.HIGHEST_PROTOCOL))
