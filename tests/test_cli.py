"""The command line, and the nothing-lost promises tested by killing a real proxy process."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from tlsproxy.cli import EXIT_FINDINGS, EXIT_INPUT, _normalise_argv, build_parser, main
from tlsproxy.demo_pki import DemoPki, make_demo_pki
from tlsproxy.sinks.sessionjson import SCHEMA_PATH, load_session

SCHEMA = json.loads(SCHEMA_PATH.read_text())
ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus capture {name} not available at {CORPUS}")
    return path


# -- parsing --------------------------------------------------------------------------------


def test_run_is_the_default_subcommand():
    assert _normalise_argv(["--upstream", "example.com:443"])[0] == "run"
    assert _normalise_argv(["demo"]) == ["demo"]
    assert _normalise_argv(["--help"]) == ["--help"]
    ns = build_parser().parse_args(_normalise_argv(["--upstream", "example.com:443", "-q"]))
    assert ns.command == "run" and ns.quiet


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "exit status" in text
    for line in ("1  analyze/replay/demo", "4  a file cannot be read"):
        assert line in text
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    sub = capsys.readouterr().out
    assert "--fail-on" in sub and "--json" in sub and "--save FILE" in sub and "--keylog" in sub


def test_missing_input_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["replay", str(tmp_path / "nope.json")]) == EXIT_INPUT
    assert "cannot read" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nope.pcap")]) == EXIT_INPUT


def test_analyze_json_is_schema_valid(capsys: pytest.CaptureFixture[str]):
    path = corpus("illustrated/illustrated-tls13.pcap")
    assert main(["analyze", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["command"] == "analyze"
    assert doc["connections"][0]["summary"]["sni"] == "example.ulfheim.net"


def test_analyze_fail_on(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    path = corpus("hotplace/tls13-handshake-failure.pcapng")
    assert main(["analyze", str(path), "-q", "--no-color"]) == 0
    assert main(["analyze", str(path), "-q", "--no-color", "--fail-on", "error"]) == EXIT_FINDINGS
    saved = tmp_path / "a.json"
    assert main(["analyze", str(path), "-q", "--save", str(saved)]) == 0
    jsonschema.validate(json.loads(saved.read_text()), SCHEMA)
    assert "no_shared_parameters" in capsys.readouterr().out


# -- a real proxy process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsServer:
    """A blocking TLS server on loopback that answers one line per connection."""

    def __init__(self, pki: DemoPki) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                while data := tls.recv(4096):
                    tls.sendall(b"echo:" + data)
        except (ssl.SSLError, OSError):
            pass


@pytest.fixture()
def upstream(tmp_path: Path) -> Iterator[tuple[TlsServer, DemoPki]]:
    pki = make_demo_pki(tmp_path)
    server = TlsServer(pki)
    yield server, pki
    server.stop.set()
    server.thread.join(2)
    server.sock.close()


def start_proxy(tmp_path: Path, upstream_port: int, save: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(tmp_path / "proxy.log", "wb")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "tlsproxy", "run", "--listen", f"127.0.0.1:{port}",
                             "--upstream", f"127.0.0.1:{upstream_port}", "--save", str(save), "--grace", "1",
                             "-q"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 20
    while b"listening on" not in (tmp_path / "proxy.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError((tmp_path / "proxy.log").read_text())
        time.sleep(0.05)
    return proc, port


def client_ctx(pki: DemoPki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.server_ca)
    return ctx


def talk(port: int, pki: DemoPki, *, close: bool = True) -> ssl.SSLSocket:
    tls = client_ctx(pki).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                      server_hostname="localhost")
    tls.sendall(b"hello\n")
    assert tls.recv(100) == b"echo:hello\n"
    if close:
        tls.close()
    return tls


def wait_for(path: Path, needle: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and needle in path.read_text()):
        assert time.monotonic() < deadline, f"{needle!r} never appeared in {path}"
        time.sleep(0.05)


@pytest.mark.network
def test_sigterm_leaves_a_complete_valid_document(tmp_path: Path, upstream):
    server, pki = upstream
    save = tmp_path / "session.json"
    proc, port = start_proxy(tmp_path, server.port, save)
    try:
        talk(port, pki)
        open_conn = talk(port, pki, close=False)  # still open at SIGTERM
        wait_for(save, '"j":"close"')
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        open_conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    doc = json.loads(save.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["complete"] is True and doc["command"] == "run"
    assert len(doc["connections"]) == 2
    assert all(c["close"] is not None for c in doc["connections"])
    assert doc["connections"][0]["summary"]["outcome"] == "established"
    assert (save.stat().st_mode & 0o777) == 0o600


@pytest.mark.network
def test_sigkill_leaves_a_journal_that_replay_reads(tmp_path: Path, upstream, capsys: pytest.CaptureFixture[str]):
    server, pki = upstream
    save = tmp_path / "session.json"
    proc, port = start_proxy(tmp_path, server.port, save)
    try:
        talk(port, pki)
        open_conn = talk(port, pki, close=False)
        wait_for(save, '"j":"close"')
        wait_for(save, '"conn":2')
        time.sleep(0.3)
        proc.kill()
        proc.wait(timeout=10)
        open_conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    first = json.loads(save.read_text().splitlines()[0])
    assert first["format"] == "tlsproxy-session-journal"
    doc = load_session(save)
    jsonschema.validate(doc, SCHEMA)
    assert doc["complete"] is False
    one, two = doc["connections"]
    assert one["diagnosis"]["outcome"] == "established"
    assert two["close"] is None
    assert any(e["kind"] == "handshake" and e["type"] == "client_hello" for e in two["events"])
    assert main(["replay", str(save), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "#1" in out and "#2" in out and "client_hello" in out


@pytest.mark.network
def test_existing_save_file_refused_before_listening(tmp_path: Path):
    save = tmp_path / "exists.json"
    save.write_text("keep me")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "tlsproxy", "--listen", f"127.0.0.1:{free_port()}",
                             "--upstream", "127.0.0.1:9", "--save", str(save)], capture_output=True, text=True,
                            env=env, timeout=30)
    assert result.returncode == EXIT_INPUT
    assert "already exists" in result.stderr
    assert save.read_text() == "keep me"


def test_max_handshake_size_option_reaches_the_parser():
    """`--max-handshake-size` caps reassembly: a corpus certificate bigger than the cap is refused."""
    capture = corpus("zeek/tls1.2.pcap")
    out = subprocess.run([sys.executable, "-m", "tlsproxy", "analyze", "--json", "--max-handshake-size", "1000",
                          str(capture)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "over the 1000-byte cap" in json.dumps(json.loads(out.stdout))


def test_analyze_in_process_leaves_the_collector_as_it_found_it(capsys: pytest.CaptureFixture[str]) -> None:
    """``analyze`` tunes the cycle collector for its run; a caller in the same process gets it back."""
    import gc

    capture = CORPUS / "ja4" / "tls-handshake.pcapng"
    if not capture.exists():
        pytest.skip("corpus capture ja4/tls-handshake.pcapng not available (../shared/corpus)")
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert main(["analyze", "-q", "-j", "1", str(capture)]) == 0
    assert " diagnosis " in capsys.readouterr().out  # it really analysed the capture
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == frozen
