"""assess_batch: the declared metrics, the bounds, what it refuses, and that it sees
known shifts of the synthetic calibrated classifier."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import fisher_exact

from tai.monitoring.assess import (
    DEFAULT_N_PERMUTATIONS,
    MAX_N_PERMUTATIONS,
    MIN_CLASS_IMAGES,
    MMD_STOP_AFTER,
    assess_batch,
    drift_permutations,
    drift_rule_minimum,
)
from tai.monitoring.checks import MONITORING_CHECKS, MONITORING_METRICS
from tai.monitoring.priors import total_variation
from tai.monitoring.reference import MonitoringReference
from tests.conftest import REPO_ROOT

FAST = {"n_resamples": 300, "n_permutations": 100}


@pytest.fixture(scope="module")
def batch(world):
    return world.sample(400, np.random.default_rng(11))


@pytest.fixture(scope="module")
def result(batch, reference):
    sigmas = np.random.default_rng(1).normal(0.02, 0.002, size=400).clip(0)
    return assess_batch(batch.probs, batch.embeddings, reference, noise_sigmas=sigmas, **FAST)


def test_it_reports_exactly_the_declared_metrics_in_their_order(result):
    declared = [m.name for c in MONITORING_CHECKS for m in c.metrics]
    assert list(result.metrics()) == declared == list(MONITORING_METRICS)
    values = result.metrics()
    assert all(math.isfinite(v) for v in values.values()), values
    assert result.not_applicable() == {}


def test_the_bounds_are_the_declared_bounded_metrics(result):
    bounded = {m.name for c in MONITORING_CHECKS for m in c.metrics if m.bounded}
    assert set(result.bounds()) == bounded
    values = result.metrics()
    low, high = result.bounds()["estimated_accuracy"]
    assert (low, high) == (values["estimated_accuracy_lower"], values["estimated_accuracy_upper"])
    assert low <= values["estimated_accuracy"] <= high
    low, high = result.bounds()["deferral_rate"]
    assert low <= values["deferral_rate"] <= high


def test_in_distribution_the_numbers_are_quiet(result, batch, reference):
    values = result.metrics()
    assert values["n_images"] == 400
    assert abs(values["estimated_accuracy"] - batch.accuracy) < 0.04
    assert (
        values["estimated_accuracy_lower"] <= batch.accuracy <= values["estimated_accuracy_upper"]
    )
    assert values["deferral_p_value"] > 0.05
    assert values["drift_p_value"] > 0.05
    assert values["drifted_factors"] == 0
    assert values["expected_deferral_rate"] == reference.expected_deferral_rate
    assert values["batch_noise_sigma_shift"] < 0.002


def test_the_numbers_are_the_parts(result, batch, reference):
    values = result.metrics()
    assert values["average_confidence"] == pytest.approx(batch.probs.max(1).mean())
    assert values["doc_estimated_accuracy"] == pytest.approx(
        reference.val_accuracy - reference.val_confidence + batch.probs.max(1).mean()
    )
    assert values["deferral_rate"] == pytest.approx(np.mean(batch.probs.max(1) < 0.6))
    assert values["prior_shift_tv"] == pytest.approx(
        total_variation(result.priors_em.priors, reference.train_priors)
    )
    preds = batch.probs.argmax(1)
    for k, c in enumerate(result.per_class):
        assert c.n_predicted == np.sum(preds == k)
        assert c.training_prior == reference.train_priors[k]
    eligible = [c.estimated_accuracy for c in result.per_class if c.n_predicted >= MIN_CLASS_IMAGES]
    assert values["worst_class_estimated_accuracy"] == min(eligible)


def test_as_dict_is_strict_json(result):
    text = json.dumps(result.as_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["metrics"].keys() == result.metrics().keys()
    assert back["drift"]["correction"] == "holm"
    assert len(back["classes"]["per_class"]) == 10
    assert len(back["drift"]["factors"]) == 8


def test_it_is_deterministic_for_a_seed(batch, reference):
    a = assess_batch(batch.probs, batch.embeddings, reference, seed=5, **FAST)
    b = assess_batch(batch.probs, batch.embeddings, reference, seed=5, **FAST)
    c = assess_batch(batch.probs, batch.embeddings, reference, seed=6, **FAST)
    assert a.metrics() == b.metrics()
    assert a.bounds()["estimated_accuracy"] != c.bounds()["estimated_accuracy"]


def test_torch_tensors_are_accepted(batch, reference, result):
    t = assess_batch(
        torch.from_numpy(batch.probs), torch.from_numpy(batch.embeddings).float(), reference, **FAST
    )
    assert t.metrics()["estimated_accuracy"] == result.metrics()["estimated_accuracy"]


def test_without_abstention_threshold_or_sigmas_those_metrics_are_nan_with_reasons(
    batch, reference
):
    from dataclasses import replace

    no_abstention = replace(reference, abstention_threshold=math.nan)
    result = assess_batch(batch.probs, batch.embeddings, no_abstention, **FAST)
    values, reasons = result.metrics(), result.not_applicable()
    nan = {k for k, v in values.items() if math.isnan(v)}
    assert (
        nan
        == set(reasons)
        == {
            "deferral_rate",
            "expected_deferral_rate",
            "deferral_p_value",
            "batch_noise_sigma_shift",
        }
    )
    assert reasons["deferral_rate"] == "the model has no abstention threshold"
    assert "no noise levels" in reasons["batch_noise_sigma_shift"]
    assert "deferral_rate" not in result.bounds()
    json.dumps(result.as_dict(), allow_nan=False)


def test_a_known_prior_shift_is_seen(world, reference):
    priors = np.full(10, 0.05)
    priors[3] = 0.55  # class 3 grows from 0.1 to 0.55
    batch = world.sample(1000, np.random.default_rng(12), priors=priors)
    result = assess_batch(batch.probs, batch.embeddings, reference, **FAST)
    assert result.grown_class == "c3"
    realised = np.bincount(batch.targets, minlength=10) / 1000
    true_tv = total_variation(realised, reference.train_priors)
    assert abs(result.metrics()["prior_shift_tv"] - true_tv) < 0.04
    assert result.per_class[3].estimated_prior == pytest.approx(realised[3], abs=0.04)
    # A prior shift moves the embeddings' distribution too.
    assert result.metrics()["drift_p_value"] < 0.05


def test_more_noise_is_seen_by_the_drift_test_the_deferral_test_and_the_estimate(world, reference):
    batch = world.sample(500, np.random.default_rng(13), noise_scale=1.5)
    result = assess_batch(batch.probs, batch.embeddings, reference, **FAST)
    values = result.metrics()
    assert values["drift_p_value"] < 0.05
    assert values["deferral_p_value"] < 0.05
    assert values["drifted_factors"] >= 1
    assert values["estimated_accuracy"] < reference.val_accuracy - 0.05


def test_a_shift_along_one_factor_is_named(world, reference):
    batch = world.sample(500, np.random.default_rng(14))
    direction = reference.factor_components[1]
    moved = batch.embeddings + 1.5 * direction
    probs = world.posterior(moved)
    result = assess_batch(probs, moved, reference, **FAST)
    assert result.most_shifted_factors[0] == 1
    assert 1 in result.drifted_factors


def test_a_class_made_harder_is_the_worst_class(world, reference):
    rng = np.random.default_rng(15)
    batch = world.sample(600, rng)
    x = batch.embeddings.copy()
    hard = batch.targets == 4
    # Pull class 4 halfway to its nearest other class mean.
    d = np.linalg.norm(world.means - world.means[4], axis=1)
    d[4] = np.inf
    x[hard] += 0.5 * (world.means[np.argmin(d)] - world.means[4])
    result = assess_batch(world.posterior(x), x, reference, **FAST)
    worst = min(
        (c for c in result.per_class if c.n_predicted >= MIN_CLASS_IMAGES),
        key=lambda c: c.estimated_accuracy,
    )
    assert worst.name in {"c4", f"c{np.argmin(d)}"}
    assert result.metrics()["worst_class_estimated_accuracy"] == worst.estimated_accuracy


@pytest.mark.parametrize(
    ("probs", "embeddings", "message"),
    [
        (np.full((1, 10), 0.1), np.zeros((1, 16)), "at least 2 images, but got 1"),
        (np.full((5, 9), 1 / 9), np.zeros((5, 16)), "10 columns .* got 9"),
        (np.full((5, 10), 0.2), np.zeros((5, 16)), "sum to 1"),
        (np.full((5, 10), 0.1), np.zeros((5, 15)), "dimension 16 .* got 15"),
        (np.full((5, 10), 0.1), np.zeros((4, 16)), r"one row of `embeddings` per image \(5\)"),
        (np.full((5, 10), 0.1), np.zeros(16), "shape \\(N, D\\)"),
        (np.full((5, 10), np.nan), np.zeros((5, 16)), "finite"),
        (np.full(10, 0.1), np.zeros((1, 16)), "shape \\(N, K\\)"),
    ],
)
def test_invalid_batches_are_refused(reference, probs, embeddings, message):
    with pytest.raises(ValueError, match=message):
        assess_batch(probs, embeddings, reference)


def test_invalid_options_are_refused(batch, reference):
    args = (batch.probs, batch.embeddings, reference)
    for options, message in [
        ({"confidence": 1.0}, "confidence"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"n_permutations": True}, "n_permutations"),
        ({"alpha": 0.0}, "alpha"),
        ({"seed": "a"}, "seed"),
        ({"noise_sigmas": np.array([[0.1]])}, "noise_sigmas"),
    ]:
        with pytest.raises(ValueError, match=message):
            assess_batch(*args, **options)
    with pytest.raises(TypeError, match="MonitoringReference"):
        assess_batch(batch.probs, batch.embeddings, "reference.npz")
    assert isinstance(reference, MonitoringReference)


# ------------------------------------------------------ the drift rule can fire


def repo_policy():
    from tai.check import Stage
    from tai.evaluation.registry import GATED_STAGES, metric_specs
    from tai.gates.policy import load_policy

    return load_policy(
        REPO_ROOT / "tai-policy.yaml",
        metric_specs(stages=GATED_STAGES),
        monitoring_specs=metric_specs(stages=(Stage.MONITORING,)),
    )


def test_the_default_permutations_can_go_below_the_repository_policys_drift_threshold():
    threshold = drift_rule_minimum(repo_policy().monitoring)
    assert threshold is not None, "tai-policy.yaml has no drift_p_value rule"
    # The smallest p-value of the permutation test must be below the rule's minimum, or
    # the drift rule can never alarm (it could not with 500 permutations and 0.001).
    assert 1 / (1 + DEFAULT_N_PERMUTATIONS) < threshold
    assert 1 / (1 + drift_permutations(None, threshold)) < threshold


def test_a_drifted_batch_fails_the_repository_policys_drift_rule(world, reference):
    threshold = drift_rule_minimum(repo_policy().monitoring)
    batch = world.sample(300, np.random.default_rng(16), noise_scale=2.0)
    result = assess_batch(
        batch.probs,
        batch.embeddings,
        reference,
        n_resamples=100,
        drift_p_min=threshold,
        max_samples=200,
    )
    assert result.drift.n_permutations == DEFAULT_N_PERMUTATIONS
    assert result.metrics()["drift_p_value"] == 1 / (1 + DEFAULT_N_PERMUTATIONS) < threshold


def test_a_stricter_threshold_gets_more_permutations(world, reference):
    batch = world.sample(100, np.random.default_rng(17), noise_scale=2.0)
    result = assess_batch(
        batch.probs, batch.embeddings, reference, n_resamples=50, drift_p_min=1e-4, max_samples=60
    )
    assert result.drift.n_permutations == 20_000 == MAX_N_PERMUTATIONS
    assert result.drift.p_value < 1e-4
    assert drift_permutations(None, 0.05) == DEFAULT_N_PERMUTATIONS  # never fewer
    assert drift_permutations(None, None) == DEFAULT_N_PERMUTATIONS
    assert drift_permutations(300, None) == 300
    assert drift_permutations(300, 0.01) == 300  # 1/301 < 0.01


def test_a_quiet_batch_stops_the_drift_test_early_at_no_less_than_the_threshold(batch, reference):
    # In distribution the MMD test stops at MMD_STOP_AFTER relabellings as extreme as the
    # batch, or at B * drift_p_min when that is more (so that stopping never changes an
    # alarm); its p-value is then that count over the relabellings drawn.
    for n_permutations, drift_p_min, stop in ((2000, None, 20), (5000, 0.01, 50)):
        result = assess_batch(
            batch.probs,
            batch.embeddings,
            reference,
            n_resamples=50,
            n_permutations=n_permutations,
            drift_p_min=drift_p_min,
        )
        drift = result.drift
        assert drift.stopped_after == stop == max(MMD_STOP_AFTER, stop)
        assert drift.n_permutations < n_permutations
        assert drift.p_value == stop / drift.n_permutations > (drift_p_min or 0)


def test_the_monitoring_report_says_when_the_drift_test_stopped(batch, world, reference):
    from tai.gates.decision import GateDecision
    from tai.report.monitoring_report import MonitoringContext, render_monitoring_report

    context = MonitoringContext("m", "1", "b", 400, "now", GateDecision(()))
    quiet = assess_batch(batch.probs, batch.embeddings, reference, n_resamples=50)
    page = render_monitoring_report(quiet, context)
    stopped = quiet.drift
    assert (
        f"({stopped.n_permutations} relabellings, stopped once 20 were as extreme as the "
        "batch: the sequential p-value of Besag and Clifford 1991)" in page
    )
    shifted = world.sample(400, np.random.default_rng(3), noise_scale=2.0)
    drifted = assess_batch(shifted.probs, shifted.embeddings, reference, n_resamples=50)
    assert drifted.drift.stopped_after is None
    assert f"({drifted.drift.n_permutations} relabellings)." in render_monitoring_report(
        drifted, context
    )


@pytest.mark.parametrize(
    ("n_permutations", "drift_p_min", "message"),
    [
        (500, 0.001, r"at least 1/501 = 0.002, never below .* 0.001: use at least 2000"),
        (None, 1e-5, "needs 200000 MMD permutations, more than 20000"),
        (None, 0.0, "p-value threshold"),
        (0, None, "n_permutations"),
    ],
)
def test_a_drift_threshold_the_test_cannot_reach_is_refused(
    batch, reference, n_permutations, drift_p_min, message
):
    with pytest.raises(ValueError, match=message):
        assess_batch(
            batch.probs,
            batch.embeddings,
            reference,
            n_permutations=n_permutations,
            drift_p_min=drift_p_min,
        )


def test_drift_rule_minimum_reads_the_min_rules_of_drift_p_value():
    from tai.gates.policy import Gate

    rules = [
        Gate("drift_p_value", "min", 0.01),
        Gate("deferral_p_value", "min", 0.0001),
        Gate("drift_p_value", "min", 0.002),
    ]
    assert drift_rule_minimum(rules) == 0.002
    assert drift_rule_minimum(rules[1:2]) is None


def test_the_deferral_test_is_fishers_against_the_validation_count(result, batch, reference):
    d = int(np.sum(batch.probs.max(1) < reference.abstention_threshold))
    d0 = round(reference.expected_deferral_rate * reference.n_val)
    assert result.deferral.method == "fisher"
    assert (result.deferral.n_reference, result.deferral.n_reference_deferred) == (
        reference.n_val,
        d0,
    )
    expected = fisher_exact([[d, len(batch.probs) - d], [d0, reference.n_val - d0]]).pvalue
    assert result.metrics()["deferral_p_value"] == pytest.approx(expected, rel=1e-12)
