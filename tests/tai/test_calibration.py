"""Calibration metrics against torchmetrics, torch's NLL and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError
from torchmetrics.functional.classification import multiclass_calibration_error

from tai.calibration import (
    CalibrationResult,
    ReliabilityBins,
    calibration_summary,
    expected_calibration_error,
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


@pytest.mark.parametrize(("probs", "target", "message"), BAD_INPUTS)
@pytest.mark.parametrize("fn", [expected_calibration_error, reliability_bins, calibration_summary])
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
@pytest.mark.parametrize("fn", [expected_calibration_error, reliability_bins, calibration_summary])
def test_invalid_n_bins_raises_value_error(fn, n_bins):
    with pytest.raises(ValueError, match=r"`n_bins` to be an integer >= 1, but got"):
        fn(FIVE_PROBS, FIVE_TARGET, n_bins=n_bins)


def test_unknown_norm_names_the_allowed_values_and_the_value_received():
    with pytest.raises(ValueError, match=r"one of \('l1', 'l2', 'max'\), but got 'l3'"):
        expected_calibration_error(FIVE_PROBS, FIVE_TARGET, norm="l3")
