"""Capture front end: pcap/pcapng reading, header decoding and TCP reassembly on the real corpus.

The capture files are real (see /work/shared/corpus/MANIFEST.md); the per-stream client/server
come from tshark's own dissection (``*/tshark/*.tshark.json``).  Where we need a variant of a
capture (another byte order, link type, sequence space, ordering), the test re-packs the real
frames; no TLS bytes are typed by hand.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.capture_support import RecordingPipeline
from tlsproxy.capture.packets import (
    ACK,
    FIN,
    PSH,
    SYN,
    PacketDecoder,
    TcpSegment,
    parse_tcp_options,
)
from tlsproxy.capture.pcap import CaptureFormatError, CaptureReader, RawPacket, iter_packets
from tlsproxy.capture.tcp import (
    MAX_OUT_OF_ORDER,
    ConnectionFinished,
    ConnectionOpened,
    ConnKey,
    StreamClosed,
    StreamConflict,
    StreamData,
    StreamGap,
    TcpReassembler,
)
from tlsproxy.wire.events import Direction

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
CAPTURES = sorted(p for p in CORPUS.glob("*/*.pcap*")) if CORPUS.is_dir() else []
C2S, S2C = Direction.C2S, Direction.S2C

# Streams whose client side does not start with a TLS record: STARTTLS-style upgrades, proxy
# preambles (HTTP CONNECT, SOCKS) and the connection zeek/tls13-ech.pcap picks up mid-stream.
PLAINTEXT_FIRST = {
    "zeek/smtp-starttls.pcap", "zeek/imap-starttls.pcap", "zeek/pop3-starttls.pcap",
    "zeek/ftp-auth-tls.pcap", "zeek/xmpp-starttls.pcap", "wireshark-notes/smtp2525-ssl.pcapng",
    "ja4/https-connect.pcap", "ja4/socks-https-example.pcap",
}
DAMAGED = {"suricata-verify/tls_DER-incomplete-header.pcap"}


def need_corpus() -> None:
    if not CAPTURES:
        pytest.skip(f"capture corpus not found at {CORPUS}")


def capture(name: str) -> Path:
    need_corpus()
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{name} missing from the corpus")
    return path


def rel(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def tshark_summary(path: Path) -> dict:
    return json.loads((path.parent / "tshark" / f"{path.name}.tshark.json").read_text())


def endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


# --- helpers: read, decode, reassemble ----------------------------------------------------------


def read_packets(path: Path) -> tuple[list[RawPacket], CaptureFormatError | None]:
    packets: list[RawPacket] = []
    try:
        for p in iter_packets(path):
            packets.append(p)
    except CaptureFormatError as exc:
        return packets, exc
    return packets, None


def segments_of(packets: list[RawPacket]) -> list[TcpSegment]:
    dec = PacketDecoder()
    return [s for s in map(dec.decode, packets) if s is not None]


@dataclass
class Conn:
    opened: ConnectionOpened
    data: dict[Direction, bytearray] = field(
        default_factory=lambda: {C2S: bytearray(), S2C: bytearray()})
    gaps: dict[Direction, list[tuple[int, int]]] = field(
        default_factory=lambda: {C2S: [], S2C: []})
    closed: dict[Direction, str] = field(default_factory=dict)
    conflicts: int = 0
    finished: bool = False


def reassemble(segments, reassembler: TcpReassembler | None = None) -> dict[ConnKey, Conn]:
    """Run segments through a reassembler and check the event grammar on the way."""
    r = reassembler or TcpReassembler()
    conns: dict[ConnKey, Conn] = {}
    events = [e for s in segments for e in r.feed(s)] + r.finish()
    for ev in events:
        if isinstance(ev, ConnectionOpened):
            assert ev.conn not in conns, "opened twice"
            conns[ev.conn] = Conn(ev)
            continue
        c = conns[ev.conn]
        assert not c.finished, f"event after ConnectionFinished: {ev}"
        if isinstance(ev, StreamData):
            assert ev.direction not in c.closed
            assert ev.data, "empty StreamData"
            assert ev.offset == len(c.data[ev.direction]) + sum(n for _, n in c.gaps[ev.direction])
            c.data[ev.direction] += ev.data
        elif isinstance(ev, StreamGap):
            assert ev.length > 0
            c.gaps[ev.direction].append((ev.offset, ev.length))
        elif isinstance(ev, StreamConflict):
            c.conflicts += 1
        elif isinstance(ev, StreamClosed):
            assert ev.direction not in c.closed, "closed twice"
            c.closed[ev.direction] = ev.how
        elif isinstance(ev, ConnectionFinished):
            assert set(c.closed) == {C2S, S2C}, "finished before both directions closed"
            c.finished = True
    assert all(c.finished for c in conns.values())
    assert r.open_connections == 0
    return conns


def reassemble_file(path: Path) -> dict[ConnKey, Conn]:
    packets, error = read_packets(path)
    if rel(path) not in DAMAGED:
        assert error is None, error
    return reassemble(segments_of(packets))


def walk_records(data: bytes, *, partial_last: bool = False) -> list[tuple[int, int]]:
    """(content type, length) of each TLS record; fails unless the bytes are whole records (the
    last one may be cut short with ``partial_last``: a capture that ends mid-record)."""
    out, i = [], 0
    while i < len(data):
        assert len(data) - i >= 5, f"partial record header at {i}"
        ctype, major, length = data[i], data[i + 1], int.from_bytes(data[i + 3:i + 5], "big")
        assert ctype in (20, 21, 22, 23, 24) and major == 3, f"not a record header at {i}"
        if partial_last and i + 5 + length > len(data):
            out.append((ctype, length))
            break
        assert i + 5 + length <= len(data), f"record at {i} runs past the stream"
        out.append((ctype, length))
        i += 5 + length
    return out


def with_payload(conns: dict[ConnKey, Conn]) -> dict[tuple, Conn]:
    return {(c.opened.client, c.opened.server): c for c in conns.values()
            if c.data[C2S] or c.data[S2C]}


# --- the whole corpus ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", CAPTURES, ids=[rel(p) for p in CAPTURES])
def test_corpus_connections_match_tshark(path: Path) -> None:
    conns = reassemble_file(path)
    summary = tshark_summary(path)
    ours = {(c.opened.client, c.opened.server) for c in conns.values()}
    for s in summary["streams"]:
        assert (endpoint(s["client"]), endpoint(s["server"])) in ours, s
    # Every connection that carried bytes is one tshark saw as TLS (the corpus has nothing else),
    # with the same client: the others are bare handshakes or stray packets.
    assert set(with_payload(conns)) <= {(endpoint(s["client"]), endpoint(s["server"]))
                                        for s in summary["streams"]}


@pytest.mark.parametrize("path", CAPTURES, ids=[rel(p) for p in CAPTURES])
def test_corpus_client_streams_start_with_tls(path: Path) -> None:
    conns = reassemble_file(path)
    summary = tshark_summary(path)
    by_pair = {(c.opened.client, c.opened.server): c for c in conns.values()}
    for s in summary["streams"]:
        c = by_pair[(endpoint(s["client"]), endpoint(s["server"]))]
        first = bytes(c.data[C2S][:3])
        if rel(path) in PLAINTEXT_FIRST:
            # Plaintext (or a SOCKS request) first, the ClientHello later in the same stream.
            c2s = bytes(c.data[C2S])
            at = c2s.find(b"\x16\x03")
            assert first[:1] != b"\x16" and at > 0 and c2s[at + 5] == 1, (s, first)
        elif rel(path) == "zeek/tls13-ech.pcap" and not c.opened.syn_seen:
            assert c.opened.basis == "port"  # mid-stream: the guess is flagged as a guess
            assert first[:2] == b"\x17\x03"
        else:
            assert first[:2] == b"\x16\x03" or (first[0] & 0x80 and first[2] == 1), (s, first)
            assert c.data[S2C], "server said nothing"


def test_corpus_sha256_and_packet_counts() -> None:
    import hashlib

    need_corpus()
    for path in CAPTURES:
        summary = tshark_summary(path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == summary["sha256"]
        packets, error = read_packets(path)
        if summary["packets"] != "?":
            assert len(packets) == int(summary["packets"]), rel(path)


# --- specific captures --------------------------------------------------------------------------


def test_out_of_order_server_flight_is_reordered() -> None:
    conns = reassemble_file(capture("ja3/ssl-chrome.pcap"))
    (c,) = conns.values()
    records = walk_records(bytes(c.data[S2C]))
    s2c = bytes(c.data[S2C])
    # ServerHello record, then the Certificate (handshake type 11) right after it.
    first_len = records[0][1]
    assert s2c[5] == 2 and s2c[5 + first_len + 5] == 11
    assert not c.gaps[S2C] and not c.gaps[C2S]
    walk_records(bytes(c.data[C2S]))


def test_client_hello_over_many_segments() -> None:
    path = capture("suricata-verify/tls-client-hello-frag-01_mtu300.pcap")
    segs = segments_of(read_packets(path)[0])
    (c,) = reassemble(segs).values()
    c2s = bytes(c.data[C2S])
    hello_len = int.from_bytes(c2s[3:5], "big")
    carrying = [s for s in segs if s.src == c.opened.client and s.payload]
    # The hello really is split: 248 + 248 + 21 bytes on the wire.
    assert [len(s.payload) for s in carrying[:3]] == [248, 248, 21] and hello_len + 5 == 517
    assert c2s[5] == 1 and "www.google.com".encode() in c2s[:hello_len + 5]
    walk_records(c2s)
    walk_records(bytes(c.data[S2C]))


def test_damaged_capture_gives_packets_then_error() -> None:
    path = capture("suricata-verify/tls_DER-incomplete-header.pcap")
    packets, error = read_packets(path)
    assert isinstance(error, CaptureFormatError) and error.offset is not None
    assert "4325376" in str(error)
    assert len(packets) == 6  # tshark shows the same six before giving up
    (c,) = reassemble(segments_of(packets)).values()
    # The connection did not end on the wire: the capture did.
    assert c.closed == {C2S: "end", S2C: "end"}
    assert walk_records(bytes(c.data[S2C]))[0][0] == 22


def test_ipv6_capture() -> None:
    (c,) = reassemble_file(capture("zeek/certificate-request-failed.pcap")).values()
    assert c.opened.client == ("fd42:496a:d659:bb85::1", 52464)
    assert str(c.opened.conn) == ("[fd42:496a:d659:bb85::1]:52464 -> "
                                  "[fd42:496a:d659:bb85:216:3eff:fe6a:a257]:3000 #0")
    walk_records(bytes(c.data[C2S]))


@pytest.mark.parametrize("name", ["hotplace/tls12-renegotiation.pcapng",
                                  "hotplace/tls12-no-renegotiation.pcapng",
                                  "hotplace/tls13-handshake-failure.pcapng",
                                  "wireshark-notes/tls-null.pcapng",
                                  "wireshark-notes/ssl3-dump.pcapng"])
def test_pcapng_captures(name: str) -> None:
    path = capture(name)
    conns = reassemble_file(path)
    assert len(with_payload(conns)) == len(tshark_summary(path)["streams"])
    for c in conns.values():
        if c.data[C2S]:
            walk_records(bytes(c.data[C2S]))
            walk_records(bytes(c.data[S2C]))


def test_pcapng_with_59_connections_kept_apart() -> None:
    conns = reassemble_file(capture("ja4/tls-handshake.pcapng"))
    assert len(conns) == 59
    assert len({c.opened.client for c in conns.values()}) == 59
    assert sorted(k.index for k in conns) == list(range(59))
    for c in conns.values():
        assert c.data[C2S][:1] == b"\x16" and c.data[C2S][5] == 1


def test_mid_stream_connection_is_flagged_as_guess() -> None:
    conns = reassemble_file(capture("zeek/tls13-ech.pcap"))
    bases = sorted(c.opened.basis for c in conns.values())
    assert bases == ["port", "syn", "syn"]


def test_missing_syn_decided_by_client_hello() -> None:
    segs = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    reference = with_payload(reassemble(segs))
    headless = [s for s in segs if not s.syn]
    # Put the server's first packet first, so that "first sender" would be the wrong answer.
    first_server = next(i for i, s in enumerate(headless) if s.payload and s.src[1] == 443)
    headless.insert(0, headless.pop(first_server))
    (c,) = with_payload(reassemble(headless)).values()
    assert c.opened.basis == "server_hello" and not c.opened.syn_seen
    (ref,) = reference.values()
    assert (c.opened.client, c.opened.server) == (ref.opened.client, ref.opened.server)
    headless = [s for s in segs if not s.syn]
    (c,) = with_payload(reassemble(headless)).values()
    assert c.opened.basis == "client_hello"
    assert c.data == ref.data


# --- cross-check with tshark's own stream reassembly --------------------------------------------

FOLLOW = ["ja3/ssl-chrome.pcap", "suricata-verify/tls-client-hello-frag-01_mtu300.pcap",
          "zeek/ssl.v3.pcap", "zeek/certificate-request-failed.pcap", "ja4/tls-handshake.pcapng",
          "zeek/tls-fragmented-handshake.pcap", "hotplace/tls12-renegotiation.pcapng",
          "zeek/heartbleed-encrypted-success.pcap"]


def tshark_follow(path: Path, nstreams: int) -> dict[tuple, bytes]:
    args = ["tshark", "-r", str(path), "-q", "-o", "tcp.reassemble_out_of_order:TRUE"]
    for i in range(nstreams):
        args += ["-z", f"follow,tcp,raw,{i}"]
    text = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    out: dict[tuple, bytes] = {}
    for block in text.split("Follow: tcp,raw")[1:]:
        lines = block.splitlines()
        nodes = [endpoint(line.split(": ", 1)[1]) for line in lines if line.startswith("Node ")]
        if len(nodes) != 2 or nodes[0][1] == 0:
            continue
        chunks = {0: bytearray(), 1: bytearray()}
        for line in lines:
            if line and all(ch in "0123456789abcdef\t" for ch in line):
                chunks[1 if line.startswith("\t") else 0] += bytes.fromhex(line.strip())
        out[(nodes[0], nodes[1])] = bytes(chunks[0])
        out[(nodes[1], nodes[0])] = bytes(chunks[1])
    return out


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("name", FOLLOW)
def test_streams_equal_tshark_follow(name: str) -> None:
    path = capture(name)
    conns = reassemble_file(path)
    theirs = tshark_follow(path, len(conns) + 2)
    compared = 0
    for c in conns.values():
        cl, sv = c.opened.client, c.opened.server
        if (cl, sv) in theirs:
            assert bytes(c.data[C2S]) == theirs[(cl, sv)], c.opened.conn
            assert bytes(c.data[S2C]) == theirs[(sv, cl)], c.opened.conn
            compared += 1
    assert compared == len(conns)


# --- container variants: byte orders, resolutions, link types ---------------------------------


def pack_pcap(packets: list[RawPacket], *, endian: str = "<", nano: bool = False) -> bytes:
    out = bytearray(struct.pack(endian + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0,
                                262144, packets[0].linktype))
    div = 10**9 if nano else 10**6
    for p in packets:
        ticks = round(p.timestamp * div)
        out += struct.pack(endian + "IIII", ticks // div, ticks % div, len(p.data), p.origlen) + p.data
    return bytes(out)


def pcapng_block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    size = len(body) + 12
    return struct.pack(endian + "II", btype, size) + body + struct.pack(endian + "I", size)


def pack_pcapng(packets: list[RawPacket], *, endian: str = "<", tsresol: int = 6,
                simple: bool = False, obsolete: bool = False) -> bytes:
    e = endian
    out = bytearray(pcapng_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    # An unknown block before the interface must be skipped.
    out += pcapng_block(e, 0x0BAD, b"ignored")
    opts = struct.pack(e + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0" + struct.pack(e + "HH", 0, 0)
    out += pcapng_block(e, 1, struct.pack(e + "HHI", packets[0].linktype, 0, 0) + opts)
    div = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol
    for p in packets:
        ticks = round(p.timestamp * div)
        if simple:
            out += pcapng_block(e, 3, struct.pack(e + "I", p.origlen) + p.data)
        elif obsolete:
            out += pcapng_block(e, 2, struct.pack(e + "HHIIII", 0, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                                  len(p.data), p.origlen) + p.data)
        else:
            out += pcapng_block(e, 6, struct.pack(e + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                                  len(p.data), p.origlen) + p.data)
    return bytes(out)


def feed_all(data: bytes, splits: list[int] | None = None) -> tuple[list[RawPacket], str | None]:
    reader = CaptureReader()
    out: list[RawPacket] = []
    cuts = sorted(set(splits or [])) + [len(data)]
    prev = 0
    try:
        for cut in cuts:
            out += reader.feed(data[prev:cut])
            prev = cut
        reader.close()
    except CaptureFormatError as exc:
        return out, str(exc)
    return out, None


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("variant", ["pcap-usec", "pcap-nsec", "pcapng-usec", "pcapng-nsec",
                                     "pcapng-binary", "pcapng-obsolete"])
def test_container_variants_give_same_packets(endian: str, variant: str) -> None:
    original, _ = read_packets(capture("ja3/ssl-chrome.pcap"))
    if variant.startswith("pcap-"):
        blob = pack_pcap(original, endian=endian, nano=variant.endswith("nsec"))
    else:
        tsresol = {"pcapng-nsec": 9, "pcapng-binary": 0x80 | 20}.get(variant, 6)
        blob = pack_pcapng(original, endian=endian, tsresol=tsresol, obsolete=variant.endswith("obsolete"))
    packets, error = feed_all(blob)
    assert error is None
    assert [p.data for p in packets] == [p.data for p in original]
    assert all(abs(a.timestamp - b.timestamp) < 2e-6 for a, b in zip(packets, original, strict=True))
    assert reassemble(segments_of(packets)).keys() == reassemble(segments_of(original)).keys()


def test_simple_packet_blocks() -> None:
    original, _ = read_packets(capture("zeek/tls1.2.pcap"))
    packets, error = feed_all(pack_pcapng(original, simple=True))
    assert error is None and [p.data for p in packets] == [p.data for p in original]


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap not installed")
@pytest.mark.parametrize("fmt", ["nsecpcap", "pcapng", "modpcap"])
def test_editcap_conversions(tmp_path: Path, fmt: str) -> None:
    src = capture("ja3/ssl-curl.pcap")
    dst = tmp_path / f"out.{fmt}"
    subprocess.run(["editcap", "-F", fmt, str(src), str(dst)], check=True, capture_output=True)
    theirs, error = read_packets(dst)
    ours, _ = read_packets(src)
    assert error is None
    assert [p.data for p in theirs] == [p.data for p in ours]
    assert all(abs(a.timestamp - b.timestamp) < 2e-6 for a, b in zip(theirs, ours, strict=True))


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap not installed")
def test_snaplen_truncated_capture(tmp_path: Path) -> None:
    src = capture("zeek/tls1.2.pcap")
    dst = tmp_path / "short.pcap"
    subprocess.run(["editcap", "-s", "200", str(src), str(dst)], check=True, capture_output=True)
    packets, error = read_packets(dst)
    assert error is None and any(p.truncated for p in packets)
    segs = segments_of(packets)
    assert any(s.truncated and s.length > len(s.payload) for s in segs)
    (c,) = reassemble(segs).values()
    (ref,) = reassemble_file(src).values()
    for d in (C2S, S2C):
        # Every byte is either delivered or declared missing, and what is delivered is right.
        gaps = sum(n for _, n in c.gaps[d])
        assert len(c.data[d]) + gaps == len(ref.data[d])
        assert c.data[d][:100] == ref.data[d][:100]
    assert c.gaps[S2C]


def eth_to(linktype: int, frame: bytes) -> bytes:
    """Re-wrap an Ethernet frame's IP packet in another link-layer header."""
    etype = frame[12:14]
    l3 = frame[14:]
    v6 = etype == b"\x86\xdd"
    if linktype == 113:
        return struct.pack("!HHH8s", 0, 1, 6, frame[6:12]) + etype + l3
    if linktype == 276:
        return etype + b"\0\0" + struct.pack("!IHBB8s", 2, 1, 0, 6, frame[6:12]) + l3
    if linktype in (101, 12, 14, 228, 229):
        return l3
    if linktype == 0:
        return struct.pack("<I", 30 if v6 else 2) + l3
    if linktype == 108:
        return struct.pack(">I", 24 if v6 else 2) + l3
    if linktype == 1:  # 802.1ad outer tag + 802.1Q inner tag
        return frame[:12] + b"\x88\xa8\x00\x05\x81\x00\x00\x07" + frame[12:]
    raise AssertionError(linktype)


