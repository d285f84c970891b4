"""The plain (pipe/file) transcript is built as ``str`` lines without rich: it must say exactly what the
rich renderers say, with rich's control-code stripping, and its caches must be bounded and exact."""

from __future__ import annotations

import datetime
import random
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.control import strip_control_codes as rich_strip
from rich.text import Text

from tlsproxy.analysis.model import Diagnosis, Finding, Severity
from tlsproxy.frontends.capture import analyze_capture
from tlsproxy.pipeline import ConnectionEnd, ConnectionInfo, Pipeline
from tlsproxy.sinks import render
from tlsproxy.sinks.console import ConsoleSink, make_console
from tlsproxy.sinks.render import ConnLabel, PlainLine
from tlsproxy.wire import events as ev
from tlsproxy.wire import registry as reg
from tlsproxy.wire.events import ContentType, Direction
from tlsproxy.wire.keylog import KeyLog

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
CAPTURES = ("illustrated/illustrated-tls13.pcap", "illustrated/illustrated-tls12.pcap", "ja3/ssl-curl.pcap",
            "hotplace/tls13-handshake-failure.pcapng", "hotplace/tls12-renegotiation.pcapng")


class _Recorder:
    """A sink that keeps every call, to render the same input both ways."""

    def __init__(self) -> None:
        self.opened: list[Any] = []
        self.events: list[tuple[int, Any, tuple[Finding, ...]]] = []
        self.closed: list[Any] = []

    def run_started(self, run: Any) -> None: ...
    def run_finished(self, run: Any, ended: float) -> None: ...

    def connection_opened(self, info: Any) -> None:
        self.opened.append(info)

    def event(self, conn_id: int, seq: int, event: Any, findings: Any) -> None:
        self.events.append((conn_id, event, tuple(findings)))

    def connection_closed(self, report: Any) -> None:
        self.closed.append(report)


def _recorded(name: str) -> _Recorder:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"capture corpus not found at {CORPUS}")
    rec = _Recorder()
    keylog = KeyLog()
    keyfile = path.with_suffix(".keylog")
    if keyfile.is_file():
        keylog.feed_text(keyfile.read_text())
    from tlsproxy.cli import decryptor_factory

    pipeline = Pipeline([rec], decryptor_factory=decryptor_factory(keylog, always=False), show_data=64)
    analyze_capture(path, pipeline, keylog=keylog)
    pipeline.close_all("capture_end", time.monotonic())
    return rec


def _rich_plain(lines: Any) -> list[str]:
    return [line.plain for line in (lines if isinstance(lines, list) else [lines])]


def _plain(lines: Any) -> list[str]:
    return [render.strip_control_codes(line) for line in (lines if isinstance(lines, list) else [lines])]


@pytest.mark.parametrize("name", CAPTURES)
def test_plain_renderers_say_what_the_rich_ones_say(name: str) -> None:
    rec = _recorded(name)
    labels = {info.id: ConnLabel(id=info.id, started=info.started, wall_start=info.wall_start) for info in rec.opened}
    assert rec.events, "the capture produced events"
    for info in rec.opened:
        label = labels[info.id]
        args = (label, info.client, info.server, info.target, info.mode)
        assert _plain(render.render_connection_opened_plain(*args)) == \
            _rich_plain(render.render_connection_opened(*args))
    for conn_id, event, findings in rec.events:
        label = labels.get(conn_id, ConnLabel(id=conn_id))
        if event is not None:
            for verbose in (False, True):
                for show_hex in (False, True):
                    assert _plain(render.render_event_plain(label, event, verbose=verbose, show_hex=show_hex)) == \
                        _rich_plain(render.render_event(label, event, verbose=verbose, show_hex=show_hex))
            assert render.render_app_data_run_plain(label, event.direction or Direction.C2S, 7, 123456, 1.0, 2.5) == \
                render.render_app_data_run(label, event.direction or Direction.C2S, 7, 123456, 1.0, 2.5).plain
        for finding in findings:
            for verbose in (False, True):
                for quiet in (False, True):
                    assert _plain(render.render_finding_plain(label, finding, verbose=verbose, quiet=quiet)) == \
                        _rich_plain(render.render_finding(label, finding, verbose=verbose, quiet=quiet))
    for report in rec.closed:
        label = labels[report.info.id]
        kw = {"title_extra": "a → b", "findings": report.findings, "end": report.end}
        assert render.render_diagnosis_plain(label, report.diagnosis, **kw).plain == \
            "\n".join(_plain(render.render_diagnosis_plain_lines(label, report.diagnosis, **kw)))
        assert _plain(render.render_diagnosis_line_plain(label, report.diagnosis, title_extra="x")) == \
            _rich_plain(render.render_diagnosis_line(label, report.diagnosis, title_extra="x"))


