"""Pure render functions: one event, finding, diagnosis or summary in, rich renderables out.

Nothing here prints or keeps state, so every function can be tested by rendering its result into
a ``Console(file=StringIO())``.  Lines read without colour: severities are spelled out
(``[ERROR]``, ``[WARN]``, ``[info]``), directions are arrows (``C→S`` client to server, ``C←S``
server to client) and every line starts with the connection id.

Each transcript renderer is written once against a line builder — rich's ``Text`` on a terminal,
:class:`PlainLine` elsewhere — so the words cannot drift between the two; the ``*_plain`` variants
return ``str`` lines without touching rich, because off a terminal (a pipe, a file) building styled
``Text`` objects only to throw the styles away was most of the cost of a large capture's output.
Rich strips a few control characters from everything it is given; plain lines are not stripped
here (see :func:`strip_control_codes`, applied once to what is written).
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tlsproxy.analysis.model import OUTCOMES, Diagnosis, Finding, Severity
from tlsproxy.fastbuild import remember
from tlsproxy.netaddr import format_addr as _addr
from tlsproxy.sinks.describe import message_dict, message_name, ssl2_spec_name, sslv2_name
from tlsproxy.wire import events as ev
from tlsproxy.wire import messages as m
from tlsproxy.wire import registry as reg
from tlsproxy.wire.events import ContentType, Direction
from tlsproxy.wire.sslv2 import SSLv2ClientHello, SSLv2ServerHello

__all__ = [
    "ConnLabel",
    "PlainLine",
    "conn_style",
    "hexdump",
    "escape_preview",
    "render_app_data_run",
    "render_app_data_run_plain",
    "render_connection_opened",
    "render_connection_opened_plain",
    "render_diagnosis",
    "render_diagnosis_line_plain",
    "render_diagnosis_plain_lines",
    "render_event",
    "render_event_plain",
    "render_finding",
    "render_finding_plain",
    "render_status",
    "render_summary_table",
    "severity_tag",
    "strip_control_codes",
]

# A palette that stays readable on dark and light terminals; a connection keeps its colour for its
# whole life because the colour is a function of its id.
_PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green",
            "bright_blue", "dark_orange", "orchid", "turquoise2")

_SEVERITY_TAG = {Severity.error: "[ERROR]", Severity.warning: "[WARN]", Severity.info: "[info]"}
_SEVERITY_STYLE = {Severity.error: "bold red", Severity.warning: "yellow", Severity.info: "dim cyan"}

_OK_OUTCOMES = frozenset({"established"})

# Width of "HH:MM:SS.mmm #id  C→S  ": findings line up under the event text, details under that.
_PREFIX_PAD = " " * 23
_DETAIL_PAD = " " * 25


class PlainLine:
    """The unstyled twin of rich's ``Text`` for the subset of its building API the renderers use
    (``append``, ``append_text``, ``+``, ``plain``): styles are accepted and dropped, and nothing is
    sanitised per fragment — the plain console strips control codes once per write."""

    __slots__ = ("parts",)

    def __init__(self, text: str = "", style: str = "") -> None:
        self.parts = [text]

    def append(self, text: str, style: str | None = None) -> PlainLine:
        self.parts.append(text)
        return self

    def append_text(self, other: PlainLine) -> PlainLine:
        self.parts.extend(other.parts)
        return self

    def __add__(self, other: PlainLine) -> PlainLine:
        line = PlainLine()
        line.parts = self.parts + other.parts
        return line

    @property
    def plain(self) -> str:
        return "".join(self.parts)


#: A line builder: ``Text`` (terminal) or ``PlainLine`` (anywhere else).  Renderers take the class.
Line = TypeVar("Line", Text, PlainLine)
LineClass = Callable[..., Line]

# The characters rich's Text removes from every string it is given (rich.control.STRIP_CONTROL_CODES:
# bell, backspace, vertical tab, form feed, carriage return).
_CONTROL_CODES = "\x07\x08\x0b\x0c\r"
_CONTROL_CODES_RE = re.compile(f"[{_CONTROL_CODES}]")


def strip_control_codes(text: str) -> str:
    """What rich would print of ``text``: the same characters removed.  The common case has none,
    and five substring tests find that out far faster than rich's ``str.translate`` (slow on
    non-ASCII text, and every line has an arrow) or a regex search."""
    for code in _CONTROL_CODES:
        if code in text:
            return _CONTROL_CODES_RE.sub("", text)
    return text


def conn_style(conn_id: int) -> str:
    return _PALETTE[conn_id % len(_PALETTE)]


def severity_tag(severity: Severity) -> Text:
    return Text(_SEVERITY_TAG[severity], style=_SEVERITY_STYLE[severity])


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnLabel:
    """How lines of one connection are prefixed: its id, and the clocks to turn ``at`` into a wall time."""

    id: int
    started: float = 0.0  # the caller's clock at open
    wall_start: float = 0.0  # POSIX time at open

    def wall(self, at: float) -> float:
        return self.wall_start + (at - self.started)


_NO_CLOCK = " " * 12


@functools.lru_cache(maxsize=256)
def _hms(second: int) -> str:
    """``HH:MM:SS`` of a POSIX second: every line has a clock and most share their second with the
    previous one, so strftime runs once per second of capture (bounded: lines come in time order)."""
    return time.strftime("%H:%M:%S", time.localtime(second))


_MILLIS = tuple(f".{ms:03d}" for ms in range(1000))


def _clock(label: ConnLabel, at: float | None) -> str:
    if at is None:
        return _NO_CLOCK
    wall = label.wall_start + (at - label.started)  # label.wall(at), inlined: once per line
    # localtime() floors a float the same way; (wall % 1) * 1000 < 1000 for any float.
    return _hms(math.floor(wall)) + _MILLIS[int((wall % 1) * 1000)]


_ARROW = {None: "   ", Direction.C2S: "C→S", Direction.S2C: "C←S"}


def _conn_tag(conn_id: int) -> str:
    return f"#{conn_id:<3}"


@functools.lru_cache(maxsize=4096)
def _plain_tag(conn_id: int, direction: Direction | None) -> str:
    """What follows the clock on a plain line; the same words as the styled prefix below."""
    return f" {_conn_tag(conn_id)} {_ARROW[direction]}  "


def _prefix(new: LineClass, label: ConnLabel, at: float | None, direction: Direction | None) -> Line:
    if new is PlainLine:  # fast path: one string, its connection part cached
        return PlainLine(_clock(label, at) + _plain_tag(label.id, direction))
    text = Text()
    text.append(_clock(label, at), style="dim")
    text.append(" ")
    text.append(_conn_tag(label.id), style=f"bold {conn_style(label.id)}")
    text.append(" ")
    text.append(_ARROW[direction], style="bold" if direction is not None else "")
    text.append("  ")
    return text


def _kv(text: Line, key: str, value: object, style: str = "") -> None:
    text.append(f"  {key}=", style="dim")
    text.append(str(value), style=style)


def _join(values: Iterable[str], limit: int = 6) -> str:
    values = list(values)
    shown = ",".join(values[:limit])
    return shown + (f",+{len(values) - limit}" if len(values) > limit else "")


# The sixteen RFC 8701 GREASE values of a 16-bit field (``reg.is_grease``), for membership tests
# where a hello's lists are filtered without a call per item.
_GREASE16 = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def _version_list(versions: Sequence[int]) -> str:
    return _join((reg.version_name(v) for v in versions if v not in _GREASE16), 8)


def _day(when: datetime.datetime) -> str:
    """A certificate's expiry date, as ``when.strftime("%Y-%m-%d")``; cached by the date's fields
    (not by ``when``: aware datetimes of one instant in different zones compare equal) because a
    capture sees the same few certificates again and again."""
    return _ymd(when.year, when.month, when.day)


@functools.lru_cache(maxsize=256)
def _ymd(year: int, month: int, day: int) -> str:
    return datetime.date(year, month, day).strftime("%Y-%m-%d")


def _cert_line(info: Any) -> str:
    subject = info.subject or info.subject_cn or "?"
    issuer = info.issuer or "?"
    expiry = _day(info.not_after) if info.not_after is not None else "?"
    if info.parse_error:
        return f"undecodable certificate ({info.parse_error})"
    return f"{subject}  issuer: {issuer}  expires {expiry}"


# -- handshake messages ---------------------------------------------------------------------


def _message_fields(new: LineClass, msg: m.Message | None, msg_type: int, text: Line) -> list[Line]:
    """Append the key fields of ``msg`` to ``text``; return extra lines (certificates, CA names)."""
    extra: list[Line] = []
    if isinstance(msg, m.ClientHello):
        _kv(text, "versions", _version_list(msg.supported_versions))
        sni = msg.server_name
        if sni:
            _kv(text, "sni", sni, "bold")
        else:
            _kv(text, "sni", "-")
        suites = [s for s in msg.cipher_suites if s not in _GREASE16]
        _kv(text, "suites", len(suites))
        alpn = msg.alpn
        if alpn:
            _kv(text, "alpn", _join(alpn))
        shares = msg.ext_value(51)
        if isinstance(shares, tuple):
            _kv(text, "key_share", _join(reg.group_name(s.group) for s in shares if s.group not in _GREASE16))
    elif isinstance(msg, m.ServerHello):
        if msg.is_hello_retry_request:
            group = msg.ext_value(51)
            if isinstance(group, int):
                _kv(text, "group", reg.group_name(group))
        _kv(text, "version", reg.version_name(msg.selected_version), "bold")
        _kv(text, "suite", reg.cipher_suite_name(msg.cipher_suite), "bold")
        alpn = msg.alpn
        if alpn:
            _kv(text, "alpn", alpn)
        share = msg.ext_value(51)
        if share is not None and hasattr(share, "group"):
            _kv(text, "key_share", reg.group_name(share.group))
        if msg.downgrade_sentinel:
            _kv(text, "downgrade_sentinel", msg.downgrade_sentinel, "bold red")
    elif isinstance(msg, m.Certificate):
        if msg.is_empty:
            text.append("  (empty: no certificate)", style="bold")
        else:
            _kv(text, "certificates", len(msg.entries))
            for i, entry in enumerate(msg.entries):
                extra.append(new(f"[{i}] {_cert_line(entry.info)}"))
    elif isinstance(msg, m.CertificateRequest):
        if msg.certificate_authorities:
            _kv(text, "ca_names", len(msg.certificate_authorities))
            for name in msg.certificate_authorities:
                extra.append(new(f"acceptable CA: {name}"))
        else:
            _kv(text, "ca_names", "any")
        if msg.signature_algorithms is not None:
            _kv(text, "sig_algs", len(msg.signature_algorithms))
    elif isinstance(msg, m.ServerKeyExchange):
        _kv(text, "kind", msg.kind)
        if msg.named_group is not None:
            _kv(text, "group", reg.group_name(msg.named_group))
        if msg.dh_p_bits:
            _kv(text, "dh_bits", msg.dh_p_bits)
        if msg.signature_algorithm is not None:
            _kv(text, "sig", reg.signature_scheme_name(msg.signature_algorithm))
    elif isinstance(msg, m.CertificateVerify):
        if msg.algorithm is not None:
            _kv(text, "sig", reg.signature_scheme_name(msg.algorithm))
    elif isinstance(msg, m.ClientKeyExchange):
        _kv(text, "kind", msg.kind)
    elif isinstance(msg, m.EncryptedExtensions):
        alpn = msg.ext_value(16)
        if isinstance(alpn, tuple) and alpn:
            _kv(text, "alpn", alpn[0])
        _kv(text, "extensions", _join(reg.extension_name(e.type) for e in msg.extensions) or "-")
    elif isinstance(msg, m.NewSessionTicket):
        _kv(text, "lifetime", f"{msg.ticket_lifetime}s")
    elif isinstance(msg, m.KeyUpdate):
        _kv(text, "request_update", msg.request_update)
    return extra


def _verbose_lines(new: LineClass, data: Any, indent: int = 0) -> list[Line]:
    """Every decoded field, one per line, nested structures indented."""
    out: list[Line] = []
    pad = "  " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value and not _flat(value):
                out.append(new(f"{pad}{key}:", style="dim"))
                out.extend(_verbose_lines(new, value, indent + 1))
            else:
                line = new(f"{pad}{key}: ", style="dim")
                line.append(_scalar(value))
                out.append(line)
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and "type" in item and "code" in item:  # an extension
                line = new(f"{pad}- {item['type']}({item['code']})", style="")
                if "error" in item:
                    line.append(f"  error: {item['error']}", style="red")
                    out.append(line)
                elif "value" in item and (_flat(item["value"]) or not isinstance(item["value"], (dict, list))):
                    line.append(": " + _scalar(item["value"]))
                    out.append(line)
                else:
                    out.append(line)
                    if "value" in item:
                        out.extend(_verbose_lines(new, item["value"], indent + 2))
            elif isinstance(item, (dict, list)):
                out.append(new(f"{pad}-"))
                out.extend(_verbose_lines(new, item, indent + 1))
            else:
                out.append(new(f"{pad}- {_scalar(item)}"))
    else:
        out.append(new(f"{pad}{_scalar(data)}"))
    return out


def _flat(value: Any) -> bool:
    """Fits on one line: a list of scalars or flat dicts, or a dict of scalars."""
    if isinstance(value, list):
        return all(not isinstance(v, (dict, list)) or _flat(v) for v in value)
    if isinstance(value, dict):
        return all(not isinstance(v, (dict, list)) for v in value.values())
    return False


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) if value else "[]"
    if value is None:
        return "-"
    return str(value)


# Printable ASCII as is, every other byte as ".": the right-hand column of a hex dump.
_HEXDUMP_ASCII = bytes(b if 32 <= b < 127 else ord(".") for b in range(256))


def hexdump(data: bytes, width: int = 16, new: LineClass = Text) -> list[Line]:
    lines = []
    for pos in range(0, len(data), width):
        chunk = data[pos : pos + width]
        hexes = chunk.hex(" ")  # "16 03 01 …", as " ".join(f"{b:02x}") but in C
        asc = chunk.translate(_HEXDUMP_ASCII).decode("ascii")
        lines.append(new(f"{pos:04x}  {hexes:<{width * 3}} {asc}", style="dim"))
    return lines


# -- events ----------------------------------------------------------------------------------


def _record_kind(record: ev.Record) -> str:
    if record.encrypted:
        if record.decrypted and record.inner_type is not None:
            return f"{reg.content_type_name(record.inner_type)} (decrypted)"
        if record.phase == "handshake":
            return "encrypted handshake"
        if record.phase == "early_data":
            return "early_data"
        return "application_data" if record.content_type == _APP_DATA \
            else f"encrypted {reg.content_type_name(record.content_type)}"
    return reg.content_type_name(record.content_type)


_APP_DATA = ContentType.application_data  # bound once: an enum member lookup costs on every record


def is_app_data_record(event: ev.Event) -> bool:
    """Bulk data records: summarised once there are many (screen and session file alike)."""
    if not isinstance(event, ev.Record) or event.content_type != _APP_DATA:
        return False
    if event.decrypted and event.inner_type is not None and event.inner_type != _APP_DATA:
        return False
    return not (event.encrypted and event.phase == "handshake")


def render_event(label: ConnLabel, event: ev.Event, *, verbose: bool = False, show_hex: bool = False) -> list[Text]:
    """The transcript line(s) for one event; ``[]`` for events that the next line already covers
    (a plaintext handshake/alert/change_cipher_spec record is shown through its content)."""
    return _event_lines(Text, label, event, verbose, show_hex)


def render_event_plain(label: ConnLabel, event: ev.Event, *, verbose: bool = False,
                       show_hex: bool = False) -> list[str]:
    """:func:`render_event` as unstyled strings, for pipes and files."""
    return [line.plain for line in _event_lines(PlainLine, label, event, verbose, show_hex)]


def _event_lines(new: LineClass, label: ConnLabel, event: ev.Event, verbose: bool, show_hex: bool) -> list[Line]:
    # A record whose content gets its own line (plaintext, or decrypted with a key log, which
    # that line marks) is only shown with -v or --hexdump.
    covered = isinstance(event, ev.Record) and _is_covered(event)
    if covered and not (verbose or show_hex):
        return []
    head = _prefix(new, label, event.at, event.direction)
    extra: list[Line] = []
    details: Any = None
    if isinstance(event, ev.Record):
        head.append(_record_kind(event), style="dim" if covered else "")
        _kv(head, "len", event.length)
        if verbose:
            _kv(head, "record_version", reg.version_name(event.version))
        if show_hex and event.payload:
            extra.extend(hexdump(event.payload, new=new))
    elif isinstance(event, ev.HandshakeMessage):
        head.append(_hs_title(event), style="bold")
        if event.decrypted:
            head.append(" (decrypted)", style="dim")
        if event.message is None:
            head.append(f"  undecodable: {event.error}", style="red")
        else:
            extra.extend(_message_fields(new, event.message, event.msg_type, head))
            if verbose:
                details = message_dict(event.message)
        _kv(head, "len", event.length)
    elif isinstance(event, ev.Alert):
        style = "bold red" if event.level == 2 else "yellow"
        level = reg.alert_level_name(event.level) if event.level is not None else "?"
        desc = reg.describe(event.description, reg.alert_description_name(event.description), bits=8) \
            if event.description is not None else "?"
        head.append("alert ", style=style)
        head.append(f"{level} {desc}", style=style)
        if event.malformed:
            head.append(" (malformed)", style="red")
        if event.decrypted:
            head.append(" (decrypted)", style="dim")
        if event.description is not None:
            head.append(f" — {reg.alert_meaning(event.description)}")
    elif isinstance(event, ev.ChangeCipherSpec):
        head.append("change_cipher_spec", style="bold")
        if not event.starts_encryption:
            head.append(" (middlebox compatibility)", style="dim")
        if not event.valid:
            head.append(f" invalid body {event.raw.hex()}", style="red")
    elif isinstance(event, ev.Heartbeat):
        head.append("heartbeat ", style="bold")
        head.append(reg.heartbeat_message_type_name(event.hb_type) if event.hb_type is not None else "?")
        _kv(head, "claims", event.payload_length)
        _kv(head, "record", event.record_length)
    elif isinstance(event, ev.SSLv2Record):
        head.append(sslv2_name(event.msg_type) if not event.encrypted else "SSLv2 encrypted record", style="bold")
        msg = event.message
        if isinstance(msg, SSLv2ClientHello):
            _kv(head, "version", reg.version_name(msg.version))
            _kv(head, "specs", len(msg.cipher_specs))
        elif isinstance(msg, SSLv2ServerHello):
            _kv(head, "version", reg.version_name(msg.version))
            _kv(head, "specs", _join(ssl2_spec_name(s) for s in msg.cipher_specs))
        _kv(head, "len", event.length)
        if event.error:
            head.append(f"  error: {event.error}", style="red")
        if verbose and msg is not None:
            details = message_dict(msg)
    elif isinstance(event, ev.NotTLS):
        head.append("not TLS", style="bold red")
        _kv(head, "looks_like", event.protocol)
        if event.first_line:
            _kv(head, "first_line", repr(event.first_line))
    elif isinstance(event, ev.StartTLS):
        head.append(f"STARTTLS ({event.protocol}): TLS starts at offset {event.offset}", style="bold")
    elif isinstance(event, ev.DecodeError):
        head.append(f"decode error ({event.where}): ", style="red")
        head.append(event.reason)
    elif isinstance(event, ev.ParsingStopped):
        head.append("parsing stopped: ", style="yellow")
        head.append(event.reason)
    elif isinstance(event, ev.DecryptedData):
        shown = len(event.preview)
        head.append("data (decrypted)", style="dim")
        head.append(f" first {shown} of {event.length} bytes: " if shown < event.length else f" {shown} bytes: ",
                    style="dim")
        head.append(f'"{escape_preview(event.preview)}"')
    elif isinstance(event, ev.DecryptionFailed):
        head.append("decryption failed: ", style="yellow")
        head.append(f"{reg.content_type_name(event.content_type)} len={event.length}: {event.reason}")
    elif isinstance(event, ev.StreamGap):
        head.append(f"capture gap: {event.length} bytes missing", style="yellow")
    elif isinstance(event, ev.EndOfStream):
        head.append(f"end of stream ({event.direction.sender} sent FIN)", style="dim")
        if event.buffered:
            head.append(f", {event.buffered} bytes of an incomplete record left", style="yellow")
    else:
        head.append(type(event).__name__)
    lines = [head]
    if extra:
        lines.extend(new(_DETAIL_PAD) + line for line in extra)
    if details is not None:
        lines.extend(new(_DETAIL_PAD) + line for line in _verbose_lines(new, details))
    return lines


_COVERED_TYPES = frozenset({ContentType.handshake, ContentType.alert, ContentType.change_cipher_spec,
                            ContentType.heartbeat})


def _is_covered(record: ev.Record) -> bool:
    """The record's content is shown on its own line (a plaintext or decrypted handshake etc.)."""
    content = record.inner_type if record.encrypted and record.decrypted else record.content_type
    return (not record.encrypted or record.decrypted) and content in _COVERED_TYPES


