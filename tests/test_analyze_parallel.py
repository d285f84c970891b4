"""``tlsproxy analyze --jobs N``: connections analysed in N processes give exactly the output of
one process (transcript, session JSON, exit table, exit code), and a dead worker is an error,
never a hang or a silently shorter report."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tlsproxy.capture.pcap import iter_packets
from tlsproxy.frontends.parallel import PIPE_SIZE, ShardedPipeline, ShardOutput, WorkerFailed
from tlsproxy.reports import ConnectionEnd, ConnectionInfo
from tlsproxy.wire.events import Direction

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
MANY = CORPUS / "ja4" / "tls-handshake.pcapng"  # 59 connections
FAILING = CORPUS / "hotplace" / "tls13-handshake-failure.pcapng"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"corpus capture {path.name} not available (../shared/corpus)")
    return path


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlsproxy", "analyze", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def document(text: str) -> dict:
    doc = json.loads(text)
    for key in ("started", "ended", "started_unix", "ended_unix"):
        doc.pop(key, None)
    return doc


@pytest.mark.parametrize("mode", [[], ["-q"], ["-v"]])
def test_transcript_is_the_same_for_any_number_of_jobs(mode: list[str]) -> None:
    path = str(need(MANY))
    one = analyze("-j", "1", *mode, path)
    three = analyze("-j", "3", *mode, path)
    assert one.returncode == three.returncode == 0
    assert len(set(re.findall(r"#(\d+) ", one.stdout))) == 59  # every connection is in it
    assert three.stdout == one.stdout
    assert three.stderr == one.stderr


def without_status_line(text: str) -> str:
    """The transcript without the live status line (which only one process can keep)."""
    text = re.sub(r"\x1b\[\?25[lh]|\x1b\[2K|\x1b\[1A|\r", "", text)
    return "".join(line for line in text.splitlines(True)
                   if line.strip() and not (" open, " in line and " closed" in line))


def test_terminal_rendering_is_the_same_for_any_number_of_jobs() -> None:
    """On a terminal the workers render rich panels at the parent's width and colours."""
    path = str(need(MANY))
    env = {"TTY_COMPATIBLE": "1", "NO_COLOR": ""}
    one = analyze("-j", "1", path, env=env)
    two = analyze("-j", "2", path, env=env)
    assert "\x1b[" in one.stdout and "╭" in one.stdout  # really the styled, boxed rendering
    assert " open, " not in two.stdout  # no status line from several processes
    assert without_status_line(two.stdout) == without_status_line(one.stdout)


def test_session_json_and_exit_code_are_the_same(tmp_path: Path) -> None:
    path = str(need(FAILING))
    merged = tmp_path / "merged.pcapng"
    if shutil.which("mergecap") is None:
        pytest.skip("mergecap (Wireshark) not installed")
    # Several captures in one file: a failing connection among 59 good ones.
    subprocess.run(["mergecap", "-w", str(merged), path, str(need(MANY))], check=True, capture_output=True)
    one = analyze("-j", "1", "--json", "--fail-on", "error", str(merged))
    two = analyze("-j", "2", "--json", "--fail-on", "error", str(merged))
    assert one.returncode == two.returncode == 1  # the failing handshake's error
    assert document(two.stdout) == document(one.stdout)
    assert len(document(one.stdout)["connections"]) == 60
    saved1, saved2 = tmp_path / "one.json", tmp_path / "two.json"
    analyze("-j", "1", "-q", "--save", str(saved1), str(merged))
    analyze("-j", "2", "-q", "--save", str(saved2), str(merged))
    assert document(saved2.read_text()) == document(saved1.read_text())


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (Wireshark) not installed")
def test_key_log_embedded_in_the_capture_reaches_every_worker(tmp_path: Path) -> None:
    source = need(CORPUS / "illustrated" / "illustrated-tls13.pcap")
    target = tmp_path / "with-secrets.pcapng"
    subprocess.run(["editcap", "--inject-secrets", f"tls,{CORPUS / 'illustrated' / 'illustrated-tls13.keylog'}",
                    "-F", "pcapng", str(source), str(target)], check=True, capture_output=True)
    one = analyze("-j", "1", "-v", str(target))
    two = analyze("-j", "2", "-v", str(target))
    assert "decrypting with the key log embedded" in two.stderr
    assert "finished" in two.stdout  # the encrypted handshake messages were decrypted
    assert two.stdout == one.stdout


