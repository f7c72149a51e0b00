"""Calibration metrics against torchmetrics, netcal, torch's NLL, numpy and hand-computed cases."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError
from torchmetrics.functional.classification import multiclass_calibration_error

from tai.principles.reliability.calibration import (
    CalibrationResult,
    ReliabilityBins,
    adaptive_calibration_error,
    brier_score,
    calibration_report,
    calibration_summary,
    classwise_calibration_error,
    ece_confidence_interval,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)

# Five samples, two classes: bin [0.8, 1] holds confidences 0.9 (2 of 3 correct),
# bin [0.6, 0.8) holds confidences 0.7 (1 of 2 correct).
FIVE_PROBS = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
FIVE_TARGET = torch.tensor([0, 1, 1, 0, 0])


def _random_case(seed: int, n: int = 500, classes: int = 10, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # Scale 3 gives confidences over the whole range but never a saturated 1.0.
    logits = 3 * torch.randn(n, classes, generator=g, dtype=dtype)
    target = torch.randint(0, classes, (n,), generator=g)
    return logits.softmax(dim=1), target


# --------------------------------------------------------------------- reference: torchmetrics


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [1, 5, 15, 40])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_calibration_error_matches_torchmetrics_functional(seed, n_bins, norm):
    probs, target = _random_case(seed)
    assert probs.max(dim=1).values.lt(1).all()
    expected = multiclass_calibration_error(probs, target, num_classes=10, n_bins=n_bins, norm=norm)
    actual = expected_calibration_error(probs, target, n_bins=n_bins, norm=norm)
    assert actual == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("norm", ["l1", "max"])
def test_calibration_error_matches_torchmetrics_module_over_batches(norm):
    probs, target = _random_case(seed=7, n=900, classes=4)
    metric = MulticlassCalibrationError(num_classes=4, n_bins=15, norm=norm)
    for chunk in range(3):
        metric.update(
            probs[chunk * 300 : (chunk + 1) * 300], target[chunk * 300 : (chunk + 1) * 300]
        )
    assert expected_calibration_error(probs, target, norm=norm) == pytest.approx(
        metric.compute().item(), abs=1e-6
    )


def test_calibration_error_of_float64_probabilities_matches_torchmetrics():
    probs, target = _random_case(seed=3, dtype=torch.float64)
    expected = multiclass_calibration_error(probs, target, num_classes=10, n_bins=15)
    assert expected_calibration_error(probs, target) == pytest.approx(expected.item(), abs=1e-6)


def test_summary_ece_and_mce_equal_the_functional_metric():
    probs, target = _random_case(seed=5)
    result = calibration_summary(probs, target, n_bins=10)
    assert result.ece == expected_calibration_error(probs, target, n_bins=10, norm="l1")
    assert result.mce == expected_calibration_error(probs, target, n_bins=10, norm="max")


# --------------------------------------------------------------------- hand-computed cases


def test_ece_is_zero_for_perfect_calibration():
    # Confidence 0.75 with 3 of 4 correct, confidence 0.5 with 1 of 2 correct.
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.5, 0.5]] * 2, dtype=torch.float64)
    target = torch.tensor([0, 0, 0, 1, 0, 1])
    assert expected_calibration_error(probs, target, n_bins=10) == 0.0
    assert expected_calibration_error(probs, target, n_bins=10, norm="max") == 0.0
    assert expected_calibration_error(probs, target, n_bins=10, norm="l2") == 0.0


def test_ece_on_five_samples_equals_hand_computed_value():
    gap_high, gap_low = abs(2 / 3 - 0.9), abs(1 / 2 - 0.7)
    ece = 3 / 5 * gap_high + 2 / 5 * gap_low
    rmsce = math.sqrt(3 / 5 * gap_high**2 + 2 / 5 * gap_low**2)
    assert ece == pytest.approx(0.22)
    assert expected_calibration_error(FIVE_PROBS, FIVE_TARGET, n_bins=5) == pytest.approx(
        ece, abs=1e-6
    )
    assert expected_calibration_error(
        FIVE_PROBS, FIVE_TARGET, n_bins=5, norm="l2"
    ) == pytest.approx(rmsce, abs=1e-6)
    assert expected_calibration_error(
        FIVE_PROBS, FIVE_TARGET, n_bins=5, norm="max"
    ) == pytest.approx(gap_high, abs=1e-6)


def test_ece_with_one_bin_is_gap_between_accuracy_and_mean_confidence():
    probs, target = _random_case(seed=11)
    confidence, prediction = probs.max(dim=1)
    accuracy = prediction.eq(target).double().mean()
    expected = (accuracy - confidence.double().mean()).abs().item()
    assert expected_calibration_error(probs, target, n_bins=1) == pytest.approx(expected, abs=1e-6)


def test_confidence_of_exactly_one_falls_in_the_last_bin():
    # torchmetrics 1.9 puts 1.0 in a hidden extra bin (torchmetrics#3510) and gives 0.525;
    # with the last bin closed both samples share it: |1/2 - 0.975| = 0.475.
    probs = torch.tensor([[1.0, 0.0], [0.95, 0.05]], dtype=torch.float64)
    target = torch.tensor([1, 0])
    bins = reliability_bins(probs, target, n_bins=10)
    assert bins.count[-1] == 2
    assert expected_calibration_error(probs, target, n_bins=10) == pytest.approx(0.475)


def test_reliability_bins_have_counts_means_and_edges():
    bins = reliability_bins(FIVE_PROBS, FIVE_TARGET, n_bins=5)
    assert isinstance(bins, ReliabilityBins)
    assert bins.n_bins == 5
    assert bins.edges == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins.count == [0, 0, 0, 2, 3]
    assert bins.confidence == pytest.approx([0, 0, 0, 0.7, 0.9])
    assert bins.accuracy == pytest.approx([0, 0, 0, 0.5, 2 / 3])
    assert all(isinstance(c, int) for c in bins.count)


def test_reliability_bin_counts_sum_to_the_number_of_samples():
    probs, target = _random_case(seed=2, n=321)
    bins = reliability_bins(probs, target, n_bins=15)
    assert sum(bins.count) == 321
    assert len(bins.edges) == 16 and len(bins.confidence) == len(bins.accuracy) == 15
    for lo, hi, conf, count in zip(
        bins.edges[:-1], bins.edges[1:], bins.confidence, bins.count, strict=True
    ):
        if count:
            assert lo <= conf <= hi


def test_nll_equals_torch_nll_loss_of_log_probabilities():
    probs, target = _random_case(seed=4)
    expected = F.nll_loss(probs.double().log(), target).item()
    assert calibration_summary(probs, target).nll == pytest.approx(expected, rel=1e-6)


def test_nll_is_finite_when_the_target_has_probability_zero():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    nll = calibration_summary(probs, torch.tensor([1, 0])).nll
    assert math.isfinite(nll) and nll > 40


def test_brier_equals_hand_computed_value():
    # Per sample sum_c (p_c - y_c)^2: 0.02, 1.62, 0.02, 0.18, 0.98.
    result = calibration_summary(FIVE_PROBS, FIVE_TARGET, n_bins=5)
    assert result.brier == pytest.approx((0.02 + 1.62 + 0.02 + 0.18 + 0.98) / 5, abs=1e-6)


def test_brier_is_zero_for_confident_correct_predictions_and_two_for_confident_wrong():
    onehot = torch.eye(3)
    assert calibration_summary(onehot, torch.tensor([0, 1, 2])).brier == 0.0
    assert calibration_summary(onehot, torch.tensor([1, 2, 0])).brier == pytest.approx(2.0)


def test_summary_reports_accuracy_sample_count_and_scalar_dict():
    result = calibration_summary(FIVE_PROBS, FIVE_TARGET, n_bins=5)
    assert isinstance(result, CalibrationResult)
    assert result.accuracy == pytest.approx(0.6)
    assert result.n_samples == 5
    assert result.bins == reliability_bins(FIVE_PROBS, FIVE_TARGET, n_bins=5)
    assert set(result.as_dict()) == {"ece", "mce", "nll", "brier"}
    assert all(isinstance(v, float) for v in result.as_dict().values())


# --------------------------------------------------------------------- invalid input

BAD_INPUTS = [
    pytest.param(torch.empty(0, 3), torch.empty(0, dtype=torch.long), "empty batch", id="empty"),
    pytest.param(
        torch.full((4,), 0.5), torch.zeros(4, dtype=torch.long), r"shape \(N, C\)", id="probs-1d"
    ),
    pytest.param(FIVE_PROBS, FIVE_TARGET[:, None], r"shape \(N,\)", id="target-2d"),
    pytest.param(FIVE_PROBS, FIVE_TARGET[:4], "same number of samples", id="length-mismatch"),
    pytest.param(
        torch.ones(5, 1), torch.zeros(5, dtype=torch.long), "at least 2 classes", id="one-class"
    ),
    pytest.param(
        torch.tensor([[1, 0], [0, 1]]), torch.tensor([0, 1]), "floating point", id="int-probs"
    ),
    pytest.param(FIVE_PROBS, FIVE_TARGET.float(), "integer tensor", id="float-target"),
    pytest.param(
        torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]),
        torch.tensor([0, 1]),
        "NaN or inf",
        id="nan",
    ),
    pytest.param(
        torch.tensor([[float("inf"), 0.5], [0.5, 0.5]]),
        torch.tensor([0, 1]),
        "NaN or inf",
        id="inf",
    ),
    pytest.param(
        torch.tensor([[1.5, -0.5], [0.5, 0.5]]),
        torch.tensor([0, 1]),
        r"in \[0, 1\].*softmax",
        id="logits",
    ),
    pytest.param(
        torch.tensor([[0.6, 0.6], [0.5, 0.5]]),
        torch.tensor([0, 1]),
        "sum to 1.*softmax",
        id="row-sum",
    ),
    pytest.param(
        FIVE_PROBS, torch.tensor([0, 1, 2, 0, 0]), r"values in \[0, 2\)", id="target-too-large"
    ),
    pytest.param(
        FIVE_PROBS, torch.tensor([0, -1, 1, 0, 0]), r"values in \[0, 2\)", id="target-negative"
    ),
]


ALL_METRICS = [
    expected_calibration_error,
    reliability_bins,
    calibration_summary,
    adaptive_calibration_error,
    classwise_calibration_error,
    ece_confidence_interval,
    calibration_report,
]


@pytest.mark.parametrize(("probs", "target", "message"), BAD_INPUTS)
@pytest.mark.parametrize("fn", ALL_METRICS)
def test_invalid_tensors_raise_value_error(fn, probs, target, message):
    with pytest.raises(ValueError, match=message):
        fn(probs, target)


def test_rows_within_tolerance_of_one_are_accepted():
    probs = torch.tensor([[0.6004, 0.4], [0.5, 0.5]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) >= 0


def test_probabilities_passed_as_list_raise_value_error():
    with pytest.raises(ValueError, match="torch tensors"):
        expected_calibration_error([[0.5, 0.5]], torch.tensor([0]))


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
@pytest.mark.parametrize("fn", ALL_METRICS)
def test_invalid_n_bins_raises_value_error(fn, n_bins):
    with pytest.raises(ValueError, match=r"`n_bins` to be an integer >= 1, but got"):
        fn(FIVE_PROBS, FIVE_TARGET, n_bins=n_bins)


@pytest.mark.parametrize("fn", [expected_calibration_error, adaptive_calibration_error])
def test_unknown_norm_names_the_allowed_values_and_the_value_received(fn):
    with pytest.raises(ValueError, match=r"one of \('l1', 'l2', 'max'\), but got 'l3'"):
        fn(FIVE_PROBS, FIVE_TARGET, norm="l3")


@pytest.mark.parametrize("n_boot", [0, -1, 2.5, True])
@pytest.mark.parametrize("fn", [ece_confidence_interval, calibration_report])
def test_invalid_n_boot_raises_value_error(fn, n_boot):
    with pytest.raises(ValueError, match=r"`n_boot` to be an integer >= 1, but got"):
        fn(FIVE_PROBS, FIVE_TARGET, n_boot=n_boot)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, float("nan"), "0.9", True])
def test_level_outside_the_open_unit_interval_raises_value_error(level):
    with pytest.raises(ValueError, match=r"`level` to be a float in the open interval \(0, 1\)"):
        ece_confidence_interval(FIVE_PROBS, FIVE_TARGET, level=level)


@pytest.mark.parametrize("fn", [ece_confidence_interval, calibration_report])
def test_non_integer_seed_raises_value_error(fn):
    with pytest.raises(ValueError, match=r"`seed` to be an integer, but got 0.5"):
        fn(FIVE_PROBS, FIVE_TARGET, seed=0.5)


# --------------------------------------------------------------------- reference: netcal


def _mixed_case(seed: int, n: int, classes: int = 5):
    """Under-confident below confidence 0.6, over-confident above: gaps of both signs.

    (Where every bin is over-confident any binning gives mean confidence - accuracy, and a
    comparison of binnings would prove nothing.)
    """
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, classes, generator=g, dtype=torch.float64)
    probs = logits.softmax(dim=1)
    sharpness = torch.where(probs.max(dim=1).values < 0.6, 2.0, 0.4)[:, None]
    target = torch.multinomial((sharpness * logits).softmax(dim=1), 1, generator=g).squeeze(1)
    return probs, target


@pytest.mark.parametrize(("seed", "n", "n_bins"), [(0, 1500, 15), (1, 999, 15), (2, 1000, 7)])
def test_ece_matches_netcal(seed, n, n_bins):
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, target = _mixed_case(seed, n)
    expected = netcal_metrics.ECE(bins=n_bins).measure(probs.numpy(), target.numpy())
    assert expected_calibration_error(probs, target, n_bins=n_bins) == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize(("seed", "n", "n_bins"), [(0, 1500, 15), (3, 3000, 10), (4, 1001, 7)])
def test_adaptive_ece_matches_netcal_equal_mass_bins_when_bins_divide_the_samples(seed, n, n_bins):
    # netcal puts its edges at interpolated quantiles; for continuous confidences and N a
    # multiple of M these split the sorted samples exactly as rank * M // N does.
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, target = _mixed_case(seed, n)
    expected = netcal_metrics.ECE(bins=n_bins, equal_intervals=False).measure(
        probs.numpy(), target.numpy()
    )
    actual = adaptive_calibration_error(probs, target, n_bins=n_bins)
    assert actual == pytest.approx(expected, abs=1e-6)
    assert abs(actual - expected_calibration_error(probs, target, n_bins=n_bins)) > 1e-3


# --------------------------------------------------------------------- adaptive ECE

# Six samples, no ties: confidences 0.55, 0.6, 0.65 (wrong, right, right) and 0.8, 0.9, 0.95
# (right, wrong, right).
SIX_CONFIDENCE = [0.55, 0.6, 0.65, 0.8, 0.9, 0.95]
SIX_PROBS = torch.tensor([[c, 1 - c] for c in SIX_CONFIDENCE], dtype=torch.float64)
SIX_TARGET = torch.tensor([1, 0, 0, 0, 1, 0])


def test_adaptive_ece_on_six_samples_equals_hand_computed_value():
    low_gap, high_gap = abs(2 / 3 - 0.6), abs(2 / 3 - (0.8 + 0.9 + 0.95) / 3)
    assert adaptive_calibration_error(SIX_PROBS, SIX_TARGET, n_bins=2) == pytest.approx(
        (low_gap + high_gap) / 2
    )
    assert adaptive_calibration_error(SIX_PROBS, SIX_TARGET, n_bins=2, norm="l2") == pytest.approx(
        math.sqrt((low_gap**2 + high_gap**2) / 2)
    )
    assert adaptive_calibration_error(SIX_PROBS, SIX_TARGET, n_bins=2, norm="max") == pytest.approx(
        high_gap
    )
    # Equal-width bins put all six samples in [0.5, 1]: one gap, a different number.
    assert expected_calibration_error(SIX_PROBS, SIX_TARGET, n_bins=2) == pytest.approx(
        abs(4 / 6 - sum(SIX_CONFIDENCE) / 6)
    )


def test_adaptive_ece_with_one_bin_equals_ece_with_one_bin():
    probs, target = _random_case(seed=8)
    assert adaptive_calibration_error(probs, target, n_bins=1) == pytest.approx(
        expected_calibration_error(probs, target, n_bins=1), abs=1e-12
    )


def test_adaptive_ece_with_a_bin_per_sample_is_the_mean_gap_even_with_more_bins_than_samples():
    # Ties (two 0.9s, two 0.7s) do not matter when every bin holds at most one sample.
    expected = (0.1 + 0.9 + 0.1 + 0.3 + 0.7) / 5
    assert adaptive_calibration_error(FIVE_PROBS, FIVE_TARGET, n_bins=5) == pytest.approx(expected)
    assert adaptive_calibration_error(FIVE_PROBS, FIVE_TARGET, n_bins=50) == pytest.approx(expected)
    assert adaptive_calibration_error(
        FIVE_PROBS, FIVE_TARGET, n_bins=50, norm="max"
    ) == pytest.approx(0.9)


def test_adaptive_ece_matches_a_numpy_array_split_of_the_sorted_samples():
    probs, target = _mixed_case(seed=5, n=1000)
    conf, pred = probs.max(dim=1)
    conf, correct = conf.numpy(), (pred == target).numpy().astype(float)
    order = np.argsort(conf, kind="stable")
    # rank * M // N gives the bigger bins last, np.array_split first: compare on N % M == 0.
    expected = sum(
        len(chunk) / len(conf) * abs(correct[chunk].mean() - conf[chunk].mean())
        for chunk in np.array_split(order, 20)
    )
    assert adaptive_calibration_error(probs, target, n_bins=20) == pytest.approx(expected)


# --------------------------------------------------------------------- classwise ECE


def _numpy_classwise_ece(probs: np.ndarray, target: np.ndarray, n_bins: int) -> float:
    """Direct transcription of Kull et al. (2019), eq. (classwise-ECE), with loops."""
    n, c = probs.shape
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for k in range(c):
        p, y = probs[:, k], (target == k).astype(float)
        for m in range(n_bins):
            last = m == n_bins - 1
            in_bin = (p >= edges[m]) & ((p <= edges[m + 1]) if last else (p < edges[m + 1]))
            if in_bin.any():
                total += in_bin.sum() / n * abs(y[in_bin].mean() - p[in_bin].mean())
    return total / c


def test_classwise_ece_on_five_samples_equals_hand_computed_value():
    # Class 0: bins 0.9 -> |1 - 1.8|, 0.7 -> |1 - 0.7|, 0.3 -> |1 - 0.3|, 0.1 -> |0 - 0.1|;
    # class 1 mirrors class 0 for two classes.
    expected = (0.8 + 0.3 + 0.7 + 0.1) / 5
    assert classwise_calibration_error(FIVE_PROBS, FIVE_TARGET, n_bins=5) == pytest.approx(expected)


def test_classwise_ece_on_three_classes_equals_hand_computed_value():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]], dtype=torch.float64)
    target = torch.tensor([0, 0, 2])
    # Two bins [0, 0.5), [0.5, 1]. Class 0: low {0.2 (y=1), 0.1 (y=0)} -> |1 - 0.3|,
    # high {0.6 (y=1)} -> |1 - 0.6|. Class 1: low {0.3, 0.2} -> 0.5, high {0.7 (y=0)} -> 0.7.
    # Class 2: low {0.1, 0.1} -> 0.2, high {0.7 (y=1)} -> 0.3.
    expected = ((0.7 + 0.4) + (0.5 + 0.7) + (0.2 + 0.3)) / 3 / 3
    assert classwise_calibration_error(probs, target, n_bins=2) == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_classwise_ece_matches_direct_numpy_implementation(seed, n_bins):
    probs, target = _random_case(seed, n=400, classes=6, dtype=torch.float64)
    expected = _numpy_classwise_ece(probs.numpy(), target.numpy(), n_bins)
    assert classwise_calibration_error(probs, target, n_bins=n_bins) == pytest.approx(
        expected, abs=1e-12
    )


def test_classwise_ece_is_zero_when_every_class_probability_is_calibrated():
    probs = torch.tensor([[0.5, 0.5]] * 4 + [[0.75, 0.25]] * 4, dtype=torch.float64)
    target = torch.tensor([0, 1, 0, 1, 0, 0, 0, 1])
    assert classwise_calibration_error(probs, target, n_bins=10) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------- bootstrap interval


def _overconfident_case(seed: int, n: int):
    """A calibrated generator's targets with its logits sharpened threefold."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, 5, generator=g, dtype=torch.float64)
    target = torch.multinomial(logits.softmax(dim=1), 1, generator=g).squeeze(1)
    return (3 * logits).softmax(dim=1), target


