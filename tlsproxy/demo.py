"""``tlsproxy demo``: real handshakes through the real proxy, on loopback, with nothing to set up.

One process plays all three parts: a Python ``ssl`` server on 127.0.0.1 (port chosen by the
kernel), the relay in front of it, and clients that connect through the relay.  Certificates are
made fresh in a temporary directory and deleted afterwards.  Each scenario is a server setup and
one or more client attempts; the transcript and diagnoses are the same ones ``tlsproxy run``
prints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from tlsproxy.analysis.tracker import AnalysisOptions
from tlsproxy.demo_pki import DemoPki, make_demo_pki
from tlsproxy.frontends.live import PipelineObserver
from tlsproxy.pipeline import Pipeline, RunInfo
from tlsproxy.relay import ListenerSpec, RelayConfig, RelayServer

__all__ = ["DEFAULT", "SCENARIOS", "Attempt", "Scenario", "print_list", "run_demo"]

DEFAULT = "mtls-missing-cert"
#: Longest a client attempt (connect, handshake, one request) may take on loopback.
ATTEMPT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One client connection: what it says before connecting and how its context differs."""

    say: str
    with_client_cert: bool = False
    server_hostname: str = "localhost"
    max_version: ssl.TLSVersion | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    summary: str
    attempts: tuple[Attempt, ...]
    require_client_cert: bool = False
    expired_server_cert: bool = False
    server_min_version: ssl.TLSVersion | None = None
    server_max_version: ssl.TLSVersion | None = None
    notes: tuple[str, ...] = field(default=())


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        name="mtls-missing-cert",
        summary="the server requires a client certificate; a client without one fails, then one with it succeeds",
        require_client_cert=True,
        # TLS 1.2 keeps the CertificateRequest, the empty Certificate and the alert in plaintext, so
        # every step of the failure is on screen (tls13-clean shows a TLS 1.3 handshake).
        server_max_version=ssl.TLSVersion.TLSv1_2,
        attempts=(
            Attempt(say="A client with no certificate connects through the proxy to a server that requires one."),
            Attempt(say="The same client, now configured with a certificate from the CA the server trusts.",
                    with_client_cert=True),
        ),
    ),
    Scenario(
        name="expired-server-cert",
        summary="the server presents a certificate that expired yesterday; the client refuses it",
        expired_server_cert=True,
        server_max_version=ssl.TLSVersion.TLSv1_2,
        attempts=(Attempt(say="A client connects to a server whose certificate expired yesterday."),),
    ),
    Scenario(
        name="hostname-mismatch",
        summary="the client asks for www.example.test but the certificate is for localhost",
        server_max_version=ssl.TLSVersion.TLSv1_2,
        attempts=(Attempt(say="A client connects asking for www.example.test; the server's certificate "
                              "names only localhost.", server_hostname="www.example.test"),),
    ),
    Scenario(
        name="version-mismatch",
        summary="the server accepts only TLS 1.3, the client speaks at most TLS 1.2",
        server_min_version=ssl.TLSVersion.TLSv1_3,
        attempts=(Attempt(say="A client limited to TLS 1.2 connects to a TLS 1.3-only server.",
                          max_version=ssl.TLSVersion.TLSv1_2),),
    ),
    Scenario(
        name="tls13-clean",
        summary="a TLS 1.3 handshake where everything is right",
        attempts=(Attempt(say="A client connects with TLS 1.3 to a correctly configured server."),),
    ),
)}


