"""The ``tlsproxy`` command: run (the default), analyze, replay, demo.

Every sub-command builds the same pipeline (parser, analyzer, the console transcript and, with
``--save``/``--json``, the session JSON); only the front end that feeds it differs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlsproxy import __version__
from tlsproxy.wire.handshake import DEFAULT_MAX_MESSAGE_SIZE

EXIT_OK = 0
EXIT_FINDINGS = 1  # analyze/replay/demo: a finding at or above --fail-on was raised
EXIT_USAGE = 2  # bad options (argparse uses 2 as well)
EXIT_LISTEN = 3  # run: a listening socket could not be opened
EXIT_INPUT = 4  # a file could not be read or written (exists, unreadable, not a capture/session)
EXIT_BROKEN_PIPE = 141  # whoever read standard output went away (`| head`): 128 + SIGPIPE, as a shell reports

PARALLEL_MIN_BYTES = 4 << 20
"""Below this much capture, starting worker processes costs more than it saves."""
MAX_DEFAULT_JOBS = 8

SUBCOMMANDS = ("run", "analyze", "replay", "demo")

_EPILOG = f"""\
sub-commands:
  run       relay connections and annotate their TLS handshakes (the default: `tlsproxy --upstream
            example.com:443` is `tlsproxy run --upstream example.com:443`)
  analyze   read pcap/pcapng captures and diagnose every TLS connection in them
  replay    re-run the analysis of a saved session (--save FILE), or redact it for sharing
  demo      a mutual-TLS failure and its fix, on loopback, with nothing to set up

exit status:
  {EXIT_OK}  success (for run: stopped by SIGINT/SIGTERM after a graceful shutdown)
  {EXIT_FINDINGS}  analyze/replay/demo: a finding of at least --fail-on severity was raised
  {EXIT_USAGE}  bad options
  {EXIT_LISTEN}  run: cannot listen on an address
  {EXIT_INPUT}  a file cannot be read or written (an existing --save file is never overwritten)
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _output_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true", help="show every decoded field and extension")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="show only warnings, errors and diagnoses (one line for a clean connection)")
    g.add_argument("--hexdump", action="store_true", help="show the bytes of plaintext records")
    g.add_argument("--no-color", action="store_true", help="no colours (NO_COLOR in the environment does the same)")
    g.add_argument("--json", action="store_true",
                   help="print the session JSON to stdout (for jq) instead of the transcript")
    g.add_argument("--save", metavar="FILE",
                   help="write the session JSON to FILE as the run goes (mode 0600; never overwrites)")
    g.add_argument("--fail-on", choices=("info", "warning", "error"), default=None,
                   help=f"exit with status {EXIT_FINDINGS} when a finding of at least this severity was raised")
    a = p.add_argument_group("analysis")
    a.add_argument("--now", metavar="ISO8601",
                   help="judge certificate validity at this time instead of when the connection was seen")
    a.add_argument("--expect-host", metavar="HOST",
                   help="the host name the server certificate must match (default: the SNI)")
    a.add_argument("--ca-file", metavar="PEM", help="trust anchors for chain verification (default: the system's)")
    a.add_argument("--keylog", metavar="FILE", help="NSS key log file (SSLKEYLOGFILE) to decrypt sessions")
    a.add_argument("--max-handshake-size", metavar="BYTES", type=_positive_int, default=DEFAULT_MAX_MESSAGE_SIZE,
                   help="largest handshake message reassembled; a bigger claim stops that direction's "
                        f"decoding with a finding (default {DEFAULT_MAX_MESSAGE_SIZE})")
    return p


