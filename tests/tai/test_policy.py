import math

import pytest

from flows.preflight import gate_metric_names
from tai.policy import PolicyError, evaluate_gates, load_policy, parse_policy

KNOWN = ["accuracy", "ece", "deletion_auc"]
GOOD = """
version: 1
gates:
  - metric: accuracy
    min: 0.9
  - metric: ece
    max: 0.05
"""


def test_parse_policy_reads_gates_and_hashes_the_text():
    policy = parse_policy(GOOD, KNOWN)
    assert [(g.metric, g.op, g.threshold) for g in policy.gates] == [
        ("accuracy", ">=", 0.9),
        ("ece", "<=", 0.05),
    ]
    assert len(policy.sha256) == 64
    assert parse_policy(GOOD + "\n", KNOWN).sha256 != policy.sha256


def test_all_gates_pass_when_every_bound_holds():
    decision = evaluate_gates(parse_policy(GOOD, KNOWN), {"accuracy": 0.95, "ece": 0.05})
    assert decision.passed
    assert decision.reasons == []


def test_a_failing_gate_explains_itself():
    decision = evaluate_gates(parse_policy(GOOD, KNOWN), {"accuracy": 0.85, "ece": 0.01})
    assert not decision.passed
    assert decision.reasons == ["FAIL: accuracy = 0.8500 (required >= 0.9)"]
    assert "| accuracy | 0.8500 | >= 0.9 | **FAIL** |" in decision.markdown_table()


def test_a_missing_or_nan_metric_fails_its_gate():
    policy = parse_policy(GOOD, KNOWN)
    assert not evaluate_gates(policy, {"accuracy": 0.99}).passed
    decision = evaluate_gates(policy, {"accuracy": math.nan, "ece": 0.0})
    assert [r.passed for r in decision.results] == [False, True]


def test_the_default_policy_file_is_valid():
    policy = load_policy("tai-policy.yaml", gate_metric_names())
    assert {g.metric for g in policy.gates} >= {"accuracy", "ece"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gates: [", "not valid YAML"),
        ("- 1", "expected a mapping with `version`"),
        ("version: 2\ngates: [{metric: accuracy, min: 1}]", "version 2 is not supported"),
        ("gates: []", "non-empty list"),
        ("gates: [{metric: acuracy, min: 0.9}]", "unknown metric 'acuracy'.*accuracy"),
        ("gates: [{metric: accuracy}]", "exactly one of `min` or `max`"),
        ("gates: [{metric: accuracy, min: 0.9, max: 1}]", "exactly one of `min` or `max`"),
        ("gates: [{metric: accuracy, min: high}]", r"`min: 'high'` is not a finite number"),
        ("gates: [{metric: accuracy, min: .nan}]", "not a finite number"),
        ("gates: [{metric: accuracy, min: true}]", "not a finite number"),
        ("gates: [{metric: accuracy, above: 1}]", "unexpected keys"),
        ("gates: [accuracy]", "gate 1: expected a mapping"),
    ],
)
def test_malformed_policies_are_rejected_with_a_clear_message(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, KNOWN)


def test_a_missing_policy_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(PolicyError, match="does not exist; create it or set TAI_POLICY_FILE"):
        load_policy(tmp_path / "nope.yaml", KNOWN)


def test_a_gate_that_cannot_apply_is_skipped_with_its_reason():
    policy = parse_policy("gates: [{metric: accuracy, min: 0.9}, {metric: ece, max: 0.1}]", KNOWN)
    decision = evaluate_gates(
        policy, {"accuracy": 0.95, "ece": math.nan}, not_applicable={"ece": "no champion yet"}
    )
    assert decision.passed
    assert decision.results[1].explain() == "skipped: ece (no champion yet)"
    assert "| skipped (no champion yet) |" in decision.markdown_table()
