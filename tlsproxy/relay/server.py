"""Listeners, connection limits, timers and shutdown.

The accept loop is our own rather than ``loop.create_server`` so that a full house can leave new
connections waiting in the kernel's listen backlog (``--when-full wait``) instead of accepting them
and holding their file descriptors.  It stays in the foreground: supervisors and benchmarks manage
the process, and SIGINT/SIGTERM start a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
import sys
from dataclasses import dataclass

from tlsproxy.relay.config import ConfigError, ListenerSpec, RelayConfig, check_config, format_hostport
from tlsproxy.relay.observer import RelayObserver
from tlsproxy.relay.pump import RelayConnection

log = logging.getLogger("tlsproxy.relay")

# Exit codes of run_relay (and so of `tlsproxy run`): scripts can tell these apart.
EXIT_OK = 0  # stopped by SIGINT/SIGTERM after a graceful shutdown
EXIT_ERROR = 1  # unexpected internal failure
EXIT_USAGE = 2  # the options describe a relay we refuse to run (argparse uses 2 as well)
EXIT_LISTEN = 3  # a listening socket could not be opened (address in use, permission)

#: File descriptors kept back from the connection limit (listeners, logs, resolver, stdio).
RESERVED_FDS = 64


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


@dataclass(frozen=True, slots=True)
class BoundListener:
    spec: ListenerSpec
    address: tuple[str, int]


class _Listener:
    __slots__ = ("spec", "sock", "task", "address")

    def __init__(self, spec: ListenerSpec, sock: socket.socket) -> None:
        self.spec = spec
        self.sock = sock
        addr = sock.getsockname()
        self.address = (addr[0], addr[1])
        self.task: asyncio.Task[None] | None = None


def _listen_socket(spec: ListenerSpec, backlog: int) -> socket.socket:
    infos = socket.getaddrinfo(spec.host or None, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, proto, _canon, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and spec.host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class RelayServer:
    """All listeners of one process.  ``start()`` binds (port 0 allowed) and returns the bound
    addresses; ``stop(grace)`` stops accepting, lets open connections finish for ``grace``
    seconds, then closes them."""

    def __init__(self, config: RelayConfig, observer: RelayObserver | None = None) -> None:
        self.config = config
        self.observer = observer
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self.connections: set[RelayConnection] = set()
        self.max_connections = config.max_connections or 0
        self.total_accepted = 0
        self.total_refused_full = 0
        self._listeners: list[_Listener] = []
        self._slots: asyncio.Semaphore | None = None
        self._idle = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._warned_full = False

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self) -> list[BoundListener]:
        self.loop = asyncio.get_running_loop()
        nofile = raise_open_files_limit()
        if self.config.max_connections is None:
            self.max_connections = max(1, (nofile - RESERVED_FDS) // 2)  # two sockets per connection
        if self.config.when_full == "wait":
            self._slots = asyncio.Semaphore(self.max_connections)
        self._idle.set()
        try:
            for spec in self.config.listeners:
                self._listeners.append(_Listener(spec, _listen_socket(spec, self.config.backlog)))
        except BaseException:
            for listener in self._listeners:
                listener.sock.close()
            self._listeners.clear()
            raise
        for listener in self._listeners:
            listener.task = self.loop.create_task(self._accept_loop(listener))
        self._sweeper = self.loop.create_task(self._sweep_loop())
        return [BoundListener(spec=lst.spec, address=lst.address) for lst in self._listeners]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [lst.address for lst in self._listeners]

    def stop_accepting(self) -> None:
        self._stopping = True
        for listener in self._listeners:
            if listener.task is not None:
                listener.task.cancel()
            self.loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        self._listeners.clear()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, wait up to ``grace`` seconds for connections to end, close the rest."""
        grace = self.config.grace if grace is None else grace
        self.stop_accepting()
        if self.connections and grace > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                pass
        if self.connections:
            for conn in list(self.connections):
                conn.close("shutdown", f"proxy shutting down; connection still open after the {grace:g} s grace period")
            try:
                await asyncio.wait_for(self._idle.wait(), 1.0)
            except TimeoutError:
                for conn in list(self.connections):
                    conn.abort()
                await asyncio.sleep(0)
                await asyncio.sleep(0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.close("shutdown", "proxy stopped at once (second signal)")
            conn.abort()

    # -- accepting ---------------------------------------------------------------------------------

    async def _readable(self, sock: socket.socket) -> None:
        fut = self.loop.create_future()
        fd = sock.fileno()
        self.loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            if sock.fileno() != -1:  # stop_accepting already unregistered and closed it
                self.loop.remove_reader(fd)

    async def _accept_loop(self, listener: _Listener) -> None:
        lsock = listener.sock
        slots = self._slots
        while not self._stopping:
            if slots is not None:
                if slots.locked() and not self._warned_full:
                    self._warned_full = True
                    log.warning(
                        "%d connections open (--max-connections): new connections wait in the listen backlog",
                        self.max_connections,
                    )
                await slots.acquire()
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                if slots is not None:
                    slots.release()
                await self._readable(lsock)
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: leave it in the backlog for a moment
                if slots is not None:
                    slots.release()
                log.error("accept on %s failed: %s; retrying in 0.1 s", listener.spec.name, exc)
                await asyncio.sleep(0.1)
                continue
            self.total_accepted += 1
            over = slots is None and len(self.connections) >= self.max_connections
            if over:
                self.total_refused_full += 1
                log.warning(
                    "connection from %s refused: %d connections open (--max-connections)",
                    format_hostport(addr[0], addr[1]), self.max_connections,
                )
            conn = RelayConnection(self, listener.spec, self.observer, over_limit=over)
            self.connections.add(conn)
            self._idle.clear()
            try:
                sock.setblocking(False)
                await self.loop.connect_accepted_socket(lambda: conn.client, sock)
            except OSError as exc:
                sock.close()
                log.error("connection from %s: cannot set up: %s", format_hostport(addr[0], addr[1]), exc)
                conn._close("error", "proxy", f"cannot set up the accepted socket: {exc}")
                if conn.state != "done":
                    conn._finish()

    def _connection_done(self, conn: RelayConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            if self._slots is not None:
                self._slots.release()
                if self._warned_full and not self._slots.locked():
                    self._warned_full = False
        if not self.connections:
            self._idle.set()

    # -- timers ------------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        idle = self.config.idle_timeout
        tick = 1.0 if idle is None else min(1.0, max(0.05, idle / 4))
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for conn in list(self.connections):
                try:
                    conn.sweep(now, idle)
                except Exception:  # one connection's trouble never stops the others' timers
                    log.exception("connection #%d: timer failed", conn.id)


def _ensure_logging() -> None:
    logger = logging.getLogger("tlsproxy")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tlsproxy: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


async def run_relay(config: RelayConfig, observer: RelayObserver) -> int:
    """Serve until SIGINT/SIGTERM, then shut down gracefully; return the exit code.

    A first signal stops accepting and gives open connections ``config.grace`` seconds; a second
    one closes them at once.
    """
    _ensure_logging()
    try:
        for warning in check_config(config):
            log.warning("warning: %s", warning)
    except ConfigError as exc:
        log.error("error: %s", exc)
        return EXIT_USAGE
    server = RelayServer(config, observer)
    try:
        bound = await server.start()
    except OSError as exc:
        log.error("error: cannot listen: %s", exc)
        return EXIT_LISTEN
    for b in bound:
        target = {
            "fixed": f"-> {format_hostport(*b.spec.upstream)}" if b.spec.upstream else "",
            "sni": f"-> ClientHello server_name, port {b.spec.upstream_port}",
            "connect": "(HTTP CONNECT proxy)",
            "socks5": "(SOCKS5 proxy)",
            "transparent": "(redirected connections, SO_ORIGINAL_DST)",
        }[b.spec.mode]
        log.info("listening on %s [%s] %s mode %s", format_hostport(*b.address), b.spec.name, b.spec.mode, target)
    log.info("at most %d concurrent connections; Ctrl-C to stop", server.max_connections)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("%s: no new connections; %d open get %g s to finish", signame, len(server.connections), config.grace)
            stop.set()
        else:
            log.info("%s again: closing all connections now", signame)
            server.abort_all()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        await stop.wait()
        await server.stop(config.grace)
    except Exception:
        log.exception("internal error")
        return EXIT_ERROR
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        flush = getattr(observer, "flush", None)
        if callable(flush):
            try:
                flush()
            except Exception as exc:
                log.error("observer flush failed: %r", exc)
        sys.stdout.flush()
    log.info("stopped")
    return EXIT_OK
