"""Record layer, reassembly caps, not-TLS streams and malformed input."""

from __future__ import annotations

import ssl

import pytest

from tests.peers import contexts, make_pki, run_session
from tests.wirehelp import feed_all, messages, of_type
from tlsproxy.wire import events as ev
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.events import Direction
from tlsproxy.wire.messages import Certificate, ClientHello
from tlsproxy.wire.peek import peek_server_name
from tlsproxy.wire.records import MAX_RECORD_LENGTH


@pytest.fixture(scope="module")
def session12(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    client, server = contexts(pki, version=ssl.TLSVersion.TLSv1_2)
    return run_session(client, server)


def _client_hello_bytes(session) -> bytes:
    first = session.chunks[0]
    assert first[0] is Direction.C2S
    return first[1]


def test_client_hello_split_over_records_is_reassembled(session12):
    """A hello split over several records (as post-quantum hellos often are) decodes the same."""
    record = _client_hello_bytes(session12)
    body = record[5:]
    pieces = [body[:3], body[3:100], body[100:]]
    resplit = b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in pieces)
    events = feed_all([(Direction.C2S, resplit)], eof=False)
    assert len(of_type(events, ev.Record)) == 3
    (msg,) = of_type(events, ev.HandshakeMessage)
    assert msg.raw == body
    assert msg.offset == 0  # the record that carried its first byte
    original = of_type(feed_all([(Direction.C2S, record)], eof=False), ev.HandshakeMessage)[0]
    assert msg.message == original.message


def test_two_messages_in_one_record_keep_their_record_offsets(session12):
    s2c = session12.stream(Direction.S2C)
    # Re-pack the server's first flight (ServerHello..ServerHelloDone) into a single record.
    events = feed_all([(Direction.S2C, s2c)], eof=False)
    flight = [e for e in of_type(events, ev.HandshakeMessage)][:4]
    body = b"".join(e.raw for e in flight)
    packed = b"\x16\x03\x03" + len(body).to_bytes(2, "big") + body
    repacked = of_type(feed_all([(Direction.S2C, packed)], eof=False), ev.HandshakeMessage)
    assert [e.raw for e in repacked] == [e.raw for e in flight]
    assert {e.offset for e in repacked} == {0}


def test_oversized_record_stops_the_direction_only():
    conn = TLSConnection()
    header = b"\x16\x03\x03" + (MAX_RECORD_LENGTH + 1).to_bytes(2, "big")
    events = conn.feed(Direction.C2S, header + b"\x00" * 100, at=1.0)
    errors = of_type(events, ev.DecodeError)
    assert errors and "exceeds the maximum" in errors[0].reason and errors[0].offset == 0
    assert of_type(events, ev.ParsingStopped)
    # More bytes in that direction are accepted silently; the other direction still parses.
    assert conn.feed(Direction.C2S, b"\x16" * 1000, at=2.0) == []
    events = conn.feed(Direction.S2C, b"\x15\x03\x03\x00\x02\x02\x28", at=3.0)
    (alert,) = of_type(events, ev.Alert)
    assert (alert.level, alert.description) == (2, 40)


def test_impossible_record_version_after_valid_records(session12):
    record = _client_hello_bytes(session12)
    garbage = b"\x17\x09\x09\x00\x10" + b"\x00" * 16
    events = feed_all([(Direction.C2S, record + garbage)], eof=False)
    assert of_type(events, ev.HandshakeMessage)
    (err,) = of_type(events, ev.DecodeError)
    assert err.offset == len(record) and "0x0909" in err.reason


def test_handshake_message_size_cap_bounds_memory():
    conn = TLSConnection(max_message_size=4096)
    # A certificate message claiming 16 MiB: the cap refuses it at once instead of waiting.
    claim = b"\x0b\xff\xff\xff"
    record = b"\x16\x03\x03" + (len(claim) + 100).to_bytes(2, "big") + claim + b"\x00" * 100
    events = conn.feed(Direction.S2C, record, at=0.0)
    err = of_type(events, ev.DecodeError)[0]
    assert err.where == "handshake" and "16777215" in err.reason
    assert of_type(events, ev.ParsingStopped)
    # Later handshake records still produce Record events but no reassembly.
    events = conn.feed(Direction.S2C, record, at=0.0)
    assert of_type(events, ev.Record) and not of_type(events, ev.HandshakeMessage)


