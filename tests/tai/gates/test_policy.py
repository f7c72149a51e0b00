import math

import jsonschema
import pytest
import yaml

from tai.check import MetricSpec
from tai.evaluation.registry import metric_specs
from tai.gates.decision import NO_CHAMPION, GateResult, evaluate_gates, evaluate_monitoring
from tai.gates.policy import PolicyError, load_policy, parse_policy
from tai.gates.schema import policy_schema
from tai.gates.significance import PairedDifference, accuracy_difference

KNOWN = metric_specs()
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


def test_a_nan_metric_fails_its_gate():
    policy = parse_policy(GOOD, KNOWN)
    decision = evaluate_gates(policy, {"accuracy": math.nan, "ece": 0.0})
    assert [r.passed for r in decision.results] == [False, True]


def test_a_metric_the_evaluation_did_not_report_is_an_error_not_a_failed_gate():
    """A name that drifts between a check and the registry must not pass as a model's NaN."""
    with pytest.raises(KeyError, match="the evaluation reported no value for 'ece'"):
        evaluate_gates(parse_policy(GOOD, KNOWN), {"accuracy": 0.99})


def test_the_default_policy_file_is_valid():
    policy = load_policy("tai-policy.yaml", KNOWN, monitoring_specs=KNOWN)
    assert {g.metric for g in policy.gates} >= {"accuracy", "ece"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # One line: the parser's own message spans three (line, caret).
        ("gates: [", r"^<policy>: not valid YAML \(while parsing [^\n]*\); fix the file's syntax$"),
        ("- 1", "expected a mapping with `version`"),
        ("version: 2\ngates: [{metric: accuracy, min: 1}]", "version 2 is not supported"),
        ("gates: []", "non-empty list"),
        (
            "gates: [{metric: acuracy, min: 0.9}]",
            "unknown metric 'acuracy'; did you mean 'accuracy'",
        ),
        (
            "gates: [{metric: aurc, max: 0.1, use: upper}]",
            "no confidence bound is computed for 'aurc'",
        ),
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


# --------------------------------------------------------------------- schema and new forms

STATISTICAL = """
version: 1
confidence: 0.9
gates:
  - metric: accuracy
    min: 0.9
    use: lower
  - metric: ece
    max: 0.03
    use: upper
  - metric: deletion_auc
    max: 0.4
champion:
  - metric: accuracy
    margin: 0.01
  - metric: ece
    require: superior
  - metric: nll
    better: lower
    margin: 0.02
"""


def _diff(diff, lower, upper, confidence=0.95, p_value=math.nan, test=""):
    return PairedDifference(
        diff, lower, upper, confidence, 0.5, 0.5 + diff, 100, "x", p_value, test
    )


def test_the_schema_is_a_valid_json_schema_and_accepts_the_default_policy():
    jsonschema.Draft202012Validator.check_schema(policy_schema())
    with open("tai-policy.yaml") as f:
        jsonschema.validate(yaml.safe_load(f), policy_schema())


def test_a_plain_policy_gets_the_defaults():
    policy = parse_policy(GOOD, KNOWN)
    assert policy.confidence == 0.95
    assert [g.use for g in policy.gates] == ["point", "point"]
    assert policy.champion == ()
    assert policy.bound_metrics() == () and policy.comparison_metrics() == ()


def test_parse_policy_reads_confidence_bounds_and_champion_gates():
    policy = parse_policy(STATISTICAL, KNOWN)
    assert policy.confidence == 0.9
    assert [(g.metric, g.use) for g in policy.gates] == [
        ("accuracy", "lower"),
        ("ece", "upper"),
        ("deletion_auc", "point"),
    ]
    assert policy.bound_metrics() == ("accuracy", "ece")
    assert policy.comparison_metrics() == ("accuracy", "ece", "nll")
    judged = [(c.better, c.require, c.use, c.op, c.threshold) for c in policy.champion]
    assert judged == [
        ("higher", "non-inferior", "lower", ">=", -0.01),  # accuracy: higher is better
        ("lower", "superior", "upper", "<", 0.0),  # ece: lower is better
        ("lower", "non-inferior", "upper", "<=", 0.02),  # `better: lower` agrees with nll's
    ]


CHAMP = "gates: [{metric: accuracy, min: 0.9}]\nchampion: "


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("confidence: 0.5\ngates: [{metric: accuracy, min: 1}]", r"`confidence: 0.5`.*\(0.5, 1\)"),
        (
            "confidence: 1\ngates: [{metric: accuracy, min: 1}]",
            r"`confidence: 1` must be .*\(0.5, 1\)",
        ),
        ("confidence: .nan\ngates: [{metric: accuracy, min: 1}]", r"`confidence: nan` must be"),
        ("confidence: high\ngates: [{metric: accuracy, min: 1}]", "`confidence: 'high'` must be"),
        (
            "owner: me\ngates: [{metric: accuracy, min: 1}]",
            r"unexpected top-level keys \['owner'\]",
        ),
        (
            "gates: [{metric: accuracy, min: 0.9}, {metric: ece, max: 1, use: middle}]",
            r"gate 2 \(ece\): `use: 'middle'` is not accepted; use one of: point, lower, upper",
        ),
        ("gates: [{metric: 3, min: 1}]", "gate 1: `metric: 3` must be a string"),
        ("gates: [{metric: accuracy, min: 1, why: 3}]", "`why: 3` must be a string"),
        (
            "gates: [{metric: accuracy, min: 1, above: 2}]",
            r"gate 1 \(accuracy\): unexpected keys \['above'\]; "
            "allowed: metric, min, max, use, why",
        ),
        (CHAMP + "[]", "`champion` must be a non-empty list of comparison gates"),
        (CHAMP + "[accuracy]", "champion gate 1: expected a mapping with `metric` and `margin`"),
        (CHAMP + "[{margin: 0.1}]", "champion gate 1: expected a mapping with `metric`"),
        (CHAMP + "[{metric: acuracy, margin: 0.1}]", r"champion gate 1: unknown metric 'acuracy'"),
        (
            CHAMP + "[{metric: accuracy, margin: 0.1, min: 1}]",
            r"unexpected keys \['min'\]; allowed: metric, require, margin, better, why",
        ),
        (
            CHAMP + "[{metric: accuracy, require: better}]",
            r"champion gate 1 \(accuracy\): `require: 'better'` is not accepted; "
            "use one of: non-inferior, superior",
        ),
        (CHAMP + "[{metric: accuracy, margin: -0.1}]", r"`margin: -0.1` must be >= 0"),
        (CHAMP + "[{metric: accuracy, margin: .inf}]", r"`margin: inf` is not a finite number"),
        (
            CHAMP + "[{metric: accuracy, margin: 1e-3}]",
            r"`margin: '1e-3'`.*e\.g\. `margin: 0\.001`",
        ),
        (CHAMP + "[{metric: accuracy}]", "say what the comparison requires: `margin: 0.01`"),
        (CHAMP + "[{metric: accuracy, require: non-inferior}]", "needs `margin: <number >= 0>`"),
        (
            CHAMP + "[{metric: accuracy, require: superior, margin: 0.1}]",
            "`require: superior` takes no `margin`",
        ),
        (CHAMP + "[{metric: accuracy, better: best, margin: 0.1}]", "use one of: higher, lower"),
        (
            CHAMP + "[{metric: accuracy, better: lower, margin: 0.1}]",
            r"champion gate 1 \(accuracy\): `better: lower` contradicts the metric: a higher "
            "accuracy is better; drop `better:` or fix it",
        ),
        (
            CHAMP + "[{metric: mia_auc, margin: 0.1}]",
            r"champion gate 1 \(mia_auc\): the champion section cannot compare 'mia_auc'; "
            "paired comparisons exist for accuracy, ece, mce",
        ),
        (
            CHAMP + "[{metric: accuracy, margin: 0.1}, {metric: accuracy, require: superior}]",
            "champion gate 2 .*compared with the champion twice",
        ),
    ],
)
def test_malformed_statistical_policies_are_rejected_with_a_clear_message(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, KNOWN, source="p.yaml")


