"""Backpressure survives the connect phase of the forward modes.

While the upstream connects, the client's bytes are held; writing them may fill the upstream's
buffer at once, and asyncio says so only once.  The client must then stay paused until the
upstream drains, or a client facing a stalled server makes the proxy buffer without bound.
The proxy's upstream socket gets a small send buffer here, standing in for a real network's
initial send window (on loopback the kernel would swallow megabytes first).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.relay_support import RelayThread, listener
from tlsproxy.relay import pump
from tlsproxy.relay.config import MAX_BUFFERED_PER_CONNECTION, RelayConfig


@pytest.fixture
def small_upstream_sndbuf(monkeypatch):
    real = pump.open_upstream

    async def open_small(loop, host, port, timeout):  # type: ignore[no-untyped-def]
        sock, peer = await real(loop, host, port, timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return sock, peer

    monkeypatch.setattr(pump, "open_upstream", open_small)


def test_bytes_held_during_connect_keep_backpressure(small_upstream_sndbuf):
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(5)
    held: list = []
    threading.Thread(target=lambda: held.append(stalled.accept()), daemon=True).start()
    with RelayThread(RelayConfig(listeners=(listener("connect"),))) as relay:
        client = socket.create_connection(relay.address)
        request = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % stalled.getsockname()[1]
        client.sendall(request + b"a" * (200 * 1024))  # more than the high-water mark, sent at once
        client.setblocking(False)
        sent, chunk, deadline = 0, b"b" * 65536, time.time() + 3
        while time.time() < deadline and sent < 64 << 20:
            try:
                sent += client.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        buffered = relay.call(lambda: [c.buffered_bytes for c in relay.server.connections])
        client.close()
    stalled.close()
    assert buffered and max(buffered) <= MAX_BUFFERED_PER_CONNECTION
    assert sent < 32 << 20  # the client was made to wait, as it would be by a stalled server
