"""From requirements to gates (tai.gates.derivation): the table, looseness, the diff."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

import tai.gates.derivation as derivation
from tai.check import MetricSpec, Stage
from tai.evaluation.registry import GATED_STAGES, CheckOptions, metric_specs
from tai.gates.derivation import (
    DerivationError,
    LoosePolicyError,
    assert_policy_meets,
    check_policy_against,
    derivation_table,
    derive,
    derive_policy,
    policy_diff,
    report_section,
)
from tai.gates.policy import PolicyError, load_policy, parse_policy
from tai.gates.requirements import PRINCIPLES, load_requirements, parse_requirements
from tests.conftest import REPO_ROOT
from tests.tai.gates.test_requirements import CORRUPTIONS, document

# The monitoring stage's metrics, as its checks declare them; the registry's win where
# they are declared already.
INJECTED = {
    "estimated_accuracy": MetricSpec(
        "estimated_accuracy", True, "ATC estimate of the batch's accuracy", bounded=True
    ),
    "drift_p_value": MetricSpec("drift_p_value", True, "MMD permutation p-value"),
    "deferral_p_value": MetricSpec("deferral_p_value", True, "binomial test of deferrals"),
}
OPTIONS = CheckOptions(corruptions=CORRUPTIONS)
GATED = metric_specs(OPTIONS, stages=GATED_STAGES)
MONITORING = {**INJECTED, **metric_specs(OPTIONS, stages=(Stage.MONITORING,))}
SPECS = {**GATED, **MONITORING}


def requirements(**changes: object):
    return parse_requirements(
        yaml.safe_dump(document(**changes)), source="req.yaml", corruptions=CORRUPTIONS
    )


def policy(text: str, source: str = "p.yaml"):
    return parse_policy(text, GATED, monitoring_specs=MONITORING, source=source)


def rows(gates) -> list[tuple]:
    return [(g.metric, g.bound, g.threshold, g.use) for g in gates]


# ------------------------------------------------------------------------ the table

# What each need level of each principle demands, written out (not read from the table).
# (section, metric, bound, threshold, use); the perturbations are gaussian_noise, contrast.
EXPECTED = {
    ("reliability", "low"): [
        ("gates", "accuracy", "min", 0.90, "point"),
        ("monitoring", "estimated_accuracy", "min", 0.88, "upper"),
    ],
    ("reliability", "medium"): [
        ("gates", "accuracy", "min", 0.97, "point"),
        ("gates", "ece", "max", 0.03, "upper"),
        ("gates", "mean_corruption_accuracy", "min", 0.70, "point"),
        ("gates", "data_label_issue_rate", "max", 0.10, "point"),
        ("gates", "data_noise_sigma_shift", "max", 0.05, "point"),
        ("gates", "data_split_leakage", "max", 0.0, "point"),
        ("champion", "accuracy", "margin", 0.01, ""),
        ("monitoring", "estimated_accuracy", "min", 0.95, "upper"),
        ("monitoring", "drift_p_value", "min", 0.001, "point"),
    ],
    ("reliability", "high"): [
        ("gates", "accuracy", "min", 0.97, "lower"),
        ("gates", "ece", "max", 0.02, "upper"),
        ("gates", "mean_corruption_accuracy", "min", 0.75, "point"),
        ("gates", "gaussian_noise_mean", "min", 0.60, "point"),
        ("gates", "contrast_mean", "min", 0.60, "point"),
        ("gates", "data_label_issue_rate", "max", 0.05, "point"),
        ("gates", "data_noise_sigma_shift", "max", 0.05, "point"),
        ("gates", "data_split_leakage", "max", 0.0, "point"),
        ("champion", "accuracy", "margin", 0.005, ""),
        ("monitoring", "estimated_accuracy", "min", 0.97, "upper"),
        ("monitoring", "drift_p_value", "min", 0.01, "point"),
    ],
    ("transparency", "low"): [],
    ("transparency", "medium"): [("gates", "deletion_auc", "max", 0.35, "point")],
    ("transparency", "high"): [
        ("gates", "deletion_auc", "max", 0.35, "upper"),
        ("gates", "sanity_failures", "max", 0.0, "point"),
    ],
    ("fairness", "low"): [("gates", "worst_class_accuracy", "min", 0.80, "point")],
    ("fairness", "medium"): [("gates", "worst_class_accuracy", "min", 0.85, "lower")],
    ("fairness", "high"): [
        ("gates", "worst_class_accuracy", "min", 0.90, "lower"),
        ("gates", "class_accuracy_gap", "max", 0.10, "upper"),
    ],
    ("privacy", "low"): [],
    ("privacy", "medium"): [("gates", "mia_advantage", "max", 0.10, "point")],
    ("privacy", "high"): [
        ("gates", "mia_advantage", "max", 0.05, "upper"),
        ("gates", "mia_tpr_at_1pct_fpr", "max", 0.05, "point"),
    ],
    ("security", "low"): [],
    ("security", "medium"): [("gates", "pgd_accuracy_eps_0p05", "min", 0.80, "point")],
    ("security", "high"): [
        ("gates", "pgd_accuracy_eps_0p05", "min", 0.85, "point"),
        ("gates", "pgd_accuracy_eps_0p1", "min", 0.50, "point"),
    ],
    ("autonomy", "low"): [],
    ("autonomy", "medium"): [
        ("gates", "coverage_at_threshold", "min", 0.90, "point"),
        ("gates", "selective_risk_at_threshold", "max", 0.01, "point"),
        ("monitoring", "deferral_p_value", "min", 0.001, "point"),
    ],
    ("autonomy", "high"): [
        ("gates", "coverage_at_threshold", "min", 0.90, "point"),
        ("gates", "selective_risk_at_threshold", "max", 0.005, "point"),
        ("monitoring", "deferral_p_value", "min", 0.01, "point"),
        ("approval", "required", "", 0.0, ""),
    ],
}
GROUPS = {
    "low": [("gates", "worst_group_accuracy", "min", 0.80, "point")],
    "medium": [("gates", "worst_group_accuracy", "min", 0.85, "lower")],
    "high": [
        ("gates", "worst_group_accuracy", "min", 0.90, "lower"),
        ("gates", "group_error_rate_gap", "max", 0.10, "upper"),
    ],
}


def demanded_by(d, field: str) -> list[tuple]:
    """Everything of ``d`` that the requirement ``field`` demands, in table form."""

    def cites(sources) -> bool:
        return any(s.field == field for s in sources)

    out = [("gates", *row) for g in d.gates if cites(g.sources) for row in rows([g])]
    out += [("champion", c.metric, "margin", c.margin, "") for c in d.champion if cites(c.sources)]
    out += [("monitoring", *row) for g in d.monitoring if cites(g.sources) for row in rows([g])]
    if d.approval and cites(d.approval_sources):
        out.append(("approval", "required", "", 0.0, ""))
    return out


def _approx(found: list[tuple]) -> list[tuple]:
    return [(*t[:3], round(t[3], 9), t[4]) for t in found]


@pytest.mark.parametrize(("principle", "level"), list(EXPECTED))
def test_each_need_level_of_each_principle_demands_the_documented_gates(principle, level):
    levels = {p: (level if p == principle else "low") for p in PRINCIPLES}
    found = demanded_by(derive(requirements(levels=levels), SPECS), f"needs.{principle}")
    assert _approx(found) == _approx(EXPECTED[principle, level])


@pytest.mark.parametrize("level", ["low", "medium", "high"])
def test_a_group_column_adds_the_group_gates(level):
    groups = {"column": "age_band", "reason": "older writers"}
    r = requirements(levels={"fairness": level}, protected_groups=groups)
    found = demanded_by(derive(r, SPECS), "protected_groups.column")
    assert _approx(found) == _approx(GROUPS[level])
    without = demanded_by(derive(requirements(levels={"fairness": level}), SPECS), "needs.fairness")
    assert not any("group" in row[1] for row in without)


def test_the_docstring_table_is_the_table_in_code():
    assert derivation_table() in derivation.__doc__


@pytest.mark.parametrize(
    ("changes", "confidence", "approval", "because"),
    [
        ({}, 0.95, False, []),
        (
            {"risk": {"class": "high", "reason": "Annex III 5(a)"}},
            0.99,
            True,
            ["risk.class"],
        ),
        ({"levels": {"autonomy": "high"}}, 0.95, True, ["needs.autonomy"]),
        (
            {"oversight": {"mode": "human-in-the-loop", "reason": "a clerk confirms each"}},
            0.95,
            True,
            ["oversight.mode"],
        ),
        (
            {
                "risk": {"class": "high", "reason": "Annex III"},
                "levels": {"autonomy": "high"},
                "oversight": {"mode": "human-in-the-loop", "reason": "x"},
            },
            0.99,
            True,
            ["risk.class", "needs.autonomy", "oversight.mode"],
        ),
    ],
)
def test_confidence_and_approval_follow_the_risk_the_autonomy_need_and_the_oversight(
    changes, confidence, approval, because
):
    d = derive(requirements(**changes), SPECS)
    assert d.confidence == confidence
    assert d.approval is approval
    assert [s.field for s in d.approval_sources] == because


def test_a_human_on_the_loop_gets_the_alarms_whatever_the_needs():
    low = {p: "low" for p in PRINCIPLES}
    on = derive(requirements(levels=low), SPECS)
    assert rows(on.monitoring) == [
        ("estimated_accuracy", "min", 0.88, "upper"),
        ("drift_p_value", "min", 0.001, "point"),
        ("deferral_p_value", "min", 0.001, "point"),
    ]
    out = requirements(levels=low, oversight={"mode": "human-out-of-the-loop", "reason": "x"})
    assert rows(derive(out, SPECS).monitoring) == [("estimated_accuracy", "min", 0.88, "upper")]


def test_two_requirements_on_one_rule_keep_the_stricter_and_name_both():
    d = derive(requirements(levels={"reliability": "high"}), SPECS)
    drift = next(g for g in d.monitoring if g.metric == "drift_p_value")
    assert drift.threshold == 0.01
    assert [s.field for s in drift.sources] == ["needs.reliability", "oversight.mode"]


def test_every_derived_gate_says_why_and_names_its_requirement():
    r = requirements(levels={p: "high" for p in PRINCIPLES})
    doc = yaml.safe_load(derive_policy(r, SPECS))
    items = [*doc["gates"], *doc["champion"], *doc["monitoring"]]
    assert len(items) == len(derive(r, SPECS).metrics()) + 1  # accuracy: gate and champion
    for item in items:
        assert "(requirements needs." in item["why"] or "(requirements oversight." in item["why"]
    accuracy = doc["gates"][0]
    assert accuracy == {
        "metric": "accuracy",
        "min": 0.97,
        "use": "lower",
        "why": "the share of test images read right: reliability need is high (requirements "
        "needs.reliability: 'reliability matters')",
    }


# -------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"levels": {p: "low" for p in PRINCIPLES}},
        {"levels": {p: "high" for p in PRINCIPLES}, "risk": {"class": "high", "reason": "x"}},
        {
            "protected_groups": {"column": "age_band", "reason": "x"},
            "oversight": {"mode": "human-in-the-loop", "reason": "x"},
        },
        {"levels": {"reliability": "low"}, "perturbations": []},
    ],
)
def test_the_derived_policy_parses_and_meets_its_requirements(changes):
    r = requirements(**changes)
    text = derive_policy(r, SPECS)
    parsed = policy(text)
    assert check_policy_against(r, parsed, SPECS) == []
    assert_policy_meets(r, parsed, SPECS)
    assert parsed.confidence == derive(r, SPECS).confidence
    assert parsed.approval.required is derive(r, SPECS).approval
    assert r.sha256[:16] in text
    assert policy_diff(text, text).startswith("no change")


def test_the_example_requirements_derive_a_policy_the_demo_passes_at_medium_need():
    r = load_requirements(REPO_ROOT / "tai-requirements.yaml")
    specs = {**INJECTED, **metric_specs(CheckOptions(corruptions=r.corruptions))}
    d = derive(r, specs)
    assert rows(d.gates) == [
        ("accuracy", "min", 0.97, "point"),
        ("ece", "max", 0.03, "upper"),
        ("mean_corruption_accuracy", "min", 0.70, "point"),
        ("data_label_issue_rate", "max", 0.10, "point"),
        ("data_noise_sigma_shift", "max", 0.05, "point"),
        ("data_split_leakage", "max", 0.0, "point"),
        ("deletion_auc", "max", 0.35, "point"),
        ("worst_class_accuracy", "min", 0.85, "lower"),
        ("pgd_accuracy_eps_0p05", "min", 0.80, "point"),
        ("coverage_at_threshold", "min", 0.90, "point"),
        ("selective_risk_at_threshold", "max", 0.01, "point"),
    ]
    assert [(c.metric, c.margin) for c in d.champion] == [("accuracy", 0.01)]
    assert rows(d.monitoring) == [
        ("estimated_accuracy", "min", 0.95, "upper"),
        ("drift_p_value", "min", 0.001, "point"),
        ("deferral_p_value", "min", 0.001, "point"),
    ]
    assert (d.confidence, d.approval) == (0.95, False)
    # The demo's version 2 (README): it passes every gate.
    demo = {
        "accuracy": 0.9827,
        "ece": 0.018,  # upper 95% bound
        "mean_corruption_accuracy": 0.79,
        "worst_class_accuracy": 0.92,  # lower 95% bound
        "pgd_accuracy_eps_0p05": 0.90,
        "coverage_at_threshold": 0.965,
        "selective_risk_at_threshold": 0.0028,
    }
    for gate in d.gates:
        if gate.metric in demo:
            value = demo[gate.metric]
            assert value >= gate.threshold if gate.bound == "min" else value <= gate.threshold


def test_the_current_policy_meets_the_example_requirements_but_for_the_monitoring_rules():
    r = load_requirements(REPO_ROOT / "tai-requirements.yaml")
    current = load_policy(REPO_ROOT / "tai-policy.yaml", GATED, monitoring_specs=MONITORING)
    problems = check_policy_against(r, current, SPECS)
    assert all(": monitoring rule on " in p for p in problems), problems


# --------------------------------------------------------------------------- looseness

MEDIUM = requirements()


def loosened(old: str, new: str, changes: dict | None = None) -> list[str]:
    r = requirements(**(changes or {}))
    text = derive_policy(r, SPECS)
    assert old in text, old
    if not new:  # drop the whole item, its `why:` line included
        start = text.index(old)
        end = text.index("\n", text.index("    why:", start)) + 1
        old = text[start:end]
    return check_policy_against(r, policy(text.replace(old, new, 1)), SPECS)


REASON = "(requirements needs.reliability: 'reliability matters')"


@pytest.mark.parametrize(
    ("old", "new", "changes", "message"),
    [
        (
            "  - metric: ece\n    max: 0.03\n    use: upper\n",
            "",
            None,
            "p.yaml: gate on ece missing; add `{metric: ece, max: 0.03, use: upper}`: "
            f"reliability need is medium {REASON}",
        ),
        (
            "metric: accuracy\n    min: 0.97",
            "metric: accuracy\n    min: 0.96",
            None,
            "p.yaml: gate on accuracy must be the point value (or a stricter bound) with min "
            f">= 0.97, found `min: 0.96`: reliability need is medium {REASON}",
        ),
        (
            "metric: ece\n    max: 0.03",
            "metric: ece\n    max: 0.05",
            None,
            "p.yaml: gate on ece must be `use: upper` (or a stricter bound) with max <= 0.03, "
            f"found `max: 0.05, use: upper`: reliability need is medium {REASON}",
        ),
        (
            "metric: ece\n    max: 0.03\n    use: upper",
            "metric: ece\n    max: 0.03",
            None,
            "p.yaml: gate on ece must be `use: upper` (or a stricter bound) with max <= 0.03, "
            f"found `max: 0.03`: reliability need is medium {REASON}",
        ),
        (
            "metric: accuracy\n    min: 0.97\n    use: lower",
            "metric: accuracy\n    min: 0.97\n    use: upper",
            {"levels": {"reliability": "high"}},
            "p.yaml: gate on accuracy must be `use: lower` (or a stricter bound) with min >= "
            "0.97, found `min: 0.97, use: upper`: reliability need is high (requirements "
            "needs.reliability: 'reliability matters')",
        ),
        (
            "confidence: 0.99",
            "confidence: 0.95",
            {"risk": {"class": "high", "reason": "Annex III 5(a)"}},
            "p.yaml: `confidence: 0.95` must be >= 0.99: risk class is high (requirements "
            "risk.class: 'Annex III 5(a)')",
        ),
        (
            "  required: true",
            "  required: false",
            {"oversight": {"mode": "human-in-the-loop", "reason": "a clerk confirms each"}},
            "p.yaml: approval must be `required: true`, found `required: false`: oversight is "
            "human-in-the-loop (requirements oversight.mode: 'a clerk confirms each')",
        ),
        (
            "  - metric: estimated_accuracy\n    min: 0.95\n    use: upper\n",
            "",
            None,
            "p.yaml: monitoring rule on estimated_accuracy missing; add `{metric: "
            f"estimated_accuracy, min: 0.95, use: upper}}`: reliability need is medium {REASON}",
        ),
        (
            "metric: deferral_p_value\n    min: 0.001",
            "metric: deferral_p_value\n    min: 0.0001",
            None,
            "p.yaml: monitoring rule on deferral_p_value must be the point value (or a "
            "stricter bound) with min >= 0.001, found `min: 0.0001`: autonomy & control need "
            "is medium (requirements needs.autonomy: 'autonomy matters'); oversight is "
            "human-on-the-loop (requirements oversight.mode: 'clerks watch the alarms')",
        ),
        (
            "champion:\n  - metric: accuracy\n    margin: 0.01",
            "champion:\n  - metric: accuracy\n    margin: 0.02",
            None,
            "p.yaml: champion comparison on accuracy must have margin <= 0.01 (or `require: "
            f"superior`), found `margin: 0.02`: reliability need is medium {REASON}",
        ),
        (
            "metric: worst_class_accuracy\n    min: 0.85\n    use: lower",
            "metric: worst_class_accuracy\n    max: 0.99",
            None,
            "p.yaml: gate on worst_class_accuracy must be `use: lower` (or a stricter bound) "
            "with min >= 0.85, found `max: 0.99`: fairness need is medium (requirements "
            "needs.fairness: 'fairness matters')",
        ),
    ],
)
def test_a_looser_policy_is_refused_naming_the_requirement_it_breaks(old, new, changes, message):
    assert loosened(old, new, changes) == [message]


def test_a_missing_champion_comparison_is_refused():
    r = MEDIUM
    text = derive_policy(r, SPECS)
    start, end = text.index("champion:"), text.index("# No requirement")
    text = text[:start].rsplit("\n", 2)[0] + "\n" + text[end:]
    problems = check_policy_against(r, policy(text), SPECS)
    assert problems == [
        "p.yaml: champion comparison on accuracy missing; add `{metric: accuracy, margin: "
        f"0.01}}`: reliability need is medium {REASON}"
    ]
    with pytest.raises(LoosePolicyError, match="champion comparison on accuracy missing"):
        assert_policy_meets(r, policy(text), SPECS)
    assert issubclass(LoosePolicyError, PolicyError)


def test_a_lenient_bound_at_a_higher_confidence_is_looser():
    r = MEDIUM
    text = derive_policy(r, SPECS).replace("confidence: 0.95", "confidence: 0.99")
    assert check_policy_against(r, policy(text), SPECS) == [
        "p.yaml: monitoring rule on estimated_accuracy must be `use: upper` (or point, or the "
        "other bound) with min >= 0.95, found `min: 0.95, use: upper`; `use: upper` at "
        "confidence 0.99 is wider than at 0.95, so looser: use `use: point`: reliability need "
        f"is medium {REASON}"
    ]
    fixed = text.replace("min: 0.95\n    use: upper", "min: 0.95")
    assert check_policy_against(r, policy(fixed), SPECS) == []


STRICTER = """
version: 1
confidence: 0.99
gates:
  - {metric: accuracy, min: 0.98, use: lower}
  - {metric: ece, max: 0.02, use: upper}
  - {metric: mean_corruption_accuracy, min: 0.75}
  - {metric: data_label_issue_rate, max: 0.05}
  - {metric: data_noise_sigma_shift, max: 0.05}
  - {metric: data_split_leakage, max: 0}
  - {metric: deletion_auc, max: 0.3, use: upper}
  - {metric: worst_class_accuracy, min: 0.9, use: lower}
  - {metric: mia_advantage, max: 0.05}
  - {metric: pgd_accuracy_eps_0p05, min: 0.85}
  - {metric: coverage_at_threshold, min: 0.95}
  - {metric: selective_risk_at_threshold, max: 0.005}
  - {metric: brier, max: 0.1}
