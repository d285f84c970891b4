"""The analyzer on real captures from ../shared/corpus: the situations no modern peer produces
(SSL 2.0/3.0, Heartbleed probes, plaintext HTTP answers) and real failures from the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recording_relay import analyse_capture
from tlsproxy.analysis.model import OUTCOMES
from tlsproxy.analysis.tracker import Tracker

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def trackers(name: str) -> list[Tracker]:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"capture corpus not found at {CORPUS}")
    return analyse_capture(path)


def codes(t: Tracker) -> set[str]:
    return {f.code for f in t.findings}


def test_every_capture_is_analysed_without_crashing() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"capture corpus not found at {CORPUS}")
    count = 0
    for path in sorted(CORPUS.glob("*/*.pcap*")):
        try:
            found = analyse_capture(path)
        except ValueError:  # a damaged capture file: the reader's business, not ours
            continue
        for t in found:
            d = t.diagnose()
            assert d.outcome in OUTCOMES and d.cause
            t.summary()
            count += 1
    assert count > 100


def test_heartbleed_probe() -> None:
    t = trackers("zeek/heartbleed.pcap")[0]
    probe = next(f for f in t.findings if f.code == "HEARTBLEED_PROBE")
    assert "16365" in probe.detail


def test_heartbleed_encrypted_success() -> None:
    t = trackers("zeek/heartbleed-encrypted-success.pcap")[0]
    assert "HEARTBLEED_PROBE" in codes(t) and "HEARTBEAT_RECORD" in codes(t)
    assert "16" in next(f.detail for f in t.findings if f.code == "HEARTBLEED_PROBE")


def test_ssl2() -> None:
    t = trackers("zeek/ssl-v2.pcap")[0]
    assert "SSLV2" in codes(t)


def test_sslv2_compatible_hello() -> None:
    found = trackers("zeek/ssl.v3.pcap")
    assert any("SSLV2_COMPAT_HELLO" in codes(t) for t in found)


def test_ssl3_and_export_suites() -> None:
    t = trackers("wireshark-notes/ssl3-dump.pcapng")
    assert all("VERSION_SSL3" in codes(x) for x in t)
    export = [x for x in t if any(f.code == "CIPHER_WEAK_CHOSEN" and "EXPORT" in f.detail for f in x.findings)]
    assert export


def test_ssl3_no_certificate_alert() -> None:
    """No capture holds SSL 3.0's no_certificate(41); the test takes a real SSL 3.0 session's
    records and feeds the client's warning alert as an SSL 3.0 client would send it."""
    from tlsproxy.analysis.rules import alerts
    from tlsproxy.wire import events as ev
    from tlsproxy.wire.events import Direction

    t = trackers("wireshark-notes/ssl3-dump.pcapng")[0]
    out = alerts.on_alert(t, 999, ev.Alert(direction=Direction.C2S, offset=0, at=0.0, level=1, description=41,
                                           raw=b"\x01\x29"))
    assert [f.code for f in out] == ["ALERT_NOT_ENCRYPTED_BEFORE_KEYS", "SSL3_NO_CERTIFICATE"]
    assert t.ssl3_no_certificate


def test_plain_http_answer() -> None:
    t = trackers("zeek/ssl-to-http-server.pcap")[0]
    assert "NOT_TLS_SERVER" in codes(t)
    d = t.diagnose()
    assert d.outcome == "not_tls" and "HTTP/1.1 400" in d.cause and d.gave_up == "server"


@pytest.mark.parametrize("name", ["zeek/smtp-starttls.pcap", "ja4/https-connect.pcap", "zeek/ftp-auth-tls.pcap"])
def test_starttls_preamble_is_not_an_error(name: str) -> None:
    t = trackers(name)[0]
    assert "STARTTLS" in codes(t)
    assert not codes(t) & {"NOT_TLS_CLIENT", "NOT_TLS_SERVER"}
    assert t.diagnose().outcome == "established"


def test_empty_client_certificate_then_handshake_failure() -> None:
    t = trackers("zeek/certificate-request-failed.pcap")[0]
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_EMPTY", "ALERT_FATAL"} <= codes(t)
    d = t.diagnose()
    assert (d.outcome, d.certain, d.gave_up) == ("client_cert_missing", True, "server")
    assert "handshake_failure(40)" in d.cause