@pytest.mark.parametrize("linktype", [113, 276, 101, 12, 14, 228, 0, 108, 1])
@pytest.mark.parametrize("name", ["ja3/ssl-chrome.pcap", "suricata-verify/tls-certs-alert.pcap"])
def test_link_types(linktype: int, name: str) -> None:
    original, _ = read_packets(capture(name))
    assert all(p.linktype == 1 for p in original)
    ip6 = any(p.data[12:14] == b"\x86\xdd" for p in original)
    lt = 229 if linktype == 228 and ip6 else linktype
    moved = [replace(p, linktype=lt, data=eth_to(lt, p.data), caplen=0, origlen=0) for p in original]
    dec_a, dec_b = PacketDecoder(), PacketDecoder()
    a = [dec_a.decode(p) for p in original]
    b = [dec_b.decode(p) for p in moved]
    assert a == b and any(s is not None for s in b)


def test_null_and_raw_linktypes_in_corpus() -> None:
    (c,) = reassemble_file(capture("illustrated/illustrated-tls13.pcap")).values()  # linktype 0
    assert b"ping" not in c.data[C2S] and walk_records(bytes(c.data[C2S]))
    (c,) = reassemble_file(capture("suricata-verify/tls-pre-1970.pcap")).values()  # linktype 101
    assert walk_records(bytes(c.data[S2C]))


