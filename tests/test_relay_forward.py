"""The forward-proxy modes with real clients: HTTP CONNECT and SOCKS5 with curl, SNI routing with
Python ``ssl``, the allow list, and what the client sees when the upstream cannot be reached."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess

import pytest

from tests.certfactory import make_chain
from tests.relay_support import RelayThread, fixed, listener, recv_all, serve
from tlsproxy.relay.config import RelayConfig, parse_allow

pytestmark = pytest.mark.network

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _ipv6_loopback()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    chain = make_chain("localhost", sans=["localhost", "127.0.0.1", "::1"])
    return chain.write_pem(tmp_path_factory.mktemp("pki"), "server")


def https_server(pki, *, host: str = "127.0.0.1", count: int = 1, body: bytes = b"hello through the tunnel\n"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)

    def handler(raw: socket.socket) -> None:
        try:
            tls = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the tests that refuse a client never reach the server anyway
        with tls:
            head = b""
            while b"\r\n\r\n" not in head:
                data = tls.recv(4096)
                if not data:
                    return
                head += data
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    return serve(handler, host=host, count=count)


def one_listener(spec, **options) -> RelayConfig:
    return RelayConfig(listeners=(spec,), **options)


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "15", *args], capture_output=True, text=True, timeout=30)


def free_port() -> int:
    """A port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_exchange(address: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(address) as c:
        c.sendall(request)
        return recv_all(c)


# -- HTTP CONNECT ----------------------------------------------------------------------------------


@needs_curl
def test_curl_through_connect_proxy(pki):
    server = https_server(pki)
    with RelayThread(one_listener(listener("connect"))) as relay:
        host, port = relay.address
        result = curl("-x", f"http://{host}:{port}", "--cacert", str(pki.ca), f"https://localhost:{server.address[1]}/")
        summary = relay.observer.only_closed()
        meta = next(iter(relay.observer.opened.values()))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello through the tunnel\n"
    assert meta.target == ("localhost", server.address[1]) and meta.mode == "connect"
    assert summary.how == "fin" and summary.bytes_c2s > 0
    server.join()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n", b"405"),
        (b"CONNECT example.test HTTP/1.1\r\n\r\n", b"400"),  # no port
        (b"CONNECT example.test:443 HTTP/2.0\r\n\r\n", b"505"),
        (b"CONNECT  HTTP/1.1\r\n\r\n", b"400"),
        (b"CONNECT bad/host:443 HTTP/1.1\r\n\r\n", b"400"),
        (b"CONNECT example.test:443 HTTP/1.1\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
    ],
    ids=["get", "no-port", "http2", "empty-target", "bad-host", "huge-head"],
)
def test_connect_mode_answers_bad_requests_with_http_errors(request_bytes, status):
    with RelayThread(one_listener(listener("connect"))) as relay:
        reply = http_exchange(relay.address, request_bytes)
        summary = relay.observer.only_closed()
    assert reply.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"Connection: close\r\n" in reply
    assert summary.how == "refused" and summary.by == "proxy"


