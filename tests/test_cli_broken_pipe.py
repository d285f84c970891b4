"""``tlsproxy analyze FILE | head``: when the reader of the output goes away, tlsproxy stops at
once and quietly (exit 141, as a shell reports for a tool stopped by SIGPIPE), with no traceback,
and a ``--save`` file is still a complete, loadable session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
MANY = CORPUS / "ja4" / "tls-handshake.pcapng"  # 59 connections


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"corpus capture {path.name} not available (../shared/corpus)")
    return path


def run_with_reader_gone(*args: str) -> tuple[int, str]:
    """Run ``tlsproxy analyze`` with its standard output a pipe whose reader has already gone."""
    proc = subprocess.Popen([sys.executable, "-m", "tlsproxy", "analyze", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_output_reader_gone_stops_quietly(jobs: str) -> None:
    code, err = run_with_reader_gone("-j", jobs, str(need(MANY)))
    assert code == 141
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert err == ""


def test_session_file_is_complete_when_the_reader_goes(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    code, err = run_with_reader_gone("--save", str(out), str(need(MANY)))
    assert code == 141 and "Traceback" not in err
    doc = json.loads(out.read_text())  # a finished document, not a cut-off journal
    assert isinstance(doc["connections"], list)