def test_handshake_failure_right_after_client_hello() -> None:
    t = trackers("zeek/tls-1.2-handshake-failure.pcap")[0]
    d = t.diagnose()
    assert d.outcome == "no_shared_parameters" and d.step == "after the client's client_hello"
    assert "ALERT_NOT_ENCRYPTED_BEFORE_KEYS" in codes(t)


def test_protocol_version_against_draft_client() -> None:
    t = trackers("zeek/tls13draft16-chrome55.0.2879.0-canary-aborted.pcap")[0]
    assert {"VERSION_MISMATCH", "TLS13_DRAFT_VERSION"} <= codes(t)
    assert t.diagnose().outcome == "version_mismatch"


def test_client_rejects_server_chain() -> None:
    t = trackers("ja4/badcurveball.pcap")[0]
    d = t.diagnose()
    assert (d.outcome, d.gave_up) == ("server_cert_rejected", "client")
    assert "certificate_unknown(46)" in d.cause


def test_missing_intermediate() -> None:
    t = trackers("zeek/missing-intermediate.pcap")[0]
    assert "CHAIN_INCOMPLETE" in codes(t)


def test_expired_server_certificate_in_capture() -> None:
    t = trackers("zeek/tls-expired-cert.pcap")[0]
    assert "2014" in next(f.detail for f in t.findings if f.code == "CERT_EXPIRED")


def test_duplicate_client_hello_is_out_of_order() -> None:
    assert any("UNEXPECTED_MESSAGE" in codes(t) for t in trackers("suricata-verify/tls-duplicate-hello.pcap"))


def test_hello_retry_request_capture() -> None:
    t = trackers("zeek/hrr.pcap")[0]
    assert "secp256r1" in next(f.detail for f in t.findings if f.code == "HELLO_RETRY_REQUEST")


def test_warning_alert_before_server_hello() -> None:
    t = trackers("zeek/tls-early-alert.pcap")[0]
    warning = next(f for f in t.findings if f.code == "ALERT_WARNING")
    assert "unrecognized_name(112)" in warning.title
    assert t.diagnose().outcome == "established"


def test_encrypted_warning_then_fatal_alert_after_refused_renegotiation() -> None:
    t = trackers("hotplace/tls12-no-renegotiation.pcapng")[0]
    assert "ALERT_ENCRYPTED" in codes(t) or "ALERT_ENCRYPTED_CLOSE" in codes(t)
    assert t.diagnose().outcome == "established"


def test_resumed_sessions_in_capture() -> None:
    found = trackers("suricata-verify/ssl_version_negated.pcap")
    assert sum(1 for t in found if t.summary().resumed) == 5


def test_tls13_psk_resumption() -> None:
    t = trackers("zeek/tls13_psk_succesfull.pcap")[0]
    assert "SESSION_RESUMED" in codes(t) and t.summary().resumed is True


def test_renegotiation_seen() -> None:
    t = trackers("hotplace/tls12-renegotiation.pcapng")[0]
    assert "RENEGOTIATION_SEEN" in codes(t)
    assert "RENEGOTIATION_SEEN" not in codes(trackers("zeek/tls1.2.pcap")[0])


def test_parameters_from_old_servers() -> None:
    dhe = trackers("zeek/dhe.pcap")[0]
    assert "1024 bits" in next(f.detail for f in dhe.findings if f.code == "DHE_PRIME_WEAK")
    assert "HEARTBEAT_EXTENSION" in codes(dhe)
    assert "TLS_COMPRESSION" in codes(trackers("zeek/pop3-starttls.pcap")[0])
    rc4 = trackers("zeek/tls1.2.pcap")[0]
    assert "RC4" in next(f.detail for f in rc4.findings if f.code == "CIPHER_WEAK_CHOSEN")
    assert "NO_SNI" in codes(rc4)
    assert any("RENEGOTIATION_INFO_MISSING" in codes(t) for t in trackers("suricata-verify/ssl_version_negated.pcap"))


def test_undecodable_server_hello_is_unclear_not_confident() -> None:
    t = trackers("zeek/tls-13draft19-early-data.pcap")[0]
    d = t.diagnose()
    assert d.certain is False and "could not decode" in d.cause
    assert "owed a ServerHello" not in " ".join(f.detail for f in t.findings)
