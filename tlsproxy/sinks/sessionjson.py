"""The session file: what a run saw, kept as JSON that can be compared, shared and replayed.

While the run goes, the file is a *journal*: JSON Lines, one line per opened connection, event,
finding and closed connection, appended by an asyncio task with aiofiles and flushed batch by
batch.  A hard kill leaves a readable journal up to the last line written; :func:`load_session`
(and so ``tlsproxy replay``) accepts it.  At the end (:meth:`SessionJsonSink.aclose`, reached on
SIGINT/SIGTERM too) the journal is assembled into one document, written beside the file and
renamed over it, so the file is always either a complete journal or a complete document.

What is stored: every record's header fields, the plaintext payload of records the core decodes
(handshake, alert, change_cipher_spec, heartbeat) in base64 so a later tlsproxy can re-analyse
them, the decoded messages, certificates, findings and diagnoses, and the ciphertext of protected
records of the handshake phase (``ciphertext``: what TLS 1.3 encrypts from the ServerHello on, a
TLS 1.2 Finished), so that ``tlsproxy replay --keylog`` can decrypt a session saved without keys.
Never stored: application data, encrypted or decrypted (only sizes; ``--show-data`` previews go
to the screen only), and never a key log secret.  Long transfers stay small: after the first
``APP_DATA_RECORDS`` application-data records of a direction, consecutive ones become a run
(count, bytes, first and last time).

Files are created exclusively (an existing file is never overwritten) with mode 0600.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import aiofiles

from tlsproxy import __version__
from tlsproxy.analysis.model import Diagnosis, Finding
from tlsproxy.sinks.describe import jsonable, message_dict, message_name, sslv2_name
from tlsproxy.sinks.render import is_app_data_record
from tlsproxy.wire import events as ev
from tlsproxy.wire import messages as m
from tlsproxy.wire import registry as reg
from tlsproxy.wire.certs import certificate_to_dict
from tlsproxy.wire.events import Direction

if TYPE_CHECKING:
    from tlsproxy.pipeline import ConnectionInfo, ConnectionReport, RunInfo

__all__ = [
    "APP_DATA_RECORDS",
    "FORMAT",
    "JOURNAL_FORMAT",
    "SCHEMA_PATH",
    "SessionFileError",
    "SessionJsonSink",
    "assemble",
    "create_exclusive",
    "dump_document",
    "load_session",
]

FORMAT = "tlsproxy-session"
JOURNAL_FORMAT = "tlsproxy-session-journal"
FORMAT_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("session.schema.json")

#: Application-data records per direction stored one by one before they are summarised as runs.
APP_DATA_RECORDS = 100
#: How often an open application-data run is re-journaled, so a hard kill loses at most this
#: many seconds of record sizes (and never anything else).
RUN_SNAPSHOT_INTERVAL = 0.5
#: Journal lines written per batch before a flush; bounds the work between two flushes.
_BATCH = 256


#: ``json.dumps(line, ensure_ascii=False, separators=(",", ":"))`` with one encoder made once:
#: ``dumps`` with any option builds a new encoder per call, a measurable cost per journal line.
_encode_line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class SessionFileError(Exception):
    """The file cannot be written (it exists) or read (it is not a tlsproxy session)."""


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def create_exclusive(path: str | os.PathLike[str]) -> int:
    """Create ``path`` for writing, owner-only, refusing to replace anything already there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise SessionFileError(f"{path} already exists; choose another file name (it is never overwritten)") from None
    os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added; be explicit anyway
    return fd


# -- event -> JSON --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _addr(addr: tuple[str, int] | None) -> dict[str, Any] | None:
    return None if addr is None else {"host": addr[0], "port": addr[1]}


def finding_dict(f: Finding, started: float = 0.0) -> dict[str, Any]:
    return {
        "code": f.code,
        "severity": f.severity.name,
        "title": f.title,
        "detail": f.detail,
        "hints": list(f.hints),
        "event_seq": f.event_seq,
        "dir": f.direction.value if f.direction is not None else None,
        "t": None if f.at is None else round(f.at - started, 6),
    }


def diagnosis_dict(d: Diagnosis) -> dict[str, Any]:
    return {
        "outcome": d.outcome,
        "certain": d.certain,
        "gave_up": d.gave_up,
        "step": d.step,
        "cause": d.cause,
        "checks": list(d.checks),
        "negotiation": jsonable(d.negotiation),
        "timings": {k: float(v) for k, v in d.timings.items()},
    }


