"""The identity memos in front of the chain caches (``certificates.chain_of`` / ``_facts_of``):
the wire layer hands out one Certificate object per distinct message, so a repeated chain is found
by identity; these tests pin that the memos are bounded and answer exactly what a fresh
computation answers, also for a different message that is equal or an id that is reused."""

from __future__ import annotations

from tests.certfactory import make_ca, make_leaf
from tlsproxy.analysis.rules import certificates
from tlsproxy.wire.certs import decode_certificate
from tlsproxy.wire.messages import Certificate, CertificateEntry


def _message(*ders: bytes) -> Certificate:
    return Certificate(certificate_request_context=None,
                       entries=tuple(CertificateEntry(cert_data=d, info=decode_certificate(d)) for d in ders))


def test_chain_of_returns_the_certificates_and_the_same_tuple_for_the_same_message() -> None:
    ca = make_ca("I CA")
    leaf = make_leaf(ca, "i.test")
    msg = _message(leaf.der, ca.der)
    chain = certificates.chain_of(msg)
    assert chain == tuple(e.info for e in msg.entries)
    assert certificates.chain_of(msg) is chain
    other = _message(leaf.der)  # a different message: its own certificates, never the cached ones
    assert certificates.chain_of(other) == (decode_certificate(leaf.der),)


def test_facts_by_identity_equal_the_value_keyed_facts() -> None:
    ca = make_ca("J CA")
    chain = certificates.chain_of(_message(make_leaf(ca, "j.test", key="rsa1024").der, ca.der))
    facts = certificates._facts_of(chain)
    assert facts == certificates._chain_facts(tuple(list(chain)))
    assert certificates._facts_of(chain) is facts


def test_identity_memos_are_bounded() -> None:
    leaf = make_leaf(make_ca("K CA"), "k.test")
    limit = certificates._IDENTITY_MEMO_ENTRIES
    for _ in range(limit * 2 + 3):
        msg = _message(leaf.der)  # each one dies after the loop turn unless the memo holds it
        chain = certificates.chain_of(msg)
        certificates._facts_of(chain)
        assert len(certificates._CHAIN_BY_MESSAGE) <= limit
        assert len(certificates._FACTS_BY_CHAIN) <= limit
        assert chain == tuple(e.info for e in msg.entries)


# -- replayed server-chain verdicts (certificates._SERVER_VERDICTS) ---------------------------------

from datetime import UTC, datetime, timedelta  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from tlsproxy.analysis.tracker import AnalysisOptions, Tracker  # noqa: E402
from tlsproxy.wire.events import Direction  # noqa: E402

NOW = datetime(2030, 6, 1, 12, 0, 30, tzinfo=UTC)


def _server_chain(msg: Certificate, now: datetime, *, trust: bytes | None = None, host: str | None = "v.test",
                  fresh: bool = False, seq: int = 3, at: float = 1.5) -> tuple[list, Tracker]:
    """The server-chain findings for one connection at ``now``; ``fresh``: with the verdicts cleared."""
    if fresh:
        certificates._SERVER_VERDICTS.clear()
    t = Tracker(AnalysisOptions(now=now, trust_pems=trust, expect_host=host), wall_start=0.0, started=0.0)
    hs = SimpleNamespace(direction=Direction.S2C, at=at)
    return certificates.on_server_chain(t, seq, hs, msg), t  # type: ignore[arg-type]


def _same(a: tuple[list, Tracker], b: tuple[list, Tracker]) -> None:
    assert a[0] == b[0]
    assert a[1].server_chain_problems == b[1].server_chain_problems
    assert a[1].server_chain_verified == b[1].server_chain_verified


def test_replayed_server_verdicts_equal_fresh_ones_at_every_time_and_host() -> None:
    ca = make_ca("V CA")
    leaf = make_leaf(ca, "v.test", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=100))
    msg = _message(leaf.der, ca.der)
    other_root = make_ca("Other Root").pem
    times = [NOW, NOW + timedelta(seconds=10), NOW + timedelta(minutes=5), NOW + timedelta(days=69, hours=23),
             NOW + timedelta(days=70, seconds=1), NOW + timedelta(days=90), NOW + timedelta(days=101),
             NOW - timedelta(days=11), NOW]
    for trust in (None, ca.pem, other_root):
        for host in ("v.test", "w.test", None):
            for now in times:
                fresh = _server_chain(msg, now, trust=trust, host=host, fresh=True)
                replayed = _server_chain(msg, now, trust=trust, host=host, seq=9, at=7.0)
                if now == NOW:  # a quiet time: the second connection was served from the verdicts
                    assert len(certificates._SERVER_VERDICTS) == 1
                _same(fresh, _server_chain(msg, now, trust=trust, host=host, fresh=True))
                assert [(f.code, f.detail, f.hints) for f in replayed[0]] == [
                    (f.code, f.detail, f.hints) for f in fresh[0]]
                assert all(f.event_seq == 9 and f.at == 7.0 for f in replayed[0])
                assert replayed[1].server_chain_problems == fresh[1].server_chain_problems
                assert replayed[1].server_chain_verified == fresh[1].server_chain_verified
    assert len(certificates._SERVER_VERDICTS) <= certificates._SERVER_VERDICTS_ENTRIES


def test_quiet_window_matches_the_validity_checks() -> None:
    from tlsproxy.analysis import chain as chainlib

    ca = make_ca("Q CA")
    leaf = make_leaf(ca, "q.test", not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=40))
    chain = certificates.chain_of(_message(leaf.der, ca.der))
    since, until = certificates._facts_of(chain).quiet  # type: ignore[misc]
    for now in (since - timedelta(microseconds=1), since, until - timedelta(microseconds=1), until):
        quiet = not any(chainlib.validity_problems(c, now) for c in chain)
        assert quiet == (since <= now < until)


def test_client_offer_notes_are_cached_bounded_and_equal_to_fresh_ones() -> None:
    from tlsproxy.analysis.rules import versions

    assert versions._client_offer_notes.cache_info().maxsize == 256
    offers = [((0x0304, 0x0303), True), ((0x0303, 0x0302, 0x0301, 0x0300), True), ((0x0301,), False),
              ((0x7F17, 0x0303), True), ((), False), ((0x0002,), False)]
    for offer in offers:
        assert versions._client_offer_notes(*offer) == versions._client_offer_notes.__wrapped__(*offer)
    codes = [code for code, _ in versions._client_offer_notes((0x0303, 0x0302, 0x0301, 0x0300), True)]
    assert codes == ["VERSION_SSL3_OFFERED", "VERSION_DEPRECATED_OFFERED"]
