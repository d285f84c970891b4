"""The session file: schema-valid, owner-only, never overwriting, journaled as it goes, no
application data."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import stat
from io import StringIO
from pathlib import Path

import jsonschema
import pytest

from tests.peers import contexts, make_pki, run_session
from tlsproxy.pipeline import ConnectionEnd, ConnectionInfo, Pipeline, RunInfo
from tlsproxy.sinks.sessionjson import SCHEMA_PATH, SessionFileError, SessionJsonSink, load_session
from tlsproxy.wire.events import Direction

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def validate(doc: dict) -> None:
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def feed_session(pipeline: Pipeline, session, conn_id: int = 1, *, close: bool = True) -> None:
    pipeline.open(ConnectionInfo(id=conn_id, client=("127.0.0.1", 40000 + conn_id), server=("127.0.0.1", 8443),
                                 started=10.0, wall_start=1_700_000_000.0))
    t = 10.0
    for direction, data in session.chunks:
        t += 0.001
        pipeline.data(conn_id, direction, data, t)
    if close:
        pipeline.eof(conn_id, Direction.C2S, t + 0.01)
        pipeline.eof(conn_id, Direction.S2C, t + 0.01)
        pipeline.close(conn_id, ConnectionEnd(how="fin", by="client", at=t + 0.02))


async def save(path: Path, *sessions) -> dict:
    sink = SessionJsonSink(path)
    await sink.start()
    pipeline = Pipeline([sink])
    pipeline.run_started(RunInfo(command="test", started=1_700_000_000.0))
    for i, session in enumerate(sessions, 1):
        feed_session(pipeline, session, i)
    pipeline.run_finished(RunInfo(), 1_700_000_001.0)
    return await sink.aclose()


def test_saved_session_is_a_valid_owner_only_document(pki, tmp_path: Path):
    client, server = contexts(pki, version=ssl.TLSVersion.TLSv1_2, require_client_cert=True)
    failing = run_session(client, server)
    client, server = contexts(pki)
    ok = run_session(client, server)
    path = tmp_path / "s.json"
    asyncio.run(save(path, failing, ok))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    validate(doc)
    assert doc["format"] == "tlsproxy-session" and doc["complete"] is True
    first, second = doc["connections"]
    assert first["summary"]["outcome"] == "client_cert_missing"
    assert first["diagnosis"]["outcome"] == "client_cert_missing"
    assert second["summary"]["outcome"] == "established"
    types = [e["type"] for e in first["events"] if e["kind"] == "handshake"]
    assert types[:2] == ["client_hello", "server_hello"] and "certificate_request" in types
    hello = next(e for e in first["events"] if e["kind"] == "handshake")
    assert hello["fields"]["server_name"] == "localhost"
    assert any(f["severity"] == "error" for f in first["findings"])
    assert first["certificates"] and first["certificates"][0]["subject"].startswith("CN=localhost")
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was renamed over the journal"


def test_handshake_bytes_stored_application_data_never(pki, tmp_path: Path):
    secret = b"top secret request body"
    client, server = contexts(pki, version=ssl.TLSVersion.TLSv1_2)
    session = run_session(client, server, client_data=[secret])
    path = tmp_path / "s.json"
    asyncio.run(save(path, session))
    text = path.read_text()
    doc = json.loads(text)
    records = [e for e in doc["connections"][0]["events"] if e["kind"] == "record"]
    hello = records[0]
    payload = base64.b64decode(hello["payload"])
    assert payload[0] == 1 and len(payload) == hello["length"]  # the ClientHello, byte for byte
    app = [r for r in records if r["content_type"] == "application_data"]
    assert app and all("payload" not in r for r in app)
    assert all("payload" not in r for r in records if r["encrypted"])
    assert base64.b64encode(secret).decode() not in text and "top secret" not in text


def test_existing_file_is_never_overwritten(tmp_path: Path):
    path = tmp_path / "s.json"
    path.write_text("precious")

    async def go():
        await SessionJsonSink(path).start()

    with pytest.raises(SessionFileError, match="already exists"):
        asyncio.run(go())
    assert path.read_text() == "precious"


def test_long_transfers_become_runs_after_100_records(pki, tmp_path: Path):
    client, server = contexts(pki)
    session = run_session(client, server, server_data=[b"y" * 50] * 250)
    path = tmp_path / "s.json"
    asyncio.run(save(path, session))
    doc = json.loads(path.read_text())
    validate(doc)
    events = doc["connections"][0]["events"]
    single = [e for e in events if e["kind"] == "record" and e["dir"] == "s2c"
              and e["content_type"] == "application_data" and e.get("phase") == "application"]
    runs = [e for e in events if e["kind"] == "application_data_run"]
    assert len(single) == 100
    assert len(runs) == 1 and runs[0]["dir"] == "s2c"
    assert runs[0]["count"] + len(single) >= 250  # one record per server write, plus tickets
    assert runs[0]["bytes"] >= runs[0]["count"] * 50
    assert runs[0]["last_t"] >= runs[0]["t"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)


def test_journal_is_readable_before_the_end(pki, tmp_path: Path):
    """What a hard kill leaves behind: JSON Lines that load_session turns into a document."""
    client, server = contexts(pki, version=ssl.TLSVersion.TLSv1_2, require_client_cert=True)
    failing = run_session(client, server)
    path = tmp_path / "s.json"

    async def go():
        sink = SessionJsonSink(path)
        await sink.start()
        pipeline = Pipeline([sink])
        pipeline.run_started(RunInfo(command="test", started=1_700_000_000.0))
        feed_session(pipeline, failing, 1)
        feed_session(pipeline, failing, 2, close=False)
        for _ in range(50):  # let the writer task flush
            await asyncio.sleep(0.01)
            if path.stat().st_size and path.read_text().count("\n") > 10:
                break
        await asyncio.sleep(0.05)
        snapshot = path.read_text()
        sink._writer.cancel()  # noqa: SLF001 - simulate dying without aclose
        return snapshot

    snapshot = asyncio.run(go())
    first = json.loads(snapshot.splitlines()[0])
    assert first["j"] == "run" and first["format"] == "tlsproxy-session-journal"
    doc = load_session(path)
    validate(doc)
    assert doc["complete"] is False
    one, two = doc["connections"]
    assert one["close"] is not None and one["diagnosis"]["outcome"] == "client_cert_missing"
    assert two["close"] is None and two["events"]


def test_torn_last_line_is_ignored(pki, tmp_path: Path):
    client, server = contexts(pki)
    path = tmp_path / "s.json"
    asyncio.run(save(path, run_session(client, server)))
    doc = json.loads(path.read_text())
    assert doc["complete"]
    journal = tmp_path / "j.json"
    journal.write_text('{"j":"run","format":"tlsproxy-session-journal","version":1,"command":"run"}\n'
                       '{"j":"open","conn":1,"client":{"host":"127.0.0.1","port":1}}\n{"j":"ev","con')
    loaded = load_session(journal)
    validate(loaded)
    assert len(loaded["connections"]) == 1


def test_not_a_session_file_is_refused(tmp_path: Path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(SessionFileError, match="not a tlsproxy session"):
        load_session(path)


def test_json_to_a_stream(pki):
    client, server = contexts(pki)
    session = run_session(client, server)
    out = StringIO()

    async def go():
        sink = SessionJsonSink(None, stream=out)
        pipeline = Pipeline([sink])
        pipeline.run_started(RunInfo(command="test", started=1_700_000_000.0))
        feed_session(pipeline, session)
        pipeline.run_finished(RunInfo(), 1_700_000_001.0)
        await sink.aclose()

    asyncio.run(go())
    doc = json.loads(out.getvalue())
    validate(doc)
    assert doc["connections"][0]["summary"]["version"] == "TLS 1.3"


def test_journal_lines_are_encoded_as_json_dumps_would() -> None:
    from tlsproxy.sinks.sessionjson import _encode_line

    line = {"j": "ev", "conn": 1, "t": 0.000123, "dir": "c2s", "text": "é → \"q\"\n\x00", "none": None,
            "list": [1, 2.5, True], "nested": {"a": []}}
    assert _encode_line(line) == json.dumps(line, ensure_ascii=False, separators=(",", ":"))
    assert _encode_line(line) == _encode_line(line)  # the shared encoder keeps no state between lines
