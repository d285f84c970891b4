"""Transparent mode for real: nftables ``redirect`` in a private network namespace.

The test creates a namespace with only loopback, adds nat rules that redirect the client's
connections (from 127.0.0.3 and fd00::3) to the relay, and runs this file inside the namespace
(``--inner``) where a server, the relay and a client meet.  The relay must find the original
destination with SO_ORIGINAL_DST, IPv4 and IPv6.  It needs root, ``ip`` and ``nft``; otherwise it
is skipped with the reason (the decoding itself is unit-tested in test_relay_config.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_PORT, PROXY_PORT4, PROXY_PORT6, PROXY_PORT_DUAL = 9000, 8443, 8444, 8445

RULES = f"""
table ip tlsproxy_test {{
  chain output {{
    type nat hook output priority -100;
    ip saddr 127.0.0.3 tcp dport {SERVER_PORT} redirect to :{PROXY_PORT4}
    ip saddr 127.0.0.4 tcp dport {SERVER_PORT} redirect to :{PROXY_PORT_DUAL}
  }}
}}
table ip6 tlsproxy_test {{
  chain output {{
    type nat hook output priority -100;
    ip6 saddr fd00::3 tcp dport {SERVER_PORT} redirect to :{PROXY_PORT6}
  }}
}}
"""


def _why_not() -> str | None:
    if not sys.platform.startswith("linux"):
        return "transparent mode is Linux-only"
    if os.geteuid() != 0:
        return "needs root to create a network namespace and nat rules"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables)"
    return None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=20)


@pytest.mark.network
@pytest.mark.slow
def test_transparent_mode_finds_the_original_destination_ipv4_and_ipv6():
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    ns = f"tlsproxy-{uuid.uuid4().hex[:8]}"
    try:
        _sh("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()}")
    try:
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        for addr in ("fd00::2/128", "fd00::3/128"):
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", "lo", "nodad")
        nft = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=RULES, capture_output=True,
                             text=True, timeout=20)
        if nft.returncode != 0:
            pytest.skip(f"nftables nat is not available here: {nft.stderr.strip()}")
        inner = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()), "--inner"],
            capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
    assert inner.returncode == 0, inner.stderr
    result = json.loads(inner.stdout.strip().splitlines()[-1])
    assert result["v4"]["reply"] == "127.0.0.2:9000 got hello v4"
    assert result["v6"]["reply"] == "fd00::2:9000 got hello v6"
    assert result["v4"]["target"] == ["127.0.0.2", SERVER_PORT]
    assert result["dual"]["reply"] == "127.0.0.2:9000 got hello dual"
    assert result["dual"]["target"] == ["127.0.0.2", SERVER_PORT]
    assert result["v6"]["target"] == ["fd00::2", SERVER_PORT]
    assert result["direct"]["error"] == "ConnectionResetError"
    assert "not redirected" in result["direct"]["reason"]


# -- inside the namespace ------------------------------------------------------------------------------


def _inner() -> None:
    sys.path.insert(0, str(REPO))
    from tests.relay_support import RecordingObserver, RelayThread, listener
    from tlsproxy.relay.config import RelayConfig

    def echo_server(host: str, family: int) -> socket.socket:
        lsock = socket.socket(family)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((host, SERVER_PORT))
        lsock.listen(8)

        def run() -> None:
            while True:
                try:
                    conn, _ = lsock.accept()
                except OSError:
                    return
                with conn:
                    local = conn.getsockname()
                    data = conn.recv(100)
                    conn.sendall(f"{local[0]}:{local[1]} got ".encode() + data)

        threading.Thread(target=run, daemon=True).start()
        return lsock

    servers = [echo_server("127.0.0.2", socket.AF_INET), echo_server("fd00::2", socket.AF_INET6)]
    observer = RecordingObserver()
    config = RelayConfig(listeners=(
        listener("transparent", host="127.0.0.1", port=PROXY_PORT4, label="t4"),
        listener("transparent", host="::1", port=PROXY_PORT6, label="t6"),
        # dual-stack: IPv4 clients arrive as ::ffff:127.0.0.1 (the namespace is private, so "::" is safe)
        listener("transparent", host="::", port=PROXY_PORT_DUAL, label="dual"),
    ))
    result: dict[str, dict[str, object]] = {}
    with RelayThread(config, observer):
        for key, family, src, dst in (
            ("v4", socket.AF_INET, "127.0.0.3", "127.0.0.2"),
            ("v6", socket.AF_INET6, "fd00::3", "fd00::2"),
            ("dual", socket.AF_INET, "127.0.0.4", "127.0.0.2"),
        ):
            with socket.socket(family) as c:
                c.bind((src, 0))
                c.connect((dst, SERVER_PORT))
                c.sendall(f"hello {key}".encode())
                c.shutdown(socket.SHUT_WR)
                reply = b""
                while data := c.recv(100):
                    reply += data
            closed = observer.wait_closed(len(result) + 1)
            meta = observer.opened[max(observer.opened)]
            result[key] = {"reply": reply.decode(), "target": list(meta.target or ()), "how": closed[-1].how}
        with socket.create_connection(("127.0.0.1", PROXY_PORT4)) as c:  # not redirected: refused
            try:
                c.recv(10)
                error = "none"
            except OSError as exc:
                error = type(exc).__name__
        summary = observer.wait_closed(4)[-1]
        result["direct"] = {"error": error, "reason": summary.reason}
    for s in servers:
        s.close()
    print(json.dumps(result))


if __name__ == "__main__" and "--inner" in sys.argv:
    _inner()
