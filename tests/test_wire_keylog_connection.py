"""Decryption wired into the connection: real sessions with a key log show what TLS 1.3 hides."""

from __future__ import annotations

import ssl

import pytest

from tests.peers import contexts, make_pki, run_session
from tests.wirehelp import feed_all, messages, of_type
from tlsproxy.wire import events as ev
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.decrypt import ConnectionDecryptor
from tlsproxy.wire.events import Direction
from tlsproxy.wire.keylog import KeyLog
from tlsproxy.wire.messages import Certificate, CertificateRequest, EncryptedExtensions, Finished

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _session_with_keylog(pki, tmp_path, **kwargs):
    client, server = contexts(pki, **kwargs)
    keylog = tmp_path / "keys.log"
    client.keylog_filename = str(keylog)
    session = run_session(client, server)
    return session, keylog.read_text()


def _decrypting(text: str) -> tuple[TLSConnection, KeyLog]:
    log = KeyLog()
    assert log.feed_text(text) == []
    return TLSConnection(decryptor=ConnectionDecryptor(log)), log


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_key_log_reveals_the_whole_handshake(pki, tmp_path, version):
    session, text = _session_with_keylog(pki, tmp_path, version=version)
    conn, _ = _decrypting(text)
    events = feed_all(session.chunks, conn=conn)
    assert not of_type(events, ev.DecryptionFailed)
    finished = [e for e in of_type(events, ev.HandshakeMessage) if isinstance(e.message, Finished)]
    assert [e.direction for e in finished] == [Direction.S2C, Direction.C2S] if version is TLS13 else [
        Direction.C2S, Direction.S2C]
    assert all(e.decrypted for e in finished)
    if version is TLS13:
        certs = [m for m in messages(events, Direction.S2C) if isinstance(m, Certificate)]
        assert certs and certs[0].certificate_request_context == b""
        assert certs[0].entries[0].info.subject_cn == "localhost"
        assert [m for m in messages(events) if isinstance(m, EncryptedExtensions)]
    closes = [a for a in of_type(events, ev.Alert) if a.decrypted]
    assert {(a.direction, a.level, a.description) for a in closes} == {
        (Direction.C2S, 1, 0), (Direction.S2C, 1, 0)}
    app = [r for r in of_type(events, ev.Record) if r.decrypted and r.inner_type == 23]
    assert app and all(r.phase == "application" for r in app)


def test_tls13_mutual_tls_failure_shows_certificate_required(pki, tmp_path):
    session, text = _session_with_keylog(pki, tmp_path, version=TLS13, require_client_cert=True)
    assert not session.established
    conn, _ = _decrypting(text)
    events = feed_all(session.chunks, conn=conn)
    req = [m for m in messages(events, Direction.S2C) if isinstance(m, CertificateRequest)]
    assert req and req[0].certificate_request_context == b""
    assert req[0].signature_algorithms
    empty = [m for m in messages(events, Direction.C2S) if isinstance(m, Certificate)]
    assert empty and empty[0].is_empty
    (alert,) = of_type(events, ev.Alert)
    assert (alert.direction, alert.level, alert.description, alert.decrypted) == (Direction.S2C, 2, 116, True)


def test_records_wait_for_a_key_log_written_later(pki, tmp_path):
    session, text = _session_with_keylog(pki, tmp_path, version=TLS13, require_client_cert=True)
    log = KeyLog()
    conn = TLSConnection(decryptor=ConnectionDecryptor(log))
    early = feed_all(session.chunks, conn=conn, eof=False)
    assert not of_type(early, ev.Alert)  # nothing to open yet
    lines = text.splitlines(keepends=True)
    log.feed_text("".join(lines[:2]))  # only some secrets: partial progress, nothing fails
    partial = conn.poll(at=1.0)
    assert not of_type(partial, ev.DecryptionFailed)
    log.feed_text("".join(lines[2:]))
    late = partial + conn.poll(at=2.0)
    (alert,) = of_type(late, ev.Alert)
    assert alert.description == 116 and alert.at == 2.0
    assert not of_type(late, ev.DecryptionFailed)


def test_wrong_key_log_is_reported_not_skipped(pki, tmp_path):
    session, text = _session_with_keylog(pki, tmp_path, version=TLS13)
    broken = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        label, cr, secret = line.split()
        broken.append(f"{label} {cr} {'00' * (len(secret) // 2)}")
    conn, _ = _decrypting("\n".join(broken) + "\n")
    events = feed_all(session.chunks, conn=conn)
    failures = of_type(events, ev.DecryptionFailed)
    assert failures and {f.direction for f in failures} == {Direction.C2S, Direction.S2C}
    assert not [e for e in of_type(events, ev.HandshakeMessage) if e.decrypted]


def test_tls12_wrong_key_log(pki, tmp_path):
    session, text = _session_with_keylog(pki, tmp_path, version=TLS12)
    (line,) = [x for x in text.splitlines() if not x.startswith("#")]
    label, cr, secret = line.split()
    conn, _ = _decrypting(f"{label} {cr} {'11' * (len(secret) // 2)}\n")
    events = feed_all(session.chunks, conn=conn)
    assert of_type(events, ev.DecryptionFailed)
