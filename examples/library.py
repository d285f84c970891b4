"""The parser and the analyzer as a library, without the proxy: run a real mutual-TLS handshake
between two Python ``ssl`` objects in memory, feed the bytes each side sent to the sans-IO core,
and print the events, the findings and the diagnosis.

    python examples/library.py
"""

from __future__ import annotations

import ssl
import tempfile
import time

from tlsproxy.analysis.tracker import AnalysisOptions, Tracker
from tlsproxy.demo_pki import make_demo_pki
from tlsproxy.wire import events as ev
from tlsproxy.wire.connection import TLSConnection
from tlsproxy.wire.events import Direction
from tlsproxy.wire.registry import handshake_type_name


def handshake_bytes() -> list[tuple[Direction, bytes]]:
    """A TLS 1.2 server that requires a client certificate, and a client that has none."""
    with tempfile.TemporaryDirectory() as tmp:
        pki = make_demo_pki(tmp)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.load_verify_locations(pki.client_ca)
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.load_verify_locations(pki.server_ca)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    chunks: list[tuple[Direction, bytes]] = []
    for _ in range(10):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            for src, dst, d in ((c_out, s_in, Direction.C2S), (s_out, c_in, Direction.S2C)):
                if data := src.read():
                    chunks.append((d, data))
                    dst.write(data)
    return chunks


def main() -> None:
    wire = TLSConnection()  # the sans-IO parser: bytes in, events out
    tracker = Tracker(AnalysisOptions(), wall_start=time.time(), started=0.0)  # the analyzer: events in, findings out
    t, seq = 0.0, 0
    for direction, data in handshake_bytes():
        t += 0.001
        for event in wire.feed(direction, data, at=t):
            if isinstance(event, ev.HandshakeMessage):
                print(f"{direction.arrow} {handshake_type_name(event.msg_type)}")
            elif isinstance(event, ev.Alert):
                print(f"{direction.arrow} alert {event.description}")
            for finding in tracker.on_event(seq, event):
                print(f"    [{finding.severity.name}] {finding.title}")
            seq += 1
    tracker.on_end(how="fin", by="server", reason=None, at=t)
    diagnosis = tracker.diagnose()
    print(f"outcome: {diagnosis.outcome}")
    print(f"cause: {diagnosis.cause}")


if __name__ == "__main__":
    main()
