"""The reliability checks of the evaluation: calibration bounds with the report's own
definitions, and corruption errors against a champion measured on the same images."""

from __future__ import annotations

import math

import pytest
import torch

from tai.check import EvalContext, check_generator
from tai.modeling.models import build_model
from tai.principles.reliability.calibration import calibration_summary, negative_log_likelihood
from tai.principles.reliability.checks import CalibrationCheck, CorruptionCheck
from tai.principles.reliability.sample_metrics import SAMPLE_METRICS


def _context(probs, targets, **kwargs) -> EvalContext:
    defaults = {
        "model": torch.nn.Identity(),
        "classes": [str(i) for i in range(probs.shape[1])],
        "targets": targets,
        "probs": probs,
        "embeddings": torch.zeros(len(targets), 2),
        "load_images": lambda index: torch.zeros(len(index), 1, 4, 4),
        "n_resamples": 300,
    }
    return EvalContext(**{**defaults, **kwargs})


def test_a_confidently_wrong_prediction_keeps_the_nll_inside_its_own_interval():
    """The bound and the point used two clamps (1e-12 against the dtype's tiny), so with a
    probability below 1e-12 on the true class the upper bound sat below the point."""
    probs = torch.tensor([[1e-20, 1.0 - 1e-20]] * 3 + [[0.9, 0.1]] * 37, dtype=torch.float64)
    targets = torch.zeros(40, dtype=torch.long)
    ctx = _context(probs, targets, bound_metrics=frozenset({"nll", "brier"}))
    result = CalibrationCheck().run(ctx, check_generator(0, "calibration"))
    point = result.values["nll"]
    lower, upper = result.bounds["nll"]
    assert point == pytest.approx((3 * 20 * math.log(10) + 37 * -math.log(0.9)) / 40)
    assert lower <= point <= upper
    # one definition: the report, the bound's metric and the functional agree exactly
    assert point == SAMPLE_METRICS["nll"](probs, targets) == negative_log_likelihood(probs, targets)
    assert point == calibration_summary(probs, targets).nll


def test_accuracy_has_the_wilson_interval_and_the_ece_the_reported_bootstrap_interval():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(200, 3, generator=g).softmax(1)
    targets = torch.randint(0, 3, (200,), generator=g)
    result = CalibrationCheck().run(_context(probs, targets), check_generator(0, "calibration"))
    correct = int((probs.argmax(1) == targets).sum())
    from statsmodels.stats.proportion import proportion_confint

    assert result.bounds["accuracy"] == pytest.approx(
        proportion_confint(correct, 200, alpha=0.05, method="wilson")
    )
    assert result.bounds["ece"] == (result.values["ece_lower"], result.values["ece_upper"])
    assert "nll" not in result.bounds  # costly bounds only where a gate asks for them


@pytest.fixture(scope="module")
def digits():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(24, 1, 12, 12, generator=g) * 0.5
    targets = torch.arange(24) % 3
    for k in range(3):
        images[targets == k, :, 4 * k : 4 * k + 4, :] += 0.5
    return images, targets


def test_a_champion_identical_to_the_model_has_corruption_error_exactly_one(digits):
    """The champion is run on the very same corrupted images inside the evaluation, so a
    champion equal to the challenger errs exactly as often: CE = 1 for every corruption.
    (Read from the champion's own old report, on other images, it was not.)"""
    images, targets = digits
    model = build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()
    twin = build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()
    with torch.no_grad():
        probs = model(images).softmax(1)
    ctx = _context(probs, targets, model=model, champion=twin, load_images=images.__getitem__)
    check = CorruptionCheck(["gaussian_noise", "contrast"], budget=16)
    result = check.run(ctx, check_generator(0, check.name))
    assert result.values["corruption_mce"] == pytest.approx(1.0)
    # the relative mCE is undefined where a corruption does not degrade the champion: its
    # own reason, while the mCE is still reported
    if math.isnan(result.values["relative_corruption_mce"]):
        assert result.skipped["relative_corruption_mce"].startswith("undefined against")
    section = result.section["robustness"]
    assert section["champion_accuracy"] == section["accuracy"]
    assert section["n_images"] == 16


def test_without_a_champion_the_corruption_errors_are_skipped_with_the_reason(digits):
    images, targets = digits
    model = build_model("small_cnn", in_channels=1, num_classes=3, seed=0).eval()
    with torch.no_grad():
        probs = model(images).softmax(1)
    ctx = _context(probs, targets, model=model, load_images=images.__getitem__)
    result = CorruptionCheck(["contrast"], budget=8).run(ctx, check_generator(0, "corruptions"))
    assert math.isnan(result.values["corruption_mce"])
    assert result.skipped["corruption_mce"] == "no champion to compare with"
    assert result.section["robustness"]["champion_accuracy"] is None