def test_connect_mode_upstream_refused_is_502():
    port = free_port()
    with RelayThread(one_listener(listener("connect"))) as relay:
        reply = http_exchange(relay.address, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
        summary = relay.observer.only_closed()
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert b"connection refused" in reply
    assert (summary.how, summary.by) == ("upstream_failed", "server")


def test_connect_mode_unresolvable_name_is_502():
    with RelayThread(one_listener(listener("connect"))) as relay:
        reply = http_exchange(relay.address, b"CONNECT no-such-host.invalid:443 HTTP/1.1\r\n\r\n")
        summary = relay.observer.only_closed()
    assert reply.startswith(b"HTTP/1.1 502 ")
    assert b"cannot resolve" in reply
    assert summary.how == "upstream_failed" and "no-such-host.invalid" in summary.reason


def test_connect_mode_connect_timeout_is_504(stuck_server):
    with RelayThread(one_listener(listener("connect"), connect_timeout=0.3)) as relay:
        reply = http_exchange(relay.address, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % stuck_server[1])
        summary = relay.observer.only_closed()
    assert reply.startswith(b"HTTP/1.1 504 Gateway Timeout")
    assert summary.how == "upstream_failed" and "connect timeout" in summary.reason


@pytest.fixture
def stuck_server():
    """A listener whose accept queue is full (backlog 0, one connection parked, never accepted):
    Linux drops further SYNs, so a connect to it hangs until the caller's timeout."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    parked = [socket.create_connection(lsock.getsockname())]
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(lsock.getsockname())
        parked.append(probe)
        pytest.skip("this kernel completes connections beyond a full accept queue; cannot provoke a connect timeout")
    except TimeoutError:
        probe.close()
    try:
        yield lsock.getsockname()
    finally:
        for s in parked:
            s.close()
        lsock.close()


def test_connect_mode_refuses_destinations_outside_the_allow_list(pki):
    spec = listener("connect", allow=parse_allow("*.example.test:443,127.0.0.0/8:1-1023"))
    server = https_server(pki)  # listens on a high port: not allowed
    with RelayThread(one_listener(spec)) as relay:
        reply = http_exchange(relay.address, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % server.address[1])
        summary = relay.observer.only_closed()
    server.close()
    assert reply.startswith(b"HTTP/1.1 403 Forbidden")
    assert summary.how == "refused" and "--allow" in summary.reason


# -- fixed mode upstream failures ------------------------------------------------------------------


def _expect_reset(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as c:
        c.settimeout(10)
        with pytest.raises(ConnectionResetError):
            c.sendall(b"\x16\x03\x01")
            while c.recv(100):
                pass


def test_fixed_mode_refused_upstream_resets_the_client():
    with RelayThread(fixed(("127.0.0.1", free_port()))) as relay:
        _expect_reset(relay.address)
        summary = relay.observer.only_closed()
    assert summary.how == "upstream_failed" and "connection refused" in summary.reason


def test_fixed_mode_unresolvable_upstream_resets_the_client():
    with RelayThread(fixed(("no-such-host.invalid", 443))) as relay:
        _expect_reset(relay.address)
        summary = relay.observer.only_closed()
    assert summary.how == "upstream_failed" and "cannot resolve" in summary.reason


def test_fixed_mode_connect_timeout_resets_the_client(stuck_server):
    with RelayThread(fixed(stuck_server, connect_timeout=0.3)) as relay:
        _expect_reset(relay.address)
        summary = relay.observer.only_closed()
    assert summary.how == "upstream_failed" and "within 0.3 s" in summary.reason
    assert 0.25 <= summary.duration < 5


def _reset_at_once(conn: socket.socket) -> None:
    """A server that accepts and resets at once (an access rule, a full server)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_fixed_mode_upstream_that_resets_at_once_is_a_reset_by_the_server():
    """However the race between our connect and its reset goes, the server was reached and reset the
    connection: never reported as "could not connect" (upstream_failed)."""
    attempts = 20
    upstream = serve(_reset_at_once, count=attempts)
    with RelayThread(fixed(upstream.address)) as relay:
        for _ in range(attempts):
            with socket.create_connection(relay.address) as c:
                c.settimeout(10)
                try:
                    c.sendall(b"\x16\x03\x01")
                    while c.recv(100):
                        pass
                except ConnectionResetError:
                    pass
        summaries = relay.observer.wait_closed(attempts)
    assert {(s.how, s.by) for s in summaries} == {("reset", "server")}


# -- SOCKS5 ----------------------------------------------------------------------------------------


@needs_curl
@pytest.mark.parametrize("flag", ["--socks5-hostname", "--socks5"])
def test_curl_through_socks5(pki, flag):
    server = https_server(pki)
    with RelayThread(one_listener(listener("socks5"))) as relay:
        host, port = relay.address
        url = f"https://localhost:{server.address[1]}/"
        result = curl(flag, f"{host}:{port}", "--cacert", str(pki.ca), url)
        summary = relay.observer.only_closed()
        meta = next(iter(relay.observer.opened.values()))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello through the tunnel\n"
    # --socks5-hostname sends the name; --socks5 resolves locally and sends an address.
    expected_host = "localhost" if flag == "--socks5-hostname" else "127.0.0.1"
    assert meta.target == (expected_host, server.address[1])
    assert summary.how == "fin"


@needs_curl
@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback on this machine")
def test_curl_through_socks5_to_an_ipv6_destination_over_an_ipv6_listener(pki):
    server = https_server(pki, host="::1")
    with RelayThread(one_listener(listener("socks5", host="::1"))) as relay:
        host, port = relay.address
        result = curl("--socks5", f"[{host}]:{port}", "--cacert", str(pki.ca), f"https://[::1]:{server.address[1]}/")
        meta = next(iter(relay.observer.opened.values()))
        relay.observer.only_closed()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello through the tunnel\n"
    assert meta.target == ("::1", server.address[1])
    assert meta.client[0] == "::1"


def _socks_connect(address, request: bytes) -> bytes:
    with socket.create_connection(address) as c:
        c.sendall(b"\x05\x01\x00")
        assert recv_all(c, limit=2) == b"\x05\x00"
        c.sendall(request)
        return recv_all(c)


def test_socks5_reports_refused_and_unresolvable_with_rfc1928_codes():
    port = free_port()
    with RelayThread(one_listener(listener("socks5"))) as relay:
        refused = _socks_connect(relay.address, b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
        name = b"no-such-host.invalid"
        unresolved = _socks_connect(relay.address, b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x01\xbb")
        bind = _socks_connect(relay.address, b"\x05\x02\x00\x01\x7f\x00\x00\x01\x01\xbb")
        relay.observer.wait_closed(3)
    assert refused[:2] == b"\x05\x05"  # connection refused
    assert unresolved[:2] == b"\x05\x04"  # host unreachable
    assert bind[:2] == b"\x05\x07"  # command not supported


def test_socks5_without_no_auth_method_gets_ff():
    with RelayThread(one_listener(listener("socks5"))) as relay:
        with socket.create_connection(relay.address) as c:
            c.sendall(b"\x05\x01\x02")  # username/password only
            assert recv_all(c) == b"\x05\xff"
        assert relay.observer.only_closed().how == "refused"


def test_socks5_refuses_destination_outside_allow_list_with_code_2():
    spec = listener("socks5", allow=parse_allow("allowed.example.test:443"))
    with RelayThread(one_listener(spec)) as relay:
        reply = _socks_connect(relay.address, b"\x05\x01\x00\x01\x7f\x00\x00\x01\x01\xbb")
        summary = relay.observer.only_closed()
    assert reply[:2] == b"\x05\x02"
    assert summary.how == "refused" and "127.0.0.1:443" in summary.reason


# -- SNI -------------------------------------------------------------------------------------------


def test_sni_mode_routes_by_server_name(pki):
    server = https_server(pki, body=b"routed by SNI\n")
    spec = listener("sni", upstream_port=server.address[1])
    with RelayThread(one_listener(spec)) as relay:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with ctx.wrap_socket(socket.create_connection(relay.address), server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            reply = recv_all(tls)
        summary = relay.observer.only_closed()
        meta = next(iter(relay.observer.opened.values()))
    assert reply.endswith(b"routed by SNI\n")
    assert meta.target == ("localhost", server.address[1])
    assert summary.how == "fin"
    server.join()


def test_sni_mode_refuses_a_client_hello_without_server_name():
    spec = listener("sni", upstream_port=443)
    with RelayThread(one_listener(spec)) as relay:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with pytest.raises(ssl.SSLError) as failure:
            ctx.wrap_socket(socket.create_connection(relay.address), server_hostname=None)
        summary = relay.observer.only_closed()
    assert "UNRECOGNIZED_NAME" in str(failure.value)
    assert summary.how == "refused" and "no server_name" in summary.reason
    assert summary.bytes_c2s == 0  # nothing was forwarded anywhere


def test_sni_mode_refuses_a_name_outside_the_allow_list(pki):
    spec = listener("sni", upstream_port=443, allow=parse_allow("*.example.test"))
    with RelayThread(one_listener(spec)) as relay:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises(ssl.SSLError) as failure:
            ctx.wrap_socket(socket.create_connection(relay.address), server_hostname="localhost")
        summary = relay.observer.only_closed()
    assert "ACCESS_DENIED" in str(failure.value)
    assert summary.how == "refused" and "localhost:443" in summary.reason


def test_sni_mode_resets_a_client_that_is_not_tls():
    with RelayThread(one_listener(listener("sni"))) as relay:
        with socket.create_connection(relay.address) as c:
            c.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with pytest.raises(ConnectionResetError):
                c.recv(100)
        summary = relay.observer.only_closed()
    assert summary.how == "refused" and "not TLS" in summary.reason
