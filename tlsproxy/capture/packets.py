"""Link, IP and TCP header decoding: one captured frame in, one ``TcpSegment`` (or ``None``) out.

Only what TCP reassembly needs is decoded.  Link types: Ethernet with any number of 802.1Q/802.1ad
tags (1), Linux cooked capture v1 and v2 (113, 276), raw IP (101, and the platform-specific DLT_RAW
values 12 and 14, plus 228/229), BSD loopback/null (0, 108).  IPv4 with options; fragments other
than the first are skipped (no IP reassembly: TCP over fragmented IP is rare and mostly an attack);
IPv6 with extension headers skipped.  Anything that is not TCP gives ``None``.

Nothing here raises on short input: a frame whose TCP header was captured but not all of its
payload (snaplen, or a first IP fragment) gives a segment with ``truncated=True`` whose
``length`` is the payload length the IP header announced; a frame too short to hold the TCP header
gives ``None`` and is counted in ``PacketDecoder.stats``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from tlsproxy.capture.pcap import CaptureReader, RawPacket
from tlsproxy.fastbuild import frozen_builder, remember

__all__ = ["TcpSegment", "SegmentRecord", "SegmentFields", "PacketDecoder", "FieldsDecoder",
           "SegmentReader", "DecodeStats", "parse_tcp_options", "format_endpoint",
           "FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"]

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

_FLAG_NAMES = ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"), (URG, "URG"),
               (ECE, "ECE"), (CWR, "CWR"))


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpSegment:
    """One TCP segment as captured.

    ``payload`` holds the captured payload bytes; ``length`` is the payload length on the wire
    (from the IP header).  They differ only when ``truncated`` is set.  ``options`` is the raw
    option bytes (see ``parse_tcp_options``).
    """

    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes
    length: int
    timestamp: float
    truncated: bool = False
    options: bytes = b""

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def psh(self) -> bool:
        return bool(self.flags & PSH)

    @property
    def has_ack(self) -> bool:
        """The ACK flag (named so as not to clash with the ``ack`` number)."""
        return bool(self.flags & ACK)

    @property
    def flag_names(self) -> str:
        return ",".join(name for bit, name in _FLAG_NAMES if self.flags & bit) or "none"


class SegmentRecord:
    """A ``TcpSegment``'s fields in a plain slotted class, for the reassembler's general path
    under ``TcpReassembler.feed_fields``.

    Building a frozen dataclass costs one descriptor call per field (eleven here); this one is
    filled by a single ``__init__``.  ``TcpReassembler`` reads only these attributes, so it takes
    either.  Not hashable, not frozen: nobody outside the reassembler ever sees one.
    """

    __slots__ = ("src", "dst", "seq", "ack", "flags", "window", "payload", "length", "timestamp",
                 "truncated", "options")

    def __init__(self, src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int,
                 window: int, payload: bytes, length: int, timestamp: float, truncated: bool,
                 options: bytes) -> None:
        self.src = src
        self.dst = dst
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.length = length
        self.timestamp = timestamp
        self.truncated = truncated
        self.options = options


@dataclass(slots=True)
class DecodeStats:
    """Why frames did not become segments (a capture analyser reports these)."""

    frames: int = 0
    tcp: int = 0
    not_ip: int = 0
    not_tcp: int = 0
    fragments: int = 0
    too_short: int = 0
    unknown_linktype: int = 0
    truncated: int = 0
    linktypes: set[int] = field(default_factory=set)


def format_endpoint(endpoint: tuple[str, int]) -> str:
    """``10.0.0.1:443`` or ``[2001:db8::1]:443``."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_tcp_options(options: bytes) -> list[tuple[int, bytes]]:
    """Split raw TCP options into ``(kind, value)`` pairs; stops quietly at a malformed option."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= n:
            break
        size = options[i + 1]
        if size < 2 or i + size > n:
            break
        out.append((kind, options[i + 2:i + size]))
        i += size
    return out


_segment = frozen_builder(TcpSegment)

_ETH_TYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BxHxxHxB")  # ver_ihl, total length, flags+fragment offset, protocol
_IPV6 = struct.Struct("!4xHBB")  # payload length, next header, hop limit
_TCP = struct.Struct("!HHIIBBH")  # ports, seq, ack, data offset, flags, window
_PORTS = struct.Struct("!HH")
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_VLAN_TAGS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))

# IPv6 extension headers laid out as (next header, length in 8-octet units - 1, ...).
_IPV6_EXT = frozenset((0, 43, 60, 135, 139, 140, 253, 254))
_IPV6_FRAGMENT = 44
_IPV6_AH = 51

# BSD loopback "address family" values for IPv6 differ per OS (Linux 10, NetBSD/OpenBSD 24,
# FreeBSD 28, Darwin 30); IPv4 is 2 everywhere.
_AF_INET6 = frozenset((10, 24, 28, 30))

_LT_NULL, _LT_ETHERNET, _LT_RAW_A, _LT_RAW_B, _LT_RAW, _LT_LOOP = 0, 1, 12, 14, 101, 108
_LT_SLL, _LT_IPV4, _LT_IPV6, _LT_SLL2 = 113, 228, 229, 276


_FastEntry = tuple[int, struct.Struct, frozenset[int | bytes], struct.Struct, frozenset[int | bytes]]


def _fast_entry(link: str, ip_off: int, v4_types: frozenset[int | bytes],
                v6_types: frozenset[int | bytes]) -> _FastEntry:
    """``decode``'s fast path for one link type: the IP header starts at ``ip_off``; ``link`` is
    the struct format of the link header up to its type field, whose values ``v4_types`` and
    ``v6_types`` mean IPv4 and IPv6.  Each struct reads link type field, IP header (IPv4
    without options: ver_ihl, total length, fragment, protocol; IPv6: payload length, next
    header), the addresses and ports together as one bytes key, and the TCP header up to the
    window, in one call."""
    pad = ip_off - struct.calcsize("!" + link)
    v4 = struct.Struct(f"!{link}{pad}xBxHxxHxBxx12sIIBBH")
    v6 = struct.Struct(f"!{link}{pad}x4xHBx36sIIBBH")
    assert v4.size == ip_off + 36 and v6.size == ip_off + 56  # 4 bytes short of the TCP header's end
    return ip_off, v4, v4_types, v6, v6_types


_ETHERTYPES_V4: frozenset[int | bytes] = frozenset((_ETHERTYPE_IPV4,))
_ETHERTYPES_V6: frozenset[int | bytes] = frozenset((_ETHERTYPE_IPV6,))
# Loopback families are compared as raw bytes, which accepts either byte order (as decode_frame does).
_FAST: dict[int, _FastEntry] = {
    _LT_ETHERNET: _fast_entry("12xH", 14, _ETHERTYPES_V4, _ETHERTYPES_V6),
    _LT_SLL: _fast_entry("14xH", 16, _ETHERTYPES_V4, _ETHERTYPES_V6),
    _LT_SLL2: _fast_entry("H", 20, _ETHERTYPES_V4, _ETHERTYPES_V6),
    **dict.fromkeys((_LT_NULL, _LT_LOOP), _fast_entry(
        "4s", 4, frozenset((b"\x02\0\0\0", b"\0\0\0\x02")),
        frozenset(f.to_bytes(4, order) for f in _AF_INET6 for order in ("little", "big")))),
}


class PacketDecoder:
    """Turns ``RawPacket``s into ``TcpSegment``s, keeping counters of what was skipped.

    Address strings are cached per address pair (bounded) because formatting addresses costs
    more than decoding the whole header.
    """

    # A capture of a busy network sees many hosts; beyond this many we start over rather than grow.
    _ADDR_CACHE_MAX = 65_536

    # Makes each segment from TcpSegment's fields, positionally (None: gives the fields tuple).
    _build: Callable[..., TcpSegment] | None = staticmethod(_segment)

    def __init__(self) -> None:
        self.stats = DecodeStats()
        # Raw (source, destination) address bytes -> their strings.  The 8 or 32 key bytes
        # cannot collide between IPv4 and IPv6.
        self._addrs: dict[bytes, tuple[str, str]] = {}
        # The fast path's raw addresses and ports (12 or 36 bytes) -> the two endpoints, so that
        # a packet of a known flow costs one lookup and builds no endpoint tuples.
        self._ends: dict[bytes, tuple[tuple[str, int], tuple[str, int]]] = {}

    def decode(self, packet: RawPacket) -> TcpSegment | None:
        return self.decode_fields(packet.linktype, packet.timestamp, packet.data, packet.caplen, packet.origlen)

    def decode_fields(self, linktype: int, timestamp: float, data: bytes, caplen: int,
                      origlen: int) -> TcpSegment | None:
        """``decode`` of a packet given as its fields."""
        return self.decode_at(linktype, timestamp, data, 0, len(data), caplen < origlen)

    def decode_at(self, linktype: int, timestamp: float, buf: bytes, off: int, end: int,
                  truncated: bool) -> TcpSegment | None:
        """Decode the frame ``buf[off:end]`` without slicing it out first (``SegmentReader`` reads
        straight from the capture's buffer); ``truncated``: the capture cut the frame short."""
        fast = _FAST.get(linktype)
        if fast is not None:
            # The common case in one struct call: link header, IPv4 without options (or IPv6
            # without extension headers) and TCP, neither fragmented nor cut short.  Anything
            # else goes the general way (decode_frame), which gives the same result for these.
            # Offsets below are relative to the frame (``off``), as in decode_frame.
            ip_off, v4, v4_types, v6, v6_types = fast
            n = end - off
            ip_end = n + 1  # where the IP packet ends; past the frame = no fast path
            if n >= ip_off + 40:
                ltype, ver_ihl, total, frag, proto, flow, seq, ack, doff, flags, window = v4.unpack_from(buf, off)
                if ltype in v4_types:
                    if ver_ihl == 0x45 and proto == 6 and not frag & 0x3FFF and total and doff >= 0x50:
                        ip_end = ip_off + total
                        tcp_end = ip_off + 40
                elif ltype in v6_types and n >= ip_off + 60:
                    ltype, plen, nxt, flow, seq, ack, doff, flags, window = v6.unpack_from(buf, off)
                    if nxt == 6 and plen and doff >= 0x50:
                        ip_end = ip_off + 40 + plen
                        tcp_end = ip_off + 60
            if ip_end <= n:
                ends = self._ends.get(flow)
                if ends is None:
                    ends = self._endpoints(flow)
                start = tcp_end - 20 + ((doff >> 4) << 2)
                stats = self.stats
                stats.frames += 1
                stats.tcp += 1
                if start < ip_end:
                    payload = buf[off + start:off + ip_end]
                    length = ip_end - start
                else:
                    payload = b""
                    length = 0
                fields = (ends[0], ends[1], seq, ack, flags, window, payload, length, timestamp, False,
                          buf[off + tcp_end:off + start] if start > tcp_end else b"")
                build = self._build
                return fields if build is None else build(*fields)  # type: ignore[return-value]
        # (A whole bytes object sliced whole is the object itself: no copy for decode_fields.)
        return self.decode_frame(linktype, buf[off:end], timestamp, truncated)

    def decode_frame(self, linktype: int, data: bytes, timestamp: float,
                     truncated: bool = False) -> TcpSegment | None:
        """Decode one frame of the given link type; ``truncated`` says the capture cut it short."""
        stats = self.stats
        stats.frames += 1
        n = len(data)
        if linktype == _LT_ETHERNET:
            if n < 14:
                stats.too_short += 1
                return None
            off = 12
            (etype,) = _ETH_TYPE.unpack_from(data, off)
            while etype in _VLAN_TAGS:
                off += 4
                if n < off + 2:
                    stats.too_short += 1
                    return None
                (etype,) = _ETH_TYPE.unpack_from(data, off)
            off += 2
            if etype == _ETHERTYPE_IPV4:
                version = 4
            elif etype == _ETHERTYPE_IPV6:
                version = 6
            else:
                stats.not_ip += 1
                return None
        elif linktype in (_LT_RAW, _LT_RAW_A, _LT_RAW_B, _LT_IPV4, _LT_IPV6):
            if n < 1:
                stats.too_short += 1
                return None
            off = 0
            version = data[0] >> 4
        elif linktype == _LT_SLL:
            if n < 16:
                stats.too_short += 1
                return None
            (etype,) = _ETH_TYPE.unpack_from(data, 14)
            off = 16
            version = 4 if etype == _ETHERTYPE_IPV4 else 6 if etype == _ETHERTYPE_IPV6 else 0
        elif linktype == _LT_SLL2:
            if n < 20:
                stats.too_short += 1
                return None
            (etype,) = _ETH_TYPE.unpack_from(data, 0)
            off = 20
            version = 4 if etype == _ETHERTYPE_IPV4 else 6 if etype == _ETHERTYPE_IPV6 else 0
        elif linktype in (_LT_NULL, _LT_LOOP):
            if n < 5:
                stats.too_short += 1
                return None
            # The family is in the capturing host's byte order (null) or network order (loop);
            # accept either rather than guess, then fall back on the IP version nibble.
            le = _U32_LE.unpack_from(data, 0)[0]
            be = _U32_BE.unpack_from(data, 0)[0]
            off = 4
            if le == 2 or be == 2:
                version = 4
            elif le in _AF_INET6 or be in _AF_INET6:
                version = 6
            else:
                version = 0
        else:
            stats.unknown_linktype += 1
            stats.linktypes.add(linktype)
            return None

        if version == 4:
            if n < off + 20:
                stats.too_short += 1
                return None
            ver_ihl, total, frag, proto = _IPV4.unpack_from(data, off)
            if ver_ihl >> 4 != 4:
                stats.not_ip += 1
                return None
            if proto != 6:
                stats.not_tcp += 1
                return None
            if frag & 0x1FFF:  # not the first fragment: no TCP header here
                stats.fragments += 1
                return None
            ihl = (ver_ihl & 0x0F) * 4
            if ihl < 20:
                stats.not_ip += 1
                return None
            # More fragments: this one holds only the start of the segment.
            more_fragments = bool(frag & 0x2000)
            if more_fragments:
                stats.fragments += 1
            pair = data[off + 12:off + 20]
            names = self._addrs.get(pair)
            if names is None:
                names = self._names(pair)
            src, dst = names
            ip_end = off + total
            if total == 0:
                # TCP segmentation offload writes 0 here on the sending host; trust the frame
                # (then only the capture's own truncation flag can say bytes are missing).
                ip_end = n
            else:
                truncated = more_fragments
            off += ihl
        elif version == 6:
            if n < off + 40:
                stats.too_short += 1
                return None
            plen, nxt, _hop = _IPV6.unpack_from(data, off)
            pair = data[off + 8:off + 40]
            names = self._addrs.get(pair)
            if names is None:
                names = self._names(pair)
            src, dst = names
            if plen:
                ip_end = off + 40 + plen
                truncated = False  # decided below from the lengths, not from the frame
            else:
                ip_end = n  # 0: jumbogram (or offload); trust the frame
            off += 40
            while nxt != 6:
                if nxt in _IPV6_EXT or nxt == _IPV6_AH or nxt == _IPV6_FRAGMENT:
                    if n < off + 8:
                        stats.too_short += 1
                        return None
                    if nxt == _IPV6_FRAGMENT:
                        frag = (data[off + 2] << 8) | data[off + 3]
                        if frag & 0xFFF8:
                            stats.fragments += 1
                            return None
                        if frag & 1:
                            truncated = True
                            stats.fragments += 1
                        size = 8
                    elif nxt == _IPV6_AH:
                        size = (data[off + 1] + 2) * 4
                    else:
                        size = (data[off + 1] + 1) * 8
                    nxt = data[off]
                    off += size
                else:
                    stats.not_tcp += 1
                    return None
        else:
            stats.not_ip += 1
            return None

        # TCP
        if n < off + 20:
            stats.too_short += 1
            return None
        sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(data, off)
        hlen = (doff >> 4) * 4
        if hlen < 20:
            stats.too_short += 1
            return None
        start = off + hlen
        length = ip_end - start
        if length < 0:
            length = 0
        if ip_end > n:
            # Frame shorter than the IP header says: snaplen cut it (or it is damaged).
            truncated = True
            if start > n:
                # The options were cut short: the payload position is still known, its bytes not.
                payload = b""
                options = data[off + 20:n]
            else:
                payload = data[start:n]
                options = data[off + 20:start] if hlen > 20 else b""
        else:
            # ``ip_end`` trims Ethernet padding and trailers (FCS) off short frames.
            payload = data[start:ip_end] if length else b""
            options = data[off + 20:start] if hlen > 20 else b""
            if len(payload) < length:  # header claims beyond the frame
                truncated = True
        if truncated:
            stats.truncated += 1
        stats.tcp += 1
        fields = ((src, sport), (dst, dport), seq, ack, flags, window, payload, length, timestamp,
                  truncated, options)
        build = self._build
        return fields if build is None else build(*fields)  # type: ignore[return-value]

    def _endpoints(self, flow: bytes) -> tuple[tuple[str, int], tuple[str, int]]:
        """Source and destination endpoints of the fast path's addresses-and-ports key, cached."""
        split = len(flow) - 4
        pair = flow[:split]
        names = self._addrs.get(pair)
        if names is None:
            names = self._names(pair)
        sport, dport = _PORTS.unpack_from(flow, split)
        ends = ((names[0], sport), (names[1], dport))
        remember(self._ends, flow, ends, self._ADDR_CACHE_MAX)
        return ends

    def _names(self, pair: bytes) -> tuple[str, str]:
        """Source and destination address strings of 8 (IPv4) or 32 (IPv6) address bytes, cached."""
        if len(pair) == 8:
            names = (socket.inet_ntoa(pair[:4]), socket.inet_ntoa(pair[4:]))
        else:
            names = (socket.inet_ntop(socket.AF_INET6, pair[:16]),
                     socket.inet_ntop(socket.AF_INET6, pair[16:]))
        remember(self._addrs, pair, names, self._ADDR_CACHE_MAX)
        return names


class FieldsDecoder(PacketDecoder):
    """A ``PacketDecoder`` that gives each segment as ``SegmentFields`` (``TcpSegment``'s fields
    in declaration order), for ``TcpReassembler.feed_fields``.

    A batch of segments stays alive until the front end has fed it all: tuples are the cheapest
    to build and, unlike objects, the garbage collector stops traversing them after one pass.
    """

    _build = None  # the fields tuple as it is


SegmentFields = tuple[tuple[str, int], tuple[str, int], int, int, int, int, bytes, int, float, bool, bytes]
"""A ``TcpSegment``'s fields as a plain tuple, from a ``FieldsDecoder``."""


class SegmentReader(CaptureReader):
    """A capture reader that decodes as it reads: ``feed`` returns, per packet, its segment as
    ``SegmentFields``, or its timestamp (a float) when it carries no TCP segment.

    For the capture front end's per-packet loop.  Frames are decoded straight from the reader's
    buffer (``PacketDecoder.decode_at``): no frame bytes, frame tuple or extra call per packet.
    Same packets, same errors, same secrets as ``CaptureReader``; ``decoder.stats`` counts as
    decoding every ``RawPacket`` would.
    """

    def __init__(self, decoder: FieldsDecoder | None = None) -> None:
        super().__init__()
        self.decoder = decoder if decoder is not None else FieldsDecoder()
        decode_fields = self.decoder.decode_fields

        # The rare records (Simple and obsolete Packet Blocks) come as fields, like any reader's.
        def build(linktype: int, timestamp: float, data: bytes, caplen: int, origlen: int,
                  _interface: int) -> SegmentFields | float:
            return decode_fields(linktype, timestamp, data, caplen, origlen) or timestamp  # type: ignore[return-value]

        self._build = build  # type: ignore[assignment]
        self._build_at = self.decoder.decode_at