@pytest.mark.parametrize(
    ("data", "protocol", "line"),
    [
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "http-request", "GET / HTTP/1.1"),
        (b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n", "http-response", "HTTP/1.1 400 Bad Request"),
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "ssh", "SSH-2.0-OpenSSH_9.2p1 Debian-2"),
        (b"220 mail.example ESMTP Postfix\r\n", "smtp", "220 mail.example ESMTP Postfix"),
        (b"220 (vsFTPd 3.0.3)\r\n", "ftp", None),
        (b"+OK Dovecot ready.\r\n", "pop3", "+OK Dovecot ready."),
        (b"* OK [CAPABILITY IMAP4rev1] ready\r\n", "imap", "* OK [CAPABILITY IMAP4rev1] ready"),
        (bytes(range(200, 256)) * 2, "binary", None),
    ],
)
def test_not_tls_is_named(data, protocol, line):
    direction = Direction.S2C if protocol in ("http-response", "smtp", "ftp", "pop3", "imap") else Direction.C2S
    events = TLSConnection().feed(direction, data, at=0.0)
    (nt,) = of_type(events, ev.NotTLS)
    if protocol == "ftp":
        # "220" banners are SMTP or FTP; the word FTP in the banner decides.
        assert nt.protocol == "ftp" and nt.first_line == "220 (vsFTPd 3.0.3)"
    else:
        assert nt.protocol == protocol
        assert nt.first_line == line
    assert nt.first_bytes == data[: len(nt.first_bytes)] and nt.offset == 0


def test_starttls_switches_to_tls_at_the_line_boundary(session12):
    hello = _client_hello_bytes(session12)
    prologue = b"EHLO client.example\r\nSTARTTLS\r\n"
    events = TLSConnection().feed(Direction.C2S, prologue + hello, at=0.0)
    (nt,) = of_type(events, ev.NotTLS)
    (st,) = of_type(events, ev.StartTLS)
    assert nt.protocol == "smtp" and st.offset == len(prologue)
    (msg,) = of_type(events, ev.HandshakeMessage)
    assert isinstance(msg.message, ClientHello) and msg.offset == len(prologue)


def test_short_stream_at_eof_is_reported():
    conn = TLSConnection()
    assert conn.feed(Direction.C2S, b"\x16\x03", at=0.0) == []
    events = conn.feed(Direction.C2S, b"", at=1.0)
    (err,) = of_type(events, ev.DecodeError)
    assert err.offset == 0 and "inside a record" in err.reason
    assert of_type(events, ev.EndOfStream)[0].offset == 2  # the stream's length


def test_eof_inside_a_record(session12):
    hello = _client_hello_bytes(session12)
    events = feed_all([(Direction.C2S, hello[:-10])])
    (err,) = [e for e in of_type(events, ev.DecodeError) if e.direction is Direction.C2S]
    assert "inside a record" in err.reason


def test_feeding_after_eof_is_misuse():
    conn = TLSConnection()
    conn.feed(Direction.C2S, b"", at=0.0)
    assert conn.feed(Direction.C2S, b"", at=0.0) == []
    with pytest.raises(RuntimeError):
        conn.feed(Direction.C2S, b"x", at=0.0)


@pytest.mark.parametrize(
    ("body", "malformed"),
    [(b"\x02\x28", False), (b"\x02", True), (b"\x01\x00\x02\x28", False), (b"\x02\x28\x00", True)],
)
def test_plaintext_alert_bodies(body, malformed):
    record = b"\x15\x03\x03" + len(body).to_bytes(2, "big") + body
    events = TLSConnection().feed(Direction.S2C, record, at=0.0)
    alerts = of_type(events, ev.Alert)
    assert alerts and all(a.malformed is malformed for a in alerts)
    assert bool(of_type(events, ev.DecodeError)) is malformed
    if not malformed:
        assert [(a.level, a.description) for a in alerts] == [(body[i], body[i + 1]) for i in range(0, len(body), 2)]


