"""Redaction: one pseudonym per original value across the whole document, nothing original left.

The sessions are real, with certificates whose names look like a private network's: Python
``ssl`` peers over memory BIOs (a wrong host name over TLS 1.2, a client certificate the server
does not trust, a clean TLS 1.3 session) and, when the binary is there, ``openssl s_server``
naming its client CAs in a CertificateRequest (Python's ``ssl`` never does) with ``s_client``
presenting a certificate from another CA.  All are fed through the real pipeline into the
session sink, then redacted.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.certfactory import Chain, make_chain
from tests.peers import Pki, contexts, run_session
from tests.test_analysis_openssl import run_openssl
from tlsproxy.pipeline import ConnectionEnd, ConnectionInfo, Pipeline, RunInfo
from tlsproxy.redact import Pseudonyms, redact_document
from tlsproxy.sinks.sessionjson import SCHEMA_PATH, SessionJsonSink
from tlsproxy.wire.events import Direction

SCHEMA = json.loads(SCHEMA_PATH.read_text())

SNI_WRONG = "billing.corp.internal"
SERVER_NAME = "api.corp.internal"
SERVER_IP4 = "10.20.30.40"
SERVER_IP6 = "fd00:1234::5"
CLIENT_IP = "172.16.5.9"
SERVER_ORG = "Corp Widgets, Ltd."  # a comma: the subject escapes it (O=Corp Widgets\, Ltd.)


def _pki(directory: Path) -> tuple[Pki, Chain, Chain]:
    server = make_chain(SERVER_NAME, root_name="Corp Server Root CA", sans=[SERVER_NAME, SERVER_IP4, SERVER_IP6],
                        org=SERVER_ORG)
    trusted_clients = make_chain("alice.corp.internal", root_name="Corp Client Root CA", eku=("clientAuth",))
    rogue_client = make_chain("mallory.corp.internal", root_name="Rogue Root CA", eku=("clientAuth",),
                              org="Rogue People")
    sp = server.write_pem(directory, "server")
    tp = trusted_clients.write_pem(directory, "trusted")
    rp = rogue_client.write_pem(directory, "rogue")
    # The client presents the rogue chain; the server trusts (and names) only the corp client root.
    pki = Pki(server=server, client=rogue_client, server_cert=sp.cert, server_key=sp.key, server_ca=sp.ca,
              client_cert=rp.cert, client_key=rp.key, client_ca=tp.ca)
    return pki, server, rogue_client


Chunks = list[tuple[Direction, bytes]]
HAVE_OPENSSL = shutil.which("openssl") is not None
NOW = time.time()  # certificate validity is judged at the connection's wall-clock start


async def _document(sessions: list[tuple[Chunks, ConnectionInfo]]) -> dict[str, Any]:
    sink = SessionJsonSink(None)
    pipeline = Pipeline([sink])
    pipeline.run_started(RunInfo(command="run", started=1_700_000_000.0, source="/srv/capture/corp-secret.pcap",
                                 listeners=({"label": "", "host": "0.0.0.0", "port": 8443, "mode": "fixed",
                                             "upstream": f"[{SERVER_IP6}]:8443"},)))
    for chunks, info in sessions:
        pipeline.open(info)
        t = info.started
        for direction, data in chunks:
            t += 0.002
            pipeline.data(info.id, direction, data, t)
        pipeline.eof(info.id, Direction.C2S, t)
        pipeline.eof(info.id, Direction.S2C, t)
        pipeline.close(info.id, ConnectionEnd(how="fin", by="client", at=t + 0.01))
    pipeline.run_finished(RunInfo(), 1_700_000_002.0)
    return await sink.aclose()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], list[Chain]]:
    tmp = tmp_path_factory.mktemp("redact")
    pki, server, rogue = _pki(tmp)
    client, srv = contexts(pki, version=ssl.TLSVersion.TLSv1_2)
    wrong_host = run_session(client, srv, server_hostname=SNI_WRONG)
    client, srv = contexts(pki, version=ssl.TLSVersion.TLSv1_2, require_client_cert=True, client_has_cert=True)
    mtls = run_session(client, srv, server_hostname=SERVER_NAME)
    client, srv = contexts(pki)
    clean = run_session(client, srv, server_hostname=SERVER_NAME)
    assert not wrong_host.established and not mtls.established and clean.established
    infos = [
        ConnectionInfo(id=1, client=(CLIENT_IP, 50001), server=(SERVER_IP6, 8443), target=f"[{SERVER_IP6}]:8443",
                       started=5.0, wall_start=NOW),
        ConnectionInfo(id=2, client=(CLIENT_IP, 50002), server=(SERVER_IP4, 443), target=f"{SERVER_NAME}:443",
                       started=6.0, wall_start=NOW),
        ConnectionInfo(id=3, client=(CLIENT_IP, 50003), server=(SERVER_IP4, 443), target=f"{SERVER_IP4}:443",
                       started=7.0, wall_start=NOW),
    ]
    sessions = [(s.chunks, info) for s, info in zip((wrong_host, mtls, clean), infos, strict=True)]
    if HAVE_OPENSSL:
        chunks, _, out = run_openssl(
            ["-cert", str(pki.server_cert), "-key", str(pki.server_key), "-Verify", "1", "-verify_return_error",
             "-CAfile", str(pki.client_ca), "-tls1_2"],
            ["-cert", str(pki.client_cert), "-key", str(pki.client_key), "-CAfile", str(pki.server_ca), "-tls1_2",
             "-servername", SERVER_NAME])
        assert chunks, out
        sessions.append(([(d, data) for d, data, _ in chunks if data],
                         ConnectionInfo(id=4, client=(CLIENT_IP, 50004), server=(SERVER_IP4, 443),
                                        target=f"{SERVER_NAME}:443", started=8.0, wall_start=NOW)))
    original = asyncio.run(_document(sessions))
    return original, redact_document(original), [server, rogue]


# -- helpers: what the original said, and what it became ------------------------------------------


def _dn_values(dn: str) -> list[tuple[str, str]]:
    """(type, value) pairs of an RFC 4514 string as certs.py writes it (\\-escapes only)."""
    pairs = []
    for part in re.split(r"(?<!\\)[,+]", dn):
        kind, _, value = part.partition("=")
        pairs.append((kind, re.sub(r"\\(.)", r"\1", value)))
    return pairs


def _pairs(orig: Any, red: Any, key: str = "") -> list[tuple[str, str]]:
    """(original, pseudonym) for every name-bearing field, walking both documents in step."""
    out: list[tuple[str, str]] = []
    if isinstance(orig, dict):
        for k, v in orig.items():
            if k in red:
                out += _pairs(v, red[k], k)
        if orig.get("type") == "server_name" and "value" in orig:
            out += list(zip(orig["value"], red["value"], strict=True))
    elif isinstance(orig, list) and isinstance(red, list):
        assert len(orig) == len(red)
        for o, r in zip(orig, red, strict=True):
            out += _pairs(o, r, key)
    elif isinstance(orig, str) and isinstance(red, str):
        if key in ("subject", "issuer", "certificate_authorities"):
            o_attrs, r_attrs = _dn_values(orig), _dn_values(red)
            assert [k for k, _ in o_attrs] == [k for k, _ in r_attrs], (orig, red)
            out += [(o, r) for (_, o), (_, r) in zip(o_attrs, r_attrs, strict=True)]
        elif key in ("host", "sni", "checked", "server_name", "certificate_names", "sans_dns", "sans_ip",
                     "subject_cn", "serial", "sha256"):
            out.append((orig, red))
        elif key in ("target", "upstream"):
            o_host, r_host = orig.rsplit(":", 1)[0].strip("[]"), red.rsplit(":", 1)[0].strip("[]")
            assert orig.rsplit(":", 1)[1] == red.rsplit(":", 1)[1], "the port stays"
            out.append((o_host, r_host))
    return out


def _table(original: dict, redacted: dict) -> dict[str, str]:
    pairs = _pairs(original, redacted)
    table: dict[str, set[str]] = {}
    for o, r in pairs:
        table.setdefault(o.lower(), set()).add(r)
    split = {o: rs for o, rs in table.items() if len(rs) != 1}
    assert not split, f"one original, several pseudonyms: {split}"
    return {o: next(iter(rs)) for o, rs in table.items()}


def _secrets(original: dict) -> set[str]:
    table = {o for o, _ in _pairs(original, original)}
    return {s for s in table if len(s) >= 3} | {s[:16] for s in table if re.fullmatch(r"[0-9a-f]{64}", s)}


# -- tests -----------------------------------------------------------------------------------------


def test_redacted_document_validates_and_keeps_the_story(case):
    original, red, _ = case
    jsonschema.validate(red, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert red["redacted"] is True and "redacted" not in original, "the input is left alone"
    assert [c["diagnosis"]["outcome"] for c in red["connections"]] == \
        [c["diagnosis"]["outcome"] for c in original["connections"]]
    assert red["connections"][0]["diagnosis"]["outcome"] == "server_cert_rejected"
    assert red["connections"][2]["diagnosis"]["outcome"] == "established"
    for o, r in zip(original["connections"], red["connections"], strict=True):
        assert [f["code"] for f in r["findings"]] == [f["code"] for f in o["findings"]]
        assert len(r["events"]) == len(o["events"])
    text = json.dumps(red)
    for raw in ('"payload"', '"ciphertext"', '"random"', '"session_id"'):
        assert raw not in text, raw
    assert red["source"] == "file-1"


def test_no_original_name_address_dn_value_serial_or_fingerprint_survives(case):
    original, red, chains = case
    text = json.dumps(red, ensure_ascii=False)
    secrets = _secrets(original)
    # The collection above must have found what we put in, or this test proves nothing.
    named = ("Corp Client Root CA",) if HAVE_OPENSSL else ()
    for must in (SNI_WRONG, SERVER_NAME, SERVER_IP4, SERVER_IP6, CLIENT_IP, SERVER_ORG, "Corp Server Root CA",
                 "mallory.corp.internal", "Rogue People", "Rogue Root CA", "tlsproxy tests",
                 "tlsproxy Test Intermediate CA 1", *named):
        assert must in secrets, must
    for chain in chains:
        for issued in chain.certs[:-1]:
            assert f"{issued.cert.serial_number:x}".lower() in {s.lower().lstrip("0") for s in secrets}
    secrets |= {"/srv/capture/corp-secret.pcap", "corp-secret", "Corp Widgets", "corp.internal"}
    lowered = text.lower()
    leaked = sorted(s for s in secrets if s.lower() in lowered)
    assert not leaked, leaked


def test_one_original_one_pseudonym_everywhere(case):
    original, red, _ = case
    table = _table(original, red)  # asserts each original got exactly one pseudonym
    pseudonyms = list(table.values())
    assert len(set(pseudonyms)) == len(pseudonyms), "two originals share a pseudonym"
    # Host names used as hosts look like hosts; CA names and organisations do not.
    assert table[SNI_WRONG].endswith(".example") and table[SERVER_NAME].endswith(".example")
    assert table["mallory.corp.internal"].endswith(".example")
    for ca in ("corp server root ca", "rogue root ca", "tlsproxy test intermediate ca 1",
               *(("corp client root ca",) if HAVE_OPENSSL else ())):
        assert re.fullmatch(r"name-\d+", table[ca]), (ca, table[ca])
    assert re.fullmatch(r"org-\d+", table[SERVER_ORG.lower()])
    # IPs stay IPs of the same family, also inside host:port.
    assert table[SERVER_IP4].startswith(("192.0.2.", "198.51.100.", "203.0.113."))
    assert table[SERVER_IP6].startswith("2001:db8::")
    first = red["connections"][0]
    assert first["target"] == f"[{table[SERVER_IP6]}]:8443"
    assert red["listeners"][0]["upstream"] == f"[{table[SERVER_IP6]}]:8443"
    assert red["connections"][2]["target"] == f"{table[SERVER_IP4]}:443"


def test_subject_cn_san_and_sni_agree(case):
    original, red, _ = case
    first = red["connections"][0]
    leaf = first["certificates"][0]
    assert leaf["subject_cn"].endswith(".example")
    assert leaf["sans_dns"] == [leaf["subject_cn"]]
    assert leaf["sans_ip"][0] != leaf["sans_ip"][1]
    for conn in red["connections"]:
        for cert in conn["certificates"]:
            assert ("CN", cert["subject_cn"]) in _dn_values(cert["subject"]), cert["subject"]
            if cert["is_ca"]:
                assert not cert["subject_cn"].endswith(".example"), "a CA is not relabelled as a host"
    # The intermediate's subject is the leaf's issuer, rewritten the same way.
    assert first["certificates"][1]["subject"] == leaf["issuer"]
    # The same server name in the clean session's SNI and in the leaf of the wrong-host session.
    assert red["connections"][2]["summary"]["sni"] == leaf["subject_cn"]
    hello = next(e for e in first["events"] if e.get("type") == "client_hello")
    assert hello["fields"]["server_name"] == first["summary"]["sni"] != leaf["subject_cn"]
    entries = next(e for e in first["events"] if e.get("type") == "certificate")["fields"]["entries"]
    assert [e["subject"] for e in entries] == [c["subject"] for c in first["certificates"]]
    assert [e["sha256"] for e in entries] == [c["sha256"] for c in first["certificates"]]
    assert set(entries[0]) == set(next(e for e in original["connections"][0]["events"]
                                       if e.get("type") == "certificate")["fields"]["entries"][0])


def test_findings_and_diagnoses_use_the_same_pseudonyms(case):
    original, red, _ = case
    table = _table(original, red)
    checked = 0
    for o_conn, r_conn in zip(original["connections"], red["connections"], strict=True):
        texts = [(o["detail"], r["detail"]) for o, r in zip(o_conn["findings"], r_conn["findings"], strict=True)]
        texts.append((o_conn["diagnosis"]["cause"], r_conn["diagnosis"]["cause"]))
        texts.append((o_conn["summary"]["diagnosis"], r_conn["summary"]["diagnosis"]))
        texts += list(zip(o_conn["diagnosis"]["checks"], r_conn["diagnosis"]["checks"], strict=True))
        for o_text, r_text in texts:
            for o, r in table.items():
                if len(o) >= 3 and o in o_text.lower():
                    assert r in r_text, (o, r, r_text)
                    checked += 1
    assert checked >= 10
    first = red["connections"][0]
    mismatch = next(f for f in first["findings"] if f["code"] == "CERT_HOSTNAME_MISMATCH")
    assert first["summary"]["sni"] in mismatch["detail"]
    assert first["certificates"][0]["subject_cn"] in mismatch["detail"]
    mtls = red["connections"][1]
    client_certs = [c for c in mtls["certificates"] if c["dir"] == "c2s"]
    assert client_certs and client_certs[0]["subject_cn"] == table["mallory.corp.internal"]


@pytest.mark.skipif(not HAVE_OPENSSL, reason="openssl binary not installed (a server that names its client CAs)")
def test_named_client_cas_are_rewritten_like_the_certificates(case):
    original, red, _ = case
    mtls = red["connections"][3]
    assert mtls["diagnosis"]["outcome"] == original["connections"][3]["diagnosis"]["outcome"] == "client_cert_rejected"
    request = next(e for e in mtls["events"] if e.get("type") == "certificate_request")
    (named,) = request["fields"]["certificate_authorities"]
    assert re.fullmatch(r"CN=name-\d+,O=org-\d+|O=org-\d+,CN=name-\d+", named), named
    requested = next(f for f in mtls["findings"] if f["code"] == "CLIENT_CERT_REQUESTED")
    mismatch = next(f for f in mtls["findings"] if f["code"] == "CLIENT_CERT_CA_MISMATCH")
    assert named in requested["detail"] and named in mismatch["detail"]
    sent = [c for c in mtls["certificates"] if c["dir"] == "c2s"]
    assert sent[0]["subject_cn"] in mismatch["detail"]
    assert named not in (c["issuer"] for c in sent), "the rogue CA is not the CA the server named"
    # The rogue client is the same pseudonym in the Python session and in the OpenSSL one.
    assert sent[0]["subject_cn"] == next(c for c in red["connections"][1]["certificates"]
                                         if c["dir"] == "c2s")["subject_cn"]


def test_pseudonyms_for_addresses_and_names():
    p = Pseudonyms()
    assert p.hostport("fd00::1") == p.host("fd00::1") == "2001:db8::1"  # a bare IPv6 address is not host:port
    assert p.hostport("[fd00::1]:443") == "[2001:db8::1]:443"
    assert p.hostport("[FD00:0::1]:80") == "[2001:db8::1]:80", "one address, however it is written"
    assert p.hostport("10.0.0.1:443") == "192.0.2.1:443"
    assert p.host("Web.Corp") == p.host("web.corp") == "host-1.example"
    assert p.host("*.web.corp") == "*.host-1.example"
    assert p.dn("CN=web.corp,O=Acme\\, Inc.") == "CN=host-1.example,O=org-1"
    assert p.dn("CN=Acme\\, Inc.") == "CN=org-1", "the same value under another attribute"
    assert p.email("ops@web.corp") == "user-1@host-1.example"
    replace = p.text_replacer()
    assert replace("web.corp: Acme, Inc. at 10.0.0.1:443 (not www.web.corpx).") == \
        "host-1.example: org-1 at 192.0.2.1:443 (not www.web.corpx)."
