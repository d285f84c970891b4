"""Real TLS through the relay: Python ``ssl`` and ``openssl s_server``/``s_client`` peers."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess

import pytest

from tests.certfactory import make_chain, make_leaf
from tests.relay_support import RelayThread, fixed, serve
from tlsproxy.wire.events import Direction

pytestmark = pytest.mark.network

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    chain = make_chain("localhost")
    server = chain.write_pem(directory, "server")
    client_leaf = make_leaf(chain.root, "client.example", eku=("clientAuth",))
    client = client_leaf.write_pem(directory, "client")
    return {"server": server, "client": client}


def _server_ctx(pki, version: str, *, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    ctx.load_cert_chain(pki["server"].cert, pki["server"].key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki["server"].ca)
    return ctx


def _client_ctx(pki, version: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["server"].ca))
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_python_tls_session_with_data_both_ways(pki, version):
    request = b"PUT /blob HTTP/1.1\r\n\r\n" + os.urandom(300_000)
    response = os.urandom(500_000)
    server_ctx = _server_ctx(pki, version)
    seen: dict[str, object] = {}

    def handler(raw: socket.socket) -> None:
        with server_ctx.wrap_socket(raw, server_side=True) as tls:
            got = bytearray()
            while len(got) < len(request):
                got += tls.recv(65536)
            seen["request"] = bytes(got)
            seen["version"] = tls.version()
            tls.sendall(response)
            tls.unwrap()

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        raw = socket.create_connection(relay.address)
        tls = _client_ctx(pki, version).wrap_socket(raw, server_hostname="localhost")
        tls.sendall(request)
        got = bytearray()
        while len(got) < len(response):
            got += tls.recv(65536)
        assert tls.version() == f"TLSv{version}"
        tls.unwrap()
        tls.close()
        server.join()
        summary = relay.observer.only_closed()
        conn_id = next(iter(relay.observer.closed))
        observed_c2s = bytes(relay.observer.received[(conn_id, Direction.C2S)])
    assert seen["request"] == request and bytes(got) == response
    assert seen["version"] == f"TLSv{version}"
    assert summary.how == "fin"
    assert observed_c2s[:1] == b"\x16"  # the observer got the ClientHello record first
    assert summary.bytes_s2c > len(response) and summary.bytes_c2s > len(request)


def _mtls_outcome(pki, version: str, *, via_relay: bool) -> tuple[str, str]:
    """Server requires a client certificate; the client has none.  Returns how each side failed."""
    server_ctx = _server_ctx(pki, version, require_client_cert=True)
    outcome: dict[str, str] = {}

    def failure(exc: BaseException) -> str:
        return f"{type(exc).__name__}:{getattr(exc, 'reason', None)}"

    def handler(raw: socket.socket) -> None:
        try:
            with server_ctx.wrap_socket(raw, server_side=True) as tls:
                tls.recv(100)
                outcome["server"] = "no error"
        except (ssl.SSLError, OSError) as exc:
            outcome["server"] = failure(exc)

    def client(address: tuple[str, int]) -> None:
        raw = socket.create_connection(address)
        try:
            tls = _client_ctx(pki, version).wrap_socket(raw, server_hostname="localhost")
            # Only read: a client that writes after the server's alert races the server's close
            # (RST on unread data), which makes even the direct outcome vary.
            tls.recv(100)
            outcome["client"] = "no error"
        except (ssl.SSLError, OSError) as exc:
            outcome["client"] = failure(exc)
        finally:
            raw.close()

    server = serve(handler, count=1)
    try:
        if via_relay:
            with RelayThread(fixed(server.address)) as relay:
                client(relay.address)
                server.join()
                summary = relay.observer.only_closed()
                assert summary.bytes_c2s > 0 and summary.bytes_s2c > 0
        else:
            client(server.address)
            server.join()
    finally:
        server.close()
    return outcome["client"], outcome["server"]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_failing_mutual_tls_fails_identically_through_the_relay(pki, version):
    direct = _mtls_outcome(pki, version, via_relay=False)
    assert "no error" not in direct[0] and "no error" not in direct[1]
    assert _mtls_outcome(pki, version, via_relay=True) == direct


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")


@needs_openssl
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_openssl_s_client_and_s_server_through_the_relay(pki, version):
    flag = "-tls1_2" if version == "1.2" else "-tls1_3"
    s_server = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", str(pki["server"].cert),
         "-key", str(pki["server"].key), "-cert_chain", str(pki["server"].cert), "-naccept", "1", "-rev", flag],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        port = None
        for line in s_server.stdout:  # type: ignore[union-attr]
            m = re.match(r"ACCEPT .*:(\d+)$", line.strip())
            if m:
                port = int(m.group(1))
                break
        assert port, "s_server did not report its port"
        with RelayThread(fixed(("127.0.0.1", port))) as relay:
            host, rport = relay.address
            # -rev: s_server answers each line reversed; -ign_eof keeps s_client reading after stdin ends.
            s_client = subprocess.run(
                ["openssl", "s_client", "-connect", f"{host}:{rport}", "-servername", "localhost",
                 "-CAfile", str(pki["server"].ca), "-verify_return_error", "-ign_eof", flag],
                input="through the relay\nCLOSE\n", capture_output=True, text=True, timeout=20,
            )
            summary = relay.observer.only_closed()
    finally:
        s_server.kill()
        s_server.wait()
    assert "yaler eht hguorht" in s_client.stdout
    assert f"Protocol  : TLSv{version}" in s_client.stdout or f"TLSv{version}" in s_client.stdout
    assert "Verify return code: 0 (ok)" in s_client.stdout
    assert summary.bytes_c2s > 0 and summary.bytes_s2c > 0


def test_tls_stream_bytes_seen_by_observer_equal_what_the_server_received(pki):
    """The observer's C2S view of a TLS session is exactly the server's raw view."""
    server_ctx = _server_ctx(pki, "1.3")
    raw_seen = bytearray()

    def handler(raw: socket.socket) -> None:
        # Terminate TLS over MemoryBIOs so the raw bytes the server's socket received are known.
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = outgoing.read()
                if out:
                    raw.sendall(out)
                data = raw.recv(65536)
                raw_seen.extend(data)
                incoming.write(data)
        raw.sendall(outgoing.read())
        got = b""
        while not got:
            try:
                got = obj.read(100)
            except ssl.SSLWantReadError:
                data = raw.recv(65536)
                if not data:
                    break
                raw_seen.extend(data)
                incoming.write(data)
        obj.write(got.upper())
        raw.sendall(outgoing.read())
        raw.shutdown(socket.SHUT_WR)
        while data := raw.recv(65536):
            raw_seen.extend(data)

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        raw = socket.create_connection(relay.address)
        tls = _client_ctx(pki, "1.3").wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"ping")
        assert tls.recv(100) == b"PING"
        tls.close()
        server.join()
        relay.observer.only_closed()
        conn_id = next(iter(relay.observer.closed))
        observed = bytes(relay.observer.received[(conn_id, Direction.C2S)])
    assert hashlib.sha256(observed).digest() == hashlib.sha256(bytes(raw_seen)).digest()
