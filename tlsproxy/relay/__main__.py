"""``python -m tlsproxy.relay``: the relay alone with a plain line per event on stdout.

``tlsproxy run`` is the real entry point; this one exists for tests, benchmarks and debugging
without the analysis core (``--quiet-data`` drops the per-chunk lines, ``--no-observer`` all).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tlsproxy.relay.args import add_run_arguments, config_from_args
from tlsproxy.relay.config import ConfigError
from tlsproxy.relay.observer import NullObserver, PrintObserver
from tlsproxy.relay.server import EXIT_USAGE, run_relay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlsproxy.relay", description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--quiet-data", action="store_true", help="no line per data chunk")
    parser.add_argument("--no-observer", action="store_true", help="print no events at all")
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except ConfigError as exc:
        print(f"python -m tlsproxy.relay: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    observer = NullObserver() if ns.no_observer else PrintObserver(quiet_data=ns.quiet_data)
    return asyncio.run(run_relay(config, observer))


if __name__ == "__main__":
    raise SystemExit(main())
