"""The byte pump between real sockets: integrity, half-close, resets, backpressure, scale."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from tests.relay_support import RecordingObserver, RelayThread, fixed, recv_all, recv_hash, send_chunks, serve, wait_for
from tlsproxy.relay.config import MAX_BUFFERED_PER_CONNECTION
from tlsproxy.wire.events import Direction

pytestmark = pytest.mark.network

MiB = 1 << 20


def _rst_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_random_streams_both_ways_arrive_byte_exact():
    """10 MiB of random bytes each way at once: both peers' SHA-256 match what the other sent,
    and the observer saw the same bytes after they were forwarded."""
    up, down = os.urandom(10 * MiB), os.urandom(10 * MiB)
    server_view: dict[str, object] = {}

    def handler(conn: socket.socket) -> None:
        t = threading.Thread(target=send_chunks, args=(conn, down, 100_003))
        t.start()
        server_view["got"] = recv_hash(conn)
        t.join()
        conn.shutdown(socket.SHUT_WR)

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        client = socket.create_connection(relay.address)
        sender = threading.Thread(target=lambda: (send_chunks(client, up, 65_537), client.shutdown(socket.SHUT_WR)))
        sender.start()
        client_got = recv_hash(client)
        sender.join()
        client.close()
        server.join()
        summary = relay.observer.only_closed()
    assert server_view["got"] == (hashlib.sha256(up).hexdigest(), len(up))
    assert client_got == (hashlib.sha256(down).hexdigest(), len(down))
    assert (summary.how, summary.bytes_c2s, summary.bytes_s2c) == ("fin", len(up), len(down))
    conn_id = next(iter(relay.observer.closed))
    assert bytes(relay.observer.received[(conn_id, Direction.C2S)]) == up
    assert bytes(relay.observer.received[(conn_id, Direction.S2C)]) == down


def test_plain_tcp_protocol_passes_unchanged():
    """Not TLS at all: an SMTP-like line exchange goes through and comes back verbatim."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"220 mail.example ESMTP ready\r\n")
        line = recv_all(conn, limit=len(b"EHLO client.example\r\n"))
        conn.sendall(b"250 hello " + line[5:])

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        with socket.create_connection(relay.address) as client:
            assert recv_all(client, limit=30) == b"220 mail.example ESMTP ready\r\n"
            client.sendall(b"EHLO client.example\r\n")
            assert recv_all(client) == b"250 hello client.example\r\n"
        server.join()
        summary = relay.observer.only_closed()
    assert summary.how == "fin" and summary.by == "server"
    assert summary.bytes_s2c == 30 + len(b"250 hello client.example\r\n")


def test_half_close_keeps_the_other_direction_flowing():
    """The client sends FIN first; the server sees EOF, then still sends 3 MiB that arrive whole."""
    reply = os.urandom(3 * MiB)
    seen: dict[str, bytes] = {}

    def handler(conn: socket.socket) -> None:
        seen["request"] = recv_all(conn)  # returns at the client's FIN
        time.sleep(0.2)  # the half-closed state lasts a while
        send_chunks(conn, reply)

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        client = socket.create_connection(relay.address)
        client.sendall(b"request body")
        client.shutdown(socket.SHUT_WR)
        got = recv_all(client)
        client.close()
        server.join()
        summary = relay.observer.only_closed()
        calls = relay.observer.calls
    assert seen["request"] == b"request body"
    assert hashlib.sha256(got).digest() == hashlib.sha256(reply).digest()
    assert summary.how == "fin" and summary.by == "client"
    eofs = [c[2] for c in calls if c[0] == "eof"]
    assert eofs == [Direction.C2S, Direction.S2C]


def test_server_reset_reaches_the_client_as_a_reset():
    def handler(conn: socket.socket) -> None:
        recv_all(conn, limit=5)
        _rst_close(conn)

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        client = socket.create_connection(relay.address)
        client.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            while client.recv(100):
                pass
        client.close()
        summary = relay.observer.only_closed()
    assert (summary.how, summary.by) == ("reset", "server")


