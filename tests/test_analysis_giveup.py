"""Who gave up first: a side that closes while it still owes handshake messages gave up there, and
what the peer does afterwards (an alert, a reset) is its reaction.  Also the timing of a client
that leaves before any ServerHello, the close_notify and key-log wording on clean sessions, and
the chain-shape warning for leaves issued straight by a root.

Real peers: ``openssl s_server``/``s_client`` through the loopback recording relay, and Python
``ssl`` over memory BIOs; the FINs and resets are placed where a hanging-up peer puts them.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.certfactory import make_chain
from tests.peers import Pki, contexts, make_pki, run_session
from tests.recording_relay import RecordingRelay, analyse, analyse_relay, free_port
from tlsproxy.analysis.model import Severity
from tlsproxy.analysis.tracker import AnalysisOptions, Tracker
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.decrypt import ConnectionDecryptor
from tlsproxy.wire.events import Direction
from tlsproxy.wire.keylog import KeyLog

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
C2S, S2C = Direction.C2S, Direction.S2C
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("giveup"))


def codes(tracker: Tracker) -> set[str]:
    return {f.code for f in tracker.findings}


def finding(tracker: Tracker, code: str):  # type: ignore[no-untyped-def]
    return next(f for f in tracker.findings if f.code == code)


def timed(chunks: Sequence[tuple[Direction, bytes]], times: Sequence[float]) -> list[tuple[Direction, bytes, float]]:
    return [(d, data, at) for (d, data), at in zip(chunks, times, strict=True)]


def run_timed(items: Sequence[tuple[Direction, bytes, float]], *, started: float = 0.0, how: str = "fin",
              by: str | None = None, end: float | None = None, options: AnalysisOptions | None = None) -> Tracker:
    """Timed chunks (``b""`` is that direction's FIN) through the wire core and a tracker whose
    connection started at ``started``, ended with ``how`` at ``end``."""
    conn = TLSConnection()
    tracker = Tracker(options or AnalysisOptions(), wall_start=time.time(), started=started)
    seq = 0
    for d, data, at in items:
        for event in conn.feed(d, data, at=at):
            tracker.on_event(seq, event)
            seq += 1
    tracker.on_end(how=how, by=by, reason=None, at=end if end is not None else items[-1][2] + 0.001)
    return tracker


def first_flights(pki: Pki, version: ssl.TLSVersion) -> tuple[bytes, bytes]:
    """A real ClientHello and the server's first flight answering it."""
    client, server = contexts(pki, version=version)
    session = run_session(client, server)
    (d0, hello), (d1, flight) = session.chunks[:2]
    assert (d0, d1) == (C2S, S2C)
    return hello, flight


# -- openssl s_server answering a client's hang-up ---------------------------------------------------


@pytest.fixture(scope="module")
def s_server(pki: Pki) -> Iterator[int]:
    """An ``openssl s_server`` (TLS 1.2 at most) that serves connections one after the other."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not installed")
    port = free_port()
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-quiet", "-tls1_2",
                             "-cert", str(pki.server_cert), "-key", str(pki.server_key)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("s_server did not start")
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


def hang_up_through_relay(port: int, hello: bytes | None) -> tuple[list, str | None]:
    """Connect through a recording relay, send ``hello`` (if any), read the server's answer until it
    goes quiet, then close our direction (FIN) and read until the server closes."""
    relay = RecordingRelay(port)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        if hello is not None:
            sock.sendall(hello)
            sock.settimeout(0.3)
            try:
                while sock.recv(65536):
                    pass
            except TimeoutError:
                pass
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
    return relay.wait(), relay.reset_by


@needs_openssl
def test_client_fin_while_owing_its_key_exchange_is_not_the_servers_alert(pki: Pki, s_server: int) -> None:
    """The client hangs up after ServerHelloDone; s_server answers the EOF with decode_error(50)."""
    hello, _ = first_flights(pki, TLS12)
    chunks, reset_by = hang_up_through_relay(s_server, hello)
    tracker = analyse_relay(chunks, reset_by=reset_by)
    assert tracker.first_fatal is not None and tracker.first_fatal.description == 50  # the server's reaction
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up, d.certain) == ("closed_by_client", "client", True), d
    assert "server_hello_done" in d.step
    assert "answered the client's hang-up with decode_error(50)" in d.cause
    assert d.checks and "client" in d.checks[0]
    closed = finding(tracker, "CLOSED_MID_HANDSHAKE")
    assert closed.direction is C2S and "ClientKeyExchange" in closed.detail
    assert "reaction, not the cause" in finding(tracker, "ALERT_FATAL").detail


@needs_openssl
def test_empty_connection_answered_with_an_alert_is_a_probe(s_server: int) -> None:
    chunks, reset_by = hang_up_through_relay(s_server, None)
    assert any(d is S2C and data for d, data, _ in chunks), "s_server sent nothing back"
    tracker = analyse_relay(chunks, reset_by=reset_by)
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("closed_by_client", "client"), d
    assert "without sending a byte" in d.cause and "answered" in d.cause and d.checks
    assert "NO_CLIENT_HELLO" in codes(tracker)


def test_empty_connection_without_any_byte() -> None:
    tracker = run_timed([(C2S, b"", 0.01), (S2C, b"", 0.02)])
    d = tracker.diagnose()
    assert d.outcome == "closed_by_client" and "before either side sent a byte" in d.cause and d.checks


def test_server_closing_before_any_client_hello_is_not_a_refused_offer(pki: Pki) -> None:
    """The server closes right after accepting; the client's ClientHello only gets there afterwards."""
    hello, _ = first_flights(pki, TLS13)
    tracker = run_timed([(S2C, b"", 0.0025), (C2S, hello, 0.004), (C2S, b"", 0.3)])
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up, d.step) == ("closed_by_server", "server", "before the ClientHello"), d
    assert "before any ClientHello reached it" in d.cause and "refused the offer" not in d.cause