def test_heartbeat_claim_larger_than_record_is_visible():
    # The Heartbleed probe shape: a request claiming 16 KiB in a 3-byte record.
    events = TLSConnection().feed(Direction.C2S, b"\x18\x03\x02\x00\x03\x01\x40\x00", at=0.0)
    (hb,) = of_type(events, ev.Heartbeat)
    assert (hb.hb_type, hb.payload_length, hb.record_length) == (1, 0x4000, 3)


def test_certificate_with_undecodable_der_keeps_going(session12):
    events = feed_all(session12.chunks)
    cert_msg = next(e for e in of_type(events, ev.HandshakeMessage) if isinstance(e.message, Certificate))
    # Corrupt the leaf's DER in the middle; the message must still decode with the error recorded.
    raw = bytearray(cert_msg.raw)
    raw[30:60] = b"\xff" * 30
    record = b"\x16\x03\x03" + len(raw).to_bytes(2, "big") + bytes(raw)
    conn = TLSConnection()
    out = conn.feed(Direction.S2C, record, at=0.0)
    msg = of_type(out, ev.HandshakeMessage)[0]
    assert isinstance(msg.message, Certificate)
    leaf = msg.message.entries[0].info
    assert leaf.parse_error or leaf.errors


def test_peek_server_name_waits_for_the_whole_hello(session12):
    hello = _client_hello_bytes(session12)
    for cut in (0, 3, 5, 40, len(hello) - 1):
        assert peek_server_name(hello[:cut]).status == "need_more"
    result = peek_server_name(hello)
    assert (result.status, result.server_name) == ("ok", "localhost")
    assert peek_server_name(b"GET / HTTP/1.1\r\n").status == "not_tls"


def test_messages_helper_sanity(session12):
    assert isinstance(messages(feed_all(session12.chunks))[0], ClientHello)


def test_eof_right_after_a_record_header_is_a_truncated_record(session12):
    hello = _client_hello_bytes(session12)
    events = feed_all([(Direction.C2S, hello + hello[:5])])
    (err,) = [e for e in of_type(events, ev.DecodeError) if e.direction is Direction.C2S]
    assert err.offset == len(hello) and "5 bytes" in err.reason


def test_not_tls_verdict_does_not_depend_on_the_split():
    banner = b"220 ftp.example.com FTP server ready\r\n"
    whole = feed_all([(Direction.S2C, banner)])
    bytewise_events = feed_all([(Direction.S2C, banner[i : i + 1]) for i in range(len(banner))])
    assert whole == bytewise_events
    (nt,) = of_type(whole, ev.NotTLS)
    assert nt.protocol == "ftp" and nt.first_line == "220 ftp.example.com FTP server ready"


def test_short_plaintext_is_named_at_eof():
    events = feed_all([(Direction.S2C, b"nope")])
    (nt,) = of_type(events, ev.NotTLS)
    assert nt.first_bytes == b"nope" and nt.offset == 0


def test_prologue_watch_is_bounded_across_many_reads(session12):
    from tlsproxy.wire.records import MAX_PROLOGUE

    conn = TLSConnection()
    line = b"250-a line of a very long SMTP dialogue\r\n"
    events = conn.feed(Direction.C2S, b"EHLO client\r\n", at=0.0)
    sent = 0
    while sent <= MAX_PROLOGUE + len(line):
        events += conn.feed(Direction.C2S, line, at=0.0)
        sent += len(line)
    stopped = of_type(events, ev.ParsingStopped)
    assert stopped and "plaintext" in stopped[0].reason
    # A hello after that point is no longer taken for a STARTTLS switch.
    late = conn.feed(Direction.C2S, _client_hello_bytes(session12), at=0.0)
    assert not of_type(late, ev.StartTLS) and not of_type(late, ev.HandshakeMessage)