def event_dict(seq: int, event: ev.Event, started: float, record_seq: int | None = None) -> dict[str, Any]:
    """One event as stored; ``record_seq`` links a message, alert or change_cipher_spec to the
    record that completed it."""
    out: dict[str, Any]
    if isinstance(event, ev.Record):
        # The most frequent event, built as one literal (same keys, same order as the others).
        out = {"seq": seq, "t": round(event.at - started, 6), "dir": event.direction.value, "offset": event.offset,
               "kind": "record", "content_type": reg.content_type_name(event.content_type),
               "content_type_code": event.content_type, "record_version": reg.version_name(event.version),
               "record_version_code": event.version, "length": event.length, "encrypted": event.encrypted}
        if event.phase:
            out["phase"] = event.phase
        if event.decrypted:
            out["decrypted"] = True
            if event.inner_type is not None:
                out["inner_type"] = reg.content_type_name(event.inner_type)
        # Only plaintext the core decodes; never application data, never anything that was encrypted.
        if event.payload is not None and not event.encrypted and event.content_type != ev.ContentType.application_data:
            out["payload"] = _b64(event.payload)
        # Handshake-phase ciphertext, kept apart from plaintext: a key log given later opens it.
        if event.payload is not None and event.encrypted and event.phase == "handshake":
            out["ciphertext"] = _b64(event.payload)
        return out
    out = {"seq": seq, "t": round(event.at - started, 6), "dir": event.direction.value, "offset": event.offset}
    if isinstance(event, ev.HandshakeMessage):
        name = message_name(event.msg_type)
        if isinstance(event.message, m.ServerHello) and event.message.is_hello_retry_request:
            name = "hello_retry_request"
        out.update(kind="handshake", type=name, code=event.msg_type, length=event.length)
        if event.message is not None:
            out["fields"] = message_dict(event.message)
        if event.error is not None:
            out["error"] = event.error
        if event.decrypted:
            out["decrypted"] = True
    elif isinstance(event, ev.Alert):
        out.update(kind="alert",
                   level=reg.alert_level_name(event.level) if event.level is not None else None,
                   level_code=event.level,
                   description=reg.alert_description_name(event.description) if event.description is not None
                   else None,
                   code=event.description,
                   meaning=reg.alert_meaning(event.description) if event.description is not None else None,
                   malformed=event.malformed)
        if event.decrypted:
            out["decrypted"] = True
    elif isinstance(event, ev.ChangeCipherSpec):
        out.update(kind="change_cipher_spec", valid=event.valid, starts_encryption=event.starts_encryption)
    elif isinstance(event, ev.Heartbeat):
        out.update(kind="heartbeat",
                   type=reg.heartbeat_message_type_name(event.hb_type) if event.hb_type is not None else None,
                   payload_length=event.payload_length, record_length=event.record_length,
                   encrypted=event.encrypted)
    elif isinstance(event, ev.SSLv2Record):
        out.update(kind="sslv2", type=sslv2_name(event.msg_type) if not event.encrypted else None,
                   length=event.length, encrypted=event.encrypted)
        if event.raw is not None and not event.encrypted:
            out["payload"] = _b64(event.raw)
        if event.message is not None:
            out["fields"] = message_dict(event.message)
        if event.error is not None:
            out["error"] = event.error
    elif isinstance(event, ev.NotTLS):
        # The first line tells "plain HTTP sent to a TLS port" at a glance; the bytes themselves are
        # the peer's application data and are not kept.
        out.update(kind="not_tls", protocol=event.protocol,
                   first_line=event.first_line[:200] if event.first_line else None)
    elif isinstance(event, ev.StartTLS):
        out.update(kind="starttls", protocol=event.protocol)
    elif isinstance(event, ev.DecodeError):
        out.update(kind="decode_error", where=event.where, reason=event.reason)
    elif isinstance(event, ev.ParsingStopped):
        out.update(kind="parsing_stopped", reason=event.reason)
    elif isinstance(event, ev.DecryptionFailed):
        out.update(kind="decryption_failed", content_type=reg.content_type_name(event.content_type),
                   length=event.length, reason=event.reason)
    elif isinstance(event, ev.StreamGap):
        out.update(kind="stream_gap", length=event.length)
    elif isinstance(event, ev.EndOfStream):
        out.update(kind="end_of_stream", buffered=event.buffered)
    else:
        out.update(kind="other", name=type(event).__name__)
    if record_seq is not None and out["kind"] in ("handshake", "alert", "change_cipher_spec", "heartbeat"):
        out["record_seq"] = record_seq
    return out