# -- the peer's reset after a hang-up -------------------------------------------------------------------


def test_client_fin_then_server_reset_is_the_clients_close(pki: Pki) -> None:
    hello, flight = first_flights(pki, TLS12)
    tracker = analyse_relay([(C2S, hello, 0.0), (S2C, flight, 0.002), (C2S, b"", 1.3)], reset_by="server")
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("closed_by_client", "client"), d
    assert "server_hello_done" in d.step and "The server then reset the connection." in d.cause
    assert "RESET_MID_HANDSHAKE" not in codes(tracker) and "CLOSED_MID_HANDSHAKE" in codes(tracker)


# -- a client that leaves before any ServerHello ----------------------------------------------------------


def test_client_fin_before_server_hello_says_the_client_left(pki: Pki) -> None:
    """The ClientHello, the client's FIN 1.3 ms later, then the server's TLS 1.3 flight: the client
    had seen nothing, so nothing about the server's certificate can be the reason."""
    hello, flight = first_flights(pki, TLS13)
    tracker = run_timed([(C2S, hello, 0.003), (C2S, b"", 0.0043), (S2C, flight, 0.0045), (S2C, b"", 0.006)])
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up, d.certain) == ("closed_by_client", "client", True), d
    assert "gave up 1.3 ms after its ClientHello" in d.cause
    assert "certificate" not in d.cause and "only came after the client had closed" in d.cause
    assert d.step == "after the client's client_hello"


def test_client_reset_right_after_its_hello_is_not_a_silent_server(pki: Pki) -> None:
    hello, _ = first_flights(pki, TLS13)
    tracker = run_timed([(C2S, hello, 0.0024)], how="reset", by="client", end=0.0041)
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("reset_by_client", "client"), d
    assert "gave up 1.7 ms after its ClientHello" in d.cause
    assert not any("server is up" in c for c in d.checks)
    assert "1.7 ms after its ClientHello" in finding(tracker, "RESET_MID_HANDSHAKE").detail