def test_client_reset_reaches_the_server_as_a_reset():
    outcome: dict[str, object] = {}

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"welcome")
        try:
            while conn.recv(100):
                pass
            outcome["result"] = "eof"
        except ConnectionResetError:
            outcome["result"] = "reset"

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        client = socket.create_connection(relay.address)
        assert recv_all(client, limit=7) == b"welcome"
        _rst_close(client)
        server.join()
        summary = relay.observer.only_closed()
    assert outcome["result"] == "reset"
    assert (summary.how, summary.by) == ("reset", "client")


def test_stalled_receiver_pushes_back_to_the_sender_with_bounded_buffering():
    """The server stops reading.  The client soon cannot send any more (its sendall times out),
    the relay holds at most MAX_BUFFERED_PER_CONNECTION bytes meanwhile, and once the server reads
    again every byte arrives intact."""
    data = os.urandom(48 * MiB)
    release = threading.Event()
    result: dict[str, object] = {}

    def handler(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        release.wait(30)
        result["got"] = recv_hash(conn)

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address)) as relay:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        client.connect(relay.address)
        client.settimeout(1.0)
        sent = 0
        peak = 0
        view = memoryview(data)
        try:
            while sent < len(data):
                sent += client.send(view[sent : sent + 65536])
                peak = max(peak, max(relay.call(lambda: [c.buffered_bytes for c in relay.server.connections]) or [0]))
        except TimeoutError:
            pass
        stalled_at = sent
        for _ in range(20):  # the relay stays bounded while stalled
            time.sleep(0.02)
            peak = max(peak, max(relay.call(lambda: [c.buffered_bytes for c in relay.server.connections]) or [0]))
        assert stalled_at < len(data), "the sender was never held back"
        assert 0 < peak <= MAX_BUFFERED_PER_CONNECTION
        release.set()
        client.settimeout(30)
        client.sendall(view[sent:])
        client.shutdown(socket.SHUT_WR)
        recv_all(client)
        client.close()
        server.join()
    assert result["got"] == (hashlib.sha256(data).hexdigest(), len(data))


@pytest.mark.slow
def test_two_hundred_concurrent_connections_each_get_their_own_bytes():
    def handler(conn: socket.socket) -> None:
        data = recv_all(conn)
        conn.sendall(hashlib.sha256(data).digest() + data[::-1])

    server = serve(handler, count=200, backlog=256)
    with RelayThread(fixed(server.address)) as relay:
        clients = [socket.create_connection(relay.address) for _ in range(200)]
        assert wait_for(lambda: relay.open_connections() == 200)
        payloads = [os.urandom(1000 + i * 37) for i in range(200)]
        for c, p in zip(clients, payloads):
            c.sendall(p)
            c.shutdown(socket.SHUT_WR)
        for c, p in zip(clients, payloads):
            got = recv_all(c)
            assert got == hashlib.sha256(p).digest() + p[::-1]
            c.close()
        server.join()
        summaries = relay.observer.wait_closed(200)
    assert len({s.bytes_c2s for s in summaries}) == 200
    assert all(s.how == "fin" for s in summaries)


class _Exploding(RecordingObserver):
    def data(self, conn_id, direction, data, at):
        super().data(conn_id, direction, data, at)
        if direction is Direction.C2S:
            raise RuntimeError("parser bug")


