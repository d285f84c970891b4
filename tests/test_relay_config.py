"""Relay configuration, the allow-list decision, the sans-IO mode preambles and SO_ORIGINAL_DST
decoding: no proxying here."""

from __future__ import annotations

import argparse
import ctypes
import socket
import ssl
import tempfile

import pytest

from tests.certfactory import make_chain
from tests.peers import run_session
from tlsproxy.relay.args import add_run_arguments, config_from_args
from tlsproxy.relay.config import ConfigError, ListenerSpec, RelayConfig, check_config, destination_allowed, parse_allow, parse_hostport
from tlsproxy.relay.modes import Connect, ConnectMode, NeedMore, Reject, SniMode, Socks5Mode
from tlsproxy.relay.origdst import decode_sockaddr
from tlsproxy.wire.events import Direction


def parse(*argv: str) -> RelayConfig:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


# -- options ---------------------------------------------------------------------------------------


def test_single_listener_defaults_to_loopback():
    config = parse("--upstream", "server.example:443")
    (spec,) = config.listeners
    assert (spec.host, spec.port, spec.mode, spec.upstream) == ("127.0.0.1", 8443, "fixed", ("server.example", 443))


def test_listener_options_apply_to_the_latest_listen():
    config = parse(
        "--listen", "a=127.0.0.1:8443", "--upstream", "a.example:443",
        "--listen", "127.0.0.1:1080", "--mode", "socks5", "--label", "socks",
        "--listen", "[::1]:8444", "--mode", "sni", "--upstream-port", "8443",
        "--idle-timeout", "0", "--max-connections", "50", "--when-full", "refuse",
    )
    a, socks, sni = config.listeners
    assert (a.name, a.upstream) == ("a", ("a.example", 443))
    assert (socks.name, socks.mode, socks.port) == ("socks", "socks5", 1080)
    assert (sni.host, sni.port, sni.upstream_port) == ("::1", 8444, 8443)
    assert config.idle_timeout is None and config.max_connections == 50 and config.when_full == "refuse"


def test_fixed_mode_without_upstream_is_an_error():
    with pytest.raises(ConfigError, match="--upstream"):
        parse("--listen", "127.0.0.1:8443")


def test_option_given_twice_for_one_listener_is_an_error():
    with pytest.raises(ConfigError, match="twice"):
        parse("--upstream", "a:1", "--listen", "127.0.0.1:1", "--upstream", "b:2")


@pytest.mark.parametrize("mode", ["connect", "socks5", "sni"])
def test_forward_mode_beyond_loopback_needs_an_allow_list(mode):
    with pytest.raises(ConfigError, match="open relay"):
        parse("--listen", "0.0.0.0:9000", "--mode", mode)
    config = parse("--listen", "0.0.0.0:9000", "--mode", mode, "--allow", "*.example.com:443")
    assert check_config(config) == ["listener 0.0.0.0:9000 accepts connections from other machines (all interfaces)"]


def test_parse_hostport_forms():
    assert parse_hostport("[::1]:443") == ("::1", 443)
    assert parse_hostport("8443", default_host="127.0.0.1") == ("127.0.0.1", 8443)
    assert parse_hostport("example.com", default_port=443) == ("example.com", 443)
    with pytest.raises(ConfigError):
        parse_hostport("example.com:99999")


def test_allow_list_decision():
    spec = ListenerSpec(mode="connect", allow=parse_allow("*.example.com:443, 10.0.0.0/8:8000-8999, [2001:db8::/32], exact.test"))
    allowed = [("www.example.com", 443), ("a.b.example.com.", 443), ("10.1.2.3", 8080), ("2001:db8::1", 22),
               ("EXACT.test", 1)]
    refused = [("example.com", 443), ("www.example.com", 80), ("10.1.2.3", 9000), ("11.0.0.1", 8080),
               ("2001:db9::1", 22), ("evil-exact.test", 1)]
    assert all(destination_allowed(spec, h, p) for h, p in allowed)
    assert not any(destination_allowed(spec, h, p) for h, p in refused)
    assert destination_allowed(ListenerSpec(mode="connect"), "anything", 1)  # empty list: loopback only


