"""The monitoring declarations: one stage, the principles asked for, names that collide
with no other stage's."""

from __future__ import annotations

from tai.check import DeclaredCheck, Principle, Stage
from tai.evaluation.registry import all_checks, metric_specs
from tai.monitoring.checks import MONITORING_CHECKS, MONITORING_METRICS

REQUIRED = {
    "n_images",
    "estimated_accuracy",
    "estimated_accuracy_lower",
    "estimated_accuracy_upper",
    "average_confidence",
    "doc_estimated_accuracy",
    "deferral_rate",
    "expected_deferral_rate",
    "deferral_p_value",
    "drift_p_value",
    "drifted_factors",
    "worst_class_estimated_accuracy",
    "prior_shift_tv",
}


def test_every_check_is_a_declared_monitoring_check():
    assert MONITORING_CHECKS
    for check in MONITORING_CHECKS:
        assert isinstance(check, DeclaredCheck) and check.stage is Stage.MONITORING
        assert check.title and check.metrics


def test_the_fixed_names_are_declared_and_the_list_stays_short():
    assert REQUIRED <= set(MONITORING_METRICS)
    assert len(MONITORING_METRICS) == len(set(MONITORING_METRICS)) <= len(REQUIRED) + 2


def test_the_registry_takes_them_without_a_duplicate():
    specs = metric_specs()  # raises on a name declared twice
    others = {m for c in all_checks() if c not in MONITORING_CHECKS for m in c.metric_names}
    assert not others & set(MONITORING_METRICS)
    assert set(MONITORING_METRICS) <= set(specs)


def test_principles_and_directions():
    principle = {m: c.principle for c in MONITORING_CHECKS for m in c.metric_names}
    assert principle["estimated_accuracy"] is Principle.RELIABILITY
    assert principle["deferral_rate"] is Principle.AUTONOMY
    assert principle["drift_p_value"] is Principle.RELIABILITY
    assert principle["drifted_factors"] is Principle.TRANSPARENCY
    assert principle["prior_shift_tv"] is Principle.FAIRNESS
    assert principle["worst_class_estimated_accuracy"] is Principle.FAIRNESS
    spec = {m.name: m for c in MONITORING_CHECKS for m in c.metrics}
    assert spec["estimated_accuracy"].bounded and spec["deferral_rate"].bounded
    assert spec["estimated_accuracy"].direction == "higher"
    assert spec["drift_p_value"].direction == "higher"  # a low p-value is the alarm
    assert spec["deferral_rate"].direction == "lower"
    assert spec["n_images"].direction == spec["expected_deferral_rate"].direction == ""
    assert not any(s.comparable or s.needs_baseline for s in spec.values())
