"""Analyse a pcap/pcapng capture from Python: the same pipeline and transcript as
``tlsproxy analyze FILE``, plus the reports for your own use.

    python examples/analyze_capture.py capture.pcap
"""

from __future__ import annotations

import sys

from tlsproxy.frontends.capture import analyze_capture
from tlsproxy.pipeline import ConnectionReport, Pipeline
from tlsproxy.sinks.console import ConsoleSink


class Collect:
    """A sink of our own: keep every connection's report."""

    def __init__(self) -> None:
        self.reports: list[ConnectionReport] = []

    def run_started(self, run): ...
    def connection_opened(self, info): ...
    def event(self, conn_id, seq, event, findings): ...
    def run_finished(self, run, ended): ...

    def connection_closed(self, report: ConnectionReport) -> None:
        self.reports.append(report)


def main(path: str) -> int:
    collect = Collect()
    pipeline = Pipeline([ConsoleSink(quiet=True), collect])
    stats = analyze_capture(path, pipeline)
    pipeline.close_all("capture_end", stats.last_at or 0.0)
    for r in collect.reports:
        print(f"connection {r.info.id}: {r.summary.sni or '-'} {r.summary.version or '-'} -> {r.diagnosis.outcome}")
    return 0 if all(r.diagnosis.outcome == "established" for r in collect.reports) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
