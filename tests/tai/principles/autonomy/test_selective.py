"""Selective prediction against hand-computed curves, the oracle AURC's limit, brute-force
threshold searches, and torch-uncertainty's AURC, RiskAtxCov and CovAtxRisk."""

from __future__ import annotations

import doctest
import math
import re

import numpy as np
import pytest
import torch
from torch_uncertainty.metrics.classification import AURC, CovAtxRisk, RiskAtxCov

from tai.principles.autonomy.selective import (
    RiskCoverage,
    SelectiveMetrics,
    SelectiveReport,
    abstention_threshold,
    risk_coverage,
    selective_metrics,
    selective_report,
)

# Confidences 0.9, 0.8, 0.7, 0.6, 0.55 (float64, so exact); the 2nd and the 5th are wrong.
FIVE_PROBS = torch.tensor(
    [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]], dtype=torch.float64
)
FIVE_TARGETS = torch.tensor([0, 1, 0, 0, 1])


def _binary(confidence, wrong) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class probabilities with top-label confidence ``confidence`` on class 0; the
    target is class 1 where ``wrong``."""
    confidence = torch.as_tensor(confidence, dtype=torch.float64)
    probs = torch.stack([confidence, 1 - confidence], dim=1)
    return probs, torch.as_tensor(wrong).long()


def _random_case(seed: int, n: int = 500, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, classes, generator=g, dtype=torch.float64)
    # Targets agree with the arg-max more often when it is confident, as for a real model.
    target = torch.where(
        torch.rand(n, generator=g, dtype=torch.float64) < logits.softmax(1).max(1).values,
        logits.argmax(1),
        torch.randint(0, classes, (n,), generator=g),
    )
    return logits.softmax(dim=1), target


# --------------------------------------------------------------------- hand-computed cases


def test_five_sample_curve_aurc_and_e_aurc_equal_hand_computed_values():
    curve = risk_coverage(FIVE_PROBS, FIVE_TARGETS)
    assert curve.coverage == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-12)
    assert curve.risk == pytest.approx([0, 1 / 2, 1 / 3, 1 / 4, 2 / 5], abs=1e-12)
    assert curve.confidence == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.55], abs=1e-12)
    aurc = (0 + 1 / 2 + 1 / 3 + 1 / 4 + 2 / 5) / 5
    optimal = (1 / 4 + 2 / 5) / 5  # oracle: three correct first, then the two errors
    assert curve.aurc == pytest.approx(aurc, abs=1e-12)
    assert curve.optimal_aurc == pytest.approx(optimal, abs=1e-12)
    assert curve.e_aurc == pytest.approx(aurc - optimal, abs=1e-12)
    assert curve.error_rate == pytest.approx(0.4) and curve.n_samples == 5


def test_risk_at_coverage_takes_the_smallest_rank_reaching_the_coverage():
    curve = risk_coverage(FIVE_PROBS, FIVE_TARGETS)
    assert curve.risk_at_coverage(0.2) == 0.0
    assert curve.risk_at_coverage(0.3) == pytest.approx(1 / 2)  # ceil(1.5) = 2
    assert curve.risk_at_coverage(0.6) == pytest.approx(1 / 3)
    assert curve.risk_at_coverage(1.0) == pytest.approx(2 / 5)
    assert curve.risk_at_coverage(1e-9) == 0.0


def test_risk_at_coverage_ignores_rounding_noise_in_coverage_times_n():
    curve = risk_coverage(*_random_case(seed=11, n=100))
    assert 0.07 * 100 > 7  # 7.000000000000001: a plain ceil would take k = 8
    assert curve.risk_at_coverage(0.07) == curve.risk[6]
    assert curve.risk_at_coverage(0.071) == curve.risk[7]


def test_tied_confidences_spread_their_errors_evenly():
    # 0.7 twice, one of them wrong: at k = 2 half an error is expected among 2 samples.
    probs, targets = _binary([0.9, 0.7, 0.7, 0.6], [0, 1, 0, 1])
    curve = risk_coverage(probs, targets)
    assert curve.risk == pytest.approx([0, 0.5 / 2, 1 / 3, 2 / 4], abs=1e-12)
    swapped = risk_coverage(*_binary([0.9, 0.7, 0.7, 0.6], [0, 0, 1, 1]))
    assert swapped.risk == curve.risk


def test_curve_does_not_depend_on_input_order():
    probs, targets = _random_case(seed=3, n=300)
    probs = probs.round(decimals=1)  # many ties
    probs = probs / probs.sum(dim=1, keepdim=True)
    curve = risk_coverage(probs, targets)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    permuted = risk_coverage(probs[perm], targets[perm])
    assert permuted.risk == pytest.approx(curve.risk, abs=1e-12)
    assert permuted.aurc == pytest.approx(curve.aurc, abs=1e-12)


def test_constant_confidence_gives_a_flat_curve_at_the_error_rate():
    probs, targets = _binary([0.6] * 10, [1, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    curve = risk_coverage(probs, targets)
    assert curve.risk == pytest.approx([0.3] * 10, abs=1e-12)
    assert curve.aurc == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aurc_is_the_mean_of_the_curve(seed):
    curve = risk_coverage(*_random_case(seed))
    assert curve.aurc == pytest.approx(float(np.mean(curve.risk)), abs=1e-12)
    assert curve.risk[-1] == pytest.approx(curve.error_rate, abs=1e-12)


def test_e_aurc_is_zero_for_a_perfect_ranking():
    # Every correct sample more confident than every error, with ties inside each group.
    probs, targets = _binary([0.95, 0.9, 0.9, 0.8, 0.7, 0.6, 0.6, 0.55], [0, 0, 0, 0, 0, 1, 1, 1])
    curve = risk_coverage(probs, targets)
    assert curve.e_aurc == pytest.approx(0.0, abs=1e-12)
    assert curve.aurc == pytest.approx(curve.optimal_aurc, abs=1e-12)
    assert curve.aurc > 0


def test_e_aurc_is_zero_when_there_are_no_errors_and_positive_for_a_reversed_ranking():
    assert risk_coverage(*_binary([0.9, 0.8, 0.7], [0, 0, 0])).e_aurc == 0.0
    reversed_curve = risk_coverage(*_binary([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0]))
    assert reversed_curve.aurc == pytest.approx((1 + 1 + 2 / 3 + 2 / 4) / 4)
    assert reversed_curve.e_aurc == pytest.approx(reversed_curve.aurc - (1 / 3 + 2 / 4) / 4)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_finite_sample_optimal_aurc_tends_to_the_papers_formula(rate):
    n = 100_000
    n_errors = int(rate * n)
    wrong = np.zeros(n, dtype=np.int64)
    wrong[n - n_errors :] = 1
    probs, targets = _binary(np.linspace(0.99, 0.51, n), wrong)
    curve = risk_coverage(probs, targets)
    limit = rate + (1 - rate) * math.log(1 - rate)  # Geifman et al. 2019
    assert curve.optimal_aurc == pytest.approx(limit, abs=1e-5)
    # The sum exceeds the integral by rate / (2N) + O(1/N^2) (H_n = ln n + gamma + 1/(2n)).
    assert curve.optimal_aurc - limit == pytest.approx(rate / (2 * n), rel=1e-2)
    assert curve.aurc == pytest.approx(curve.optimal_aurc, abs=1e-12)  # oracle-ranked


# --------------------------------------------------------------------- reference: torch-uncertainty


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_and_aurc_match_torch_uncertainty_without_ties(seed):
    probs, targets = _random_case(seed)
    n = probs.shape[0]
    assert probs.max(dim=1).values.unique().numel() == n  # no ties: the definitions agree
    metric = AURC()
    metric.update(probs, targets)
    reference_risk = metric.partial_compute().numpy()
    curve = risk_coverage(probs, targets)
    np.testing.assert_allclose(curve.risk, reference_risk, rtol=0, atol=1e-12)
    # torch-uncertainty integrates with the trapezoid rule over k/N, k = 1..N, and
    # divides by 1 - 1/N; undo both to get the mean of the curve.
    trapezoid = metric.compute().item() * (1 - 1 / n)
    mean = trapezoid + (reference_risk[0] + reference_risk[-1]) / (2 * n)
    assert curve.aurc == pytest.approx(mean, abs=1e-6)


@pytest.mark.parametrize("coverage", [0.1, 0.5, 0.8, 0.95, 1.0])
def test_risk_at_coverage_matches_torch_uncertainty(coverage):
    probs, targets = _random_case(seed=4)
    metric = RiskAtxCov(cov_threshold=coverage)
    metric.update(probs, targets)
    curve = risk_coverage(probs, targets)
    assert curve.risk_at_coverage(coverage) == pytest.approx(metric.compute().item(), abs=1e-12)


@pytest.mark.parametrize("max_risk", [0.05, 0.1, 0.2, 0.3])
def test_max_risk_threshold_coverage_matches_torch_uncertainty(max_risk):
    probs, targets = _random_case(seed=5)
    metric = CovAtxRisk(risk_threshold=max_risk)
    metric.update(probs, targets)
    threshold = abstention_threshold(probs, targets, max_risk=max_risk)
    coverage = selective_metrics(probs, targets, threshold).coverage
    assert coverage == pytest.approx(metric.compute().item(), abs=1e-6)


# --------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("rounded", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("target", [0.01, 0.25, 0.5, 0.8, 0.9, 0.999, 1.0])
def test_coverage_threshold_reaches_the_target_on_validation_and_is_the_largest(target, rounded):
    probs, targets = _random_case(seed=6, n=400)
    if rounded:
        probs = probs.round(decimals=2)
        probs = probs / probs.sum(dim=1, keepdim=True)
    threshold = abstention_threshold(probs, targets, target_coverage=target)
    confidence = probs.max(dim=1).values
    assert float((confidence >= threshold).double().mean()) >= target
    higher = confidence[confidence > threshold]
    if higher.numel():  # the next larger confidence misses the target
        assert float((confidence >= higher.min()).double().mean()) < target


@pytest.mark.parametrize("max_risk", [0.0, 0.05, 0.15, 0.3, 1.0])
def test_risk_threshold_is_the_lowest_within_the_risk(max_risk):
    probs, targets = _random_case(seed=7, n=300)
    confidence = probs.max(dim=1).values.numpy()
    wrong = (probs.argmax(dim=1) != targets).numpy()
    # Brute force: the risk of every candidate threshold.
    candidates = [v for v in np.unique(confidence) if wrong[confidence >= v].mean() <= max_risk]
    expected = min(candidates) if candidates else math.inf
    threshold = abstention_threshold(probs, targets, max_risk=max_risk)
    assert threshold == expected
    result = selective_metrics(probs, targets, threshold)
    if candidates:
        assert result.selective_risk <= max_risk
    if max_risk == 1.0:
        assert result.coverage == 1.0


def test_unreachable_max_risk_abstains_on_everything():
    # The most confident sample is wrong: no threshold has risk 0.
    probs, targets = _binary([0.9, 0.8, 0.7], [1, 0, 0])
    threshold = abstention_threshold(probs, targets, max_risk=0.0)
    assert threshold == math.inf
    result = selective_metrics(probs, targets, threshold)
    assert result.coverage == 0.0 and result.n_accepted == 0
    assert math.isnan(result.selective_risk)


def test_selective_metrics_equal_hand_computed_values():
    result = selective_metrics(FIVE_PROBS, FIVE_TARGETS, 0.6)
    assert isinstance(result, SelectiveMetrics)
    assert (result.coverage, result.n_accepted, result.n_samples) == (0.8, 4, 5)
    assert result.selective_risk == pytest.approx(1 / 4)
    assert selective_metrics(FIVE_PROBS, FIVE_TARGETS, 0.0).selective_risk == pytest.approx(0.4)
    assert result.as_dict() == {
        "abstention_threshold": 0.6,
        "coverage_at_threshold": 0.8,
        "selective_risk_at_threshold": 0.25,
    }


def test_threshold_fitted_on_validation_is_applied_to_test():
    probs_val, targets_val = _random_case(seed=8, n=1000)
    probs_test, targets_test = _random_case(seed=9, n=1000)
    report = selective_report(probs_val, targets_val, probs_test, targets_test, target_coverage=0.7)
    assert isinstance(report, SelectiveReport)
    threshold = abstention_threshold(probs_val, targets_val, target_coverage=0.7)
    assert report.at_threshold == selective_metrics(probs_test, targets_test, threshold)
    assert report.curve == risk_coverage(probs_test, targets_test)
    assert report.risk_at_coverage == report.curve.risk_at_coverage(0.8)
    assert report.report_coverage == 0.8 and isinstance(report.report_coverage, float)
    # Same distribution: within the two DKW bounds, 2 * sqrt(ln(2 / 0.05) / 2000) = 0.086.
    assert report.at_threshold.coverage == pytest.approx(0.7, abs=0.086)
    d = report.as_dict()
    assert list(d) == [
        "aurc",
        "e_aurc",
        "risk_at_coverage",
        "abstention_threshold",
        "coverage_at_threshold",
        "selective_risk_at_threshold",
    ]
    assert all(isinstance(v, float) for v in d.values())

    by_risk = selective_report(
        probs_val, targets_val, probs_test, targets_test, max_risk=0.1, report_coverage=0.5
    )
    assert by_risk.at_threshold.threshold == abstention_threshold(
        probs_val, targets_val, max_risk=0.1
    )
    assert by_risk.risk_at_coverage == by_risk.curve.risk_at_coverage(0.5)
    assert by_risk.report_coverage == 0.5
    assert selective_report(
        probs_val, targets_val, probs_test, targets_test, max_risk=0.1, report_coverage=1
    ).report_coverage == pytest.approx(1.0)


def test_numpy_inputs_give_the_same_results_as_tensors():
    probs, targets = _random_case(seed=10, n=50)
    assert risk_coverage(probs.numpy(), targets.numpy()) == risk_coverage(probs, targets)
    assert abstention_threshold(
        probs.numpy(), targets.numpy(), target_coverage=0.5
    ) == abstention_threshold(probs, targets, target_coverage=0.5)


def test_float32_probabilities_are_accepted():
    curve = risk_coverage(FIVE_PROBS.float(), FIVE_TARGETS)
    assert isinstance(curve, RiskCoverage)
    assert curve.aurc == pytest.approx(risk_coverage(FIVE_PROBS, FIVE_TARGETS).aurc)


# --------------------------------------------------------------------- invalid input


@pytest.mark.parametrize("value", [1.5, 0, 0.0, -0.2, math.nan, True, "0.9"])
def test_target_coverage_outside_the_unit_interval_is_rejected(value):
    message = rf"target coverage must be in \(0, 1\]; got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=message):
        abstention_threshold(FIVE_PROBS, FIVE_TARGETS, target_coverage=value)
    with pytest.raises(ValueError, match=message):
        risk_coverage(FIVE_PROBS, FIVE_TARGETS).risk_at_coverage(value)


def test_target_coverage_message_names_the_value():
    with pytest.raises(ValueError, match=r"^target coverage must be in \(0, 1\]; got 1\.5\."):
        abstention_threshold(FIVE_PROBS, FIVE_TARGETS, target_coverage=1.5)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, False])
def test_max_risk_outside_the_unit_interval_is_rejected(value):
    with pytest.raises(ValueError, match=r"max_risk must be in \[0, 1\]; got"):
        abstention_threshold(FIVE_PROBS, FIVE_TARGETS, max_risk=value)


@pytest.mark.parametrize(
    "kwargs", [{}, {"target_coverage": 0.9, "max_risk": 0.1}], ids=["neither", "both"]
)
def test_exactly_one_of_target_coverage_and_max_risk(kwargs):
    with pytest.raises(ValueError, match="exactly one of `target_coverage` and `max_risk`"):
        abstention_threshold(FIVE_PROBS, FIVE_TARGETS, **kwargs)
    with pytest.raises(ValueError, match="exactly one of `target_coverage` and `max_risk`"):
        selective_report(FIVE_PROBS, FIVE_TARGETS, FIVE_PROBS, FIVE_TARGETS, **kwargs)


def test_report_coverage_outside_the_unit_interval_is_rejected():
    with pytest.raises(ValueError, match=r"report coverage must be in \(0, 1\]; got 0"):
        selective_report(
            FIVE_PROBS, FIVE_TARGETS, FIVE_PROBS, FIVE_TARGETS, max_risk=0.1, report_coverage=0
        )


@pytest.mark.parametrize("value", [math.nan, "0.5", None])
def test_selective_metrics_rejects_a_threshold_that_is_not_a_number(value):
    with pytest.raises(ValueError, match="`threshold` to be a real number"):
        selective_metrics(FIVE_PROBS, FIVE_TARGETS, value)


BAD_INPUTS = [
    pytest.param(torch.empty(0, 2), torch.empty(0, dtype=torch.long), "empty `probs`", id="empty"),
    pytest.param(np.empty((0, 3)), np.empty(0, dtype=np.int64), "empty `probs`", id="empty-np"),
    pytest.param(
        torch.tensor([[math.nan, 0.5], [0.5, 0.5]]), torch.tensor([0, 1]), "NaN", id="nan"
    ),
    pytest.param(
        torch.tensor([[0.6, 0.6], [0.5, 0.5]]), torch.tensor([0, 1]), "sum to 1", id="row-sum"
    ),
    pytest.param(torch.tensor([[2.0, -1.0]]), torch.tensor([0]), "softmax", id="logits"),
    pytest.param(FIVE_PROBS, FIVE_TARGETS[:3], "same number of samples", id="length"),
    pytest.param(FIVE_PROBS, FIVE_TARGETS.float(), "integer tensor", id="float-targets"),
    pytest.param(FIVE_PROBS[:, 0], FIVE_TARGETS, r"shape \(N, C\)", id="1d-probs"),
]


@pytest.mark.parametrize(("probs", "targets", "message"), BAD_INPUTS)
def test_invalid_inputs_raise_value_error(probs, targets, message):
    with pytest.raises(ValueError, match=message):
        risk_coverage(probs, targets)
    with pytest.raises(ValueError, match=message):
        abstention_threshold(probs, targets, target_coverage=0.5)
    with pytest.raises(ValueError, match=message):
        selective_metrics(probs, targets, 0.5)


def test_docstring_examples_hold():
    import tai.principles.autonomy.selective as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_abstaining_on_everything_gives_nan_risk_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would fail the test
        none = selective_metrics(FIVE_PROBS, FIVE_TARGETS, math.inf)
    assert (none.coverage, none.n_accepted, none.n_samples) == (0.0, 0, 5)
    assert math.isnan(none.selective_risk)


@pytest.mark.parametrize("threshold", [math.nan, "0.5", None])
def test_a_threshold_that_is_not_a_real_number_is_refused_in_full(threshold):
    with pytest.raises(ValueError) as refused:
        selective_metrics(FIVE_PROBS, FIVE_TARGETS, threshold)
    assert str(refused.value) == (
        f"Expected `threshold` to be a real number, but got {threshold!r}. Pass the value "
        "returned by abstention_threshold()."
    )


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as refused:
        fn(*args, **kwargs)
    return str(refused.value)


def test_validation_messages_say_what_to_pass_in_full():
    assert _message(abstention_threshold, FIVE_PROBS, FIVE_TARGETS, target_coverage=1.5) == (
        "target coverage must be in (0, 1]; got 1.5. Pass the fraction of samples the model "
        "should answer itself, e.g. 0.9."
    )
    assert _message(abstention_threshold, FIVE_PROBS, FIVE_TARGETS, max_risk=-0.1) == (
        "max_risk must be in [0, 1]; got -0.1. Pass the largest error rate acceptable on the "
        "answered samples, e.g. 0.05."
    )
    assert _message(abstention_threshold, FIVE_PROBS, FIVE_TARGETS) == (
        "Expected exactly one of `target_coverage` and `max_risk`, but got "
        "target_coverage=None and max_risk=None. Pass target_coverage to answer a fixed "
        "fraction of samples, or max_risk to answer as many as possible within an error rate."
    )
    empty = "Expected at least one sample, but got an empty `probs` (N = 0). Selective risk "
    empty += "and coverage are undefined without predictions; check the data loader."
    assert _message(risk_coverage, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == empty
    assert _message(risk_coverage, np.zeros((0, 3)), np.zeros(0, dtype=int)) == empty
    # A 1-D empty tensor is empty too (N = 0), not a shape error.
    assert _message(risk_coverage, torch.zeros(0), torch.zeros(0, dtype=torch.long)) == empty


def test_lists_are_not_accepted_as_probabilities():
    """Only tensors and numpy arrays are converted: a list is refused by the validation."""
    with pytest.raises(ValueError, match="Expected `probs` and `target` to be torch tensors"):
        risk_coverage(FIVE_PROBS.tolist(), FIVE_TARGETS)
    with pytest.raises(ValueError, match="Expected `probs` and `target` to be torch tensors"):
        risk_coverage(FIVE_PROBS, FIVE_TARGETS.tolist())


def test_target_coverage_rounding_noise_is_ignored_but_not_more():
    from tai.principles.autonomy.selective import _rank_for_coverage

    assert _rank_for_coverage(0.7, 10) == 7  # 0.7 * 10 = 7.000000000000001
    assert _rank_for_coverage(0.3000000001, 10) == 4  # 3.000000001: a real excess
    assert _rank_for_coverage(0.300000000006, 10) == 3  # below 1e-9 of excess: noise
    assert _rank_for_coverage(1e-12, 10) == 1
    assert _rank_for_coverage(1.0, 10) == 10
