"""The parser's fast paths and memos give what the checked, uncached code gives, and stay bounded.

Decoders index ``bytes`` directly and memoise repeated extensions; the same body handed over as a
``bytearray`` takes the checked reader and no memo, so comparing the two covers every fast path,
truncated and corrupted bodies included (where the checked reader must name the same field).
"""

from __future__ import annotations

import gc
import os
import ssl
import weakref

import pytest

from tests.peers import contexts, make_pki, run_session
from tests.wirehelp import feed_all, of_type
from tlsproxy.wire import events as ev
from tlsproxy.wire import extensions as ext
from tlsproxy.wire import messages
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.events import Direction
from tlsproxy.wire.handshake import HandshakeReassembler
from tlsproxy.wire.messages import DecodeContext, HandshakeType, decode_message
from tlsproxy.wire.reader import Reader, WireError


@pytest.fixture(scope="module", params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def session(request, tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    client, server = contexts(pki, version=request.param)
    return run_session(client, server)


def _hellos(session) -> list[tuple[int, bytes]]:
    events = feed_all(session.chunks)
    return [(e.msg_type, e.raw[4:]) for e in of_type(events, ev.HandshakeMessage)
            if e.msg_type in (HandshakeType.client_hello, HandshakeType.server_hello)]


def _variants(body: bytes):
    """Every truncation, and each of the first 120 bytes set to 0x00 and to 0xff."""
    for n in range(len(body) + 1):
        yield body[:n]
    for i in range(min(len(body), 120)):
        for b in (0x00, 0xFF):
            yield body[:i] + bytes([b]) + body[i + 1 :]


def test_hello_fast_paths_decode_like_the_checked_reader(session):
    ctx = DecodeContext()
    for msg_type, body in _hellos(session):
        for variant in _variants(body):
            checked = decode_message(msg_type, bytearray(variant), ctx)
            assert decode_message(msg_type, variant, ctx) == checked
            assert decode_message(msg_type, variant, ctx) == checked  # served from the memos now


def test_memoised_extensions_equal_fresh_decodes(session):
    for msg_type, body in _hellos(session):
        message, error = decode_message(msg_type, body, DecodeContext())
        assert error is None
        where = ext.CLIENT_HELLO if msg_type == HandshakeType.client_hello else ext.SERVER_HELLO
        for e in message.extensions:
            assert e == ext.decode_extension(e.type, e.data, where)


def _sni_block(i: int) -> bytes:
    name = f"host{i}.example".encode()
    body = (1 + 2 + len(name)).to_bytes(2, "big") + b"\x00" + len(name).to_bytes(2, "big") + name
    one = ext.SERVER_NAME.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body
    return len(one).to_bytes(2, "big") + one


def test_extension_memo_is_bounded():
    memo = ext._MEMOS[ext.CLIENT_HELLO]  # noqa: SLF001 - the bound is the point
    for i in range(ext._MEMO_ENTRIES * 2 + 5):  # noqa: SLF001
        (got,) = ext.decode_extensions(Reader(_sni_block(i)), ext.CLIENT_HELLO)
        assert got.value == (f"host{i}.example",)
        assert len(memo) <= ext._MEMO_ENTRIES  # noqa: SLF001


def test_extensions_with_per_connection_bytes_are_not_memoised():
    share = os.urandom(32)
    entry = (29).to_bytes(2, "big") + len(share).to_bytes(2, "big") + share
    body = len(entry).to_bytes(2, "big") + entry
    one = ext.KEY_SHARE.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body
    (got,) = ext.decode_extensions(Reader(len(one).to_bytes(2, "big") + one), ext.CLIENT_HELLO)
    assert got.value == (ext.KeyShareEntry(group=29, key_exchange_length=32),)
    assert one not in ext._MEMOS[ext.CLIENT_HELLO]  # noqa: SLF001


def test_truncated_extension_is_named_by_the_checked_reader():
    block = _sni_block(1)
    cut = (len(block) - 2 + 3).to_bytes(2, "big") + block[2:] + b"\x00\x0a\x00"  # a 3-byte extension
    with pytest.raises(WireError) as fast:
        ext.decode_extensions(Reader(cut), ext.CLIENT_HELLO)
    with pytest.raises(WireError) as checked:
        ext.decode_extensions(Reader(bytearray(cut)), ext.CLIENT_HELLO)
    assert str(fast.value) == str(checked.value)
    assert str(fast.value) == f"extension_data length at offset {len(block) + 2}: needs 2 bytes, 1 left"


def test_cipher_suite_memo_is_bounded_and_exact():
    for i in range(messages._SUITES_MEMO * 2 + 3):  # noqa: SLF001
        raw = i.to_bytes(2, "big") + b"\x13\x01"
        assert messages._cipher_suites(raw) == (i, 0x1301)  # noqa: SLF001
        assert len(messages._suites_memo) <= messages._SUITES_MEMO  # noqa: SLF001


def _record(body: bytes, ctype: int = 22) -> bytes:
    return bytes([ctype, 3, 3]) + len(body).to_bytes(2, "big") + body


def test_whole_records_then_a_partial_one_in_one_chunk(session):
    """The record layer's whole-record path hands over records; the tail of the chunk (a
    wanted handshake record or a skipped application-data record) continues in the next one."""
    c2s = session.stream(Direction.C2S)
    for tail in (_record(b"\x14\x00\x00\x0c" + bytes(12)), _record(bytes(300), ctype=23)):
        stream = c2s + tail
        for cut in (len(c2s) + 3, len(c2s) + 5, len(stream) - 1):
            pieces = [(Direction.C2S, stream[:cut]), (Direction.C2S, stream[cut:])]
            assert feed_all(pieces) == feed_all([(Direction.C2S, stream)])


def test_reassembler_tail_after_whole_messages_keeps_its_record_offset():
    first = b"\x02\x00\x00\x02ab"
    second = b"\x0b\x00\x00\x06" + b"123456"
    r = HandshakeReassembler()
    done, too_large = r.feed(first + second[:5], 100)
    assert [(m.offset, m.raw) for m in done] == [(100, first)] and too_large is None
    done, _ = r.feed(second[5:], 200)
    assert [(m.offset, m.raw) for m in done] == [(100, second)]
    assert r.pending == 0


def test_reassembler_cap_after_a_whole_message():
    r = HandshakeReassembler(max_message_size=16)
    done, too_large = r.feed(b"\x0e\x00\x00\x00" + b"\x0b\x00\x01\x00", 7)
    assert [m.raw for m in done] == [b"\x0e\x00\x00\x00"]
    assert too_large is not None and too_large.offset == 7


def test_a_connection_is_freed_without_the_garbage_collector(session):
    """No reference cycle: a dropped connection goes at once, not at the next full collection."""
    gc.disable()
    try:
        conn = TLSConnection()
        for direction, data in session.chunks:
            conn.feed(direction, data, at=0.0)
        ref = weakref.ref(conn)
        del conn
        assert ref() is None
    finally:
        gc.enable()


def _messages(session) -> list[tuple[int, bytes]]:
    """Every plaintext handshake message of the session, header included."""
    return [(e.msg_type, e.raw) for e in of_type(feed_all(session.chunks), ev.HandshakeMessage)]


def test_memoised_messages_equal_fresh_decodes(session):
    """Certificate, ServerHelloDone...: a memo hit is the message a fresh decode gives, in every
    context the decoders read; a bytearray (unhashable) takes the plain path."""
    for ctx in (DecodeContext(), DecodeContext(tls13=True, version=0x0304),
                DecodeContext(version=0x0303, cipher_suite=0xC02F)):
        for msg_type, raw in _messages(session):
            fresh = decode_message(msg_type, raw[4:], ctx)
            assert messages.decode_handshake(msg_type, raw, ctx) == fresh
            assert messages.decode_handshake(msg_type, raw, ctx) == fresh  # a memo hit if memoised
            assert messages.decode_handshake(msg_type, bytearray(raw), ctx) == fresh


def test_message_memo_is_bounded_and_skips_random_bodies():
    ctx = DecodeContext()
    messages._memo.clear()
    for i in range(messages._MEMO_ENTRIES + 10):
        body = b"\x00\x00\x03" + i.to_bytes(3, "big")  # an empty certificate_list, then junk
        messages.decode_handshake(HandshakeType.certificate, b"\x0b\x00\x00\x06" + body, ctx)
        assert len(messages._memo) <= messages._MEMO_ENTRIES
    messages._memo.clear()
    messages.decode_handshake(HandshakeType.client_key_exchange, b"\x10\x00\x00\x02\x01\xaa", ctx)
    messages.decode_handshake(HandshakeType.server_hello_done, b"\x0e\x00\x00\x00", ctx)
    assert [key[2][0] for key in messages._memo] == [HandshakeType.server_hello_done]
    big = b"\x0b" + (messages._MEMO_MAX_BYTES).to_bytes(3, "big") + bytes(messages._MEMO_MAX_BYTES)
    messages.decode_handshake(HandshakeType.certificate, big, ctx)
    assert len(messages._memo) == 1


def test_vec_len_checks_like_vec():
    for data in (b"", b"\x02", b"\x02a", b"\x02ab", b"\x00\x03abc"):
        for lenlen in (1, 2):
            a, b = Reader(data), Reader(data)
            try:
                expected: object = len(a.vec(lenlen, "f")), a.offset
            except WireError as exc:
                expected = str(exc)
            try:
                got: object = b.vec_len(lenlen, "f"), b.offset
            except WireError as exc:
                got = str(exc)
            assert got == expected


def test_reassembler_whole_takes_only_one_exact_message():
    r = HandshakeReassembler(max_message_size=8)
    assert r.whole(b"\x0e\x00\x00\x00") == 14
    assert r.whole(b"\x0b\x00\x00\x02ab") == 11
    assert r.whole(b"\x0b\x00\x00\x02a") == -1  # short
    assert r.whole(b"\x0b\x00\x00\x01ab") == -1  # two messages, or one and a tail
    assert r.whole(b"\x0b\x00\x00\x09" + bytes(9)) == -1  # over the cap: feed() refuses it
    assert r.whole(bytearray(b"\x0e\x00\x00\x00")) == -1
    assert r.pending == 0
    done, _ = r.feed(b"\x0b\x00\x00\x02a", 5)
    assert done == [] and r.whole(b"\x0e\x00\x00\x00") == -1  # a message is pending
    done, _ = r.feed(b"b", 9)
    assert [(m.offset, m.raw) for m in done] == [(5, b"\x0b\x00\x00\x02ab")]


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 6, 7])
def test_stream_start_decided_the_same_in_any_split(session, cut):
    """feed_whole() decides TLS from the first two bytes like the sniffing path does with more."""
    whole = feed_all(session.chunks)
    split = feed_all(session.chunks, lambda data: [data[:cut], data[cut:]] if len(data) > cut else [data])
    assert split == whole


def test_whole_record_path_equals_the_record_by_record_path(session):
    """Every record handed to the callback whole (the usual chunk) or through the generator (a
    chunk of one byte at a time) gives the same events, application data included."""
    c2s = session.stream(Direction.C2S) + _record(bytes(40), ctype=23) + _record(b"\x01\x00", ctype=21)
    byte_by_byte = feed_all([(Direction.C2S, c2s)], lambda data: [data[i : i + 1] for i in range(len(data))])
    assert byte_by_byte == feed_all([(Direction.C2S, c2s)])
