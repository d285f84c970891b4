"""The analyzer with decrypted events, without sockets: real sessions (Python ``ssl`` over memory
BIOs) whose key log arrives before the records, after them, or wrong."""

from __future__ import annotations

import ssl
from io import StringIO

import pytest

from tests.peers import Pki, contexts, make_pki, run_session
from tlsproxy.analysis.tracker import AnalysisOptions, Tracker
from tlsproxy.sinks.console import make_console
from tlsproxy.sinks.render import ConnLabel, escape_preview, render_event
from tlsproxy.sinks.sessionjson import SessionJsonSink
from tlsproxy.wire import events as ev
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.decrypt import ConnectionDecryptor
from tlsproxy.wire.events import Direction
from tlsproxy.wire.keylog import KeyLog

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _session(pki: Pki, tmp_path, **kwargs):
    client, server = contexts(pki, **kwargs)
    path = tmp_path / "keys.log"
    client.keylog_filename = str(path)
    return run_session(client, server), path.read_text()


def analyse(chunks, keylog_text: str | None, *, when: str = "before", show_data: int = 0,
            options: AnalysisOptions | None = None) -> tuple[Tracker, list[ev.Event]]:
    """Chunks through the wire core (with a decryptor when ``keylog_text`` is given) and a tracker.
    ``when``: the key log is complete ``before`` the first byte, or only ``after`` the last record
    (before the FINs), as when a client's secrets reach the file late."""
    log = KeyLog()
    decrypting = keylog_text is not None
    if decrypting and when == "before":
        log.feed_text(keylog_text)
    conn = TLSConnection(decryptor=ConnectionDecryptor(log) if decrypting else None, show_data=show_data)
    tracker = Tracker(options or AnalysisOptions(keylog=decrypting), wall_start=0.0, started=0.0)
    events: list[ev.Event] = []
    t = 0.0

    def push(new: list[ev.Event]) -> None:
        for e in new:
            tracker.on_event(len(events), e)
            events.append(e)

    for direction, data in chunks:
        t += 0.01
        push(conn.feed(direction, data, at=t))
    if decrypting and when == "after":
        log.feed_text(keylog_text)
        push(conn.poll(at=t + 0.005))
    for d in Direction:
        t += 0.01
        push(conn.feed(d, b"", at=t))
    tracker.on_end(how="fin", by=None, reason=None, at=t + 0.01)
    return tracker, events


def codes(tracker: Tracker) -> set[str]:
    return {f.code for f in tracker.findings}


@pytest.mark.parametrize("when", ["before", "after"])
def test_tls13_missing_client_certificate_is_exact(pki: Pki, tmp_path, when: str) -> None:
    session, text = _session(pki, tmp_path, version=TLS13, require_client_cert=True)
    tracker, events = analyse(session.chunks, text, when=when)
    d = tracker.diagnose()
    assert (d.outcome, d.certain, d.gave_up) == ("client_cert_missing", True, "server"), d
    assert "sent none" in d.cause
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_EMPTY", "ALERT_FATAL"} <= codes(tracker)
    # The decrypted alert replaced the size-based guess: no inferred abort is reported beside it.
    assert "ALERT_ENCRYPTED_HANDSHAKE" not in codes(tracker)
    assert tracker.summary().client_certificate == "empty"
    assert tracker.first_fatal is not None and tracker.first_fatal.description == 116


@pytest.mark.parametrize("when", ["before", "after"])
def test_tls13_clean_session_is_certain_and_shows_the_server_chain(pki: Pki, tmp_path, when: str) -> None:
    session, text = _session(pki, tmp_path, version=TLS13)
    tracker, _ = analyse(session.chunks, text, when=when)
    d = tracker.diagnose()
    assert (d.outcome, d.certain) == ("established", True)
    assert "inferred" not in d.cause
    assert "CERT_CHAIN_SEEN" in codes(tracker)  # read although completion was first inferred from sizes
    assert "ALERT_CLOSE_NOTIFY" in codes(tracker) and "ALERT_ENCRYPTED_CLOSE" not in codes(tracker)


def test_tls12_with_key_log_reads_the_finished_and_closes(pki: Pki, tmp_path) -> None:
    session, text = _session(pki, tmp_path, version=TLS12)
    tracker, events = analyse(session.chunks, text, when="after")
    assert [e for e in events if isinstance(e, ev.HandshakeMessage) and e.decrypted and e.msg_type == 20]
    assert (tracker.diagnose().outcome, tracker.diagnose().certain) == ("established", True)
    assert "ALERT_CLOSE_NOTIFY" in codes(tracker)


