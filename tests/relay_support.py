"""Shared helpers for the relay tests (no tests here): an in-process relay on its own event-loop
thread, an observer that records every call, and small blocking peers.

The peers are ordinary blocking sockets in threads so that each test reads like a user's script,
while the relay runs exactly as in production on its own loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tlsproxy.relay.config import ListenerSpec, RelayConfig
from tlsproxy.relay.observer import CloseSummary, ConnectionMeta
from tlsproxy.relay.server import RelayServer
from tlsproxy.wire.events import Direction

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


class RecordingObserver:
    """Records every observer call; thread-safe enough for list appends under the GIL."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []
        self.opened: dict[int, ConnectionMeta] = {}
        self.closed: dict[int, CloseSummary] = {}
        self.received: dict[tuple[int, Direction], bytearray] = {}
        self._cond = threading.Condition()

    def connection_opened(self, meta: ConnectionMeta) -> None:
        with self._cond:
            self.opened[meta.id] = meta
            self.calls.append(("opened", meta.id, meta))

    def upstream_connected(self, conn_id: int, upstream: tuple[str, int], at: float) -> None:
        self.calls.append(("upstream", conn_id, upstream))

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        self.received.setdefault((conn_id, direction), bytearray()).extend(data)
        self.calls.append(("data", conn_id, (direction, len(data))))

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        self.calls.append(("eof", conn_id, direction))

    def connection_closed(self, conn_id: int, summary: CloseSummary) -> None:
        with self._cond:
            self.closed[conn_id] = summary
            self.calls.append(("closed", conn_id, summary))
            self._cond.notify_all()

    def wait_closed(self, count: int = 1, timeout: float = 10.0) -> list[CloseSummary]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.closed) >= count, timeout)
            assert ok, f"only {len(self.closed)} of {count} connections closed within {timeout}s: {self.calls[-5:]}"
            return [self.closed[k] for k in sorted(self.closed)]

    def only_closed(self, timeout: float = 10.0) -> CloseSummary:
        return self.wait_closed(1, timeout)[0]


class RelayThread:
    """A RelayServer on its own event loop thread: ``with RelayThread(config) as relay:``."""

    def __init__(self, config: RelayConfig, observer: Any = None) -> None:
        self.config = config
        self.observer = observer if observer is not None else RecordingObserver()
        self.loop = asyncio.new_event_loop()
        self.server = RelayServer(config, self.observer)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.addresses: list[tuple[str, int]] = []

    def __enter__(self) -> RelayThread:
        self._thread.start()
        bound = self.run(self.server.start())
        self.addresses = [b.address for b in bound]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0.0)

    def stop(self, grace: float = 0.0) -> None:
        if self.loop.is_closed():
            return
        try:
            self.run(self.server.stop(grace), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.addresses[0]

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10) -> T:
        async def _call() -> T:
            return fn()

        return self.run(_call(), timeout)

    def open_connections(self) -> int:
        return self.call(lambda: len(self.server.connections))


def fixed(upstream: tuple[str, int], **options: Any) -> RelayConfig:
    spec = ListenerSpec(host="127.0.0.1", port=0, mode="fixed", upstream=upstream, label="test")
    return RelayConfig(listeners=(spec,), **options)


def listener(mode: str, **kw: Any) -> ListenerSpec:
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("port", 0)
    kw.setdefault("label", mode)
    return ListenerSpec(mode=mode, **kw)


@dataclass
class Server:
    """A listening socket whose accepted connections are handed to ``handler`` in threads."""

    sock: socket.socket
    threads: list[threading.Thread]
    errors: list[BaseException]

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def close(self) -> None:
        self.sock.close()

    def join(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        for t in list(self.threads):
            t.join(max(0.0, deadline - time.monotonic()))
        if self.errors:
            raise self.errors[0]


def serve(handler: Callable[[socket.socket], None], *, host: str = "127.0.0.1", count: int | None = None,
          backlog: int = 128) -> Server:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, 0))
    lsock.listen(backlog)
    server = Server(lsock, [], [])

    def run_one(conn: socket.socket) -> None:
        try:
            with conn:
                handler(conn)
        except BaseException as exc:  # reported by join()
            server.errors.append(exc)

    def accept_loop() -> None:
        n = 0
        while count is None or n < count:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            n += 1
            t = threading.Thread(target=run_one, args=(conn,), daemon=True)
            server.threads.append(t)
            t.start()

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    return server


def recv_all(sock: socket.socket, *, limit: int | None = None) -> bytes:
    """Read until EOF (or ``limit`` bytes)."""
    chunks = bytearray()
    while limit is None or len(chunks) < limit:
        data = sock.recv(1 << 16 if limit is None else min(1 << 16, limit - len(chunks)))
        if not data:
            break
        chunks += data
    return bytes(chunks)


def recv_hash(sock: socket.socket) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    while True:
        data = sock.recv(1 << 18)
        if not data:
            return h.hexdigest(), n
        h.update(data)
        n += len(data)


def send_chunks(sock: socket.socket, data: bytes, chunk: int = 1 << 16) -> None:
    view = memoryview(data)
    for i in range(0, len(view), chunk):
        sock.sendall(view[i : i + chunk])


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