def test_tcp_options_and_flags() -> None:
    segs = segments_of(read_packets(capture("ja3/ssl-chrome.pcap"))[0])
    syn = segs[0]
    assert syn.syn and not syn.has_ack and syn.flag_names == "SYN"
    kinds = [k for k, _ in parse_tcp_options(syn.options)]
    assert 2 in kinds  # MSS
    (mss,) = [v for k, v in parse_tcp_options(syn.options) if k == 2]
    assert 500 <= int.from_bytes(mss, "big") <= 65535
    assert segs[1].syn and segs[1].has_ack


def test_ip_fragments_are_skipped_or_marked() -> None:
    original, _ = read_packets(capture("ja3/ssl-chrome.pcap"))
    big = next(p for p in original if len(p.data) > 1000)
    seg = PacketDecoder().decode(big)
    assert seg is not None and not seg.truncated
    # Same frame, flagged as a first fragment (MF) and as a later fragment (offset 185*8).
    first = bytearray(big.data)
    first[20:22] = b"\x20\x00"
    later = bytearray(big.data)
    later[20:22] = b"\x00\xb9"
    dec = PacketDecoder()
    s1 = dec.decode(replace(big, data=bytes(first)))
    assert s1 is not None and s1.truncated and s1.payload == seg.payload
    assert dec.decode(replace(big, data=bytes(later))) is None
    assert dec.stats.fragments == 2