def test_strip_control_codes_matches_rich() -> None:
    samples = ["", "plain", "C→S  len=5", "\r", "a\rb\x07c\x08d\x0be\x0cf\n→\x1b[31m\x00\t", "\x0c" * 3 + "x"]
    for text in samples:
        assert render.strip_control_codes(text) == rich_strip(text)


def test_control_codes_from_the_peer_are_stripped_in_plain_output_as_rich_would() -> None:
    sni = "evil\r\x07host\x0b.example"
    info = ConnectionInfo(id=4, client=("10.0.0.1", 5555), server=("10.0.0.2", 443), started=10.0,
                          wall_start=1_700_000_000.0, target=sni)
    finding = Finding(code="X", severity=Severity.warning, title=f"title {sni}", detail=f"detail {sni}",
                      hints=(f"hint {sni}",), event_seq=None, at=10.5, direction=Direction.S2C)
    event = ev.EndOfStream(direction=Direction.C2S, offset=0, at=10.4, buffered=0)
    outs = []
    for console in (make_console(file=StringIO(), force_terminal=False),  # plain: str lines
                    Console(file=StringIO(), width=1000, color_system=None, force_terminal=False)):  # rich Text
        sink = ConsoleSink(console)
        sink.connection_opened(info)
        sink.event(4, 0, event, [finding])
        outs.append(console.file.getvalue())  # type: ignore[attr-defined]
    assert outs[0] == outs[1]
    assert "evilhost.example" in outs[0] and "\r" not in outs[0]


def test_clock_cache_is_bounded_and_exact() -> None:
    assert render._hms.cache_info().maxsize is not None
    rng = random.Random(7)
    for _ in range(2000):
        wall_start = rng.choice([0.0, 1_700_000_000.0, 1_234_567_890.123]) + rng.random() * 100_000
        label = ConnLabel(id=1, started=5.0, wall_start=wall_start)
        at = 5.0 + rng.random() * 1000
        wall = label.wall(at)
        expected = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int((wall % 1) * 1000):03d}"
        assert render._clock(label, at) == expected
    assert render._clock(ConnLabel(id=1), None) == " " * 12
    assert render._hms.cache_info().currsize <= render._hms.cache_info().maxsize


def test_prefix_tag_cache_is_bounded_and_matches_the_styled_prefix() -> None:
    assert render._plain_tag.cache_info().maxsize is not None
    label = ConnLabel(id=12345, started=1.0, wall_start=1_700_000_000.0)
    for direction in (None, Direction.C2S, Direction.S2C):
        for conn_id in (0, 7, 123, 12345):
            lab = ConnLabel(id=conn_id, started=label.started, wall_start=label.wall_start)
            plain = render._prefix(PlainLine, lab, 2.5, direction).plain
            assert plain == render._prefix(Text, lab, 2.5, direction).plain


def test_certificate_day_cache_is_exact() -> None:
    assert render._ymd.cache_info().maxsize is not None
    late = datetime.timezone(datetime.timedelta(hours=-1))
    for when in (datetime.datetime(2030, 1, 2, 3, 4, 5), datetime.datetime(999, 12, 31),
                 datetime.datetime(2024, 2, 29, tzinfo=datetime.UTC),
                 datetime.datetime(2030, 1, 1, 0, 30, tzinfo=datetime.UTC),
                 datetime.datetime(2029, 12, 31, 23, 30, tzinfo=late)):  # the same instant, another day
        assert render._day(when) == when.strftime("%Y-%m-%d")


def test_grease_set_is_the_registry_rule() -> None:
    assert render._GREASE16 == frozenset(v for v in range(0x10000) if reg.is_grease(v))


