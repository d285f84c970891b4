"""The record layer of one direction: bytes in, record headers (and the payloads asked for) out.

The first bytes decide what the stream is: TLS records, SSL 2.0 records, or something else
(named by :mod:`tlsproxy.wire.sniff`).  A plaintext prologue that may upgrade to TLS (STARTTLS,
HTTP CONNECT, SOCKS) is watched, bounded, for the first hello.  Payloads the caller does not want
(application data without keys) are skipped without being copied, which keeps bulk transfers at
the cost of one header parse per record.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterator

from tlsproxy.wire import sniff

# RFC 5246 6.2.3: a TLSCiphertext fragment may be at most 2^14 + 2048 bytes.  Anything longer is
# not TLS as any implementation sends it, and buffering it would let a peer make us hold 64 KiB.
MAX_RECORD_LENGTH = 2**14 + 2048

# How much plaintext prologue (STARTTLS dialogue, CONNECT exchange) we watch for a switch to TLS
# before giving up on the direction.  Real prologues are a few hundred bytes.
MAX_PROLOGUE = 64 * 1024

# How many bytes of a non-TLS stream are kept to name it and show it.
SNIFF_BYTES = 64

# A TLS record header: content type, version, length.
_HEADER = struct.Struct(">BHH")

# The (content type, version) pairs _check_header accepts, for the per-record fast path.
_GOOD_TYPE_VERSION = frozenset((ctype, version) for ctype in range(20, 64) for version in range(0x0300, 0x0305))

TLS = "tls"
SSLV2 = "sslv2"


@dataclass(slots=True)
class RawRecord:
    """One complete record.  ``payload`` is ``None`` when the caller did not ask for it."""

    offset: int
    content_type: int
    version: int
    length: int
    payload: bytes | None
    fmt: str = TLS  # "tls" or "sslv2"; for SSLv2, content_type is 0 and version 2
    padding: int = 0


@dataclass(slots=True)
class LayerNotice:
    """Something about the stream itself rather than a record."""

    kind: str  # "not_tls" | "starttls" | "error" | "stopped"
    offset: int
    text: str = ""
    protocol: str = ""
    first_bytes: bytes = b""
    first_line: str | None = None


Item = RawRecord | LayerNotice
WantPayload = Callable[[int], bool]
# (context, offset, content_type, version, length, data, end): see RecordLayer.feed.
OnRecord = Callable[[object, int, int, int, int, bytes, int], None]


class RecordLayer:
    """Splits one direction's byte stream into records.

    ``want_payload(content_type)``, given to each :meth:`feed`, is asked when a TLS record header
    has been read; answering ``False`` makes the layer skip the payload without copying it.  (It is
    not kept between calls: a callback into the connection stored here would make a reference cycle
    that only the garbage collector could free.)  ``hello_type`` is the handshake type this side
    would open with (1 for a client, 2 for a server), used to find TLS after a plaintext prologue.
    """

    def __init__(self, hello_type: int) -> None:
        self.hello_type = hello_type
        self.mode = "detect"  # detect | tls | sslv2 | prologue | stopped
        self.offset = 0  # stream offset of the first byte not yet consumed
        self._buf = bytearray()  # bytes of an incomplete header, payload or prologue
        self._skip = 0  # payload bytes still to skip for the pending record
        self._pending: RawRecord | None = None
        self._prologue_protocol = ""
        self._prologue_start = 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete record (header included) or of undecided stream start."""
        if self._pending is not None:
            return self.offset - self._pending.offset
        return len(self._buf)

    def stop(self) -> None:
        self.mode = "stopped"
        self._buf.clear()
        self._pending = None
        self._skip = 0

    def feed_whole(self, data: bytes, on_record: OnRecord, context: object) -> int:
        """The usual case without a generator: TLS records that arrive whole in ``data``, handed
        to ``on_record`` (see :meth:`feed`) as they are parsed.  Returns the position of the first
        byte not consumed; the caller passes the rest to :meth:`feed` (with ``start``), which deals
        with a record that goes on in a later chunk, a bad header and every other mode."""
        if self.mode != TLS:
            if self.mode != "detect" or self._buf or type(data) is not bytes or len(data) < 2:
                return 0
            if not (20 <= data[0] <= 26 and data[1] == 3):
                return 0
            self.mode = TLS  # the stream opens with a TLS record header: what _detect() decides
        elif self._pending is not None or self._buf or type(data) is not bytes:
            return 0
        return self._whole_records(data, 0, on_record, context)

    def _whole_records(self, data: bytes, pos: int, on_record: OnRecord, context: object) -> int:
        n = len(data)
        mode = self.mode
        header = _HEADER.unpack_from
        while n - pos >= 5:
            ctype, version, length = header(data, pos)
            end = pos + 5 + length
            if end > n or (ctype, version) not in _GOOD_TYPE_VERSION or length > MAX_RECORD_LENGTH:
                break  # _check_header's tests, inlined; feed() reports a bad header
            start = self.offset
            self.offset = start + 5 + length
            on_record(context, start, ctype, version, length, data, end)
            pos = end
            if self.mode != mode:
                break
        return pos

    def feed(self, data: bytes, want_payload: WantPayload, on_record: OnRecord | None = None,
             context: object = None, start: int = 0) -> Iterator[Item]:
        """Yield the records and notices completed by ``data[start:]``.  Must be fully consumed
        before the next call; the caller may change what it wants between records.

        With ``on_record``, TLS records that arrive whole in ``data`` (the usual case) are handed
        to ``on_record(context, offset, content_type, version, length, data, end)`` as they are
        parsed instead of being yielded, which spares a RawRecord and a generator round trip per
        record.  Their payload is ``data[end - length : end]``: the callee slices it only if it
        wants it, so bulk application data is never copied."""
        if type(data) is not bytes:
            data = bytes(data)  # payloads are slices of ``data`` and must be bytes
        mv = memoryview(data)
        pos = start
        n = len(data)
        while pos < n:
            mode = self.mode
            if mode == "stopped":
                self.offset += n - pos
                return
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                self.offset += take
                if self._skip:
                    return
                rec, self._pending = self._pending, None
                assert rec is not None
                yield rec
                continue
            if mode == "tls":
                if self._pending is None and not self._buf and n - pos >= 5:
                    if on_record is not None:
                        pos = self._whole_records(data, pos, on_record, context)
                        if self.mode != mode or n - pos < 5:
                            continue
                    # One record header at ``pos``: a bad one, a record that goes on in a later
                    # chunk, or (without ``on_record``) a whole record to yield.
                    ctype, version, length = _HEADER.unpack_from(data, pos)
                    problem = _check_header(ctype, version, length)
                    if problem is not None:
                        yield from self._fail(problem, data[pos : pos + 5])
                        self.offset += n - pos
                        return
                    rec_start = self.offset
                    end = pos + 5 + length
                    if end > n:
                        # The record goes on in a later chunk: buffer or skip the rest of ``data``.
                        self._pending = RawRecord(rec_start, ctype, version, length, None)
                        pos += 5
                        if want_payload(ctype):
                            self._buf += mv[pos:]
                        else:
                            self._skip = end - n
                        self.offset = rec_start + (n - pos) + 5
                        return
                    self.offset = rec_start + 5 + length
                    payload = data[pos + 5 : end] if want_payload(ctype) else None
                    pos = end
                    yield RawRecord(rec_start, ctype, version, length, payload)
                    continue
                # Slow path: accumulate a header or a wanted payload across calls.
                take_to = self._slow_need()
                take = min(take_to - len(self._buf), n - pos)
                self._buf += mv[pos : pos + take]
                pos += take
                self.offset += take
                if len(self._buf) < take_to:
                    return
                yield from self._slow_complete(want_payload)
                continue
            if mode == "detect":
                take = min(SNIFF_BYTES - len(self._buf), n - pos)
                self._buf += mv[pos : pos + take]
                pos += take
                if pos >= n and not self._can_decide():
                    return  # wait for enough bytes to tell
                head = bytes(self._buf)
                self._buf.clear()
                # Re-read the sniffed bytes in the mode they reveal.
                data = head + bytes(mv[pos:])
                mv, n, pos = memoryview(data), len(data), 0
                yield from self._detect(head)
                continue
            if mode == "sslv2":
                yield from self._sslv2_step(mv, pos, n, want_payload)
                pos = n
                continue
            if mode == "prologue":
                yield from self._prologue_step(bytes(mv[pos:]))
                pos = n
                if self.mode == "tls" and self._buf:
                    # The prologue ended inside this chunk: parse the rest as TLS.
                    rest = bytes(self._buf)
                    self._buf.clear()
                    data, mv, n, pos = rest, memoryview(rest), len(rest), 0
                continue

    def _slow_need(self) -> int:
        if self._pending is None:
            return 5
        return self._pending.length

    def _slow_complete(self, want_payload: WantPayload) -> Iterator[Item]:
        if self._pending is None:
            hdr = bytes(self._buf)
            self._buf.clear()
            ctype, version, length = hdr[0], (hdr[1] << 8) | hdr[2], (hdr[3] << 8) | hdr[4]
            start = self.offset - 5
            problem = _check_header(ctype, version, length)
            if problem:
                yield from self._fail(problem, hdr, at=start)
                return
            rec = RawRecord(offset=start, content_type=ctype, version=version, length=length, payload=None)
            if not want_payload(ctype):
                if length:
                    self._pending, self._skip = rec, length
                else:
                    yield rec
            elif length == 0:
                rec.payload = b""
                yield rec
            else:
                self._pending = rec
            return
        rec, self._pending = self._pending, None
        rec.payload = bytes(self._buf)
        self._buf.clear()
        yield rec

    def _fail(self, problem: str, header: bytes, at: int | None = None) -> Iterator[Item]:
        offset = self.offset if at is None else at
        yield LayerNotice(kind="error", offset=offset, text=f"{problem} (header bytes {header.hex(' ')})")
        yield LayerNotice(kind="stopped", offset=offset, text=f"record layer lost sync: {problem}")
        self.stop()

    def _can_decide(self) -> bool:
        """TLS and SSL 2.0 show in the first bytes; anything else is named from its first line
        (or first ``SNIFF_BYTES``), so that the verdict does not depend on how bytes were split."""
        buf = self._buf
        if len(buf) >= SNIFF_BYTES or b"\n" in buf:
            return True
        if len(buf) >= 2 and 20 <= buf[0] <= 26 and buf[1] == 3:
            return True
        return len(buf) >= 6 and _looks_sslv2(bytes(buf), self.hello_type)

    def flush_undecided(self) -> Iterator[Item]:
        """End of stream while still undecided: name what there is."""
        if self.mode != "detect" or not self._buf:
            return
        head = bytes(self._buf)
        if 20 <= head[0] <= 26 and (len(head) < 2 or head[1] == 3):
            return  # a TLS record cut short: the caller reports the truncation
        self._buf.clear()
        yield from self._detect(head)
        self.offset += len(head)

    def _detect(self, head: bytes) -> Iterator[Item]:
        b0 = head[0]
        if 20 <= b0 <= 26 and len(head) >= 2 and head[1] == 3:
            self.mode = TLS
            return
        if _looks_sslv2(head, self.hello_type):
            self.mode = SSLV2
            return
        protocol = sniff.guess_protocol(head)
        yield LayerNotice(
            kind="not_tls",
            offset=self.offset,
            protocol=protocol,
            first_bytes=head[:SNIFF_BYTES],
            first_line=sniff.first_line(head),
        )
        if protocol in sniff.UPGRADABLE or protocol == "text":
            self.mode = "prologue"
            self._prologue_protocol = protocol
            self._prologue_start = self.offset
        else:
            self.mode = "stopped"
            yield LayerNotice(kind="stopped", offset=self.offset, text=f"not TLS ({protocol})")

    def _prologue_step(self, chunk: bytes) -> Iterator[Item]:
        """Watch plaintext for the first TLS hello; everything before it is prologue.

        Only a 6-byte tail is kept between chunks: enough for a hello header split across reads
        plus the byte before it (the line-boundary check).  The stream started with plaintext,
        so a hello can never be at position 0 of the watched bytes: the search starts at 1.
        """
        searched_from = max(1, len(self._buf) - 5)
        self._buf += chunk
        line_based = not self._prologue_protocol.startswith("socks")
        found = sniff.find_tls_start(bytes(self._buf), searched_from, self.hello_type, line_based)
        if found < 0:
            keep = bytes(self._buf[-6:])
            self.offset += len(self._buf) - len(keep)
            self._buf[:] = keep
            if self.offset - self._prologue_start > MAX_PROLOGUE:
                self.offset += len(keep)
                self._buf.clear()
                self.mode = "stopped"
                yield LayerNotice(kind="stopped", offset=self.offset,
                                  text=f"no TLS within {MAX_PROLOGUE} bytes of plaintext")
            return
        self.offset += found
        del self._buf[:found]
        self.mode = TLS
        yield LayerNotice(kind="starttls", offset=self.offset, protocol=self._prologue_protocol)

    def _sslv2_step(self, mv: memoryview, pos: int, n: int, want_payload: WantPayload) -> Iterator[Item]:
        self._buf += mv[pos:n]
        buf = self._buf
        while True:
            if len(buf) < 2:
                break
            if buf[0] & 0x80:
                hlen, length, padding = 2, ((buf[0] & 0x7F) << 8) | buf[1], 0
            else:
                if len(buf) < 3:
                    break
                hlen, length, padding = 3, ((buf[0] & 0x3F) << 8) | buf[1], buf[2]
            if len(buf) < hlen + length:
                break
            payload = bytes(buf[hlen : hlen + length])
            start = self.offset
            del buf[: hlen + length]
            self.offset += hlen + length
            yield RawRecord(offset=start, content_type=0, version=2, length=length, payload=payload,
                            fmt=SSLV2, padding=padding)
            if self.mode != SSLV2:
                # The caller switched us to TLS (an SSLv2-compatible hello offering SSL 3.0+).
                rest = bytes(buf)
                buf.clear()
                if rest:
                    yield from self.feed(rest, want_payload)
                return

    def switch_to_tls(self) -> None:
        """After an SSLv2-format ClientHello offering SSL 3.0 or later, the rest is TLS records."""
        self.mode = TLS


def _check_header(ctype: int, version: int, length: int) -> str | None:
    if version >> 8 != 3 or (version & 0xFF) > 4:
        return f"impossible record version 0x{version:04x}"
    if not 20 <= ctype <= 63:
        return f"impossible content type {ctype}"
    if length > MAX_RECORD_LENGTH:
        return f"record length {length} exceeds the maximum of {MAX_RECORD_LENGTH}"
    return None


def _looks_sslv2(head: bytes, hello_type: int) -> bool:
    """SSL 2.0 two-byte header with a CLIENT-HELLO (1) or SERVER-HELLO (4) inside."""
    if len(head) < 5 or not head[0] & 0x80:
        return False
    length = ((head[0] & 0x7F) << 8) | head[1]
    msg = head[2]
    if hello_type == 1:
        version = (head[3] << 8) | head[4]
        return msg == 1 and length >= 9 and version in (0x0002, 0x0300, 0x0301, 0x0302, 0x0303)
    return msg == 4 and length >= 11