def test_truncated_frames_never_raise() -> None:
    original, _ = read_packets(capture("suricata-verify/tls-certs-alert.pcap"))  # IPv6
    dec = PacketDecoder()
    for p in original[:8]:
        for cut in range(len(p.data) + 1):
            seg = dec.decode(replace(p, data=p.data[:cut], caplen=cut))
            if seg is not None:
                assert seg.length >= len(seg.payload)
                assert seg.truncated or seg.length == len(seg.payload)


# --- reassembly behaviours on real streams ------------------------------------------------------


def shifted(segs: list[TcpSegment], delta: int) -> list[TcpSegment]:
    def fix(s: TcpSegment) -> TcpSegment:
        ack = (s.ack + delta) & 0xFFFFFFFF if s.has_ack else s.ack
        return replace(s, seq=(s.seq + delta) & 0xFFFFFFFF, ack=ack)
    return [fix(s) for s in segs]


def streams(conns: dict[ConnKey, Conn]) -> list[tuple]:
    return [(c.opened.client, bytes(c.data[C2S]), bytes(c.data[S2C]), c.closed)
            for c in sorted(conns.values(), key=lambda c: c.opened.conn.index)]


def test_sequence_wraparound() -> None:
    segs = segments_of(read_packets(capture("zeek/tls-1.2-stream-keylog.pcap"))[0])
    ref = streams(reassemble(segs))
    c2s_isn = segs[0].seq
    # Put the client's ISN 20 kB below the wrap, so that its stream wraps in the middle.
    wrapped = shifted(segs, (0x100000000 - 20000 - c2s_isn))
    assert streams(reassemble(wrapped)) == ref
    assert len(ref[0][1]) > 20000 or len(ref[0][2]) > 20000