def test_client_giving_up_after_a_long_silence_blames_the_server(pki: Pki) -> None:
    """The client's FIN 13 s after its ClientHello; the server never answers and the proxy shuts
    down with the connection still half open."""
    hello, _ = first_flights(pki, TLS13)
    tracker = run_timed([(C2S, hello, 0.002), (C2S, b"", 12.966)], how="shutdown", by="proxy", end=19.0)
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("no_server_hello", "client"), d
    assert "13.0 s after its ClientHello" in d.cause and "never answered" in d.cause
    assert tracker.stalled(30.0) == []  # the client is gone: nobody is waiting any more


def test_client_hello_seen_late_makes_a_quick_close_unclear(pki: Pki) -> None:
    """The proxy held the ClientHello for 15 s while it connected upstream; the FIN came right
    behind it, so how long the client waited is not known."""
    hello, _ = first_flights(pki, TLS12)
    tracker = run_timed([(C2S, hello, 15.22), (C2S, b"", 15.226), (S2C, b"", 15.24)])
    d = tracker.diagnose()
    assert (d.outcome, d.certain, d.gave_up) == ("closed_by_client", False, "client"), d
    assert "unclear" in d.cause and d.checks


# -- close_notify ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_server_closing_after_the_clients_close_notify_is_not_truncation(pki: Pki, version: ssl.TLSVersion) -> None:
    # Data records too big to pass for alerts, so only the real close_notify can be one.
    data = {"client_data": (b"GET / HTTP/1.1\r\n" + b"x" * 200,), "server_data": (b"HTTP/1.1 200 OK\r\n" + b"y" * 500,)}
    session = run_session(*contexts(pki, version=version), **data)  # the client's close_notify, then the server's
    chunks = list(session.chunks)
    assert chunks[-1][0] is S2C and chunks[-2][0] is C2S
    tracker = analyse(chunks[:-1], eof=(S2C, C2S))  # the server just closes
    assert tracker.diagnose().outcome == "established"
    assert "TRUNCATED_NO_CLOSE_NOTIFY" not in codes(tracker)
    no_notify = analyse(run_session(*contexts(pki, version=version), close=False, **data).chunks, eof=(S2C, C2S))
    assert "TRUNCATED_NO_CLOSE_NOTIFY" in codes(no_notify)  # nobody said close_notify: still reported


def test_decrypted_close_notify_is_titled_decrypted(pki: Pki, tmp_path: Path) -> None:
    client, server = contexts(pki, version=TLS13)
    client.keylog_filename = str(tmp_path / "keys.log")
    chunks = list(run_session(client, server).chunks)[:-1]  # the server closes without close_notify
    log = KeyLog()
    log.feed_text((tmp_path / "keys.log").read_text())
    conn = TLSConnection(decryptor=ConnectionDecryptor(log))
    tracker = Tracker(AnalysisOptions(keylog=True), wall_start=time.time(), started=0.0)
    seq, at = 0, 0.0
    for d, data in [*chunks, (S2C, b""), (C2S, b"")]:
        at += 0.01
        for event in conn.feed(d, data, at=at):
            tracker.on_event(seq, event)
            seq += 1
    tracker.on_end(how="fin", by=None, reason=None, at=at + 0.01)
    notify = finding(tracker, "ALERT_CLOSE_NOTIFY")
    assert notify.title == "close_notify (decrypted)" and "decrypted with the key log" in notify.detail
    assert "TRUNCATED_NO_CLOSE_NOTIFY" not in codes(tracker)
    assert tracker.diagnose().certain and not tracker.diagnose().checks


# -- plaintext alerts and key-log advice ------------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_plaintext_alert_after_the_tls13_server_hello_has_its_own_code(tmp_path: Path,
                                                                     version: ssl.TLSVersion) -> None:
    """An OpenSSL client rejecting the server's chain sends its alert in plaintext, in TLS 1.3 too,
    although handshake keys exist by then."""
    server_pki = make_pki(tmp_path / "server")
    stranger = make_pki(tmp_path / "stranger")
    client, server = contexts(server_pki, version=version)
    client, _ = contexts(stranger, version=version)  # trusts another root
    tracker = analyse(run_session(client, server).chunks)
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("server_cert_rejected", "client")
    plaintext = {"ALERT_PLAINTEXT_AFTER_KEYS", "ALERT_NOT_ENCRYPTED_BEFORE_KEYS"} & codes(tracker)
    if version is TLS13:
        assert plaintext == {"ALERT_PLAINTEXT_AFTER_KEYS"}
        plain = finding(tracker, "ALERT_PLAINTEXT_AFTER_KEYS")
        assert plain.severity is Severity.info and "OpenSSL" in plain.detail and "unknown_ca(48)" in plain.detail
    else:
        assert plaintext == {"ALERT_NOT_ENCRYPTED_BEFORE_KEYS"}


