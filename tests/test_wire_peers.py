"""The wire core against real handshakes made by Python's ``ssl`` (OpenSSL) over MemoryBIO pairs.

Each decoded field is checked against what the peers were configured to do, and every session is
fed whole, one byte at a time and in random splits: the events must be identical.
"""

from __future__ import annotations

import ssl
from functools import partial

import pytest

from tests.peers import bytewise, contexts, make_pki, run_session, splits
from tests.wirehelp import feed_all, messages, of_type, tshark_style
from tlsproxy.wire import events as ev
from tlsproxy.wire.events import Direction
from tlsproxy.wire.extensions import ALPN, KEY_SHARE, SERVER_NAME, SUPPORTED_VERSIONS, KeyShareEntry
from tlsproxy.wire.messages import (
    Certificate,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    ClientKeyExchange,
    NewSessionTicket,
    ServerHello,
    ServerKeyExchange,
)
from tlsproxy.wire.registry import cipher_suite_name, group_name, signature_scheme_name

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("rsa"), server_kwargs={"key": "rsa2048", "ca_key": "rsa2048"})


def _first(items, cls):
    found = [m for m in items if isinstance(m, cls)]
    assert found, f"no {cls.__name__} in {items}"
    return found[0]


def assert_split_invariant(chunks):
    whole = feed_all(chunks)
    assert feed_all(chunks, bytewise) == whole
    for seed in range(3):
        assert feed_all(chunks, partial(splits, seed=seed)) == whole
    return whole


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_full_session_decodes_and_is_split_invariant(pki, version):
    client, server = contexts(pki, version=version)
    session = run_session(client, server)
    assert session.established
    events = assert_split_invariant(session.chunks)
    assert not of_type(events, ev.DecodeError)
    ch = _first(messages(events, Direction.C2S), ClientHello)
    sh = _first(messages(events, Direction.S2C), ServerHello)
    expected_version = 0x0303 if version is TLS12 else 0x0304
    assert sh.selected_version == expected_version
    assert cipher_suite_name(sh.cipher_suite) == _iana_name(session.cipher[0])
    assert sh.cipher_suite in ch.cipher_suites
    assert ch.server_name == "localhost"
    assert expected_version in ch.supported_versions
    # The server's chain as configured: leaf + one intermediate (root not sent).
    if version is TLS12:
        cert = _first(messages(events, Direction.S2C), Certificate)
        subjects = [e.info.subject for e in cert.entries]
        assert subjects == [c.cert.subject.rfc4514_string() for c in (pki.server.leaf, *pki.server.intermediates)]
        ske = _first(messages(events, Direction.S2C), ServerKeyExchange)
        assert ske.kind == "ecdhe"
        assert group_name(ske.named_group) in ("x25519", "secp256r1", "x448", "secp384r1")
        assert signature_scheme_name(ske.signature_algorithm).startswith("ecdsa_")
        cke = _first(messages(events, Direction.C2S), ClientKeyExchange)
        assert cke.kind == "ecdh" and cke.exchange_length == ske.public_key_length
        # After each side's change_cipher_spec its records are encrypted and never decoded.
        ccs = of_type(events, ev.ChangeCipherSpec)
        assert [c.direction for c in ccs] == [Direction.C2S, Direction.S2C]
        assert all(c.valid and c.starts_encryption for c in ccs)
        assert tshark_style(events).startswith(
            "C: ClientHello | S: ServerHello,Certificate(2),ServerKeyExchange,ServerHelloDone | "
            "C: ClientKeyExchange,ChangeCipherSpec,EncryptedHandshake | "
            "S: NewSessionTicket,ChangeCipherSpec,EncryptedHandshake | C: AppData | S: AppData")
    else:
        key_share = sh.ext_value(KEY_SHARE)
        assert isinstance(key_share, KeyShareEntry)
        offered = ch.ext_value(KEY_SHARE)
        assert key_share.group in [k.group for k in offered]
        # The certificate travels encrypted in TLS 1.3: nothing after the ServerHello decodes.
        assert [type(m).__name__ for m in messages(events)] == ["ClientHello", "ServerHello"]
        ccs = of_type(events, ev.ChangeCipherSpec)
        assert ccs and not any(c.starts_encryption for c in ccs)
        encrypted = [e for e in of_type(events, ev.Record) if e.encrypted]
        assert encrypted and all(e.content_type == 23 for e in encrypted)
        assert {e.phase for e in encrypted} == {"handshake", "application"}