def _escape_table() -> tuple[str, ...]:
    table = [chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in range(256)]
    table[ord("\\")], table[ord('"')] = "\\\\", '\\"'
    table[ord("\n")], table[ord("\r")], table[ord("\t")] = "\\n", "\\r", "\\t"
    return tuple(table)


_ESCAPES = _escape_table()


def escape_preview(data: bytes) -> str:
    """Application bytes made safe for a terminal: printable ASCII as is, everything else (control
    characters, escape sequences, non-ASCII) as backslash escapes, so nothing the peer sent can
    move the cursor, change colours or be taken for rich markup."""
    return "".join(_ESCAPES[b] for b in data)


def _hs_title(event: ev.HandshakeMessage) -> str:
    if isinstance(event.message, m.ServerHello) and event.message.is_hello_retry_request:
        return "hello_retry_request"
    return message_name(event.msg_type)


def render_app_data_run(label: ConnLabel, direction: Direction, count: int, nbytes: int,
                        first: float, last: float) -> Text:
    return _app_data_run(Text, label, direction, count, nbytes, first, last)


def render_app_data_run_plain(label: ConnLabel, direction: Direction, count: int, nbytes: int,
                              first: float, last: float) -> str:
    return _app_data_run(PlainLine, label, direction, count, nbytes, first, last).plain


