"""tlsproxy.wire.certs: certificate and DN decoding, checked against cryptography's own view,
Python's ssl (OpenSSL), the openssl CLI and Zeek's x509.log for real captured certificates."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.certfactory import make_ca, make_chain, make_leaf, make_self_signed
from tlsproxy.wire.certs import (
    CertificateInfo,
    certificate_to_dict,
    decode_certificate,
    decode_distinguished_name,
)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


# -- facts from factory certificates ---------------------------------------------------------------


def test_leaf_identity_fields_match_the_certificate() -> None:
    chain = make_chain("www.example.test", sans=["www.example.test", "example.test", "192.0.2.7", "2001:db8::1"])
    info = decode_certificate(chain.leaf.der)
    cert = chain.leaf.cert
    assert info.parse_error is None and info.errors == ()
    assert info.sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert info.subject == "CN=www.example.test"
    assert info.issuer == "CN=tlsproxy Test Intermediate CA 1,O=tlsproxy tests"
    assert info.subject_cn == "www.example.test"
    assert info.serial == format(cert.serial_number, "x")
    assert info.not_before == cert.not_valid_before_utc and info.not_before.tzinfo is not None
    assert info.not_after == cert.not_valid_after_utc
    assert info.sans_dns == ("www.example.test", "example.test")
    assert info.sans_ip == ("192.0.2.7", "2001:db8::1")
    assert info.version == 3
    assert info.is_ca is False and info.self_signed is False


@pytest.mark.parametrize(
    ("kind", "key_type", "bits", "curve"),
    [
        ("rsa1024", "RSA", 1024, None),
        ("rsa2048", "RSA", 2048, None),
        ("p256", "EC", 256, "secp256r1"),
        ("p384", "EC", 384, "secp384r1"),
        ("ed25519", "Ed25519", 256, None),
        ("ed448", "Ed448", 456, None),
        ("dsa2048", "DSA", 2048, None),
    ],
)
def test_key_type_size_and_curve(kind: str, key_type: str, bits: int, curve: str | None) -> None:
    info = decode_certificate(make_leaf(make_ca("Keys CA"), "k.test", key=kind).der)
    assert (info.key_type, info.key_bits, info.curve) == (key_type, bits, curve)


@pytest.mark.parametrize(
    ("ca_key", "hash", "expected_hash", "algorithm"),
    [
        ("p256", "sha256", "sha256", "ecdsa-with-SHA256"),
        ("p384", "sha384", "sha384", "ecdsa-with-SHA384"),
        ("rsa2048", "sha256", "sha256", "sha256WithRSAEncryption"),
        ("rsa2048", "sha1", "sha1", "sha1WithRSAEncryption"),
        ("rsa2048", "md5", "md5", "md5WithRSAEncryption"),
        ("p256", "sha1", "sha1", "ecdsa-with-SHA1"),
        ("ed25519", "sha256", None, "ed25519"),
    ],
)
def test_signature_hash_and_algorithm(ca_key: str, hash: str, expected_hash: str | None, algorithm: str) -> None:
    info = decode_certificate(make_leaf(make_ca("Sig CA", key=ca_key), "s.test", hash=hash).der)
    assert info.signature_hash == expected_hash
    assert info.signature_algorithm == algorithm
    assert info.errors == ()


def test_extended_key_usage_short_names_and_unknown_oids() -> None:
    ca = make_ca("EKU CA")
    assert decode_certificate(make_leaf(ca, "a", eku=["serverAuth", "clientAuth"]).der).extended_key_usage == (
        "serverAuth", "clientAuth")
    assert decode_certificate(make_leaf(ca, "a", eku=["1.3.6.1.4.1.99999.1"]).der).extended_key_usage == (
        "1.3.6.1.4.1.99999.1",)
    assert decode_certificate(make_leaf(ca, "a", eku=None).der).extended_key_usage == ()


def test_key_usage_names() -> None:
    ca = make_ca("KU CA")
    rsa_leaf = decode_certificate(make_leaf(ca, "a", key="rsa2048").der)
    assert rsa_leaf.key_usage == ("digital_signature", "key_encipherment")
    agreement = decode_certificate(make_leaf(ca, "a", key_usage=["key_agreement", "encipher_only"]).der)
    assert agreement.key_usage == ("key_agreement", "encipher_only")
    assert decode_certificate(make_leaf(ca, "a", key_usage=None).der).key_usage == ()


def test_basic_constraints_ca_and_path_length() -> None:
    root = make_ca("BC Root", path_length=1)
    info = decode_certificate(root.der)
    assert (info.is_ca, info.path_length) == (True, 1)
    assert decode_certificate(make_leaf(root, "x", is_ca=None).der).is_ca is None


def test_root_is_self_signed_but_intermediate_is_not() -> None:
    chain = make_chain("x.test")
    assert decode_certificate(chain.root.der).self_signed is True
    assert decode_certificate(chain.intermediates[0].der).self_signed is False
    assert decode_certificate(make_self_signed("snake.test", key="rsa2048", hash="sha1").der).self_signed is True


def test_same_subject_and_issuer_signed_by_another_key_is_not_self_signed() -> None:
    ca = make_ca("Twin")
    twin = make_leaf(ca, "Twin", org="tlsproxy tests", sans=["twin.test"])
    info = decode_certificate(twin.der)
    assert info.subject == info.issuer
    assert info.self_signed is False


def test_cn_only_and_no_cn() -> None:
    ca = make_ca("CN CA")
    cn_only = decode_certificate(make_leaf(ca, "legacy.test", sans=()).der)
    assert cn_only.subject_cn == "legacy.test" and cn_only.sans_dns == ()
    no_cn = decode_certificate(make_leaf(ca, None, sans=["nocn.test"]).der)
    assert no_cn.subject_cn is None and no_cn.subject == "" and no_cn.sans_dns == ("nocn.test",)


def test_other_san_types_are_kept_as_text() -> None:
    sans = x509.SubjectAlternativeName([
        x509.DNSName("a.test"),
        x509.RFC822Name("ops@a.test"),
        x509.UniformResourceIdentifier("https://a.test/"),
    ])
    leaf = make_leaf(make_ca("SAN CA"), "a.test", sans=(), extra_extensions=[(sans, False)])
    info = decode_certificate(leaf.der)
    assert info.sans_dns == ("a.test",)
    assert info.sans_other == ("email:ops@a.test", "uri:https://a.test/")


def test_malformed_extension_is_reported_and_other_fields_survive() -> None:
    bad_san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x82\x09abc")
    leaf = make_leaf(make_ca("Bad CA"), "bad.test", sans=(), extra_extensions=[(bad_san, False)])
    info = decode_certificate(leaf.der)
    assert info.parse_error is None
    assert any(e.startswith("extensions:") for e in info.errors)
    assert any(e.startswith("subject_alt_name:") for e in info.errors)
    assert info.subject_cn == "bad.test" and info.key_type == "EC"
    assert info.is_ca is False  # read leniently from the raw extension list


@pytest.mark.parametrize("der", [b"", b"\x30\x00", b"\x30\x82\xff\xff", b"not a certificate", bytes(300)])
def test_undecodable_der_sets_parse_error(der: bytes) -> None:
    info = decode_certificate(der)
    assert info.parse_error
    assert info.subject is None and info.sans_dns == ()
    assert len(info.sha256) == 64


def test_repeated_der_is_served_from_the_cache() -> None:
    der = make_chain("cache.test").leaf.der
    first = decode_certificate(der)
    assert decode_certificate(bytearray(der)) is first
    assert decode_certificate(memoryview(der)) is first


def test_decoding_is_fast_enough_for_thousands_of_handshakes_per_second() -> None:
    ders = make_chain("speed.test").ders(include_root=True)
    for der in ders:  # first sight: uncached
        decode_certificate(der)
    start = datetime.now()
    for _ in range(2000):
        for der in ders:
            decode_certificate(bytes(der))
    assert datetime.now() - start < timedelta(seconds=1)


def test_certificate_to_dict_is_json_ready() -> None:
    info = decode_certificate(make_chain("json.test", sans=["json.test", "10.0.0.1"]).leaf.der)
    as_dict = certificate_to_dict(info)
    assert "der" not in as_dict
    assert as_dict["not_after"].endswith("Z")
    assert datetime.fromisoformat(as_dict["not_after"].replace("Z", "+00:00")) == info.not_after
    assert as_dict["sans_ip"] == ["10.0.0.1"]
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_der_is_left_out_of_repr() -> None:
    info = decode_certificate(make_chain("repr.test").leaf.der)
    assert "der=" not in repr(info) and info.der


# -- distinguished names ---------------------------------------------------------------------------


def test_distinguished_name_matches_certificate_subject_formatting() -> None:
    ca = make_ca('Röot, "Special" CA', org="Ex+ample")
    name_der = ca.cert.subject.public_bytes()
    decoded = decode_distinguished_name(name_der)
    assert decoded == ca.cert.subject.rfc4514_string() == decode_certificate(ca.der).subject
    assert decode_distinguished_name(bytearray(name_der)) == decoded


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x31\x00", b"\x30\x03abc", b"\x30\x00\x00", b"\x30\x80\x00\x00"])
def test_undecodable_distinguished_name(der: bytes) -> None:
    assert decode_distinguished_name(der) == f"<undecodable DN: {len(der)} bytes>"


def test_empty_distinguished_name() -> None:
    assert decode_distinguished_name(b"\x30\x00") == ""


# -- robustness ------------------------------------------------------------------------------------

_SAMPLES = [
    make_chain("fuzz.test", sans=["fuzz.test", "127.0.0.1"], key="rsa1024").leaf.der,
    make_self_signed("fuzz-root.test", key="ed25519").der,
    make_leaf(make_ca("Fuzz SHA1", key="rsa1024"), "old.test", hash="sha1", key="dsa1024").der,
]
_NAME_SAMPLES = [x509.load_der_x509_certificate(d).issuer.public_bytes() for d in _SAMPLES]


def _mutations(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(samples)))
        for _ in range(draw(st.integers(1, 4))):
            action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
            pos = draw(st.integers(0, max(len(data) - 1, 0)))
            if action == "flip" and data:
                data[pos] ^= draw(st.integers(1, 255))
            elif action == "truncate":
                del data[pos:]
            elif action == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
            elif data:
                del data[pos : pos + draw(st.integers(1, 8))]
        return bytes(data)

    return mutate()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(_SAMPLES))
def test_mutated_certificates_never_raise(der: bytes) -> None:
    info = decode_certificate(der)
    assert isinstance(info, CertificateInfo)
    assert (info.parse_error is None) or (info.subject is None)
    json.dumps(certificate_to_dict(info))


@settings(max_examples=300, deadline=None)
@given(st.one_of(_mutations(_NAME_SAMPLES), st.binary(max_size=64)))
def test_mutated_names_never_raise(der: bytes) -> None:
    assert isinstance(decode_distinguished_name(der), str)


# -- Python's ssl (OpenSSL) sees the same certificate ----------------------------------------------


def _handshake(client: ssl.SSLObject, server: ssl.SSLObject, bios: tuple[ssl.MemoryBIO, ...]) -> None:
    c_in, c_out, s_in, s_out = bios
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_certificates_from_a_real_ssl_handshake(tmp_path: Path) -> None:
    server_chain = make_chain("localhost", sans=["localhost", "127.0.0.1"], key="rsa2048")
    client_chain = make_chain("client.test", sans=["client.test"], eku=["clientAuth"], root_name="Client Root")
    server_files = server_chain.write_pem(tmp_path / "server")
    client_files = client_chain.write_pem(tmp_path / "client", stem="client")

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_files.cert, server_files.key)
    server_ctx.load_verify_locations(client_files.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(server_files.ca)
    client_ctx.load_cert_chain(client_files.cert, client_files.key)

    bios = tuple(ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="localhost")
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    _handshake(client, server, bios)

    seen_by_client = client.getpeercert(binary_form=True)
    assert seen_by_client == server_chain.leaf.der
    info = decode_certificate(seen_by_client)
    parsed = client.getpeercert()  # OpenSSL's own decoding of the same certificate
    assert info.serial == parsed["serialNumber"].lower().lstrip("0")
    assert info.subject_cn == dict(x[0] for x in parsed["subject"])["commonName"]
    assert [("DNS", n) for n in info.sans_dns] + [("IP Address", a) for a in info.sans_ip] == list(
        parsed["subjectAltName"])
    assert info.not_after == datetime.fromtimestamp(ssl.cert_time_to_seconds(parsed["notAfter"]), UTC)
    assert (info.key_type, info.key_bits) == ("RSA", 2048)

    client_info = decode_certificate(server.getpeercert(binary_form=True))
    assert client_info.subject_cn == "client.test"
    assert client_info.extended_key_usage == ("clientAuth",)


# -- the openssl CLI agrees ------------------------------------------------------------------------


def _openssl_facts(der: bytes) -> dict[str, str]:
    out = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-serial", "-fingerprint", "-sha256", "-enddate", "-text"],
        input=der, capture_output=True, check=True, timeout=20,
    ).stdout.decode()
    return {
        "serial": re.search(r"^serial=(\w+)", out, re.M).group(1),  # type: ignore[union-attr]
        "fingerprint": re.search(r"Fingerprint=([0-9A-F:]+)", out).group(1),  # type: ignore[union-attr]
        "not_after": re.search(r"^notAfter=(.+)$", out, re.M).group(1),  # type: ignore[union-attr]
        "signature": re.search(r"Signature Algorithm: (\S+)", out).group(1),  # type: ignore[union-attr]
    }


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_facts_agree_with_openssl_cli() -> None:
    certs = [
        make_chain("cli.test", key="rsa2048").leaf,
        make_leaf(make_ca("CLI SHA1", key="rsa2048"), "sha1.test", hash="sha1"),
        make_self_signed("ed.test", key="ed25519"),
    ]
    for issued in certs:
        info = decode_certificate(issued.der)
        facts = _openssl_facts(issued.der)
        assert int(facts["serial"], 16) == int(info.serial, 16)
        assert facts["fingerprint"].replace(":", "").lower() == info.sha256
        assert datetime.fromtimestamp(ssl.cert_time_to_seconds(facts["not_after"]), UTC) == info.not_after
        assert facts["signature"] == info.signature_algorithm or facts["signature"] == "ED25519"


# -- real certificates from the capture corpus -----------------------------------------------------


def _carve_certificates(data: bytes) -> set[bytes]:
    """DER certificates lying whole inside a capture file (those not split across packets).

    A heuristic for tests only: a SEQUENCE with a two-byte length whose first element is another
    long SEQUENCE, kept when cryptography loads it.
    """
    found = set()
    for match in re.finditer(rb"\x30\x82(..)\x30\x82", data, re.DOTALL):
        der = data[match.start() : match.start() + 4 + int.from_bytes(match.group(1), "big")]
        try:
            with warnings.catch_warnings():  # a zero serial in one corpus root
                warnings.simplefilter("ignore")
                x509.load_der_x509_certificate(der)
        except Exception:
            continue
        found.add(der)
    return found


def _corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"capture corpus not found at {CORPUS}")
    return CORPUS


def test_corpus_certificates_match_zeek_x509_log() -> None:
    corpus = _corpus()
    zeek: dict[str, list[str]] = {}
    for log in corpus.glob("zeek/expected/*/x509.log"):
        for line in log.read_text().splitlines():
            if not line.startswith("#"):
                fields = line.split("\t")
                zeek[fields[1]] = fields
    compared = 0
    for capture in sorted(corpus.glob("zeek/*.pcap")):
        for der in _carve_certificates(capture.read_bytes()):
            info = decode_certificate(der)
            row = zeek.get(info.sha256)
            if row is None:
                continue
            compared += 1
            (_, _, version, serial, subject, issuer, not_before, not_after, _, sig_alg, key_type, key_length,
             _, _, san_dns, _, _, _, ca, *_rest) = row
            assert info.version == int(version)
            assert int(info.serial, 16) == int(serial, 16)
            assert info.subject == subject and info.issuer == issuer
            assert info.not_before.timestamp() == float(not_before)
            assert info.not_after.timestamp() == float(not_after)
            assert info.signature_algorithm == sig_alg
            assert info.key_type.lower() == {"ecdsa": "ec"}.get(key_type, key_type)
            assert info.key_bits == int(key_length)
            assert list(info.sans_dns) == ([] if san_dns == "-" else san_dns.split(","))
            assert info.is_ca == {"T": True, "F": False, "-": None}[ca]
    assert compared >= 5, f"only {compared} corpus certificates could be compared with Zeek's x509.log"


def test_corpus_certificates_all_decode() -> None:
    corpus = _corpus()
    ders = set()
    for capture in corpus.rglob("*.pcap*"):
        if capture.suffix in (".pcap", ".pcapng"):
            ders |= _carve_certificates(capture.read_bytes())
    assert len(ders) >= 30
    infos = [decode_certificate(der) for der in ders]
    assert all(i.parse_error is None and i.subject is not None and i.key_type for i in infos)
    assert {i.signature_hash for i in infos} >= {"sha1", "sha256", "md5"}
    # Real CAs once encoded BasicConstraints cA=FALSE explicitly: cryptography rejects the
    # extension list, and the SANs must still come through.
    lenient = [i for i in infos if any(e.startswith("extensions:") for e in i.errors)]
    assert lenient, "expected the corpus's GoDaddy/Starfield certificates with encoded defaults"
    for info in lenient:
        assert info.subject_cn in info.sans_dns
        assert info.extended_key_usage and info.key_usage
