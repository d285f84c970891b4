"""How fast ConnectionDecryptor opens TLS 1.3 TLS_AES_128_GCM_SHA256 application data.

Builds full-size (16 KiB) records with the same key schedule a peer would use, then times
``decrypt`` over them, per-record overhead included.  Prints MB/s of plaintext.

    python bench/decrypt.py [--records N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from tlsproxy.wire import crypto  # noqa: E402
from tlsproxy.wire.decrypt import ConnectionDecryptor  # noqa: E402
from tlsproxy.wire.events import Direction  # noqa: E402
from tlsproxy.wire.keylog import KeyLog  # noqa: E402


def build(records: int, size: int) -> tuple[ConnectionDecryptor, list[bytes], bytes]:
    client_random, secret = os.urandom(32), os.urandom(32)
    log = KeyLog()
    log.feed_text(f"SERVER_TRAFFIC_SECRET_0 {client_random.hex()} {secret.hex()}\n")
    dec = ConnectionDecryptor(log)
    dec.set_client_random(client_random)
    dec.set_server_hello(os.urandom(32), 0x0304, 0x1301)
    dec.change_epoch(Direction.S2C, "application")
    key, iv = crypto.tls13_traffic_keys(crypto.SUITES[0x1301], secret)
    aead = AESGCM(key)
    plaintext = os.urandom(size)
    payloads = []
    for seq in range(records):
        length = size + 1 + 16
        header = b"\x17\x03\x03" + length.to_bytes(2, "big")
        nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
        payloads.append(aead.encrypt(nonce, plaintext + b"\x17", header))
    return dec, payloads, plaintext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--size", type=int, default=16384)
    args = parser.parse_args()
    dec, payloads, plaintext = build(args.records, args.size)
    start = time.perf_counter()
    for payload in payloads:
        result = dec.decrypt(Direction.S2C, 23, 0x0303, payload)
    elapsed = time.perf_counter() - start
    assert result.ok and result.plaintext == plaintext and result.inner_type == 23
    total = args.records * args.size
    print(f"TLS 1.3 AES-128-GCM decrypt: {args.records} records x {args.size} B "
          f"in {elapsed:.3f} s = {total / elapsed / 1e6:.0f} MB/s ({elapsed / args.records * 1e6:.1f} us/record)")


if __name__ == "__main__":
    main()
