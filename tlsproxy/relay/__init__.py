"""The relay: the only socket code in tlsproxy.

It accepts client connections, chooses the upstream (fixed, sni, connect, socks5, transparent),
forwards every byte unchanged in both directions with flow control, passes half-closes and resets
through, and reports what passed to a ``RelayObserver`` after forwarding it.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): ``tlsproxy analyze`` builds the argument parser,
# which needs ``args`` and ``config``, and should not pay for importing the socket code.
_WHERE = {
    "add_run_arguments": "args", "config_from_args": "args",
    "MAX_BUFFERED_PER_CONNECTION": "config", "MODES": "config", "AllowRule": "config", "ConfigError": "config",
    "ListenerSpec": "config", "RelayConfig": "config", "check_config": "config",
    "destination_allowed": "config", "parse_allow": "config",
    "CloseSummary": "observer", "ConnectionMeta": "observer", "NullObserver": "observer",
    "PrintObserver": "observer", "RelayObserver": "observer",
    "EXIT_ERROR": "server", "EXIT_LISTEN": "server", "EXIT_OK": "server", "EXIT_USAGE": "server",
    "BoundListener": "server", "RelayServer": "server", "raise_open_files_limit": "server", "run_relay": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
