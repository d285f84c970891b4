"""Property tests: whatever the bytes, ``feed`` returns events (never raises) and memory stays
bounded; whatever the split, the events are the same."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.peers import contexts, make_pki, run_session
from tests.wirehelp import feed_all
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.events import Direction
from tlsproxy.wire.records import MAX_RECORD_LENGTH

_SESSIONS: dict[str, list] = {}


def _sessions(tmp_dir) -> dict[str, list]:
    if not _SESSIONS:
        pki = make_pki(tmp_dir)
        for name, kwargs in {
            "tls12": dict(version=ssl.TLSVersion.TLSv1_2),
            "tls13": dict(version=ssl.TLSVersion.TLSv1_3),
            "tls12-mtls-fail": dict(version=ssl.TLSVersion.TLSv1_2, require_client_cert=True),
            "tls12-mtls": dict(version=ssl.TLSVersion.TLSv1_2, require_client_cert=True, client_has_cert=True),
        }.items():
            client, server = contexts(pki, **kwargs)
            _SESSIONS[name] = run_session(client, server).chunks
    return _SESSIONS


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    return _sessions(tmp_path_factory.mktemp("fuzz"))


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MAX_MESSAGE = 1 << 16


def _feed_checked(conn: TLSConnection, chunks) -> None:
    for direction, data in chunks:
        conn.feed(direction, data, at=0.0)
        side = conn._sides[direction]  # noqa: SLF001 - checking the bound is the point
        assert side.records.buffered <= MAX_RECORD_LENGTH + 5 + 64 * 1024
        assert side.handshake.pending <= MAX_MESSAGE + 4 + MAX_RECORD_LENGTH
    for direction in Direction:
        conn.feed(direction, b"", at=1.0)


@_SETTINGS
@given(st.lists(st.tuples(st.sampled_from(list(Direction)), st.binary(min_size=1, max_size=300)), max_size=20))
def test_random_bytes_never_raise(chunks):
    _feed_checked(TLSConnection(max_message_size=MAX_MESSAGE), chunks)


@_SETTINGS
@given(prefix=st.sampled_from([b"\x16\x03\x01", b"\x16\x03\x03", b"\x15\x03\x03", b"\x80", b"\x17\x03\x03"]),
       rest=st.binary(max_size=2000))
def test_tls_looking_garbage_never_raises(prefix, rest):
    _feed_checked(TLSConnection(max_message_size=MAX_MESSAGE), [(Direction.C2S, prefix + rest),
                                                                (Direction.S2C, prefix + rest)])


@_SETTINGS
@given(data=st.data())
def test_truncated_and_mutated_real_handshakes_never_raise(sessions, data):
    name = data.draw(st.sampled_from(sorted(sessions)))
    chunks = list(sessions[name])
    index = data.draw(st.integers(0, len(chunks) - 1))
    direction, chunk = chunks[index]
    mutation = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    pos = data.draw(st.integers(0, len(chunk) - 1))
    if mutation == "truncate":
        chunk = chunk[:pos]
    elif mutation == "flip":
        chunk = chunk[:pos] + bytes([chunk[pos] ^ data.draw(st.integers(1, 255))]) + chunk[pos + 1 :]
    elif mutation == "insert":
        chunk = chunk[:pos] + data.draw(st.binary(min_size=1, max_size=8)) + chunk[pos:]
    else:
        chunk = chunk[:pos] + chunk[pos + data.draw(st.integers(1, 8)) :]
    chunks[index] = (direction, chunk)
    chunks = [(d, c) for d, c in chunks if c]
    _feed_checked(TLSConnection(max_message_size=MAX_MESSAGE), chunks)


@_SETTINGS
@given(data=st.data())
def test_any_split_of_real_streams_gives_the_same_events(sessions, data):
    name = data.draw(st.sampled_from(sorted(sessions)))
    chunks = sessions[name]

    def split(chunk: bytes) -> list[bytes]:
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(chunk) - 1)), max_size=6))))
        pieces, last = [], 0
        for c in cuts:
            if c < len(chunk):
                pieces.append(chunk[last:c])
                last = c
        pieces.append(chunk[last:])
        return [p for p in pieces if p]

    assert feed_all(chunks, split) == feed_all(chunks)
