"""`tlsproxy demo`: real server, real relay, real clients, all on loopback."""

from __future__ import annotations

import asyncio
import json
from io import StringIO

import jsonschema
import pytest

from tlsproxy import demo
from tlsproxy.cli import main
from tlsproxy.sinks.console import ConsoleSink, make_console
from tlsproxy.sinks.sessionjson import SCHEMA_PATH, SessionJsonSink

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def run(name: str) -> tuple[dict, str]:
    out = StringIO()

    async def go():
        memory = SessionJsonSink(None)
        console = ConsoleSink(make_console(file=out, force_terminal=False, width=140), live=False)
        await demo.run_demo(name, [console, memory], console=console.console)
        return await memory.aclose()

    return asyncio.run(go()), out.getvalue()


@pytest.mark.network
def test_default_demo_shows_the_mtls_failure_then_success():
    doc, text = run(demo.DEFAULT)
    jsonschema.validate(doc, SCHEMA)
    outcomes = [c["diagnosis"]["outcome"] for c in doc["connections"]]
    assert outcomes == ["client_cert_missing", "established"]
    assert text.index("outcome: client_cert_missing") < text.index("outcome: established")
    assert "certificate_request" in text and "(empty: no certificate)" in text
    assert "client: got 'HTTP/1.0 200 OK'" in text


@pytest.mark.network
@pytest.mark.parametrize(("name", "outcome"), [
    ("expired-server-cert", "server_cert_rejected"),
    ("hostname-mismatch", "server_cert_rejected"),
    ("version-mismatch", "version_mismatch"),
    ("tls13-clean", "established"),
])
def test_each_scenario_reaches_its_outcome(name: str, outcome: str):
    doc, _ = run(name)
    assert [c["diagnosis"]["outcome"] for c in doc["connections"]] == [outcome]


def test_demo_list_names_every_scenario(capsys: pytest.CaptureFixture[str]):
    assert main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("mtls-missing-cert", "expired-server-cert", "hostname-mismatch", "version-mismatch", "tls13-clean"):
        assert name in out


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    assert main(["demo", "no-such-thing"]) == 2
    assert "demo --list" in capsys.readouterr().err


@pytest.mark.network
def test_demo_command_fail_on(capsys: pytest.CaptureFixture[str]):
    assert main(["demo", "version-mismatch", "-q", "--no-color", "--fail-on", "error"]) == 1
    assert "version_mismatch" in capsys.readouterr().out
