"""Console output that never blocks the relay.

The transcript is written on the event loop that forwards the bytes.  A plain ``sys.stdout``
blocks when nobody reads it (``tlsproxy | less`` left unscrolled, a slow ``tee``, a terminal
paused with Ctrl-S), and a blocked write would freeze every proxied connection.  Here writes only
append to a bounded buffer; a thread moves it to the real stream.  When the buffer is full, further
output is dropped and counted instead: the peers matter more than the transcript.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import TextIO

# Output held for a slow reader before lines are dropped: a few seconds of a busy transcript.
MAX_PENDING = 4 << 20


class BackgroundWriter(io.TextIOBase):
    """A text stream whose ``write`` returns at once (see the module docstring)."""

    def __init__(self, stream: TextIO, *, max_pending: int = MAX_PENDING) -> None:
        super().__init__()
        self._stream = stream
        self._max = max_pending
        self._chunks: list[str] = []
        self._pending = 0
        self.dropped = 0  # characters not written because the reader fell behind
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tlsproxy-output", daemon=True)
        self._thread.start()

    # -- the file-like surface rich uses ----------------------------------------------------

    def write(self, text: str) -> int:
        with self._lock:
            if self._pending + len(text) > self._max:
                self.dropped += len(text)
                return len(text)
            self._chunks.append(text)
            self._pending += len(text)
            self._idle.clear()
            self._wake.notify()
        return len(text)

    def flush(self) -> None:
        """Never waits for the reader: the thread flushes after each batch."""

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    # -- draining ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._chunks and not self._closing:
                    self._idle.set()
                    self._wake.wait()
                if not self._chunks and self._closing:
                    self._idle.set()
                    return
                batch, self._chunks = self._chunks, []
                self._pending = 0
            try:
                self._stream.write("".join(batch))
                self._stream.flush()
            except (OSError, ValueError):
                with self._lock:
                    self._closing = True
                    self._chunks.clear()
                    self._idle.set()
                return

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for what was written to reach the stream."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:  # type: ignore[override]
        """Flush what is pending (bounded by ``timeout``), stop the thread, say what was lost."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        if self.dropped:
            print(f"tlsproxy: {self.dropped} characters of transcript were dropped because the output "
                  "was not read fast enough (the relay was never held up)", file=sys.stderr)
        super().close()
