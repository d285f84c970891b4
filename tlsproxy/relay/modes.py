"""How each listener mode learns the destination, and what it answers when it cannot go there.

These are sans-IO state machines: the connection feeds them the client's first bytes and acts on
the step they return (wait for more, connect, or reject with a reply).  Once the upstream is
connected (or failed) the mode says what to tell the client in its own protocol: an HTTP status
line, a SOCKS5 reply code, a TLS alert, or a TCP reset where the client expects a bare TCP peer.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from tlsproxy.wire.peek import MAX_PEEK, peek_server_name

# Failure kinds reported by the upstream connector (see upstream.py).
DNS, REFUSED, UNREACHABLE, TIMEOUT, RESET, ERROR = "dns", "refused", "unreachable", "timeout", "reset", "error"
# Refusals decided by the proxy before connecting.
NOT_ALLOWED, FULL = "not_allowed", "full"

# An HTTP CONNECT request is a request line and a few headers; real ones are a few hundred bytes.
# Beyond 16 KiB the client is not a proxy client we understand (or is hostile): answer 431.
MAX_CONNECT_HEAD = 16 * 1024

_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Wait for more client bytes; ``reply`` (if any) goes to the client now."""

    reply: bytes = b""


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect to ``host:port``; ``remainder`` is client data already read that belongs upstream."""

    host: str
    port: int
    remainder: bytes = b""


@dataclass(frozen=True, slots=True)
class Reject:
    """Do not connect: send ``reply`` and close (``reset``: abort with a TCP RST instead)."""

    reason: str
    reply: bytes = b""
    reset: bool = False


Step = NeedMore | Connect | Reject


def valid_host(host: str) -> bool:
    """A DNS name or an IP literal we are willing to resolve (no spaces, ports or control bytes)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host)) and ".." not in host


class Mode:
    """Base: a mode whose client speaks the tunnelled protocol from its first byte."""

    name = "fixed"

    def feed(self, data: bytes) -> Step:  # pragma: no cover - fixed mode never reads a preamble
        raise NotImplementedError

    def connected(self, bound: tuple[str, int]) -> bytes:
        """Bytes for the client once the upstream answered (``bound``: our local address)."""
        return b""

    def failed(self, kind: str, reason: str) -> Reject:
        """The upstream could not be reached: look to the client like a failed direct connection,
        which for a bare TCP client is a reset."""
        return Reject(reason=reason, reset=True)

    def refuse(self, kind: str, reason: str) -> Reject:
        return Reject(reason=reason, reset=True)


class FixedMode(Mode):
    name = "fixed"


class TransparentMode(Mode):
    name = "transparent"


# -- sni -------------------------------------------------------------------------------------------

ALERT_ACCESS_DENIED = 49
ALERT_UNRECOGNIZED_NAME = 112


def tls_fatal_alert(description: int) -> bytes:
    """A plaintext fatal alert record, the only thing a TLS client understands before ServerHello."""
    return bytes((21, 3, 3, 0, 2, 2, description))


class SniMode(Mode):
    """Hold the client's bytes until the ClientHello is complete, then connect to its server_name."""

    name = "sni"

    def __init__(self, upstream_port: int) -> None:
        self._port = upstream_port
        self._buf = bytearray()
        self._needed = 0  # peek again only once this much is buffered (no quadratic re-parsing)

    def feed(self, data: bytes) -> Step:
        self._buf += data
        if len(self._buf) < self._needed and len(self._buf) <= MAX_PEEK:
            return NeedMore()
        result = peek_server_name(bytes(self._buf))
        self._needed = result.needed
        if result.status == "need_more":
            if len(self._buf) > MAX_PEEK:  # peek says so itself; belt and braces for the bound
                return Reject(reason=f"no complete ClientHello in the first {MAX_PEEK} bytes", reset=True)
            return NeedMore()
        if result.status == "not_tls":
            return Reject(reason=f"not TLS, so no server_name to route by: {result.reason}", reset=True)
        if result.status != "ok":
            return Reject(
                reason=f"cannot read the ClientHello: {result.reason}",
                reply=tls_fatal_alert(ALERT_UNRECOGNIZED_NAME),
            )
        name = result.server_name
        if not name:
            return Reject(
                reason="ClientHello has no server_name (SNI) extension, so sni mode cannot choose an upstream",
                reply=tls_fatal_alert(ALERT_UNRECOGNIZED_NAME),
            )
        if not valid_host(name):
            return Reject(
                reason=f"ClientHello server_name {name!r} is not a valid host name",
                reply=tls_fatal_alert(ALERT_UNRECOGNIZED_NAME),
            )
        return Connect(name, self._port, bytes(self._buf))

    def refuse(self, kind: str, reason: str) -> Reject:
        if kind == NOT_ALLOWED:
            return Reject(reason=reason, reply=tls_fatal_alert(ALERT_ACCESS_DENIED))
        return Reject(reason=reason, reset=True)


