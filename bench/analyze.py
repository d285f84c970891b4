"""Analysing a large capture: tlsproxy against tshark on the same file, in the same run.

    python bench/analyze.py [--handshakes 3000] [--bulk-mb 64] [--keep FILE]

Makes a real capture on loopback (dumpcap on ``lo``, so root or capture rights are needed):
a Python TLS server, thousands of real handshakes (TLS 1.2 and 1.3, some failing mutual-TLS ones)
and some bulk data.  Then times ``tlsproxy analyze -q`` (one analysis process per usable CPU, and
with ``-j 1``) and ``tshark -r FILE -Y tls`` on it and prints, for each command, its time, the
CPU time of all its processes and its peak memory (``/usr/bin/time -v`` style, from
``resource``: the largest single process).

The three commands take turns, ``--repeat`` times (a shared machine's load drifts during a run),
and each is reported by its median and its best time.  tlsproxy's modules are compiled to
bytecode first, as ``pip install`` does: an editable checkout under ``PYTHONDONTWRITEBYTECODE``
would otherwise time the compiler on every start.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _peers import make_pki

ROOT = Path(__file__).resolve().parents[1]


def serve(pki, port_holder: list[int], stop: threading.Event) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    mtls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    mtls.load_cert_chain(pki.server_cert, pki.server_key)
    mtls.verify_mode = ssl.CERT_REQUIRED
    mtls.load_verify_locations(pki.client_ca)
    socks = []
    for c in (ctx, mtls):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1024)
        s.settimeout(0.2)
        socks.append((s, c))
        port_holder.append(s.getsockname()[1])

    def handle(conn: socket.socket, c: ssl.SSLContext) -> None:
        try:
            with c.wrap_socket(conn, server_side=True) as t:
                while data := t.recv(65536):
                    if data.startswith(b"BULK"):
                        t.sendall(b"x" * int(data[4:].split(b"\n")[0]))
                    else:
                        t.sendall(b"pong")
        except (ssl.SSLError, OSError):
            pass

    def accept_loop(s: socket.socket, c: ssl.SSLContext) -> None:
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn, c), daemon=True).start()

    # One accepting thread per listener: taking turns with a timeout would make every connection
    # wait for the other listener's timeout.
    loops = [threading.Thread(target=accept_loop, args=pair, daemon=True) for pair in socks]
    for t in loops:
        t.start()
    for t in loops:
        t.join()


def client_traffic(pki, ports: list[int], handshakes: int, bulk_mb: int) -> None:
    plain, mtls_port = ports
    for i in range(handshakes):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki.server_ca)
        if i % 2:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        port = mtls_port if i % 10 == 9 else plain  # one in ten fails mutual TLS
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(
                    raw, server_hostname="localhost") as t:
                t.sendall(b"ping")
                t.recv(16)
        except (ssl.SSLError, OSError):
            pass
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.server_ca)
    with socket.create_connection(("127.0.0.1", plain)) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as t:
        want = bulk_mb << 20
        t.sendall(b"BULK%d\n" % want)
        got = 0
        while got < want:
            got += len(t.recv(1 << 20))


def make_capture(path: Path, handshakes: int, bulk_mb: int) -> None:
    pki = make_pki(Path(tempfile.mkdtemp(prefix="bench-analyze-")))
    ports: list[int] = []
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(pki, ports, stop), daemon=True)
    server.start()
    while len(ports) < 2:
        time.sleep(0.01)
    filt = f"tcp port {ports[0]} or tcp port {ports[1]}"
    dumpcap = subprocess.Popen(["dumpcap", "-q", "-i", "lo", "-f", filt, "-B", "256", "-w", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    client_traffic(pki, ports, handshakes, bulk_mb)
    time.sleep(1.0)
    dumpcap.send_signal(signal.SIGINT)
    dumpcap.wait(timeout=30)
    stop.set()


_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime)\n"
)


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds (all its processes) of ``cmd``, measured in a
    wrapper of its own so that the figures of different commands never mix."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
    elapsed, rss_kb, cpu = out.stdout.split()
    return float(elapsed), int(rss_kb) / 1024, float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--handshakes", type=int, default=3000)
    ap.add_argument("--bulk-mb", type=int, default=64)
    ap.add_argument("--keep", type=Path, help="write the capture here and keep it")
    ap.add_argument("--capture", type=Path, help="use this capture instead of making one")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each command, taking turns (default 5)")
    args = ap.parse_args()
    for tool in ("dumpcap", "tshark"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install tshark)")
    path = args.capture or args.keep or Path(tempfile.mkdtemp()) / "bench.pcapng"
    if args.capture is None:
        make_capture(path, args.handshakes, args.bulk_mb)
    size = path.stat().st_size
    print(f"capture: {path} ({size / 1e6:.1f} MB)")
    print(f"usable CPUs: {len(os.sched_getaffinity(0))}")
    spec = importlib.util.find_spec("tlsproxy")
    for where in (spec.submodule_search_locations or []) if spec else [ROOT / "tlsproxy"]:
        compileall.compile_dir(where, quiet=1)
    commands = {
        "tlsproxy analyze -q": [sys.executable, "-m", "tlsproxy", "analyze", "-q", str(path)],
        "tlsproxy analyze -q -j 1": [sys.executable, "-m", "tlsproxy", "analyze", "-q", "-j", "1", str(path)],
        "tshark -r -Y tls": ["tshark", "-r", str(path), "-Y", "tls"],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, float] = dict.fromkeys(commands, 0.0)
    for _ in range(max(1, args.repeat)):
        for name, cmd in commands.items():
            elapsed, rss, cpu = timed(cmd)
            runs[name].append(elapsed)
            cpus[name].append(cpu)
            peaks[name] = max(peaks[name], rss)
    width = max(map(len, commands))
    for name, times in runs.items():
        median = statistics.median(times)
        per = " (per process)" if name == "tlsproxy analyze -q" else ""
        print(f"{name + ':':{width + 1}} {median:6.2f} s median, {min(times):6.2f} s best"
              f"  ({size / 1e6 / median:6.1f} MB/s)  CPU {statistics.median(cpus[name]):5.2f} s"
              f"  peak RSS {peaks[name]:.0f} MB{per}")
    ours, single, theirs = (statistics.median(t) for t in runs.values())
    print(f"tlsproxy is {theirs / ours:.1f}x {'faster' if ours < theirs else 'slower'} than tshark"
          f" ({theirs / single:.1f}x with one process), by the medians of {len(runs['tshark -r -Y tls'])} runs")
    if args.capture is None and args.keep is None:
        os.unlink(path)


if __name__ == "__main__":
    main()
