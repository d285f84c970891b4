"""tlsproxy.analysis.chain: each check with certificates that fail it and ones that pass, and
verify_chain cross-checked against Python's ssl (OpenSSL) on the same certificates."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.certfactory import Chain, make_ca, make_chain, make_leaf, make_self_signed
from tlsproxy.frontends.trust import load_system_trust
from tlsproxy.analysis.chain import (
    chain_order_problems,
    chains_to_any,
    hostname_matches,
    normalize_dn,
    validity_problems,
    verify_chain,
    weak_key,
    weak_signature,
)
from tlsproxy.wire.certs import CertificateInfo, decode_certificate, decode_distinguished_name

NOW = datetime.now(UTC)


def infos(*issued: object) -> list[CertificateInfo]:
    return [decode_certificate(i.der) for i in issued]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain("www.example.test", sans=["www.example.test", "192.0.2.10"])


# -- validity --------------------------------------------------------------------------------------


def test_valid_certificate_has_no_validity_problems(chain: Chain) -> None:
    assert validity_problems(decode_certificate(chain.leaf.der), NOW) == ()


def test_expired_certificate_says_how_long_ago() -> None:
    leaf = make_leaf(make_ca("V CA"), "old.test", not_before=NOW - timedelta(days=400),
                     not_after=NOW - timedelta(days=3, hours=2))
    (problem,) = validity_problems(decode_certificate(leaf.der), NOW, index=0)
    assert problem.code == "cert_expired" and problem.index == 0
    assert "3 days ago" in problem.message


def test_not_yet_valid_certificate_says_how_far_off() -> None:
    leaf = make_leaf(make_ca("V CA"), "new.test", not_before=NOW + timedelta(hours=5, minutes=1))
    (problem,) = validity_problems(decode_certificate(leaf.der), NOW)
    assert problem.code == "cert_not_yet_valid"
    assert "5 hours" in problem.message


def test_certificate_expiring_within_thirty_days() -> None:
    leaf = make_leaf(make_ca("V CA"), "soon.test", not_after=NOW + timedelta(days=10, minutes=5))
    info = decode_certificate(leaf.der)
    assert [p.code for p in validity_problems(info, NOW)] == ["cert_expiring_soon"]
    assert validity_problems(info, NOW, warn_within=timedelta(days=5)) == ()


def test_naive_now_is_taken_as_utc() -> None:
    leaf = make_leaf(make_ca("V CA"), "old.test", not_after=NOW - timedelta(minutes=10))
    naive = NOW.replace(tzinfo=None)
    assert [p.code for p in validity_problems(decode_certificate(leaf.der), naive)] == ["cert_expired"]


# -- hostnames -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sans", "host", "expected"),
    [
        (["example.test"], "example.test", (True, "san")),
        (["example.test"], "EXAMPLE.Test.", (True, "san")),
        (["example.test"], "www.example.test", (False, None)),
        (["*.example.test"], "a.example.test", (True, "san")),
        (["*.example.test"], "A.EXAMPLE.TEST", (True, "san")),
        (["*.example.test"], "a.b.example.test", (False, None)),
        (["*.example.test"], "example.test", (False, None)),
        (["*.test"], "example.test", (False, None)),
        (["w*.example.test"], "www.example.test", (False, None)),
        (["*w.example.test"], "ww.example.test", (False, None)),
        (["a.*.example.test"], "a.b.example.test", (False, None)),
        (["xn--bcher-kva.example"], "xn--bcher-kva.example", (True, "san")),
        (["xn--bcher-kva.example"], "bücher.example", (False, None)),
        (["127.0.0.1"], "127.0.0.1", (True, "san")),
        (["127.0.0.1"], "127.0.0.2", (False, None)),
        (["::1"], "[::1]", (True, "san")),
        (["::1"], "0:0:0::1", (True, "san")),
        (["localhost"], "127.0.0.1", (False, None)),
        (["*.example.test", "192.0.2.1"], "", (False, None)),
    ],
)
def test_hostname_matching_rules(sans: list[str], host: str, expected: tuple[bool, str | None]) -> None:
    info = decode_certificate(make_leaf(make_ca("Name CA"), "ignored.cn.test", sans=sans).der)
    assert hostname_matches(info, host) == expected


def test_common_name_is_a_fallback_only_without_dns_sans() -> None:
    ca = make_ca("Name CA")
    cn_only = decode_certificate(make_leaf(ca, "legacy.test", sans=()).der)
    assert hostname_matches(cn_only, "legacy.test") == (True, "cn")
    assert hostname_matches(cn_only, "other.test") == (False, None)
    with_san = decode_certificate(make_leaf(ca, "legacy.test", sans=["new.test"]).der)
    assert hostname_matches(with_san, "legacy.test") == (False, None)
    ip_cn = decode_certificate(make_leaf(ca, "127.0.0.1", sans=()).der)
    assert hostname_matches(ip_cn, "127.0.0.1") == (False, None)


# -- chain shape -----------------------------------------------------------------------------------


def codes(problems: tuple) -> list[str]:
    return [p.code for p in problems]


def test_well_ordered_chains_have_no_problems(chain: Chain) -> None:
    assert chain_order_problems(infos(chain.leaf, *chain.intermediates)) == ()
    assert chain_order_problems(infos(*chain.certs)) == ()


def test_reversed_chain_is_misordered(chain: Chain) -> None:
    problems = chain_order_problems(infos(chain.intermediates[0], chain.leaf))
    assert codes(problems) == ["chain_misordered"]


def test_shuffled_long_chain_is_misordered() -> None:
    long_chain = make_chain("deep.test", intermediates=3)
    leaf, i1, i2, i3 = (long_chain.leaf, *long_chain.intermediates)
    assert chain_order_problems(infos(leaf, i1, i2, i3)) == ()
    problems = chain_order_problems(infos(leaf, i2, i1, i3))
    assert "chain_misordered" in codes(problems)
    assert "chain_missing_intermediate" not in codes(problems)


def test_leaf_alone_is_a_likely_missing_intermediate(chain: Chain) -> None:
    problems = chain_order_problems(infos(chain.leaf))
    assert codes(problems) == ["chain_missing_intermediate"]
    assert "tlsproxy Test Intermediate CA 1" in problems[0].message


def test_duplicate_certificate_is_reported_once(chain: Chain) -> None:
    problems = chain_order_problems(infos(chain.leaf, chain.intermediates[0], chain.intermediates[0]))
    assert codes(problems) == ["chain_duplicate"]
    assert problems[0].index == 2


def test_unrelated_certificate_in_chain(chain: Chain) -> None:
    stranger = make_ca("Stranger CA")
    problems = chain_order_problems(infos(chain.leaf, stranger))
    assert codes(problems) == ["chain_unrelated_certificate", "chain_missing_intermediate"]


def test_self_signed_leaf() -> None:
    assert codes(chain_order_problems(infos(make_self_signed("snake.test")))) == ["chain_self_signed"]


def test_empty_and_undecodable_chains(chain: Chain) -> None:
    assert codes(chain_order_problems([])) == ["chain_empty"]
    broken = [decode_certificate(chain.leaf.der), decode_certificate(b"\x30\x03abc")]
    assert "cert_undecodable" in codes(chain_order_problems(broken))


# -- algorithms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "code"),
    [("rsa1024", "weak_rsa_key"), ("p192", "weak_ec_key"), ("dsa2048", "dsa_key"),
     ("rsa2048", None), ("p256", None), ("ed25519", None)],
)
def test_weak_keys(key: str, code: str | None) -> None:
    problem = weak_key(decode_certificate(make_leaf(make_ca("Key CA"), "k.test", key=key).der), index=0)
    assert (problem.code if problem else None) == code


@pytest.mark.parametrize(
    ("ca_key", "hash", "flagged"),
    [("rsa2048", "sha1", True), ("rsa2048", "md5", True), ("p256", "sha1", True),
     ("rsa2048", "sha256", False), ("ed25519", "sha256", False)],
)
def test_weak_signatures(ca_key: str, hash: str, flagged: bool) -> None:
    info = decode_certificate(make_leaf(make_ca("Sig CA", key=ca_key), "s.test", hash=hash).der)
    problem = weak_signature(info)
    assert (problem is not None) == flagged
    if problem:
        assert problem.code == "weak_signature_hash" and hash.upper().replace("SHA", "SHA-") in problem.message


def test_weak_signature_on_a_root_is_ignored_unless_asked() -> None:
    root = decode_certificate(make_ca("Old Root", key="rsa2048", hash="sha1").der)
    assert root.self_signed and root.is_ca
    assert weak_signature(root) is None
    assert weak_signature(root, include_roots=True) is not None


# -- CA names --------------------------------------------------------------------------------------


def test_chains_to_requested_ca_names(chain: Chain) -> None:
    sent = infos(chain.leaf, *chain.intermediates)  # root not sent: reached through an issuer name
    root_dn = decode_distinguished_name(chain.root.cert.subject.public_bytes())
    assert chains_to_any(sent, [root_dn])
    assert chains_to_any(sent, ["cn=TLSPROXY  test root ca,o=Tlsproxy Tests"])
    assert chains_to_any(sent, ["CN=Unrelated", "CN=tlsproxy Test Intermediate CA 1,O=tlsproxy tests"])
    assert not chains_to_any(sent, ["CN=tlsproxy Test Root CA"])  # a different DN, not a prefix match
    assert not chains_to_any(sent, ["CN=Other Root,O=tlsproxy tests"])
    assert not chains_to_any(sent, [])


def test_normalize_dn_ignores_case_spacing_and_rdn_attribute_order() -> None:
    assert normalize_dn("CN=A  B,O=X") == normalize_dn("cn=a b,o=x")
    assert normalize_dn("CN=A+OU=B,O=X") == normalize_dn("OU=b+CN=a,O=x")
    assert normalize_dn("emailAddress=a@b.test,CN=A") == normalize_dn("1.2.840.113549.1.9.1=A@B.test,CN=a")
    assert normalize_dn("CN=A,O=X") != normalize_dn("O=X,CN=A")


# -- verify_chain ----------------------------------------------------------------------------------


def test_verified_chain(chain: Chain) -> None:
    result = verify_chain(chain.ders(), "www.example.test", NOW, chain.root.pem)
    assert result.ok and result.code == "verified"
    assert result.path == tuple(decode_certificate(c.der).sha256 for c in chain.certs)
    assert verify_chain(chain.ders(), "192.0.2.10", NOW, chain.root.pem).ok


@pytest.mark.parametrize(
    ("host", "code"),
    [("other.test", "hostname_mismatch"), ("192.0.2.11", "hostname_mismatch"), ("bad host!", "invalid_hostname")],
)
def test_wrong_host(chain: Chain, host: str, code: str) -> None:
    result = verify_chain(chain.ders(), host, NOW, chain.root.pem)
    assert not result.ok and result.code == code


def test_missing_intermediate_or_unknown_root_is_untrusted(chain: Chain) -> None:
    assert verify_chain(chain.ders()[:1], "www.example.test", NOW, chain.root.pem).code == "untrusted_issuer"
    other_root = make_ca("tlsproxy Test Root CA")  # same name, different key
    assert verify_chain(chain.ders(), "www.example.test", NOW, other_root.pem).code == "untrusted_issuer"


def test_expired_and_not_yet_valid_verification(chain: Chain) -> None:
    later = verify_chain(chain.ders(), "www.example.test", NOW + timedelta(days=200), chain.root.pem)
    assert later.code == "expired" and "certificate 0" in later.reason and "ago" in later.reason
    earlier = verify_chain(chain.ders(), "www.example.test", NOW - timedelta(days=2), chain.root.pem)
    assert earlier.code == "expired" and "not valid for another" in earlier.reason


def test_cn_only_wrong_eku_and_sha1_leaf_fail_verification() -> None:
    root = make_ca("Policy Root")
    cn_only = make_leaf(root, "legacy.test", sans=())
    assert verify_chain([cn_only.der], "legacy.test", NOW, root.pem).code == "no_subject_alt_name"
    client_only = make_leaf(root, "c.test", eku=["clientAuth"])
    assert verify_chain([client_only.der], "c.test", NOW, root.pem).code == "wrong_key_usage"
    assert verify_chain([client_only.der], None, NOW, root.pem, client=True).ok
    sha1 = make_leaf(root, "sha1.test", hash="sha1")
    assert verify_chain([sha1.der], "sha1.test", NOW, root.pem).code == "forbidden_signature_algorithm"


def test_chain_without_hostname_checks_only_the_path(chain: Chain) -> None:
    result = verify_chain(chain.ders(), None, NOW, chain.root.pem)
    assert result.ok and "no hostname" in result.reason
    assert not verify_chain(chain.ders(), None, NOW, make_ca("Else").pem).ok


def test_verify_inputs_that_cannot_be_verified(chain: Chain) -> None:
    assert verify_chain([], "x", NOW, chain.root.pem).code == "no_certificates"
    assert verify_chain(chain.ders(), "www.example.test", NOW, None).code == "no_trust_store"
    assert verify_chain(chain.ders(), "www.example.test", NOW, b"junk").code == "no_trust_anchors"
    assert verify_chain([b"\x30\x03abc"], "x.test", NOW, chain.root.pem).code == "undecodable_certificate"


def test_bundle_with_a_broken_entry_still_verifies(chain: Chain) -> None:
    bundle = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" + make_ca("X").pem + chain.root.pem
    assert verify_chain(chain.ders(), "www.example.test", NOW, bundle).ok


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=3), st.text(max_size=20))
def test_verify_chain_never_raises(ders: list[bytes], host: str) -> None:
    result = verify_chain(ders, host, NOW, b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----")
    assert not result.ok


def test_system_trust_loads_as_pem() -> None:
    bundle = load_system_trust()
    if bundle is None:
        pytest.skip("no system trust store on this machine")
    assert b"-----BEGIN CERTIFICATE-----" in bundle
    assert verify_chain(make_chain("x.test").ders(), "x.test", NOW, bundle).code == "untrusted_issuer"


# -- agreement with OpenSSL (Python's ssl) ---------------------------------------------------------


def _ssl_accepts(chain: Chain, host: str, ca: Path, tmp_path: Path) -> bool:
    files = chain.write_pem(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(ca)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        try:
            client.do_handshake()
            return True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError:
            return False
        s_in.write(c_out.read())
        try:
            server.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        c_in.write(s_out.read())
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize(
    ("host", "trusted"),
    [("www.example.test", True), ("other.test", False), ("192.0.2.10", True)],
)
def test_verify_chain_agrees_with_openssl(chain: Chain, tmp_path: Path, host: str, trusted: bool) -> None:
    ca = chain.root.write_pem(tmp_path / "ca").cert
    assert _ssl_accepts(chain, host, ca, tmp_path) is trusted
    assert verify_chain(chain.ders(), host, NOW, ca.read_bytes()).ok is trusted


def test_untrusted_root_rejected_by_both(chain: Chain, tmp_path: Path) -> None:
    ca = make_ca("Some Other Root").write_pem(tmp_path / "ca").cert
    assert _ssl_accepts(chain, "www.example.test", ca, tmp_path) is False
    assert verify_chain(chain.ders(), "www.example.test", NOW, ca.read_bytes()).code == "untrusted_issuer"



def test_verify_chain_keeps_zero_serial_warnings_off_stderr() -> None:
    """Old certificates with a zero serial trip cryptography's deprecation warning when loaded: a
    fact about the certificate, which must not reach the user's terminal (zeek/missing-intermediate)."""
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zero.example.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    serial_one = b"\xa0\x03\x02\x01\x02\x02\x01\x01"  # version v3, then INTEGER 1 (same length as 0)
    assert der.count(serial_one) == 1
    zero = der.replace(serial_one, serial_one[:-1] + b"\x00")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = verify_chain([zero], "zero.example.test", NOW, cert.public_bytes(serialization.Encoding.PEM))
    assert not result.ok and result.code != "undecodable_certificate"
