"""The exit table and the diagnosis stay readable and bounded whatever the run's size."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from tlsproxy.analysis.model import Diagnosis
from tlsproxy.sinks import render
from tlsproxy.sinks.render import ConnLabel, SummaryRow, SummaryTally


def _row(i: int, sni: str) -> SummaryRow:
    return SummaryRow(id=i, client=f"10.0.0.1:{1000 + i}", server="10.0.0.2:443", sni=sni, outcome="established",
                      version="TLS 1.3", cipher_suite="TLS_AES_128_GCM_SHA256", errors=0, warnings=i % 2, infos=1)


def test_tally_memory_is_bounded_by_names_not_connections():
    tally = SummaryTally(per_sni_above=20, max_groups=50)
    for i in range(20_000):
        tally.add(_row(i, f"host{i % 400}.example"))
    assert tally.total == 20_000
    assert len(tally.rows) <= 21 and len(tally.groups) == 51  # 50 names + "(other)"
    assert sum(g.conns for g in tally.groups.values()) == 20_000
    out = StringIO()
    Console(file=out, width=200, color_system=None).print(render.render_summary_table(tally))
    text = out.getvalue()
    assert "20000 connections by SNI" in text and "(other)" in text


def test_plain_diagnosis_wraps_nothing_away():
    """Piped output must keep every word of a long check (a Panel would crop it)."""
    check = "Check that the certificate is issued under one of the CAs the server names in its request " * 3
    diagnosis = Diagnosis(outcome="client_cert_missing", certain=True, gave_up="server", step="after finished",
                          cause="The server asked for a client certificate.", checks=(check.strip(),),
                          negotiation={"alpn": {"offered": [], "chosen": None}})
    out = StringIO()
    console = Console(file=out, width=80, color_system=None, soft_wrap=True)
    console.print(render.render_diagnosis_plain(ConnLabel(id=7, started=0.0, wall_start=0.0), diagnosis))
    text = out.getvalue()
    assert check.strip() in text.replace("\n", " ")
    assert "#7 diagnosis client_cert_missing" in text
    assert "alpn: offered=none, chosen=-" in text
