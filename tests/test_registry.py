"""IANA registry lookups: names checked against what real TLS stacks send and call them."""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlsproxy.wire import registry as r
from tlsproxy.wire.events import ContentType

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

NAME_LOOKUPS: list[Callable[[int], str]] = [
    r.version_name,
    r.content_type_name,
    r.handshake_type_name,
    r.cipher_suite_name,
    r.group_name,
    r.signature_scheme_name,
    r.extension_name,
    r.alert_description_name,
    r.alert_meaning,
    r.alert_level_name,
    r.certificate_type_name,
    r.compression_method_name,
    r.psk_key_exchange_mode_name,
    r.ec_point_format_name,
    r.certificate_compression_algorithm_name,
    r.heartbeat_message_type_name,
    r.heartbeat_mode_name,
    r.name_type_name,
    r.certificate_status_type_name,
]
SIXTEEN_BIT_LOOKUPS = [
    r.version_name,
    r.cipher_suite_name,
    r.group_name,
    r.signature_scheme_name,
    r.extension_name,
    r.certificate_compression_algorithm_name,
]
GREASE_VALUES = [0x0A0A + 0x1010 * i for i in range(16)]


def _all_openssl_ciphers() -> list[dict[str, object]]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return ctx.get_ciphers()


# --- totality ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lookup", NAME_LOOKUPS, ids=lambda f: f.__name__)
@given(value=st.integers(min_value=-(2**20), max_value=2**40))
def test_lookup_is_total_over_any_int(lookup: Callable[[int], str], value: int) -> None:
    name = lookup(value)
    assert isinstance(name, str) and name


def test_lookups_are_total_over_every_16_bit_value() -> None:
    for value in range(0x10000):
        for lookup in NAME_LOOKUPS:
            assert lookup(value)
        r.cipher_suite_info(value)
        r.signature_scheme_key_type(value)


def test_unknown_16_bit_values_render_as_four_hex_digits() -> None:
    for lookup in SIXTEEN_BIT_LOOKUPS:
        assert lookup(0x1A2B) == "unknown(0x1a2b)"


def test_unknown_8_bit_values_render_in_decimal() -> None:
    assert r.handshake_type_name(7) == "unknown(7)"
    assert r.content_type_name(99) == "unknown(99)"
    assert r.alert_description_name(200) == "unknown(200)"
    assert r.alert_level_name(3) == "unknown(3)"


# --- GREASE -----------------------------------------------------------------------------------


def test_exactly_the_sixteen_rfc8701_values_are_grease() -> None:
    assert sorted(v for v in range(0x10000) if r.is_grease(v)) == GREASE_VALUES


@pytest.mark.parametrize("value", GREASE_VALUES, ids=hex)
def test_grease_values_are_named_grease_in_every_16_bit_registry(value: int) -> None:
    for lookup in (r.cipher_suite_name, r.group_name, r.extension_name, r.version_name,
                   r.signature_scheme_name):
        assert lookup(value) == "GREASE"
    assert r.cipher_suite_info(value) is None


def test_one_byte_grease_for_psk_modes() -> None:
    assert sorted(r.GREASE_U8) == [0x0B, 0x2A, 0x49, 0x68, 0x87, 0xA6, 0xC5, 0xE4]
    assert all(r.psk_key_exchange_mode_name(v) == "GREASE" for v in r.GREASE_U8)
    assert r.psk_key_exchange_mode_name(1) == "psk_dhe_ke"
    assert r.psk_key_exchange_mode_name(2) == "unknown(2)"


# --- names against real stacks ----------------------------------------------------------------