def test_connection_reuse_of_same_four_tuple() -> None:
    segs = segments_of(read_packets(capture("ja3/ssl-curl.pcap"))[0])
    later = [replace(s, timestamp=s.timestamp + 10) for s in segs]
    conns = reassemble(segs + later)
    assert [k.index for k in conns] == [0, 1]
    a, b = streams(conns)
    assert a == b and a[1]
    assert str(next(iter(conns))) == "192.168.1.121:54169 -> 172.217.6.78:443 #0"


def test_interleaved_connections_are_not_conflated() -> None:
    one = segments_of(read_packets(capture("zeek/tls-expired-cert.pcap"))[0])
    two = segments_of(read_packets(capture("ja3/ssl-chrome.pcap"))[0])
    three = segments_of(read_packets(capture("zeek/ssl.v3.pcap"))[0])
    rng = random.Random(7)
    sources = [list(one), list(two), list(three)]
    merged: list[TcpSegment] = []
    while any(sources):
        src = rng.choice([s for s in sources if s])
        merged.append(src.pop(0))
    expected = sorted(streams(reassemble(one)) + streams(reassemble(two)) + streams(reassemble(three)))
    assert sorted(streams(reassemble(merged))) == expected


def test_keepalive_probes_are_ignored() -> None:
    segs = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    ref = reassemble(segs)
    # After each client data segment, a keep-alive: one garbage byte just below the next seq.
    probes: list[TcpSegment] = []
    for s in segs:
        probes.append(s)
        if s.payload and s.src[1] != 443:
            end = (s.seq + len(s.payload) - 1) & 0xFFFFFFFF
            probes.append(replace(s, seq=end, payload=b"\xee", length=1, flags=ACK))
            probes.append(replace(s, seq=end, payload=b"", length=0, flags=ACK))
    conns = reassemble(probes)
    assert streams(conns) == streams(ref)
    assert all(c.conflicts == 0 for c in conns.values())


def test_differing_retransmission_is_reported_first_copy_wins() -> None:
    segs = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    ref = reassemble(segs)
    i = next(i for i, s in enumerate(segs) if len(s.payload) > 100 and s.src[1] != 443)
    bad = replace(segs[i], payload=bytes(len(segs[i].payload)))
    conns = reassemble(segs[:i + 1] + [bad] + segs[i + 1:])
    assert streams(conns) == streams(ref)
    (c,) = conns.values()
    assert c.conflicts == 1


