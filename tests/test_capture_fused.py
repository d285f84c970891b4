"""The capture front end's fused per-packet path gives exactly what the general path gives.

``SegmentReader`` decodes frames straight from the reader's buffer (``PacketDecoder.decode_at``),
``TcpReassembler.feed_fields`` takes segments as tuples with a lean in-order path, and
``analyze_capture`` runs on both: each is checked here against the general path it replaces, on
every capture of the corpus and on generated input.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.capture_support import RecordingPipeline
from tlsproxy.capture.packets import ACK, FIN, PSH, RST, SYN, FieldsDecoder, PacketDecoder, SegmentReader
from tlsproxy.capture.pcap import CaptureFormatError, CaptureReader
from tlsproxy.capture.tcp import TcpReassembler
from tlsproxy.frontends.capture import CaptureAnalysis, analyze_capture

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
CAPTURES = sorted(p for p in CORPUS.glob("*/*.pcap*")) if CORPUS.is_dir() else []
IDS = [p.relative_to(CORPUS).as_posix() for p in CAPTURES]

SEGMENT_FIELDS = ("src", "dst", "seq", "ack", "flags", "window", "payload", "length", "timestamp",
                  "truncated", "options")


def _general(data: bytes, size: int) -> tuple[list, PacketDecoder, list[str]]:
    """Per packet: the general decoder's segment as a fields tuple, or the packet's timestamp."""
    reader, dec, out, secrets = CaptureReader(), PacketDecoder(), [], []
    try:
        for i in range(0, len(data), size):
            for raw in reader.feed(data[i:i + size]):
                seg = dec.decode(raw)
                out.append(raw.timestamp if seg is None else tuple(getattr(seg, n) for n in SEGMENT_FIELDS))
            secrets += reader.take_secrets()
        reader.close()
    except CaptureFormatError as exc:
        out.append(str(exc))
    return out, dec, secrets


def _fused(data: bytes, size: int) -> tuple[list, PacketDecoder, list[str]]:
    reader, out, secrets = SegmentReader(), [], []
    try:
        for i in range(0, len(data), size):
            out += reader.feed(data[i:i + size])
            secrets += reader.take_secrets()
        reader.close()
    except CaptureFormatError as exc:
        out.append(str(exc))
    return out, reader.decoder, secrets


@pytest.mark.skipif(not CAPTURES, reason="capture corpus not found")
@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_segment_reader_gives_what_reader_and_decoder_give(path: Path) -> None:
    data = path.read_bytes()
    for size in (len(data) or 1, 4093, 333):
        general, gdec, gsecrets = _general(data, size)
        fused, fdec, fsecrets = _fused(data, size)
        assert fused == general
        assert fdec.stats == gdec.stats
        assert fsecrets == gsecrets


def _events(tcp: TcpReassembler, segments: list[tuple], fields: bool) -> list:
    from tlsproxy.capture.packets import SegmentRecord

    out = []
    for s in segments:
        out += tcp.feed_fields(s) if fields else tcp.feed(SegmentRecord(*s))
    out += tcp.finish()
    return out


@pytest.mark.skipif(not CAPTURES, reason="capture corpus not found")
@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_feed_fields_gives_the_events_feed_gives(path: Path) -> None:
    segments = [s for s in _fused(path.read_bytes(), 1 << 20)[0] if type(s) is tuple]
    a, b = TcpReassembler(), TcpReassembler()
    assert _events(a, segments, True) == _events(b, segments, False)
    assert a.stats == b.stats


@pytest.mark.skipif(not CAPTURES, reason="capture corpus not found")
@pytest.mark.parametrize("path", CAPTURES, ids=IDS)
def test_analyze_capture_makes_the_calls_of_the_general_path(path: Path) -> None:
    """analyze_capture (SegmentReader + feed_fields) against CaptureAnalysis.packet per RawPacket."""

    fast = RecordingPipeline()
    stats = analyze_capture(path, fast, all_connections=True)
    slow = RecordingPipeline()
    analysis = CaptureAnalysis(slow, all_connections=True)
    reader = CaptureReader()
    try:
        for raw in reader.feed(path.read_bytes()):
            analysis.packet(raw)
        reader.close()
    except CaptureFormatError as exc:
        analysis.stats.error = str(exc)
    assert analysis.finish() == stats
    assert fast.calls == slow.calls


# --- generated input -----------------------------------------------------------------------------

_CLIENT, _SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 443)


@st.composite
def _segment_lists(draw: st.DrawFn) -> list[tuple]:
    """Two directions of a connection as segments, then shuffled, duplicated, altered, cut."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    out: list[tuple] = []
    at = 1000.0
    for src, dst, isn in ((_CLIENT, _SERVER, draw(st.integers(0, 2**32 - 1))),
                          (_SERVER, _CLIENT, draw(st.integers(0, 2**32 - 1)))):
        seq = isn
        if draw(st.booleans()):
            out.append((src, dst, seq, 0, SYN | (ACK if src == _SERVER else 0), 1000, b"", 0, at, False, b""))
            seq = (seq + 1) & 0xFFFFFFFF
        for _ in range(draw(st.integers(0, 12))):
            n = rnd.choice((0, 1, 5, 100, 1400))
            payload = bytes(rnd.getrandbits(8) for _ in range(n))
            out.append((src, dst, seq, 1, ACK | PSH, 1000, payload, n, at, False, b""))
            seq = (seq + n) & 0xFFFFFFFF
        if draw(st.booleans()):
            out.append((src, dst, seq, 1, ACK | (FIN if rnd.random() < 0.8 else RST), 1000, b"", 0, at, False, b""))
    for _ in range(draw(st.integers(0, 6))):
        if not out:
            break
        s = list(rnd.choice(out))
        kind = rnd.randrange(5)
        if kind == 0 and s[6]:  # altered retransmission
            s[6] = bytes(b ^ 1 for b in s[6])
        elif kind == 1 and s[6]:  # truncated capture of the segment
            s[6] = s[6][:len(s[6]) // 2]
            s[9] = True
        elif kind == 2:  # keep-alive
            s[2] = (s[2] - 1) & 0xFFFFFFFF
            s[6], s[7] = b"\0", 1
        out.insert(rnd.randrange(len(out) + 1), tuple(s))
    if draw(st.booleans()):
        rnd.shuffle(out)
    # Timestamps in order, with jumps that make reset grace periods and idle timeouts run out.
    t = 1000.0
    timed = []
    for s in out:
        t += rnd.choice((0.0, 0.001, 1.0, 6.0, 1000.0))
        timed.append(s[:8] + (t,) + s[9:])
    return timed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments=_segment_lists())