def build_parser() -> argparse.ArgumentParser:
    from tlsproxy.relay import add_run_arguments

    common = _output_options()
    parser = argparse.ArgumentParser(
        prog="tlsproxy", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="A transparent TLS-aware proxy: it relays bytes unchanged, decodes both directions of "
                    "every handshake and explains why one failed.  Try `tlsproxy demo`.")
    parser.add_argument("--version", action="version", version=f"tlsproxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,analyze,replay,demo}")
    run = sub.add_parser("run", parents=[common], help="relay and annotate connections (default)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    add_run_arguments(run)
    _add_show_data(run)
    analyze = sub.add_parser("analyze", parents=[common], help="diagnose the TLS connections in captures",
                             formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    analyze.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng capture")
    analyze.add_argument("--all-connections", action="store_true",
                         help="also analyse TCP connections that do not look like TLS")
    analyze.add_argument("-j", "--jobs", type=_positive_int, default=None, metavar="N",
                         help="analysis processes (default: one per usable CPU for captures of "
                              f"{PARALLEL_MIN_BYTES >> 20} MiB or more, else 1); the output is the same for any N")
    _add_show_data(analyze)
    replay = sub.add_parser("replay", parents=[common], help="re-analyse a saved session",
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    replay.add_argument("file", metavar="FILE", help="session JSON (or the journal of a killed run)")
    replay.add_argument("--connection", type=int, action="append", metavar="N",
                        help="only connection N (repeatable)")
    replay.add_argument("--only-failures", action="store_true",
                        help="only connections that did not establish or raised an error")
    replay.add_argument("--redact", action="store_true",
                        help="with --save OUT (or --json): write a copy with host names, addresses and "
                             "certificate names replaced by pseudonyms and raw bytes dropped")
    demo = sub.add_parser("demo", parents=[common], help="see a mutual-TLS failure diagnosed, then fixed",
                          formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    demo.add_argument("name", nargs="?", default=None, help="scenario (default mtls-missing-cert; see --list)")
    demo.add_argument("--list", action="store_true", help="list the scenarios")
    return parser


def _add_show_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--show-data", type=_non_negative, default=0, metavar="N",
                        help="with a key log: print the first N bytes of each decrypted application data record "
                             "(escaped; on screen only, never in the session file)")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def show_data(ns: argparse.Namespace, keylog: Any) -> int:
    """``--show-data N``, which needs something to decrypt with."""
    n = getattr(ns, "show_data", 0) or 0
    if n and keylog is None and getattr(ns, "command", "") == "run":
        print("tlsproxy: note: --show-data needs a key log (--keylog or SSLKEYLOGFILE); nothing will be shown",
              file=sys.stderr)
    return n


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    args = list(argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in ("-h", "--help", "--version"):
        args.insert(0, "run")
    return args


# -- shared plumbing ------------------------------------------------------------------------


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def analysis_options(ns: argparse.Namespace) -> Any:
    from tlsproxy.analysis.tracker import AnalysisOptions
    from tlsproxy.frontends.trust import system_trust_loader

    now = None
    if ns.now:
        try:
            now = datetime.fromisoformat(ns.now.replace("Z", "+00:00"))
        except ValueError:
            raise CliError(f"--now {ns.now!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
    trust = None
    if ns.ca_file:
        try:
            trust = Path(ns.ca_file).read_bytes()
        except OSError as exc:
            raise CliError(f"--ca-file {ns.ca_file}: {exc.strerror or exc}", EXIT_INPUT) from None
    return AnalysisOptions(now=now, expect_host=ns.expect_host, trust_pems=trust,
                           trust_loader=None if trust else system_trust_loader,
                           keylog=bool(keylog_path(ns)))


def keylog_path(ns: argparse.Namespace) -> str | None:
    """``--keylog``, else ``SSLKEYLOGFILE`` from the environment (the file clients write to)."""
    return ns.keylog or os.environ.get("SSLKEYLOGFILE") or None


def open_keylog(ns: argparse.Namespace, *, follow: bool) -> Any:
    """The key log file to decrypt with, announced on stderr so nobody wonders where secrets come
    from.  ``follow``: the live proxy reads it as clients append; otherwise it is read now."""
    from tlsproxy.frontends.keylogfile import KeyLogFile

    path = keylog_path(ns)
    if path is None:
        return None
    source = "--keylog" if ns.keylog else "SSLKEYLOGFILE in the environment"
    if not follow and not Path(path).is_file():
        if not ns.keylog:
            print(f"tlsproxy: note: SSLKEYLOGFILE={path} does not exist; not decrypting", file=sys.stderr)
            return None
        raise CliError(f"key log {path} ({source}): no such file", EXIT_INPUT)
    keylog = KeyLogFile(path)
    if follow:
        keylog.poll()
        print(f"tlsproxy: decrypting with the key log {path} ({source}); following it as clients write to it",
              file=sys.stderr)
    else:
        keylog.load()
        print(f"tlsproxy: decrypting with the key log {path} ({source}): {len(keylog.keylog)} sessions",
              file=sys.stderr)
    return keylog


def decryptor_factory(keylog: Any, *, always: bool) -> Any:
    """A per-connection decryptor maker for the pipeline.  Without ``always`` a connection only
    gets one when the key log holds secrets (keeping capture analysis at full speed otherwise)."""
    from tlsproxy.wire.decrypt import ConnectionDecryptor

    if keylog is None:
        return None

    def make() -> ConnectionDecryptor | None:
        if always or len(keylog):
            return ConnectionDecryptor(keylog)
        return None

    return make


class Outputs:
    """The sinks one command writes to, and their async lifecycle."""

    def __init__(self, ns: argparse.Namespace, *, console: Any = None, save: str | None | bool = True,
                 live: bool = False, status_line: bool = True) -> None:
        """``live``: the transcript is written beside a running relay, so through a
        :class:`~tlsproxy.sinks.writer.BackgroundWriter` that never blocks it.  ``status_line``
        off: no live status line even on a terminal (others write to the console too)."""
        from tlsproxy.sinks.console import ConsoleSink, make_console
        from tlsproxy.sinks.sessionjson import SessionJsonSink
        from tlsproxy.sinks.writer import BackgroundWriter

        self.sinks: list[Any] = []
        self.json_sinks: list[SessionJsonSink] = []
        self.console_sink: ConsoleSink | None = None
        self.writer: BackgroundWriter | None = None
        if ns.json:
            self.json_sinks.append(SessionJsonSink(None, stream=sys.stdout))
        else:
            if live and console is None:
                self.writer = BackgroundWriter(sys.stdout)
            con = console or make_console(no_color=ns.no_color, file=self.writer)
            self.console_sink = ConsoleSink(con, verbose=ns.verbose, hexdump=ns.hexdump, quiet=ns.quiet,
                                            live=None if status_line else False)
            self.sinks.append(self.console_sink)
        save_path = ns.save if save is True else save
        if save_path:
            self.json_sinks.append(SessionJsonSink(save_path))
        self.sinks.extend(self.json_sinks)

    async def start(self) -> None:
        from tlsproxy.sinks.sessionjson import SessionFileError

        try:
            for s in self.json_sinks:
                await s.start()
        except SessionFileError as exc:
            raise CliError(str(exc), EXIT_INPUT) from None
        except OSError as exc:
            raise CliError(f"cannot write the session file: {exc}", EXIT_INPUT) from None

    async def aclose(self) -> None:
        if self.console_sink is not None:
            self.console_sink.stop()
        for s in self.json_sinks:
            await s.aclose()
        if self.writer is not None:
            self.writer.close(timeout=5.0)


def _run_info(command: str, ns: argparse.Namespace, **kw: Any) -> Any:
    from tlsproxy.pipeline import RunInfo

    return RunInfo(version=__version__, command=command, started=time.time(), keylog=ns.keylog, **kw)


def _exit_for(pipeline: Any, ns: argparse.Namespace) -> int:
    from tlsproxy.analysis.model import Severity

    if ns.fail_on and pipeline.worst is not None and pipeline.worst >= Severity.parse(ns.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


def _err(message: str) -> None:
    print(f"tlsproxy: error: {message}", file=sys.stderr)


# -- sub-commands ---------------------------------------------------------------------------


async def cmd_run(ns: argparse.Namespace) -> int:
    from tlsproxy.frontends.live import PipelineObserver
    from tlsproxy.pipeline import Pipeline
    from tlsproxy.relay import ConfigError, config_from_args, run_relay

    try:
        config = config_from_args(ns)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    outputs = Outputs(ns, live=True)
    options = analysis_options(ns)
    await outputs.start()
    listeners = tuple({"label": s.label, "host": s.host, "port": s.port, "mode": s.mode,
                       "upstream": f"{s.upstream[0]}:{s.upstream[1]}" if s.upstream else None}
                      for s in config.listeners)
    run = _run_info("run", ns, listeners=listeners)
    keylog = open_keylog(ns, follow=True)
    pipeline = Pipeline(outputs.sinks, options,
                        decryptor_factory=decryptor_factory(keylog.keylog if keylog else None, always=True),
                        show_data=show_data(ns, keylog), max_message_size=ns.max_handshake_size)
    pipeline.run_started(run)
    observer = PipelineObserver(pipeline, keylog=keylog)
    ticker = asyncio.create_task(_tick(observer))
    try:
        code = await run_relay(config, observer)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        pipeline.close_all("shutdown", time.monotonic())
        pipeline.run_finished(run, time.time())
        await outputs.aclose()
    return code


async def _tick(observer: Any) -> None:
    """Stalled handshakes must be reported even when no byte moves, and key log secrets picked
    up even when the records that need them are already held: tick on a timer too."""
    while True:
        await asyncio.sleep(0.5)
        observer.tick(time.monotonic())


async def cmd_analyze(ns: argparse.Namespace) -> int:
    for f in ns.files:
        if not Path(f).is_file():
            raise CliError(f"{f}: no such file", EXIT_INPUT)
    jobs = analyze_jobs(ns)
    outputs = Outputs(ns, status_line=jobs == 1)
    options = analysis_options(ns)
    run = _run_info("analyze", ns, source=", ".join(ns.files))
    from tlsproxy.wire.keylog import KeyLog

    keylog_file = open_keylog(ns, follow=False)
    # Always a key log: a pcapng may carry its own secrets (Decryption Secrets Blocks).
    keylog = keylog_file.keylog if keylog_file is not None else KeyLog()
    with _batch_gc():
        return await _analyze(ns, jobs, outputs, options, run, keylog)


@contextlib.contextmanager
def _batch_gc() -> Any:
    """A capture's analysis makes millions of short-lived objects and keeps few: what is loaded by
    then (modules, the trust store) is set aside from the cycle collector, and young objects are
    collected less often (about 3% of the run's instructions; memory stays bounded).  Undone
    afterwards, for callers that go on in the same process."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


async def _analyze(ns: argparse.Namespace, jobs: int, outputs: Outputs, options: Any, run: Any, keylog: Any) -> int:
    from tlsproxy.frontends.capture import analyze_capture
    from tlsproxy.pipeline import Pipeline

    pipeline: Any
    if jobs > 1:
        # Forked before anything starts a thread (the session writer, the status line).
        pipeline = _sharded_pipeline(jobs, ns, outputs, options, keylog)
    else:
        pipeline = Pipeline(outputs.sinks, options, decryptor_factory=decryptor_factory(keylog, always=False),
                            show_data=show_data(ns, keylog), max_message_size=ns.max_handshake_size)
    failed = completed = False
    try:
        await outputs.start()
        for sink in outputs.sinks:
            sink.run_started(run)
        for f in ns.files:
            found = keylog if jobs == 1 else _KeyLogFanOut(keylog, pipeline)
            with _interruptible():
                stats = analyze_capture(f, pipeline, all_connections=ns.all_connections, keylog=found)
            if jobs > 1:
                pipeline.sync()
            sys.stdout.flush()  # the file's transcript before any message about the file
            if stats.embedded_secrets:
                print(f"tlsproxy: {f}: decrypting with the key log embedded in the capture", file=sys.stderr)
            error = getattr(stats, "error", None)
            if error:
                _err(f"{f}: {error}")
                failed = True
            await asyncio.sleep(0)  # let the session writer catch up between files
        completed = True
    except BrokenPipeError:
        _detach_stdout()  # what is still printed below goes nowhere; the session file is completed
        raise
    finally:
        if jobs == 1 or completed:
            pipeline.close_all("capture_end", time.monotonic())
            if jobs > 1:
                pipeline.finish()
        else:
            pipeline.abort()  # interrupted: what the workers hold is lost, not half-printed
        try:
            for sink in outputs.sinks:
                sink.run_finished(run, time.time())
        finally:
            await outputs.aclose()  # the session file is completed even when stdout has gone
    code = _exit_for(pipeline, ns)
    return EXIT_INPUT if failed and code == EXIT_OK and pipeline.reports_count == 0 else code


@contextlib.contextmanager
def _interruptible() -> Any:
    """^C stops a capture's analysis at once.  It is one long synchronous loop, and the handler
    ``asyncio.run`` installs only cancels the task at its next ``await``, after the whole file."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def analyze_jobs(ns: argparse.Namespace) -> int:
    """``--jobs``, or one process per usable CPU when the captures are big enough to gain from it."""
    from tlsproxy.frontends.parallel import usable_cpus

    if ns.jobs is not None:
        return int(ns.jobs)
    total = sum(Path(f).stat().st_size for f in ns.files)
    return min(usable_cpus(), MAX_DEFAULT_JOBS) if total >= PARALLEL_MIN_BYTES else 1


class _KeyLogFanOut:
    """Key-log text found in a capture goes to the parent's key log (for the notice) and to
    every analysis worker."""

    def __init__(self, keylog: Any, pipeline: Any) -> None:
        self.keylog = keylog
        self.pipeline = pipeline

    def feed_text(self, text: str) -> Any:
        self.pipeline.feed_keylog(text)
        return self.keylog.feed_text(text)


class _TextCapture(io.TextIOBase):
    """Where a worker's console writes: it answers ``isatty`` as the real output would, so that
    the worker renders exactly what the parent's console would.  Writes are kept as a list of
    chunks (the worker asks after every call whether anything was written; a StringIO's
    getvalue/seek/truncate round costs several times more)."""

    def __init__(self, isatty: bool) -> None:
        super().__init__()
        self._isatty = isatty
        self.chunks: list[str] = []

    def isatty(self) -> bool:
        return self._isatty

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.chunks.append(text)
        return len(text)

    def take(self) -> str:
        text = "".join(self.chunks)
        self.chunks.clear()
        return text


class _RowList(list[Any]):
    """Collects exit-table rows in a worker (the parent's console keeps the table)."""

    def add(self, row: Any) -> None:
        self.append(row)


class _AnalyzeWorker:
    """One analysis process's side (after the fork): the command's sinks, rendering into memory."""

    def __init__(self, ns: argparse.Namespace, outputs: Outputs, options: Any, keylog: Any) -> None:
        from tlsproxy.frontends.parallel import ShardOutput
        from tlsproxy.pipeline import Pipeline
        from tlsproxy.sinks.sessionjson import SessionJsonSink

        self._output = ShardOutput
        self.keylog = keylog
        self._rows = _RowList()
        sinks: list[Any] = []
        self._text: _TextCapture | None = None
        con = outputs.console_sink
        if con is not None:
            width = con.console.width
            self._text = _TextCapture(con.console.is_terminal)
            con.console.file = self._text
            con.console.width = width
            con.tally = self._rows  # the exit table is the parent's: hand the rows over
            sinks.append(con)
        self._journal = SessionJsonSink(None) if outputs.json_sinks else None
        if self._journal is not None:
            sinks.append(self._journal)
        self.pipeline = Pipeline(sinks, options, decryptor_factory=decryptor_factory(keylog, always=False),
                                 show_data=show_data(ns, keylog), max_message_size=ns.max_handshake_size)

    def feed_keylog(self, text: str) -> None:
        self.keylog.feed_text(text)

    def collect(self) -> Any:
        # Asked after every call, and most calls print nothing: the cheap checks come first.
        written = self._text is not None and self._text.chunks
        journal = self._journal.take_journal() if self._journal is not None else None
        if not (written or journal or self._rows):
            return None
        rows = self._rows[:]
        self._rows.clear()
        return self._output(text=self._text.take() if written else "", journal=journal or [], rows=rows)


def _sharded_pipeline(jobs: int, ns: argparse.Namespace, outputs: Outputs, options: Any, keylog: Any) -> Any:
    from tlsproxy.frontends.parallel import ShardedPipeline, ShardOutput

    console = outputs.console_sink

    def emit(out: ShardOutput) -> None:
        if out.text and console is not None:
            console.console.file.write(out.text)
        for sink in outputs.json_sinks:
            sink.put_journal(out.journal)
        if console is not None:
            for row in out.rows:
                console.tally.add(row)

    return ShardedPipeline(jobs, lambda: _AnalyzeWorker(ns, outputs, options, keylog), emit)


async def cmd_replay(ns: argparse.Namespace) -> int:
    from tlsproxy.pipeline import Pipeline
    from tlsproxy.redact import redact_document
    from tlsproxy.replay import FilterSink, replay_document, stored_decryptor_factory
    from tlsproxy.sinks.sessionjson import SessionFileError, SessionJsonSink, create_exclusive, dump_document, \
        load_session

    try:
        doc = load_session(ns.file)
    except SessionFileError as exc:
        raise CliError(str(exc), EXIT_INPUT) from None
    if ns.redact and not (ns.save or ns.json):
        raise CliError("--redact writes a copy: give --save OUT (or --json for stdout)")
    if ns.redact and ns.save and Path(ns.save).exists():
        raise CliError(f"{ns.save} already exists; choose another file name (it is never overwritten)", EXIT_INPUT)
    options = analysis_options(ns)
    keylog = open_keylog(ns, follow=False)
    json_to_stdout = ns.json
    if ns.redact:
        ns.json = False  # the transcript still shows; the redacted copy goes where asked
    outputs = Outputs(ns, save=None if ns.redact else True)
    memory = SessionJsonSink(None) if ns.redact else None
    if ns.redact and json_to_stdout and outputs.console_sink is not None:
        outputs.sinks.remove(outputs.console_sink)
        outputs.console_sink = None
    await outputs.start()
    sinks = list(outputs.sinks) + ([memory] if memory is not None else [])
    run = _run_info("replay", ns, source=str(ns.file), listeners=tuple(doc.get("listeners") or ()))
    pipeline = Pipeline([FilterSink(sinks, only_failures=ns.only_failures)], options,
                        decryptor_factory=stored_decryptor_factory(keylog.keylog if keylog else None),
                        max_message_size=ns.max_handshake_size)
    selected = set(ns.connection) if ns.connection else None
    try:
        stats = replay_document(doc, pipeline, run=run, connections=selected)
    finally:
        await outputs.aclose()
    if selected is not None and stats.connections == 0:
        _err(f"no connection {', '.join(map(str, sorted(selected)))} in {ns.file}")
        return EXIT_INPUT
    if not stats.reanalysed:
        print("tlsproxy: note: this session holds no handshake bytes (a redacted copy?); its stored findings "
              "and diagnoses are shown as they were", file=sys.stderr)
    if memory is not None:
        redacted = redact_document(await memory.aclose())
        text = dump_document(redacted)
        if json_to_stdout:
            sys.stdout.write(text)
        if ns.save:
            try:
                fd = create_exclusive(ns.save)
            except SessionFileError as exc:
                raise CliError(str(exc), EXIT_INPUT) from None
            with open(fd, "w", encoding="utf-8") as f:
                f.write(text)
    return _exit_for(pipeline, ns)


async def cmd_demo(ns: argparse.Namespace) -> int:
    from tlsproxy import demo

    if ns.list:
        demo.print_list()
        return EXIT_OK
    name = ns.name or demo.DEFAULT
    if name not in demo.SCENARIOS:
        raise CliError(f"no demo scenario {name!r}; `tlsproxy demo --list` shows them")
    outputs = Outputs(ns)
    await outputs.start()
    try:
        pipeline = await demo.run_demo(name, outputs.sinks, options=analysis_options(ns),
                                       console=outputs.console_sink.console if outputs.console_sink else None,
                                       run=_run_info("demo", ns, source=name))
    finally:
        await outputs.aclose()
    return _exit_for(pipeline, ns)


_COMMANDS = {"run": cmd_run, "analyze": cmd_analyze, "replay": cmd_replay, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _normalise_argv(sys.argv[1:] if argv is None else argv)
    if not args:
        parser.print_help()
        return EXIT_USAGE
    ns = parser.parse_args(args)
    if getattr(ns, "quiet", False) and getattr(ns, "verbose", False):
        parser.error("-q and -v do not go together")
    try:
        return asyncio.run(_COMMANDS[ns.command](ns))
    except CliError as exc:
        _err(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_BROKEN_PIPE


def _detach_stdout() -> None:
    """The reader of our output has gone (``tlsproxy analyze big.pcap | head``): stop quietly, as
    command-line tools do, rather than with a traceback.  Standard output is pointed at /dev/null
    so that the interpreter's final flush of what is still buffered cannot fail a second time."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