# -- HTTP CONNECT ----------------------------------------------------------------------------------

_PHRASES = {
    200: "Connection established",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def http_response(status: int, text: str = "", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    if status == 200:
        return b"HTTP/1.1 200 Connection established\r\nProxy-Agent: tlsproxy\r\n\r\n"
    body = (text + "\n").encode("utf-8", "replace")
    lines = [
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}",
        "Proxy-Agent: tlsproxy",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


class ConnectMode(Mode):
    """An HTTP/1.x CONNECT forward proxy (RFC 9110 section 9.3.6)."""

    name = "connect"

    def __init__(self) -> None:
        self._buf = bytearray()

    def _bad(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Reject:
        return Reject(reason=reason, reply=http_response(status, reason, headers))

    def feed(self, data: bytes) -> Step:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end, sep = self._buf.find(b"\n\n"), 2
        if end < 0:
            if len(self._buf) > MAX_CONNECT_HEAD:
                return self._bad(431, f"request head larger than {MAX_CONNECT_HEAD} bytes")
            return NeedMore()
        if end > MAX_CONNECT_HEAD:
            return self._bad(431, f"request head larger than {MAX_CONNECT_HEAD} bytes")
        head = bytes(self._buf[:end]).decode("latin-1")
        remainder = bytes(self._buf[end + sep :])
        request_line = head.split("\n", 1)[0].rstrip("\r")
        parts = request_line.split(" ")
        if len(parts) != 3 or not all(parts):
            return self._bad(400, f"malformed request line {request_line[:200]!r}")
        method, target, version = parts
        if not re.fullmatch(r"HTTP/\d\.\d", version):
            return self._bad(400, f"malformed HTTP version {version[:40]!r}")
        if not version.startswith("HTTP/1."):
            return self._bad(505, f"{version} is not supported; use HTTP/1.1")
        if method != "CONNECT":
            return self._bad(
                405,
                f"this is a CONNECT-only proxy (tunnels for TLS); method {method[:40]!r} is not supported",
                (("Allow", "CONNECT"),),
            )
        host, port = _split_authority(target)
        if host is None or port is None:
            return self._bad(400, f"CONNECT target {target[:200]!r} is not host:port")
        if not valid_host(host):
            return self._bad(400, f"CONNECT target host {host[:200]!r} is not a valid host name")
        return Connect(host, port, remainder)

    def connected(self, bound: tuple[str, int]) -> bytes:
        return http_response(200)

    def failed(self, kind: str, reason: str) -> Reject:
        return self._bad(504 if kind == TIMEOUT else 502, reason)

    def refuse(self, kind: str, reason: str) -> Reject:
        return self._bad(403 if kind == NOT_ALLOWED else 503, reason)


def _split_authority(target: str) -> tuple[str | None, int | None]:
    if target.startswith("["):
        end = target.find("]")
        if end < 0 or target[end + 1 : end + 2] != ":":
            return None, None
        host, port_text = target[1:end], target[end + 2 :]
    else:
        if target.count(":") != 1:
            return None, None
        host, port_text = target.split(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return None, None
    return host, int(port_text)


# -- SOCKS5 ----------------------------------------------------------------------------------------

SOCKS_VERSION = 5
SOCKS_NO_AUTH = 0x00
SOCKS_NO_ACCEPTABLE = 0xFF
SOCKS_CMD_CONNECT = 0x01
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 0x01, 0x03, 0x04
# Reply codes (RFC 1928 section 6).
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08


def socks_reply(rep: int, bound: tuple[str, int] = ("0.0.0.0", 0)) -> bytes:
    host, port = bound
    addr = ipaddress.ip_address(host)
    atyp = ATYP_IPV4 if addr.version == 4 else ATYP_IPV6
    return bytes((SOCKS_VERSION, rep, 0, atyp)) + addr.packed + port.to_bytes(2, "big")


class Socks5Mode(Mode):
    """RFC 1928 SOCKS5 with the "no authentication required" method and the CONNECT command."""

    name = "socks5"

    def __init__(self) -> None:
        self._buf = bytearray()
        self._greeted = False
        self._pending_greeting = b""  # sent with the request's reply when the client pipelined both

    def _fail(self, rep: int, reason: str) -> Reject:
        return Reject(reason=reason, reply=socks_reply(rep))

    def feed(self, data: bytes) -> Step:
        self._buf += data
        buf = self._buf
        if not self._greeted:
            if len(buf) < 2:
                return NeedMore()
            if buf[0] != SOCKS_VERSION:
                return Reject(reason=f"not a SOCKS5 client (version byte 0x{buf[0]:02x})")
            n = buf[1]
            if len(buf) < 2 + n:
                return NeedMore()
            methods = bytes(buf[2 : 2 + n])
            del buf[: 2 + n]
            if SOCKS_NO_AUTH not in methods:
                return Reject(
                    reason=f"client offers no method we support (offered {methods.hex() or 'none'}; "
                    "only 00 'no authentication' is implemented)",
                    reply=bytes((SOCKS_VERSION, SOCKS_NO_ACCEPTABLE)),
                )
            self._greeted = True
            greeting_reply = bytes((SOCKS_VERSION, SOCKS_NO_AUTH))
            step = self._request()
            if isinstance(step, NeedMore):
                return NeedMore(greeting_reply)
            if isinstance(step, Reject):
                return Reject(reason=step.reason, reply=greeting_reply + step.reply, reset=step.reset)
            # A client that pipelines the request is answered when we know the outcome.
            self._pending_greeting = greeting_reply
            return step
        return self._request()

    def _request(self) -> Step:
        buf = self._buf
        if len(buf) < 4:
            return NeedMore()
        ver, cmd, _rsv, atyp = buf[0], buf[1], buf[2], buf[3]
        if ver != SOCKS_VERSION:
            return self._fail(REP_GENERAL_FAILURE, f"SOCKS request with version byte 0x{ver:02x}")
        if atyp == ATYP_IPV4:
            need = 4 + 4 + 2
        elif atyp == ATYP_IPV6:
            need = 4 + 16 + 2
        elif atyp == ATYP_DOMAIN:
            if len(buf) < 5:
                return NeedMore()
            need = 5 + buf[4] + 2
        else:
            return self._fail(REP_ADDRESS_TYPE_NOT_SUPPORTED, f"SOCKS address type 0x{atyp:02x} is not supported")
        if len(buf) < need:
            return NeedMore()
        if atyp == ATYP_IPV4:
            host = socket.inet_ntop(socket.AF_INET, bytes(buf[4:8]))
        elif atyp == ATYP_IPV6:
            host = socket.inet_ntop(socket.AF_INET6, bytes(buf[4:20]))
        else:
            host = bytes(buf[5 : need - 2]).decode("ascii", "replace")
        port = int.from_bytes(buf[need - 2 : need], "big")
        remainder = bytes(buf[need:])
        if cmd != SOCKS_CMD_CONNECT:
            name = {2: "BIND", 3: "UDP ASSOCIATE"}.get(cmd, f"0x{cmd:02x}")
            return self._fail(REP_COMMAND_NOT_SUPPORTED, f"SOCKS command {name} is not supported (only CONNECT)")
        if not host or not valid_host(host):
            return self._fail(REP_HOST_UNREACHABLE, f"SOCKS destination {host[:200]!r} is not a valid host name")
        if port == 0:
            return self._fail(REP_HOST_UNREACHABLE, "SOCKS destination port 0")
        return Connect(host, port, remainder)

    def connected(self, bound: tuple[str, int]) -> bytes:
        return self._pending_greeting + socks_reply(REP_SUCCEEDED, bound)

    def failed(self, kind: str, reason: str) -> Reject:
        rep = {
            DNS: REP_HOST_UNREACHABLE,
            REFUSED: REP_CONNECTION_REFUSED,
            UNREACHABLE: REP_NETWORK_UNREACHABLE,
            TIMEOUT: REP_TTL_EXPIRED,
        }.get(kind, REP_GENERAL_FAILURE)
        return Reject(reason=reason, reply=self._pending_greeting + socks_reply(rep))

    def refuse(self, kind: str, reason: str) -> Reject:
        rep = REP_NOT_ALLOWED if kind == NOT_ALLOWED else REP_GENERAL_FAILURE
        return Reject(reason=reason, reply=self._pending_greeting + socks_reply(rep))


def make_mode(name: str, *, upstream_port: int = 443) -> Mode:
    if name == "sni":
        return SniMode(upstream_port)
    if name == "connect":
        return ConnectMode()
    if name == "socks5":
        return Socks5Mode()
    if name == "transparent":
        return TransparentMode()
    return FixedMode()
