"""Listener specifications, relay options and the destination allow list.

Everything here is plain data plus parsing and checking; nothing opens a socket.  The rule that
matters most: a forward proxy (connect, socks5, sni) that listens beyond loopback is an open relay,
so such a listener needs an explicit allow list of destinations.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field

from tlsproxy.netaddr import format_hostport

MODES = ("fixed", "sni", "connect", "socks5", "transparent")
#: Modes in which the client chooses the destination: these are open relays without an allow list.
FORWARD_MODES = frozenset({"sni", "connect", "socks5"})
DEFAULT_PORTS = {"fixed": 8443, "sni": 8443, "connect": 8080, "socks5": 1080, "transparent": 8443}
WHEN_FULL = ("wait", "refuse")

# Flow control.  A direction stops reading from its sender once the other side's socket write
# buffer holds more than HIGH_WATER bytes, and resumes below LOW_WATER.  One read is at most
# asyncio's 256 KiB, and reading stops right after the read that crossed the mark, so a direction
# never holds more than HIGH_WATER + 256 KiB in user space (see docs/relay.md).
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
READ_CHUNK_MAX = 256 * 1024  # asyncio's selector transport reads at most this much per recv()
#: Upper bound on bytes the relay holds in user space for one connection in its relaying phase.
MAX_BUFFERED_PER_CONNECTION = 2 * (HIGH_WATER + READ_CHUNK_MAX)


class ConfigError(ValueError):
    """The options do not describe a relay we are willing to run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowRule:
    """One ``--allow`` entry: a host pattern (glob such as ``*.example.com``, an IP address or a
    CIDR network) and an inclusive port range."""

    host: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port_lo: int
    port_hi: int
    text: str

    def matches(self, host: str, port: int) -> bool:
        if not self.port_lo <= port <= self.port_hi:
            return False
        name = host.strip().rstrip(".").lower()
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if self.network is not None:
            try:
                return ipaddress.ip_address(name) in self.network
            except ValueError:
                return False
        return fnmatch.fnmatchcase(name, self.host)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSpec:
    """One listening socket and how it chooses the upstream."""

    host: str = "127.0.0.1"
    port: int = 8443
    mode: str = "fixed"
    upstream: tuple[str, int] | None = None  # fixed mode
    upstream_port: int = 443  # sni mode: the port to connect to on the named host
    allow: tuple[AllowRule, ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or format_hostport(self.host, self.port)

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    listeners: tuple[ListenerSpec, ...] = field(default_factory=lambda: (ListenerSpec(),))
    connect_timeout: float = 10.0
    idle_timeout: float | None = 300.0  # None: never
    max_connections: int | None = None  # None: derived from the open-files limit (2 fds each)
    when_full: str = "wait"  # "wait": leave new ones in the listen backlog; "refuse": refuse them
    grace: float = 5.0  # seconds open connections get to finish on SIGINT/SIGTERM
    backlog: int = 1024
    high_water: int = HIGH_WATER
    low_water: int = LOW_WATER


def parse_port(text: str, what: str = "port") -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} {port} is outside 0..65535")
    return port


def parse_hostport(text: str, *, default_host: str | None = None, default_port: int | None = None) -> tuple[str, int]:
    """Parse ``host:port``, ``[v6]:port``, ``host`` (with ``default_port``) or ``:port``/``port``
    (with ``default_host``)."""
    text = text.strip()
    if not text:
        raise ConfigError("empty address")
    host: str | None
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{text!r}: expected ':port' after ']'")
        port_text = rest[1:] if rest else None
    elif text.isdigit():
        host, port_text = None, text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        host = host or None
    elif ":" in text:  # a bare IPv6 address
        host, port_text = text, None
    else:
        host, port_text = text, None
    if host is None:
        if default_host is None:
            raise ConfigError(f"{text!r}: a host is required")
        host = default_host
    if port_text is None or port_text == "":
        if default_port is None:
            raise ConfigError(f"{text!r}: a port is required (host:port)")
        return host, default_port
    return host, parse_port(port_text)


