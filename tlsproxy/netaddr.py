"""Writing network addresses the way people read them (IPv6 in brackets), in one place."""

from __future__ import annotations


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_addr(addr: tuple[str, int] | None, missing: str = "?") -> str:
    """``(host, port)`` as ``host:port`` / ``[v6]:port``; ``missing`` when there is none yet."""
    return missing if addr is None else format_hostport(addr[0], addr[1])