def test_hexdump_lines_are_unchanged() -> None:
    data = bytes(range(256)) + b"tail"
    expected = []
    for pos in range(0, len(data), 16):
        chunk = data[pos:pos + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        expected.append(f"{pos:04x}  {hexes:<48} {asc}")
    assert [t.plain for t in render.hexdump(data)] == expected
    assert [t.plain for t in render.hexdump(data, new=PlainLine)] == expected


def test_plain_console_writes_str_lines_and_rich_console_still_styles() -> None:
    info = ConnectionInfo(id=2, client=("10.0.0.1", 5555), server=("10.0.0.2", 443), started=10.0,
                          wall_start=1_700_000_000.0)
    record = ev.Record(direction=Direction.C2S, offset=0, at=10.25, content_type=ContentType.application_data,
                       version=0x0303, length=40, encrypted=True, phase="application")
    plain_out, color_out = StringIO(), StringIO()
    for console in (make_console(file=plain_out, force_terminal=False),
                    Console(file=color_out, force_terminal=True, color_system="truecolor", width=200)):
        sink = ConsoleSink(console, live=False)
        sink.connection_opened(info)
        sink.event(2, 0, record, [])
    clock = time.strftime("%H:%M:%S", time.localtime(1_700_000_000.25)) + ".250"
    assert plain_out.getvalue().splitlines()[1] == f"{clock} #2   C→S  application_data  len=40"
    assert "\x1b[" in color_out.getvalue() and "application_data" in color_out.getvalue()


def test_diagnosis_plain_lines_join_to_the_plain_text() -> None:
    d = Diagnosis(outcome="handshake_failure", certain=True, gave_up="server", step="after client_hello",
                  cause="no common cipher", checks=("a", "b"),
                  negotiation={"versions": {"offered": ["TLS 1.3", "TLS 1.2"], "chosen": None}, "resumed": False,
                               "groups": {"offered": [], "n": 3}})
    label = ConnLabel(id=9)
    lines = render.render_diagnosis_plain_lines(label, d, title_extra="x → y")
    assert render.render_diagnosis_plain(label, d, title_extra="x → y").plain == "\n".join(lines)
    assert "      versions: offered=TLS 1.3,TLS 1.2, chosen=-" in lines
    assert "      groups: offered=none, n=3" in lines
    end = ConnectionEnd(how="fin", by="server", at=1.0, bytes_c2s=10, bytes_s2c=5000)
    assert render.render_diagnosis_plain_lines(label, d, end=end)[-1].endswith("10 B C→S, 4.9 KiB C←S")



def _size_reference(n: float) -> str:
    """The byte-size wording as it was first written (a unit loop), to hold the fast path to it."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def test_size_wording_is_unchanged_at_every_unit_boundary() -> None:
    rng = random.Random(7)
    edges = [k * 1024**p + d for p in range(5) for k in (1, 1023, 1024) for d in (-1, 0, 1)]
    for n in [0, 1, 5000, 10**15] + [e for e in edges if e >= 0] + [rng.randrange(1 << 45) for _ in range(2000)]:
        assert render._size(n) == _size_reference(n), n


def test_negotiation_values_format_every_kind() -> None:
    neg = render._neg_value
    assert neg(None) == "-" and neg("x25519") == "x25519" and neg(True) == "True" and neg(15) == "15"
    assert neg([]) == "none" and neg(()) == "none"
    names = [f"n{i}" for i in range(11)]
    assert neg(names) == "n0,n1,n2,n3,n4,n5,n6,n7,+3" and neg(tuple(names[:8])) == "n0,n1,n2,n3,n4,n5,n6,n7"
    assert neg([1, "a", None, b"x"]) == "1,a,None,b'x'"  # not all names: str() of each, as before
    assert neg({"offered": names[:2], "chosen": None, "count": 2, "ok": False, "sub": {"a": []}, "t": (1, 2)}) == \
        "offered=n0,n1, chosen=-, count=2, ok=False, sub=a=none, t=1,2"


def test_diagnosis_counts_given_or_counted_give_the_same_lines() -> None:
    d = Diagnosis(outcome="established", certain=True, gave_up=None, step=None, cause="fine",
                  negotiation={"resumed": False},
                  timings={"handshake": 0.0123})
    findings = [Finding(code=c, severity=s, title="t", detail="") for c, s in
                (("A", Severity.error), ("B", Severity.warning), ("C", Severity.warning), ("D", Severity.info))]
    counted = render.diagnosis_lines(d, findings=findings)
    assert counted == render.diagnosis_lines(d, findings=findings, counts=(1, 2, 1))
    assert ("", "findings: 1 error, 2 warning, 1 info", "dim") in counted
    assert render.diagnosis_lines(d) == render.diagnosis_lines(d, counts=(0, 0, 0))
    assert not any(text.startswith("findings:") for _, text, _ in render.diagnosis_lines(d))