def parse_allow(text: str) -> tuple[AllowRule, ...]:
    """Parse a comma-separated list of ``HOST[:PORT]`` patterns.

    HOST is a glob (``*.example.com``, ``*``), an IP address or a CIDR network (IPv6 in
    brackets when a port follows); PORT is a number, ``LO-HI`` or ``*`` (the default).
    """
    rules = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        if item.startswith("["):
            end = item.find("]")
            if end < 0:
                raise ConfigError(f"allow pattern {item!r}: missing ']'")
            host, rest = item[1:end], item[end + 1 :]
            port_text = rest[1:] if rest.startswith(":") else ("*" if not rest else None)
            if port_text is None:
                raise ConfigError(f"allow pattern {item!r}: expected ':port' after ']'")
        elif item.count(":") == 1:
            host, port_text = item.split(":")
        else:
            host, port_text = item, "*"
        host = host.strip().rstrip(".").lower() or "*"
        if port_text in ("*", ""):
            lo, hi = 0, 65535
        elif "-" in port_text:
            a, b = port_text.split("-", 1)
            lo, hi = parse_port(a, "allow port"), parse_port(b, "allow port")
            if lo > hi:
                raise ConfigError(f"allow pattern {item!r}: empty port range")
        else:
            lo = hi = parse_port(port_text, "allow port")
        network = None
        if any(ch in host for ch in "*?["):
            pass
        else:
            try:
                network = ipaddress.ip_network(host, strict=False)
            except ValueError:
                if "/" in host:
                    raise ConfigError(f"allow pattern {item!r}: bad network") from None
        rules.append(AllowRule(host=host, network=network, port_lo=lo, port_hi=hi, text=item))
    return tuple(rules)


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def destination_allowed(spec: ListenerSpec, host: str, port: int) -> bool:
    """The allow-list decision.  An empty list allows everything, which ``check_config`` only
    permits on loopback listeners."""
    if not spec.allow:
        return True
    return any(rule.matches(host, port) for rule in spec.allow)


def check_config(config: RelayConfig) -> list[str]:
    """Raise ``ConfigError`` for a configuration we refuse to run; return warnings otherwise."""
    warnings: list[str] = []
    if not config.listeners:
        raise ConfigError("no listener")
    if config.connect_timeout <= 0:
        raise ConfigError("--connect-timeout must be positive")
    if config.idle_timeout is not None and config.idle_timeout <= 0:
        raise ConfigError("--idle-timeout must be positive (or 0 for none)")
    if config.max_connections is not None and config.max_connections < 1:
        raise ConfigError("--max-connections must be at least 1")
    if config.when_full not in WHEN_FULL:
        raise ConfigError(f"--when-full must be one of {', '.join(WHEN_FULL)}")
    if config.grace < 0:
        raise ConfigError("--grace must not be negative")
    if not 0 < config.low_water <= config.high_water:
        raise ConfigError("low water mark must be positive and at most the high water mark")
    labels = set()
    for spec in config.listeners:
        if spec.mode not in MODES:
            raise ConfigError(f"unknown mode {spec.mode!r}; expected one of {', '.join(MODES)}")
        if spec.mode == "fixed" and spec.upstream is None:
            raise ConfigError(f"listener {spec.name}: fixed mode needs --upstream HOST:PORT")
        if spec.mode != "fixed" and spec.upstream is not None:
            raise ConfigError(f"listener {spec.name}: --upstream only applies to fixed mode")
        if spec.mode in FORWARD_MODES and not spec.loopback_only and not spec.allow:
            raise ConfigError(
                f"listener {spec.name}: {spec.mode} mode listening beyond loopback would be an open relay; "
                "give --allow HOST[:PORT] patterns for the destinations it may reach"
            )
        if not spec.loopback_only:
            where = "all interfaces" if is_wildcard(spec.host) else spec.host
            warnings.append(f"listener {spec.name} accepts connections from other machines ({where})")
        if spec.name in labels:
            raise ConfigError(f"two listeners are labelled {spec.name!r}")
        labels.add(spec.name)
    return warnings
