"""How fast the wire core reads traffic: bulk application data, and full handshakes.

    python bench/parse.py [--megabytes 256] [--handshakes 3000]

Prints MB/s for a long TLS 1.2 application-data stream fed in 64 KiB chunks (only record headers
are read: target >= 1 GB/s), and complete handshakes decoded per second on one core, certificates
included (target >= 2,000/s), both with the certificate cache warm (the same server seen again, as
in a capture or a proxy) and cold.  Figures are the best of 5 rounds in process CPU time.
"""

from __future__ import annotations

import argparse
import platform
import ssl
import time

from _peers import contexts, make_pki, run_session, tmpdir

from tlsproxy.wire import certs
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.events import Direction

# Each figure is the best of this many rounds, in CPU time of this process: on a shared VM, wall
# time mostly measures the neighbours.
REPEATS = 5


def bulk(megabytes: int) -> float:
    pki = make_pki(tmpdir())
    client, server = contexts(pki, version=ssl.TLSVersion.TLSv1_2)
    block = b"x" * (1 << 20)
    session = run_session(client, server, client_data=[block] * 16, server_data=[b"ok"], close=False)
    handshake = [(d, c) for d, c in session.chunks]
    # Take the 16 MiB of client application data as one stream and repeat it.
    c2s = session.stream(Direction.C2S)
    first_app = c2s.index(b"\x17\x03\x03")
    app = c2s[first_app:]
    conn = TLSConnection()
    for d, c in handshake:
        if d is Direction.S2C:
            conn.feed(d, c, at=0.0)
    conn.feed(Direction.C2S, c2s[:first_app], at=0.0)
    chunk = 64 * 1024
    pieces = [app[i : i + chunk] for i in range(0, len(app), chunk)]
    rounds = max(1, megabytes // 16)
    best = 0.0
    for _ in range(REPEATS):
        total = 0
        start = time.process_time()
        for _ in range(rounds):
            for p in pieces:
                conn.feed(Direction.C2S, p, at=0.0)
                total += len(p)
        best = max(best, total / (time.process_time() - start) / 1e6)
    return best


def handshakes(n: int, version: ssl.TLSVersion, *, cold: bool) -> float:
    pki = make_pki(tmpdir())
    client, server = contexts(pki, version=version, require_client_cert=True, client_has_cert=True)
    session = run_session(client, server)
    chunks = session.chunks
    best = 0.0
    for _ in range(REPEATS):
        start = time.process_time()
        for _ in range(n):
            if cold:
                certs._decode_certificate.cache_clear()  # noqa: SLF001 - measuring the cold path
                certs._decode_distinguished_name.cache_clear()  # noqa: SLF001
            conn = TLSConnection()
            for d, c in chunks:
                conn.feed(d, c, at=0.0)
            conn.feed(Direction.C2S, b"", at=0.0)
            conn.feed(Direction.S2C, b"", at=0.0)
        best = max(best, n / (time.process_time() - start))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megabytes", type=int, default=256)
    ap.add_argument("--handshakes", type=int, default=3000)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"bulk application data (TLS 1.2, 16 KiB records, 64 KiB reads): {bulk(args.megabytes):,.0f} MB/s")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        warm = handshakes(args.handshakes, version, cold=False)
        cold = handshakes(max(200, args.handshakes // 5), version, cold=True)
        label = "TLS 1.2 mutual-TLS, 2+2 certificates" if version is ssl.TLSVersion.TLSv1_2 else \
            "TLS 1.3 (certificates encrypted)"
        print(f"full handshakes/s, {label}: {warm:,.0f} (certificate cache warm), {cold:,.0f} (cold)")


if __name__ == "__main__":
    main()