def test_every_schema_problem_is_reported_at_once():
    text = "confidence: 2\ngates: [{metric: accuracy, min: 1, use: x}, {metric: ece}]"
    with pytest.raises(PolicyError) as info:
        parse_policy(text, KNOWN, source="p.yaml")
    assert str(info.value).splitlines() == [
        "p.yaml: `confidence: 2` must be a number in the open interval (0.5, 1), "
        "e.g. `confidence: 0.95`",
        "p.yaml: gate 1 (accuracy): `use: 'x'` is not accepted; use one of: point, lower, upper",
        "p.yaml: gate 2 (ece): give exactly one of `min` or `max`",
    ]


# --------------------------------------------------------------------- evaluation with bounds

BOUNDED = "gates: [{metric: accuracy, min: 0.9, use: lower}, {metric: ece, max: 0.03, use: upper}]"


def test_a_bound_gate_judges_the_bound_and_explains_it():
    decision = evaluate_gates(
        parse_policy(BOUNDED, KNOWN),
        {"accuracy": 0.93, "ece": 0.012},
        bounds={"accuracy": (0.88, 0.96), "ece": (0.004, 0.021)},
    )
    assert [r.passed for r in decision.results] == [False, True]
    assert decision.results[1].explain() == (
        "pass: ece upper 95% bound = 0.0210 (point 0.0120) (required <= 0.03)"
    )
    assert decision.reasons == [
        "FAIL: accuracy lower 95% bound = 0.8800 (point 0.9300) (required >= 0.9)"
    ]
    assert "| ece upper 95% bound | 0.0210 | <= 0.03 | pass |" in decision.markdown_table()
    assert [r.key for r in decision.results] == ["accuracy.lower", "ece.upper"]


