"""The analyzer's caches and fast paths: bounded, and giving the answers the plain computation gives.

A capture repeats the same offers and chains on thousands of connections, so the analyzer caches
work keyed by values (suites, chains, names); these tests pin that the caches stay bounded, that a
cached answer equals a fresh one, and that nothing time-dependent is frozen by a cache.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tests.certfactory import make_ca, make_chain, make_leaf
from tlsproxy.analysis import chain as chainlib
from tlsproxy.analysis import negotiation
from tlsproxy.analysis.catalog import CATALOG, make_finding
from tlsproxy.analysis.rules import alerts, certificates, ciphers
from tlsproxy.analysis.tracker import AnalysisOptions, Tracker
from tlsproxy.wire import events as ev
from tlsproxy.wire.certs import decode_certificate
from tlsproxy.wire.events import Direction
from tlsproxy.wire.registry import (
    cipher_suite_name,
    group_name,
    is_grease,
    signature_scheme_key_type,
    signature_scheme_name,
)

NOW = datetime.now(UTC)


def _bounded(cached: object) -> int:
    maxsize = cached.cache_info().maxsize  # type: ignore[attr-defined]
    assert maxsize is not None and maxsize > 0
    return maxsize


def test_weakness_table_matches_the_suite_facts_for_every_code_point() -> None:
    assert all(ciphers.weakness(v) == ciphers._weakness_of(v) for v in range(0x10000))
    assert ciphers.weakness(0x0005) == "RC4" and ciphers.weakness(0x1301) is None


def test_weak_offer_text_is_cached_bounded_and_lists_the_weak_suites() -> None:
    _bounded(ciphers._weak_offer_text)
    offer = (0x1301, 0x0005, 0x000A, 0x0A0A)
    first = ciphers._weak_offer_text(offer)
    assert first == ciphers._weak_offer_text(tuple(offer)) == (
        "The client offers 2 weak suites (RC4: TLS_RSA_WITH_RC4_128_SHA; 3DES: TLS_RSA_WITH_3DES_EDE_CBC_SHA).")
    assert ciphers._weak_offer_text((0x1301, 0x1302)) is None


def test_negotiation_lists_are_cached_bounded_and_handed_out_fresh() -> None:
    for cached in (negotiation._names_of, negotiation._suites_offered, negotiation._usable_with):
        _bounded(cached)
    suites = (0x2A2A, 0x1301, 0xC02F, 0x00FF)
    names, count = negotiation._suites_offered(suites)
    assert list(names) == [cipher_suite_name(s) for s in suites if not is_grease(s)] and count == 3
    groups = (0x0A0A, 29, 23)
    first = negotiation._names(groups, group_name)
    first.append("changed by a caller")
    assert negotiation._names(groups, group_name) == [group_name(29), group_name(23)]
    sigs = (0x0403, 0x0804, 0x0401)
    assert list(negotiation._usable_with(sigs, "RSA")) == [
        signature_scheme_name(s) for s in sigs if signature_scheme_key_type(s) == "RSA"]


def test_negotiation_names_accept_unhashable_items() -> None:
    assert negotiation._names(([1],), lambda v: "x") == ["x"]


def test_hostname_match_is_cached_by_the_names_it_depends_on() -> None:
    _bounded(chainlib.hostname_matches_names)
    chain = make_chain("www.example.test", sans=["www.example.test", "192.0.2.10"])
    leaf = decode_certificate(chain.leaf.der)
    assert chainlib.hostname_matches(leaf, "www.example.test") == (True, "san")
    assert chainlib.hostname_matches(leaf, "other.example.test") == (False, None)
    assert chainlib.hostname_matches(leaf, "192.0.2.10") == (True, "san")
    cn_only = decode_certificate(make_leaf(make_ca("C CA"), "cn.example.test", sans=[]).der)
    assert chainlib.hostname_matches(cn_only, "cn.example.test") == (True, "cn")


def _check(chain_ders: list[bytes], now: datetime) -> list[tuple[str, str]]:
    t = Tracker(AnalysisOptions(now=now), wall_start=0.0, started=0.0)
    hs = SimpleNamespace(direction=Direction.S2C, at=1.0)
    chain = [decode_certificate(der) for der in chain_ders]
    findings = certificates.check_chain(t, 0, hs, chain, client=False)  # type: ignore[arg-type]
    return [(f.code, f.detail) for f in findings]


def test_chain_facts_are_cached_but_expiry_is_judged_at_each_connections_time() -> None:
    _bounded(certificates._chain_facts)
    ca = make_ca("E CA")
    leaf = make_leaf(ca, "e.test", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=100))
    ders = [leaf.der, ca.der]
    valid = _check(ders, NOW)
    assert "CERT_EXPIRED" not in [code for code, _ in valid]
    expired = _check(ders, NOW + timedelta(days=103))
    assert [code for code, _ in expired if code.startswith("CERT_EXP")] == ["CERT_EXPIRED"]
    assert "3 days ago" in dict(expired)["CERT_EXPIRED"]
    soon = _check(ders, NOW + timedelta(days=90))
    assert "CERT_EXPIRING_SOON" in [code for code, _ in soon]
    assert _check(ders, NOW) == valid  # and back again: nothing time-dependent was cached


def test_chain_facts_equal_the_uncached_checks() -> None:
    weak = make_leaf(make_ca("W CA"), "w.test", key="rsa1024", hash="sha1")
    chain = (decode_certificate(weak.der),)
    facts = certificates._chain_facts(chain)
    assert facts.order == chainlib.chain_order_problems(chain)
    assert [code for code, _, _ in facts.checks[0]] == ["CERT_WEAK_KEY", "CERT_WEAK_SIGNATURE"]
    assert certificates._chain_facts(tuple(chain)) is facts


def test_validity_fast_path_keeps_every_boundary() -> None:
    leaf = decode_certificate(make_leaf(make_ca("B CA"), "b.test", not_before=NOW,
                                        not_after=NOW + timedelta(days=31)).der)
    assert chainlib.validity_problems(leaf, NOW) == ()
    assert [p.code for p in chainlib.validity_problems(leaf, NOW + timedelta(days=2))] == ["cert_expiring_soon"]
    assert [p.code for p in chainlib.validity_problems(leaf, NOW - timedelta(seconds=1))] == ["cert_not_yet_valid"]
    assert [p.code for p in chainlib.validity_problems(leaf, NOW + timedelta(days=32))] == ["cert_expired"]
    assert [p.code for p in chainlib.validity_problems(leaf, NOW + timedelta(days=32),
                                                       warn_within=timedelta(days=-5))] == ["cert_expired"]


def test_tls13_follows_the_version() -> None:
    t = Tracker(AnalysisOptions(), wall_start=0.0, started=0.0)
    assert t.version is None and not t.tls13
    for version, tls13 in ((0x0304, True), (0x7F17, True), (0x0303, False), (0x0002, False), (None, False)):
        t.version = version
        assert t.version == version and t.tls13 is tls13


def test_tls13_alert_size_fast_rejection_agrees_with_the_sizes() -> None:
    t = Tracker(AnalysisOptions(), wall_start=0.0, started=0.0)
    for suite in (None, 0x1301, 0x1305):  # none chosen yet, a 16-byte tag, CCM_8's 8-byte tag
        t.cipher_suite = suite
        assert alerts.tls13_alert_size(t, 19 + 32) or suite == 0x1305
        assert alerts.tls13_alert_size(t, alerts.MAX_TLS13_ALERT + 1) == ""
        assert all(alerts.tls13_alert_size(t, n) == "" for n in range(alerts.MAX_TLS13_ALERT + 1, 400))


def test_event_subclasses_reach_their_base_class_handler() -> None:
    class MyEndOfStream(ev.EndOfStream):
        pass

    t = Tracker(AnalysisOptions(), wall_start=0.0, started=0.0)
    t.on_event(0, MyEndOfStream(direction=Direction.C2S, offset=0, at=2.0))
    assert t.client.eof_at == 2.0 and not t.client.bytes_seen and t.first_eof is Direction.C2S


@pytest.mark.parametrize("hints", [(), ("A specific hint.",), ("A specific hint.", "A specific hint.")])
def test_make_finding_merges_hints_in_order_without_duplicates(hints: tuple[str, ...]) -> None:
    entry = CATALOG["CLIENT_CERT_EMPTY"]
    finding = make_finding("CLIENT_CERT_EMPTY", hints=hints)
    expected: list[str] = []
    for h in (*hints, *entry.hints):
        if h not in expected:
            expected.append(h)
    assert finding.hints == tuple(expected)


def test_alert_size_texts_are_cached_bounded_and_equal_to_fresh_ones() -> None:
    _bounded(alerts._tls13_alert_size)
    _bounded(alerts._tls12_alert_size)
    t = Tracker(AnalysisOptions(), wall_start=0.0, started=0.0)
    for suite in (None, 0x1301, 0x1305, 0xC02F, 0x002F, 0x0005, 0x000A, 0xCCA8, 0xC0A8, 0x9999):
        for version in (None, 0x0300, 0x0301, 0x0303):
            t.cipher_suite, t.version = suite, version
            for length in range(0, 70):
                assert alerts.tls13_alert_size(t, length) == (
                    alerts._tls13_alert_size.__wrapped__(length, suite) if length <= alerts.MAX_TLS13_ALERT else "")
                assert alerts.tls12_alert_size(t, length) == alerts._tls12_alert_size.__wrapped__(length, suite, version)


def test_fast_builders_build_the_same_objects_as_the_constructors() -> None:
    from tlsproxy.analysis.model import (
        ConnectionSummary,
        Diagnosis,
        Finding,
        Severity,
        build_diagnosis,
        build_finding,
        build_summary,
    )
    from tlsproxy.reports import ConnectionEnd, ConnectionInfo, ConnectionReport, build_end, build_report

    finding = Finding(code="X", severity=Severity.warning, title="t", detail="d", hints=("h",),
                      direction=Direction.S2C, event_seq=3, at=1.5)
    built = build_finding("X", Severity.warning, "t", "d", ("h",), Direction.S2C, 3, 1.5)
    diagnosis = Diagnosis(outcome="established", certain=True, gave_up=None, step="complete", cause="c",
                          checks=("a",), negotiation={"resumed": False}, timings={"connection": 0.5})
    summary = ConnectionSummary(sni="a", version="TLS 1.3", cipher_suite="S", alpn="h2", resumed=False,
                                client_certificate="not_requested", outcome="established", diagnosis="c")
    end = ConnectionEnd(how="fin", by="client", at=2.0, reason=None, bytes_c2s=10, bytes_s2c=20)
    report = ConnectionReport(info=ConnectionInfo(id=1), end=end, summary=summary, diagnosis=diagnosis,
                              findings=(finding,))
    pairs = [
        (finding, built),
        (diagnosis, build_diagnosis("established", True, None, "complete", "c", ("a",), {"resumed": False},
                                    {"connection": 0.5})),
        (summary, build_summary("a", "TLS 1.3", "S", "h2", False, "not_requested", "established", "c")),
        (end, build_end("fin", "client", 2.0, None, 10, 20)),
        (report, build_report(ConnectionInfo(id=1), end, summary, diagnosis, (built,))),
    ]
    for plain, fast in pairs:
        assert type(fast) is type(plain) and fast == plain and repr(fast) == repr(plain)
    assert hash(built) == hash(finding)
    with pytest.raises(AttributeError):
        built.code = "Y"  # type: ignore[misc]


def test_tracker_declares_every_attribute_it_sets() -> None:
    t = Tracker(AnalysisOptions(), wall_start=0.0, started=0.0)
    assert not hasattr(t, "__dict__")  # slots: an attribute missing from __slots__ fails loudly here
    with pytest.raises(AttributeError):
        t.not_an_attribute = 1  # type: ignore[attr-defined]
