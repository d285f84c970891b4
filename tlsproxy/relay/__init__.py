"""The relay: the only socket code in tlsproxy.

It accepts client connections, chooses the upstream (fixed, sni, connect, socks5, transparent),
forwards every byte unchanged in both directions with flow control, passes half-closes and resets
through, and reports what passed to a ``RelayObserver`` after forwarding it.
"""

from tlsproxy.relay.args import add_run_arguments, config_from_args
from tlsproxy.relay.config import (
    MAX_BUFFERED_PER_CONNECTION,
    MODES,
    AllowRule,
    ConfigError,
    ListenerSpec,
    RelayConfig,
    check_config,
    destination_allowed,
    parse_allow,
)
from tlsproxy.relay.observer import CloseSummary, ConnectionMeta, NullObserver, PrintObserver, RelayObserver
from tlsproxy.relay.server import (
    EXIT_ERROR,
    EXIT_LISTEN,
    EXIT_OK,
    EXIT_USAGE,
    BoundListener,
    RelayServer,
    raise_open_files_limit,
    run_relay,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_LISTEN",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_BUFFERED_PER_CONNECTION",
    "MODES",
    "AllowRule",
    "BoundListener",
    "CloseSummary",
    "ConfigError",
    "ConnectionMeta",
    "ListenerSpec",
    "NullObserver",
    "PrintObserver",
    "RelayConfig",
    "RelayObserver",
    "RelayServer",
    "add_run_arguments",
    "check_config",
    "config_from_args",
    "destination_allowed",
    "parse_allow",
    "raise_open_files_limit",
    "run_relay",
]
