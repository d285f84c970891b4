"""Reading an NSS key log file (``SSLKEYLOGFILE``) into a sans-IO :class:`KeyLog`, following it
as clients append to it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from tlsproxy.wire.keylog import KeyLog, KeyLogProblem

# One poll reads at most this much: a key log line is ~200 bytes, so this is thousands of
# handshakes' worth, and a huge unrelated file cannot stall the event loop.
MAX_READ = 4 << 20


class KeyLogFile:
    """Follows a key log file: ``poll()`` reads what was appended since the last call.

    A file that does not exist yet is fine (clients create it on their first handshake); a file
    that shrank was rewritten, so it is read again from the start.  Malformed lines are reported
    on ``warn`` once, never fatal.
    """

    def __init__(self, path: str | os.PathLike[str], *, keylog: KeyLog | None = None,
                 warn: TextIO | None = None) -> None:
        self.path = Path(path)
        self.keylog = keylog or KeyLog()
        self.problems: list[KeyLogProblem] = []
        self._pos = 0
        self._warn = warn if warn is not None else sys.stderr

    def poll(self) -> bool:
        """Read new lines; ``True`` when the key log learned something new."""
        before = self.keylog.version
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        if size < self._pos:
            self._pos = 0
        if size == self._pos:
            return False
        with self.path.open("rb") as fh:
            fh.seek(self._pos)
            data = fh.read(MAX_READ)
        self._pos += len(data)
        problems = self.keylog.feed_text(data.decode("utf-8", "replace"))
        self._report(problems)
        return self.keylog.version != before

    def load(self) -> None:
        """Read the whole file now (captures and saved sessions: it will not grow)."""
        while self.poll():
            pass
        self._report(self.keylog.close())

    def _report(self, problems: list[KeyLogProblem]) -> None:
        for p in problems:
            self.problems.append(p)
            if p.kind == "malformed":
                print(f"tlsproxy: key log {self.path} line {p.line_no}: {p.reason}", file=self._warn)