def test_feed_fields_matches_feed_on_generated_segments(segments: list[tuple]) -> None:
    a, b = TcpReassembler(), TcpReassembler()
    assert _events(a, segments, True) == _events(b, segments, False)
    assert a.stats == b.stats


@st.composite
def _frames(draw: st.DrawFn) -> tuple[int, bytes]:
    """A link header, an IPv4 or IPv6 header and a TCP header with plausible, often odd, fields."""
    import struct

    linktype = draw(st.sampled_from([0, 1, 101, 108, 113, 276]))
    v6 = draw(st.booleans())
    payload = draw(st.binary(max_size=40))
    doff = draw(st.sampled_from([0x50, 0x50, 0x60, 0x80, 0x40, 0xF0]))
    options = draw(st.binary(min_size=max(0, (doff >> 4) * 4 - 20), max_size=max(0, (doff >> 4) * 4 - 20)))
    tcp = struct.pack("!HHIIBBHHH", draw(st.integers(0, 65535)), 443, draw(st.integers(0, 2**32 - 1)), 7, doff,
                      draw(st.integers(0, 255)), 100, 0, 0) + options + payload
    proto = draw(st.sampled_from([6, 6, 6, 17, 0, 44]))
    if v6:
        plen = draw(st.sampled_from([len(tcp), len(tcp), 0, len(tcp) + 5, max(0, len(tcp) - 3)]))
        ip = struct.pack("!IHBB16s16s", 0x60000000, plen, proto, 64, bytes(range(16)), bytes(range(16, 32)))
        etype, family = 0x86DD, draw(st.sampled_from([10, 24, 28, 30]))
    else:
        ihl = draw(st.sampled_from([5, 5, 6, 4]))
        total = draw(st.sampled_from([ihl * 4 + len(tcp)] * 2 + [0, ihl * 4 + len(tcp) + 7, 30]))
        frag = draw(st.sampled_from([0, 0, 0x4000, 0x2000, 0x0001]))
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, frag, 64, proto, 0, b"\x0a\0\0\x01",
                         b"\x0a\0\0\x02") + b"\x01" * max(0, ihl * 4 - 20)
        etype, family = 0x0800, 2
    link = {1: b"\0" * 12 + etype.to_bytes(2, "big"), 113: b"\0" * 14 + etype.to_bytes(2, "big"),
            276: etype.to_bytes(2, "big") + b"\0" * 18, 101: b""}.get(linktype)
    if link is None:
        link = family.to_bytes(4, draw(st.sampled_from(["little", "big"])))
    frame = link + ip + tcp + draw(st.binary(max_size=6))  # (trailer: Ethernet padding or FCS)
    return linktype, frame[:draw(st.integers(0, len(frame)))] if draw(st.booleans()) else frame


