"""Key logs end to end, as a user runs them: real clients write their secrets while they connect
through the real proxy, which follows the file; the findings for TLS 1.3 must be those of TLS 1.2.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from tests.certfactory import make_chain
from tests.peers import Pki, contexts, make_pki
from tests.keylog_support import (
    HAVE_OPENSSL,
    TIMEOUT,
    KeylogProxy,
    OpensslServer,
    SslServer,
    openssl_client,
    ssl_client,
    wait_until,
)
from tlsproxy.analysis.model import Severity
from tlsproxy.cli import main
from tlsproxy.sinks.sessionjson import SCHEMA_PATH
from tlsproxy.wire import events as ev
from tlsproxy.wire.events import Direction
from tlsproxy.wire.messages import HandshakeType

pytestmark = pytest.mark.network

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
SCHEMA = json.loads(SCHEMA_PATH.read_text())
needs_openssl = pytest.mark.skipif(not HAVE_OPENSSL, reason="openssl binary not installed")

#: Codes that differ between the versions whatever the key log: a TLS 1.2 peer sends its alert
#: before its change_cipher_spec, in plaintext; an OpenSSL TLS 1.3 client rejecting the server's
#: certificate sends its alert in plaintext although handshake keys exist; a TLS 1.3 client is done
#: after its own Finished and may close cleanly (close_notify) before it reads the server's rejection.
VERSION_SPECIFIC = frozenset({"ALERT_NOT_ENCRYPTED_BEFORE_KEYS", "ALERT_PLAINTEXT_AFTER_KEYS", "ALERT_CLOSE_NOTIFY"})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def codes(report) -> set[str]:
    return {f.code for f in report.findings}


def run_scenario(pki: Pki, tmp_path: Path, version: ssl.TLSVersion, *, require_client_cert: bool = False,
                 client_has_cert: bool = False, server_hostname: str = "localhost", keylog: bool = True,
                 follow: bool | None = None, extra: tuple[str, ...] = (), save: Path | None = None,
                 request: bytes = b"GET / HTTP/1.0\r\n\r\n",
                 response: bytes = b"HTTP/1.0 200 OK\r\n\r\nhello\n") -> KeylogProxy:
    """One ``ssl`` client connection through the proxy.  ``keylog``: the client writes its secrets
    to ``keys-<version>.log``; ``follow`` (default: the same): the proxy follows that file."""
    client, server = contexts(pki, version=version, require_client_cert=require_client_cert,
                              client_has_cert=client_has_cert)
    path = tmp_path / f"keys-{version.name}.log"
    if keylog:
        client.keylog_filename = str(path)
    follow = keylog if follow is None else follow
    with SslServer(server, response) as srv, KeylogProxy(srv.port, path if follow else None,
                                                         trust=pki.server.root.pem, extra=extra, save=save) as proxy:
        proxy.said = ssl_client(proxy.port, client, server_hostname=server_hostname,  # type: ignore[attr-defined]
                                request=request)
        proxy.wait_reports(1)
        proxy.finish()
    return proxy


# -- 1. the TLS 1.3 mutual-TLS failure, exactly ------------------------------------------------


def test_tls13_client_without_certificate_is_diagnosed_exactly(pki: Pki, tmp_path: Path) -> None:
    proxy = run_scenario(pki, tmp_path, TLS13, require_client_cert=True)
    (report,) = proxy.recorder.reports
    d = report.diagnosis
    assert (d.outcome, d.certain, d.gave_up) == ("client_cert_missing", True, "server"), (d, proxy.said)
    fatal = next(f for f in report.findings if f.code == "ALERT_FATAL")
    assert "certificate_required(116)" in fatal.title and "decrypted with the key log" in fatal.detail
    (alert,) = [e for e in proxy.recorder.events if isinstance(e, ev.Alert)]
    assert (alert.direction, alert.description, alert.decrypted) == (Direction.S2C, 116, True)
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_EMPTY"} <= codes(report)
    assert report.summary.client_certificate == "empty"
    text = proxy.transcript
    assert "certificate_request (decrypted)" in text and "alert fatal certificate_required(116) (decrypted)" in text
    assert "established" not in text.split("outcome:")[1].splitlines()[0]
    doc = proxy.document
    assert doc is not None
    jsonschema.validate(doc, SCHEMA)
    stored = [e for e in doc["connections"][0]["events"] if e["kind"] == "alert"]
    assert stored and stored[0]["decrypted"] is True and stored[0]["code"] == 116


def test_tls13_without_key_log_infers_and_says_how_to_get_one(pki: Pki, tmp_path: Path) -> None:
    proxy = run_scenario(pki, tmp_path, TLS13, require_client_cert=True, keylog=False)
    (report,) = proxy.recorder.reports
    d = report.diagnosis
    assert d.outcome in ("client_cert_missing", "client_auth_failed") and d.certain is False, d
    assert "key log would show" in d.cause
    howto = " ".join(d.checks)
    for way in ("SSLKEYLOGFILE", "-keylogfile", "keylog_filename", "--keylog"):
        assert way in howto, way
    assert not [e for e in proxy.recorder.events if isinstance(e, ev.Alert)]


# -- 1b. the same scenarios give the same findings in TLS 1.2 and 1.3 -------------------------


def _compare(r12, r13) -> None:
    d12, d13 = r12.diagnosis, r13.diagnosis
    assert (d13.outcome, d13.certain, d13.gave_up) == (d12.outcome, d12.certain, d12.gave_up), (d12, d13)
    assert codes(r13) - VERSION_SPECIFIC == codes(r12) - VERSION_SPECIFIC
    assert d13.certain


@pytest.mark.parametrize("scenario", ["client_cert_missing", "hostname_mismatch", "clean"])
def test_same_findings_in_tls12_and_tls13(pki: Pki, tmp_path: Path, scenario: str) -> None:
    kwargs: dict = {
        "client_cert_missing": {"require_client_cert": True},
        "hostname_mismatch": {"server_hostname": "www.example.test"},
        "clean": {"require_client_cert": True, "client_has_cert": True},
    }[scenario]
    reports = {}
    for version in (TLS12, TLS13):
        proxy = run_scenario(pki, tmp_path, version, **kwargs)
        (reports[version],) = proxy.recorder.reports
    _compare(reports[TLS12], reports[TLS13])
    r13 = reports[TLS13]
    if scenario == "clean":
        assert r13.diagnosis.outcome == "established"
        assert not [f for f in r13.findings if f.severity >= Severity.warning], r13.findings
        assert r13.summary.client_certificate == "sent"
    elif scenario == "hostname_mismatch":
        assert r13.diagnosis.outcome == "server_cert_rejected"
        assert "CERT_HOSTNAME_MISMATCH" in codes(r13)  # read from the decrypted Certificate


def test_expired_server_certificate_same_in_tls12_and_tls13(tmp_path: Path) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    expired = make_pki(tmp_path, server_kwargs={"not_before": past - timedelta(days=90), "not_after": past})
    reports = {}
    for version in (TLS12, TLS13):
        proxy = run_scenario(expired, tmp_path, version)
        (reports[version],) = proxy.recorder.reports
    _compare(reports[TLS12], reports[TLS13])
    r13 = reports[TLS13]
    assert r13.diagnosis.outcome == "server_cert_rejected" and "CERT_EXPIRED" in codes(r13)
    assert "expired 10 days ago" in r13.diagnosis.cause


@needs_openssl
def test_client_cert_from_wrong_ca_same_in_tls12_and_tls13(pki: Pki, tmp_path: Path) -> None:
    """openssl s_client sends its certificate although the server named other CAs: unknown_ca."""
    other = make_chain("intruder.example", root_name="Some Other Root CA", eku=("clientAuth",)).write_pem(
        tmp_path, "other")
    reports = {}
    for flag in ("-tls1_2", "-tls1_3"):
        keylog = tmp_path / f"keys{flag}.log"
        with OpensslServer(["-cert", str(pki.server_cert), "-key", str(pki.server_key), "-Verify", "1",
                            "-verify_return_error", "-CAfile", str(pki.client_ca), flag]) as srv, \
                KeylogProxy(srv.port, keylog, trust=pki.server.root.pem) as proxy:
            out = openssl_client(proxy.port, keylog, ["-cert", str(other.cert), "-key", str(other.key),
                                                      "-CAfile", str(pki.server_ca), flag])
            (reports[flag],) = proxy.wait_reports(1)
    _compare(reports["-tls1_2"], reports["-tls1_3"])
    r13 = reports["-tls1_3"]
    assert r13.diagnosis.outcome == "client_cert_rejected", (r13.diagnosis, out)
    assert "unknown_ca(48)" in r13.diagnosis.cause
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_SENT", "CLIENT_CERT_CA_MISMATCH", "ALERT_FATAL"} <= codes(r13)


# -- 2. openssl s_client -keylogfile over each cipher family -------------------------------


FAMILIES = [
    ("tls13-aes128gcm", ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"]),
    ("tls13-aes256gcm", ["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"]),
    ("tls13-chacha20", ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"]),
    ("tls12-aesgcm", ["-tls1_2", "-cipher", "ECDHE+AESGCM"]),
    ("tls12-chacha20", ["-tls1_2", "-cipher", "ECDHE+CHACHA20"]),
    ("tls12-cbc-etm", ["-tls1_2", "-cipher", "ECDHE+AES+SHA256:!AESGCM:!AESCCM"]),
    ("tls12-cbc-no-etm", ["-tls1_2", "-cipher", "ECDHE+AES+SHA256:!AESGCM:!AESCCM", "-no_etm"]),
]


@needs_openssl
@pytest.mark.parametrize(("family", "args"), FAMILIES, ids=[f for f, _ in FAMILIES])
def test_openssl_keylogfile_decrypts_finished_both_ways(pki: Pki, tmp_path: Path, family: str,
                                                        args: list[str]) -> None:
    keylog = tmp_path / "keys.log"
    server_args = [a for a in args if a != "-no_etm"]
    with OpensslServer(["-cert", str(pki.server_cert), "-key", str(pki.server_key), *server_args]) as srv, \
            KeylogProxy(srv.port, keylog, trust=pki.server.root.pem) as proxy:
        out = openssl_client(proxy.port, keylog, ["-CAfile", str(pki.server_ca), *args])
        (report,) = proxy.wait_reports(1)
    events = proxy.recorder.events
    assert not [e for e in events if isinstance(e, ev.DecryptionFailed)], out
    finished = [e for e in events if isinstance(e, ev.HandshakeMessage) and e.msg_type == HandshakeType.finished]
    assert {e.direction for e in finished} == {Direction.C2S, Direction.S2C}, out
    assert all(e.decrypted for e in finished)
    d = report.diagnosis
    assert (d.outcome, d.certain) == ("established", True), (d, out)
    etm = "-no_etm" not in args and "cbc" in family
    if "cbc" in family:
        sh = next(e.message for e in events if isinstance(e, ev.HandshakeMessage)
                  and e.msg_type == HandshakeType.server_hello)
        assert (sh.ext(22) is not None) == etm  # encrypt_then_mac was (not) negotiated, as asked


# -- 3. secrets that come after the records; a wrong key log; malformed lines -----------------


def _held_connection(pki: Pki, tmp_path: Path, write_keylog, *, until) -> KeylogProxy:
    """A TLS 1.3 client completes its handshake through the proxy with its secrets in a private
    file; only then ``write_keylog(secrets, followed_path)`` puts something in the followed file,
    while the connection stays open until ``until(proxy)`` holds."""
    client, server = contexts(pki, version=TLS13)
    private, followed = tmp_path / "private.log", tmp_path / "followed.log"
    client.keylog_filename = str(private)
    with SslServer(server) as srv, KeylogProxy(srv.port, followed, trust=pki.server.root.pem) as proxy:
        import socket

        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        with client.wrap_socket(raw, server_hostname="localhost") as tls:
            wait_until(lambda: any(isinstance(e, ev.Record) and e.direction is Direction.C2S and e.encrypted
                                   for e in proxy.recorder.events), "the client's encrypted flight at the proxy")
            assert not [e for e in proxy.recorder.events if getattr(e, "decrypted", False)]
            write_keylog(private.read_text(), followed)
            wait_until(lambda: until(proxy), "the held records to be decrypted")
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while tls.recv(4096):
                pass
        proxy.wait_reports(1)
        proxy.finish()
    return proxy


def _decrypted_finished(proxy: KeylogProxy) -> set[Direction]:
    return {e.direction for e in proxy.recorder.events
            if isinstance(e, ev.HandshakeMessage) and e.msg_type == HandshakeType.finished and e.decrypted}


def test_secrets_written_after_the_records_arrived_are_used(pki: Pki, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    def write(secrets: str, followed: Path) -> None:
        followed.write_text("this is not a key log\nCLIENT_RANDOM 00 11\n" + secrets)  # two bad lines first

    proxy = _held_connection(pki, tmp_path, write, until=lambda p: len(_decrypted_finished(p)) == 2)
    (report,) = proxy.recorder.reports
    assert (report.diagnosis.outcome, report.diagnosis.certain) == ("established", True)
    assert "inferred" not in report.diagnosis.cause
    certs = [e for e in proxy.recorder.events if isinstance(e, ev.HandshakeMessage)
             and e.msg_type == HandshakeType.certificate]
    assert certs and certs[0].decrypted and certs[0].message.entries[0].info.subject_cn == "localhost"
    assert "CERT_CHAIN_SEEN" in codes(report)
    err = capsys.readouterr().err
    assert "followed.log line 1:" in err and "followed.log line 2:" in err  # reported, and not fatal


def test_wrong_key_log_is_a_finding(pki: Pki, tmp_path: Path) -> None:
    def write(secrets: str, followed: Path) -> None:
        lines = []
        for line in secrets.splitlines():
            if line.startswith("#"):  # Python's ssl starts the file with a comment
                continue
            label, client_random, secret = line.split()
            lines.append(f"{label} {client_random} {bytes(b ^ 0x5A for b in bytes.fromhex(secret)).hex()}\n")
        followed.write_text("".join(lines))

    proxy = _held_connection(pki, tmp_path, write,
                             until=lambda p: any(isinstance(e, ev.DecryptionFailed) for e in p.recorder.events))
    (report,) = proxy.recorder.reports
    failed = [f for f in report.findings if f.code == "DECRYPTION_FAILED"]
    assert failed and failed[0].severity is Severity.warning
    assert "did not authenticate with the key log's secrets" in failed[0].detail
    assert "wrong key log for this connection, or the traffic was modified" in failed[0].detail
    assert not [e for e in proxy.recorder.events if getattr(e, "decrypted", False)]
    d = report.diagnosis
    assert d.outcome == "established" and d.certain is False  # back to the size-based view, and it says so
    assert any("key log is the one this client wrote" in c for c in d.checks)


# -- 4. --show-data: on screen, escaped; never in the session file; no secrets either ---------


def _secrets(keylog: Path) -> list[str]:
    return [line.split()[2] for line in keylog.read_text().splitlines() if line and not line.startswith("#")]


def test_show_data_prints_escaped_previews_and_stores_none_of_it(pki: Pki, tmp_path: Path) -> None:
    save = tmp_path / "session.json"
    hostile = b"\x1b[2J\x1b[31mHTTP/1.0 200 OK\r\n\r\nhello\n"  # clears the screen if printed raw
    proxy = run_scenario(pki, tmp_path, TLS13, extra=("--show-data", "30"), save=save,
                         request=b"GET /tlsproxy-private-path HTTP/1.0\r\n\r\n", response=hostile)
    text = proxy.transcript
    assert 'data (decrypted) first 30 of 39 bytes: "GET /tlsproxy-private-path HTT"' in text
    assert 'data (decrypted) first 30 of 34 bytes: "\\x1b[2J\\x1b[31mHTTP/1.0 200 OK\\r\\n\\r\\nhe"' in text
    assert "\x1b" not in text  # nothing the peer sent reaches the terminal raw
    assert "application_data (decrypted)" in text and "finished (decrypted)" in text
    raw = save.read_bytes()
    doc = json.loads(raw)
    jsonschema.validate(doc, SCHEMA)
    for needle in (b"tlsproxy-private-path", b"200 OK", base64.b64encode(b"GET /tlsproxy-private-path")[:20]):
        assert needle not in raw, raw[max(raw.find(needle) - 300, 0):raw.find(needle) + 50]
    for secret in _secrets(tmp_path / "keys-TLSv1_3.log"):
        assert secret.encode() not in raw and base64.b64encode(bytes.fromhex(secret)) not in raw
    assert not [e for e in doc["connections"][0]["events"] if e["kind"] == "other"]


def test_show_data_in_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "illustrated"
    pcap, keylog = corpus / "illustrated-tls13.pcap", corpus / "illustrated-tls13.keylog"
    if not (pcap.exists() and keylog.exists()):
        pytest.skip(f"corpus capture illustrated-tls13 with its key log not available at {corpus}")
    save = tmp_path / "a.json"
    assert main(["analyze", str(pcap), "--keylog", str(keylog), "--show-data", "8", "--no-color",
                 "--save", str(save)]) == 0
    out = capsys.readouterr().out
    assert 'data (decrypted) 4 bytes: "ping"' in out and 'data (decrypted) 4 bytes: "pong"' in out
    assert "finished (decrypted)" in out
    raw = save.read_bytes()
    assert b"ping" not in raw and b"pong" not in raw and base64.b64encode(b"ping")[:5] not in raw
    for secret in _secrets(keylog):
        assert secret.encode() not in raw


# -- 5. a session saved without keys, diagnosed exactly later --------------------------------


def test_session_saved_without_keys_is_decrypted_by_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    past = datetime.now(UTC) - timedelta(days=10)
    expired = make_pki(tmp_path, server_kwargs={"not_before": past - timedelta(days=90), "not_after": past})
    save = tmp_path / "session.json"
    proxy = run_scenario(expired, tmp_path, TLS13, follow=False, save=save)  # the client keeps its key log
    (live,) = proxy.recorder.reports
    assert "CERT_EXPIRED" not in codes(live)  # TLS 1.3 hid the certificate from the proxy
    doc = json.loads(save.read_text())
    jsonschema.validate(doc, SCHEMA)
    stored = [e for e in doc["connections"][0]["events"] if "ciphertext" in e]
    assert stored and all(e["encrypted"] and e["phase"] == "handshake" for e in stored)
    keylog = tmp_path / "keys-TLSv1_3.log"
    assert "ciphertext" not in save.read_text() or all(s not in save.read_text() for s in _secrets(keylog))

    ca = ["--ca-file", str(expired.server_ca)]
    assert main(["replay", str(save), "--json", *ca]) == 0
    again = json.loads(capsys.readouterr().out)["connections"][0]
    assert "CERT_EXPIRED" not in {f["code"] for f in again["findings"]}

    assert main(["replay", str(save), "--json", "--keylog", str(keylog), *ca]) == 0
    exact = json.loads(capsys.readouterr().out)["connections"][0]
    assert "CERT_EXPIRED" in {f["code"] for f in exact["findings"]}
    assert exact["diagnosis"]["outcome"] == "server_cert_rejected" and exact["diagnosis"]["certain"] is True
    assert "expired 10 days ago" in exact["diagnosis"]["cause"]
    assert any(e["kind"] == "handshake" and e.get("decrypted") and e["type"] == "certificate"
               for e in exact["events"])
    assert "DECRYPTION_FAILED" not in {f["code"] for f in exact["findings"]}

    redacted = tmp_path / "redacted.json"
    assert main(["replay", str(save), "--redact", "--save", str(redacted)]) == 0
    assert "ciphertext" not in redacted.read_text()


def test_tls13_mutual_tls_failure_saved_without_keys_replays_with_them(
        pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    save = tmp_path / "session.json"
    run_scenario(pki, tmp_path, TLS13, require_client_cert=True, follow=False, save=save)
    keylog = tmp_path / "keys-TLSv1_3.log"
    assert main(["replay", str(save), "--json", "--keylog", str(keylog)]) == 0
    conn = json.loads(capsys.readouterr().out)["connections"][0]
    found = {f["code"] for f in conn["findings"]}
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_EMPTY"} <= found
    assert "DECRYPTION_FAILED" not in found  # records never stored are not "wrong keys"
    assert conn["diagnosis"]["outcome"] == "client_cert_missing"
    assert conn["summary"]["client_certificate"] == "empty"


# -- the command itself ------------------------------------------------------------------------


def test_run_command_with_keylog_and_show_data(pki: Pki, tmp_path: Path) -> None:
    """``tlsproxy run --keylog K --show-data N --save S`` as a user starts it, in its own process."""
    client, server = contexts(pki, version=TLS13, require_client_cert=True)
    keylog, save, log = tmp_path / "keys.log", tmp_path / "s.json", tmp_path / "proxy.log"
    client.keylog_filename = str(keylog)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), NO_COLOR="1", COLUMNS="250")
    env.pop("SSLKEYLOGFILE", None)
    with SslServer(server) as srv, open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tlsproxy", "run", "--listen", f"127.0.0.1:{port}",
                                 "--upstream", f"127.0.0.1:{srv.port}", "--keylog", str(keylog), "--show-data", "16",
                                 "--save", str(save), "--grace", "1", "--ca-file", str(pki.server_ca)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            wait_until(lambda: b"listening on" in log.read_bytes() or proc.poll() is not None, "the proxy")
            assert proc.poll() is None, log.read_text()
            said = ssl_client(port, client)
            wait_until(lambda: save.exists() and '"j":"close"' in save.read_text(), "the connection report")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "decrypting with the key log" in text and "following it" in text
    assert "certificate_required(116) (decrypted)" in text, text
    conn = json.loads(save.read_text())["connections"][0]
    assert (conn["diagnosis"]["outcome"], conn["diagnosis"]["certain"]) == ("client_cert_missing", True), said
    assert b"GET / HTTP" not in save.read_bytes()