def _app_data_run(new: LineClass, label: ConnLabel, direction: Direction, count: int, nbytes: int,
                  first: float, last: float) -> Line:
    head = _prefix(new, label, last, direction)
    head.append(f"… {count} more application_data records, {_size(nbytes)} "
                f"over {max(last - first, 0.0):.3f}s", style="dim")
    return head


def render_finding(label: ConnLabel, finding: Finding, *, verbose: bool = False, quiet: bool = False) -> list[Text]:
    """A finding, indented under the event it concerns (or on its own line with the connection id
    when ``quiet`` hides the events)."""
    return _finding_lines(Text, label, finding, verbose, quiet)


def render_finding_plain(label: ConnLabel, finding: Finding, *, verbose: bool = False,
                         quiet: bool = False) -> list[str]:
    """:func:`render_finding` as unstyled strings, for pipes and files.

    A capture repeats the same findings (same words) on thousands of connections: what follows a
    line's prefix is a function of the finding's text fields alone, so it is rendered once per
    distinct finding and only the prefix (clock, connection) is built per call."""
    key = (finding.code, finding.severity, finding.title, finding.detail, finding.hints, verbose)
    body = _FINDING_BODIES.get(key)
    if body is None:
        lines = [line.plain for line in _finding_lines(PlainLine, _NO_LABEL, finding, verbose, False)]
        cut = len(_PREFIX_PAD if finding.event_seq is not None else
                  _clock(_NO_LABEL, finding.at) + _plain_tag(0, finding.direction))
        body = (lines[0][cut:], tuple(lines[1:]))
        remember(_FINDING_BODIES, key, body, _MEMO_LIMIT)
    head = (_clock(label, finding.at) + _plain_tag(label.id, finding.direction)
            if quiet or finding.event_seq is None else _PREFIX_PAD) + body[0]
    return [head, *body[1]] if body[1] else [head]


