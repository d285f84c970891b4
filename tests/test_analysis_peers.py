"""The analyzer on real handshakes between Python ``ssl`` peers (MemoryBIO, no sockets).

Each test produces one situation with real peers, runs the recorded bytes through the wire core
and a Tracker, and checks the finding codes and the diagnosis' key words.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.certfactory import make_chain, make_self_signed
from tests.peers import Pki, contexts, make_pki, run_session
from tests.recording_relay import analyse, analyse_relay
from tlsproxy.analysis.model import OUTCOMES, Severity
from tlsproxy.analysis.tracker import AnalysisOptions, Tracker
from tlsproxy.wire.events import Direction

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
LEGACY = "DEFAULT:@SECLEVEL=0"  # lets OpenSSL load and accept weak test certificates


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def codes(tracker: Tracker) -> set[str]:
    return {f.code for f in tracker.findings}


def problems(tracker: Tracker) -> list[str]:
    return [f"{f.code}: {f.detail}" for f in tracker.findings if f.severity >= Severity.warning]


def opts(pki: Pki, **kw: object) -> AnalysisOptions:
    return AnalysisOptions(trust_pems=pki.server.root.pem, **kw)  # type: ignore[arg-type]


# -- clean sessions: no false alarms ----------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13])
@pytest.mark.parametrize("mutual", [False, True])
def test_clean_session_has_no_warnings(pki: Pki, version: ssl.TLSVersion, mutual: bool) -> None:
    client, server = contexts(pki, version=version, require_client_cert=mutual, client_has_cert=mutual,
                              alpn=["h2", "http/1.1"], server_alpn=["h2"])
    session = run_session(client, server)
    assert session.established
    tracker = analyse(session.chunks, options=opts(pki))
    assert problems(tracker) == []
    d = tracker.diagnose()
    assert d.outcome == "established"
    assert d.certain is (version is TLS12)
    assert d.negotiation["alpn"]["offered"] == ["h2", "http/1.1"]  # type: ignore[index]
    summary = tracker.summary()
    assert summary.sni == "localhost" and summary.outcome == "established"
    assert summary.version == ("TLS 1.2" if version is TLS12 else "TLS 1.3")
    assert "ALERT_ENCRYPTED_CLOSE" in codes(tracker)  # both close_notify records recognised
    if version is TLS12:
        assert summary.alpn == "h2"
        assert summary.client_certificate == ("sent" if mutual else "not_requested")


# -- client authentication --------------------------------------------------------------------


def test_client_cert_missing_tls12(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12, require_client_cert=True)
    session = run_session(client, server)
    assert session.server_error is not None
    tracker = analyse(session.chunks, options=opts(pki))
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_EMPTY", "ALERT_NOT_ENCRYPTED_BEFORE_KEYS", "ALERT_FATAL"} <= codes(tracker)
    d = tracker.diagnose()
    assert (d.outcome, d.certain, d.gave_up) == ("client_cert_missing", True, "server")
    assert "handshake_failure(40)" in d.cause and "sent none" in d.cause
    assert any("private key" in c for c in d.checks)
    assert tracker.summary().client_certificate == "empty"


def test_client_cert_missing_tls13_is_inferred_from_sizes(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS13, require_client_cert=True)
    session = run_session(client, server)
    assert session.server_error is not None
    tracker = analyse(session.chunks, options=opts(pki))
    assert "ALERT_ENCRYPTED_HANDSHAKE" in codes(tracker)
    finding = next(f for f in tracker.findings if f.code == "ALERT_ENCRYPTED_HANDSHAKE")
    assert "19 bytes" in finding.detail and "key log" in finding.detail
    assert finding.direction is Direction.S2C
    d = tracker.diagnose()
    assert d.outcome == "client_cert_missing" and d.certain is False and d.gave_up == "server"
    assert "certificate_required (116)" in d.cause and "inferred" in d.cause
    assert "ALERT_NOT_ENCRYPTED_BEFORE_KEYS" not in codes(tracker)


@pytest.fixture(scope="module")
def other_client(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    chain = make_chain("intruder.example", root_name="Some Other Root CA", eku=("clientAuth",))
    paths = chain.write_pem(tmp_path_factory.mktemp("other"), "other")
    return paths.cert, paths.key


def test_client_cert_from_wrong_ca_tls12(pki: Pki, other_client: tuple[Path, Path]) -> None:
    client, server = contexts(pki, version=TLS12, require_client_cert=True)
    client.load_cert_chain(*other_client)
    session = run_session(client, server)
    assert session.server_error is not None
    tracker = analyse(session.chunks, options=opts(pki))
    assert {"CLIENT_CERT_SENT", "ALERT_FATAL"} <= codes(tracker)
    d = tracker.diagnose()
    assert (d.outcome, d.certain, d.gave_up) == ("client_cert_rejected", True, "server")
    assert "unknown_ca(48)" in d.cause
    assert tracker.summary().client_certificate == "sent"


def test_client_cert_from_wrong_ca_tls13(pki: Pki, other_client: tuple[Path, Path]) -> None:
    client, server = contexts(pki, version=TLS13, require_client_cert=True)
    client.load_cert_chain(*other_client)
    session = run_session(client, server)
    assert session.server_error is not None
    tracker = analyse(session.chunks, options=opts(pki))
    d = tracker.diagnose()
    assert d.outcome == "client_auth_failed" and d.certain is False
    assert "rejected client certificate" in d.cause


def test_expired_client_certificate_is_flagged(tmp_path: Path) -> None:
    past = datetime.now(UTC) - timedelta(days=3)
    pki = make_pki(tmp_path, client_kwargs={"not_before": past - timedelta(days=30), "not_after": past})
    client, server = contexts(pki, version=TLS12, require_client_cert=True, client_has_cert=True)
    session = run_session(client, server)
    tracker = analyse(session.chunks, options=opts(pki))
    assert "CERT_EXPIRED" in codes(tracker)
    expired = next(f for f in tracker.findings if f.code == "CERT_EXPIRED")
    assert expired.direction is Direction.C2S and "client" in expired.title
    d = tracker.diagnose()
    assert d.outcome == "client_cert_rejected"
    assert "expired" in d.cause


def test_client_cert_without_client_auth_usage(pki: Pki, tmp_path: Path) -> None:
    chain = make_chain("client.example", root_name="tlsproxy Client Root CA", eku=("serverAuth",))
    paths = chain.write_pem(tmp_path, "srvonly")
    client, server = contexts(pki, version=TLS12)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(paths.ca)
    client.load_cert_chain(paths.cert, paths.key)
    tracker = analyse(run_session(client, server).chunks, options=opts(pki))
    assert "CLIENT_CERT_NO_CLIENT_AUTH_EKU" in codes(tracker)
    assert tracker.diagnose().outcome == "client_cert_rejected"


# -- server certificates ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_expired_server_certificate(tmp_path: Path, version: ssl.TLSVersion) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    pki = make_pki(tmp_path, server_kwargs={"not_before": past - timedelta(days=90), "not_after": past})
    client, server = contexts(pki, version=version)
    session = run_session(client, server)
    assert session.client_error is not None
    tracker = analyse(session.chunks, options=opts(pki))
    d = tracker.diagnose()
    assert d.outcome == "server_cert_rejected" and d.gave_up == "client"
    # OpenSSL clients send this alert in plaintext even in TLS 1.3 (before switching keys).
    assert d.certain and "certificate_expired(45)" in d.cause
    plaintext = "ALERT_NOT_ENCRYPTED_BEFORE_KEYS" if version is TLS12 else "ALERT_PLAINTEXT_AFTER_KEYS"
    assert plaintext in codes(tracker)
    if version is TLS12:
        assert "CERT_EXPIRED" in codes(tracker) and "expired 10 days ago" in d.cause
    else:  # the certificate itself is encrypted
        assert "CERT_EXPIRED" not in codes(tracker) and "key log" in d.cause


def test_not_yet_valid_server_certificate_hints_at_clocks(tmp_path: Path) -> None:
    future = datetime.now(UTC) + timedelta(hours=5)
    pki = make_pki(tmp_path, server_kwargs={"not_before": future, "not_after": future + timedelta(days=30)})
    client, server = contexts(pki, version=TLS12)
    tracker = analyse(run_session(client, server).chunks, options=opts(pki))
    finding = next(f for f in tracker.findings if f.code == "CERT_NOT_YET_VALID")
    assert "clock" in finding.detail and "hours" in finding.detail
    assert tracker.diagnose().outcome == "server_cert_rejected"


def test_now_option_overrides_the_clock(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12)
    session = run_session(client, server)
    later = datetime.now(UTC) + timedelta(days=400)
    tracker = analyse(session.chunks, options=opts(pki, now=later))
    assert "CERT_EXPIRED" in codes(tracker)
    soon = datetime.now(UTC) + timedelta(days=80)
    assert "CERT_EXPIRING_SOON" in codes(analyse(session.chunks, options=opts(pki, now=soon)))


def test_wrong_host(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12)
    session = run_session(client, server, server_hostname="www.example.org")
    tracker = analyse(session.chunks, options=opts(pki))
    mismatch = next(f for f in tracker.findings if f.code == "CERT_HOSTNAME_MISMATCH")
    assert "www.example.org" in mismatch.detail and "localhost" in mismatch.detail
    d = tracker.diagnose()
    assert d.outcome == "server_cert_rejected" and "www.example.org" in d.cause
    assert d.negotiation["server_name"]["matches"] is False  # type: ignore[index]


def test_expect_host_overrides_sni(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12)
    session = run_session(client, server)
    tracker = analyse(session.chunks, options=opts(pki, expect_host="api.example.com"))
    assert "--expect-host" in next(f.detail for f in tracker.findings if f.code == "CERT_HOSTNAME_MISMATCH")


def test_name_only_in_cn(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, server_kwargs={"sans": ()})
    client, server = contexts(pki, version=TLS12)
    tracker = analyse(run_session(client, server).chunks, options=opts(pki))
    assert "CERT_HOSTNAME_CN_ONLY" in codes(tracker)
    # OpenSSL (Python) still falls back to the CN; browsers do not, hence the warning.
    assert tracker.diagnose().outcome == "established" and "Host name only in the CN" in tracker.diagnose().cause


def test_weak_key_and_sha1_signature(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, server_kwargs={"key": "rsa1024", "hash": "sha1"})
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for ctx in (client, server):
        ctx.set_ciphers(LEGACY)
        ctx.maximum_version = TLS12
    client.load_verify_locations(pki.server_ca)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    session = run_session(client, server)
    assert session.established
    tracker = analyse(session.chunks, options=opts(pki))
    assert {"CERT_WEAK_KEY", "CERT_WEAK_SIGNATURE"} <= codes(tracker)
    assert "1024-bit RSA" in next(f.detail for f in tracker.findings if f.code == "CERT_WEAK_KEY")
    d = tracker.diagnose()
    assert d.outcome == "established" and "warning" in d.cause


@pytest.mark.parametrize(("serial", "flagged"), [("-5", True), ("0", False)])
def test_negative_serial_number(tmp_path: Path, serial: str, flagged: bool) -> None:
    """cryptography refuses to make such a certificate; openssl makes it, and OpenSSL peers use it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-set_serial", serial, "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-days", "365", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    client.maximum_version = TLS12  # the certificate in the clear
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    session = run_session(client, server)
    assert session.established  # OpenSSL accepts it: only stricter clients would not
    tracker = analyse(session.chunks, options=AnalysisOptions(trust_pems=cert.read_bytes()))
    found = [f for f in tracker.findings if f.code == "CERT_SERIAL_NEGATIVE"]
    if not flagged:  # zero breaks no common client (long-trusted roots have it): no alarm
        assert found == [] and not any("serial" in p for p in problems(tracker))
        return
    assert len(found) == 1 and found[0].severity is Severity.warning
    assert "has a negative serial number (-0x5); Go clients since 1.23 refuse" in found[0].detail
    d = tracker.diagnose()
    assert d.outcome == "established" and "warning" in d.cause


