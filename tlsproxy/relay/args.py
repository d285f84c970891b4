"""Command-line options of the relay, for ``tlsproxy run`` (and ``python -m tlsproxy.relay``).

Listener options apply to the most recent ``--listen``, so several listeners fit on one line::

    --listen a=127.0.0.1:8443 --upstream a.example:443 --listen b=127.0.0.1:9443 --upstream b.example:443

Listener options given before the first ``--listen`` belong to the first listener, so the common
single-listener forms read naturally in any order.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from tlsproxy.relay.config import (
    DEFAULT_PORTS,
    MODES,
    WHEN_FULL,
    AllowRule,
    ConfigError,
    ListenerSpec,
    RelayConfig,
    check_config,
    parse_allow,
    parse_hostport,
    parse_port,
)

_DEST = "relay_listener_options"


class _ListenerOption(argparse.Action):
    """Record listener-scoped options in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        items = list(getattr(namespace, _DEST, None) or [])
        items.append((self.metavar_key, values))
        setattr(namespace, _DEST, items)

    metavar_key = ""


def _listener_option(group: argparse._ArgumentGroup, flag: str, key: str, **kwargs: Any) -> None:
    action = type(f"_Opt_{key}", (_ListenerOption,), {"metavar_key": key})
    group.add_argument(flag, action=action, dest=_DEST, default=None, **kwargs)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the relay's options to ``parser`` (the ``run`` sub-command or the top-level parser)."""
    g = parser.add_argument_group("listeners (each option applies to the most recent --listen)")
    _listener_option(g, "--listen", "listen", metavar="[LABEL=]HOST:PORT",
                     help="accept connections here (default 127.0.0.1 and port 8443; 8080 for connect, "
                          "1080 for socks5); repeat for several listeners; a non-loopback address is "
                          "reachable from other machines and prints a warning")
    _listener_option(g, "--mode", "mode", metavar="MODE", choices=MODES,
                     help="how the upstream is chosen: fixed (default; --upstream), sni (the ClientHello's "
                          "server_name), connect (HTTP CONNECT proxy), socks5 (RFC 1928, no auth), "
                          "transparent (iptables/nftables redirect, SO_ORIGINAL_DST)")
    _listener_option(g, "--upstream", "upstream", metavar="HOST:PORT",
                     help="the server every connection goes to (fixed mode)")
    _listener_option(g, "--upstream-port", "upstream_port", metavar="PORT",
                     help="sni mode: the port to connect to on the named host (default 443)")
    _listener_option(g, "--allow", "allow", metavar="HOST[:PORT],...",
                     help="destinations the sni/connect/socks5 modes may reach: globs (*.example.com), "
                          "IP addresses or CIDR networks, with an optional port, LO-HI range or *; required "
                          "when such a listener is not on loopback; repeatable")
    _listener_option(g, "--label", "label", metavar="NAME", help="the listener's name in the transcript")

    o = parser.add_argument_group("relay options")
    o.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up on an upstream that has not answered (DNS included) after this long (default 10)")
    o.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="close a connection with no data either way for this long; 0 for never (default 300)")
    o.add_argument("--max-connections", type=int, default=0, metavar="N",
                   help="at most N connections at once (default 0: as many as the open-files limit allows)")
    o.add_argument("--when-full", choices=WHEN_FULL, default="wait",
                   help="at the limit, new connections wait in the listen backlog (default) or are refused "
                        "with the mode's error")
    o.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                   help="on SIGINT/SIGTERM, let open connections finish for this long before closing them "
                        "(default 5)")
    o.add_argument("--backlog", type=int, default=1024, metavar="N", help="listen backlog (default 1024)")


def _listener(group: dict[str, Any], allow: list[AllowRule]) -> ListenerSpec:
    mode = group.get("mode", "fixed")
    label = group.get("label", "")
    listen = group.get("listen")
    if listen is not None:
        if "=" in listen:
            inline_label, listen = listen.split("=", 1)
            if label and inline_label != label:
                raise ConfigError(f"--listen {inline_label}=... and --label {label} disagree")
            label = inline_label
        host, port = parse_hostport(listen, default_host="127.0.0.1", default_port=DEFAULT_PORTS[mode])
    else:
        host, port = "127.0.0.1", DEFAULT_PORTS[mode]
    upstream = None
    if "upstream" in group:
        upstream = parse_hostport(group["upstream"])
    upstream_port = parse_port(group["upstream_port"], "--upstream-port") if "upstream_port" in group else 443
    return ListenerSpec(host=host, port=port, mode=mode, upstream=upstream, upstream_port=upstream_port,
                        allow=tuple(allow), label=label)


def config_from_args(ns: argparse.Namespace) -> RelayConfig:
    """Build and check the relay configuration; raises ``ConfigError`` with a message for the user."""
    groups: list[dict[str, Any]] = [{}]
    allows: list[list[AllowRule]] = [[]]
    seen_listen = False
    for key, value in getattr(ns, _DEST, None) or []:
        if key == "listen":
            if seen_listen:
                groups.append({})
                allows.append([])
            seen_listen = True
        if key == "allow":
            allows[-1].extend(parse_allow(value))
            continue
        if key in groups[-1]:
            where = groups[-1].get("listen", "the first listener")
            raise ConfigError(f"--{key.replace('_', '-')} given twice for {where}")
        groups[-1][key] = value
    if ns.idle_timeout is not None and ns.idle_timeout < 0:
        raise ConfigError("--idle-timeout must not be negative (0 for never)")
    if ns.max_connections is not None and ns.max_connections < 0:
        raise ConfigError("--max-connections must not be negative (0 for the open-files limit)")
    listeners = tuple(_listener(g, a) for g, a in zip(groups, allows))
    config = RelayConfig(
        listeners=listeners,
        connect_timeout=ns.connect_timeout,
        idle_timeout=ns.idle_timeout if ns.idle_timeout and ns.idle_timeout > 0 else None,
        max_connections=ns.max_connections if ns.max_connections and ns.max_connections > 0 else None,
        when_full=ns.when_full,
        grace=ns.grace,
        backlog=ns.backlog,
    )
    check_config(config)
    return config