# What a plain finding says after its prefix, by (code, severity, title, detail, hints, verbose):
# (the rest of its first line, its further lines).  Bounded; see fastbuild.remember.
_FINDING_BODIES: dict[tuple, tuple[str, tuple[str, ...]]] = {}
_MEMO_LIMIT = 512
_NO_LABEL = ConnLabel(id=0)


def _finding_lines(new: LineClass, label: ConnLabel, finding: Finding, verbose: bool, quiet: bool) -> list[Line]:
    if quiet or finding.event_seq is None:
        line = _prefix(new, label, finding.at, finding.direction)
    else:
        line = new(_PREFIX_PAD)
    line.append(_SEVERITY_TAG[finding.severity], style=_SEVERITY_STYLE[finding.severity])
    line.append(" ")
    line.append(finding.title, style="bold" if finding.severity >= Severity.warning else "")
    line.append(f" ({finding.code})", style="dim")
    lines = [line]
    pad = _PREFIX_PAD + " " * (len(_SEVERITY_TAG[finding.severity]) + 1)
    if finding.detail and (verbose or finding.severity >= Severity.warning):
        lines.append(new(pad + finding.detail))
    hints = finding.hints if verbose else finding.hints[:1] if finding.severity >= Severity.warning else ()
    for hint in hints:
        lines.append(new(pad + "→ " + hint, style="italic"))
    return lines