def test_untrusted_chain_against_ca_file(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12)
    session = run_session(client, server)
    other_root = make_chain("x", root_name="Unrelated Root").root.pem
    tracker = analyse(session.chunks, options=AnalysisOptions(trust_pems=other_root))
    assert "CERT_UNTRUSTED" in codes(tracker)
    assert "--ca-file" in next(f.detail for f in tracker.findings if f.code == "CERT_UNTRUSTED")
    # The trust loader is called lazily and only when no bundle is given.
    calls: list[int] = []
    analyse(session.chunks, options=AnalysisOptions(trust_loader=lambda: calls.append(1) or pki.server.root.pem))
    assert calls == [1]


def test_self_signed_server(tmp_path: Path) -> None:
    leaf = make_self_signed("localhost")
    paths = leaf.write_pem(tmp_path, "self")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.maximum_version = TLS12
    client.load_verify_locations(paths.cert)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths.cert, paths.key)
    session = run_session(client, server)
    tracker = analyse(session.chunks)
    assert "CERT_SELF_SIGNED" in codes(tracker)


# -- parameters -------------------------------------------------------------------------------


def test_alpn_without_agreement(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12, alpn=["h2"], server_alpn=["http/1.1"])
    session = run_session(client, server)
    tracker = analyse(session.chunks, options=opts(pki))
    assert "ALPN_NO_AGREEMENT" in codes(tracker)
    assert tracker.diagnose().negotiation["alpn"] == {"offered": ["h2"], "chosen": None}