# -- the sharding itself, with a worker side that records what it was asked ----------------------


class Echo:
    """A worker side whose pipeline prints each call it receives (and can be told to die)."""

    def __init__(self, die_on: int | None = None) -> None:
        self.pipeline = self
        self.die_on = die_on
        self.worst = None
        self.reports_count = 0
        self._out: list[str] = []

    def open(self, info: ConnectionInfo) -> None:
        self._out.append(f"open {info.id}\n")

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        if conn_id == self.die_on:
            os._exit(3)
        self._out.append(f"data {conn_id} {direction.value} {data.decode()}\n")

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        pass

    def gap(self, conn_id: int, direction: Direction, length: int, at: float) -> None:
        self._out.append(f"gap {conn_id} {length}\n")

    def close(self, conn_id: int, end: ConnectionEnd) -> None:
        self.reports_count += 1
        self._out.append(f"close {conn_id} {end.how}\n")

    def feed_keylog(self, text: str) -> None:
        self._out.append(f"keylog {text}\n")

    def collect(self) -> ShardOutput | None:
        if not self._out:
            return None
        text = "".join(self._out)
        self._out.clear()
        return ShardOutput(text=text)


def info(n: int) -> ConnectionInfo:
    return ConnectionInfo(id=n, label=str(n), mode="capture", client=("127.0.0.1", 40000 + n),
                          server=("127.0.0.1", 443), started=0.0, wall_start=0.0)


def test_outputs_come_back_in_call_order_across_workers() -> None:
    written: list[str] = []
    sharded = ShardedPipeline(3, Echo, lambda out: written.append(out.text))
    expected: list[str] = []
    for n in range(40):  # interleaved connections, unevenly sized, over three workers
        sharded.open(info(n))
        expected.append(f"open {n}\n")
        if n == 7:
            sharded.feed_keylog("CLIENT_RANDOM x y")
            expected.extend(["keylog CLIENT_RANDOM x y\n"] * 3)  # every worker gets it, in place
        for k in range(n % 5):
            m = (n * 7 + k) % (n + 1)
            sharded.data(m, Direction.C2S, f"{n}.{k}".encode(), 0.0)
            expected.append(f"data {m} c2s {n}.{k}\n")
        sharded.gap(n, Direction.S2C, n, 0.0)
        expected.append(f"gap {n} {n}\n")
    sharded.data(99, Direction.C2S, b"unknown connection: dropped", 0.0)
    sharded.close_all("capture_end", 1.0)
    expected.extend(f"close {n} capture_end\n" for n in range(40))
    sharded.finish()
    assert "".join(written) == "".join(expected)
    assert sharded.reports_count == 40


@pytest.mark.timeout(30)
def test_a_dead_worker_is_an_error_not_a_hang() -> None:
    sharded = ShardedPipeline(2, lambda: Echo(die_on=3), lambda out: None)
    with pytest.raises(WorkerFailed, match="exit code 3"):
        for n in range(6):
            sharded.open(info(n))
            sharded.data(n, Direction.C2S, b"x", 0.0)
        sharded.close_all("capture_end", 1.0)
        sharded.finish()
    sharded.abort()


def test_a_message_about_a_file_follows_that_files_transcript() -> None:
    """The damaged-file error is printed after the connections read before the damage, as with one
    process (stdout and stderr going to one place, as in a terminal or a log)."""
    path = str(need(CORPUS / "suricata-verify" / "tls_DER-incomplete-header.pcap"))
    merged = [subprocess.run([sys.executable, "-m", "tlsproxy", "analyze", "-j", jobs, "-q", path],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120).stdout
              for jobs in ("1", "2")]
    assert "the file is damaged" in merged[0].splitlines()[-1]
    assert merged[1] == merged[0]


