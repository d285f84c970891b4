"""The live transcript: a :class:`Sink` that prints what the core produced, as it happens.

On a terminal a status line (open connections, bytes, findings) stays at the bottom through
rich's ``Live``; transcript lines are printed through ``live.console`` so the refresh thread
never tears them.  Anywhere else (a pipe, a file, CI) the output is plain lines, one per record
or message, no colour and no wrapping.  ``NO_COLOR`` is honoured by rich itself.

Bulk data is summarised on screen as in the session file: the first few application-data
records per direction are shown one by one, the rest as a "… N more" line when something else
happens on that connection (or it closes).  ``-v`` shows all of them and every decoded field.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live

from tlsproxy.analysis.model import Finding, Severity
from tlsproxy.fastbuild import frozen_builder
from tlsproxy.netaddr import format_addr as _addr
from tlsproxy.sinks import render
from tlsproxy.sinks.render import ConnLabel, SummaryRow, SummaryTally
from tlsproxy.wire import events as ev
from tlsproxy.wire.events import Direction

if TYPE_CHECKING:
    from tlsproxy.pipeline import ConnectionInfo, ConnectionReport, RunInfo

__all__ = ["ConsoleSink", "make_console"]

#: Application-data records per direction shown one by one before the rest are summarised as runs
#: (count, bytes, first and last time) — the same rule as the session file, so that a long
#: transfer balloons neither.
SCREEN_APP_DATA_RECORDS = 100

_ERROR = Severity.error
# Built once per connection each (see fastbuild): keyword construction of a frozen dataclass costs
# an object.__setattr__ per field.
_build_label = frozen_builder(ConnLabel)  # (id, started, wall_start)
_build_row = frozen_builder(SummaryRow)
# (id, client, server, sni, outcome, version, cipher_suite, errors, warnings, infos)
_WARNING = Severity.warning


def make_console(*, no_color: bool = False, file: object = None, force_terminal: bool | None = None,
                 width: int | None = None) -> Console:
    """The console the CLI uses: colour only on a terminal and never with ``--no-color`` or
    ``NO_COLOR``; a fixed wide width off a terminal so piped lines are not wrapped mid-field."""
    out = file if file is not None else sys.stdout
    is_tty = force_terminal if force_terminal is not None else bool(getattr(out, "isatty", lambda: False)())
    return Console(file=out, no_color=no_color or bool(os.environ.get("NO_COLOR")),  # type: ignore[arg-type]
                   force_terminal=force_terminal, width=width if width is not None else (None if is_tty else 160),
                   highlight=False, soft_wrap=not is_tty)


class _Status:
    __slots__ = ("sink",)

    def __init__(self, sink: ConsoleSink) -> None:
        self.sink = sink

    def __rich__(self) -> RenderableType:
        return self.sink._status()  # noqa: SLF001


@dataclass(slots=True)
class _Run:
    count: int = 0
    nbytes: int = 0
    first: float = 0.0
    last: float = 0.0


class _ConnView:
    """What the transcript keeps of an open connection: its line prefix and its bulk-data counts."""

    __slots__ = ("label", "info", "app_records", "runs")

    def __init__(self, label: ConnLabel, info: object) -> None:
        self.label = label
        self.info = info
        self.app_records: dict[Direction, int] = {Direction.C2S: 0, Direction.S2C: 0}
        self.runs: dict[Direction, _Run] = {}


@dataclass(frozen=True, slots=True)
class _Renderers:
    """The transcript renderers of one output mode: rich ``Text`` (a terminal) or ``str`` lines
    (plain: a pipe or a file), so the per-event path picks no mode."""

    event: Callable[..., list]
    finding: Callable[..., list]
    app_data_run: Callable[..., object]
    connection_opened: Callable[..., object]
    diagnosis_line: Callable[..., object]


_RICH = _Renderers(event=render.render_event, finding=render.render_finding,
                   app_data_run=render.render_app_data_run, connection_opened=render.render_connection_opened,
                   diagnosis_line=render.render_diagnosis_line)
_PLAIN = _Renderers(event=render.render_event_plain, finding=render.render_finding_plain,
                    app_data_run=render.render_app_data_run_plain,
                    connection_opened=render.render_connection_opened_plain,
                    diagnosis_line=render.render_diagnosis_line_plain)


class ConsoleSink:
    """Renders events, findings, diagnoses and the exit summary to a rich console."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False, hexdump: bool = False,
                 quiet: bool = False, live: bool | None = None, summary: bool = True,
                 app_data_records: int = SCREEN_APP_DATA_RECORDS) -> None:
        self.console = console or make_console()
        self.verbose = verbose
        self.hexdump = hexdump
        self.quiet = quiet
        self.summary = summary
        self.app_data_records = app_data_records
        self._use_live = self.console.is_terminal if live is None else live
        self._plain = not self.console.is_terminal and self.console.soft_wrap
        self._render = _PLAIN if self._plain else _RICH
        self._live: Live | None = None
        self._conns: dict[int, _ConnView] = {}
        self.tally = SummaryTally()  # the exit table (an analysis worker swaps in a row collector)
        self._closed = 0
        self._totals = {Direction.C2S: 0, Direction.S2C: 0}
        self._findings: dict[Severity, int] = {Severity.error: 0, Severity.warning: 0, Severity.info: 0}

    # -- live status ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the status line (only on a terminal).  Idempotent."""
        if self._use_live and self._live is None:
            # The status object renders the counters as they are whenever Live draws it (its
            # refresh thread, or a transcript line printed through live.console).
            self._live = Live(_Status(self), console=self.console, refresh_per_second=4, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _status(self) -> RenderableType:
        return render.render_status(open_connections=len(self._conns), closed=self._closed,
                                    bytes_c2s=self._totals[Direction.C2S], bytes_s2c=self._totals[Direction.S2C],
                                    findings=self._findings)

    def _print(self, *items: RenderableType) -> None:
        """Print renderables; in plain mode the items are the ``str`` lines of the plain renderers."""
        target = self._live.console if self._live is not None else self.console
        if self._plain:
            # Off a terminal nothing is styled or wrapped (soft wrap), so a line is its plain
            # text: writing it directly costs a fraction of rich's render pipeline, which matters
            # when a capture has tens of thousands of connections.  Rich would have stripped
            # control codes from every fragment; one pass over the batch does the same.
            if len(items) == 1:  # most calls print one line: no join
                target.file.write(render.strip_control_codes(items[0] + "\n"))  # type: ignore[operator]
            elif items:
                target.file.write(render.strip_control_codes("\n".join(items) + "\n"))  # type: ignore[arg-type]
            return
        if len(items) > 1 and self._live is None:
            # One print for the lines of one call: rich renders a Group's items exactly as it would
            # one by one (each a block of its own lines), but sets up the print (console size,
            # render hooks, the write) once instead of per line.  Not under the live status line,
            # which is redrawn after every print: the bytes written stay those of one print a line.
            target.print(Group(*items))
            return
        for item in items:
            target.print(item)

    # -- Sink -------------------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        self.start()

    def connection_opened(self, info: ConnectionInfo) -> None:
        label = _build_label(info.id, info.started, info.wall_start)
        self._conns[info.id] = _ConnView(label, info)
        if not self.quiet:
            self._print(self._render.connection_opened(label, info.client, info.server, info.target, info.mode))

    def event(self, conn_id: int, seq: int, event: ev.Event | None, findings: Sequence[Finding]) -> None:
        view = self._conns.get(conn_id)
        if self._use_live and event is not None and view is not None and isinstance(event, ev.Record):
            # Byte totals are only ever shown on the status line, so only counted when there is one.
            self._totals[event.direction] += event.length + 5
        if self.quiet:
            # -q shows no events, so which to show (and app-data runs) is moot: only findings,
            # each on its own line with the connection id.
            if findings:
                lines = self._finding_lines(view.label if view is not None else ConnLabel(id=conn_id), findings,
                                            alone=True)
                if lines:
                    self._print(*lines)
            return
        lines = []
        if event is not None and view is not None:
            event = self._screen(view, event, lines)
        label = view.label if view is not None else ConnLabel(id=conn_id)
        if event is not None:
            lines.extend(self._render.event(label, event, verbose=self.verbose, show_hex=self.hexdump))
        if findings:
            lines.extend(self._finding_lines(label, findings, alone=event is None))
        if lines:
            self._print(*lines)

    def _finding_lines(self, label: ConnLabel, findings: Sequence[Finding], *, alone: bool) -> list[RenderableType]:
        """Count the findings and render those to show; ``alone``: not under a shown event."""
        lines: list[RenderableType] = []
        for finding in findings:
            self._findings[finding.severity] += 1
            if self.quiet and finding.severity is Severity.info:
                continue  # -q is for what went wrong; info findings stay in the JSON and the counts
            lines.extend(self._render.finding(label, finding, verbose=self.verbose, quiet=alone))
        return lines

    def _screen(self, view: _ConnView, event: ev.Event, lines: list[RenderableType]) -> ev.Event | None:
        """The event to show, or ``None`` when it is bulk data summarised into a run; anything else
        first flushes the connection's pending runs into ``lines``."""
        if isinstance(event, ev.Record):
            if not self.verbose and render.is_app_data_record(event):
                direction = event.direction
                n = view.app_records[direction] = view.app_records[direction] + 1
                if n > self.app_data_records:
                    run = view.runs.get(direction)
                    if run is None:
                        run = view.runs[direction] = _Run(first=event.at)
                    run.count += 1
                    run.nbytes += event.length
                    run.last = event.at
                    return None  # summarised; findings (if any) still print
                return event
        elif (isinstance(event, ev.DecryptedData) and not self.verbose
              and view.app_records[event.direction] > self.app_data_records):
            return None  # --show-data previews follow their records into the summary
        if view.runs:
            lines.extend(self._flush_runs(view))
        return event

    def _flush_runs(self, view: _ConnView) -> list[RenderableType]:
        out: list[RenderableType] = []
        for direction, run in list(view.runs.items()):
            if not self.quiet:
                out.append(self._render.app_data_run(view.label, direction, run.count, run.nbytes,
                                                     run.first, run.last))
        view.runs.clear()
        return out

    def connection_closed(self, report: ConnectionReport) -> None:
        info = report.info
        view = self._conns.pop(info.id, None)
        label = view.label if view is not None else ConnLabel(id=info.id, started=info.started,
                                                               wall_start=info.wall_start)
        lines: list[RenderableType] = self._flush_runs(view) if view is not None and view.runs else []
        self._closed += 1
        summary = report.summary
        server = info.target or _addr(info.server)
        where = summary.sni or server
        errors = warnings = infos = 0
        for f in report.findings:
            severity = f.severity
            if severity is _ERROR:
                errors += 1
            elif severity is _WARNING:
                warnings += 1
            else:
                infos += 1
        client = _addr(info.client)
        extra = f"{client} → {where}"
        diagnosis = report.diagnosis
        if self.quiet and not errors and not warnings and diagnosis.outcome == "established":
            # -q is for what went wrong: a clean connection gets one line, not a panel.
            lines.append(self._render.diagnosis_line(label, diagnosis, title_extra=extra))
        elif self._plain:
            lines.extend(render.render_diagnosis_plain_lines(label, diagnosis, title_extra=extra,
                                                             findings=report.findings, end=report.end,
                                                             counts=(errors, warnings, infos)))
        elif self.console.is_terminal:
            lines.append(render.render_diagnosis(label, diagnosis, title_extra=extra,
                                                 findings=report.findings, end=report.end))
        else:
            lines.append(render.render_diagnosis_plain(label, diagnosis, title_extra=extra,
                                                       findings=report.findings, end=report.end))
        self.tally.add(_build_row(info.id, client, server, summary.sni, summary.outcome or diagnosis.outcome,
                                  summary.version, summary.cipher_suite, errors, warnings, infos))
        self._print(*lines)

    def run_finished(self, run: RunInfo, ended: float) -> None:
        self.stop()
        if self.summary and self.tally.total and not self.quiet:
            self.console.print(render.render_summary_table(self.tally))

    @property
    def rows(self) -> list[SummaryRow]:
        """The first rows of the exit table (all of them up to the per-SNI threshold)."""
        return list(self.tally.rows)