def test_no_shared_cipher_suite(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12)
    client.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    server.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    session = run_session(client, server)
    assert session.server_error is not None
    tracker = analyse(session.chunks, options=opts(pki))
    d = tracker.diagnose()
    assert (d.outcome, d.certain, d.gave_up) == ("no_shared_parameters", True, "server")
    assert "nothing acceptable in the ClientHello" in d.cause
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in d.cause  # what the client offered
    assert d.step == "after the client's client_hello"


@pytest.mark.parametrize("client_range, server_range", [((TLS12, TLS12), (TLS13, TLS13)),
                                                          ((TLS13, TLS13), (TLS12, TLS12))])
def test_version_mismatch(pki: Pki, client_range: tuple, server_range: tuple) -> None:
    client, server = contexts(pki)
    client.minimum_version, client.maximum_version = client_range
    server.minimum_version, server.maximum_version = server_range
    session = run_session(client, server)
    assert not session.established
    tracker = analyse(session.chunks, options=opts(pki))
    assert {"VERSION_MISMATCH", "ALERT_FATAL"} <= codes(tracker)
    d = tracker.diagnose()
    assert d.outcome == "version_mismatch" and d.certain
    assert "protocol_version" in next(f.title for f in tracker.findings if f.code == "ALERT_FATAL")
    if client_range[0] is TLS13:
        assert "only TLS 1.3" in d.cause
    else:
        assert "TLS 1.2" in d.cause


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_resumption(pki: Pki, version: ssl.TLSVersion) -> None:
    client, server = contexts(pki, version=version)
    first = run_session(client, server)
    assert first.session is not None
    second = run_session(client, server, session=first.session)
    assert second.session_reused
    tracker = analyse(second.chunks, options=opts(pki))
    assert "SESSION_RESUMED" in codes(tracker)
    assert problems(tracker) == []
    assert tracker.summary().resumed is True
    assert analyse(first.chunks, options=opts(pki)).summary().resumed is False


