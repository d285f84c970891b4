"""pcap and pcapng file formats: an incremental record reader over bytes the caller supplies.

The reader is sans-IO: ``CaptureReader.feed(chunk)`` takes whatever bytes the caller read and
returns the packets completed by them, so any chunking gives the same packets.  ``iter_packets``
is the only code here that touches a file; it reads in 1 MiB chunks, so memory stays bounded
whatever the capture size.

Formats: classic pcap (both byte orders, microsecond and nanosecond magic, and the old
Kuznetsov "modified" variant), pcapng (sections of either byte order, interfaces with
``if_tsresol``/``if_tsoffset``, Enhanced, Simple and obsolete Packet blocks; every other block is
skipped).  References: draft-ietf-opsawg-pcap and draft-ietf-opsawg-pcapng.

A damaged file is reported as ``CaptureFormatError`` *after* every good packet before the damage
has been handed out, which is what a capture analyser wants (tshark does the same).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from os import PathLike
from typing import Any

from tlsproxy.fastbuild import frozen_builder

__all__ = ["CaptureFormatError", "CaptureReader", "RawPacket", "iter_batches", "iter_packets", "CHUNK_SIZE"]

CHUNK_SIZE = 1 << 20
"""How much ``iter_packets`` reads at a time (1 MiB): the reader's buffer never holds much more."""

# Largest captured length of one classic pcap record.  libpcap and Wireshark refuse larger records
# for ordinary link types (WTAP_MAX_PACKET_SIZE_STANDARD); a bigger value means the record header is
# damaged, and believing it would make us buffer (and wait for) megabytes of garbage.
MAX_PCAP_CAPLEN = 262_144

# Largest pcapng block.  Packet blocks are bounded as above; other blocks (name resolution,
# decryption secrets, comments) can be bigger but never legitimately this big.  Same reason: a
# damaged length must not make us buffer without bound.
MAX_PCAPNG_BLOCK = 16 << 20


