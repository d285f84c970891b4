"""Open the upstream TCP connection, and say precisely why when that fails.

``loop.create_connection`` folds several failed addresses into one ``OSError`` without an errno,
so we resolve and try each address ourselves: the transcript can then say "refused by
127.0.0.1:9" rather than "Multiple exceptions".
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket

from tlsproxy.relay.config import format_hostport
from tlsproxy.relay.modes import DNS, ERROR, REFUSED, RESET, TIMEOUT, UNREACHABLE

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EADDRNOTAVAIL}
# The TCP handshake completed and the server (or something in front of it) reset the connection
# before the connect was seen to finish: it answered, so this is not "could not connect".
_RESET = {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}


class UpstreamError(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[tuple[int, tuple]]:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # skip the resolver thread for literals: it costs a thread hop per connection
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        return [(family, (host, port))]
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UpstreamError(DNS, f"cannot resolve {host!r}: {exc.strerror}") from None
    seen: list[tuple[int, tuple]] = []
    for family, _type, _proto, _canon, addr in infos:
        if (family, addr) not in seen:
            seen.append((family, addr))
    if not seen:
        raise UpstreamError(DNS, f"{host!r} resolved to no address")
    return seen


async def _connect(loop: asyncio.AbstractEventLoop, host: str, port: int) -> tuple[socket.socket, tuple[str, int]]:
    errors: list[tuple[tuple, OSError]] = []
    for family, addr in await _resolve(loop, host, port):
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            errors.append((addr, exc))
            continue
        except BaseException:
            sock.close()
            raise
        return sock, (addr[0], addr[1])
    where = ", ".join(f"{format_hostport(a[0], a[1])} ({e.strerror or e})" for a, e in errors)
    codes = {e.errno for _, e in errors}
    if codes == {errno.ECONNREFUSED}:
        raise UpstreamError(REFUSED, f"connection refused by {where}")
    if codes <= _RESET:
        raise UpstreamError(RESET, f"{where}: the server accepted the connection and reset it at once")
    if codes == {errno.ETIMEDOUT}:
        raise UpstreamError(TIMEOUT, f"connect timed out: {where}")
    if codes & _UNREACHABLE and codes <= _UNREACHABLE | {errno.ECONNREFUSED}:
        raise UpstreamError(UNREACHABLE, f"no route to {where}")
    raise UpstreamError(ERROR, f"cannot connect to {where}")


async def open_upstream(
    loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float
) -> tuple[socket.socket, tuple[str, int]]:
    """Resolve ``host`` and connect to its first address that answers, all within ``timeout``.
    Returns the connected non-blocking socket and the peer address; raises ``UpstreamError``."""
    try:
        async with asyncio.timeout(timeout):
            return await _connect(loop, host, port)
    except TimeoutError:
        raise UpstreamError(
            TIMEOUT, f"no answer from {format_hostport(host, port)} within {timeout:g} s (connect timeout)"
        ) from None
