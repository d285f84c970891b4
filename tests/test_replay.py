"""Replay re-analyses stored handshake bytes; redaction keeps the story and drops the names."""

from __future__ import annotations

import asyncio
import json
import ssl
from io import StringIO
from pathlib import Path

import jsonschema
import pytest

from tests.peers import contexts, make_pki, run_session
from tlsproxy.cli import main
from tlsproxy.pipeline import ConnectionEnd, ConnectionInfo, Pipeline, RunInfo
from tlsproxy.redact import redact_document
from tlsproxy.replay import FilterSink, can_reanalyse, rebuild, replay_document
from tlsproxy.sinks.console import ConsoleSink, make_console
from tlsproxy.sinks.sessionjson import SCHEMA_PATH, SessionJsonSink, load_session
from tlsproxy.wire.events import Direction

SCHEMA = json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session file with a mutual-TLS failure (#1) and a clean TLS 1.3 session (#2)."""
    tmp = tmp_path_factory.mktemp("replay")
    pki = make_pki(tmp)
    client, server = contexts(pki, version=ssl.TLSVersion.TLSv1_2, require_client_cert=True)
    failing = run_session(client, server)
    client, server = contexts(pki)
    ok = run_session(client, server, server_data=[b"z" * 40] * 120)
    path = tmp / "session.json"

    async def go():
        sink = SessionJsonSink(path)
        await sink.start()
        pipeline = Pipeline([sink])
        pipeline.run_started(RunInfo(command="run", started=1_700_000_000.0))
        for cid, session in ((1, failing), (2, ok)):
            pipeline.open(ConnectionInfo(id=cid, client=("192.168.7.9", 50000 + cid), server=("10.1.2.3", 443),
                                         target="internal.corp.example:443", started=5.0, wall_start=1_700_000_000.0))
            t = 5.0
            for d, data in session.chunks:
                t += 0.002
                pipeline.data(cid, d, data, t)
            pipeline.eof(cid, Direction.C2S, t)
            pipeline.eof(cid, Direction.S2C, t)
            pipeline.close(cid, ConnectionEnd(how="fin", by="server", at=t + 0.01))
        pipeline.run_finished(RunInfo(), 1_700_000_002.0)
        await sink.aclose()

    asyncio.run(go())
    return path


async def _replay(doc: dict, **kw) -> tuple[dict, Pipeline, FilterSink]:
    memory = SessionJsonSink(None)
    filt = FilterSink([memory], only_failures=kw.pop("only_failures", False))
    pipeline = Pipeline([filt])
    replay_document(doc, pipeline, run=RunInfo(command="replay", started=1_700_000_100.0), **kw)
    return await memory.aclose(), pipeline, filt


def test_rebuilt_streams_start_with_the_stored_client_hello(saved: Path):
    doc = load_session(saved)
    conn = doc["connections"][0]
    first = next(iter(rebuild(conn)))
    assert first.kind == "data" and first.direction is Direction.C2S
    assert first.data[0] == 22 and first.data[5] == 1  # handshake record carrying a ClientHello


def test_replay_reaches_the_same_diagnoses(saved: Path):
    original = load_session(saved)
    again, pipeline, _ = asyncio.run(_replay(original))
    jsonschema.validate(again, SCHEMA)
    assert [c["diagnosis"]["outcome"] for c in again["connections"]] == ["client_cert_missing", "established"]
    old_types = [e["type"] for e in original["connections"][0]["events"] if e["kind"] == "handshake"]
    new_types = [e["type"] for e in again["connections"][0]["events"] if e["kind"] == "handshake"]
    assert old_types == new_types
    assert {f["code"] for f in again["connections"][0]["findings"]} >= {
        f["code"] for f in original["connections"][0]["findings"] if f["event_seq"] is not None}


def test_replay_rebuilds_application_data_runs(saved: Path):
    original = load_session(saved)
    runs = [e for e in original["connections"][1]["events"] if e["kind"] == "application_data_run"]
    assert runs, "120 server writes exceed the 100 stored one by one"
    again, _, _ = asyncio.run(_replay(original))
    new_runs = [e for e in again["connections"][1]["events"] if e["kind"] == "application_data_run"]
    assert sum(r["count"] for r in new_runs) == sum(r["count"] for r in runs)
    assert sum(r["bytes"] for r in new_runs) == sum(r["bytes"] for r in runs)


def test_only_failures_and_connection_filters(saved: Path):
    doc = load_session(saved)
    _, _, filt = asyncio.run(_replay(doc, only_failures=True))
    assert [r.info.id for r in filt.shown] == [1]
    again, _, filt = asyncio.run(_replay(doc, connections={2}))
    assert [c["id"] for c in again["connections"]] == [2]


def test_redaction_replaces_names_consistently_and_keeps_findings(saved: Path):
    doc = load_session(saved)
    red = redact_document(doc)
    jsonschema.validate(red, SCHEMA)
    text = json.dumps(red)
    for secret in ("192.168.7.9", "10.1.2.3", "internal.corp.example", "localhost", "tlsproxy Server Root CA",
                   "client.example"):
        assert secret not in text, secret
    assert '"payload"' not in text and '"random"' not in text
    conn = red["connections"][0]
    assert conn["client"]["host"] == red["connections"][1]["client"]["host"]  # same IP, same pseudonym
    assert conn["target"].endswith(":443")
    assert [f["code"] for f in conn["findings"]] == [f["code"] for f in doc["connections"][0]["findings"]]
    assert conn["diagnosis"]["outcome"] == "client_cert_missing"
    certs = conn["certificates"]
    leaf_issuer = certs[0]["issuer"]
    assert leaf_issuer.startswith("CN=name-")
    issuers_elsewhere = [c["subject"] for c in certs[1:]]
    original_certs = doc["connections"][0]["certificates"]
    for orig, new in zip(original_certs[1:], certs[1:]):
        if orig["subject"] == original_certs[0]["issuer"]:
            assert new["subject"] == leaf_issuer
    assert red["redacted"] is True and issuers_elsewhere is not None


def test_redacted_file_cannot_be_reanalysed_but_shows_stored_diagnoses(saved: Path):
    red = redact_document(load_session(saved))
    assert not can_reanalyse(red["connections"][0])
    out = StringIO()
    sink = ConsoleSink(make_console(file=out, force_terminal=False), live=False)
    pipeline = Pipeline([FilterSink([sink])])
    stats = replay_document(red, pipeline, run=RunInfo(command="replay"))
    assert not stats.reanalysed
    assert "outcome: client_cert_missing" in out.getvalue()


def test_cli_replay_with_redact_and_save(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "shareable.json"
    code = main(["replay", str(saved), "--redact", "--save", str(out), "--no-color"])
    assert code == 0
    red = json.loads(out.read_text())
    jsonschema.validate(red, SCHEMA)
    assert red["redacted"] and "internal.corp.example" not in out.read_text()
    assert (out.stat().st_mode & 0o777) == 0o600
    assert main(["replay", str(saved), "--redact", "--save", str(out)]) == 4  # never overwritten
    printed = capsys.readouterr()
    assert "outcome: client_cert_missing" in printed.out
    assert "already exists" in printed.err


def test_cli_replay_fail_on_and_filters(saved: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["replay", str(saved), "--fail-on", "error", "-q"]) == 1
    assert main(["replay", str(saved), "--connection", "2", "--fail-on", "error", "-q"]) == 0
    capsys.readouterr()
    assert main(["replay", str(saved), "--only-failures", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "client_cert_missing" in out and "#2 " not in out
