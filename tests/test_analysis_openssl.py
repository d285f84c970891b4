"""The analyzer on handshakes between ``openssl s_server`` and ``s_client`` through a loopback
recording relay: the cases Python's ``ssl`` cannot produce (a server that names its client CAs,
a HelloRetryRequest)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.certfactory import make_chain
from tests.peers import Pki, make_pki
from tests.recording_relay import RecordingRelay, analyse_relay, free_port
from tlsproxy.analysis.tracker import AnalysisOptions

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("ossl"))


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"s_server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("s_server did not start")


def run_openssl(server_args: list[str], client_args: list[str]) -> tuple[list, str | None, str]:
    port = free_port()
    # -naccept 2: the readiness probe takes the first accept.
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "2", "-quiet",
                               *server_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(port, server)
        relay = RecordingRelay(port)
        client = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{relay.port}", *client_args],
                                input=b"", capture_output=True, timeout=20)
        chunks = relay.wait()
    finally:
        server.kill()
        server.wait()
    return chunks, relay.reset_by, client.stdout.decode(errors="replace") + client.stderr.decode(errors="replace")


def test_client_cert_not_from_requested_ca(pki: Pki, tmp_path: Path) -> None:
    """OpenSSL clients send their certificate even when it does not match the server's CA list;
    the server answers unknown_ca(48)."""
    other = make_chain("intruder.example", root_name="Some Other Root CA", eku=("clientAuth",)).write_pem(
        tmp_path, "other")
    chunks, reset_by, out = run_openssl(
        ["-cert", str(pki.server_cert), "-key", str(pki.server_key), "-Verify", "1", "-verify_return_error",
         "-CAfile", str(pki.client_ca), "-tls1_2"],
        ["-cert", str(other.cert), "-key", str(other.key), "-CAfile", str(pki.server_ca), "-tls1_2",
         "-servername", "localhost"])
    tracker = analyse_relay(chunks, options=AnalysisOptions(trust_pems=pki.server.root.pem), reset_by=reset_by)
    codes = {f.code for f in tracker.findings}
    assert {"CLIENT_CERT_REQUESTED", "CLIENT_CERT_SENT", "CLIENT_CERT_CA_MISMATCH", "ALERT_FATAL"} <= codes, out
    request = next(f for f in tracker.findings if f.code == "CLIENT_CERT_REQUESTED")
    assert "tlsproxy Client Root CA" in request.detail
    mismatch = next(f for f in tracker.findings if f.code == "CLIENT_CERT_CA_MISMATCH")
    assert "intruder.example" in mismatch.detail and "tlsproxy Client Root CA" in mismatch.detail
    d = tracker.diagnose()
    assert (d.outcome, d.gave_up) == ("client_cert_rejected", "server")
    assert "unknown_ca(48)" in d.cause and "does not chain to any CA the server named" in d.cause


def test_client_without_certificate_against_verify(pki: Pki) -> None:
    chunks, reset_by, out = run_openssl(
        ["-cert", str(pki.server_cert), "-key", str(pki.server_key), "-Verify", "1", "-verify_return_error",
         "-CAfile", str(pki.client_ca), "-tls1_2"],
        ["-CAfile", str(pki.server_ca), "-tls1_2", "-servername", "localhost"])
    tracker = analyse_relay(chunks, options=AnalysisOptions(trust_pems=pki.server.root.pem), reset_by=reset_by)
    d = tracker.diagnose()
    assert d.outcome == "client_cert_missing", (d, out)
    assert "CLIENT_CERT_EMPTY" in {f.code for f in tracker.findings}
    empty = next(f for f in tracker.findings if f.code == "CLIENT_CERT_EMPTY")
    assert "tlsproxy Client Root CA" in empty.detail  # the CA names the client should have matched


def test_hello_retry_request(pki: Pki) -> None:
    chunks, reset_by, out = run_openssl(
        ["-cert", str(pki.server_cert), "-key", str(pki.server_key), "-groups", "P-384", "-tls1_3"],
        ["-CAfile", str(pki.server_ca), "-groups", "X25519:P-384", "-tls1_3", "-servername", "localhost"])
    tracker = analyse_relay(chunks, options=AnalysisOptions(trust_pems=pki.server.root.pem), reset_by=reset_by)
    hrr = next(f for f in tracker.findings if f.code == "HELLO_RETRY_REQUEST")
    assert "secp384r1" in hrr.detail and "x25519" in hrr.detail
    d = tracker.diagnose()
    assert d.outcome == "established", out
    assert d.negotiation["groups"]["hello_retry_request"] == "secp384r1"  # type: ignore[index]
    assert not [f for f in tracker.findings if f.severity.name == "error"]
