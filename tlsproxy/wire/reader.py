"""A bounds-checked reader for TLS presentation-language structures.

Every length-prefixed block is read through a sub-reader over exactly its bytes, so a decoder can
never read past the end of the vector it is in, and a short read names the field and the offset
instead of surfacing as an ``IndexError`` somewhere deep in a decoder.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class WireError(ValueError):
    """Bytes that do not fit the structure being decoded.  ``offset`` is relative to the
    outermost reader (the start of the message body)."""

    def __init__(self, field: str, offset: int, reason: str) -> None:
        super().__init__(f"{field} at offset {offset}: {reason}")
        self.field = field
        self.offset = offset
        self.reason = reason


class Reader:
    """Reads fields from ``data[start:end]``; offsets in errors are absolute within ``data``."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def offset(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def span(self) -> tuple[bytes, int, int]:
        """``(data, position, end)`` for a decoder's fast path that indexes the bytes directly; it
        hands back what it consumed with :meth:`seek` and leaves anything short to the checked
        methods, so that errors still name the field."""
        return self._data, self._pos, self._end

    def seek(self, pos: int) -> None:
        if not self._pos <= pos <= self._end:
            raise ValueError(f"seek to {pos} outside {self._pos}..{self._end}")
        self._pos = pos

    def _need(self, n: int, field: str) -> int:
        pos = self._pos
        if pos + n > self._end:
            raise WireError(field, pos, f"needs {n} bytes, {self._end - pos} left")
        self._pos = pos + n
        return pos

    # u8, u16 and bytes are the hot path of every decoder: the bounds check is inlined.
    def u8(self, field: str) -> int:
        pos = self._pos
        if pos >= self._end:
            self._need(1, field)
        self._pos = pos + 1
        return self._data[pos]

    def u16(self, field: str) -> int:
        pos = self._pos
        if pos + 2 > self._end:
            self._need(2, field)
        self._pos = pos + 2
        return (self._data[pos] << 8) | self._data[pos + 1]

    def u24(self, field: str) -> int:
        pos = self._need(3, field)
        d = self._data
        return (d[pos] << 16) | (d[pos + 1] << 8) | d[pos + 2]

    def u32(self, field: str) -> int:
        pos = self._need(4, field)
        return _U32.unpack_from(self._data, pos)[0]

    def bytes(self, n: int, field: str) -> bytes:
        pos = self._pos
        if pos + n > self._end:
            self._need(n, field)
        self._pos = pos + n
        return bytes(self._data[pos : pos + n])

    def rest(self) -> bytes:
        pos, self._pos = self._pos, self._end
        return bytes(self._data[pos : self._end])

    def _length(self, lenlen: int, field: str) -> int:
        if lenlen == 1:
            return self.u8(field + " length")
        if lenlen == 2:
            return self.u16(field + " length")
        if lenlen == 3:
            return self.u24(field + " length")
        raise ValueError(f"length prefix of {lenlen} bytes")

    def vec(self, lenlen: int, field: str) -> bytes:
        """An opaque vector ``<0..2^(8*lenlen)-1>``."""
        n = self._length(lenlen, field)
        return self.bytes(n, field)

    def vec_len(self, lenlen: int, field: str) -> int:
        """The length of an opaque vector, skipped without copying it (same checks as :meth:`vec`)."""
        n = self._length(lenlen, field)
        pos = self._pos
        if pos + n > self._end:
            self._need(n, field)
        self._pos = pos + n
        return n

    def scope(self, n: int, field: str) -> Reader:
        """A sub-reader over the next ``n`` bytes, consumed from this reader."""
        pos = self._need(n, field)
        return Reader(self._data, pos, pos + n)

    def sub(self, lenlen: int, field: str) -> Reader:
        """A sub-reader over a length-prefixed block."""
        n = self._length(lenlen, field)
        return self.scope(n, field)

    def u16_list(self, lenlen: int, field: str) -> tuple[int, ...]:
        """A vector of uint16 values (cipher suites, groups, signature schemes, versions)."""
        n = self._length(lenlen, field)
        if n % 2:
            raise WireError(field, self._pos - lenlen, f"odd length {n} for a list of uint16")
        pos = self._need(n, field)
        return struct.unpack_from(f">{n // 2}H", self._data, pos)

    def u8_list(self, lenlen: int, field: str) -> tuple[int, ...]:
        return tuple(self.vec(lenlen, field))

    def expect_end(self, field: str) -> None:
        if self._pos != self._end:
            raise WireError(field, self._pos, f"{self._end - self._pos} unexpected trailing bytes")