def _processes_reading(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _many_connections(path: Path, copies: int) -> None:
    """A capture of ``copies`` copies of the 59-connection one, each copy's ports moved and its
    times shifted so that every copy is new connections (real analysis work, not retransmissions)."""
    packets = list(iter_packets(need(MANY)))
    span = packets[-1].timestamp - packets[0].timestamp + 1.0
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for k in range(copies):
        for p in packets:
            frame = bytearray(p.data)
            ethertype = frame[12:14]
            ip = 14 + ((frame[14] & 0x0F) * 4 if ethertype == b"\x08\x00" else 40)
            for at in (ip, ip + 2):  # the TCP ports (checksums are not checked)
                frame[at:at + 2] = ((int.from_bytes(frame[at:at + 2], "big") + k) % 65536).to_bytes(2, "big")
            ticks = round((p.timestamp + k * span) * 1_000_000)
            out += struct.pack("<IIII", ticks // 1_000_000, ticks % 1_000_000, len(frame), p.origlen) + frame
    path.write_bytes(out)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_interrupt_stops_the_analysis_at_once(tmp_path: Path, jobs: str) -> None:
    """^C during a long capture stops it within moments (exit 130), workers included."""
    big = tmp_path / "long.pcap"
    _many_connections(big, 300)  # about 17,700 connections: several seconds of analysis
    proc = subprocess.Popen([sys.executable, "-m", "tlsproxy", "analyze", "-j", jobs, str(big)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    assert proc.stdout.read(1)  # under way
    # Nobody reads for now: the transcript (tens of MB) is far more than the pipe holds, so the
    # analysis is still under way, running or held by the full pipe, whenever ^C comes.
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest[-2000:].decode(errors="replace")
    assert time.monotonic() - started < 3  # it stopped rather than finishing the file
    deadline = time.monotonic() + 5
    while _processes_reading(big) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_reading(big) == []


class Record(Echo):
    """A worker side that prints exactly what each call delivered (types included)."""

    def open(self, info: ConnectionInfo) -> None:
        self._out.append(f"open {info!r}\n")

    def data(self, conn_id: int, direction: Direction, data: bytes, at: float) -> None:
        self._out.append(f"data {conn_id} {direction!r} {data!r} {at!r}\n")

    def eof(self, conn_id: int, direction: Direction, at: float) -> None:
        self._out.append(f"eof {conn_id} {direction!r} {at!r}\n")

    def gap(self, conn_id: int, direction: Direction, length: int, at: float) -> None:
        self._out.append(f"gap {conn_id} {direction!r} {length} {at!r}\n")

    def close(self, conn_id: int, end: ConnectionEnd) -> None:
        self._out.append(f"close {conn_id} {end!r}\n")


def test_calls_arrive_in_the_worker_unchanged() -> None:
    """Directions and connection records travel in a compact form; the worker's pipeline gets
    the same objects back."""
    written: list[str] = []
    sharded = ShardedPipeline(2, Record, lambda out: written.append(out.text))
    expected: list[str] = []
    for n in range(4):
        i = ConnectionInfo(id=n, label=f"conn {n}", mode="capture", client=("::1", 50000 + n),
                           server=("10.0.0.1", 443), target=None if n % 2 else "example.com",
                           started=n + 0.25, wall_start=1.7e9 + n)
        sharded.open(i)
        expected.append(f"open {i!r}\n")
        for d in (Direction.C2S, Direction.S2C):
            sharded.data(n, d, bytes([n]) * (n + 1), n + 0.5)
            expected.append(f"data {n} {d!r} {bytes([n]) * (n + 1)!r} {n + 0.5!r}\n")
        sharded.gap(n, Direction.S2C, 10 * n, n + 0.75)
        expected.append(f"gap {n} {Direction.S2C!r} {10 * n} {n + 0.75!r}\n")
        sharded.eof(n, Direction.C2S, n + 0.875)
        expected.append(f"eof {n} {Direction.C2S!r} {n + 0.875!r}\n")
    for n in range(4):
        end = ConnectionEnd(how="fin", by="client" if n % 2 else None, at=n + 1.0,
                            reason=None if n % 2 else "why", bytes_c2s=n, bytes_s2c=2 * n)
        sharded.close(n, end)
        expected.append(f"close {n} {end!r}\n")
    sharded.finish()
    assert "".join(written) == "".join(expected)


def test_worker_input_pipes_are_widened() -> None:
    """Bulk data goes to a worker in few writes: its input pipe holds 1 MiB where Linux allows it."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no F_GETPIPE_SZ on this platform")
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < PIPE_SIZE:
        pytest.skip("this system's pipe-max-size is below 1 MiB")
    pipeline = ShardedPipeline(1, lambda: Echo(), lambda out: None)
    try:
        assert fcntl.fcntl(pipeline.shards[0].send.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_SIZE
    finally:
        pipeline.finish()