def test_ece_interval_contains_the_point_estimate_which_equals_the_ece():
    probs, target = _overconfident_case(seed=0, n=2000)
    ece, lower, upper = ece_confidence_interval(probs, target, n_boot=500)
    assert ece == expected_calibration_error(probs, target)
    assert lower < ece < upper


def test_ece_interval_narrows_with_more_samples():
    probs, target = _overconfident_case(seed=1, n=4000)
    _, lower_small, upper_small = ece_confidence_interval(probs[:250], target[:250], n_boot=400)
    _, lower_large, upper_large = ece_confidence_interval(probs, target, n_boot=400)
    # The width of a percentile interval shrinks like 1 / sqrt(N): 4 times here.
    assert upper_large - lower_large < 0.5 * (upper_small - lower_small)


def test_ece_interval_is_deterministic_for_a_seed_and_varies_with_it():
    probs, target = _overconfident_case(seed=2, n=500)
    first = ece_confidence_interval(probs, target, n_boot=200, seed=3)
    assert ece_confidence_interval(probs, target, n_boot=200, seed=3) == first
    assert ece_confidence_interval(probs, target, n_boot=200, seed=4) != first


def test_higher_level_gives_a_wider_interval_and_one_resample_a_single_value():
    probs, target = _overconfident_case(seed=3, n=500)
    _, lo_80, hi_80 = ece_confidence_interval(probs, target, n_boot=300, level=0.8)
    _, lo_99, hi_99 = ece_confidence_interval(probs, target, n_boot=300, level=0.99)
    assert lo_99 <= lo_80 < hi_80 <= hi_99
    _, lower, upper = ece_confidence_interval(probs, target, n_boot=1)
    assert lower == upper


