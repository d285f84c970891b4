"""Handshake-message reassembly for one direction and one epoch.

Handshake messages may be split over records and several may share a record; the 24-bit length
of a message header could make a naive reassembler wait for 16 MiB, so a cap bounds what one
message may claim.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Real handshake messages stay far below this: a Certificate with a 10,000-SAN certificate (a
# capture in the test corpus) is ~300 KiB.  Anything bigger is refused rather than buffered.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

_HEADER = struct.Struct(">I")  # a handshake message header read whole: type << 24 | length


@dataclass(slots=True)
class RawHandshake:
    offset: int  # stream offset of the record carrying the message's first byte
    msg_type: int
    raw: bytes  # header + body


class HandshakeTooLarge(Exception):
    def __init__(self, msg_type: int, length: int, cap: int, offset: int) -> None:
        super().__init__(f"handshake message type {msg_type} claims {length} bytes, over the {cap}-byte cap")
        self.msg_type = msg_type
        self.length = length
        self.offset = offset


class HandshakeReassembler:
    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        # (end position in _buf's logical stream, record offset) for each appended record.
        self._segments: list[tuple[int, int]] = []
        self._consumed = 0  # logical position of _buf[0]

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buf)

    def reset(self) -> int:
        """Drop any partial message (an epoch change); returns how many bytes were dropped."""
        dropped = len(self._buf)
        self._consumed += dropped
        self._buf.clear()
        self._segments.clear()
        return dropped

    def whole(self, payload: bytes) -> int:
        """The usual record, checked without building anything: nothing is pending and
        ``payload`` is exactly one message within the cap.  Returns its type, the message consumed
        (it is ``payload`` itself); -1 otherwise, nothing consumed (then use :meth:`feed`)."""
        n = len(payload)
        if self._buf or n < 4 or type(payload) is not bytes:
            return -1
        word = _HEADER.unpack_from(payload)[0]
        length = word & 0xFFFFFF
        if length + 4 != n or length > self.max_message_size:
            return -1
        self._consumed += n
        return word >> 24

    def feed(self, payload: bytes, record_offset: int) -> tuple[list[RawHandshake], HandshakeTooLarge | None]:
        """Add one record's handshake payload; return the messages it completes and, when a
        message header claims more than the cap, the refusal (the messages before it still count;
        the caller then stops reassembling this direction)."""
        if not payload:
            return [], None
        out: list[RawHandshake] = []
        if not self._buf and type(payload) is bytes:
            # Fast path, the usual case: nothing pending, so whole messages are sliced straight
            # from the record and all carry its offset; only a tail that is incomplete (or over
            # the cap) goes through the buffer below.
            pos, n, cap = 0, len(payload), self.max_message_size
            header = _HEADER.unpack_from
            while n - pos >= 4:
                word = header(payload, pos)[0]  # msg_type (8 bits), length (24 bits)
                end = pos + 4 + (word & 0xFFFFFF)
                if end > n or end - pos - 4 > cap:
                    break
                out.append(RawHandshake(record_offset, word >> 24, payload[pos:end]))
                pos = end
            if pos == n:
                self._consumed += n
                return out, None
            self._consumed += pos
            payload = payload[pos:]
        self._buf += payload
        self._segments.append((self._consumed + len(self._buf), record_offset))
        too_large = None
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            length = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            if length > self.max_message_size:
                too_large = HandshakeTooLarge(buf[pos], length, self.max_message_size, self._origin(pos))
                break
            end = pos + 4 + length
            if end > len(buf):
                break
            out.append(RawHandshake(self._origin(pos), buf[pos], bytes(buf[pos:end])))
            pos = end
        if pos:
            del buf[:pos]
            self._consumed += pos
            while self._segments and self._segments[0][0] <= self._consumed:
                self._segments.pop(0)
        return out, too_large

    def _origin(self, pos: int) -> int:
        logical = self._consumed + pos
        for end, offset in self._segments:
            if logical < end:
                return offset
        return self._segments[-1][1]