def test_hole_beyond_buffer_bound_becomes_gap() -> None:
    # Bulk bytes of a real connection, but a lost segment and > 4 MiB sent after it.
    segs = segments_of(read_packets(capture("zeek/tls-1.2-stream-keylog.pcap"))[0])
    syn, synack = segs[0], segs[1]
    isn = syn.seq
    mk = lambda off, data: replace(syn, seq=(isn + 1 + off) & 0xFFFFFFFF, payload=data,
                                   length=len(data), flags=ACK | PSH)
    chunk = bytes(range(256)) * 4
    total = MAX_OUT_OF_ORDER + 64 * 1024
    feed = [syn, synack, mk(0, chunk)] + [mk(off, chunk) for off in range(2 * 1024, total, 1024)]
    r = TcpReassembler()
    events = [e for s in feed for e in r.feed(s)]
    gaps = [e for e in events if isinstance(e, StreamGap)]
    assert len(gaps) == 1 and gaps[0].length == 1024 and gaps[0].offset == 1024
    assert r.stats.gap_bytes == 1024
    data = [e for e in events if isinstance(e, StreamData)]
    assert sum(len(e.data) for e in data) == total - 1024
    r.finish()


def test_rst_ends_the_senders_direction_at_once() -> None:
    segs = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    cut = next(i for i, s in enumerate(segs) if s.payload and s.src[1] == 443)
    rst = replace(segs[cut], flags=0x04 | ACK, payload=b"", length=0)
    r = TcpReassembler()
    events = [e for s in segs[:cut] + [rst] + segs[cut:] for e in r.feed(s)] + r.finish()
    closed = [e for e in events if isinstance(e, StreamClosed)]
    assert (closed[0].direction, closed[0].how, closed[0].by) == (S2C, "rst", "server")
    assert closed[0].offset == 0  # the server had sent nothing before its reset
    assert isinstance(events[-1], ConnectionFinished)
    assert r.stats.late_segments > 0  # the server's segments after its reset are not data


def test_bytes_in_flight_after_a_reset_are_kept() -> None:
    # The client resets while the server's heartbeat leak is still arriving (zeek's capture).
    path = capture("zeek/heartbleed-encrypted-success.pcap")
    (c,) = reassemble_file(path).values()
    assert c.closed == {C2S: "fin", S2C: "rst"}
    records = walk_records(bytes(c.data[S2C]), partial_last=True)
    # tshark follows 55987 bytes too; the leak is in heartbeat records after the reset.
    assert [t for t, _ in records].count(24) >= 3 and len(c.data[S2C]) == 55987


def test_reset_grace_period_ends() -> None:
    segs = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    cut = next(i for i, s in enumerate(segs) if s.payload and s.src[1] == 443)
    rst = replace(segs[cut - 1], flags=0x04, payload=b"", length=0, ack=0)
    assert rst.src[1] != 443
    late = [replace(s, timestamp=s.timestamp + 60) for s in segs[cut:] if s.src[1] == 443]
    r = TcpReassembler()
    events = [e for s in segs[:cut] + [rst] + late for e in r.feed(s)]
    closed = [(e.direction, e.how, e.by) for e in events if isinstance(e, StreamClosed)]
    assert closed == [(C2S, "rst", "client"), (S2C, "rst", "client")]
    assert isinstance(events[-1], ConnectionFinished) and r.open_connections == 0
    assert not any(isinstance(e, StreamData) and e.direction is S2C for e in events)
    assert r.stats.late_segments == len(late)
    assert r.finish() == []


def test_fin_waits_for_missing_data() -> None:
    segs = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    ref = reassemble(segs)
    fins = [s for s in segs if s.fin]
    rest = [s for s in segs if not s.fin]
    # Deliver the FINs before the last data segments: closing must wait for them.
    last_data = max(i for i, s in enumerate(rest) if s.payload)
    reordered = rest[:last_data] + fins + rest[last_data:]
    conns = reassemble(reordered)
    assert streams(conns) == streams(ref)
    assert all(how == "fin" for how in next(iter(conns.values())).closed.values())
    closes = [e for e in TcpReassembler().feed(reordered[0]) if isinstance(e, StreamClosed)]
    assert closes == []
    r = TcpReassembler()
    closes = [e for s in reordered for e in r.feed(s) if isinstance(e, StreamClosed)]
    assert sorted((e.direction.sender, e.by) for e in closes) == [("client", "client"), ("server", "server")]


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=1, max_size=3000),
       isn=st.sampled_from([0, 12345, 0xFFFFFFFF - 700, 0xFFFFFFFF]),
       seed=st.integers(0, 2**32), dup_rate=st.floats(0, 1), fin=st.booleans())
