"""ConnectionDecryptor against real sessions (Python ``ssl`` over MemoryBIOs, OpenSSL's key log)
and against RFC 8448.

Each session is replayed through a deliberately tiny connection layer written here (record walker,
hello parsing, Finished tracking), so these tests exercise only the decryptor's contract.
"""

from __future__ import annotations

import json
import os
import random
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import test_crypto as rfc
from tests.peers import make_pki, run_session
from tlsproxy.wire.decrypt import ConnectionDecryptor, DecryptResult
from tlsproxy.wire.events import Direction
from tlsproxy.wire.keylog import KeyLog

C2S, S2C = Direction.C2S, Direction.S2C
REPO = Path(__file__).resolve().parents[1]
CLIENT_DATA = (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", random.Random(8448).randbytes(40000))
SERVER_DATA = (b"HTTP/1.1 200 OK\r\n\r\nhello", b"x" * 17000)
OP_NO_ENCRYPT_THEN_MAC = getattr(ssl, "OP_NO_ENCRYPT_THEN_MAC", 1 << 19)  # OpenSSL's value


# --- capturing real sessions ------------------------------------------------------------------


@dataclass
class Capture:
    chunks: list[tuple[Direction, bytes]]
    keylog: str
    cipher: str
    version: str

    @property
    def c2s(self) -> bytes:
        return b"".join(data for d, data in self.chunks if d is C2S)

    @property
    def s2c(self) -> bytes:
        return b"".join(data for d, data in self.chunks if d is S2C)

    @property
    def client_random(self) -> bytes:
        return self.c2s[11:43]  # record header 5 + handshake header 4 + client_version 2


def _contexts(paths: dict[str, str], version: str, ciphers: str | None, etm: bool,
              keylog: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(paths["ca"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths["cert"], paths["key"])
    for ctx in (client, server):
        with warnings.catch_warnings():  # TLSv1 / TLSv1_1 are deprecated names, still real
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version]
        if ciphers:
            ctx.set_ciphers(ciphers)
        if not etm:
            ctx.options |= OP_NO_ENCRYPT_THEN_MAC
    server.options |= ssl.OP_NO_TICKET if version != "TLSv1_3" else 0
    client.keylog_filename = keylog
    return client, server


def _capture_here(paths: dict[str, str], version: str, ciphers: str | None, etm: bool, keylog: str) -> Capture:
    client, server = _contexts(paths, version, ciphers, etm, keylog)
    session = run_session(client, server, client_data=CLIENT_DATA, server_data=SERVER_DATA)
    assert session.established, (session.client_error, session.server_error)
    assert session.received_by_server == b"".join(CLIENT_DATA)
    assert session.cipher is not None
    return Capture(session.chunks, Path(keylog).read_text(),
                   session.cipher[0], session.cipher[1])


def _capture_main() -> None:
    """Entry point of the child process used when OpenSSL's config has to pick the suite."""
    args = json.loads(sys.argv[1])
    cap = _capture_here(args["paths"], args["version"], None, True, args["keylog"])
    chunks = [(d.value, data.hex()) for d, data in cap.chunks]
    print(json.dumps({"chunks": chunks, "cipher": cap.cipher, "version": cap.version}))


def capture_tls13_suite(paths: dict[str, str], suite: str, tmp: Path) -> Capture:
    """Python's ``ssl`` cannot choose TLS 1.3 suites; OpenSSL's config file can, per process."""
    conf = tmp / "openssl.cnf"
    conf.write_text(
        "openssl_conf = conf\n[conf]\nssl_conf = ssl_sect\n[ssl_sect]\nsystem_default = sys_sect\n"
        f"[sys_sect]\nCiphersuites = {suite}\n"
    )
    keylog = tmp / "keys.log"
    args = {"paths": paths, "version": "TLSv1_3", "keylog": str(keylog)}
    out = subprocess.run(
        [sys.executable, "-c", "from tests.test_decrypt import _capture_main; _capture_main()", json.dumps(args)],
        cwd=REPO, env={**os.environ, "OPENSSL_CONF": str(conf)}, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    chunks = [(Direction(d), bytes.fromhex(h)) for d, h in data["chunks"]]
    return Capture(chunks, keylog.read_text(),
                   data["cipher"], data["version"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("pki")
    made = make_pki(directory, server_kwargs={"key": "rsa2048"})
    return {"cert": str(made.server_cert), "key": str(made.server_key), "ca": str(made.server_ca)}


# --- a tiny connection layer ------------------------------------------------------------------


def records(stream: bytes) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    while pos < len(stream):
        ctype, version, length = stream[pos], int.from_bytes(stream[pos + 1 : pos + 3], "big"), int.from_bytes(
            stream[pos + 3 : pos + 5], "big")
        yield ctype, version, stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
    assert pos == len(stream)


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos + 1 : pos + 4], "big")
        yield data[pos], data[pos + 4 : pos + 4 + n]
        pos += 4 + n


def server_hello_facts(body: bytes) -> tuple[bytes, int, int, bool]:
    """(server_random, negotiated version, cipher suite, encrypt_then_mac echoed)."""
    version, random = int.from_bytes(body[0:2], "big"), body[2:34]
    pos = 35 + body[34]
    suite = int.from_bytes(body[pos : pos + 2], "big")
    pos += 3
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    etm = False
    while pos < end:
        ext, n = int.from_bytes(body[pos : pos + 2], "big"), int.from_bytes(body[pos + 2 : pos + 4], "big")
        if ext == 43:
            version = int.from_bytes(body[pos + 4 : pos + 6], "big")
        etm = etm or ext == 22
        pos += 4 + n
    return random, version, suite, etm


Opened = list[tuple[int, bytes]]
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


class Replay:
    """Feeds ordered (direction, bytes) chunks of one connection through a ConnectionDecryptor,
    doing the connection layer's part: find records, read the hellos, switch epochs."""

    def __init__(self, keylog_text: str) -> None:
        self.log = KeyLog()
        # OpenSSL also logs "RSA" lines for RSA key exchange: unsupported, never malformed.
        assert [p for p in self.log.feed_text(keylog_text) if p.kind != "unsupported"] == []
        self.dec = ConnectionDecryptor(self.log)
        self.opened: dict[Direction, Opened] = {C2S: [], S2C: []}
        self.results: dict[Direction, list[DecryptResult]] = {C2S: [], S2C: []}
        self._buf = {C2S: b"", S2C: b""}
        self._hs = {C2S: b"", S2C: b""}
        self.tls13 = False

    def feed(self, direction: Direction, data: bytes) -> None:
        buf = self._buf[direction] + data
        while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
            n = 5 + int.from_bytes(buf[3:5], "big")
            self._record(direction, buf[0], int.from_bytes(buf[1:3], "big"), buf[5:n])
            buf = buf[n:]
        self._buf[direction] = buf

    def _record(self, direction: Direction, ctype: int, version: int, payload: bytes) -> None:
        dec = self.dec
        if ctype == 20 and self.tls13:
            return  # middlebox-compatibility change_cipher_spec: never protected, starts nothing
        if dec.epoch(direction) != "plaintext":
            result = dec.decrypt(direction, ctype, version, payload)
            self.results[direction].append(result)
            if not result.ok:
                return
            assert result.inner_type is not None and result.plaintext is not None
            ctype, payload = result.inner_type, result.plaintext
            self.opened[direction].append((ctype, payload))
        if ctype == 20:
            dec.change_epoch(direction, "tls12")
        elif ctype == 22:
            self._handshake(direction, self._hs[direction] + payload)

    def _handshake(self, direction: Direction, data: bytes) -> None:
        dec = self.dec
        while len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[1:4], "big"):
            n = 4 + int.from_bytes(data[1:4], "big")
            msg_type, body = data[0], data[4:n]
            data = data[n:]
            if msg_type == 1:
                dec.set_client_random(body[2:34])
            elif msg_type == 2 and body[2:34] != HRR_RANDOM:
                random, version, suite, etm = server_hello_facts(body)
                dec.set_server_hello(random, version, suite)
                dec.set_extensions(encrypt_then_mac=etm)
                self.tls13 = version == 0x0304
                if self.tls13:
                    dec.change_epoch(S2C, "handshake")
                    dec.change_epoch(C2S, "handshake")
            elif msg_type == 20 and self.tls13:
                dec.change_epoch(direction, "application")
            elif msg_type == 24 and self.tls13:
                dec.key_update(direction)
        self._hs[direction] = data


def replay(keylog_text: str, chunks: list[tuple[Direction, bytes]]) -> Replay:
    """Decrypt a whole connection; every protected record must open."""
    rep = Replay(keylog_text)
    for direction, data in chunks:
        rep.feed(direction, data)
    for direction in Direction:
        assert all(r.ok for r in rep.results[direction]), (direction, rep.results[direction])
        assert rep.results[direction], f"nothing protected was seen {direction.arrow}"
    return rep


def check_session(opened: dict[Direction, Opened]) -> None:
    for direction, sent in ((C2S, CLIENT_DATA), (S2C, SERVER_DATA)):
        got = opened[direction]
        assert b"".join(p for t, p in got if t == 23) == b"".join(sent)
        handshake = [m for t, p in got if t == 22 for m, _ in messages(p)]
        assert 20 in handshake  # Finished
        assert got[-1] == (21, b"\x01\x00")  # close_notify


# --- real sessions ------------------------------------------------------------------------------

TLS12_CASES = [
    # (OpenSSL cipher string, version, encrypt_then_mac, IANA suite expected)
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1_2", True, "ECDHE-RSA-AES128-GCM-SHA256"),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLSv1_2", True, "ECDHE-RSA-AES256-GCM-SHA384"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "TLSv1_2", True, "ECDHE-RSA-CHACHA20-POLY1305"),
    ("AES128-CCM", "TLSv1_2", True, "AES128-CCM"),
    ("AES256-CCM8", "TLSv1_2", True, "AES256-CCM8"),
    ("ECDHE-RSA-AES128-SHA", "TLSv1_2", True, "ECDHE-RSA-AES128-SHA"),
    ("ECDHE-RSA-AES128-SHA", "TLSv1_2", False, "ECDHE-RSA-AES128-SHA"),
    ("ECDHE-RSA-AES256-SHA384", "TLSv1_2", False, "ECDHE-RSA-AES256-SHA384"),
    ("AES256-SHA256", "TLSv1_2", True, "AES256-SHA256"),
    ("DES-CBC3-SHA:@SECLEVEL=0", "TLSv1_2", False, "DES-CBC3-SHA"),
    ("NULL-SHA256:@SECLEVEL=0", "TLSv1_2", False, "NULL-SHA256"),
    ("ECDHE-RSA-AES256-SHA:@SECLEVEL=0", "TLSv1_1", False, "ECDHE-RSA-AES256-SHA"),
    ("ECDHE-RSA-AES128-SHA:@SECLEVEL=0", "TLSv1", False, "ECDHE-RSA-AES128-SHA"),
    ("ECDHE-RSA-AES128-SHA:@SECLEVEL=0", "TLSv1", True, "ECDHE-RSA-AES128-SHA"),
    ("DES-CBC3-SHA:@SECLEVEL=0", "TLSv1", False, "DES-CBC3-SHA"),
]


@pytest.mark.parametrize(("ciphers", "version", "etm", "expected"), TLS12_CASES,
                         ids=[f"{c[1]}-{c[3]}-{'etm' if c[2] else 'mte'}" for c in TLS12_CASES])
def test_tls12_and_older_sessions_decrypt(pki: dict[str, str], tmp_path: Path, ciphers: str, version: str,
                                          etm: bool, expected: str) -> None:
    try:
        cap = _capture_here(pki, version, ciphers, etm, str(tmp_path / "keys.log"))
    except (ssl.SSLError, AssertionError) as exc:
        pytest.skip(f"this OpenSSL does not negotiate {ciphers} over {version}: {exc}")
    assert cap.cipher == expected
    opened = replay(cap.keylog, cap.chunks).opened
    check_session(opened)


def test_tls13_default_session_decrypts(pki: dict[str, str], tmp_path: Path) -> None:
    cap = _capture_here(pki, "TLSv1_3", None, True, str(tmp_path / "keys.log"))
    opened = replay(cap.keylog, cap.chunks).opened
    check_session(opened)
    server_handshake = [m for t, p in opened[S2C] if t == 22 for m, _ in messages(p)]
    # EncryptedExtensions, Certificate, CertificateVerify, Finished, then session tickets.
    assert server_handshake[:4] == [8, 11, 15, 20] and 4 in server_handshake[4:]


TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"]


@pytest.mark.parametrize("suite", TLS13_SUITES)
def test_tls13_sessions_decrypt_with_each_suite(pki: dict[str, str], tmp_path: Path, suite: str) -> None:
    cap = capture_tls13_suite(pki, suite, tmp_path)
    assert cap.cipher == suite
    opened = replay(cap.keylog, cap.chunks).opened
    check_session(opened)


# --- contract details ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls13_capture(pki: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Capture:
    return _capture_here(pki, "TLSv1_3", None, True, str(tmp_path_factory.mktemp("k") / "keys.log"))


@pytest.fixture(scope="module")
def tls10_capture(pki: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Capture:
    try:
        return _capture_here(pki, "TLSv1", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0", False,
                             str(tmp_path_factory.mktemp("k") / "keys.log"))
    except (ssl.SSLError, AssertionError) as exc:
        pytest.skip(f"TLS 1.0 not available: {exc}")


def _server_encrypted(cap: Capture) -> list[tuple[int, int, bytes]]:
    """The server's records from the first protected one on."""
    recs = list(records(cap.s2c))
    start = next(i for i, r in enumerate(recs) if r[0] == 20) + 1
    return recs[start:]


def _decryptor(cap: Capture, keylog_text: str) -> ConnectionDecryptor:
    log = KeyLog()
    log.feed_text(keylog_text)
    dec = ConnectionDecryptor(log)
    dec.set_client_random(cap.client_random)
    _, sh_body = next(messages(next(records(cap.s2c))[2]))
    random, version, suite, etm = server_hello_facts(sh_body)
    dec.set_server_hello(random, version, suite)
    dec.set_extensions(encrypt_then_mac=etm)
    dec.change_epoch(S2C, "handshake" if version == 0x0304 else "tls12")
    return dec


def _flip_secret_byte(keylog: str, label: str) -> str:
    out = []
    for line in keylog.splitlines():
        if line.startswith(label + " "):
            line = line[:-1] + ("0" if line[-1] != "0" else "1")
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("which", ["tls13", "tls10"])
def test_a_wrong_secret_fails_without_raising(request: pytest.FixtureRequest, which: str) -> None:
    cap = request.getfixturevalue(f"{which}_capture")
    label = "SERVER_HANDSHAKE_TRAFFIC_SECRET" if which == "tls13" else "CLIENT_RANDOM"
    dec = _decryptor(cap, _flip_secret_byte(cap.keylog, label))
    ctype, version, payload = _server_encrypted(cap)[0]
    result = dec.decrypt(S2C, ctype, version, payload)
    assert result.status == "failed" and result.plaintext is None and result.reason


@pytest.mark.parametrize("which", ["tls13", "tls10"])
def test_no_keys_consumes_nothing_and_a_later_keylog_opens_the_same_record(
        request: pytest.FixtureRequest, which: str) -> None:
    cap = request.getfixturevalue(f"{which}_capture")
    dec = _decryptor(cap, "")
    first, second = _server_encrypted(cap)[:2]
    assert dec.decrypt(S2C, *first).status == "no_keys"
    assert dec.decrypt(S2C, *first).status == "no_keys"  # retry with no new secrets: still nothing
    assert not dec.has_keys(S2C)
    dec._keylog.feed_text(cap.keylog)  # the key log file grew
    assert dec.decrypt(S2C, *first).ok
    assert dec.decrypt(S2C, *second).ok


@pytest.mark.parametrize("which", ["tls13", "tls10"])
def test_a_failed_record_spends_its_sequence_number(request: pytest.FixtureRequest, which: str) -> None:
    cap = request.getfixturevalue(f"{which}_capture")
    dec = _decryptor(cap, cap.keylog)
    (t1, v1, p1), second = _server_encrypted(cap)[:2]
    # Damage the tag/MAC area but keep the last block, which is TLS 1.0's next IV.
    damaged = p1[:-20] + bytes([p1[-20] ^ 1]) + p1[-19:]
    assert dec.decrypt(S2C, t1, v1, damaged).status == "failed"
    assert dec.decrypt(S2C, *second).ok


@pytest.mark.parametrize("which", ["tls13", "tls10"])
def test_skipped_records_keep_sequence_and_iv_chain(request: pytest.FixtureRequest, which: str) -> None:
    cap = request.getfixturevalue(f"{which}_capture")
    dec = _decryptor(cap, "")
    first, second = _server_encrypted(cap)[:2]
    assert dec.decrypt(S2C, *first).status == "no_keys"
    dec.skip(S2C, first[2])  # the caller's backlog overflowed: give up on it
    dec._keylog.feed_text(cap.keylog)
    assert dec.decrypt(S2C, *second).ok


def test_decrypt_before_any_epoch_reports_no_keys(tls13_capture: Capture) -> None:
    dec = ConnectionDecryptor(KeyLog())
    ctype, version, payload = _server_encrypted(tls13_capture)[0]
    result = dec.decrypt(S2C, ctype, version, payload)
    assert result == DecryptResult(status="no_keys", reason="direction is not encrypted")


def test_unsupported_suite_is_reported(tls13_capture: Capture) -> None:
    log = KeyLog()
    log.feed_text(tls13_capture.keylog)
    dec = ConnectionDecryptor(log)
    dec.set_client_random(tls13_capture.client_random)
    dec.set_server_hello(bytes(32), 0x0303, 0x0088 + 0x7000)  # a code point we do not know
    dec.change_epoch(S2C, "tls12")
    assert dec.decrypt(S2C, 23, 0x0303, bytes(64)).status == "unsupported"


def test_unknown_epoch_is_misuse() -> None:
    with pytest.raises(ValueError):
        ConnectionDecryptor(KeyLog()).change_epoch(C2S, "tls14")


# --- RFC 8448 through the whole decryptor ---------------------------------------------------------


def _rfc8448_decryptor() -> ConnectionDecryptor:
    log = KeyLog()
    text = "".join(f"{label} {rfc.RFC8448_CLIENT_RANDOM.hex()} {secret.hex()}\n"
                   for label, secret in rfc.RFC8448_SECRETS.items())
    assert log.feed_text(text) == []
    dec = ConnectionDecryptor(log)
    dec.set_client_random(rfc.RFC8448_CLIENT_RANDOM)
    dec.set_server_hello(rfc.RFC8448_SERVER_RANDOM, 0x0304, 0x1301)
    dec.change_epoch(S2C, "handshake")
    dec.change_epoch(C2S, "handshake")
    return dec


def _open(dec: ConnectionDecryptor, direction: Direction, record: bytes) -> DecryptResult:
    return dec.decrypt(direction, record[0], int.from_bytes(record[1:3], "big"), record[5:])


def test_rfc8448_trace_through_the_decryptor() -> None:
    dec = _rfc8448_decryptor()
    flight = _open(dec, S2C, rfc.RFC8448_SERVER_FLIGHT_RECORD)
    assert flight.ok and flight.inner_type == 22
    assert [t for t, _ in messages(flight.plaintext or b"")] == [8, 11, 15, 20]
    assert flight.plaintext is not None and flight.plaintext.endswith(rfc.RFC8448_SERVER_FINISHED)
    dec.change_epoch(S2C, "application")
    fin = _open(dec, C2S, rfc.RFC8448_CLIENT_FINISHED_RECORD)
    assert (fin.inner_type, fin.plaintext) == (22, rfc.RFC8448_CLIENT_FINISHED)
    dec.change_epoch(C2S, "application")
    app = _open(dec, C2S, rfc.RFC8448_CLIENT_APP_RECORD)
    assert (app.status, app.inner_type, app.plaintext) == ("ok", 23, rfc.RFC8448_APP_DATA)
    # The server's first application record (its NewSessionTicket) is not in our vectors.
    dec.skip(S2C, b"")
    app = _open(dec, S2C, rfc.RFC8448_SERVER_APP_RECORD)
    assert (app.status, app.inner_type, app.plaintext) == ("ok", 23, rfc.RFC8448_APP_DATA)


def test_key_update_moves_to_the_next_secret() -> None:
    dec = _rfc8448_decryptor()
    dec.change_epoch(C2S, "application")
    dec.key_update(C2S)
    # Generation 1 keys do not open a generation 0 record; a fresh epoch does.
    assert _open(dec, C2S, rfc.RFC8448_CLIENT_APP_RECORD).status == "failed"
    dec.change_epoch(C2S, "application")
    assert _open(dec, C2S, rfc.RFC8448_CLIENT_APP_RECORD).ok


# --- corpus captures with key logs ----------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def _packets(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(link type, frame) for each packet of a pcap or pcapng file (just enough for the corpus)."""
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":  # pcapng
        order = "little" if data[8:12] == b"\x4d\x3c\x2b\x1a" else "big"
        links: list[int] = []
        pos = 0
        while pos + 12 <= len(data):
            btype = int.from_bytes(data[pos : pos + 4], order)
            blen = int.from_bytes(data[pos + 4 : pos + 8], order)
            body = data[pos + 8 : pos + blen - 4]
            if btype == 0x0A0D0D0A:
                order = "little" if body[:4] == b"\x4d\x3c\x2b\x1a" else "big"
                links = []
            elif btype == 1:
                links.append(int.from_bytes(body[0:2], order))
            elif btype == 6:
                caplen = int.from_bytes(body[12:16], order)
                yield links[int.from_bytes(body[0:4], order)], body[20 : 20 + caplen]
            elif btype == 3:
                yield links[0], body[4:]
            pos += blen
        return
    order = "little" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"
    link = int.from_bytes(data[20:24], order)
    pos = 24
    while pos + 16 <= len(data):
        caplen = int.from_bytes(data[pos + 8 : pos + 12], order)
        yield link, data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen


def _ip_packet(link: int, frame: bytes) -> bytes | None:
    if link == 1:  # Ethernet, maybe VLAN-tagged
        pos, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype == 0x8100:
            ethertype, pos = int.from_bytes(frame[pos + 2 : pos + 4], "big"), pos + 4
        return frame[pos:] if ethertype in (0x0800, 0x86DD) else None
    if link == 0:  # BSD loopback
        return frame[4:]
    if link in (101, 12, 14):  # raw IP
        return frame
    if link == 113:  # Linux cooked
        return frame[16:]
    if link == 276:  # Linux cooked v2
        return frame[20:]
    return None


def tcp_connections(path: Path) -> list[list[tuple[Direction, bytes]]]:
    """Each TCP connection's payload chunks in capture order, in-order bytes only."""
    conns: dict[frozenset, dict] = {}
    for link, frame in _packets(path.read_bytes()):
        ip = _ip_packet(link, frame)
        if not ip:
            continue
        if ip[0] >> 4 == 4:
            if ip[9] != 6:
                continue
            src, dst, tcp = ip[12:16], ip[16:20], ip[(ip[0] & 15) * 4 : int.from_bytes(ip[2:4], "big")]
        elif ip[0] >> 4 == 6:
            if ip[6] != 6:
                continue
            src, dst, tcp = ip[8:24], ip[24:40], ip[40 : 40 + int.from_bytes(ip[4:6], "big")]
        else:
            continue
        sport, dport = tcp[0:2], tcp[2:4]
        a, b = (src, sport), (dst, dport)
        seq, flags, payload = int.from_bytes(tcp[4:8], "big"), tcp[13], tcp[(tcp[12] >> 4) * 4 :]
        conn = conns.setdefault(frozenset((a, b)), {"client": None, "next": {}, "pending": {}, "chunks": []})
        if flags & 0x12 == 0x02 or (conn["client"] is None and payload):
            conn["client"] = conn["client"] or a
        if flags & 0x02:
            conn["next"][a] = seq + 1
            continue
        if not payload or conn["client"] is None:
            continue
        direction = C2S if a == conn["client"] else S2C
        nxt = conn["next"].setdefault(a, seq)
        pending = conn["pending"].setdefault(a, {})
        pending[seq] = payload
        while True:  # deliver what is contiguous; drop what was already delivered
            ready = [s for s in pending if s <= nxt]
            if not ready:
                break
            s = min(ready)
            data = pending.pop(s)[nxt - s :]
            if data:
                conn["chunks"].append((direction, data))
                nxt += len(data)
        conn["next"][a] = nxt
    return [c["chunks"] for c in conns.values() if c["chunks"]]


def _tls_only(chunks: list[tuple[Direction, bytes]]) -> list[tuple[Direction, bytes]]:
    """Drop a STARTTLS preamble: each direction starts at its first handshake record."""
    out, started = [], {C2S: False, S2C: False}
    for direction, data in chunks:
        if not started[direction]:
            # A ClientHello/ServerHello record: 16 03 0x, a length, then msg type 1 or 2.
            at = next((i for i in range(len(data) - 5) if data[i] == 0x16 and data[i + 1] == 3
                       and data[i + 5] in (1, 2)), None)
            if at is None:
                continue
            started[direction], data = True, data[at:]
        out.append((direction, data))
    return out


def _corpus(relative: str) -> Path:
    path = CORPUS / relative
    if not path.is_file():
        pytest.skip(f"corpus file {path} not found")
    return path


def _corpus_replays(capture: str, keylog: str) -> list[Replay]:
    keys = _corpus(keylog).read_text()
    out = []
    for chunks in tcp_connections(_corpus(capture)):
        rep = Replay(keys)
        for direction, data in _tls_only(chunks):
            rep.feed(direction, data)
        out.append(rep)
    return out


def _app_data(rep: Replay, direction: Direction) -> bytes:
    return b"".join(p for t, p in rep.opened[direction] if t == 23)


def _all_ok(rep: Replay) -> bool:
    results = rep.results[C2S] + rep.results[S2C]
    return bool(results) and all(r.ok for r in results)


@pytest.mark.parametrize("name", ["illustrated-tls12", "illustrated-tls13"])
def test_corpus_illustrated_connections_decrypt_to_ping_pong(name: str) -> None:
    (rep,) = _corpus_replays(f"illustrated/{name}.pcap", f"illustrated/{name}.keylog")
    assert _all_ok(rep)
    assert _app_data(rep, C2S) == b"ping" and _app_data(rep, S2C) == b"pong"
    if name.endswith("13"):
        server_hs = [m for t, p in rep.opened[S2C] if t == 22 for m, _ in messages(p)]
        assert server_hs == [8, 11, 15, 20, 4, 4]  # ... Finished, then two NewSessionTickets
    else:
        assert rep.opened[C2S][-1] == (21, b"\x01\x00")


def test_corpus_tls_null_shows_the_request() -> None:
    (rep,) = _corpus_replays("wireshark-notes/tls-null.pcapng", "wireshark-notes/tls-null.keylog")
    assert _all_ok(rep)
    assert _app_data(rep, C2S).startswith(b"GET / HTTP/1.1")


def test_corpus_smtp_starttls_cbc_sha256_decrypts() -> None:
    (rep,) = _corpus_replays("wireshark-notes/smtp2525-ssl.pcapng", "wireshark-notes/smtp2525-ssl.keylog")
    assert _all_ok(rep)
    assert _app_data(rep, C2S).startswith(b"EHLO")


@pytest.mark.parametrize("name", ["tls12-decryption", "tls-1.2-stream-keylog"])
def test_corpus_zeek_gcm_sessions_decrypt(name: str) -> None:
    reps = [r for r in _corpus_replays(f"zeek/{name}.pcap", f"zeek/{name}.keylog") if r.results[C2S]]
    assert reps and all(_all_ok(r) for r in reps)
    assert any(_app_data(r, C2S).startswith(b"GET /") for r in reps)


def test_corpus_renegotiation_inside_the_encrypted_channel() -> None:
    """The renegotiating hellos travel under the first keys; the key log has no entry for the
    second handshake, so what follows its change_cipher_spec is "no_keys", never "failed"."""
    (rep,) = _corpus_replays("hotplace/tls12-renegotiation.pcapng", "hotplace/tls12.keylog")
    client_hs = [m for t, p in rep.opened[C2S] if t == 22 for m, _ in messages(p)]
    server_hs = [m for t, p in rep.opened[S2C] if t == 22 for m, _ in messages(p)]
    assert client_hs[:2] == [20, 1] and server_hs[:2] == [20, 2]
    for direction in Direction:
        statuses = [r.status for r in rep.results[direction]]
        first_missing = statuses.index("no_keys")
        assert set(statuses[:first_missing]) == {"ok"} and set(statuses[first_missing:]) == {"no_keys"}
        assert rep.opened[direction][-1] == (20, b"\x01")  # the second change_cipher_spec, opened


def test_corpus_ssl3_connections_decrypt_or_say_unsupported() -> None:
    reps = _corpus_replays("wireshark-notes/ssl3-dump.pcapng", "wireshark-notes/ssl3-dump.keylog")
    assert len(reps) >= 39
    opened = 0
    for rep in reps:
        statuses = {r.status for r in rep.results[C2S] + rep.results[S2C]}
        assert statuses in ({"ok"}, {"unsupported"}), statuses
        if statuses == {"ok"}:
            opened += 1
            assert _app_data(rep, C2S).startswith(b"GET /")
    assert opened >= 35  # AES, Camellia, SEED, IDEA, DES, 3DES, RC4 under SSL 3.0's MAC and PRF
    unsupported = {r.dec._suite for r in reps if r.results[C2S][0].status == "unsupported"}
    assert unsupported <= {0x0003, 0x0006, 0x0008}  # only the EXPORT suites
