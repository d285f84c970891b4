"""The transcript, rendered into a StringIO console: plain (a pipe) and terminal (colours, Live)."""

from __future__ import annotations

import re
import ssl
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from tests.peers import contexts, make_pki, run_session
from tlsproxy.analysis.model import Diagnosis, Finding, Severity
from tlsproxy.pipeline import ConnectionEnd, ConnectionInfo, Pipeline, RunInfo
from tlsproxy.sinks import render
from tlsproxy.sinks.console import ConsoleSink, make_console
from tlsproxy.sinks.render import ConnLabel, SummaryRow
from tlsproxy.wire.events import Direction

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls12_failure(pki):
    """TLS 1.2, the server requires a client certificate, the client has none."""
    client, server = contexts(pki, version=ssl.TLSVersion.TLSv1_2, require_client_cert=True)
    session = run_session(client, server)
    assert not session.established
    return session


def feed(sink_list, session, *, conn_id: int = 1, app_records: int = 0) -> Pipeline:
    pipeline = Pipeline(sink_list)
    pipeline.run_started(RunInfo(command="test", started=1_700_000_000.0))
    pipeline.open(ConnectionInfo(id=conn_id, client=("127.0.0.1", 40000), server=("127.0.0.1", 8443),
                                 started=100.0, wall_start=1_700_000_000.0))
    t = 100.0
    for direction, data in session.chunks:
        t += 0.001
        pipeline.data(conn_id, direction, data, t)
    pipeline.eof(conn_id, Direction.C2S, t + 0.01)
    pipeline.eof(conn_id, Direction.S2C, t + 0.01)
    pipeline.close(conn_id, ConnectionEnd(how="fin", by="server", at=t + 0.02))
    pipeline.run_finished(RunInfo(), 1_700_000_001.0)
    return pipeline


def plain_console() -> tuple[Console, StringIO]:
    out = StringIO()
    return make_console(file=out, force_terminal=False, width=140), out


def test_plain_transcript_has_one_line_per_message_with_key_fields(mtls12_failure):
    console, out = plain_console()
    feed([ConsoleSink(console)], mtls12_failure)
    text = out.getvalue()
    assert not ANSI.search(text), "a pipe gets no escape codes"
    lines = text.splitlines()
    hello = next(line for line in lines if "client_hello" in line)
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} #1 +C→S  client_hello ", hello)
    assert "sni=localhost" in hello and "TLS 1.2" in hello
    server_hello = next(line for line in lines if "server_hello " in line)
    assert "C←S" in server_hello and "version=TLS 1.2" in server_hello and "suite=TLS_" in server_hello
    assert any("certificate_request" in line for line in lines)
    assert any("C→S  certificate  (empty: no certificate)" in line for line in lines)
    assert any(line.strip().startswith("[0] CN=localhost") and "expires" in line for line in lines)


def test_plain_transcript_ends_with_diagnosis_panel_and_summary_table(mtls12_failure):
    console, out = plain_console()
    pipeline = feed([ConsoleSink(console)], mtls12_failure)
    text = out.getvalue()
    assert "outcome: client_cert_missing" in text
    assert "connection" in text and "#1" in text
    table = text[text.rindex("1 connection"):]
    assert "client_cert_missing" in table and "127.0.0.1:40000" in table
    assert pipeline.worst is not None


def test_findings_are_marked_by_severity_without_colour(mtls12_failure):
    console, out = plain_console()
    pipeline = feed([ConsoleSink(console)], mtls12_failure)
    text = out.getvalue()
    assert pipeline.worst is Severity.error
    assert "[ERROR]" in text


def test_terminal_rendering_uses_colour_but_says_the_same(mtls12_failure):
    plain_con, plain_out = plain_console()
    feed([ConsoleSink(plain_con)], mtls12_failure)
    out = StringIO()
    term = make_console(file=out, force_terminal=True, width=140)
    sink = ConsoleSink(term, live=True)
    feed([sink], mtls12_failure)
    text = out.getvalue()
    assert ANSI.search(text), "a terminal gets colours"
    stripped = ANSI.sub("", text)
    for needle in ("C→S  client_hello", "sni=localhost", "(empty: no certificate)", "[ERROR]",
                   "outcome: client_cert_missing"):
        assert needle in stripped
        assert needle in plain_out.getvalue()