def test_bootstrap_ece_of_resamples_is_the_ece_of_those_resamples():
    # Every resample's ECE must equal the public ECE of the same indices: check by replaying
    # the generator the implementation seeds.
    from tai.principles.reliability.calibration import _bootstrap_ece, _top_label

    probs, target = _mixed_case(seed=6, n=200)
    confidences, accuracies = _top_label(probs, target)
    eces = _bootstrap_ece(confidences, accuracies, n_bins=10, n_boot=5, seed=11)
    draws = torch.randint(0, 200, (5, 200), generator=torch.Generator().manual_seed(11))
    for ece, draw in zip(eces.tolist(), draws, strict=True):
        assert ece == pytest.approx(
            expected_calibration_error(probs[draw], target[draw], n_bins=10), abs=1e-12
        )


# --------------------------------------------------------------------- report and result


def test_calibration_report_fills_every_metric_as_the_functions_compute_them():
    probs, target = _mixed_case(seed=7, n=600)
    report = calibration_report(probs, target, n_bins=10, n_boot=300, seed=5)
    summary = calibration_summary(probs, target, n_bins=10)
    assert report.as_dict() == summary.as_dict()
    assert report.bins == summary.bins and report.accuracy == summary.accuracy
    assert report.adaptive_ece == adaptive_calibration_error(probs, target, n_bins=10)
    assert report.classwise_ece == classwise_calibration_error(probs, target, n_bins=10)
    _, lower, upper = ece_confidence_interval(probs, target, n_bins=10, n_boot=300, seed=5)
    assert (report.ece_lower, report.ece_upper) == (lower, upper)