champion:
  - {metric: accuracy, require: superior}
  - {metric: ece, margin: 0.01}
approval: {required: true, timeout_s: 3600}
monitoring:
  - {metric: estimated_accuracy, min: 0.96}
  - {metric: drift_p_value, min: 0.01}
  - {metric: deferral_p_value, min: 0.05}
"""


def test_a_stricter_policy_passes():
    assert check_policy_against(MEDIUM, policy(STRICTER), SPECS) == []


# --------------------------------------------------------------------------- bad specs


def test_a_needed_metric_the_checks_do_not_declare_is_a_clear_error():
    r = MEDIUM
    specs = {k: v for k, v in SPECS.items() if k != "estimated_accuracy"}
    with pytest.raises(DerivationError) as info:
        derive_policy(r, specs)
    assert str(info.value) == (
        "cannot derive the policy: reliability need is medium (requirements "
        "needs.reliability: 'reliability matters') demands a monitoring rule on "
        "'estimated_accuracy', which no check of this configuration declares (the monitoring "
        "stage declares it (tai.monitoring.checks); pass metric_specs() with the monitoring "
        "stage); `tai metrics` lists the metrics there are"
    )


def test_an_expected_perturbation_the_robustness_check_does_not_run_is_a_clear_error():
    r = requirements(levels={"reliability": "high"}, perturbations=["fog"])
    specs = {**INJECTED, **metric_specs()}  # the default corruptions: no fog
    with pytest.raises(DerivationError, match=r"demands a gate on 'fog_mean', which no check"):
        derive(r, specs)
    with pytest.raises(DerivationError, match=r"run the requirements' perturbations"):
        check_policy_against(r, policy(STRICTER), specs)


def test_a_table_that_disagrees_with_the_registry_is_a_clear_error():
    flipped = {**SPECS, "ece": replace(SPECS["ece"], higher_is_better=True)}
    with pytest.raises(DerivationError, match=r"with `max`, but the registry says a higher value"):
        derive(MEDIUM, flipped)
    unbounded = {**SPECS, "ece": replace(SPECS["ece"], bounded=False)}
    with pytest.raises(DerivationError, match=r"judged on its upper confidence bound, which"):
        derive(MEDIUM, unbounded)
    incomparable = {**SPECS, "accuracy": replace(SPECS["accuracy"], comparable=False)}
    with pytest.raises(DerivationError, match=r"cannot be compared with the champion"):
        derive(MEDIUM, incomparable)


# -------------------------------------------------------------------------------- diff


def test_the_diff_says_what_deriving_again_would_change():
    current = """