def test_wrong_key_log_gives_one_finding_per_side(pki: Pki, tmp_path) -> None:
    session, text = _session(pki, tmp_path, version=TLS13, require_client_cert=True)
    wrong = "".join(f"{label} {cr} {'11' * (len(secret) // 2)}\n" for label, cr, secret in
                    (line.split() for line in text.splitlines() if not line.startswith("#")))
    tracker, _ = analyse(session.chunks, wrong)
    failed = [f for f in tracker.findings if f.code == "DECRYPTION_FAILED"]
    assert {f.direction for f in failed} == {Direction.C2S, Direction.S2C} and len(failed) == 2
    assert all("wrong key log for this connection, or the traffic was modified" in f.detail for f in failed)
    d = tracker.diagnose()
    assert d.outcome == "client_cert_missing" and d.certain is False  # the size-based inference stands
    assert "did not open this connection's records" in " ".join(
        f.detail for f in tracker.findings if f.code == "ALERT_ENCRYPTED_HANDSHAKE")


def test_without_key_log_the_diagnosis_says_how_to_get_one(pki: Pki, tmp_path) -> None:
    session, _ = _session(pki, tmp_path, version=TLS13, require_client_cert=True)
    tracker, _ = analyse(session.chunks, None)
    d = tracker.diagnose()
    assert d.certain is False and "a key log would show" in d.cause
    howto = next(c for c in d.checks if "key log" in c)
    for way in ("SSLKEYLOGFILE", "curl", "openssl s_client -keylogfile", "keylog_filename", "--keylog"):
        assert way in howto


def test_tls13_client_request_sent_before_the_servers_alert_is_still_a_failure(pki: Pki, tmp_path) -> None:
    """A TLS 1.3 client sends its request right behind its Finished; the server's alert can pass the
    proxy before that request does.  Without keys, that must not read as an accepted handshake."""
    session, _ = _session(pki, tmp_path, version=TLS13, require_client_cert=True)
    chunks = list(session.chunks)
    alert = chunks.pop()  # the server's certificate_required, the last thing sent
    assert alert[0] is Direction.S2C
    request = (Direction.C2S, bytes((23, 3, 3, 0, 52)) + bytes(52))  # an application_data record
    tracker, _ = analyse([*chunks, alert, request], None)
    d = tracker.diagnose()
    assert (d.outcome, d.certain) == ("client_cert_missing", False), d


# -- the transcript and the session file ---------------------------------------------------


def test_decrypted_events_are_marked_and_previews_escaped(pki: Pki, tmp_path) -> None:
    session, text = _session(pki, tmp_path, version=TLS13)
    _, events = analyse(session.chunks, text, show_data=6)
    previews = [e for e in events if isinstance(e, ev.DecryptedData)]
    assert [p.preview for p in previews] == [b"GET / ", b"HTTP/1"]
    out = StringIO()
    console = make_console(file=out, force_terminal=False, width=200)
    label = ConnLabel(id=1)
    for e in events:
        for line in render_event(label, e):
            console.print(line)
    shown = out.getvalue()
    assert 'data (decrypted) first 6 of 18 bytes: "GET / "' in shown
    assert "finished (decrypted)" in shown and "alert warning close_notify(0) (decrypted)" in shown
    assert escape_preview(b"a\x1b[31m\r\n\x00\xff\\\"[b]") == 'a\\x1b[31m\\r\\n\\x00\\xff\\\\\\"[b]'


def test_session_file_keeps_no_preview_and_no_application_data(pki: Pki, tmp_path) -> None:
    import asyncio

    from tlsproxy.pipeline import ConnectionInfo, RunInfo

    session, text = _session(pki, tmp_path, version=TLS13)
    _, events = analyse(session.chunks, text, show_data=100)
    sink = SessionJsonSink(None)
    sink.run_started(RunInfo(command="test", started=0.0))
    sink.connection_opened(ConnectionInfo(id=1, label="", mode="", client=None, server=None, target=None,
                                          started=0.0, wall_start=0.0))
    for seq, e in enumerate(events):
        sink.event(1, seq, e, [])
    doc = asyncio.run(sink.aclose())
    stored = doc["connections"][0]["events"]
    assert len(stored) == len([e for e in events if not isinstance(e, ev.DecryptedData)])
    assert "GET /" not in str(doc) and "HTTP/1.1 200" not in str(doc)
    for e in stored:
        if "ciphertext" in e:
            assert e["phase"] == "handshake"
        if e["kind"] == "record" and e.get("inner_type") == "application_data":
            assert "ciphertext" not in e and "payload" not in e