def test_every_cipher_python_ssl_offers_has_an_iana_name() -> None:
    ciphers = _all_openssl_ciphers()
    assert len(ciphers) > 50
    for cipher in ciphers:
        value = int(cipher["id"]) & 0xFFFF  # type: ignore[call-overload]
        name = r.cipher_suite_name(value)
        assert not name.startswith("unknown"), cipher["name"]
        if cipher["protocol"] == "TLSv1.3":
            assert name == cipher["name"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_cipher_names_match_openssl_standard_names() -> None:
    out = subprocess.run(
        ["openssl", "ciphers", "-V", "-stdname", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    checked = 0
    for line in out.splitlines():
        parts = line.split()
        hi, lo = parts[0].split(",")
        value = int(hi, 16) << 8 | int(lo, 16)
        assert r.cipher_suite_name(value) == parts[2]
        checked += 1
    assert checked > 50


_KEA = {
    "kx-rsa": {"RSA"}, "kx-dhe": {"DHE", "DH"}, "kx-ecdhe": {"ECDHE", "ECDH"},
    "kx-psk": {"PSK"}, "kx-dhe-psk": {"DHE_PSK"}, "kx-rsa-psk": {"RSA_PSK"},
    "kx-ecdhe-psk": {"ECDHE_PSK"}, "kx-srp": {"SRP"}, "kx-any": {"TLS13"},
}
_AUTH = {
    "auth-rsa": "RSA", "auth-dss": "DSS", "auth-ecdsa": "ECDSA", "auth-psk": "PSK",
    "auth-srp": "SRP", "auth-null": "anon", "auth-any": "TLS13",
}


def test_parsed_suite_info_agrees_with_openssl_description() -> None:
    for cipher in _all_openssl_ciphers():
        info = r.cipher_suite_info(int(cipher["id"]) & 0xFFFF)  # type: ignore[call-overload]
        assert info is not None
        label = info.name
        assert info.aead == cipher["aead"], label
        assert info.key_exchange in _KEA[str(cipher["kea"])], label
        assert info.authentication == _AUTH[str(cipher["auth"])], label
        assert info.anonymous == (cipher["auth"] == "auth-null"), label
        symmetric = cipher["symmetric"]
        if symmetric is None:
            assert info.null_cipher, label
        else:
            assert info.cipher.lower().replace("_", "-").removesuffix("-8") == symmetric, label
        if not info.aead:
            expected_mac = {"sha1": "SHA"}.get(str(cipher["digest"]), str(cipher["digest"]).upper())
            assert info.mac == expected_mac, label
        assert info.tls13 == (cipher["protocol"] == "TLSv1.3"), label


def _client_hello_from_python_ssl() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="example.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _u16s(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def _hello_fields(record: bytes) -> dict[str, list[int]]:
    """Just enough ClientHello walking to pull out the code-point lists (test-only)."""
    assert record[0] == 22
    body = record[5 + 4:]
    pos = 2 + 32
    pos += 1 + body[pos]
    n = int.from_bytes(body[pos:pos + 2], "big")
    suites = _u16s(body[pos + 2:pos + 2 + n])
    pos += 2 + n
    pos += 1 + body[pos]
    end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
    pos += 2
    fields: dict[str, list[int]] = {"cipher_suites": suites, "extensions": []}
    while pos < end:
        ext_type = int.from_bytes(body[pos:pos + 2], "big")
        size = int.from_bytes(body[pos + 2:pos + 4], "big")
        data = body[pos + 4:pos + 4 + size]
        fields["extensions"].append(ext_type)
        if ext_type == 10:
            fields["supported_groups"] = _u16s(data[2:])
        elif ext_type == 13:
            fields["signature_algorithms"] = _u16s(data[2:])
        elif ext_type == 43:
            fields["supported_versions"] = _u16s(data[1:])
        pos += 4 + size
    return fields


def test_every_code_point_in_a_real_client_hello_has_a_name() -> None:
    fields = _hello_fields(_client_hello_from_python_ssl())
    lookups = {
        "cipher_suites": r.cipher_suite_name,
        "extensions": r.extension_name,
        "supported_groups": r.group_name,
        "signature_algorithms": r.signature_scheme_name,
        "supported_versions": r.version_name,
    }
    for field, lookup in lookups.items():
        assert fields[field], field
        for value in fields[field]:
            assert not lookup(value).startswith("unknown"), (field, hex(value))
    names = {r.extension_name(v) for v in fields["extensions"]}
    assert {"server_name", "application_layer_protocol_negotiation", "supported_versions",
            "key_share", "supported_groups", "signature_algorithms"} <= names
    assert "TLS 1.3" in {r.version_name(v) for v in fields["supported_versions"]}
    for scheme in fields["signature_algorithms"]:
        assert r.signature_scheme_key_type(scheme) is not None, hex(scheme)


def test_version_constants_match_python_ssl() -> None:
    assert r.TLS1_3 == ssl.TLSVersion.TLSv1_3.value == 0x0304
    assert r.TLS1_2 == ssl.TLSVersion.TLSv1_2.value
    assert r.TLS1_1 == ssl.TLSVersion.TLSv1_1.value
    assert r.TLS1_0 == ssl.TLSVersion.TLSv1.value
    assert r.SSL3_0 == ssl.TLSVersion.SSLv3.value
    assert r.SSL2_0 == 0x0002
    constants = (r.SSL2_0, r.SSL3_0, r.TLS1_0, r.TLS1_1, r.TLS1_2, r.TLS1_3)
    assert [r.version_name(v) for v in constants] == [
        "SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3"]


def test_content_type_names_match_the_event_contract() -> None:
    for member in ContentType:
        assert r.content_type_name(member.value) == member.name


# --- corpus: names other projects' tools printed for real captures ----------------------------


def _zeek_ssl_rows() -> Iterator[dict[str, str]]:
    for log in sorted((CORPUS / "zeek" / "expected").glob("*/ssl.log")):
        fields: list[str] = []
        for line in log.read_text().splitlines():
            if line.startswith("#fields"):
                fields = line.split("\t")[1:]
            elif line and not line.startswith("#") and fields:
                yield dict(zip(fields, line.split("\t"), strict=False))


def test_zeek_names_for_corpus_captures_are_in_our_tables() -> None:
    if not (CORPUS / "zeek" / "expected").is_dir():
        pytest.skip(f"capture corpus not found at {CORPUS}")
    seen = {"cipher": set(), "curve": set(), "last_alert": set()}
    for row in _zeek_ssl_rows():
        for key, values in seen.items():
            if row.get(key, "-") not in ("-", "(empty)"):
                values.add(row[key])
    assert seen["cipher"] and seen["curve"]
    assert seen["cipher"] <= set(r.ALL_CIPHER_SUITES.values())
    assert seen["curve"] <= set(r.GROUPS.values())
    assert seen["last_alert"] <= set(r.ALERT_DESCRIPTIONS.values())


def test_tshark_ciphers_and_alerts_in_corpus_are_known() -> None:
    summaries = sorted(CORPUS.glob("*/tshark/*.tshark.json"))
    if not summaries:
        pytest.skip(f"capture corpus not found at {CORPUS}")
    ciphers: set[int] = set()
    alerts: set[str] = set()
    for path in summaries:
        doc = json.loads(path.read_text())
        for stream in doc.get("streams", []) + doc.get("decrypted_streams", []):
            cipher = stream.get("cipher") or ""
            if cipher.startswith("0x"):  # SSLv2 streams carry "sslv2 specs: n" instead
                ciphers.add(int(cipher, 16))
            for alert in stream.get("alerts", []):
                _side, level, desc = alert.split(":", 2)
                if level != "enc" and desc != "None":
                    alerts.add(desc)
    assert ciphers
    for value in ciphers:
        assert not r.cipher_suite_name(value).startswith("unknown"), hex(value)
    assert alerts <= set(r.ALERT_DESCRIPTIONS.values()), alerts - set(r.ALERT_DESCRIPTIONS.values())


# --- cipher suite facts -----------------------------------------------------------------------


def test_rc4_suite_flags() -> None:
    info = r.cipher_suite_info(0x0005)
    assert info is not None and info.name == "TLS_RSA_WITH_RC4_128_SHA"
    assert info.rc4 and info.weak and not info.cbc and not info.aead and not info.forward_secret
    assert (info.key_exchange, info.authentication, info.cipher, info.mac) == (
        "RSA", "RSA", "RC4_128", "SHA")


def test_export_suite_flags() -> None:
    info = r.cipher_suite_info(0x0014)
    assert info is not None and info.name == "TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA"
    assert info.export and info.des and info.weak and info.cbc and info.key_bits == 40
    assert info.key_exchange == "DHE" and info.forward_secret


def test_null_suite_flags() -> None:
    info = r.cipher_suite_info(0x0002)
    assert info is not None and info.null_cipher and info.weak and info.cipher == "NULL"
    assert not r.cipher_suite_info(0x002F).null_cipher  # type: ignore[union-attr]


def test_anonymous_suite_flags() -> None:
    info = r.cipher_suite_info(0x0034)
    assert info is not None and info.name == "TLS_DH_anon_WITH_AES_128_CBC_SHA"
    assert info.anonymous and info.weak and info.authentication == "anon"


def test_triple_des_suite_flags() -> None:
    info = r.cipher_suite_info(0xC012)
    assert info is not None and info.triple_des and info.weak and info.cbc
    assert not info.des and info.key_exchange == "ECDHE" and info.forward_secret


def test_tls13_aead_suite_flags() -> None:
    info = r.cipher_suite_info(0x1303)
    assert info is not None and info.name == "TLS_CHACHA20_POLY1305_SHA256"
    assert info.tls13 and info.aead and info.forward_secret and not info.weak
    assert (info.key_exchange, info.mac, info.prf_hash) == ("TLS13", "AEAD", "SHA256")


def test_modern_tls12_suite_is_not_weak() -> None:
    info = r.cipher_suite_info(0xC02F)
    assert info is not None
    assert info.aead and info.forward_secret and not info.weak and not info.cbc
    assert (info.key_exchange, info.authentication, info.cipher) == ("ECDHE", "RSA", "AES_128_GCM")


def test_scsvs_have_info_with_scsv_key_exchange() -> None:
    scsvs = ((0x00FF, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"), (0x5600, "TLS_FALLBACK_SCSV"))
    for value, name in scsvs:
        info = r.cipher_suite_info(value)
        assert info is not None and info.name == name and info.key_exchange == "SCSV"


def test_integrity_only_tls13_suite_is_a_null_cipher() -> None:
    info = r.cipher_suite_info(0xC0B4)
    assert info is not None and info.name == "TLS_SHA256_SHA256"
    assert info.tls13 and info.null_cipher and not info.aead and info.weak


def test_cipher_table_is_complete_and_flags_are_consistent() -> None:
    assert len(r.CIPHER_SUITES) >= 340
    assert r.cipher_suite_name(0x001C) == "SSL_FORTEZZA_KEA_WITH_NULL_SHA"
    assert r.cipher_suite_name(0xC100) == "TLS_GOSTR341112_256_WITH_KUZNYECHIK_CTR_OMAC"
    assert r.cipher_suite_name(0x00C6) == "TLS_SM4_GCM_SM3"
    for value in r.ALL_CIPHER_SUITES:
        info = r.cipher_suite_info(value)
        assert info is not None
        assert not (info.aead and info.cbc), info.name
        assert info.weak or not (info.rc4 or info.des or info.triple_des or info.export
                                 or info.null_cipher or info.anonymous), info.name
        assert info.tls13 == (info.key_exchange == "TLS13"), info.name


# --- other tables -----------------------------------------------------------------------------


def test_version_drafts_and_experiments() -> None:
    assert r.version_name(0x7F17) == "TLS 1.3 (draft 23)"
    assert r.version_name(0x7E01) == "TLS 1.3 (experiment 0x7e01)"
    assert r.version_name(0xFB1A) == "TLS 1.3 (Facebook draft 26)"
    assert r.version_name(0xFEFD) == "DTLS 1.2"
    assert r.version_name(0x0A0A) == "GREASE"
    assert r.version_name(0x0305) == "unknown(0x0305)"


def test_hello_retry_and_downgrade_magic_values() -> None:
    assert r.HRR_RANDOM == hashlib.sha256(b"HelloRetryRequest").digest()
    assert r.DOWNGRADE_TLS12 == bytes.fromhex("444f574e47524401")
    assert r.DOWNGRADE_TLS11 == bytes.fromhex("444f574e47524400")


def test_handshake_type_names() -> None:
    expected = {0: "hello_request", 1: "client_hello", 2: "server_hello", 4: "new_session_ticket",
                6: "hello_retry_request", 8: "encrypted_extensions", 11: "certificate",
                13: "certificate_request", 15: "certificate_verify",
                17: "client_certificate_request",
                20: "finished", 24: "key_update", 25: "compressed_certificate", 254: "message_hash"}
    assert {v: r.handshake_type_name(v) for v in expected} == expected


def test_group_names() -> None:
    assert r.group_name(23) == "secp256r1"
    assert r.group_name(29) == "x25519"
    assert r.group_name(256) == "ffdhe2048"
    assert r.group_name(0x11EC) == "X25519MLKEM768"
    assert r.group_name(0x11EB) == "SecP256r1MLKEM768"
    assert r.group_name(0x6399) == "X25519Kyber768Draft00"
    assert r.group_name(0xFF01) == "arbitrary_explicit_prime_curves"
    assert r.is_post_quantum(0x11EC) and not r.is_post_quantum(29)
    assert r.is_ffdhe(257) and not r.is_ffdhe(23)


def test_extension_names() -> None:
    assert r.extension_name(0) == "server_name"
    assert r.extension_name(16) == "application_layer_protocol_negotiation"
    assert r.extension_name(51) == "key_share"
    assert r.extension_name(0xFE0D) == "encrypted_client_hello"
    assert r.extension_name(0xFF01) == "renegotiation_info"
    assert r.extension_name(13172) == "next_protocol_negotiation"
    assert r.extension_name(17613) == "application_settings"
    assert r.extension_name(30032) == "channel_id"


def test_signature_schemes_and_key_types() -> None:
    cases = {
        0x0401: ("rsa_pkcs1_sha256", "RSA"),
        0x0403: ("ecdsa_secp256r1_sha256", "EC"),
        0x0804: ("rsa_pss_rsae_sha256", "RSA"),
        0x0809: ("rsa_pss_pss_sha256", "RSA-PSS"),
        0x0807: ("ed25519", "Ed25519"),
        0x0808: ("ed448", "Ed448"),
        0x0301: ("sha224_rsa", "RSA"),
        0x0101: ("md5_rsa", "RSA"),
        0x0402: ("sha256_dsa", "DSA"),
        0x0904: ("mldsa44", "ML-DSA"),
    }
    for value, (name, key_type) in cases.items():
        assert r.signature_scheme_name(value) == name
        assert r.signature_scheme_key_type(value) == key_type
    assert r.signature_scheme_key_type(0x1A2B) is None


def test_alert_names_and_levels() -> None:
    assert r.alert_description_name(40) == "handshake_failure"
    assert r.alert_description_name(41) == "no_certificate"
    assert r.alert_description_name(116) == "certificate_required"
    assert r.alert_description_name(120) == "no_application_protocol"
    assert r.alert_description_name(121) == "ech_required"
    assert (r.alert_level_name(1), r.alert_level_name(2)) == ("warning", "fatal")


def test_every_alert_has_a_distinct_plain_meaning() -> None:
    meanings = [r.alert_meaning(v) for v in r.ALERT_DESCRIPTIONS]
    assert all(m.strip() and m.endswith(".") and "\n" not in m for m in meanings)
    assert len(set(meanings)) == len(meanings)
    assert r.alert_meaning(250) not in meanings
    assert "CA" in r.alert_meaning(48)


def test_small_tables() -> None:
    assert [r.certificate_type_name(v) for v in (1, 2, 64, 65, 66)] == [
        "rsa_sign", "dss_sign", "ecdsa_sign", "rsa_fixed_ecdh", "ecdsa_fixed_ecdh"]
    assert [r.compression_method_name(v) for v in (0, 1, 64)] == ["null", "DEFLATE", "LZS"]
    assert r.ec_point_format_name(0) == "uncompressed"
    assert [r.certificate_compression_algorithm_name(v) for v in (1, 2, 3)] == [
        "zlib", "brotli", "zstd"]
    assert r.heartbeat_message_type_name(1) == "heartbeat_request"
    assert r.heartbeat_mode_name(2) == "peer_not_allowed_to_send"
    assert r.name_type_name(0) == "host_name"
    assert r.certificate_status_type_name(2) == "ocsp_multi"


def test_describe_labels() -> None:
    assert r.describe(0x1301, r.cipher_suite_name(0x1301)) == "TLS_AES_128_GCM_SHA256(0x1301)"
    assert r.describe(40, r.alert_description_name(40), bits=8) == "handshake_failure(40)"
    assert r.describe(0x0A0A, r.group_name(0x0A0A)) == "GREASE(0x0a0a)"
    assert r.describe(0x1A2B, r.group_name(0x1A2B)) == "unknown(0x1a2b)"