# -- the sink -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    number: int
    direction: Direction
    first_seq: int
    first: float
    version: int
    count: int = 0
    nbytes: int = 0
    last_seq: int = 0
    last: float = 0.0

    def entry(self, conn_id: int, started: float) -> dict[str, Any]:
        return {"j": "adrun", "conn": conn_id, "run": self.number, "seq": self.first_seq, "last_seq": self.last_seq,
                "t": round(self.first - started, 6), "last_t": round(self.last - started, 6),
                "dir": self.direction.value, "kind": "application_data_run", "count": self.count,
                "bytes": self.nbytes, "record_version_code": self.version}


@dataclass(slots=True)
class _ConnState:
    started: float
    app_records: dict[Direction, int] = field(default_factory=lambda: {Direction.C2S: 0, Direction.S2C: 0})
    runs: dict[Direction, _Run] = field(default_factory=dict)
    last_record: dict[Direction, int] = field(default_factory=dict)
    run_numbers: int = 0


class SessionJsonSink:
    """A :class:`~tlsproxy.pipeline.Sink` that journals to ``path`` and finalises it at the end.

    With ``path=None`` nothing touches the disk: the document is written to ``stream`` (stdout
    for ``--json``) when the sink is closed.  Sink methods never block; call ``await start()``
    before the run and ``await aclose()`` after ``run_finished``.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, stream: IO[str] | None = None,
                 app_data_records: int = APP_DATA_RECORDS) -> None:
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.app_data_records = app_data_records
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._memory: list[str] = []
        self._writer: asyncio.Task[None] | None = None
        self._conns: dict[int, _ConnState] = {}
        self._dirty: set[tuple[int, Direction]] = set()
        self._last_snapshot = time.monotonic()
        self._closed = False
        self.error: BaseException | None = None
        self.document: dict[str, Any] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the file (exclusively, 0600) and start the writer task."""
        if self.path is not None and self._writer is None:
            fd = create_exclusive(self.path)
            handle = await aiofiles.open(fd, "w", encoding="utf-8", closefd=True)
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(handle))

    async def aclose(self) -> dict[str, Any]:
        """Write out everything queued, then turn the journal into the final document."""
        if self._closed:
            return self.document or {}
        if self.path is not None and self._writer is None:
            await self.start()
        self._closed = True
        self._snapshot_runs(force=True)
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
            if self.error is not None:
                raise SessionFileError(f"cannot write {self.path}: {self.error}") from self.error
            assert self.path is not None
            async with aiofiles.open(self.path, encoding="utf-8") as f:
                text = await f.read()
            document = assemble(_parse_lines(text.splitlines(), str(self.path)))
            await _replace_with_document(self.path, document)
        else:
            document = assemble(_parse_lines(self._memory, "<memory>"))
            if self.stream is not None:
                self.stream.write(dump_document(document))
                self.stream.flush()
        self.document = document
        return document

    async def _write_loop(self, handle: Any) -> None:
        try:
            done = False
            while not done:
                try:
                    item = await asyncio.wait_for(self._queue.get(), RUN_SNAPSHOT_INTERVAL)
                except TimeoutError:
                    self._snapshot_runs(force=False)
                    continue
                batch: list[str] = []
                while True:
                    if item is None:
                        done = True
                        break
                    batch.append(item)
                    if len(batch) >= _BATCH or self._queue.empty():
                        break
                    item = self._queue.get_nowait()
                if batch:
                    await handle.write("".join(batch))
                    await handle.flush()
        except BaseException as exc:  # keep the run going; aclose reports it
            self.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            await handle.close()

    def _put(self, line: dict[str, Any]) -> None:
        self._write_line(_encode_line(line) + "\n")

    def _write_line(self, text: str) -> None:
        if self.path is None:
            self._memory.append(text)
        elif not self._closed or self._writer is not None:
            self._queue.put_nowait(text)

    def take_journal(self) -> list[str]:
        """The journal lines written since the last call, taken out of memory (``path=None``
        only): how an analysis worker hands its connections to the parent's sink."""
        lines, self._memory = self._memory, []
        return lines

    def put_journal(self, lines: Sequence[str]) -> None:
        """Journal lines made by another sink's :meth:`take_journal`, as they are."""
        for text in lines:
            self._write_line(text)

    # -- Sink -------------------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        self._put({"j": "run", "format": JOURNAL_FORMAT, "version": FORMAT_VERSION, "tool": run.tool,
                   "tool_version": run.version or __version__, "command": run.command, "source": run.source or None,
                   "listeners": [jsonable(x) for x in run.listeners], "started": iso(run.started),
                   "started_unix": run.started, "keylog": run.keylog})

    def connection_opened(self, info: ConnectionInfo) -> None:
        self._conns[info.id] = _ConnState(started=info.started)
        self._put({"j": "open", "conn": info.id, "label": info.label, "mode": info.mode,
                   "client": _addr(info.client), "server": _addr(info.server), "target": info.target,
                   "started": iso(info.wall_start), "started_unix": info.wall_start})

    def event(self, conn_id: int, seq: int, event: ev.Event | None, findings: Sequence[Finding]) -> None:
        state = self._conns.get(conn_id)
        started = state.started if state is not None else 0.0
        if isinstance(event, ev.DecryptedData):
            event = None  # decrypted application bytes are for the screen only, never the file
        if event is not None and state is not None:
            if is_app_data_record(event):
                assert isinstance(event, ev.Record)
                self._app_data(conn_id, state, seq, event)
            else:
                if state.runs:
                    self._end_runs(conn_id, state)
                record_seq = state.last_record.get(event.direction)
                if isinstance(event, ev.Record):
                    state.last_record[event.direction] = seq
                self._put({"j": "ev", "conn": conn_id, **event_dict(seq, event, started, record_seq)})
                if isinstance(event, ev.HandshakeMessage) and isinstance(event.message, m.Certificate):
                    for i, entry in enumerate(event.message.entries):
                        cert = certificate_to_dict(entry.info)
                        self._put({"j": "cert", "conn": conn_id, "seq": seq, "dir": event.direction.value,
                                   "index": i, **cert})
        for f in findings:
            self._put({"j": "finding", "conn": conn_id, **finding_dict(f, started)})

    def _app_data(self, conn_id: int, state: _ConnState, seq: int, record: ev.Record) -> None:
        d = record.direction
        state.app_records[d] += 1
        state.last_record[d] = seq
        if state.app_records[d] <= self.app_data_records:
            self._put({"j": "ev", "conn": conn_id, **event_dict(seq, record, state.started)})
            return
        run = state.runs.get(d)
        if run is None:
            state.run_numbers += 1
            run = state.runs[d] = _Run(number=state.run_numbers, direction=d, first_seq=seq, first=record.at,
                                       version=record.version)
        run.count += 1
        run.nbytes += record.length
        run.last_seq = seq
        run.last = record.at
        self._dirty.add((conn_id, d))
        if time.monotonic() - self._last_snapshot >= RUN_SNAPSHOT_INTERVAL:
            self._snapshot_runs(force=False)

    def _end_runs(self, conn_id: int, state: _ConnState) -> None:
        for d, run in list(state.runs.items()):
            self._put(run.entry(conn_id, state.started))
            self._dirty.discard((conn_id, d))
        state.runs.clear()

    def _snapshot_runs(self, *, force: bool) -> None:
        """Journal the current state of open runs (a later line for the same run replaces it)."""
        if not self._dirty:
            return
        if not force and time.monotonic() - self._last_snapshot < RUN_SNAPSHOT_INTERVAL:
            return
        for conn_id, d in sorted(self._dirty, key=lambda k: (k[0], k[1].value)):
            state = self._conns.get(conn_id)
            run = state.runs.get(d) if state is not None else None
            if run is not None and state is not None:
                self._put(run.entry(conn_id, state.started))
        self._dirty.clear()
        self._last_snapshot = time.monotonic()

    def connection_closed(self, report: ConnectionReport) -> None:
        state = self._conns.pop(report.info.id, None)
        started = state.started if state is not None else report.info.started
        if state is not None:
            self._end_runs(report.info.id, state)
        end = report.end
        self._put({
            "j": "close", "conn": report.info.id,
            "ended": iso(report.info.wall_start + (end.at - report.info.started)),
            "duration": round(max(end.at - report.info.started, 0.0), 6),
            "bytes": {"c2s": end.bytes_c2s, "s2c": end.bytes_s2c},
            "close": {"how": end.how, "by": end.by, "reason": end.reason},
            "summary": jsonable(report.summary),
            "diagnosis": diagnosis_dict(report.diagnosis),
            "findings": [finding_dict(f, started) for f in report.findings],
        })

    def run_finished(self, run: RunInfo, ended: float) -> None:
        for conn_id, state in self._conns.items():
            self._end_runs(conn_id, state)
        self._put({"j": "end", "ended": iso(ended), "ended_unix": ended})