version: 1
confidence: 0.95
gates:
  - {metric: accuracy, min: 0.97}
  - {metric: ece, max: 0.05, use: upper}
  - {metric: mia_advantage, max: 0.1}
  - {metric: worst_class_accuracy, min: 0.9, use: lower}
champion:
  - {metric: accuracy, margin: 0.02}
  - {metric: nll, better: lower, require: superior}
approval: {required: false}
"""
    derived = """
version: 1
confidence: 0.99
gates:
  - {metric: accuracy, min: 0.97, use: lower}
  - {metric: ece, max: 0.03, use: upper}
  - {metric: worst_class_accuracy, min: 0.85, use: lower}
  - {metric: deletion_auc, max: 0.35}
champion:
  - {metric: accuracy, margin: 0.01}
approval: {required: true}
monitoring:
  - {metric: estimated_accuracy, min: 0.95, use: upper}
"""
    assert policy_diff(current, derived, current_source="tai-policy.yaml") == "\n".join(
        [
            "derived policy against tai-policy.yaml:",
            "~ confidence: 0.95 -> 0.99 (stricter)",
            "~ gate accuracy >= 0.97 -> accuracy >= 0.97 (lower bound) (stricter)",
            "~ gate ece <= 0.05 (upper bound) -> ece <= 0.03 (upper bound) (stricter)",
            "- gate mia_advantage <= 0.1 (not demanded by the requirements)",
            "~ gate worst_class_accuracy >= 0.9 (lower bound) -> worst_class_accuracy >= 0.85 "
            "(lower bound) (looser)",
            "+ gate deletion_auc <= 0.35",
            "+ monitoring rule estimated_accuracy >= 0.95 (upper bound)",
            "~ champion comparison accuracy margin 0.02 -> accuracy margin 0.01 (stricter)",
            "- champion comparison nll superior (not demanded by the requirements)",
            "~ approval.required: false -> true (stricter)",
        ]
    )


def test_the_diff_of_the_current_policy_against_the_example():
    r = load_requirements(REPO_ROOT / "tai-requirements.yaml")
    derived = derive_policy(r, {**INJECTED, **metric_specs()})
    current = (REPO_ROOT / "tai-policy.yaml").read_text()
    diff = policy_diff(current, derived, current_source="tai-policy.yaml").splitlines()
    # the repository's policy is the derived one plus a privacy gate, stricter than demanded
    assert diff == [
        "derived policy against tai-policy.yaml:",
        "- gate mia_advantage <= 0.1 (upper bound) (not demanded by the requirements)",
    ]


def test_the_diff_refuses_a_text_that_is_not_a_policy():
    with pytest.raises(PolicyError, match=r"current policy: `gates` must be a non-empty list"):
        policy_diff("gates: []", "gates: [{metric: accuracy, min: 0.9}]")
    with pytest.raises(PolicyError, match=r"derived policy: not valid YAML"):
        policy_diff("gates: [{metric: accuracy, min: 0.9}]", "gates: [")


# ------------------------------------------------------------------------------ report


def test_the_report_section_is_json_ready_and_says_whether_the_policy_meets_it():
    r = MEDIUM
    section = report_section(r, SPECS, policy(derive_policy(r, SPECS)))
    section = json.loads(json.dumps(section))
    assert section["policy"]["meets_requirements"] is True
    assert section["policy"]["shortfalls"] == []
    assert section["demanded"][0] == {
        "section": "gates",
        "metric": "accuracy",
        "rule": "accuracy >= 0.97",
        "requirements": ["needs.reliability"],
        "why": f"reliability need is medium {REASON}",
    }
    assert {row["section"] for row in section["demanded"]} == {"gates", "champion", "monitoring"}
    loose = report_section(r, SPECS, policy("gates: [{metric: accuracy, min: 0.9}]"))
    assert loose["policy"]["meets_requirements"] is False
    assert "approval_required" in section and section["sha256"] == r.sha256