def render_connection_opened(label: ConnLabel, client: tuple[str, int] | None, server: tuple[str, int] | None,
                             target: str | None, mode: str) -> Text:
    return _connection_opened(Text, label, client, server, target, mode)


def render_connection_opened_plain(label: ConnLabel, client: tuple[str, int] | None,
                                   server: tuple[str, int] | None, target: str | None, mode: str) -> str:
    return _connection_opened(PlainLine, label, client, server, target, mode).plain


def _connection_opened(new: LineClass, label: ConnLabel, client: tuple[str, int] | None,
                       server: tuple[str, int] | None, target: str | None, mode: str) -> Line:
    head = _prefix(new, label, label.started, None)
    head.append("connection ", style="bold")
    head.append(_addr(client))
    head.append(" → ")
    head.append(target or _addr(server))
    if mode:
        head.append(f"  ({mode})", style="dim")
    return head


def _size(n: int) -> str:
    if n < 1024:  # the common case on the close line: no division
        return f"{n} B"
    x = n / 1024
    for unit in ("KiB", "MiB"):
        if x < 1024:
            return f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} GiB"


# -- diagnosis, status, summary -------------------------------------------------------------


def outcome_style(outcome: str) -> str:
    if outcome in _OK_OUTCOMES:
        return "bold green"
    if outcome == "incomplete":
        return "yellow"
    return "bold red"