def test_no_sni(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS13)
    client.check_hostname = False
    session = run_session(client, server, server_hostname=None)
    tracker = analyse(session.chunks, options=opts(pki))
    assert "NO_SNI" in codes(tracker) and problems(tracker) == []


def test_downgrade_sentinel(pki: Pki) -> None:
    """A TLS 1.2 server answering a TLS 1.3-capable client, with the RFC 8446 marker patched into its
    random (no real peer sends it to a client that then goes on)."""
    client, server = contexts(pki)
    server.maximum_version = TLS12
    session = run_session(client, server)
    chunks = list(session.chunks)
    d, data = chunks[1]
    assert d is Direction.S2C and data[0] == 22 and data[5] == 2
    patched = data[:35] + b"DOWNGRD\x01" + data[43:]
    chunks[1] = (d, patched)
    tracker = analyse(chunks[:2], options=opts(pki))
    assert "DOWNGRADE_SENTINEL" in codes(tracker)
    assert "TLS 1.2" in next(f.detail for f in tracker.findings if f.code == "DOWNGRADE_SENTINEL")


# -- ends, stalls and truncation --------------------------------------------------------------


@pytest.fixture(scope="module")
def tls12_session(pki: Pki):  # type: ignore[no-untyped-def]
    client, server = contexts(pki, version=TLS12)
    return run_session(client, server)


