"""The finding catalog and the generated reference."""

from __future__ import annotations

import re
from pathlib import Path

from tlsproxy.analysis.catalog import CATALOG, TOPICS, make_finding
from tlsproxy.analysis.model import OUTCOMES, Severity
from tools.gen_findings_doc import OUTPUT, render

RULES = Path(__file__).resolve().parents[1] / "tlsproxy" / "analysis"


def test_regenerating_the_reference_gives_the_same_file() -> None:
    assert OUTPUT.read_text(encoding="utf-8") == render(), "run python tools/gen_findings_doc.py"


def test_codes_are_upper_snake_and_documented() -> None:
    text = render()
    for code, entry in CATALOG.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", code)
        assert entry.topic in TOPICS and entry.explanation and entry.title
        assert f"`{code}`" in text
    for outcome in OUTCOMES:
        assert f"`{outcome}`" in text


def test_every_code_used_in_the_rules_is_in_the_catalog() -> None:
    used = set()
    for path in RULES.rglob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r'(?:make_finding|add)\(\s*"([A-Z0-9_]+)"', text))
        if path.name == "certificates.py":  # its map from chain.py's codes to finding codes
            used |= set(re.findall(r'"[a-z_]+": "([A-Z][A-Z0-9_]+)"', text))
    assert used and used <= set(CATALOG)
    unused = set(CATALOG) - used - {"INTERNAL_ERROR"}  # the pipeline builds that one itself
    assert not unused, f"catalog codes no rule emits: {sorted(unused)}"


def test_make_finding_merges_hints() -> None:
    f = make_finding("CLIENT_CERT_EMPTY", "detail", hints=("first",), seq=3, at=1.5)
    assert f.severity is Severity.warning and f.event_seq == 3 and f.hints[0] == "first"
    assert len(f.hints) == len(set(f.hints)) == 1 + len(CATALOG["CLIENT_CERT_EMPTY"].hints)