@settings(max_examples=400, deadline=None)
@given(made=_frames(), before=st.binary(max_size=9), after=st.binary(max_size=9), truncated=st.booleans())
def test_decode_at_an_offset_is_the_general_decode(made: tuple[int, bytes], before: bytes, after: bytes,
                                                   truncated: bool) -> None:
    linktype, frame = made
    a, b = FieldsDecoder(), PacketDecoder()
    seg = b.decode_frame(linktype, frame, 1.5, truncated)
    got = a.decode_at(linktype, 1.5, before + frame + after, len(before), len(before) + len(frame), truncated)
    assert got == (None if seg is None else tuple(getattr(seg, n) for n in SEGMENT_FIELDS))
    assert a.stats == b.stats


@settings(max_examples=200, deadline=None)
@given(frame=st.binary(min_size=0, max_size=120), before=st.binary(max_size=9), after=st.binary(max_size=9),
       linktype=st.sampled_from([0, 1, 101, 108, 113, 276, 7]), truncated=st.booleans())
def test_decode_at_an_offset_is_decode_of_the_slice(frame: bytes, before: bytes, after: bytes,
                                                    linktype: int, truncated: bool) -> None:
    a, b = FieldsDecoder(), FieldsDecoder()
    buf = before + frame + after
    assert (a.decode_at(linktype, 1.5, buf, len(before), len(before) + len(frame), truncated)
            == b.decode_at(linktype, 1.5, frame, 0, len(frame), truncated))
    assert a.stats == b.stats


def test_endpoint_cache_is_bounded_and_gives_the_same_endpoints() -> None:
    import struct

    def frame(i: int) -> bytes:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes((10, 0, i >> 8, i & 255)),
                         bytes((10, 1, 0, 1)))
        tcp = struct.pack("!HHIIBBHHH", 1024 + i, 443, 1, 2, 0x50, ACK, 100, 0, 0)
        return b"\0" * 12 + b"\x08\x00" + ip + tcp

    small, big = FieldsDecoder(), FieldsDecoder()
    small._ADDR_CACHE_MAX = 8
    for rounds in range(2):
        for i in range(50):
            f = frame(i)
            seg = small.decode_at(1, 0.0, f, 0, len(f), False)
            assert seg == big.decode_at(1, 0.0, f, 0, len(f), False)
            assert seg[0] == (f"10.0.{i >> 8}.{i & 255}", 1024 + i) and seg[1] == ("10.1.0.1", 443)
            assert len(small._ends) <= 8 and len(small._addrs) <= 8
