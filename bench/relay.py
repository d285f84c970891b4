"""Benchmark the relay on loopback: direct, a minimal Protocol relay, and tlsproxy.

    python bench/relay.py            # full run (several minutes; 9,900 concurrent TLS connections)
    python bench/relay.py --quick    # a smaller run in well under a minute

For each target it measures bulk throughput (1 and 8 parallel connections; iperf3 when installed,
else a Python sender/receiver), the relay's CPU seconds per GB relayed, TLS 1.2 and 1.3 handshakes
per second with the latency the relay adds (p50/p99), and the resident memory per connection
with many concurrent TLS connections held open (all checked to still work at the end).

"minimal" is a relay written here with nothing but asyncio Protocols and pause/resume_reading:
the ceiling for pure-Python asyncio on this machine.  "tlsproxy" is the relay alone
(``python -m tlsproxy.relay`` with a no-op observer); "tlsproxy-full" is the whole tool as a user
runs it (``tlsproxy run -q``: parsing, analysis, the quiet transcript).  Each relay is its own
process so its CPU time and memory are its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("direct", "minimal", "tlsproxy", "tlsproxy-full")


# -- roles run as subprocesses ------------------------------------------------------------------------


class _Pipe(asyncio.Protocol):
    """The minimal relay: data_received -> peer.write, pause_writing -> peer.pause_reading."""

    def __init__(self) -> None:
        self.peer: _Pipe | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.transport is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:  # type: ignore[no-untyped-def]
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def _minimal_relay(upstream: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()

    class Client(_Pipe):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            transport.pause_reading()
            loop.create_task(self.connect())

        async def connect(self) -> None:
            try:
                _, up = await loop.create_connection(_Pipe, *upstream)
            except OSError:
                self.transport.abort()  # type: ignore[union-attr]
                return
            up.peer, self.peer = self, up
            for chunk in self.pending:
                up.transport.write(chunk)  # type: ignore[union-attr]
            self.transport.resume_reading()  # type: ignore[union-attr]

    server = await loop.create_server(Client, "127.0.0.1", 0, backlog=1024)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


async def _tls_echo_server(cert: str, key: str) -> None:
    """Accept TLS, echo whatever arrives (used for handshakes and concurrency)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0, ssl=ctx, backlog=4096)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def _sink_server() -> None:
    """Fallback bulk receiver when iperf3 is missing: count bytes per connection, reply with the count."""
    lsock = socket.create_server(("127.0.0.1", 0), backlog=64)
    print(f"listening on 127.0.0.1:{lsock.getsockname()[1]}", file=sys.stderr, flush=True)

    def serve(conn: socket.socket) -> None:
        n = 0
        buf = bytearray(1 << 20)
        with conn:
            while True:
                got = conn.recv_into(buf)
                if not got:
                    break
                n += got
            conn.sendall(str(n).encode())

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- process helpers -------------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{self.pid}/status").read_text())
        return int(m.group(1)) if m else 0

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(args: list[str]) -> Proc:
    popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert popen.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = popen.stderr.readline()
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            threading.Thread(target=lambda: popen.stderr.read(), daemon=True).start()  # type: ignore[union-attr]
            return Proc(popen, int(m.group(1)))
        if not line and popen.poll() is not None:
            break
    popen.kill()
    raise RuntimeError(f"{args} did not start: {popen.communicate()}")


def start_target(target: str, upstream_port: int) -> Proc | None:
    if target == "direct":
        return None
    if target == "minimal":
        return spawn([sys.executable, __file__, "--role", "minimal-relay", "--upstream-port", str(upstream_port)])
    if target == "tlsproxy-full":
        # The whole tool as a user runs it: parsing, analysis and the quiet transcript (to /dev/null).
        return spawn([sys.executable, "-m", "tlsproxy", "run", "-q", "--no-color", "--listen", "127.0.0.1:0",
                      "--upstream", f"127.0.0.1:{upstream_port}", "--idle-timeout", "0"])
    return spawn([sys.executable, "-m", "tlsproxy.relay", "--listen", "127.0.0.1:0", "--upstream",
                  f"127.0.0.1:{upstream_port}", "--no-observer", "--idle-timeout", "0"])


# -- measurements ----------------------------------------------------------------------------------


def bulk_iperf3(port: int, streams: int, seconds: float) -> float:
    out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-P", str(streams),
                          "-J", "-l", "128K"], capture_output=True, text=True, timeout=seconds + 60)
    data = json.loads(out.stdout)
    if "error" in data:
        raise RuntimeError(data["error"])
    return data["end"]["sum_received"]["bytes"] * 8 / data["end"]["sum_received"]["seconds"]


def bulk_python(port: int, streams: int, seconds: float) -> float:
    block = os.urandom(1 << 18)
    totals: list[int] = []

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                s.sendall(block)
            s.shutdown(socket.SHUT_WR)
            totals.append(int(s.recv(64)))

    t0 = time.monotonic()
    threads = [threading.Thread(target=send) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals) * 8 / (time.monotonic() - t0)


