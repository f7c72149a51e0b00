"""The EU AI Act evidence map (tai.gates.eu_ai_act)."""

from __future__ import annotations

import math

from tai.gates.eu_ai_act import REQUIREMENTS, evidence_table

PRINCIPLES = {
    "reliability",
    "transparency",
    "fairness",
    "privacy",
    "security",
    "autonomy & control",
}


def test_every_row_is_well_formed():
    for req in REQUIREMENTS:
        assert req.reference and req.requirement and req.evidence
        assert req.principle in PRINCIPLES
        for entry in req.evidence:
            assert entry.split(":", 1)[0] in {"metric", "tag", "artifact"}, entry


def test_the_map_covers_the_articles_and_every_principle():
    references = " ".join(r.reference for r in REQUIREMENTS)
    for article in ("Art. 10", "Art. 13", "Art. 14", "Art. 15", "Annex IV"):
        assert article in references
    assert {r.principle for r in REQUIREMENTS} == PRINCIPLES


def test_evidence_is_resolved_against_a_report():
    metrics = {"accuracy": 0.98, "ece": 0.01, "ece_upper": math.nan}
    tags = {"tai.data.commit": "abcdef0123456789abcdef"}
    rows = {
        r.requirement.requirement: r for r in evidence_table(metrics, tags, {"tai/tai_report.json"})
    }
    accuracy = rows["declared levels of accuracy and the metrics used"]
    assert accuracy.found == {
        "metric:accuracy": "0.98",
        "metric:ece": "0.01",
        "metric:ece_upper": "n/a",
        "artifact:tai/tai_report.json": "present",
    }
    assert accuracy.supported
    provenance = rows["data provenance and preparation (datasheet)"]
    assert provenance.found["tag:tai.data.commit"] == "abcdef0123456789"
    assert provenance.found["tag:tai.data.repository"] == "missing"
    poisoning = rows["resilient to model poisoning (tampered weights)"]
    assert not poisoning.supported


def test_every_metric_and_tag_of_the_map_exists():
    from tai import tags
    from tai.evaluation.registry import metric_specs

    metrics = metric_specs()
    keys = {v for k, v in vars(tags).items() if k.isupper()}
    for req in REQUIREMENTS:
        for entry in req.evidence:
            kind, _, name = entry.partition(":")
            if kind == "metric":
                assert name in metrics, entry
            elif kind == "tag":
                assert name in keys, entry