def diagnosis_lines(diagnosis: Diagnosis, *, findings: Sequence[Finding] = (), end: Any = None,
                    counts: tuple[int, int, int] | None = None) -> list[tuple[str, str, str]]:
    """The diagnosis as ``(label, text, style)`` lines, shared by the panel and the plain form:
    outcome, who gave up where, cause, what to check, offer against choice, timings, the close.
    ``counts``: the findings' (errors, warnings, infos) when the caller has counted them already."""
    out = list(_diagnosis_head(diagnosis)[0])
    out.extend(_diagnosis_tail(diagnosis, findings, end, counts))
    return out


def _diagnosis_head(diagnosis: Diagnosis) -> tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]:
    """The lines of a diagnosis from its outcome to its negotiation, as ``(label, text, style)``
    and as plain ``"    label text"`` strings.

    They depend on the diagnosis's words and negotiation only, which a capture repeats from
    connection to connection (the same offers, the same server, the same failure), so they are
    rendered once per distinct diagnosis; only timings, counts and the close differ per connection.
    The negotiation (a fresh dict of dicts and lists per connection) is matched by ``==``, which
    runs in C, under a key of the words and the negotiation's shape: its keys in order and the
    exact type of every value, so that values equal but printed otherwise (``1`` and ``True``) or
    keys in another order never match.  Only negotiations of plain values are kept (_storable)."""
    negotiation = diagnosis.negotiation
    key = (diagnosis.outcome, diagnosis.certain, diagnosis.gave_up, diagnosis.step, diagnosis.cause,
           diagnosis.checks, tuple([(k, tuple(v), tuple(map(type, v.values()))) if type(v) is dict else (k, type(v))
                                    for k, v in negotiation.items()]))
    bucket = _DIAGNOSIS_HEADS.get(key)
    if bucket is not None:
        for kept, head in bucket:
            if kept == negotiation:
                return head
    lines = tuple(_diagnosis_head_lines(diagnosis))
    head = (lines, tuple([f"    {h}{t}" for h, t, _ in lines]))
    if _storable(negotiation):
        if bucket is None:
            bucket = []
            remember(_DIAGNOSIS_HEADS, key, bucket, _MEMO_LIMIT)
        elif len(bucket) >= _BUCKET_LIMIT:
            del bucket[0]
        # A private copy: the memo's key material must not change under it.
        bucket.append(({k: {kk: list(vv) if type(vv) is list else vv for kk, vv in v.items()} if type(v) is dict
                        else v for k, v in negotiation.items()}, head))
    return head


# The rendered heads of diagnoses (see _diagnosis_head): by (words, negotiation shape), a few
# (negotiation, head) pairs each.  Bounded: _MEMO_LIMIT keys, _BUCKET_LIMIT pairs a key.
_DIAGNOSIS_HEADS: dict[tuple, list[tuple[dict[str, object], tuple[tuple[tuple[str, str, str], ...], tuple[str, ...]]]]] = {}
_BUCKET_LIMIT = 8
# Values that print the same whenever they compare equal and have the same exact type.
_PLAIN_VALUES = frozenset({str, type(None), bool, int})


def _storable(negotiation: dict[str, object]) -> bool:
    """The negotiation holds only plain values (strings, ``None``, flags, counts, lists of
    strings, one level of dicts of these), for which equal means printed the same."""
    plain = _PLAIN_VALUES
    for value in negotiation.values():
        if type(value) is dict:
            for v in value.values():
                if type(v) is list:
                    if not all(type(item) is str for item in v):
                        return False
                elif type(v) not in plain:
                    return False
        elif type(value) not in plain:
            return False
    return True


def _diagnosis_head_lines(diagnosis: Diagnosis) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    outcome = diagnosis.outcome + (" (inferred)" if not diagnosis.certain else "")
    meaning = OUTCOMES.get(diagnosis.outcome)
    out.append(("outcome: ", outcome + (f" — {meaning}" if meaning else ""), outcome_style(diagnosis.outcome)))
    if (diagnosis.gave_up or diagnosis.step) and diagnosis.outcome not in _OK_OUTCOMES:
        if diagnosis.gave_up:
            out.append(("gave up: ", diagnosis.gave_up + (f" {diagnosis.step}" if diagnosis.step else ""), ""))
        else:  # nobody gave up (yet): the capture or the watch ended
            out.append(("stopped: ", diagnosis.step or "", ""))
    if diagnosis.cause:
        out.append(("cause: ", diagnosis.cause, ""))
    if diagnosis.checks:
        out.append(("check:", "", ""))
        out.extend([("", f"  {i}. {check}", "") for i, check in enumerate(diagnosis.checks, 1)])
    if diagnosis.negotiation:
        out.append(("negotiation (offered → chosen):", "", ""))
        out.extend([("", f"  {key}: {value if type(value) is str else _neg_value(value)}", "")
                    for key, value in diagnosis.negotiation.items()])
    return out