def test_the_bound_level_follows_the_policy_confidence():
    policy = parse_policy("confidence: 0.99\n" + BOUNDED, KNOWN)
    decision = evaluate_gates(
        policy, {"accuracy": 0.95, "ece": 0.01}, bounds={"accuracy": (0.91, 0.98)}
    )
    assert decision.results[0].explain().startswith("pass: accuracy lower 99% bound = 0.9100")


def test_a_bound_the_evaluation_did_not_supply_fails_with_an_explanation():
    decision = evaluate_gates(parse_policy(BOUNDED, KNOWN), {"accuracy": 0.99, "ece": 0.01})
    assert not decision.passed
    assert decision.reasons == [
        "FAIL: accuracy lower 95% bound was not supplied by the evaluation (point 0.9900) "
        "(required >= 0.9)",
        "FAIL: ece upper 95% bound was not supplied by the evaluation (point 0.0100) "
        "(required <= 0.03)",
    ]
    assert "| accuracy lower 95% bound | nan | >= 0.9 | **FAIL** |" in decision.markdown_table()


def test_a_nan_bound_fails_and_a_skipped_bound_gate_passes():
    policy = parse_policy(BOUNDED, KNOWN)
    decision = evaluate_gates(
        policy,
        {"accuracy": 0.99},
        bounds={"accuracy": (math.nan, math.nan)},
        not_applicable={"ece": "not measured"},
    )
    assert [r.passed for r in decision.results] == [False, True]
    assert decision.results[1].explain() == "skipped: ece upper 95% bound (not measured)"


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"ece": 0.02}, r"bounds\['ece'\] must be a \(lower, upper\) pair"),
        ({"ece": (0.1, 0.2, 0.3)}, r"bounds\['ece'\] must be a \(lower, upper\) pair"),
        ({"ece": (0.03, 0.01)}, "has lower > upper"),
    ],
)
def test_malformed_bounds_are_a_programming_error(bounds, message):
    with pytest.raises(ValueError, match=message):
        evaluate_gates(parse_policy(BOUNDED, KNOWN), {"accuracy": 1.0, "ece": 0.02}, bounds=bounds)


# --------------------------------------------------------------------- champion comparisons

ISSUE = """
gates:
  - metric: accuracy
    min: 0.9
champion:
  - metric: accuracy
    {requirement}
"""


def _issue_case():
    # The challenger is right on 15 samples the champion misses and wrong on 10 it gets:
    # point accuracy 0.955 > 0.950, but the paired 95% interval straddles zero.
    n_both, only_champion, only_challenger, neither = 940, 10, 15, 35
    champion = [1] * n_both + [1] * only_champion + [0] * only_challenger + [0] * neither
    challenger = [1] * n_both + [0] * only_champion + [1] * only_challenger + [0] * neither
    return {"accuracy": 0.955}, {"accuracy": accuracy_difference(champion, challenger)}


