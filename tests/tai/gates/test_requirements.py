"""The requirements file (tai.gates.requirements): schema, contradictions, data checks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import jsonschema
import pytest
import yaml

from tai.check import Principle
from tai.gates.requirements import (
    LEVELS,
    PRINCIPLES,
    RequirementsError,
    check_corruption_list,
    check_group_column,
    load_requirements,
    parse_requirements,
    quote,
    requirements_schema,
)
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "tai-requirements.yaml"
CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast", "jpeg_compression", "fog")


def document(**changes: object) -> dict:
    """A consistent requirements document (all needs medium), with ``changes`` applied:
    ``levels={"privacy": "high"}`` sets need levels, any other key replaces a top-level
    field."""
    doc: dict = {
        "version": 1,
        "system": "digit reader",
        "intended_purpose": "read digits of order forms",
        "context_of_use": "scanned forms",
        "users": ["clerks"],
        "affected_persons": ["customers"],
        "risk": {"class": "minimal", "reason": "no Annex III use"},
        "needs": {p: {"level": "medium", "reason": f"{p} matters"} for p in PRINCIPLES},
        "protected_groups": {"column": None, "reason": "no writer attributes"},
        "personal_data": {"involved": False, "reason": "single digits"},
        "oversight": {"mode": "human-on-the-loop", "reason": "clerks watch the alarms"},
        "perturbations": ["gaussian_noise", "contrast"],
    }
    for key, value in changes.items():
        if key == "levels":
            for principle, level in value.items():
                doc["needs"][principle]["level"] = level
        else:
            doc[key] = value
    return doc


def parse(doc: object):
    return parse_requirements(yaml.safe_dump(doc), source="req.yaml", corruptions=CORRUPTIONS)


# --------------------------------------------------------------------------- parsing


def test_the_example_file_is_consistent_and_hashed_by_its_bytes():
    r = load_requirements(EXAMPLE)
    assert r.sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert r.source == str(EXAMPLE)
    assert r.risk_class == "minimal"
    assert r.oversight == "human-on-the-loop"
    assert r.group_column is None and r.personal_data is False
    assert r.corruptions == ("gaussian_noise", "gaussian_blur", "contrast", "jpeg_compression")
    levels = {p.value: n.level for p, n in r.needs.items()}
    assert levels == {
        "reliability": "medium",
        "transparency": "medium",
        "fairness": "medium",
        "privacy": "low",
        "security": "medium",
        "autonomy": "medium",
    }
    assert all(n.reason for _, n in r.needs.items())


def test_a_document_is_read_into_a_frozen_dataclass():
    r = parse(document(levels={"privacy": "high"}))
    assert r.needs[Principle.PRIVACY].level == "high"
    assert r.needs["privacy"].rank == LEVELS.index("high")
    assert r.users == ("clerks",)
    assert r.perturbations == ("gaussian_noise", "contrast")
    with pytest.raises(AttributeError):
        r.risk_class = "high"  # type: ignore[misc]
    assert parse_requirements(yaml.safe_dump(document()), corruptions=CORRUPTIONS).sha256 == (
        hashlib.sha256(yaml.safe_dump(document()).encode()).hexdigest()
    )


@pytest.mark.parametrize("column", [None, "none", "None"])
def test_no_group_column_is_written_none_or_null(column):
    doc = document(protected_groups={"column": column, "reason": "no attributes"})
    assert parse(doc).group_column is None


def test_the_summary_is_json_ready_and_names_the_obligations():
    r = parse(document(risk={"class": "high", "reason": "Annex III 5(a)"}))
    summary = json.loads(json.dumps(r.summary()))
    assert summary["risk"]["class"] == "high"
    assert "Art. 14: human oversight" in summary["risk"]["obligations"]
    assert summary["needs"]["autonomy"]["title"] == "autonomy & control"
    assert summary["sha256"] == r.sha256


def test_the_schema_is_a_valid_json_schema_that_accepts_the_example():
    schema = requirements_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), schema)
    assert schema["properties"]["needs"]["required"] == list(PRINCIPLES)


def test_a_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(RequirementsError, match=r"nope.yaml does not exist; write one"):
        load_requirements(tmp_path / "nope.yaml")


def test_quote_cuts_a_long_reason_on_a_word():
    assert quote("short") == "'short'"
    assert quote("alpha beta gamma delta epsilon", width=20) == "'alpha beta gamma...'"
    assert quote("one\n  two") == "'one two'"


# ---------------------------------------------------------------------- bad input


def _needs(**override: object) -> dict:
    needs = document()["needs"]
    needs.update(override)
    return needs


BAD = [
    (
        document(risk={"class": "severe", "reason": "x"}),
        "req.yaml: risk.class: 'severe' is not accepted; use one of: minimal, limited, high, "
        "unacceptable (EU AI Act: unacceptable = prohibited practice, Art. 5; high = Art. 6 "
        "with Annex I or III; limited = transparency obligations of Art. 50; minimal = any "
        "other)",
    ),
    (
        document(levels={"fairness": "very high"}),
        "req.yaml: needs.fairness.level: 'very high' is not accepted; use one of: low, "
        "medium, high",
    ),
    (
        document(needs=_needs(safety={"level": "high", "reason": "x"})),
        "req.yaml: needs: unknown principle 'safety'; the principles are: reliability, "
        "transparency, fairness, privacy, security, autonomy",
    ),
    (
        document(needs=_needs(fairness={"level": "high"})),
        "req.yaml: needs.fairness: a need without a reason; add `reason:` (who is harmed, "
        "and how, if fairness fails)",
    ),
    (
        document(needs=_needs(fairness={"level": "high", "reason": "  "})),
        "req.yaml: needs.fairness.reason: empty; say who is harmed, and how, if fairness fails",
    ),
    (
        document(needs=_needs(fairness="high")),
        "req.yaml: needs.fairness: 'high' must be a mapping `{level: low|medium|high, "
        "reason: ...}`",
    ),
    (
        document(needs={p: {"level": "low", "reason": "x"} for p in PRINCIPLES[:5]}),
        "req.yaml: needs: no need stated for autonomy; give every principle (reliability, "
        "transparency, fairness, privacy, security, autonomy) a level (low, medium or high) "
        "and a reason",
    ),
    (
        document(oversight={"mode": "human-over-the-loop", "reason": "x"}),
        "req.yaml: oversight.mode: 'human-over-the-loop' is not accepted; use one of: "
        "human-in-the-loop, human-on-the-loop, human-out-of-the-loop",
    ),
    (
        document(oversight={"mode": "human-on-the-loop"}),
        "req.yaml: oversight: missing `reason`; write `oversight: {mode: human-on-the-loop, "
        "reason: ...}`",
    ),
    (
        document(personal_data={"involved": "maybe", "reason": "x"}),
        "req.yaml: personal_data.involved: 'maybe' must be true or false",
    ),
    (
        document(protected_groups={"column": "", "reason": "x"}),
        "req.yaml: protected_groups.column: empty; name a metadata.csv column, or write `none`",
    ),
    (
        document(protected_groups={"column": 3, "reason": "x"}),
        "req.yaml: protected_groups.column: 3 must be a metadata.csv column name or none",
    ),
    (
        document(perturbations=["contrast", "contrast"]),
        "req.yaml: perturbations: 'contrast' listed twice; name each once",
    ),
    (
        document(perturbations="contrast"),
        "req.yaml: perturbations: 'contrast' must be a list of corruption names, e.g. "
        "`[gaussian_noise, contrast]`",
    ),
    (document(users=[]), "req.yaml: users: empty; write a non-empty list of texts"),
    (document(system=""), "req.yaml: system: empty; write a sentence"),
    (document(version=2), "req.yaml: version: requirements version 2 is not supported; use 1"),
    (
        {**document(), "owner": "me"},
        "req.yaml: unexpected top-level keys ['owner']; allowed: version, system, "
        "intended_purpose, context_of_use, users, affected_persons, risk, needs, "
        "protected_groups, personal_data, oversight, perturbations",
    ),
    (
        {k: v for k, v in document().items() if k != "risk"},
        "req.yaml: missing `risk`; a requirements file states: version, system, ",
    ),
    (
        document(risk={"class": "high", "reason": "x", "annex": "III"}),
        "req.yaml: risk: unexpected keys ['annex']; allowed: class, reason",
    ),
    (["a list"], "req.yaml: ['a list'] is not a mapping; a requirements file is a mapping of"),
    # contradictions
    (
        document(risk={"class": "unacceptable", "reason": "social scoring"}),
        "req.yaml: risk.class: 'unacceptable' is refused: an AI practice prohibited by EU AI "
        "Act Art. 5 may not be placed on the market, put into service or used, and no gate "
        "can change that; change the intended purpose, or use minimal, limited or high",
    ),
    (
        document(
            risk={"class": "high", "reason": "Annex III"},
            oversight={"mode": "human-out-of-the-loop", "reason": "x"},
        ),
        "req.yaml: oversight.mode: 'human-out-of-the-loop' contradicts risk.class: 'high': "
        "EU AI Act Art. 14(1) requires a high-risk system to be overseen by natural persons "
        "while in use; use human-in-the-loop or human-on-the-loop",
    ),
    (
        document(risk={"class": "high", "reason": "Annex III"}, levels={"reliability": "low"}),
        "req.yaml: needs.reliability.level: 'low' contradicts risk.class: 'high' (EU AI Act "
        "Art. 15(1): an appropriate level of accuracy and robustness); use medium or high",
    ),
    (
        document(risk={"class": "high", "reason": "Annex III"}, levels={"security": "low"}),
        "req.yaml: needs.security.level: 'low' contradicts risk.class: 'high' (EU AI Act "
        "Art. 15(5): resilience against attempts to alter the output); use medium or high",
    ),
    (
        document(risk={"class": "high", "reason": "Annex III"}, levels={"transparency": "low"}),
        "req.yaml: needs.transparency.level: 'low' contradicts risk.class: 'high' (EU AI Act "
        "Art. 13(1): deployers must be able to interpret the output); use medium or high",
    ),
    (
        document(risk={"class": "high", "reason": "Annex III"}, levels={"autonomy": "low"}),
        "req.yaml: needs.autonomy.level: 'low' contradicts risk.class: 'high' (EU AI Act Art. "
        "14(4): persons must be able to override or not use the output); use medium or high",
    ),
    (
        document(
            levels={"autonomy": "high"},
            oversight={"mode": "human-out-of-the-loop", "reason": "x"},
        ),
        "req.yaml: oversight.mode: 'human-out-of-the-loop' contradicts needs.autonomy.level: "
        "'high' (people must keep control, yet none oversees the system); use "
        "human-in-the-loop or human-on-the-loop, or lower the autonomy need",
    ),
    (
        document(levels={"privacy": "low"}, personal_data={"involved": True, "reason": "names"}),
        "req.yaml: needs.privacy.level: 'low' contradicts personal_data.involved: true: a "
        "model can leak its training data through membership inference (GDPR Art. 5(1)(f): "
        "integrity and confidentiality); use medium or high",
    ),
    (
        document(perturbations=["smudge"]),
        "req.yaml: perturbations: 'smudge' is not a known corruption; accepted: "
        "gaussian_noise, gaussian_blur, contrast, jpeg_compression, fog (or register your "
        "own with TAI_CORRUPTION_PLUGINS)",
    ),
    (
        document(perturbations=[]),
        "req.yaml: perturbations: [] but needs.reliability.level: 'medium' gates the accuracy "
        "under the expected perturbations; name at least one of: gaussian_noise, "
        "gaussian_blur, contrast, jpeg_compression, fog",
    ),
    (
        document(protected_groups={"column": "path", "reason": "x"}),
        "req.yaml: protected_groups.column: 'path' identifies each image in metadata.csv, it "
        "is not a group; name a group column (e.g. writer_age_band) or none",
    ),
]


@pytest.mark.parametrize(("doc", "message"), BAD)
def test_bad_input_is_refused_with_one_line_naming_the_field(doc, message):
    with pytest.raises(RequirementsError) as info:
        parse(doc)
    lines = str(info.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(message), lines[0]


def test_every_problem_is_reported_at_once_one_line_each():
    doc = document(
        risk={"class": "high", "reason": "Annex III"},
        levels={"reliability": "low", "transparency": "low"},
        oversight={"mode": "human-out-of-the-loop", "reason": "x"},
        perturbations=["smudge"],
    )
    with pytest.raises(RequirementsError) as info:
        parse(doc)
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert [line.split(": ")[1] for line in lines] == [
        "oversight.mode",
        "needs.reliability.level",
        "needs.transparency.level",
        "perturbations",
    ]


def test_not_yaml_is_one_line():
    with pytest.raises(
        RequirementsError, match=r"^req.yaml: not valid YAML \(.*\); fix the syntax$"
    ):
        parse_requirements("a: [", source="req.yaml")


def test_low_reliability_needs_no_perturbation():
    assert parse(document(levels={"reliability": "low"}, perturbations=[])).perturbations == ()


def test_perturbations_are_checked_against_the_registered_corruptions_by_default():
    r = parse_requirements(yaml.safe_dump(document(perturbations=["fog", "pixelate"])))
    assert r.perturbations == ("fog", "pixelate")
    with pytest.raises(RequirementsError, match="'smudge' is not a known corruption"):
        parse_requirements(yaml.safe_dump(document(perturbations=["smudge"])))


# ---------------------------------------------------------------- checks against the data


def test_the_group_column_is_checked_against_the_data():
    r = parse(document(protected_groups={"column": "age_band", "reason": "older writers"}))
    check_group_column(r, {"path", "age_band"})
    with pytest.raises(RequirementsError) as info:
        check_group_column(r, {"path", "site"})
    assert str(info.value) == (
        "req.yaml: protected_groups.column: 'age_band' is not a column of the data's "
        "metadata.csv (its group columns are site); add the column to metadata.csv, or name "
        "one of its columns, or `column: none`"
    )
    with pytest.raises(RequirementsError, match=r"\(the dataset has no metadata.csv with a"):
        check_group_column(r, set())
    check_group_column(replace(r, group_column=None), set())


def test_the_corruption_list_must_run_every_expected_perturbation():
    r = parse(document())
    check_corruption_list(r, ["gaussian_noise", "contrast", "fog"])
    with pytest.raises(RequirementsError) as info:
        check_corruption_list(r, ["gaussian_noise"])
    assert str(info.value) == (
        "req.yaml: perturbations 'contrast' are expected but the robustness check runs only "
        'gaussian_noise; run the requirements\' perturbations (TAI_CORRUPTIONS=["gaussian_noise", '
        '"contrast"])'
    )
