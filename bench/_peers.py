"""Real TLS bytes for the benchmarks (Python ssl over MemoryBIO), importable without pytest."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers import contexts, make_pki, run_session  # noqa: E402

__all__ = ["contexts", "make_pki", "run_session", "tmpdir"]


def tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tlsproxy-bench-"))