def test_extended_dict_holds_every_scalar_and_as_dict_is_unchanged():
    report = calibration_report(FIVE_PROBS, FIVE_TARGET, n_bins=5, n_boot=100)
    extended = report.as_extended_dict()
    assert list(extended) == [
        "ece",
        "mce",
        "nll",
        "brier",
        "adaptive_ece",
        "classwise_ece",
        "ece_upper",
        "ece_lower",
    ]
    assert all(isinstance(v, float) and math.isfinite(v) for v in extended.values())
    assert list(report.as_dict()) == ["ece", "mce", "nll", "brier"]


def test_summary_leaves_the_extended_metrics_nan_and_old_constructors_still_work():
    summary = calibration_summary(FIVE_PROBS, FIVE_TARGET, n_bins=5)
    assert all(
        math.isnan(summary.as_extended_dict()[k])
        for k in ("adaptive_ece", "classwise_ece", "ece_lower", "ece_upper")
    )
    old = CalibrationResult(
        ece=0.1, mce=0.2, nll=0.3, brier=0.4, accuracy=0.5, n_samples=1, bins=summary.bins
    )
    assert math.isnan(old.adaptive_ece)
    assert [f.name for f in fields(CalibrationResult)][:7] == [
        "ece",
        "mce",
        "nll",
        "brier",
        "accuracy",
        "n_samples",
        "bins",
    ]