def test_server_closes_after_client_hello(tls12_session) -> None:  # type: ignore[no-untyped-def]
    tracker = analyse(tls12_session.chunks[:1], eof=(Direction.S2C, Direction.C2S))
    assert "CLOSED_MID_HANDSHAKE" in codes(tracker)
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("closed_by_server", "server")
    assert "right after the ClientHello" in d.cause and "SNI localhost" in d.cause


def test_server_resets_after_client_hello(tls12_session) -> None:  # type: ignore[no-untyped-def]
    tracker = analyse(tls12_session.chunks[:1], eof=(), how="reset", by="server")
    assert "RESET_MID_HANDSHAKE" in codes(tracker)
    assert tracker.diagnose().outcome == "reset_by_server"


def test_client_gives_up_without_server_hello(tls12_session) -> None:  # type: ignore[no-untyped-def]
    (hello,) = tls12_session.chunks[:1]
    tracker = analyse_relay([(*hello, 0.0), (Direction.C2S, b"", 5.0), (Direction.S2C, b"", 5.1)])
    d = tracker.diagnose()
    assert d.outcome == "no_server_hello" and "5.0 s after its ClientHello" in d.cause
    idle = analyse(tls12_session.chunks[:1], eof=(), how="idle_timeout")
    assert "CONNECTION_IDLE_TIMEOUT" in codes(idle) and idle.diagnose().outcome == "no_server_hello"


def test_capture_cut_is_incomplete(tls12_session) -> None:  # type: ignore[no-untyped-def]
    tracker = analyse(tls12_session.chunks[:2], eof=(), how="capture_end")
    d = tracker.diagnose()
    assert d.outcome == "incomplete" and "client still owed" in d.cause


def test_client_hangs_up_after_server_flight(tls12_session) -> None:  # type: ignore[no-untyped-def]
    chunks = tls12_session.chunks
    server_flight = [i for i, (d, _) in enumerate(chunks) if d is Direction.S2C][0]
    tracker = analyse(chunks[: server_flight + 1], eof=(Direction.C2S, Direction.S2C))
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("closed_by_client", "client")
    assert "server_hello_done" in d.step and "certificate" in d.cause
    reset = analyse(chunks[: server_flight + 1], eof=(), how="reset", by="client")
    assert reset.diagnose().outcome == "reset_by_client"