async def _replace_with_document(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = create_exclusive(tmp)
    try:
        async with aiofiles.open(fd, "w", encoding="utf-8", closefd=True) as f:
            await f.write(dump_document(document))
            await f.flush()
            await asyncio.get_running_loop().run_in_executor(None, os.fsync, f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def dump_document(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"


# -- reading back ---------------------------------------------------------------------------


def _parse_lines(lines: Iterable[str], where: str) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            # A hard kill can cut the last line short; everything before it is intact.
            print(f"tlsproxy: {where}: ignoring an incomplete journal line {n}", file=sys.stderr)


def assemble(lines: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Journal lines -> the session document.  Works on an unfinished journal too: connections
    that never closed have ``close: null`` and the document has ``complete: false``."""
    doc: dict[str, Any] = {"tool": "tlsproxy", "tool_version": __version__, "format": FORMAT,
                           "version": FORMAT_VERSION, "command": "", "source": None, "keylog": None,
                           "started": None, "started_unix": None, "ended": None, "ended_unix": None,
                           "complete": False, "listeners": [], "connections": []}
    conns: dict[int, dict[str, Any]] = {}
    runs: dict[tuple[int, int], dict[str, Any]] = {}
    for line in lines:
        kind = line.get("j")
        if kind == "run":
            if line.get("format") != JOURNAL_FORMAT:
                raise SessionFileError("not a tlsproxy session journal")
            for key in ("tool", "tool_version", "command", "source", "keylog", "started", "started_unix",
                        "listeners"):
                doc[key] = line.get(key, doc[key])
        elif kind == "open":
            conn = {"id": line["conn"], "label": line.get("label", ""), "mode": line.get("mode", ""),
                    "client": line.get("client"), "server": line.get("server"), "target": line.get("target"),
                    "started": line.get("started"), "started_unix": line.get("started_unix"), "ended": None,
                    "duration": None, "bytes": {"c2s": 0, "s2c": 0}, "close": None, "summary": None,
                    "diagnosis": None, "events": [], "certificates": [], "findings": []}
            conns[line["conn"]] = conn
            doc["connections"].append(conn)
        elif kind in ("ev", "adrun", "cert", "finding", "close"):
            conn = conns.get(line.get("conn"))  # type: ignore[arg-type]
            if conn is None:
                continue
            body = {k: v for k, v in line.items() if k not in ("j", "conn")}
            if kind == "ev":
                conn["events"].append(body)
            elif kind == "adrun":
                key = (line["conn"], body.pop("run"))
                if key in runs:
                    runs[key].clear()
                    runs[key].update(body)
                else:
                    runs[key] = body
                    conn["events"].append(body)
            elif kind == "cert":
                conn["certificates"].append(body)
            elif kind == "finding":
                conn["findings"].append(body)
            else:
                for key in ("ended", "duration", "bytes", "close", "summary", "diagnosis", "findings"):
                    conn[key] = body[key]
        elif kind == "end":
            doc["ended"] = line.get("ended")
            doc["ended_unix"] = line.get("ended_unix")
            doc["complete"] = True
    for conn in doc["connections"]:
        conn["events"].sort(key=lambda e: e["seq"])
        if conn["close"] is None:
            doc["complete"] = False
    return doc


def load_session(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a session document, or a journal left by a run that was killed, as a document."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SessionFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    stripped = text.lstrip()
    if not stripped:
        raise SessionFileError(f"{path} is empty (a run killed before it wrote anything?)")
    first_line = stripped.split("\n", 1)[0]
    try:
        head = json.loads(first_line)
    except json.JSONDecodeError:
        head = None
    if isinstance(head, dict) and head.get("j") == "run":
        return assemble(_parse_lines(text.splitlines(), str(path)))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SessionFileError(f"{path} is not a tlsproxy session file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SessionFileError(f"{path} is not a tlsproxy session file (no \"format\": \"{FORMAT}\")")
    if doc.get("version", 0) > FORMAT_VERSION:
        raise SessionFileError(f"{path} has format version {doc.get('version')}; this tlsproxy reads up to "
                               f"{FORMAT_VERSION}")
    return doc