def test_a_better_point_accuracy_within_noise_is_not_superior():
    metrics, comparisons = _issue_case()
    d = comparisons["accuracy"]
    assert d.diff == pytest.approx(0.005) and d.lower < 0 < d.upper
    policy = parse_policy(ISSUE.format(requirement="require: superior"), KNOWN)
    decision = evaluate_gates(policy, metrics, comparisons=comparisons)
    assert not decision.passed
    assert decision.reasons == [
        f"FAIL: accuracy vs champion: difference +0.0050 (challenger 0.9550, champion 0.9500), "
        f"95% interval [{d.lower:+.4f}, {d.upper:+.4f}], lower bound {d.lower:+.4f} "
        f"(required > 0: significantly better); McNemar exact p = {d.p_value:.3g}"
    ]
    assert f"| accuracy vs champion | {d.lower:.4f} | > 0 | **FAIL** |" in (
        decision.markdown_table()
    )


def test_the_same_challenger_is_non_inferior_within_a_margin():
    metrics, comparisons = _issue_case()
    d = comparisons["accuracy"]
    policy = parse_policy(ISSUE.format(requirement="margin: 0.01"), KNOWN)
    decision = evaluate_gates(policy, metrics, comparisons=comparisons)
    assert decision.passed
    line = decision.results[1].explain()
    assert line.startswith("pass: accuracy vs champion: difference +0.0050")
    assert (
        f"lower bound {d.lower:+.4f} (required >= -0.01: non-inferior within margin 0.01)" in line
    )
    assert line.endswith(f"McNemar exact p = {d.p_value:.3g}")
    assert decision.results[1].key == "champion.accuracy"
    # A tighter margin than the noise allows fails the same challenger.
    tight = parse_policy(ISSUE.format(requirement="margin: 0.001"), KNOWN)
    assert not evaluate_gates(tight, metrics, comparisons=comparisons).passed


def test_a_first_model_is_judged_on_absolute_gates_only():
    policy = parse_policy(ISSUE.format(requirement="require: superior"), KNOWN)
    decision = evaluate_gates(policy, {"accuracy": 0.95})
    assert decision.passed
    assert decision.results[1].skipped_because == NO_CHAMPION
    assert decision.results[1].explain() == (
        "skipped: accuracy vs champion (no champion yet: judged on absolute gates only)"
    )
    assert not evaluate_gates(policy, {"accuracy": 0.85}).passed


def test_a_champion_without_the_comparison_fails_the_gate():
    policy = parse_policy(ISSUE.format(requirement="margin: 0.01"), KNOWN)
    decision = evaluate_gates(policy, {"accuracy": 0.95}, comparisons={})
    assert decision.reasons == [
        "FAIL: accuracy vs champion: no paired comparison with the champion was supplied "
        "(required >= -0.01: non-inferior within margin 0.01)"
    ]


def test_a_comparison_at_another_level_than_the_policy_fails():
    policy = parse_policy(ISSUE.format(requirement="margin: 0.01"), KNOWN)
    decision = evaluate_gates(
        policy, {"accuracy": 0.95}, comparisons={"accuracy": _diff(0.01, 0.005, 0.02, 0.9)}
    )
    assert not decision.passed
    assert "computed at 90%, but the policy asks 95%" in decision.reasons[0]


@pytest.mark.parametrize(
    ("requirement", "lower", "upper", "passed"),
    [
        ("margin: 0.02", -0.03, 0.02, True),  # upper bound 0.02 <= margin
        ("margin: 0.02", -0.03, 0.021, False),
        ("require: superior", -0.03, -0.001, True),  # significantly lower ece
        ("require: superior", -0.03, 0.0, False),  # strict: a bound at zero is not significant
    ],
)
def test_a_lower_is_better_metric_is_judged_on_the_upper_bound(requirement, lower, upper, passed):
    text = f"gates: [{{metric: ece, max: 0.1}}]\nchampion: [{{metric: ece, {requirement}}}]"
    decision = evaluate_gates(
        parse_policy(text, KNOWN),
        {"ece": 0.02},
        comparisons={"ece": _diff((lower + upper) / 2, lower, upper)},
    )
    result = decision.results[1]
    assert (result.use, result.value, result.passed) == ("upper", upper, passed)
    assert "p =" not in result.explain()  # a bootstrap comparison has no p-value