def _diagnosis_tail(diagnosis: Diagnosis, findings: Sequence[Finding], end: Any,
                    counts: tuple[int, int, int] | None) -> list[tuple[str, str, str]]:
    """The per-connection lines of a diagnosis: timings, finding counts, the close."""
    out: list[tuple[str, str, str]] = []
    if diagnosis.timings:
        out.append(("timings: ", ", ".join([f"{k} {v * 1000:.1f} ms" for k, v in diagnosis.timings.items()]), ""))
    if counts is None:
        by_severity = _count(findings)
        counts = by_severity[Severity.error], by_severity[Severity.warning], by_severity[Severity.info]
    if counts != (0, 0, 0):
        out.append(("", f"findings: {counts[0]} error, {counts[1]} warning, {counts[2]} info", "dim"))
    if end is not None:
        closed = f"closed: {end.how}" + (f" by {end.by}" if end.by else "") + \
            f"; {_size(end.bytes_c2s)} C→S, {_size(end.bytes_s2c)} C←S"
        if getattr(end, "reason", None):
            closed += f" ({end.reason})"
        out.append(("", closed, "dim"))
    return out


def render_diagnosis(label: ConnLabel, diagnosis: Diagnosis, *, title_extra: str = "",
                     findings: Sequence[Finding] = (), end: Any = None) -> RenderableType:
    """The panel shown when a connection closes (on a terminal)."""
    body: list[RenderableType] = []
    for head, text, style in diagnosis_lines(diagnosis, findings=findings, end=end):
        line = Text()
        if head:
            line.append(head, style="bold")
        if text:
            line.append(text, style=style if head.startswith("outcome") or style == "dim" else "")
        body.append(line)
    title = Text(f"#{label.id} ", style=f"bold {conn_style(label.id)}")
    title.append(diagnosis.outcome, style=outcome_style(diagnosis.outcome))
    if title_extra:
        title.append(f"  {title_extra}", style="")
    return Panel(Group(*body), title=title, title_align="left", box=box.ROUNDED,
                 border_style="green" if diagnosis.outcome in _OK_OUTCOMES else "red", expand=True)


def render_diagnosis_plain(label: ConnLabel, diagnosis: Diagnosis, *, title_extra: str = "",
                           findings: Sequence[Finding] = (), end: Any = None) -> Text:
    """The diagnosis as plain indented lines, for pipes and files (no box to crop long lines)."""
    return Text("\n".join(render_diagnosis_plain_lines(label, diagnosis, title_extra=title_extra,
                                                       findings=findings, end=end)))


def render_diagnosis_plain_lines(label: ConnLabel, diagnosis: Diagnosis, *, title_extra: str = "",
                                 findings: Sequence[Finding] = (), end: Any = None,
                                 counts: tuple[int, int, int] | None = None) -> list[str]:
    """:func:`render_diagnosis_plain` as a list of strings (not stripped of control codes);
    ``counts`` as for :func:`diagnosis_lines`."""
    head = f"#{label.id} diagnosis {diagnosis.outcome}" + (f"  {title_extra}" if title_extra else "")
    lines = [head, *_diagnosis_head(diagnosis)[1]]
    lines.extend([f"    {h}{t}" for h, t, _ in _diagnosis_tail(diagnosis, findings, end, counts)])
    return lines


def render_diagnosis_line(label: ConnLabel, diagnosis: Diagnosis, *, title_extra: str = "") -> Text:
    """One line for a connection that needs no more (``-q``, established, nothing flagged)."""
    return _diagnosis_line(Text, label, diagnosis, title_extra)


def render_diagnosis_line_plain(label: ConnLabel, diagnosis: Diagnosis, *, title_extra: str = "") -> str:
    return _diagnosis_line(PlainLine, label, diagnosis, title_extra).plain


def _diagnosis_line(new: LineClass, label: ConnLabel, diagnosis: Diagnosis, title_extra: str) -> Line:
    line = new(f"#{label.id} ", style=f"bold {conn_style(label.id)}")
    line.append(diagnosis.outcome, style=outcome_style(diagnosis.outcome))
    if not diagnosis.certain:
        line.append(" (inferred)", style="dim")
    if title_extra:
        line.append(f"  {title_extra}")
    if diagnosis.cause:
        line.append(f"  {diagnosis.cause}", style="dim")
    return line


