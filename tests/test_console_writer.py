"""A transcript nobody reads must not hold up the relay: output is dropped, not waited for."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tlsproxy.sinks.writer import BackgroundWriter

ROOT = Path(__file__).resolve().parents[1]


def test_writes_return_at_once_when_the_reader_stalls():
    read_fd, write_fd = os.pipe()  # nobody reads: the pipe fills after 64 KiB
    stream = os.fdopen(write_fd, "w")
    writer = BackgroundWriter(stream, max_pending=64 * 1024)
    start = time.monotonic()
    for _ in range(2000):
        writer.write("x" * 200 + "\n")  # 400 KB: far past the pipe and the buffer
    assert time.monotonic() - start < 1.0
    assert writer.dropped > 0
    os.close(read_fd)  # the thread's pending write fails and it gives up
    writer.close(timeout=2.0)


def test_everything_arrives_when_the_reader_keeps_up(tmp_path):
    target = (tmp_path / "out.txt").open("w")
    writer = BackgroundWriter(target)
    for i in range(1000):
        writer.write(f"line {i}\n")
    writer.close(timeout=5.0)
    target.close()
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert lines == [f"line {i}" for i in range(1000)] and writer.dropped == 0


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_relay_keeps_forwarding_while_stdout_is_not_read():
    srv, _ = _echo_server()
    upstream = srv.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # stdout is a pipe we never read; stderr tells us when it listens.
    proc = subprocess.Popen([sys.executable, "-m", "tlsproxy", "run", "-v", "--listen", f"127.0.0.1:{port}",
                             "--upstream", f"127.0.0.1:{upstream}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 20
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            if "listening on" in proc.stderr.readline().decode():
                break
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        start = time.monotonic()
        for _ in range(200):  # each connection writes transcript lines that nobody reads
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"not TLS at all, just bytes\n" * 50)
                got = b""
                while len(got) < 27 * 50:
                    got += c.recv(65536)
                assert got == b"not TLS at all, just bytes\n" * 50
        assert time.monotonic() - start < 30
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        srv.close()