def _iana_name(openssl_name: str) -> str:
    for c in ssl.create_default_context().get_ciphers():
        if c["name"] == openssl_name:
            return cipher_suite_name(c["id"] & 0xFFFF)
    raise AssertionError(openssl_name)


def test_plaintext_application_data_is_never_copied(pki):
    client, server = contexts(pki, version=TLS12)
    session = run_session(client, server, client_data=[b"x" * 50_000])
    events = feed_all(session.chunks)
    app = [e for e in of_type(events, ev.Record) if e.content_type == 23]
    assert sum(e.length for e in app if e.direction is Direction.C2S) > 50_000
    assert all(e.payload is None for e in app)


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_no_sni_and_alpn(pki, version):
    client, server = contexts(pki, version=version, alpn=["h2", "http/1.1"], server_alpn=["http/1.1"])
    client.check_hostname = False
    session = run_session(client, server, server_hostname=None)
    events = feed_all(session.chunks)
    ch = _first(messages(events), ClientHello)
    assert ch.ext(SERVER_NAME) is None and ch.server_name is None
    assert ch.alpn == ("h2", "http/1.1")
    sh = _first(messages(events), ServerHello)
    if version is TLS12:
        assert sh.alpn == "http/1.1"
    else:  # ALPN goes in the encrypted EncryptedExtensions
        assert sh.ext(ALPN) is None


def test_tls12_client_certificate_requested_and_sent(pki):
    client, server = contexts(pki, version=TLS12, require_client_cert=True, client_has_cert=True)
    session = run_session(client, server)
    assert session.established
    events = assert_split_invariant(session.chunks)
    req = _first(messages(events, Direction.S2C), CertificateRequest)
    # Python's ssl cannot set OpenSSL's client CA list, so its request names no CA at all (the
    # openssl s_server tests cover a populated list).
    assert req.certificate_authorities == ()
    assert 64 in req.certificate_types and req.signature_algorithms
    cert = _first(messages(events, Direction.C2S), Certificate)
    assert not cert.is_empty
    assert cert.entries[0].info.subject_cn == "client.example"
    assert "clientAuth" in cert.entries[0].info.extended_key_usage
    cv = _first(messages(events, Direction.C2S), CertificateVerify)
    assert signature_scheme_name(cv.algorithm).startswith("ecdsa_")


def test_tls12_client_certificate_requested_and_withheld(pki):
    client, server = contexts(pki, version=TLS12, require_client_cert=True, client_has_cert=False)
    session = run_session(client, server)
    assert not session.established
    events = assert_split_invariant(session.chunks)
    cert = _first(messages(events, Direction.C2S), Certificate)
    assert cert.is_empty and cert.certificate_request_context is None
    assert not [m for m in messages(events, Direction.C2S) if isinstance(m, CertificateVerify)]
    alerts = of_type(events, ev.Alert)
    # The server has not sent its change_cipher_spec: its alert is plaintext and decoded.
    assert [(a.direction, a.level, a.description) for a in alerts] == [(Direction.S2C, 2, 40)]


def test_tls13_client_certificate_withheld_alert_is_encrypted(pki):
    client, server = contexts(pki, version=TLS13, require_client_cert=True, client_has_cert=False)
    session = run_session(client, server)
    assert not session.established
    events = assert_split_invariant(session.chunks)
    assert not of_type(events, ev.Alert)  # certificate_required travels encrypted
    last = [e for e in of_type(events, ev.Record) if e.direction is Direction.S2C][-1]
    assert last.encrypted and last.content_type == 23 and last.length == 19