def _neg_value(value: object) -> str:
    # Every connection's diagnosis has a few dozen of these, mostly names and lists of names, so the
    # common types are tested first, by identity, and a dict's values are formatted inline.
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is dict:
        return ", ".join([f"{k}={v}" if type(v) is str else f"{k}={_neg_seq(v)}" if type(v) is list
                          else f"{k}={_neg_value(v)}" for k, v in value.items()])  # type: ignore[attr-defined]
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join([f"{k}={v if type(v) is str else _neg_value(v)}" for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return _neg_seq(value)
    return str(value)


def _neg_seq(value: Sequence[object]) -> str:
    """The first eight items and how many more; ``none`` for an empty offer."""
    if not value:
        return "none"
    head = value[:8]
    try:
        shown = ",".join(head)  # type: ignore[arg-type]  # names: no str() per item
    except TypeError:
        shown = ",".join(map(str, head))
    return shown if len(value) <= 8 else f"{shown},+{len(value) - 8}"


def _count(findings: Iterable[Finding]) -> dict[Severity, int]:
    counts = {Severity.error: 0, Severity.warning: 0, Severity.info: 0}
    for f in findings:
        counts[f.severity] += 1
    return counts


def render_status(*, open_connections: int, closed: int, bytes_c2s: int, bytes_s2c: int,
                  findings: dict[Severity, int]) -> Text:
    text = Text()
    text.append("● ", style="green" if open_connections else "dim")
    text.append(f"{open_connections} open, {closed} closed")
    text.append(f"  {_size(bytes_c2s)} C→S  {_size(bytes_s2c)} C←S", style="dim")
    text.append("  findings: ")
    text.append(f"{findings.get(Severity.error, 0)} error", style="red" if findings.get(Severity.error) else "dim")
    text.append(", ")
    text.append(f"{findings.get(Severity.warning, 0)} warning",
                style="yellow" if findings.get(Severity.warning) else "dim")
    text.append(f", {findings.get(Severity.info, 0)} info", style="dim")
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryRow:
    """What the exit table needs of one closed connection."""

    id: int
    client: str
    server: str
    sni: str | None
    outcome: str
    version: str | None
    cipher_suite: str | None
    errors: int
    warnings: int
    infos: int


@dataclass(slots=True)
class SniGroup:
    """Totals of the connections to one SNI (or server) for the exit table."""

    conns: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)
    suites: set[str] = field(default_factory=set)
    errors: int = 0
    warnings: int = 0
    infos: int = 0


class SummaryTally:
    """What the exit table needs, in bounded memory whatever the number of connections: the first
    ``per_sni_above`` rows one by one, and per-SNI totals (at most ``max_groups`` names; the rest
    are counted under "(other)")."""

    OTHER = "(other)"

    def __init__(self, *, per_sni_above: int = 20, max_groups: int = 200) -> None:
        self.per_sni_above = per_sni_above
        self.max_groups = max_groups
        self.rows: list[SummaryRow] = []
        self.groups: dict[str, SniGroup] = {}
        self.total = 0

    def add(self, r: SummaryRow) -> None:
        self.total += 1
        if len(self.rows) <= self.per_sni_above:
            self.rows.append(r)
        name = r.sni or r.server or "-"
        if name not in self.groups and len(self.groups) >= self.max_groups:
            name = self.OTHER
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = SniGroup()
        g.conns += 1
        g.outcomes[r.outcome] = g.outcomes.get(r.outcome, 0) + 1
        if r.version and len(g.versions) < 8:
            g.versions.add(r.version)
        if r.cipher_suite and len(g.suites) < 8:
            g.suites.add(r.cipher_suite)
        g.errors += r.errors
        g.warnings += r.warnings
        g.infos += r.infos


def render_summary_table(rows: Sequence[SummaryRow] | SummaryTally, *, per_sni_above: int = 20) -> Table:
    """One row per connection, or one per SNI (with outcome counts) when there are many."""
    if isinstance(rows, SummaryTally):
        tally = rows
    else:
        tally = SummaryTally(per_sni_above=per_sni_above)
        for r in rows:
            tally.add(r)
    if tally.total <= tally.per_sni_above:
        table = Table(title=f"{tally.total} connection{'s' if tally.total != 1 else ''}", box=box.SIMPLE_HEAD,
                      title_justify="left")
        for col in ("#", "client", "server / sni", "outcome", "version", "cipher suite", "err", "warn", "info"):
            table.add_column(col, no_wrap=col in ("#", "outcome", "err", "warn", "info"))
        for r in tally.rows:
            table.add_row(Text(str(r.id), style=conn_style(r.id)), r.client,
                          r.sni or r.server, Text(r.outcome, style=outcome_style(r.outcome)),
                          r.version or "-", r.cipher_suite or "-", _n(r.errors, "red"), _n(r.warnings, "yellow"),
                          _n(r.infos, "dim"))
        return table
    table = Table(title=f"{tally.total} connections by SNI", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("sni / server", "conns", "outcomes", "versions", "cipher suites", "err", "warn", "info"):
        table.add_column(col)
    for name, g in sorted(tally.groups.items()):
        out_text = Text()
        for i, (o, n) in enumerate(sorted(g.outcomes.items(), key=lambda kv: -kv[1])):
            if i:
                out_text.append(", ")
            out_text.append(f"{o}×{n}", style=outcome_style(o))
        table.add_row(name, str(g.conns), out_text, ",".join(sorted(g.versions)) or "-",
                      _join(sorted(g.suites), 3) or "-", _n(g.errors, "red"), _n(g.warnings, "yellow"),
                      _n(g.infos, "dim"))
    return table


def _n(value: int, style: str) -> Text:
    return Text(str(value), style=style if value else "dim")