# --------------------------------------------------------------------------- NLL and Brier


def test_negative_log_likelihood_is_the_mean_of_minus_log_p_of_the_target():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    target = torch.tensor([0, 0, 0])
    # (ln 2 + ln(10/9) + ln 5) / 3, by hand
    expected = (math.log(2) + math.log(1 / 0.9) + math.log(5)) / 3
    assert negative_log_likelihood(probs, target) == pytest.approx(expected, rel=1e-6)
    assert negative_log_likelihood(probs, torch.tensor([1, 1, 1])) == pytest.approx(
        (math.log(2) + math.log(10) + math.log(1.25)) / 3, rel=1e-6
    )
    assert isinstance(negative_log_likelihood(probs, target), float)
    assert negative_log_likelihood(probs, target) == pytest.approx(
        F.nll_loss(probs.log(), target).item(), rel=1e-6
    )


def test_a_zero_probability_of_the_target_gives_a_large_finite_nll():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float32)
    nll = negative_log_likelihood(probs, torch.tensor([1, 0]))
    # -log of float32's smallest normal number, halved by the second (certain, right) row
    assert nll == pytest.approx(-math.log(torch.finfo(torch.float32).tiny) / 2, rel=1e-9)
    assert math.isfinite(nll)
    probs64 = probs.double()
    assert negative_log_likelihood(probs64, torch.tensor([1, 0])) == pytest.approx(
        -math.log(torch.finfo(torch.float64).tiny) / 2, rel=1e-9
    )