def test_shuffled_duplicated_overlapping_segments_reassemble(data: bytes, isn: int, seed: int,
                                                             dup_rate: float, fin: bool) -> None:
    rng = random.Random(seed)
    client, server = ("10.0.0.1", 50000), ("10.0.0.2", 443)
    ncuts = min(len(data) - 1, rng.randint(0, 20))
    cuts = sorted(rng.sample(range(1, len(data)), ncuts)) if ncuts > 0 else []
    bounds = list(zip([0] + cuts, cuts + [len(data)]))
    pieces = [(a, b) for a, b in bounds]
    # Duplicates and overlapping re-sends of random ranges.
    for _ in range(int(dup_rate * 10)):
        a = rng.randrange(len(data))
        pieces.append((a, rng.randint(a + 1, len(data))))
    rng.shuffle(pieces)

    def seg(a: int, b: int, flags: int = ACK) -> TcpSegment:
        return TcpSegment(src=client, dst=server, seq=(isn + 1 + a) & 0xFFFFFFFF, ack=1, flags=flags,
                          window=65535, payload=data[a:b], length=b - a, timestamp=float(a))

    feed = [TcpSegment(src=client, dst=server, seq=isn, ack=0, flags=SYN, window=65535, payload=b"",
                       length=0, timestamp=0.0)]
    feed += [seg(a, b) for a, b in pieces]
    if fin:
        feed.insert(rng.randint(1, len(feed)), seg(len(data), len(data), ACK | FIN))
    (c,) = reassemble(feed).values()
    assert bytes(c.data[C2S]) == data
    assert not c.gaps[C2S] and c.conflicts == 0
    assert c.closed[C2S] == ("fin" if fin else "end")
    assert c.opened.basis == "syn"


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=2, max_size=800), seed=st.integers(0, 2**32))
def test_first_copy_wins_against_differing_copies(data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    client, server = ("10.0.0.1", 50000), ("10.0.0.2", 443)
    sends = []
    for _ in range(rng.randint(1, 12)):
        a = rng.randrange(len(data))
        b = rng.randint(a + 1, len(data))
        version = bytes(x ^ rng.choice((0, 0, 0xFF)) for x in data[a:b])
        sends.append((a, version))
    sends.append((0, data))  # make sure everything is covered at least once
    model: list[int | None] = [None] * len(data)
    for a, chunk in sends:
        for i, x in enumerate(chunk):
            if model[a + i] is None:
                model[a + i] = x
    feed = [TcpSegment(src=client, dst=server, seq=1000, ack=0, flags=SYN, window=1, payload=b"",
                       length=0, timestamp=0.0)]
    feed += [TcpSegment(src=client, dst=server, seq=1001 + a, ack=1, flags=ACK, window=1,
                        payload=chunk, length=len(chunk), timestamp=1.0) for a, chunk in sends]
    (c,) = reassemble(feed).values()
    assert bytes(c.data[C2S]) == bytes(model)  # type: ignore[arg-type]


def corpus_bytes(name: str) -> bytes:
    return capture(name).read_bytes()


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["ja3/ssl-chrome.pcap", "hotplace/tls13-handshake-failure.pcapng",
                             "wireshark-notes/tls-null.pcapng",
                             "suricata-verify/tls_DER-incomplete-header.pcap"]),
       splits=st.lists(st.integers(0, 20000), max_size=30))
def test_any_chunking_gives_the_same_packets(name: str, splits: list[int]) -> None:
    blob = corpus_bytes(name)
    assert feed_all(blob, splits) == feed_all(blob)


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=400),
       prefix=st.sampled_from([b"", b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(16), b"\x0a\x0d\x0d\x0a",
                               b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a", b"\xa1\xb2\x3c\x4d"]))
def test_random_bytes_only_raise_capture_format_error(junk: bytes, prefix: bytes) -> None:
    packets, _error = feed_all(prefix + junk, [len(prefix)])
    dec = PacketDecoder()
    for p in packets:
        dec.decode(p)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(["ja3/ssl-chrome.pcap", "wireshark-notes/tls-null.pcapng",
                             "zeek/certificate-request-failed.pcap"]),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.integers(0, 10**6))
def test_damaged_real_captures_never_crash(name: str, flips: list[tuple[int, int]], cut: int) -> None:
    blob = bytearray(corpus_bytes(name))
    for pos, val in flips:
        blob[pos % len(blob)] = val
    blob = blob[:max(1, cut % (len(blob) + 1))]
    packets, _error = feed_all(bytes(blob))
    segs = [s for s in map(PacketDecoder().decode, packets) if s is not None]
    reassemble(segs)


def test_reader_errors() -> None:
    with pytest.raises(CaptureFormatError):
        CaptureReader().feed(b"GET / HTTP/1.1\r\n")
    r = CaptureReader()
    assert r.feed(b"\xd4\xc3") == []
    with pytest.raises(CaptureFormatError, match="too short"):
        r.close()
    blob = corpus_bytes("ja3/ssl-chrome.pcap")
    r = CaptureReader()
    packets = r.feed(blob[:-10])
    assert len(packets) == 14
    with pytest.raises(CaptureFormatError, match="cut short"):
        r.close()


def test_headless_sslv2_hello_decides_client() -> None:
    segs = [s for s in segments_of(read_packets(capture("zeek/ssl-v2.pcap"))[0]) if not s.syn]
    (c,) = with_payload(reassemble(segs)).values()
    assert c.opened.basis == "client_hello" and c.opened.server[1] == 443
    assert c.data[C2S][0] & 0x80 and c.data[C2S][2] == 1  # SSL 2.0 CLIENT-HELLO


def test_finished_connections_are_dropped_while_feeding() -> None:
    segs = segments_of(read_packets(capture("zeek/missing-intermediate.pcap"))[0])
    r = TcpReassembler()
    peak = 0
    finished = 0
    for s in segs:
        finished += sum(isinstance(e, ConnectionFinished) for e in r.feed(s))
        peak = max(peak, r.open_connections)
    assert finished == 3 and r.open_connections == 0 and peak <= 2
    assert r.finish() == []


def test_idle_connections_are_closed() -> None:
    one = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    two = segments_of(read_packets(capture("ja3/ssl-curl.pcap"))[0])
    # The first connection stops half-way (no FIN/RST); the second starts an hour later.
    half = [s for s in one if not s.fin][:8]
    base = max(s.timestamp for s in half) + 3600
    later = [replace(s, timestamp=base + s.timestamp - two[0].timestamp) for s in two]
    r = TcpReassembler(idle_timeout=600)
    events = [e for s in half + later for e in r.feed(s)]
    closed = [e for e in events if isinstance(e, StreamClosed)]
    assert {e.how for e in closed[:2]} == {"idle"} and closed[0].conn.index == 0
    assert r.open_connections <= 1
    r.finish()


# --- fast paths agree with the general code --------------------------------------------------------


def _mutations(frame: bytes, rng: random.Random) -> list[bytes]:
    """The frame, cut short, and with header bytes (link, IP, TCP) overwritten by telling values."""
    out = [frame, frame[:rng.randrange(len(frame) + 1)]]
    for _ in range(6):
        b = bytearray(frame)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(min(len(b), 80))] = rng.choice(
                (0, 1, 2, 5, 6, 0x11, 0x20, 0x40, 0x45, 0x46, 0x4F, 0x50, 0x60, 0x86, 0xDD, 0x08, 0xFF))
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("linktype", [1, 113, 276, 0, 108, 101])
def test_decode_fast_path_matches_general_decoding(linktype: int) -> None:
    """``decode`` handles plain Ethernet/cooked/loopback IPv4 and IPv6 TCP frames itself; every
    frame (and every damaged variant of one) must decode exactly as ``decode_frame`` does."""
    rng = random.Random(linktype)
    fast, general = PacketDecoder(), PacketDecoder()
    fast_hits = 0
    for name in ("ja3/ssl-chrome.pcap", "suricata-verify/tls-certs-alert.pcap", "zeek/tls1.2.pcap"):
        original, _ = read_packets(capture(name))
        for p in original:
            data = p.data if linktype == 1 else eth_to(linktype, p.data)
            for frame in _mutations(data, rng):
                for caplen, origlen in ((len(frame), len(frame)), (len(frame), len(frame) + 9)):
                    raw = replace(p, linktype=linktype, data=frame, caplen=caplen, origlen=origlen)
                    seg = fast.decode(raw)
                    assert seg == general.decode_frame(linktype, frame, raw.timestamp, raw.truncated)
                    fast_hits += seg is not None and not seg.truncated
    assert fast.stats == general.stats
    assert fast_hits > 100