def client_ctx(version: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    return ctx


def handshakes(port: int, version: str, count: int) -> list[float]:
    """Sequential full handshakes (no resumption); returns each one's duration in seconds: TCP
    connect to handshake complete at the client (a 1-byte echo afterwards checks the tunnel)."""
    ctx = client_ctx(version)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                times.append(time.perf_counter() - t0)
                tls.sendall(b"x")
                tls.recv(1)
    return times


async def hold_connections(port: int, count: int, proc: Proc | None) -> dict[str, float]:
    ctx = client_ctx("1.3")
    idle_rss = proc.rss_kib() if proc else 0
    limit = asyncio.Semaphore(64)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open_one() -> None:
        async with limit:
            conns.append(await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"))

    t0 = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(count)))
    opened = time.monotonic() - t0
    await asyncio.sleep(1.0)
    full_rss = proc.rss_kib() if proc else 0

    async def check(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        async with limit:
            msg = f"ping {i}\n".encode()
            writer.write(msg)
            return await reader.readexactly(len(msg)) == msg

    ok = sum(await asyncio.gather(*(check(i, r, w) for i, (r, w) in enumerate(conns))))
    for _, w in conns:
        w.close()
    return {"open": len(conns), "working": ok, "seconds_to_open": opened,
            "rss_idle_kib": idle_rss, "rss_full_kib": full_rss,
            "kib_per_conn": (full_rss - idle_rss) / max(1, len(conns))}


# -- driver ----------------------------------------------------------------------------------------


@dataclass
class Results:
    bulk: dict[str, dict[int, float]] = field(default_factory=dict)
    cpu_per_gb: dict[str, float] = field(default_factory=dict)
    hs_rate: dict[str, dict[str, float]] = field(default_factory=dict)
    hs_lat: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    conc: dict[str, dict[str, float]] = field(default_factory=dict)


def make_cert(directory: str) -> tuple[str, str]:
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def run(args: argparse.Namespace) -> Results:
    res = Results()
    targets = [t for t in args.targets.split(",") if t]
    parts = set(args.parts.split(","))
    streams = [int(s) for s in args.streams.split(",")]
    have_iperf = shutil.which("iperf3") is not None and not args.python_bulk
    print(f"# machine: {platform.machine()} {os.cpu_count()} cores, {platform_cpu()}, Linux {platform.release()}, "
          f"Python {platform.python_version()}, OpenSSL {ssl.OPENSSL_VERSION.split()[1]}")
    print(f"# bulk via {'iperf3' if have_iperf else 'Python sender/receiver'}, {args.seconds:g} s per run"
          + (f", median of {args.rounds} alternating rounds" if "bulk" in args.parts else ""))

    if "bulk" in parts:
        if have_iperf:
            port = free_port()
            iperf = subprocess.Popen(["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            server_port, stop_server = port, iperf
        else:
            sink = spawn([sys.executable, __file__, "--role", "sink"])
            server_port, stop_server = sink.port, sink.popen
        procs = {t: start_target(t, server_port) for t in targets}
        try:
            # Rounds alternate the targets so that load from elsewhere on the machine hits all of
            # them alike; each figure is the median over the rounds.
            runs: dict[str, dict[int, list[float]]] = {t: {n: [] for n in streams} for t in targets}
            cpu = {t: 0.0 for t in targets}
            relayed = {t: 0.0 for t in targets}
            for _ in range(args.rounds):
                for n in streams:
                    for t in targets:
                        proc = procs[t]
                        cpu0 = proc.cpu_seconds() if proc else 0.0
                        bps = (bulk_iperf3 if have_iperf else bulk_python)(proc.port if proc else server_port, n,
                                                                          args.seconds)
                        if proc:
                            cpu[t] += proc.cpu_seconds() - cpu0
                        relayed[t] += bps / 8 * args.seconds
                        runs[t][n].append(bps)
                        print(f"bulk      {t:9s} {n} conn: {bps / 1e9:6.2f} Gbit/s", flush=True)
            for t in targets:
                res.bulk[t] = {n: statistics.median(v) for n, v in runs[t].items()}
                if procs[t]:
                    res.cpu_per_gb[t] = cpu[t] / (relayed[t] / 1e9)
                    print(f"cpu       {t:9s} {res.cpu_per_gb[t]:.2f} CPU s per GB relayed", flush=True)
        finally:
            for proc in procs.values():
                if proc:
                    proc.stop()
            stop_server.terminate()
            stop_server.wait()

    tmp = tempfile.mkdtemp()
    cert, key = make_cert(tmp)
    if "handshake" in parts or "concurrency" in parts:
        echo = spawn([sys.executable, __file__, "--role", "tls-server", "--cert", cert, "--key", key])
        try:
            if "handshake" in parts:
                # All targets run at once and take turns handshake by handshake, so drifts in the
                # machine's load hit them alike (a 2-core VM is noisy).
                procs = {t: start_target(t, echo.port) for t in targets}
                ports = {t: (p.port if p else echo.port) for t, p in procs.items()}
                for version in ("1.2", "1.3"):
                    times: dict[str, list[float]] = {t: [] for t in targets}
                    for t in targets:
                        handshakes(ports[t], version, 10)  # warm up
                    for _ in range(args.handshakes):
                        for t in targets:
                            times[t] += handshakes(ports[t], version, 1)
                    for t in targets:
                        rate = len(times[t]) / sum(times[t])
                        res.hs_rate.setdefault(t, {})[version] = rate
                        res.hs_lat.setdefault(t, {})[version] = sorted(times[t])
                        print(f"handshake {t:9s} TLS {version}: {rate:7.0f}/s  p50 {pct(times[t], 50) * 1e3:.3f} ms"
                              f"  p99 {pct(times[t], 99) * 1e3:.3f} ms", flush=True)
                for p in procs.values():
                    if p:
                        p.stop()
            if "concurrency" in parts:
                nofile = _raise_nofile()
                count = min(args.concurrent, max(10, nofile // 2 - 100))
                for target in targets:
                    if target == "direct":
                        continue
                    proc = start_target(target, echo.port)
                    assert proc is not None
                    r = asyncio.run(hold_connections(proc.port, count, proc))
                    res.conc[target] = r
                    print(f"concurr.  {target:9s} {r['open']:.0f} TLS conns open, {r['working']:.0f} working; "
                          f"relay RSS {r['rss_idle_kib'] / 1024:.1f} -> {r['rss_full_kib'] / 1024:.1f} MiB = "
                          f"{r['kib_per_conn']:.2f} KiB per connection", flush=True)
                    proc.stop()
        finally:
            echo.stop()
    summary(res, targets)
    return res


def summary(res: Results, targets: list[str]) -> None:
    print("\n# summary (relative to the minimal Protocol relay)")
    ours = [t for t in ("tlsproxy", "tlsproxy-full") if t in targets]
    for t in ours:
        if "minimal" in res.bulk and t in res.bulk:
            for n, bps in res.bulk[t].items():
                print(f"bulk {n} conn: {t} {bps / 1e9:.2f} Gbit/s = {100 * bps / res.bulk['minimal'][n]:.0f}% "
                      f"of minimal ({res.bulk['minimal'][n] / 1e9:.2f}); direct "
                      f"{res.bulk.get('direct', {}).get(n, 0) / 1e9:.2f}")
    if res.cpu_per_gb:
        print("CPU s/GB: " + ", ".join(f"{t} {v:.2f}" for t, v in res.cpu_per_gb.items()))
    for t in ours:
        if t not in res.hs_rate:
            continue
        for v in ("1.2", "1.3"):
            base = res.hs_lat.get("direct", {}).get(v)
            line = f"TLS {v} handshakes: {t} {res.hs_rate[t][v]:.0f}/s"
            if "minimal" in res.hs_rate:
                line += f" = {100 * res.hs_rate[t][v] / res.hs_rate['minimal'][v]:.0f}% of minimal"
            if base:
                for who in ("minimal", t):
                    if who in res.hs_lat:
                        lat = res.hs_lat[who][v]
                        line += (f"; {who} adds p50 {(pct(lat, 50) - pct(base, 50)) * 1e3:.3f} ms,"
                                 f" p99 {(pct(lat, 99) - pct(base, 99)) * 1e3:.3f} ms")
            print(line)
    for t, r in res.conc.items():
        print(f"concurrency {t}: {r['working']:.0f}/{r['open']:.0f} working, {r['kib_per_conn']:.2f} KiB/conn")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def platform_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller, faster run")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: direct,minimal,tlsproxy")
    p.add_argument("--parts", default="bulk,handshake,concurrency", help="comma-separated parts to run")
    p.add_argument("--seconds", type=float, default=None, help="seconds per bulk run (default 5; quick 2)")
    p.add_argument("--rounds", type=int, default=None, help="bulk rounds, median reported (default 3; quick 1)")
    p.add_argument("--streams", default="1,8", help="parallel connections for bulk runs")
    p.add_argument("--handshakes", type=int, default=None, help="handshakes per version (default 1000; quick 200)")
    p.add_argument("--concurrent", type=int, default=None, help="concurrent TLS connections (default 9900; quick 1000)")
    p.add_argument("--python-bulk", action="store_true", help="use the Python sender even if iperf3 is installed")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    # internal roles for subprocesses
    p.add_argument("--role", choices=("minimal-relay", "tls-server", "sink"), help=argparse.SUPPRESS)
    p.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cert", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        _raise_nofile()
        if args.role == "minimal-relay":
            asyncio.run(_minimal_relay(("127.0.0.1", args.upstream_port)))
        elif args.role == "tls-server":
            asyncio.run(_tls_echo_server(args.cert, args.key))
        else:
            _sink_server()
        return 0
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.handshakes = args.handshakes or (200 if args.quick else 1000)
    args.concurrent = args.concurrent or (1000 if args.quick else 9900)
    res = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bulk_bps": res.bulk, "cpu_s_per_gb": res.cpu_per_gb, "handshakes_per_s": res.hs_rate,
            "handshake_ms": {t: {v: {"p50": pct(x, 50) * 1e3, "p99": pct(x, 99) * 1e3} for v, x in d.items()}
                             for t, d in res.hs_lat.items()},
            "concurrency": res.conc,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
