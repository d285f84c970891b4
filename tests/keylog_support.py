"""Shared helpers for the key log tests (no tests here): the real proxy, in process, with a
followed key log, as ``tlsproxy run --keylog FILE`` builds it.

``KeylogProxy`` parses a ``run`` command line with the CLI's own parser and builds the pipeline
with the CLI's helpers (``analysis_options``, ``open_keylog(follow=True)``, ``decryptor_factory``,
``show_data``), runs the relay on its own event-loop thread with the CLI's timer, and records the
transcript (a ``StringIO`` console), every event (a recording sink) and the session document.
Servers (``ssl`` in a thread, or ``openssl s_server``) and clients (``ssl`` with
``keylog_filename``, or ``openssl s_client -keylogfile``) are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from tests.relay_support import RelayThread
from tlsproxy import cli
from tlsproxy.frontends.live import PipelineObserver
from tlsproxy.pipeline import ConnectionReport, Pipeline, RunInfo
from tlsproxy.relay import config_from_args
from tlsproxy.sinks.console import ConsoleSink, make_console
from tlsproxy.sinks.sessionjson import SessionJsonSink
from tlsproxy.wire import events as ev

HAVE_OPENSSL = shutil.which("openssl") is not None
TIMEOUT = 10.0


class RecordingSink:
    """Keeps every event and report the pipeline hands to its sinks (relay thread appends, the
    test thread reads: list appends are atomic)."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.reports: list[ConnectionReport] = []

    def run_started(self, run: RunInfo) -> None: ...
    def run_finished(self, run: RunInfo, ended: float) -> None: ...
    def connection_opened(self, info: Any) -> None: ...

    def event(self, conn_id: int, seq: int, event: ev.Event | None, findings: Any) -> None:
        if event is not None:
            self.events.append(event)

    def connection_closed(self, report: ConnectionReport) -> None:
        self.reports.append(report)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class KeylogProxy:
    """``with KeylogProxy(upstream_port, keylog, tmp) as proxy:`` clients connect to ``proxy.port``."""

    def __init__(self, upstream_port: int, keylog: Path | None, *, extra: Sequence[str] = (),
                 trust: bytes | None = None, save: Path | None = None) -> None:
        keylog_args = ["--keylog", str(keylog)] if keylog is not None else []
        self.ns = cli.build_parser().parse_args(
            ["run", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream_port}", *keylog_args,
             "--grace", "1", *extra])
        options = cli.analysis_options(self.ns)
        if trust is not None:
            options = dataclasses.replace(options, trust_pems=trust, trust_loader=None)
        self.out = StringIO()
        self.console = ConsoleSink(make_console(file=self.out, force_terminal=False, width=250), live=False)
        self.recorder = RecordingSink()
        self.session = SessionJsonSink(save)
        self.keylog = cli.open_keylog(self.ns, follow=True)
        self.pipeline = Pipeline([self.console, self.session, self.recorder], options,
                                 decryptor_factory=cli.decryptor_factory(
                                     self.keylog.keylog if self.keylog is not None else None, always=True),
                                 show_data=cli.show_data(self.ns, self.keylog))
        self.observer = PipelineObserver(self.pipeline, keylog=self.keylog)
        self.relay = RelayThread(config_from_args(self.ns), self.observer)
        self.run_info = RunInfo(command="run", started=time.time(), keylog=str(keylog) if keylog else None)
        self.document: dict[str, Any] | None = None
        self._ticker: Any = None

    def __enter__(self) -> KeylogProxy:
        self.relay.__enter__()
        self.relay.run(self.session.start())
        self.relay.call(lambda: self.pipeline.run_started(self.run_info))
        self._ticker = asyncio.run_coroutine_threadsafe(cli._tick(self.observer), self.relay.loop)  # noqa: SLF001
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    @property
    def port(self) -> int:
        return self.relay.address[1]

    def wait_reports(self, count: int = 1) -> list[ConnectionReport]:
        wait_until(lambda: len(self.recorder.reports) >= count, f"{count} connection report(s)")
        return self.recorder.reports

    def finish(self) -> dict[str, Any]:
        """Stop the relay, close what is open and assemble the session document."""
        if self.document is not None:
            return self.document
        self._ticker.cancel()
        self.relay.run(self.relay.server.stop(0.5))
        self.relay.call(self.observer.flush)
        self.relay.call(lambda: self.pipeline.run_finished(self.run_info, time.time()))
        self.document = self.relay.run(self.session.aclose())
        self.relay.stop()
        return self.document

    @property
    def transcript(self) -> str:
        return self.out.getvalue()


# -- peers ------------------------------------------------------------------------------------


class SslServer:
    """A blocking ``ssl`` server thread: reads one request, answers, closes; a failed handshake
    sends its alert and closes, as real servers do."""

    def __init__(self, ctx: ssl.SSLContext, response: bytes = b"HTTP/1.0 200 OK\r\n\r\nhello\n") -> None:
        self.ctx = ctx
        self.response = response
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(TIMEOUT)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    if tls.recv(4096):
                        tls.sendall(self.response)
                    try:
                        tls.unwrap()
                    except (ssl.SSLError, OSError):
                        pass
            except (ssl.SSLError, OSError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self) -> SslServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ssl_client(port: int, ctx: ssl.SSLContext, *, server_hostname: str = "localhost",
               request: bytes = b"GET / HTTP/1.0\r\n\r\n") -> str:
    """Connect, send ``request``, read to the close; returns what the client saw (``ok ...`` or
    the error)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
            try:
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
            return f"ok {data[:20]!r}"
    except (ssl.SSLError, OSError) as exc:
        return f"failed {exc}"
    finally:
        raw.close()


class OpensslServer:
    """``openssl s_server`` on a free loopback port for ``naccept`` connections (plus the
    readiness probe)."""

    def __init__(self, args: Sequence[str], naccept: int = 1) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-naccept", str(naccept + 1), "-quiet",
             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s_server exited: {self.proc.stdout.read() if self.proc.stdout else b''!r}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "s_server did not start"
                time.sleep(0.02)

    def __enter__(self) -> OpensslServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def openssl_client(port: int, keylog: Path, args: Sequence[str]) -> str:
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-keylogfile", str(keylog),
                             "-servername", "localhost", *args], input=b"", capture_output=True, timeout=20)
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
