"""The relay as a real process: ``python -m tlsproxy.relay``, signals and exit codes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.relay_support import REPO, recv_all, serve
from tlsproxy.relay.server import EXIT_LISTEN, EXIT_OK, EXIT_USAGE

pytestmark = pytest.mark.network


def start_relay(*args: str) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlsproxy.relay", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        if m:
            return proc, (m.group(1), int(m.group(2)))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"relay did not start: {proc.communicate()}")


def test_sigterm_lets_an_open_connection_finish_then_exits_0():
    def handler(conn: socket.socket) -> None:
        request = recv_all(conn, limit=5)
        time.sleep(0.8)  # still busy when SIGTERM arrives
        conn.sendall(request[::-1])

    server = serve(handler, count=1)
    proc, address = start_relay("--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{server.address[1]}",
                                "--grace", "5", "--quiet-data")
    try:
        client = socket.create_connection(address)
        client.sendall(b"hello")
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert recv_all(client, limit=5) == b"olleh"  # answered during the grace period
        client.close()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_OK
    assert "SIGTERM" in err and "stopped" in err
    assert re.search(r"#\d+ closed how=fin by=", out), out


def test_grace_period_ends_with_shutdown_close():
    def handler(conn: socket.socket) -> None:
        recv_all(conn)  # never answers; waits for the relay to close

    server = serve(handler, count=1)
    proc, address = start_relay("--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{server.address[1]}",
                                "--grace", "0.3")
    try:
        client = socket.create_connection(address)
        client.sendall(b"x")
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert recv_all(client) == b""  # closed by the proxy after the grace period
        client.close()
        out, _err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_OK
    assert "how=shutdown by=proxy" in out


def test_bad_configuration_exits_2():
    proc = subprocess.run([sys.executable, "-m", "tlsproxy.relay", "--listen", "0.0.0.0:0", "--mode", "connect"],
                          cwd=REPO, capture_output=True, text=True, timeout=20)
    assert proc.returncode == EXIT_USAGE
    assert "open relay" in proc.stderr


def test_address_in_use_exits_3():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "tlsproxy.relay", "--listen", f"127.0.0.1:{port}",
                               "--upstream", "127.0.0.1:1"], cwd=REPO, capture_output=True, text=True, timeout=20)
    assert proc.returncode == EXIT_LISTEN
    assert "cannot listen" in proc.stderr
