"""The console's memos (finding bodies, diagnosis heads) are bounded and give what rendering afresh gives."""

from __future__ import annotations

from tlsproxy.analysis.model import Diagnosis, Finding, Severity
from tlsproxy.sinks import render
from tlsproxy.sinks.render import ConnLabel
from tlsproxy.wire.events import Direction


def _diagnosis(negotiation: dict, cause: str = "c") -> Diagnosis:
    return Diagnosis(outcome="alert", certain=True, gave_up="server", step="after x", cause=cause,
                     checks=("a", "b"), negotiation=negotiation, timings={"connection": 0.0012})


def _fresh(d: Diagnosis) -> list[str]:
    return [f"    {h}{t}" for h, t, _ in render._diagnosis_head_lines(d)]


def test_diagnosis_head_memo_matches_fresh_rendering_and_tells_equal_values_apart() -> None:
    render._DIAGNOSIS_HEADS.clear()
    base = {"versions": {"offered": ["TLS 1.2", "TLS 1.3"], "chosen": "TLS 1.3"},
            "server_name": {"sni": "a", "matches": True, "count": 1}, "resumed": False}
    variants = [base,
                {**base, "server_name": {"sni": "a", "matches": 1, "count": 1}},  # 1 == True, prints otherwise
                {**base, "server_name": {"sni": "a", "matches": True, "count": True}},
                {**base, "resumed": 0},
                {"resumed": False, **{k: v for k, v in base.items() if k != "resumed"}},  # another order
                {**base, "versions": {"chosen": "TLS 1.3", "offered": ["TLS 1.2", "TLS 1.3"]}},
                {**base, "versions": {"offered": ["TLS 1.2"] * 12, "chosen": None}},
                {**base, "versions": {"offered": [1, 2], "chosen": 1.0}}]  # not kept, still right
    for _ in range(2):  # the second round hits the memo
        for neg in variants:
            d = _diagnosis(neg)
            assert list(render._diagnosis_head(d)[1]) == _fresh(d)
            assert [line[:2] for line in render.diagnosis_lines(d)][:len(_fresh(d))] == \
                [(h, t) for h, t, _ in render._diagnosis_head_lines(d)]


def test_diagnosis_head_memo_keeps_a_private_copy_and_is_bounded() -> None:
    render._DIAGNOSIS_HEADS.clear()
    neg = {"alpn": {"offered": ["h2"], "chosen": None}}
    d = _diagnosis(neg)
    before = render._diagnosis_head(d)[1]
    neg["alpn"]["offered"].append("http/1.1")  # the caller's dict changes: no stale hit
    assert list(render._diagnosis_head(d)[1]) == _fresh(d) != list(before)
    for i in range(render._MEMO_LIMIT + 10):
        render._diagnosis_head(_diagnosis(neg, cause=f"cause {i}"))
    assert len(render._DIAGNOSIS_HEADS) <= render._MEMO_LIMIT
    for i in range(render._BUCKET_LIMIT + 5):
        render._diagnosis_head(_diagnosis({"alpn": {"offered": [f"p{i}"], "chosen": None}}))
    assert all(len(bucket) <= render._BUCKET_LIMIT for bucket in render._DIAGNOSIS_HEADS.values())


def test_plain_finding_memo_matches_the_rich_words_and_is_bounded() -> None:
    render._FINDING_BODIES.clear()
    label = ConnLabel(id=1234, started=10.0, wall_start=1_700_000_000.0)
    findings = [Finding(code="X", severity=sev, title="T", detail="D", hints=("h1", "h2"),
                        direction=direction, event_seq=seq, at=at)
                for sev in Severity for direction in (None, Direction.C2S) for seq in (None, 3)
                for at in (None, 10.5)]
    for _ in range(2):
        for f in findings:
            for verbose in (False, True):
                for quiet in (False, True):
                    plain = render.render_finding_plain(label, f, verbose=verbose, quiet=quiet)
                    rich = [t.plain for t in render.render_finding(label, f, verbose=verbose, quiet=quiet)]
                    assert plain == rich
    for i in range(render._MEMO_LIMIT + 10):
        render.render_finding_plain(label, Finding(code=f"C{i}", severity=Severity.error, title="t", detail="d"))
    assert len(render._FINDING_BODIES) <= render._MEMO_LIMIT
