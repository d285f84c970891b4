"""Every capture of the shared corpus, through the capture front end and the wire core, decodes
to the message sequence tshark found (see ``../shared/corpus/MANIFEST.md``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.wirehelp import tshark_style
from tlsproxy.frontends.capture import analyze_capture
from tlsproxy.wire import events as ev
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.decrypt import ConnectionDecryptor
from tlsproxy.wire.keylog import KeyLog

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
pytestmark = pytest.mark.skipif(not (CORPUS / "MANIFEST.md").exists(), reason=f"corpus not found at {CORPUS}")

# Where our reading differs from tshark's, and why we are right (each checked by hand).
KNOWN_DIFFERENCES = {
    # tshark leaves the 21-record Certificate unparsed; we reassemble it.
    ("zeek/tls-fragmented-handshake.pcap", 0): (
        "C: ClientHello | S: ServerHello,Certificate(1),ServerKeyExchange,ServerHelloDone"),
}


# Captures made to be broken: decode errors there are the expected result.
DAMAGED = {"suricata-verify/tls_DER-incomplete-header.pcap"}


class WireCollector:
    """Stands where the pipeline stands: one TLSConnection per connection, events kept."""

    def __init__(self, keylog: KeyLog | None = None) -> None:
        self.keylog = keylog
        self.conns: dict[int, TLSConnection] = {}
        self.events: dict[int, list[ev.Event]] = {}
        self.info: dict[int, object] = {}
        self.ends: dict[int, object] = {}

    def open(self, info) -> None:
        decryptor = ConnectionDecryptor(self.keylog) if self.keylog is not None else None
        self.conns[info.id] = TLSConnection(decryptor=decryptor)
        self.events[info.id] = []
        self.info[info.id] = info

    def data(self, conn_id, direction, data, at) -> None:
        self.events[conn_id] += self.conns[conn_id].feed(direction, data, at=at)

    def eof(self, conn_id, direction, at) -> None:
        self.events[conn_id] += self.conns[conn_id].feed(direction, b"", at=at)

    def gap(self, conn_id, direction, length, at) -> None:
        self.events[conn_id] += self.conns[conn_id].gap(direction, length, at=at)

    def close(self, conn_id, end) -> None:
        self.ends[conn_id] = end

    def by_endpoints(self) -> dict[tuple[str, str], list[ev.Event]]:
        """Events per connection, keyed like the tshark summaries: ("client:port", "server:port")."""
        return {(_endpoint(self.info[c].client), _endpoint(self.info[c].server)): events
                for c, events in self.events.items()}


def _captures() -> list[Path]:
    if not CORPUS.exists():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def analyse(path: Path, keylog: KeyLog | None = None) -> WireCollector:
    collector = WireCollector(keylog)
    collector.stats = analyze_capture(path, collector)  # type: ignore[arg-type]
    return collector


def _endpoint(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


@pytest.mark.parametrize("capture", _captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_matches_tshark(capture: Path):
    expected = _tshark(capture)
    collector = analyse(capture)
    ours = collector.by_endpoints()
    rel = f"{capture.parent.name}/{capture.name}"
    for stream in expected["streams"]:
        key = (stream["client"], stream["server"])
        assert key in ours, f"{rel}: stream {stream['stream']} {key} not analysed; we have {sorted(ours)}"
        events = ours[key]
        if rel not in DAMAGED:
            for e in events:
                assert not (isinstance(e, ev.DecodeError) and e.where == "handshake" and "cap" in e.reason)
        got = tshark_style(events)
        want = KNOWN_DIFFERENCES.get((rel, stream["stream"]), stream["seq"])
        assert got == want, f"{rel} stream {stream['stream']}"


def _tshark(capture: Path) -> dict:
    return json.loads((capture.parent / "tshark" / f"{capture.name}.tshark.json").read_text())


def _with_keylogs() -> list[Path]:
    return [p for p in _captures() if "decrypted_with" in _tshark(p)]


@pytest.mark.parametrize("capture", _with_keylogs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_capture_with_keylog_matches_tshark_decrypted(capture: Path):
    expected = _tshark(capture)
    keylog = KeyLog()
    keylog.feed_text((CORPUS / expected["decrypted_with"]).read_text())
    keylog.close()
    collector = analyse(capture, keylog)
    ours = collector.by_endpoints()
    rel = f"{capture.parent.name}/{capture.name}"
    plain = {s["stream"]: s["seq"] for s in expected["streams"]}
    for stream in expected["decrypted_streams"]:
        events = ours[(stream["client"], stream["server"])]
        if (rel, stream["stream"]) in NOT_DECRYPTED:
            assert any(isinstance(e, ev.DecryptionFailed) and "cannot decrypt" in e.reason for e in events)
            want = plain[stream["stream"]]
        else:
            want = stream["seq"]
        assert tshark_style(events) == want, f"{rel} stream {stream['stream']}"


# 40-bit EXPORT suites (RC4-40, RC2-40, DES-40) tshark opens and we do not: RC2 is not in
# cryptography and export key derivation is not implemented.  We say so (DecryptionFailed) and
# show the records as encrypted.
NOT_DECRYPTED = {("wireshark-notes/ssl3-dump.pcapng", n) for n in (0, 3, 5)}


def test_damaged_capture_is_analysed_up_to_the_damage():
    collector = analyse(CORPUS / "suricata-verify" / "tls_DER-incomplete-header.pcap")
    assert collector.stats.error and "damaged" in collector.stats.error
    (events,) = collector.events.values()  # the connection before the damage was still analysed
    assert tshark_style(events) == "C: ClientHello | S: ServerHello,Certificate(1)"
    # Suricata expects "invalid handshake message": bytes after the Certificate claim 16 MiB.
    errors = [e for e in events if isinstance(e, ev.DecodeError)]
    assert any("claims 16777215 bytes" in e.reason for e in errors)


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (Wireshark) not installed")
def test_key_log_embedded_in_pcapng_is_used(tmp_path):
    """``editcap --inject-secrets`` stores a key log in the capture; analysing it needs no --keylog."""
    source = CORPUS / "illustrated" / "illustrated-tls13.pcap"
    target = tmp_path / "with-secrets.pcapng"
    subprocess.run(["editcap", "--inject-secrets", f"tls,{CORPUS / 'illustrated' / 'illustrated-tls13.keylog'}",
                    "-F", "pcapng", str(source), str(target)], check=True, capture_output=True)
    keylog = KeyLog()
    collector = WireCollector(keylog)
    stats = analyze_capture(target, collector, keylog=keylog)  # type: ignore[arg-type]
    assert stats.embedded_secrets == 1 and len(keylog) > 0
    (events,) = collector.events.values()
    expected = json.loads((CORPUS / "illustrated" / "tshark" / "illustrated-tls13.pcap.tshark.json").read_text())
    assert tshark_style(events) == expected["decrypted_streams"][0]["seq"]
