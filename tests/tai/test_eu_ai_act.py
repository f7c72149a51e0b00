"""The EU AI Act evidence map (tai.eu_ai_act)."""

from __future__ import annotations

import math

from tai.eu_ai_act import REQUIREMENTS, evidence_table

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
    from flows.lineage import lineage_tags
    from flows.preflight import gate_metric_names
    from infra.datastore.base import DataVersion
    from infra.integrity import MODEL_SHA256_TAG, WEIGHTS_SHA256_TAG
    from tai.policy import parse_policy

    metrics = set(gate_metric_names())
    policy = parse_policy("gates: [{metric: accuracy, min: 0.5}]", metrics)
    tags = {
        *lineage_tags(DataVersion("oxen", "r", "c"), policy),
        WEIGHTS_SHA256_TAG,
        MODEL_SHA256_TAG,
        "tai.approval",
        "tai.gates.passed",
    }
    for req in REQUIREMENTS:
        for entry in req.evidence:
            kind, _, name = entry.partition(":")
            if kind == "metric":
                assert name in metrics, entry
            elif kind == "tag":
                assert name in tags, entry