class CaptureFormatError(ValueError):
    """The bytes are not a pcap/pcapng capture, or the capture is damaged at some point.

    ``offset`` is the file offset of the damaged header (``None`` when unknown).
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at file offset {offset})")
        self.offset = offset


@dataclass(frozen=True, slots=True, kw_only=True)
class RawPacket:
    """One captured frame.  ``caplen < origlen`` means the capture kept only a prefix (snaplen)."""

    linktype: int
    timestamp: float
    data: bytes
    caplen: int
    origlen: int
    interface: int = 0

    @property
    def truncated(self) -> bool:
        return self.caplen < self.origlen


_raw_packet = frozen_builder(RawPacket)

# --- classic pcap -------------------------------------------------------------------------------

_PCAP_MAGIC: dict[bytes, tuple[str, int, bool]] = {
    # magic bytes as found in the file -> (byte order, ticks per second, modified record header)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000, False),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000, False),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000, False),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000, False),
    b"\x34\xcd\xb2\xa1": ("<", 1_000_000, True),  # Alexey Kuznetsov's patched libpcap
    b"\xa1\xb2\xcd\x34": (">", 1_000_000, True),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM = 0x1A2B3C4D

_PCAP_FILE_HDR = {e: struct.Struct(e + "HHiIII") for e in "<>"}  # after the magic
_PCAP_REC_HDR = {e: struct.Struct(e + "IIII") for e in "<>"}
_U32 = {e: struct.Struct(e + "I") for e in "<>"}
_U32X2 = {e: struct.Struct(e + "II") for e in "<>"}
_U16 = {e: struct.Struct(e + "H") for e in "<>"}
_IDB = {e: struct.Struct(e + "HHI") for e in "<>"}
_EPB = {e: struct.Struct(e + "IIIII") for e in "<>"}
_PB = {e: struct.Struct(e + "HHIIII") for e in "<>"}
_OPT = {e: struct.Struct(e + "HH") for e in "<>"}
_U64 = {e: struct.Struct(e + "q") for e in "<>"}
# An Enhanced Packet Block's fixed part: type, length, interface, timestamp (2), caplen, origlen.
_EPB_HEAD = {e: struct.Struct(e + "IIIIIII") for e in "<>"}


class _Interface:
    """What an Interface Description Block says about the packets that name it."""

    __slots__ = ("linktype", "divisor", "offset")

    def __init__(self, linktype: int, divisor: int, offset: int) -> None:
        self.linktype = linktype
        self.divisor = divisor  # timestamp ticks per second
        self.offset = offset  # if_tsoffset, seconds


class CaptureReader:
    """Incremental pcap/pcapng reader.

    ``feed(data)`` returns the packets completed by ``data``.  When the bytes turn out to be
    damaged, the packets decoded before the damage are returned first and the
    ``CaptureFormatError`` is raised by the next ``feed`` or by ``close``; once raised, the reader
    stays failed.  ``close()`` says the input is over and raises if it ended inside a header or a
    record.  ``format`` is ``"pcap"`` or ``"pcapng"`` once known.
    """

    # Makes each packet from (linktype, timestamp, data, caplen, origlen, interface).
    _build: Callable[..., RawPacket] = staticmethod(_raw_packet)
    # Optional fused decoder for the common records (classic pcap, Enhanced Packet Blocks):
    # ``(linktype, timestamp, buf, start, end, truncated)`` makes the packet's item straight from
    # ``buf[start:end]`` without slicing the frame out first; ``None`` from it stands for the
    # packet's timestamp.  See ``packets.SegmentReader``.
    _build_at: Callable[..., Any] | None = None

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes not yet consumed (the start of an incomplete record)
        self._pos = 0  # file offset of self._buf[0]
        # Length ``_buf`` must reach before parsing can make progress: feeding in small pieces
        # then costs nothing until a record is complete (parsing works on a bytes copy).
        self._need = 0
        self._error: CaptureFormatError | None = None
        self._closed = False
        self.format: str | None = None
        self.packets = 0
        # pcap
        self._endian = "<"
        self._divisor = 1_000_000
        self._modified = False
        self._linktype = 0
        # pcapng
        self._interfaces: list[_Interface] = []
        self._last_ts = 0.0
        #: TLS key log text from Decryption Secrets Blocks, in file order (``take_secrets``).
        self._secrets: list[str] = []

    # public API --------------------------------------------------------------------------------

    def take_secrets(self) -> list[str]:
        """NSS key log text embedded in the file so far (pcapng Decryption Secrets Blocks of
        type TLS key log, as ``editcap --inject-secrets`` writes them), then forgotten."""
        out, self._secrets = self._secrets, []
        return out

    @property
    def error(self) -> CaptureFormatError | None:
        """The damage found so far, if any (also raised by the next ``feed``/``close``)."""
        return self._error

    def feed(self, data: bytes) -> list[RawPacket]:
        if self._closed:
            raise RuntimeError("feed() after close()")
        if self._error is not None:
            raise self._error
        out: list[RawPacket] = []
        pending = self._buf
        if pending:
            if len(pending) + len(data) < self._need:
                pending += data
                return out
            # One copy of the (usually small) leftover and the new bytes together; what is
            # still incomplete after parsing goes back into ``pending`` below.
            buf = b"".join((pending, data))
            pending.clear()
        else:
            # Parse the caller's bytes in place (``bytes()`` of a bytes object is no copy):
            # slices of a bytes object are the packets' data, with no intermediate view.
            buf = data if type(data) is bytes else bytes(memoryview(data))
        pos = 0
        try:
            if self.format is None:
                pos = self._read_file_header(buf)
            if self.format == "pcap":
                pos = self._read_pcap(buf, pos, out)
            elif self.format == "pcapng":
                pos = self._read_pcapng(buf, pos, out)
        except CaptureFormatError as exc:
            self._error = exc
            pending.clear()
            if not out:
                raise
        except struct.error as exc:  # pragma: no cover - every read is length-checked first
            self._error = CaptureFormatError(f"internal short read: {exc}", offset=self._pos)
            pending.clear()
            if not out:
                raise self._error from exc
        else:
            if pos < len(buf):
                pending += buf[pos:]
            self._pos += pos
        self.packets += len(out)
        return out

    def close(self) -> None:
        """End of input: raise ``CaptureFormatError`` if the capture is damaged or cut short."""
        if self._closed:
            return
        self._closed = True
        if self._error is not None:
            raise self._error
        if self.format is None:
            raise CaptureFormatError(
                "empty input: no capture file header" if not self._buf and not self._pos
                else "input too short for a capture file header", offset=0)
        if self._buf:
            raise CaptureFormatError(
                f"capture cut short in the middle of a record ({len(self._buf)} bytes left over)",
                offset=self._pos)

    # headers -----------------------------------------------------------------------------------

    def _read_file_header(self, buf: bytes) -> int:
        """Recognise the format; returns how many bytes the header took (0: not complete yet)."""
        if len(buf) < 4:
            return 0
        magic = buf[:4]
        if magic == _PCAPNG_SHB:
            self.format = "pcapng"
            return 0  # the Section Header Block is read as a block
        info = _PCAP_MAGIC.get(magic)
        if info is None:
            raise CaptureFormatError(f"not a pcap or pcapng file (magic {magic.hex()})", offset=0)
        if len(buf) < 24:
            return 0
        self._endian, self._divisor, self._modified = info
        major, _minor, _zone, _sigfigs, _snaplen, network = _PCAP_FILE_HDR[self._endian].unpack_from(buf, 4)
        if major != 2:
            raise CaptureFormatError(f"unsupported pcap version {major}", offset=4)
        # The LinkType field's low 16 bits are the link type; the high bits carry FCS information.
        self._linktype = network & 0xFFFF
        self.format = "pcap"
        return 24

    # classic pcap --------------------------------------------------------------------------------

    def _read_pcap(self, buf: bytes, pos: int, out: list[RawPacket]) -> int:
        """Records from ``buf[pos:]``; returns where the first incomplete one starts."""
        rec = _PCAP_REC_HDR[self._endian].unpack_from
        hdr_len = 24 if self._modified else 16
        divisor = self._divisor
        linktype = self._linktype
        end = len(buf)
        append = out.append
        build = self._build
        build_at = self._build_at
        need = hdr_len
        while end - pos >= hdr_len:
            sec, frac, caplen, origlen = rec(buf, pos)
            if caplen > MAX_PCAP_CAPLEN:
                raise CaptureFormatError(
                    f"record claims a {caplen}-byte packet, larger than the maximum "
                    f"{MAX_PCAP_CAPLEN}: the file is damaged", offset=self._pos + pos)
            stop = pos + hdr_len + caplen
            if stop > end:
                need = hdr_len + caplen
                break
            if frac >= divisor:
                # Some writers (and damage) put out-of-range fractions; keep going but do not
                # let them roll into the next second silently.
                frac = divisor - 1
            ts = sec + frac / divisor
            if build_at is not None:
                append(build_at(linktype, ts, buf, pos + hdr_len, stop, caplen < origlen) or ts)
            else:
                append(build(linktype, ts, buf[pos + hdr_len:stop], caplen, origlen, 0))
            pos = stop
        self._need = need
        return pos

    # pcapng --------------------------------------------------------------------------------------

    def _read_pcapng(self, buf: bytes, pos: int, out: list[RawPacket]) -> int:
        """Blocks from ``buf[pos:]``; returns where the first incomplete one starts.

        Enhanced Packet Blocks (nearly every block of a capture) are read inline with one
        ``unpack_from`` of their fixed part; every other block goes through the general path.
        """
        end = len(buf)
        need = 12
        append = out.append
        build = self._build
        build_at = self._build_at
        e = self._endian
        epb_head = _EPB_HEAD[e].unpack_from
        u32 = _U32[e].unpack_from
        interfaces = self._interfaces
        try:
            while end - pos >= 12:
                if end - pos >= 28:
                    btype, blen, iface_id, ts_hi, ts_lo, caplen, origlen = epb_head(buf, pos)
                    if btype == 6 and 32 <= blen <= MAX_PCAPNG_BLOCK and not blen & 3:
                        # Same checks, in the same order, as the general path below and _epb.
                        stop = pos + blen
                        if stop > end:
                            need = blen
                            break
                        if u32(buf, stop - 4)[0] != blen:
                            raise CaptureFormatError(
                                f"pcapng block of type {btype:#x}: trailing length "
                                f"{u32(buf, stop - 4)[0]} != {blen}", offset=self._pos + pos)
                        if 28 + caplen > blen - 4:
                            raise CaptureFormatError(f"pcapng packet of {caplen} bytes overruns its block",
                                                     offset=self._pos + pos)
                        iface = interfaces[iface_id] if iface_id < len(interfaces) else self._iface(iface_id, pos)
                        ts = iface.offset + ((ts_hi << 32) | ts_lo) / iface.divisor
                        self._last_ts = ts
                        if build_at is not None:
                            append(build_at(iface.linktype, ts, buf, pos + 28, pos + 28 + caplen,
                                            caplen < origlen) or ts)
                        else:
                            append(build(iface.linktype, ts, buf[pos + 28:pos + 28 + caplen], caplen,
                                         origlen, iface_id))
                        pos = stop
                        continue
                if buf[pos:pos + 4] == _PCAPNG_SHB:
                    bom = buf[pos + 8:pos + 12]
                    if bom == b"\x4d\x3c\x2b\x1a":
                        self._endian = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        self._endian = ">"
                    else:
                        raise CaptureFormatError(
                            f"pcapng section header with bad byte-order magic {bom.hex()}",
                            offset=self._pos + pos)
                    e = self._endian
                    epb_head = _EPB_HEAD[e].unpack_from
                    u32 = _U32[e].unpack_from
                btype, blen = _U32X2[e].unpack_from(buf, pos)
                if blen < 12 or blen % 4 or blen > MAX_PCAPNG_BLOCK:
                    raise CaptureFormatError(f"pcapng block of type {btype:#x} with bad length {blen}",
                                             offset=self._pos + pos)
                stop = pos + blen
                if stop > end:
                    need = blen
                    break
                (trailer,) = u32(buf, stop - 4)
                if trailer != blen:
                    raise CaptureFormatError(
                        f"pcapng block of type {btype:#x}: trailing length {trailer} != {blen}",
                        offset=self._pos + pos)
                if btype == 6:
                    self._epb(buf, pos, blen, out)
                elif btype == 3:
                    self._spb(buf, pos, blen, out)
                elif btype == 1:
                    self._idb(buf, pos, blen)
                elif btype == 0x0A0D0D0A:
                    self._interfaces = []  # a new section starts with no interfaces
                elif btype == 2:
                    self._pb(buf, pos, blen, out)
                elif btype == 0x0A:
                    self._dsb(buf, pos, blen)
                # Any other block (name resolution, statistics, custom) is skipped.
                interfaces = self._interfaces
                pos = stop
        finally:
            # Where parsing stopped (at damage too: the error's offset is self._pos + pos).
            self._need = need
        return pos

    def _iface(self, index: int, pos: int) -> _Interface:
        try:
            return self._interfaces[index]
        except IndexError:
            raise CaptureFormatError(f"pcapng packet names undefined interface {index}",
                                     offset=self._pos + pos) from None

    def _idb(self, buf: bytes, pos: int, blen: int) -> None:
        e = self._endian
        if blen < 20:
            raise CaptureFormatError("pcapng interface block too short", offset=self._pos + pos)
        linktype, _reserved, _snaplen = _IDB[e].unpack_from(buf, pos + 8)
        divisor = 1_000_000
        offset = 0
        opt = pos + 16
        opt_end = pos + blen - 4
        unpack_opt = _OPT[e].unpack_from
        while opt + 4 <= opt_end:
            code, length = unpack_opt(buf, opt)
            value = opt + 4
            if code == 0:  # opt_endofopt
                break
            if value + length > opt_end:
                break  # a malformed option list: keep the defaults rather than fail the capture
            if code == 9 and length >= 1:  # if_tsresol
                res = buf[value]
                exp = res & 0x7F
                divisor = (2 ** exp) if res & 0x80 else (10 ** exp)
                if divisor == 0 or exp > 63:
                    divisor = 1_000_000
            elif code == 14 and length >= 8:  # if_tsoffset
                (offset,) = _U64[e].unpack_from(buf, value)
            opt = value + ((length + 3) & ~3)
        self._interfaces.append(_Interface(linktype, divisor, offset))

    def _epb(self, buf: bytes, pos: int, blen: int, out: list[RawPacket]) -> None:
        if blen < 32:
            raise CaptureFormatError("pcapng enhanced packet block too short", offset=self._pos + pos)
        iface_id, ts_hi, ts_lo, caplen, origlen = _EPB[self._endian].unpack_from(buf, pos + 8)
        self._timestamped(buf, pos, blen, iface_id, ts_hi, ts_lo, caplen, origlen, out)

    def _pb(self, buf: bytes, pos: int, blen: int, out: list[RawPacket]) -> None:
        """The obsolete Packet Block: an Enhanced Packet Block with a drops counter."""
        if blen < 32:
            raise CaptureFormatError("pcapng packet block too short", offset=self._pos + pos)
        iface_id, _drops, ts_hi, ts_lo, caplen, origlen = _PB[self._endian].unpack_from(buf, pos + 8)
        self._timestamped(buf, pos, blen, iface_id, ts_hi, ts_lo, caplen, origlen, out)

    def _timestamped(self, buf: bytes, pos: int, blen: int, iface_id: int, ts_hi: int, ts_lo: int,
                     caplen: int, origlen: int, out: list[RawPacket]) -> None:
        """Packet data at offset 28 of a block, timestamped in its interface's resolution."""
        if 28 + caplen > blen - 4:
            raise CaptureFormatError(f"pcapng packet of {caplen} bytes overruns its block",
                                     offset=self._pos + pos)
        iface = self._iface(iface_id, pos)
        ts = iface.offset + ((ts_hi << 32) | ts_lo) / iface.divisor
        self._last_ts = ts
        out.append(self._build(iface.linktype, ts, buf[pos + 28:pos + 28 + caplen], caplen,
                               origlen, iface_id))

    def _dsb(self, buf: bytes, pos: int, blen: int) -> None:
        """Decryption Secrets Block: secrets type, length, data.  Only TLS key logs ("TLSK") are
        kept; other secret types (WireGuard, SSH, ...) are not ours to read."""
        if blen < 20:
            raise CaptureFormatError("pcapng decryption secrets block too short", offset=self._pos + pos)
        secrets_type, length = _U32X2[self._endian].unpack_from(buf, pos + 8)
        if 16 + length > blen - 4:
            raise CaptureFormatError(f"pcapng secrets of {length} bytes overrun their block",
                                     offset=self._pos + pos)
        if secrets_type == 0x544C534B:  # "TLSK": NSS key log format
            self._secrets.append(buf[pos + 16:pos + 16 + length].decode("utf-8", "replace"))

    def _spb(self, buf: bytes, pos: int, blen: int, out: list[RawPacket]) -> None:
        if blen < 16:
            raise CaptureFormatError("pcapng simple packet block too short", offset=self._pos + pos)
        (origlen,) = _U32[self._endian].unpack_from(buf, pos + 8)
        caplen = min(origlen, blen - 16)
        iface = self._iface(0, pos)
        # A Simple Packet Block has no timestamp: reuse the previous packet's so that times stay
        # monotonic for whoever consumes them.
        out.append(self._build(iface.linktype, self._last_ts, buf[pos + 12:pos + 12 + caplen],
                                caplen, origlen, 0))


def iter_batches(path: str | PathLike[str], reader: CaptureReader, *, chunk_size: int = CHUNK_SIZE,
                 on_secrets: Callable[[str], None] | None = None) -> Iterator[list[Any]]:
    """Read a capture file ``chunk_size`` bytes at a time through ``reader``, yielding the
    packets each chunk completes as one list (``RawPacket``s, or what the reader makes of them).

    ``on_secrets`` receives key log text embedded in the file, before the packets that follow it.
    Raises ``CaptureFormatError`` at the point of damage, after every packet before it.
    """
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            packets = reader.feed(chunk)
            if on_secrets is not None:
                for text in reader.take_secrets():
                    on_secrets(text)
            yield packets
    reader.close()


def iter_packets(path: str | PathLike[str], *, chunk_size: int = CHUNK_SIZE,
                 on_secrets: Callable[[str], None] | None = None) -> Iterator[RawPacket]:
    """Yield the packets of a capture file (see :func:`iter_batches`)."""
    for packets in iter_batches(path, CaptureReader(), chunk_size=chunk_size, on_secrets=on_secrets):
        yield from packets