def test_tls13_success_without_key_log_gives_no_key_log_advice(pki: Pki) -> None:
    tracker = analyse(run_session(*contexts(pki, version=TLS13)).chunks)
    d = tracker.diagnose()
    assert (d.outcome, d.certain) == ("established", False)
    assert not any("key log" in c for c in d.checks)


# -- leaves issued straight by a root ------------------------------------------------------------------------


def test_server_leaf_issued_by_its_root_is_fine_when_the_path_validates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, server_kwargs={"intermediates": 0})
    session = run_session(*contexts(pki, version=TLS12))
    assert session.established
    trusted = analyse(session.chunks, options=AnalysisOptions(trust_pems=pki.server.root.pem))
    assert trusted.diagnose().outcome == "established"
    assert "CHAIN_INCOMPLETE" not in codes(trusted)
    assert not [f for f in trusted.findings if f.severity >= Severity.warning]
    unchecked = analyse(session.chunks)  # no trust anchors: the shape alone cannot tell
    incomplete = finding(unchecked, "CHAIN_INCOMPLETE")
    assert "was not sent" in incomplete.detail and "unless the client has that issuer" in incomplete.detail


def run_openssl_mtls(pki: Pki, client_cert: Path, client_key: Path, tmp_path: Path) -> Tracker:
    port = free_port()
    intermediates = tmp_path / "server-intermediates.pem"  # s_server -cert sends the first certificate only
    intermediates.write_bytes(b"".join(i.pem for i in pki.server.intermediates))
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "2", "-quiet",
                               "-tls1_2", "-cert", str(pki.server_cert), "-cert_chain", str(intermediates),
                               "-key", str(pki.server_key), "-Verify", "1",
                               "-verify_return_error", "-CAfile", str(pki.client_ca)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()  # the first accept
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("s_server did not start")
                time.sleep(0.05)
        relay = RecordingRelay(port)
        subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{relay.port}", "-tls1_2", "-servername",
                        "localhost", "-CAfile", str(pki.server_ca), "-cert", str(client_cert), "-key",
                        str(client_key)], input=b"", capture_output=True, timeout=20)
        chunks = relay.wait()
    finally:
        server.kill()
        server.wait()
    return analyse_relay(chunks, options=AnalysisOptions(trust_pems=pki.server.root.pem), reset_by=relay.reset_by)


@needs_openssl
def test_client_leaf_from_a_requested_root_is_clean(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, client_kwargs={"intermediates": 0})  # the client root issues the leaf itself
    tracker = run_openssl_mtls(pki, pki.client_cert, pki.client_key, tmp_path)
    assert tracker.diagnose().outcome == "established"
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_SENT"} <= codes(tracker)
    assert "CHAIN_INCOMPLETE" not in codes(tracker)
    assert not [f for f in tracker.findings if f.severity >= Severity.warning]


@needs_openssl
def test_client_leaf_from_an_unnamed_root_keeps_the_cause_on_the_ca_names(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_chain("client2", root_name="Other Root CA", intermediates=0, eku=("clientAuth",)).write_pem(
        tmp_path, "other")
    tracker = run_openssl_mtls(pki, other.cert, other.key, tmp_path)
    d = tracker.diagnose()
    assert d.outcome == "client_cert_rejected" and "does not chain to any CA the server named" in d.cause
    assert "not a CA certificate" not in d.cause and "intermediate" not in d.cause
    incomplete = finding(tracker, "CHAIN_INCOMPLETE")
    assert incomplete.severity is Severity.info and "fine if the server has that CA" in incomplete.detail