def test_brier_score_sums_the_squared_error_over_classes_and_averages_over_samples():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
    target = torch.tensor([0, 1, 2])
    # (0.25 + 0.25 + 0) + (0.81 + 0.81 + 0) + (0.04 + 0.09 + 0.25), over 3
    expected = (0.5 + 1.62 + 0.38) / 3
    assert brier_score(probs, target) == pytest.approx(expected, rel=1e-6)
    assert isinstance(brier_score(probs, target), float)
    assert brier_score(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(2.0)
    assert brier_score(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0.0


def test_nll_and_brier_take_probabilities_that_require_grad():
    probs = torch.tensor([[0.25, 0.75]], requires_grad=True)
    assert negative_log_likelihood(probs, torch.tensor([1])) == pytest.approx(-math.log(0.75))
    assert brier_score(probs, torch.tensor([1])) == pytest.approx(2 * 0.25**2)


@pytest.mark.parametrize("metric", ["negative_log_likelihood", "brier_score"])
def test_nll_and_brier_validate_their_input(metric):
    import tai.principles.reliability.calibration as calibration

    fn = getattr(calibration, metric)
    with pytest.raises(ValueError, match=r"Expected `probs` in \[0, 1\]"):
        fn(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"Expected `target` values in \[0, 2\)"):
        fn(torch.tensor([[0.5, 0.5]]), torch.tensor([2]))


# --------------------------------------------------------------------------- defaults


def test_the_documented_defaults_are_the_ones_used():
    """15 bins, the l1 norm, 1000 resamples, a 95% interval and seed 0 (as documented):
    each default call equals the explicit one, and another value would differ."""
    probs, target = _random_case(21, n=400)
    bins = {"n_bins": 15}
    assert expected_calibration_error(probs, target) == expected_calibration_error(
        probs, target, n_bins=15, norm="l1"
    )
    assert expected_calibration_error(probs, target) != expected_calibration_error(
        probs, target, n_bins=16
    )
    assert adaptive_calibration_error(probs, target) == adaptive_calibration_error(
        probs, target, n_bins=15, norm="l1"
    )
    assert adaptive_calibration_error(probs, target) != adaptive_calibration_error(
        probs, target, n_bins=16
    )
    assert classwise_calibration_error(probs, target) == classwise_calibration_error(
        probs, target, **bins
    )
    assert classwise_calibration_error(probs, target) != classwise_calibration_error(
        probs, target, n_bins=16
    )
    assert reliability_bins(probs, target).n_bins == 15
    assert calibration_summary(probs, target) == calibration_summary(probs, target, **bins)
    assert calibration_summary(probs, target).bins.n_bins == 15
    explicit = {"n_bins": 15, "n_boot": 1000, "level": 0.95, "seed": 0}
    assert ece_confidence_interval(probs, target) == ece_confidence_interval(
        probs, target, **explicit
    )
    assert calibration_report(probs, target) == calibration_report(probs, target, **explicit)
    for change in ({"n_bins": 16}, {"n_boot": 1001}, {"level": 0.9}, {"seed": 1}):
        other = {**explicit, **change}
        assert ece_confidence_interval(probs, target) != ece_confidence_interval(
            probs, target, **other
        ), change
        assert calibration_report(probs, target) != calibration_report(probs, target, **other)


# --------------------------------------------------------------------------- pinned formulas


def test_mce_is_the_largest_bin_gap_of_the_five_samples():
    # Bin of 0.9: accuracy 2/3, gap 7/30; bin of 0.7: accuracy 1/2, gap 1/5.
    summary = calibration_summary(FIVE_PROBS, FIVE_TARGET, n_bins=5)
    assert summary.mce == pytest.approx(7 / 30, abs=1e-7)
    assert summary.ece == pytest.approx(3 / 5 * 7 / 30 + 2 / 5 * 1 / 5, abs=1e-7)


def _classwise_reference(probs: np.ndarray, target: np.ndarray, n_bins: int) -> float:
    """Kull et al.'s classwise ECE in float64, bins as torchmetrics (edges in the dtype of
    the probabilities, right-closed search, the last bin closed)."""
    n, c = probs.shape
    edges = np.linspace(0, 1, n_bins + 1, dtype=probs.dtype)
    total = 0.0
    for k in range(c):
        p = probs[:, k]
        index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
        residual = (target == k).astype(np.float64) - p.astype(np.float64)
        total += sum(abs(residual[index == m].sum()) for m in range(n_bins)) / n
    return total / c


def test_classwise_ece_equals_the_formula_in_float64_when_a_class_never_occurs():
    g = torch.Generator().manual_seed(3)
    probs = (2 * torch.randn(200, 3, generator=g)).softmax(1)  # float32
    target = torch.randint(0, 2, (200,), generator=g)  # class 2 never the target
    expected = _classwise_reference(probs.numpy(), target.numpy(), 10)
    assert classwise_calibration_error(probs, target, n_bins=10) == pytest.approx(
        expected, rel=1e-12
    )


def test_nll_of_float32_probabilities_is_computed_in_float64():
    g = torch.Generator().manual_seed(4)
    probs = (3 * torch.randn(100, 4, generator=g)).softmax(1)  # float32
    target = torch.randint(0, 4, (100,), generator=g)
    p = probs.numpy().astype(np.float64)[np.arange(100), target.numpy()]
    assert negative_log_likelihood(probs, target) == pytest.approx(-np.log(p).mean(), rel=1e-12)
    assert calibration_summary(probs, target).nll == pytest.approx(-np.log(p).mean(), rel=1e-12)


def test_brier_of_float32_probabilities_is_computed_in_float64():
    g = torch.Generator().manual_seed(5)
    probs = (3 * torch.randn(100, 4, generator=g)).softmax(1)
    target = torch.randint(0, 3, (100,), generator=g)  # class 3 never the target
    onehot = np.eye(4)[target.numpy()]
    expected = ((probs.numpy().astype(np.float64) - onehot) ** 2).sum(1).mean()
    assert brier_score(probs, target) == pytest.approx(expected, rel=1e-12)
    assert calibration_summary(probs, target).brier == pytest.approx(expected, rel=1e-12)


def test_the_percentile_interval_cuts_half_the_missing_coverage_from_each_side():
    from tai.principles.reliability.calibration import _percentile_interval

    samples = torch.arange(101, dtype=torch.float64)  # the q-quantile is 100 q
    assert _percentile_interval(samples, 0.9) == pytest.approx((5.0, 95.0))
    assert _percentile_interval(samples, 0.5) == pytest.approx((25.0, 75.0))


# --------------------------------------------------------------------------- messages in full


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as refused:
        fn(*args, **kwargs)
    return str(refused.value)


@pytest.mark.parametrize("n_bins", [0, True, 2.5])
def test_a_bad_bin_count_is_refused_saying_what_to_pass(n_bins):
    assert _message(expected_calibration_error, FIVE_PROBS, FIVE_TARGET, n_bins=n_bins) == (
        f"Expected argument `n_bins` to be an integer >= 1, but got {n_bins!r}. Pass the "
        "number of equal-width confidence bins, e.g. n_bins=15."
    )


def test_a_bad_norm_is_refused_naming_the_three():
    assert _message(expected_calibration_error, FIVE_PROBS, FIVE_TARGET, norm="l3") == (
        "Expected argument `norm` to be one of ('l1', 'l2', 'max'), but got 'l3'. Use 'l1' "
        "for the ECE, 'l2' for the RMS calibration error, 'max' for the MCE."
    )
    # One bin is allowed: the ECE is then |accuracy - mean confidence|.
    assert expected_calibration_error(FIVE_PROBS, FIVE_TARGET, n_bins=1) == pytest.approx(
        abs(3 / 5 - (0.9 * 3 + 0.7 * 2) / 5), abs=1e-7
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"n_boot": 0},
            "Expected argument `n_boot` to be an integer >= 1, but got 0. Pass the number of "
            "bootstrap resamples, e.g. n_boot=1000.",
        ),
        (
            {"level": 1.0},
            "Expected argument `level` to be a float in the open interval (0, 1), but got "
            "1.0. Pass the coverage of the interval, e.g. level=0.95.",
        ),
        (
            {"seed": 1.5},
            "Expected argument `seed` to be an integer, but got 1.5. The same seed gives the "
            "same interval.",
        ),
    ],
)
def test_bad_bootstrap_arguments_are_refused_saying_what_to_pass(kwargs, message):
    assert _message(ece_confidence_interval, FIVE_PROBS, FIVE_TARGET, **kwargs) == message
    assert _message(calibration_report, FIVE_PROBS, FIVE_TARGET, **kwargs) == message


