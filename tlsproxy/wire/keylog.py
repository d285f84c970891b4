"""NSS key log parsing (the ``SSLKEYLOGFILE`` format), sans-IO.

The caller reads or follows the file and hands its text over in whatever chunks it got; a line
is only parsed once its newline has arrived, so a writer caught mid-line is never misread.  Bad
lines come back as :class:`KeyLogProblem` values and never raise: a key log is operator input
and one typo must not cost the secrets on the other lines.

Format (one entry a line, fields separated by spaces)::

    <LABEL> <client_random hex, 32 bytes> <secret hex>

``CLIENT_RANDOM`` carries the 48-byte TLS <= 1.2 master secret; the TLS 1.3 labels carry
traffic secrets whose length is the suite's hash length.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

#: Labels we keep, with the secret lengths that make sense for each.  TLS 1.3 secrets are one
#: hash long (SHA-256 or SHA-384); the master secret of TLS <= 1.2 is always 48 bytes.
_TLS13_LENGTHS = frozenset({32, 48})
SECRET_LENGTHS: dict[str, frozenset[int]] = {
    "CLIENT_RANDOM": frozenset({48}),
    "CLIENT_EARLY_TRAFFIC_SECRET": _TLS13_LENGTHS,
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET": _TLS13_LENGTHS,
    "SERVER_HANDSHAKE_TRAFFIC_SECRET": _TLS13_LENGTHS,
    "CLIENT_TRAFFIC_SECRET_0": _TLS13_LENGTHS,
    "SERVER_TRAFFIC_SECRET_0": _TLS13_LENGTHS,
    "EXPORTER_SECRET": _TLS13_LENGTHS,
}

#: Labels that are valid NSS key log entries but that we cannot use: ``RSA`` lines name the
#: pre-master secret by its encrypted prefix (we would need the ClientKeyExchange to match
#: it), and the early exporter secret opens no record.
UNSUPPORTED_LABELS = frozenset({"RSA", "EARLY_EXPORTER_SECRET"})

#: A real key log line is under 250 characters.  A "line" that grows past this without a
#: newline is not a key log (or is a binary file fed by mistake): drop it rather than buffer
#: without limit while waiting for a newline that never comes.
MAX_LINE = 4096

_RANDOM_LEN = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLogProblem:
    """A line we could not use.  ``kind`` is ``"malformed"`` (not parseable as a key log
    entry) or ``"unsupported"`` (a well-formed entry of a kind we do not use)."""

    line_no: int
    reason: str
    kind: str = "malformed"


class KeyLog:
    """Secrets by client random, fed incrementally.

    ``version`` increases each time a feed adds or changes a secret, so a connection waiting
    for keys only needs to compare one integer to know whether retrying can help.
    """

    __slots__ = ("_secrets", "_tail", "_line_no", "version")

    def __init__(self) -> None:
        self._secrets: dict[bytes, dict[str, bytes]] = {}
        self._tail = ""
        self._line_no = 0
        self.version = 0

    def feed_text(self, text: str) -> list[KeyLogProblem]:
        """Parse every complete line in ``self._tail + text``; keep the unterminated rest."""
        problems: list[KeyLogProblem] = []
        data = self._tail + text
        lines = data.split("\n")
        tail = lines.pop()
        for line in lines:
            self._line_no += 1
            self._parse_line(line, problems)
        if len(tail) > MAX_LINE:
            self._line_no += 1
            problems.append(
                KeyLogProblem(line_no=self._line_no, reason=f"line longer than {MAX_LINE} characters")
            )
            tail = ""
        self._tail = tail
        return problems

    def close(self) -> list[KeyLogProblem]:
        """End of input: parse a last line that has no newline."""
        if not self._tail:
            return []
        tail, self._tail = self._tail, ""
        return self.feed_text(tail + "\n")

    def secrets_for(self, client_random: bytes) -> dict[str, bytes]:
        """All secrets logged for ``client_random``, by label (a copy; empty if none)."""
        return dict(self._secrets.get(bytes(client_random), {}))

    def __len__(self) -> int:
        """How many client randoms have at least one secret."""
        return len(self._secrets)

    def _parse_line(self, line: str, problems: list[KeyLogProblem]) -> None:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            return
        fields = stripped.split()
        label = fields[0]
        line_no = self._line_no

        def bad(reason: str, kind: str = "malformed") -> None:
            problems.append(KeyLogProblem(line_no=line_no, reason=reason, kind=kind))

        if label in UNSUPPORTED_LABELS:
            return bad(f"{label} entries are not used for decryption", "unsupported")
        if label not in SECRET_LENGTHS:
            if label.isupper() and len(fields) == 3:
                return bad(f"unknown label {label}", "unsupported")
            return bad("not a key log entry (expected LABEL CLIENT_RANDOM SECRET)")
        if len(fields) != 3:
            return bad(f"{label} needs 2 hex fields, got {len(fields) - 1}")
        try:
            client_random = binascii.unhexlify(fields[1])
            secret = binascii.unhexlify(fields[2])
        except (binascii.Error, ValueError):
            return bad(f"{label}: a field is not hex")
        if len(client_random) != _RANDOM_LEN:
            return bad(f"{label}: client random is {len(client_random)} bytes, expected 32")
        lengths = SECRET_LENGTHS[label]
        if len(secret) not in lengths:
            want = " or ".join(str(n) for n in sorted(lengths))
            return bad(f"{label}: secret is {len(secret)} bytes, expected {want}")
        entry = self._secrets.setdefault(client_random, {})
        if entry.get(label) != secret:
            entry[label] = secret
            self.version += 1
        return None
