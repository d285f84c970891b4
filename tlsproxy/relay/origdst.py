"""The original destination of a connection redirected by iptables REDIRECT / nftables redirect.

Linux keeps the pre-NAT destination in conntrack and hands it out through
``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` (IPv4) or ``getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)``
(IPv6) as a raw ``struct sockaddr_in`` / ``sockaddr_in6``.  Decoding is kept apart from the
system call so it can be tested without a firewall.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
SOCKADDR_IN_SIZE = 16
SOCKADDR_IN6_SIZE = 28

# sa_family is in host byte order; port and address are in network byte order.
_FAMILY = struct.Struct("=H")


class OriginalDstError(OSError):
    """The socket has no original destination (not redirected, or conntrack not loaded)."""


def decode_sockaddr(raw: bytes) -> tuple[str, int]:
    """Decode a raw ``sockaddr_in`` or ``sockaddr_in6`` into ``(host, port)``."""
    if len(raw) < 4:
        raise ValueError(f"sockaddr of {len(raw)} bytes is too short")
    (family,) = _FAMILY.unpack_from(raw)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        if len(raw) < 8:
            raise ValueError(f"sockaddr_in of {len(raw)} bytes is too short")
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6:
        if len(raw) < 24:
            raise ValueError(f"sockaddr_in6 of {len(raw)} bytes is too short")
        addr = ipaddress.IPv6Address(raw[8:24])
        mapped = addr.ipv4_mapped
        return (str(mapped) if mapped is not None else str(addr)), port
    raise ValueError(f"sockaddr family {family} is neither AF_INET nor AF_INET6")


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """Ask the kernel for the pre-redirect destination of an accepted socket."""
    if not sys.platform.startswith("linux"):
        raise OriginalDstError("transparent mode needs Linux (SO_ORIGINAL_DST)")
    try:
        # A dual-stack listener ([::]) accepts IPv4 clients as ::ffff:a.b.c.d; their conntrack
        # entry is IPv4, so ask the IPv4 option for those.
        if sock.family == socket.AF_INET6 and not str(sock.getsockname()[0]).startswith("::ffff:"):
            raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, SOCKADDR_IN6_SIZE)
        else:
            raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_SIZE)
    except OSError as exc:
        raise OriginalDstError(exc.errno, f"no original destination: {exc.strerror}") from exc
    return decode_sockaddr(raw)