def test_one_resample_is_allowed():
    lower, upper = ece_confidence_interval(FIVE_PROBS, FIVE_TARGET, n_bins=5, n_boot=1)[1:]
    assert lower == upper


@pytest.mark.parametrize(
    ("probs", "target", "message"),
    [
        (
            [[0.5, 0.5]],
            torch.tensor([0]),
            "Expected `probs` and `target` to be torch tensors, but got list and Tensor. "
            "Convert with torch.as_tensor.",
        ),
        (
            torch.tensor([[0.5, 0.5]]),
            [0],
            "Expected `probs` and `target` to be torch tensors, but got Tensor and list. "
            "Convert with torch.as_tensor.",
        ),
        (
            torch.zeros(0, 2),
            torch.zeros(0, dtype=torch.long),
            "Expected at least one sample, but got an empty batch (N = 0). Calibration is "
            "undefined without predictions; check the data loader.",
        ),
        (
            torch.ones(2, 1),
            torch.zeros(2, dtype=torch.long),
            "Expected at least 2 classes in `probs`, but got C = 1. For a binary model pass "
            "both columns (1 - p, p).",
        ),
        (
            torch.tensor([[1, 0]]),
            torch.tensor([0]),
            "Expected `probs` to be a floating point tensor, but got dtype torch.int64. Pass "
            "probabilities, e.g. logits.softmax(dim=1).",
        ),
        (
            torch.tensor([[0.5, 0.5]]),
            torch.tensor([True]),
            "Expected `target` to be an integer tensor of class indices, but got dtype "
            "torch.bool. Convert with target.long().",
        ),
        (
            torch.tensor([[math.nan, 0.5]]),
            torch.tensor([0]),
            "Expected `probs` to be finite, but found NaN or inf values. Check the model "
            "output for overflow before the softmax.",
        ),
        (
            torch.tensor([[0.6, 0.6, -0.2]]),  # sums to 1, one value below 0
            torch.tensor([0]),
            "Expected `probs` in [0, 1], but got values in [-0.2, 0.6]. These look like "
            "logits: apply softmax(dim=1) first.",
        ),
        (
            torch.tensor([[1.5, 0.0]]),  # above 1 but below 2, none below 0
            torch.tensor([0]),
            "Expected `probs` in [0, 1], but got values in [0, 1.5]. These look like logits: "
            "apply softmax(dim=1) first.",
        ),
    ],
)
def test_input_messages_in_full(probs, target, message):
    with pytest.raises(ValueError) as refused:
        expected_calibration_error(probs, target)
    assert str(refused.value) == message