def test_no_color_environment_removes_colours(mtls12_failure, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = StringIO()
    console = make_console(file=out, force_terminal=True, width=140)
    feed([ConsoleSink(console, live=False)], mtls12_failure)
    params = {int(p) for code in re.findall(r"\x1b\[([0-9;]*)m", out.getvalue()) for p in code.split(";") if p}
    colours = {p for p in params if 30 <= p <= 49 or 90 <= p <= 107}
    assert not colours
    assert "client_hello" in out.getvalue()


def test_quiet_shows_only_findings_and_diagnoses(mtls12_failure):
    console, out = plain_console()
    feed([ConsoleSink(console, quiet=True)], mtls12_failure)
    text = out.getvalue()
    assert "C→S  client_hello" not in text
    assert "[ERROR]" in text and "outcome: client_cert_missing" in text
    error_line = next(line for line in text.splitlines() if "[ERROR]" in line)
    assert "#1" in error_line, "without the events around it, a finding names its connection"


def test_verbose_shows_every_extension(mtls12_failure):
    console, out = plain_console()
    feed([ConsoleSink(console, verbose=True)], mtls12_failure)
    text = out.getvalue()
    assert "supported_groups(10)" in text
    assert "signature_algorithms(13)" in text
    assert "cipher_suites:" in text


def test_hexdump_shows_plaintext_record_bytes(mtls12_failure):
    console, out = plain_console()
    feed([ConsoleSink(console, hexdump=True)], mtls12_failure)
    # The first record's payload is the ClientHello: handshake type 1, then a 24-bit length.
    assert re.search(r"^ +0000  01 00 ", out.getvalue(), re.M)


def test_long_transfers_are_summarised_on_screen(pki):
    client, server = contexts(pki)
    session = run_session(client, server, server_data=[b"x" * 100] * 30)
    console, out = plain_console()
    feed([ConsoleSink(console, app_data_records=4)], session)
    text = out.getvalue()
    shown = [line for line in text.splitlines() if "C←S  application_data" in line]
    assert len(shown) == 4
    assert re.search(r"… \d+ more application_data records", text)


def test_render_finding_tags():
    label = ConnLabel(id=7)
    for severity, tag in ((Severity.error, "[ERROR]"), (Severity.warning, "[WARN]"), (Severity.info, "[info]")):
        f = Finding(code="X", severity=severity, title="something", detail="why", hints=("check this",),
                    event_seq=3, at=0.0)
        out = StringIO()
        con = Console(file=out, width=120, color_system=None)
        for line in render.render_finding(label, f):
            con.print(line)
        assert tag in out.getvalue()
        assert ("check this" in out.getvalue()) == (severity >= Severity.warning)


def test_diagnosis_panel_reads_without_colour():
    d = Diagnosis(outcome="version_mismatch", certain=True, gave_up="server", step="after client_hello",
                  cause="The server accepts only TLS 1.3.", checks=("Enable TLS 1.3 on the client.",),
                  negotiation={"versions": {"offered": ["TLS 1.2"], "chosen": None}}, timings={"handshake": 0.004})
    out = StringIO()
    Console(file=out, width=100, color_system=None).print(render.render_diagnosis(ConnLabel(id=2), d))
    text = out.getvalue()
    assert "outcome: version_mismatch" in text
    assert "gave up: server after client_hello" in text
    assert "1. Enable TLS 1.3 on the client." in text
    assert "4.0 ms" in text


def test_summary_table_groups_by_sni_when_many():
    rows = [SummaryRow(id=i, client=f"10.0.0.1:{i}", server="10.0.0.2:443", sni=f"s{i % 3}.example",
                       outcome="established" if i % 2 else "alert", version="TLS 1.3",
                       cipher_suite="TLS_AES_128_GCM_SHA256", errors=i % 2 == 0, warnings=0, infos=0)
            for i in range(30)]
    out = StringIO()
    Console(file=out, width=160, color_system=None).print(render.render_summary_table(rows))
    text = out.getvalue()
    assert "30 connections by SNI" in text
    assert text.count("s1.example") == 1
    few = StringIO()
    Console(file=few, width=160, color_system=None).print(render.render_summary_table(rows[:3]))
    assert "3 connections" in few.getvalue() and "10.0.0.1:2" in few.getvalue()


def test_interleaved_connections_each_line_names_its_connection(pki, mtls12_failure):
    client, server = contexts(pki)
    ok = run_session(client, server)
    console, out = plain_console()
    pipeline = Pipeline([ConsoleSink(console)])
    for cid in (1, 2):
        pipeline.open(ConnectionInfo(id=cid, client=("127.0.0.1", 40000 + cid), started=0.0, wall_start=1.7e9))
    a, b = list(mtls12_failure.chunks), list(ok.chunks)
    t = 0.0
    while a or b:
        for cid, chunks in ((1, a), (2, b)):
            if chunks:
                d, data = chunks.pop(0)
                t += 0.001
                pipeline.data(cid, d, data, t)
    for line in out.getvalue().splitlines():
        if "client_hello" in line or "server_hello" in line:
            assert re.search(r" #[12] ", line)
    assert "#1" in out.getvalue() and "#2" in out.getvalue()


def test_status_line_counts():
    text = render.render_status(open_connections=2, closed=5, bytes_c2s=2048, bytes_s2c=10,
                                findings={Severity.error: 1, Severity.warning: 0, Severity.info: 3})
    assert text.plain.startswith("● 2 open, 5 closed")
    assert "2.0 KiB C→S" in text.plain and "1 error" in text.plain


def test_make_console_is_plain_and_wide_off_a_terminal(tmp_path: Path):
    with open(tmp_path / "out.txt", "w") as f:
        con = make_console(file=f)
        assert not con.is_terminal
        assert con.width >= 120