def test_old_callers_can_still_build_results_positionally():
    result = GateResult("accuracy", ">=", 0.9, 0.95, True)
    assert result.explain() == "pass: accuracy = 0.9500 (required >= 0.9)"
    assert result.label == result.key == "accuracy"


def test_approval_section_is_parsed_with_defaults():
    from tai.gates.policy import parse_policy

    base = "version: 1\ngates: [{metric: accuracy, min: 0.9}]\n"
    assert parse_policy(base, KNOWN).approval.required is False
    policy = parse_policy(base + "approval: {required: true, timeout_s: 60}\n", KNOWN)
    assert (policy.approval.required, policy.approval.timeout_s) == (True, 60)
    assert parse_policy(base + "approval: {required: true}\n", KNOWN).approval.timeout_s == 86400


@pytest.mark.parametrize(
    ("approval", "pattern"),
    [
        ("{required: yes-please}", r"approval.*required"),
        ("{required: true, timeout_s: 0}", r"approval.*timeout_s"),
        ("{required: true, wait: 5}", r"approval.*wait"),
    ],
)
def test_bad_approval_section_is_refused(approval, pattern):
    from tai.gates.policy import PolicyError, parse_policy

    text = f"version: 1\ngates: [{{metric: accuracy, min: 0.9}}]\napproval: {approval}\n"
    with pytest.raises(PolicyError, match=pattern):
        parse_policy(text, KNOWN)


# --------------------------------------------------------------------- monitoring rules

MONITOR_SPECS = {
    "estimated_accuracy": MetricSpec(
        "estimated_accuracy", True, "ATC estimate of the batch's accuracy", bounded=True
    ),
    "drift_p_value": MetricSpec("drift_p_value", True, "MMD permutation p-value"),
}
MONITORED = (
    GOOD
    + """
monitoring:
  - metric: estimated_accuracy
    min: 0.95
    use: upper
    why: alarm when even the upper bound of the estimate is below 0.95
  - metric: drift_p_value
    min: 0.001
"""
)


def test_the_monitoring_rules_are_parsed_against_the_monitoring_metrics():
    policy = parse_policy(MONITORED, KNOWN, monitoring_specs=MONITOR_SPECS)
    assert [(r.metric, r.op, r.threshold, r.use) for r in policy.monitoring] == [
        ("estimated_accuracy", ">=", 0.95, "upper"),
        ("drift_p_value", ">=", 0.001, "point"),
    ]
    assert parse_policy(GOOD, KNOWN, monitoring_specs=MONITOR_SPECS).monitoring == ()


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "{metric: accuracy, min: 0.9}",
            r"p.yaml: monitoring rule 1: unknown metric 'accuracy'; "
            "did you mean 'estimated_accuracy'",
        ),
        (
            "{metric: drift_p_value, min: 0.01, use: lower}",
            r"monitoring rule 1 \(drift_p_value\): no confidence bound is computed",
        ),
        ("{metric: estimated_accuracy}", r"monitoring rule 1 \(estimated_accuracy\): give exactly"),
    ],
)
def test_a_malformed_monitoring_rule_is_refused(rule, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(
            GOOD + f"monitoring: [{rule}]", KNOWN, monitoring_specs=MONITOR_SPECS, source="p.yaml"
        )


def test_a_monitoring_section_where_none_is_read_is_refused():
    with pytest.raises(PolicyError, match="a `monitoring:` section is not read here"):
        parse_policy(MONITORED, KNOWN)


def test_a_failed_monitoring_rule_is_an_alarm_that_explains_itself():
    policy = parse_policy(MONITORED, KNOWN, monitoring_specs=MONITOR_SPECS)
    healthy = evaluate_monitoring(
        policy,
        {"estimated_accuracy": 0.97, "drift_p_value": 0.4},
        bounds={"estimated_accuracy": (0.94, 0.99)},
    )
    assert healthy.passed
    harmed = evaluate_monitoring(
        policy,
        {"estimated_accuracy": 0.90, "drift_p_value": 0.4},
        bounds={"estimated_accuracy": (0.87, 0.93)},
    )
    assert harmed.reasons == [
        "FAIL: estimated_accuracy upper 95% bound = 0.9300 (point 0.9000) (required >= 0.95)"
    ]
