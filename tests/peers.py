"""Real TLS peers without sockets: Python's ``ssl`` over a ``MemoryBIO`` pair.

``run_session`` drives a client and a server object until both are done (or one fails), moving
the bytes each side writes to the other and recording every chunk in the order it was sent.  The
chunks are what a proxy between them would have seen, so tests feed them to the parser.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.certfactory import Chain, make_chain
from tlsproxy.wire.events import Direction


@dataclass
class Session:
    chunks: list[tuple[Direction, bytes]] = field(default_factory=list)
    client_error: BaseException | None = None
    server_error: BaseException | None = None
    client_version: str | None = None
    cipher: tuple[str, str, int] | None = None
    received_by_server: bytes = b""
    received_by_client: bytes = b""
    session: ssl.SSLSession | None = None
    session_reused: bool = False

    def stream(self, direction: Direction) -> bytes:
        return b"".join(data for d, data in self.chunks if d is direction)

    @property
    def established(self) -> bool:
        return self.client_error is None and self.server_error is None


def _pump(src: ssl.MemoryBIO, direction: Direction, dst: ssl.MemoryBIO, session: Session) -> bool:
    data = src.read()
    if data:
        session.chunks.append((direction, data))
        dst.write(data)
    return bool(data)


def run_session(
    client_ctx: ssl.SSLContext,
    server_ctx: ssl.SSLContext,
    *,
    server_hostname: str | None = "localhost",
    client_data: Sequence[bytes] = (b"GET / HTTP/1.1\r\n\r\n",),
    server_data: Sequence[bytes] = (b"HTTP/1.1 200 OK\r\n\r\nhello",),
    close: bool = True,
    session: ssl.SSLSession | None = None,
) -> Session:
    """Run one TLS session between two ``ssl`` objects and record the bytes each way."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=server_hostname, session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    result = Session()
    c_done = s_done = False
    for _ in range(100):
        if not c_done and result.client_error is None:
            try:
                client.do_handshake()
                c_done = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as exc:
                result.client_error = exc
        moved = _pump(c_out, Direction.C2S, s_in, result)
        if not s_done and result.server_error is None:
            try:
                server.do_handshake()
                s_done = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as exc:
                result.server_error = exc
        moved = _pump(s_out, Direction.S2C, c_in, result) or moved
        if (c_done and s_done) or ((result.client_error or result.server_error) and not moved):
            break
    if not result.established:
        # Let the side that did not fail read the alert, so its error is recorded too.
        for obj, attr in ((client, "client_error"), (server, "server_error")):
            if getattr(result, attr) is None:
                try:
                    obj.do_handshake()
                    obj.read(1)
                except ssl.SSLError as exc:
                    setattr(result, attr, exc)
        _pump(c_out, Direction.C2S, s_in, result)
        _pump(s_out, Direction.S2C, c_in, result)
        return result
    result.client_version = client.version()
    result.cipher = client.cipher()
    for data in client_data:
        client.write(data)
    _pump(c_out, Direction.C2S, s_in, result)
    result.received_by_server = _drain(server)
    _pump(s_out, Direction.S2C, c_in, result)  # TLS 1.3 tickets come after the client's Finished
    for data in server_data:
        server.write(data)
    _pump(s_out, Direction.S2C, c_in, result)
    result.received_by_client = _drain(client)
    result.session = client.session
    result.session_reused = client.session_reused
    if close:
        try:
            client.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        _pump(c_out, Direction.C2S, s_in, result)
        try:
            server.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        _pump(s_out, Direction.S2C, c_in, result)
    return result


def _drain(obj: ssl.SSLObject) -> bytes:
    out = bytearray()
    while True:
        try:
            data = obj.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            break
        if not data:
            break
        out += data
    return bytes(out)


@dataclass
class Pki:
    """A server chain and a client chain, on disk, for ``ssl`` and ``openssl``."""

    server: Chain
    client: Chain
    server_cert: Path
    server_key: Path
    server_ca: Path
    client_cert: Path
    client_key: Path
    client_ca: Path


def make_pki(directory: Path, *, server_kwargs: dict | None = None, client_kwargs: dict | None = None) -> Pki:
    server = make_chain("localhost", root_name="tlsproxy Server Root CA", **(server_kwargs or {}))
    client = make_chain("client.example", root_name="tlsproxy Client Root CA", eku=("clientAuth",),
                        **(client_kwargs or {}))
    sp = server.write_pem(directory, "server")
    cp = client.write_pem(directory, "client")
    return Pki(server=server, client=client, server_cert=sp.cert, server_key=sp.key, server_ca=sp.ca,
               client_cert=cp.cert, client_key=cp.key, client_ca=cp.ca)


def contexts(
    pki: Pki,
    *,
    version: ssl.TLSVersion | None = None,
    require_client_cert: bool = False,
    client_has_cert: bool = False,
    alpn: Iterable[str] | None = None,
    server_alpn: Iterable[str] | None = None,
    ciphers: str | None = None,
    tickets: bool = True,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A matching (client, server) pair of contexts."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(pki.server_ca)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    if version is not None:
        for ctx in (client, server):
            ctx.minimum_version = version
            ctx.maximum_version = version
    if require_client_cert:
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_verify_locations(pki.client_ca)
    if client_has_cert:
        client.load_cert_chain(pki.client_cert, pki.client_key)
    if alpn:
        client.set_alpn_protocols(list(alpn))
    if server_alpn:
        server.set_alpn_protocols(list(server_alpn))
    if ciphers:
        client.set_ciphers(ciphers)
        server.set_ciphers(ciphers)
    if not tickets:
        server.options |= ssl.OP_NO_TICKET
    return client, server


# -- splitting helpers ------------------------------------------------------------------------


def splits(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random places (some pieces a single byte)."""
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 1, 2, 3, 5, 7, 64, 500, 4096))
        out.append(data[pos : pos + n])
        pos += n
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]

