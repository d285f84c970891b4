"""The scripts in examples/ run and say what they promise (skipped when a tool is missing)."""

from __future__ import annotations

import os
import shutil
import socket
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1", TLSPROXY=f"{sys.executable} -m tlsproxy", **extra)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def test_library_example_diagnoses_the_missing_client_certificate():
    result = subprocess.run([sys.executable, str(EXAMPLES / "library.py")], capture_output=True, text=True,
                            env=env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "→ client_hello" in result.stdout
    assert "outcome: client_cert_missing" in result.stdout


def test_analyze_capture_example():
    capture = CORPUS / "illustrated" / "illustrated-tls12.pcap"
    if not capture.exists():
        pytest.skip(f"corpus capture not available at {capture}")
    result = subprocess.run([sys.executable, str(EXAMPLES / "analyze_capture.py"), str(capture)],
                            capture_output=True, text=True, env=env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "example.ulfheim.net TLS 1.2 -> established" in result.stdout


@pytest.mark.network
def test_openssl_s_server_example():
    need("bash", "openssl")
    result = subprocess.run(["bash", str(EXAMPLES / "openssl_s_server.sh")], capture_output=True, text=True,
                            env=env(SERVER_PORT=free_port(), PROXY_PORT=free_port()), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "HTTP/1.0 200 ok" in out
    assert "client_hello" in out and "sni=localhost" in out
    replay = out[out.index("--- replay"):]
    # -q gives a clean connection one line: "#1 established (inferred)  client → sni  ..."
    assert re.search(r"#1 established\b", replay)


@pytest.mark.network
def test_curl_connect_example():
    need("bash", "openssl", "curl")
    result = subprocess.run(["bash", str(EXAMPLES / "curl_connect.sh")], capture_output=True, text=True,
                            env=env(SERVER_PORT=free_port(), PROXY_PORT=free_port()), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<HTML>" in result.stdout
    assert "connect mode" in result.stdout
    assert re.search(r"#\d+ established\b", result.stdout)