def test_rsa_three_certificate_chain(rsa_pki):
    client, server = contexts(rsa_pki, version=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    session = run_session(client, server)
    assert session.established
    events = feed_all(session.chunks)
    cert = _first(messages(events, Direction.S2C), Certificate)
    assert [e.info.key_type for e in cert.entries] == ["RSA", "RSA"]
    assert cert.entries[0].info.key_bits == 2048
    ske = _first(messages(events, Direction.S2C), ServerKeyExchange)
    assert signature_scheme_name(ske.signature_algorithm).startswith(("rsa_pss", "rsa_pkcs1"))
    sh = _first(messages(events), ServerHello)
    assert cipher_suite_name(sh.cipher_suite) == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"


def test_tls12_rsa_key_exchange(rsa_pki):
    client, server = contexts(rsa_pki, version=TLS12, ciphers="AES128-SHA")
    session = run_session(client, server)
    if not session.established:
        pytest.skip(f"OpenSSL here refuses RSA key exchange: {session.client_error}")
    events = feed_all(session.chunks)
    cke = _first(messages(events, Direction.C2S), ClientKeyExchange)
    assert cke.kind == "rsa" and cke.exchange_length == 256
    assert not [m for m in messages(events) if isinstance(m, ServerKeyExchange)]


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_session_tickets_and_resumption(pki, version):
    client, server = contexts(pki, version=version)
    first = run_session(client, server)
    events = feed_all(first.chunks)
    if version is TLS12:
        nst = _first(messages(events, Direction.S2C), NewSessionTicket)
        assert nst.ticket_age_add is None and nst.ticket_length > 0
    assert first.session is not None
    second = run_session(client, server, session=first.session)
    assert second.session_reused
    events2 = assert_split_invariant(second.chunks)
    ch = _first(messages(events2), ClientHello)
    if version is TLS12:
        # An abbreviated handshake: no Certificate, server CCS right after its hello.
        assert not [m for m in messages(events2) if isinstance(m, Certificate)]
        assert tshark_style(events2).startswith("C: ClientHello | S: ServerHello,ChangeCipherSpec,EncryptedHandshake")
    else:
        psk = ch.ext(41)
        assert psk is not None and psk.value.identity_count >= 1
        sh = _first(messages(events2), ServerHello)
        assert sh.ext_value(41) == 0  # selected_identity


def test_version_negotiation_fields(pki):
    client, server = contexts(pki)
    client.maximum_version = TLS12
    session = run_session(client, server)
    events = feed_all(session.chunks)
    ch = _first(messages(events), ClientHello)
    assert ch.ext(SUPPORTED_VERSIONS) is None or 0x0304 not in ch.supported_versions
    sh = _first(messages(events), ServerHello)
    assert sh.selected_version == 0x0303
    # RFC 8446 4.1.3: a 1.3-capable server negotiating 1.2 marks its random whatever the client
    # offered; only a client that offered 1.3 must treat it as an attack.
    assert sh.downgrade_sentinel == "tls12"


def test_no_downgrade_sentinel_from_a_server_capped_at_tls12(pki):
    client, server = contexts(pki)
    server.maximum_version = TLS12
    session = run_session(client, server)
    assert session.established
    sh = _first(messages(feed_all(session.chunks)), ServerHello)
    # Only a server that could have done 1.3 marks its random.
    assert sh.selected_version == 0x0303 and sh.downgrade_sentinel is None


def test_event_offsets_point_at_the_record(pki):
    client, server = contexts(pki, version=TLS12)
    session = run_session(client, server)
    events = feed_all(session.chunks)
    streams = {d: session.stream(d) for d in Direction}
    for rec in of_type(events, ev.Record):
        data = streams[rec.direction]
        assert data[rec.offset] == rec.content_type
        assert int.from_bytes(data[rec.offset + 3 : rec.offset + 5], "big") == rec.length
    for msg in of_type(events, ev.HandshakeMessage):
        assert msg.raw in streams[msg.direction][msg.offset:]


def test_tls13_upload_without_server_answer_leaves_the_handshake_phase(pki):
    """A client that only uploads after its Finished (no tickets, the server silent) is not kept
    in the handshake phase forever, and its ciphertext is not copied record after record."""
    client, server = contexts(pki, version=TLS13)
    server.num_tickets = 0
    session = run_session(client, server, client_data=[b"u" * 16000] * 6, server_data=[], close=False)
    events = feed_all(session.chunks, eof=False)
    c2s = [e for e in of_type(events, ev.Record) if e.direction is Direction.C2S and e.encrypted]
    assert len(c2s) >= 7
    assert c2s[0].phase == "handshake" and all(e.phase == "application" for e in c2s[3:])
    assert all(e.payload is None for e in c2s if e.phase == "application")


def test_server_sending_its_whole_three_certificate_chain(pki):
    """Some servers send the root too: all three certificates decode, leaf first."""
    client, server = contexts(pki, version=TLS12)
    full = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    full.minimum_version = full.maximum_version = TLS12
    full.load_cert_chain(pki.server_cert.with_name("server-fullchain.pem"), pki.server_key)
    session = run_session(client, full)
    assert session.established
    cert = _first(messages(feed_all(session.chunks), Direction.S2C), Certificate)
    chain = (pki.server.leaf, *pki.server.intermediates, pki.server.root)
    assert [e.info.subject for e in cert.entries] == [c.cert.subject.rfc4514_string() for c in chain]
    assert [e.info.self_signed for e in cert.entries] == [False, False, True]
    assert cert.entries[2].info.is_ca is True