# -- mode preambles --------------------------------------------------------------------------------


def test_connect_preamble_keeps_bytes_after_the_head():
    mode = ConnectMode()
    assert mode.feed(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: x\r\n") == NeedMore()
    step = mode.feed(b"\r\n\x16\x03\x01")
    assert step == Connect("2001:db8::1", 443, b"\x16\x03\x01")
    assert mode.connected(("127.0.0.1", 5)).startswith(b"HTTP/1.1 200 ")


def test_socks5_preamble_pipelined_greeting_and_request():
    mode = Socks5Mode()
    step = mode.feed(b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bexample.com\x01\xbbEXTRA")
    assert step == Connect("example.com", 443, b"EXTRA")
    reply = mode.connected(("::1", 4000))
    assert reply == b"\x05\x00" + b"\x05\x00\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1") + (4000).to_bytes(2, "big")


def test_socks5_preamble_byte_by_byte():
    request = b"\x05\x02\x02\x00" + b"\x05\x01\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1") + b"\x00\x50"
    mode = Socks5Mode()
    replies, steps = b"", []
    for i in range(len(request)):
        step = mode.feed(request[i : i + 1])
        steps.append(step)
        if isinstance(step, NeedMore):
            replies += step.reply
    assert replies == b"\x05\x00"
    assert steps[-1] == Connect("::1", 80, b"")
    assert all(isinstance(s, NeedMore) for s in steps[:-1])


def _client_hello(server_hostname):
    chain = make_chain("localhost")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as d:
        paths = chain.write_pem(d)
        server.load_cert_chain(paths.cert, paths.key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    session = run_session(client, server, server_hostname=server_hostname)
    return next(data for d, data in session.chunks if d is Direction.C2S)


@pytest.mark.parametrize("split", [1, 7, 100])
def test_sni_preamble_waits_for_the_whole_hello_then_forwards_it_exactly(split):
    hello = _client_hello("localhost")
    mode = SniMode(8443)
    steps = [mode.feed(hello[i : i + split]) for i in range(0, len(hello), split)]
    assert all(s == NeedMore() for s in steps[:-1])
    assert steps[-1] == Connect("localhost", 8443, hello)


def test_sni_preamble_rejects_a_hello_without_server_name_with_an_alert():
    step = SniMode(443).feed(_client_hello(None))
    assert isinstance(step, Reject) and not step.reset
    assert step.reply == bytes((21, 3, 3, 0, 2, 2, 112))  # fatal unrecognized_name


# -- SO_ORIGINAL_DST decoding ----------------------------------------------------------------------


def _kernel_sockaddr(sock: socket.socket) -> bytes:
    """The raw sockaddr the kernel writes for this socket (getsockname(2) via libc), the same
    struct layout SO_ORIGINAL_DST returns."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(128)
    size = ctypes.c_uint32(128)
    assert libc.getsockname(sock.fileno(), buf, ctypes.byref(size)) == 0
    return buf.raw[: size.value]


def test_decode_ipv4_sockaddr_from_the_kernel():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        raw = _kernel_sockaddr(s)
        assert len(raw) == 16
        assert decode_sockaddr(raw) == s.getsockname()


def test_decode_ipv6_sockaddr_from_the_kernel():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with s:
        raw = _kernel_sockaddr(s)
        assert len(raw) == 28
        assert decode_sockaddr(raw) == s.getsockname()[:2]


def test_decode_ipv4_mapped_ipv6_gives_the_ipv4_address():
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::ffff:127.0.0.1", 0))
        assert decode_sockaddr(_kernel_sockaddr(s)) == ("127.0.0.1", s.getsockname()[1])


@pytest.mark.parametrize("raw", [b"", b"\x02\x00\x01", b"\xff\xff" + bytes(14)])
def test_decode_rejects_short_or_foreign_sockaddrs(raw):
    with pytest.raises(ValueError):
        decode_sockaddr(raw)