def print_list(console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    for s in SCENARIOS.values():
        line = Text(f"{s.name:<22}", style="bold")
        line.append(s.summary)
        if s.name == DEFAULT:
            line.append(" (default)", style="dim")
        console.print(line)


def _server_context(s: Scenario, pki: DemoPki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if s.expired_server_cert:
        ctx.load_cert_chain(pki.expired_cert, pki.expired_key)
    else:
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if s.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.client_ca)
    if s.server_min_version is not None:
        ctx.minimum_version = s.server_min_version
    if s.server_max_version is not None:
        ctx.maximum_version = s.server_max_version
    return ctx


def _client_context(a: Attempt, pki: DemoPki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.server_ca)
    if a.with_client_cert:
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
    if a.max_version is not None:
        ctx.maximum_version = a.max_version
    return ctx


class _Server:
    """A blocking ``ssl`` server in a thread: unlike asyncio's SSL transport, a blocking socket
    sends its alert before closing when a handshake fails, as real servers do."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tlsproxy-demo-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(ATTEMPT_TIMEOUT)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.0 200 OK\r\ncontent-length: 6\r\n\r\nhello\n")
                    try:
                        tls.unwrap()
                    except (ssl.SSLError, OSError):
                        pass
            except (ssl.SSLError, OSError):
                conn.close()


def _client(a: Attempt, pki: DemoPki, port: int) -> str:
    """Connect through the proxy, send one request, read the answer; say what the client saw.
    Blocking (run in a thread) so that a failing client sends its alert like real clients do."""
    ctx = _client_context(a, pki)
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=ATTEMPT_TIMEOUT)
    except OSError as exc:
        return f"client: cannot connect: {_why(exc)}"
    try:
        with ctx.wrap_socket(raw, server_hostname=a.server_hostname) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\nhost: localhost\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):  # read to the server's close_notify
                data += chunk
            try:
                tls.unwrap()  # and answer it, as a well-behaved client does
            except (ssl.SSLError, OSError):
                pass
            if not data:
                return "client: the server closed the connection without answering"
            return f"client: got {data.splitlines()[0].decode('ascii', 'replace')!r}"
    except (ssl.SSLError, OSError) as exc:
        return f"client: failed: {_why(exc)}"
    finally:
        raw.close()


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def run_demo(name: str, sinks: Sequence[Any], *, options: Any = None, console: Console | None = None,
                   run: RunInfo | None = None) -> Pipeline:
    """Run scenario ``name`` with its own server and relay; returns the pipeline (its ``worst``
    severity and ``reports_count`` tell how it went)."""
    scenario = SCENARIOS[name]
    run = run or RunInfo(command="demo", source=name, started=time.time())
    with tempfile.TemporaryDirectory(prefix="tlsproxy-demo-") as tmp:
        pki = make_demo_pki(tmp)
        # The demo's CAs are what its clients and server trust; judge the chains against them.
        trust = pki.server_ca.read_bytes() + pki.client_ca.read_bytes()
        options = dataclasses.replace(options or AnalysisOptions(), trust_pems=trust, trust_loader=None)
        pipeline = Pipeline(list(sinks), options)
        server = _Server(_server_context(scenario, pki))
        server.start()
        server_port = server.port
        spec = ListenerSpec(host="127.0.0.1", port=0, mode="fixed", upstream=("127.0.0.1", server_port),
                            label="demo")
        observer = PipelineObserver(pipeline)
        relay = RelayServer(RelayConfig(listeners=(spec,), grace=1.0, connect_timeout=5.0), observer)
        bound = await relay.start()
        proxy_port = bound[0].address[1]
        run = RunInfo(tool=run.tool, version=run.version, command=run.command, source=run.source,
                      listeners=({"label": "demo", "host": "127.0.0.1", "port": proxy_port, "mode": "fixed",
                                  "upstream": f"127.0.0.1:{server_port}"},), started=run.started, keylog=run.keylog)
        pipeline.run_started(run)
        if console is not None:
            console.print(Rule(f"tlsproxy demo: {scenario.name}"))
            console.print(Text(f"server 127.0.0.1:{server_port} ({scenario.summary}); "
                               f"proxy 127.0.0.1:{proxy_port} in front of it", style="dim"))
        try:
            for i, attempt in enumerate(scenario.attempts, 1):
                if console is not None:
                    console.print(Text(f"\n▶ {i}. {attempt.say}", style="bold"))
                before = pipeline.reports_count
                said = await asyncio.to_thread(_client, attempt, pki, proxy_port)
                if console is not None:
                    console.print(Text(f"  {said}", style="dim italic"))
                await _until(lambda: pipeline.reports_count > before, ATTEMPT_TIMEOUT)
        finally:
            await relay.stop(1.0)
            observer.flush()
            await asyncio.to_thread(server.stop)
            pipeline.run_finished(run, time.time())
    return pipeline