def test_stall_says_whose_turn(tls12_session) -> None:  # type: ignore[no-untyped-def]
    from tlsproxy.wire.connection import TLSConnection

    conn = TLSConnection()
    tracker = Tracker(AnalysisOptions(stall_after=10.0), wall_start=time.time(), started=100.0)
    seq = 0
    for at, (d, data) in zip((100.0, 100.5), tls12_session.chunks[:2]):
        for e in conn.feed(d, data, at=at):
            tracker.on_event(seq, e)
            seq += 1
    assert tracker.stalled(105.0) == []
    stalls = tracker.stalled(111.0)
    assert [f.code for f in stalls] == ["HANDSHAKE_STALLED"]
    assert "server_hello_done 10.5 s ago" in stalls[0].detail and "the client has not answered" in stalls[0].detail
    assert tracker.stalled(130.0) == []  # reported once per step
    assert tracker.diagnose().outcome == "incomplete"  # still open


def test_truncation_without_close_notify(pki: Pki) -> None:
    client, server = contexts(pki, version=TLS12)
    session = run_session(client, server, close=False)
    tracker = analyse(session.chunks, options=opts(pki), eof=(Direction.S2C, Direction.C2S))
    finding = next(f for f in tracker.findings if f.code == "TRUNCATED_NO_CLOSE_NOTIFY")
    assert finding.direction is Direction.S2C
    assert tracker.diagnose().outcome == "established"


def test_plain_http_to_tls_port() -> None:
    tracker = analyse([(Direction.C2S, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")])
    assert "NOT_TLS_CLIENT" in codes(tracker)
    d = tracker.diagnose()
    assert d.outcome == "not_tls" and "GET / HTTP/1.1" in d.cause


def test_upstream_unreachable_and_empty_connections() -> None:
    tracker = Tracker(AnalysisOptions(), wall_start=0.0, started=0.0)
    tracker.on_end(how="refused", by="proxy", reason="connection refused", at=1.0)
    assert [f.code for f in tracker.findings] == ["UPSTREAM_UNREACHABLE"]
    assert tracker.diagnose().outcome == "upstream_unreachable"
    probe = analyse([], eof=(Direction.C2S, Direction.S2C))
    assert "NO_CLIENT_HELLO" in codes(probe) and probe.diagnose().outcome == "closed_by_client"


def test_server_reset_before_any_client_hello() -> None:
    """A server that resets a new connection at once is refusing TLS here: said as such, with what to
    check on the server side (not the port-check advice meant for clients)."""
    tracker = analyse([], eof=(), how="reset", by="server")
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("reset_by_server", "server")
    assert "before any ClientHello reached it" in d.cause and "access rule" in d.cause
    assert any("connection limits" in c for c in d.checks)
    assert not any("health probe" in c for c in d.checks)


def test_every_outcome_is_documented() -> None:
    from tools.gen_findings_doc import render

    text = render()
    for outcome in OUTCOMES:
        assert f"`{outcome}`" in text


def _without_handshake(data: bytes, msg_type: int) -> bytes:
    """``data`` (whole records) minus the handshake record carrying ``msg_type``."""
    out, pos = b"", 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        record = data[pos : pos + 5 + length]
        if not (record[0] == 22 and record[5] == msg_type):
            out += record
        pos += 5 + length
    return out


@pytest.mark.parametrize("dropped, code", [(15, "CLIENT_CERT_NO_VERIFY"), (11, "CLIENT_CERT_NOT_SENT")])
def test_client_flight_missing_a_message(pki: Pki, dropped: int, code: str) -> None:
    """A real mutual-TLS 1.2 session with one of the client's records cut out, the way a client that
    cannot use its key (no CertificateVerify) or an SSL 3.0-style client (no Certificate) sends it."""
    client, server = contexts(pki, version=TLS12, require_client_cert=True, client_has_cert=True)
    session = run_session(client, server)
    chunks = list(session.chunks)
    index = next(i for i, (d, data) in enumerate(chunks) if d is Direction.C2S and i > 0)
    cut = _without_handshake(chunks[index][1], dropped)
    assert len(cut) < len(chunks[index][1])
    tracker = analyse([*chunks[:index], (Direction.C2S, cut)], eof=(Direction.S2C, Direction.C2S))
    assert code in codes(tracker)