@pytest.mark.parametrize("name", ["ja3/ssl-chrome.pcap", "hotplace/tls13-handshake-failure.pcapng"])
def test_feeding_one_byte_at_a_time_gives_the_same_packets(name: str) -> None:
    # The reader waits for a whole record before parsing again; a trickle must not change a thing.
    blob = corpus_bytes(name)
    reader = CaptureReader()
    packets = [p for i in range(len(blob)) for p in reader.feed(blob[i:i + 1])]
    reader.close()
    assert packets == feed_all(blob)[0] and packets
    assert reader.packets == len(packets)


def test_reset_grace_periods_end_in_the_order_of_the_resets() -> None:
    """Grace periods that are due together end in the order the resets came, even when capture
    time went backwards in between (merged captures do that)."""
    segs = segments_of(read_packets(capture("zeek/tls1.2.pcap"))[0])
    cut = next(i for i, s in enumerate(segs) if s.payload and s.src[1] == 443)
    start = segs[0].timestamp
    r = TcpReassembler()
    events: list = []
    for n, at in enumerate((start + 3.0, start + 1.0, start + 2.0)):  # the second reset is "earlier"
        port = 40000 + n
        moved = [replace(s, timestamp=at, src=("10.9.9.9", port) if s.src[1] != 443 else s.src,
                         dst=("10.9.9.9", port) if s.dst[1] != 443 else s.dst) for s in segs[:cut]]
        client = moved[cut - 1].src if moved[cut - 1].src[1] == port else moved[cut - 1].dst
        server = moved[cut - 1].dst if client == moved[cut - 1].src else moved[cut - 1].src
        rst = replace(moved[cut - 1], src=client, dst=server, flags=0x04, payload=b"", length=0, ack=0)
        events += [e for s in moved + [rst] for e in r.feed(s)]
    assert r.open_connections == 3
    tick = replace(segs[0], src=("10.8.8.8", 1), dst=("10.8.8.9", 2), flags=ACK, timestamp=start + 60)
    later = r.feed(tick)
    finished = [e.conn.client[1] for e in later if isinstance(e, ConnectionFinished)]
    assert finished == [40000, 40001, 40002]
    assert r.open_connections == 1  # the ACK's own, which nothing decided yet


# -- the capture front end: batches decoded as they are read, against one packet at a time ------


@pytest.mark.parametrize("name", ["ja4/tls-handshake.pcapng", "suricata-verify/tls_DER-incomplete-header.pcap",
                                  "zeek/smtp-starttls.pcap"])
def test_analyze_capture_makes_the_same_calls_as_feeding_packets_one_by_one(name: str) -> None:
    """analyze_capture's batch loop against CaptureAnalysis.packet with RawPackets."""
    from tlsproxy.frontends.capture import CaptureAnalysis, analyze_capture

    path = capture(name)
    fast = RecordingPipeline()
    stats = analyze_capture(path, fast)
    slow = RecordingPipeline()
    analysis = CaptureAnalysis(slow)
    packets, error = read_packets(path)
    for raw in packets:
        analysis.packet(raw)
    if error is not None:
        analysis.stats.error = str(error)
    assert analysis.finish() == stats
    assert fast.calls == slow.calls
    assert any(c[0] == "data" for c in fast.calls) and stats.analysed


def test_conn_key_hash_agrees_with_equality() -> None:
    a = ConnKey(client=("10.0.0.1", 40000), server=("10.0.0.2", 443), index=7)
    b = ConnKey(client=("10.0.0.1", 40000), server=("10.0.0.2", 443), index=7)
    c = ConnKey(client=("10.0.0.3", 40000), server=("10.0.0.2", 443), index=7)
    assert a == b and hash(a) == hash(b) and len({a, b, c}) == 2