def test_a_confidence_on_a_bin_edge_goes_to_the_bin_above_it():
    # Edges of 5 bins: 0, 0.2, 0.4, 0.6, 0.8, 1 (in float32, as the confidences).
    probs = torch.tensor([[0.6, 0.4], [0.8, 0.2], [0.7, 0.3]])
    bins = reliability_bins(probs, torch.tensor([0, 0, 1]), n_bins=5)
    assert list(bins.count) == [0, 0, 0, 2, 1]


def test_the_interval_of_confidences_that_never_reach_the_top_bins():
    # Every confidence below 0.6: the top bins stay empty in every resample.
    g = torch.Generator().manual_seed(8)
    probs = torch.full((50, 2), 0.5)
    probs[:, 0] += 0.09 * torch.rand(50, generator=g)
    probs[:, 1] = 1 - probs[:, 0]
    target = torch.randint(0, 2, (50,), generator=g)
    # (Each resample's bin sums must still have all 15 bins, empty ones included.)
    point, lower, upper = ece_confidence_interval(probs, target, n_bins=15, n_boot=200)
    assert point == pytest.approx(expected_calibration_error(probs, target))
    assert (lower, upper) == ece_confidence_interval(probs, target, n_bins=15, n_boot=200)[1:]
    assert lower < upper