def test_failing_observer_stops_observing_only_that_connection(capsys):
    """An observer that raises on the first chunk: forwarding goes on and the close says why."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(recv_all(conn))

    server = serve(handler, count=1)
    observer = _Exploding()
    with RelayThread(fixed(server.address), observer) as relay:
        with socket.create_connection(relay.address) as client:
            client.sendall(b"first")
            time.sleep(0.05)
            client.sendall(b" second")
            client.shutdown(socket.SHUT_WR)
            assert recv_all(client) == b"first second"
        server.join()
        summary = observer.only_closed()
    assert summary.how == "fin" and summary.bytes_c2s == 12
    assert "observer failed in data: RuntimeError: parser bug" in summary.reason
    data_calls = [c for c in observer.calls if c[0] == "data"]
    assert len(data_calls) == 1  # switched off after the first failure


def test_events_come_in_order_with_ids_and_addresses():
    def handler(conn: socket.socket) -> None:
        conn.sendall(recv_all(conn).upper())

    server = serve(handler, count=2)
    with RelayThread(fixed(server.address)) as relay:
        for _ in range(2):
            with socket.create_connection(relay.address) as client:
                client.sendall(b"abc")
                client.shutdown(socket.SHUT_WR)
                assert recv_all(client) == b"ABC"
        relay.observer.wait_closed(2)
        obs = relay.observer
    ids = sorted(obs.opened)
    assert ids[1] > ids[0]
    meta = obs.opened[ids[0]]
    assert meta.listener == "test" and meta.mode == "fixed" and meta.target == server.address
    assert meta.client[0] == "127.0.0.1" and meta.client[1] > 0
    kinds = [c[0] for c in obs.calls if c[1] == ids[0]]
    assert kinds[:2] == ["opened", "upstream"] and kinds[-1] == "closed"
    assert kinds.index("data") < kinds.index("eof")
    s = obs.closed[ids[0]]
    assert s.ended >= s.started and s.duration >= 0 and s.ended_monotonic >= meta.started_monotonic


def test_idle_timeout_closes_a_silent_connection():
    def handler(conn: socket.socket) -> None:
        recv_all(conn)

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address, idle_timeout=0.4)) as relay:
        client = socket.create_connection(relay.address)
        client.sendall(b"x")
        t0 = time.monotonic()
        assert recv_all(client) == b""  # the relay closed it
        waited = time.monotonic() - t0
        summary = relay.observer.only_closed()
        client.close()
    assert 0.3 <= waited < 3.0
    assert (summary.how, summary.by) == ("idle_timeout", "proxy")


def test_max_connections_wait_holds_the_next_one_in_the_backlog():
    def handler(conn: socket.socket) -> None:
        conn.sendall(recv_all(conn))

    server = serve(handler, count=2)
    with RelayThread(fixed(server.address, max_connections=1, when_full="wait")) as relay:
        first = socket.create_connection(relay.address)
        first.sendall(b"one")
        assert wait_for(lambda: relay.open_connections() == 1)
        second = socket.create_connection(relay.address)  # completes in the kernel backlog
        second.sendall(b"two")
        second.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        assert relay.server.total_accepted == 1
        first.shutdown(socket.SHUT_WR)
        assert recv_all(first) == b"one"
        assert recv_all(second) == b"two"  # served once the first finished
        first.close()
        second.close()
        assert len(relay.observer.wait_closed(2)) == 2


def test_max_connections_refuse_resets_the_extra_connection():
    def handler(conn: socket.socket) -> None:
        conn.sendall(recv_all(conn))

    server = serve(handler, count=1)
    with RelayThread(fixed(server.address, max_connections=1, when_full="refuse")) as relay:
        first = socket.create_connection(relay.address)
        assert wait_for(lambda: relay.open_connections() == 1)
        second = socket.create_connection(relay.address)
        with pytest.raises(ConnectionResetError):
            second.recv(10)
        second.close()
        summaries = relay.observer.wait_closed(1)
        assert summaries[0].how == "refused" and "max-connections" in summaries[0].reason
        first.sendall(b"still fine")
        first.shutdown(socket.SHUT_WR)
        assert recv_all(first) == b"still fine"
        first.close()


def test_graceful_stop_lets_open_connections_finish_then_closes_them():
    release = threading.Event()

    def handler(conn: socket.socket) -> None:
        release.wait(10)
        conn.sendall(b"late answer")

    server = serve(handler, count=2)
    relay = RelayThread(fixed(server.address)).__enter__()
    try:
        finishing = socket.create_connection(relay.address)
        assert wait_for(lambda: relay.open_connections() == 1)
        stopper = threading.Thread(target=relay.stop, args=(5.0,))
        stopper.start()
        time.sleep(0.2)
        with pytest.raises(OSError) as refused:  # no longer accepting
            socket.create_connection(relay.address, timeout=2)
        assert refused.value.errno == errno.ECONNREFUSED
        release.set()
        assert recv_all(finishing, limit=11) == b"late answer"
        finishing.close()
        stopper.join(10)
        assert not stopper.is_alive()
        assert relay.observer.only_closed().how == "fin"
    finally:
        relay.stop(0)
