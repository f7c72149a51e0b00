"""Temperature scaling against calibrated generators, scipy's scalar minimiser and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn

from tai.modeling.temperature import TemperatureScaledModel, apply_temperature
from tai.principles.reliability.calibration import expected_calibration_error
from tai.principles.reliability.temperature import T_MAX, T_MIN, TemperatureFit, fit_temperature


def _calibrated_logits(seed: int, n: int = 4000, classes: int = 5, signal: float = 0.0):
    """Logits and targets drawn from their own softmax: calibrated by construction.

    ``signal`` adds that much to one class's logit per sample, so the generator is a
    decent classifier (accuracy well above chance) rather than a coin toss.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64)
    logits[torch.arange(n), torch.randint(0, classes, (n,), generator=g)] += signal
    target = torch.multinomial(logits.softmax(dim=1), 1, generator=g).squeeze(1)
    return logits, target


def _scipy_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Reference: bounded Brent search for the NLL-minimising log T."""

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), target).item()

    result = minimize_scalar(
        nll, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded", options={"xatol": 1e-10}
    )
    return math.exp(result.x)


# --------------------------------------------------------------------- fitting


@pytest.mark.parametrize("scale", [5.0, 0.3])
def test_fitted_temperature_undoes_a_known_scaling_of_calibrated_logits(scale):
    logits, target = _calibrated_logits(seed=0, signal=2.0)
    fit = fit_temperature(scale * logits, target)
    assert fit.temperature == pytest.approx(scale, rel=0.1)


def test_temperature_of_calibrated_logits_is_about_one():
    logits, target = _calibrated_logits(seed=1, signal=2.0)
    assert fit_temperature(logits, target).temperature == pytest.approx(1.0, abs=0.1)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model_and_keeps_accuracy():
    logits, target = _calibrated_logits(seed=2, signal=3.0)
    overconfident = 5 * logits
    fit = fit_temperature(overconfident, target)
    scaled = apply_temperature(overconfident, fit.temperature)
    assert torch.equal(scaled.argmax(dim=1), overconfident.argmax(dim=1))
    assert overconfident.argmax(dim=1).eq(target).double().mean() > 0.5  # a decent classifier
    assert fit.ece_before > 0.1
    assert fit.ece_after < 0.03
    assert fit.ece_after < fit.ece_before / 4
    assert fit.nll_after < fit.nll_before


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_fitted_temperature_matches_scipy_bounded_minimiser(scale):
    logits, target = _calibrated_logits(seed=3, n=1000, signal=1.0)
    fit = fit_temperature(scale * logits, target)
    assert fit.temperature == pytest.approx(_scipy_temperature(scale * logits, target), rel=1e-5)


def test_fit_reports_nll_and_ece_before_and_after_as_the_metrics_compute_them():
    logits, target = _calibrated_logits(seed=4, n=800, signal=2.0)
    logits = 3 * logits.float()
    fit = fit_temperature(logits, target)
    scaled = logits.double() / fit.temperature
    assert fit.nll_before == pytest.approx(F.cross_entropy(logits.double(), target).item())
    assert fit.nll_after == pytest.approx(F.cross_entropy(scaled, target).item())
    assert fit.ece_before == pytest.approx(
        expected_calibration_error(logits.double().softmax(dim=1), target)
    )
    assert fit.ece_after == pytest.approx(expected_calibration_error(scaled.softmax(dim=1), target))
    assert isinstance(fit, TemperatureFit)
    assert set(fit.as_dict()) == {
        "temperature",
        "nll_before",
        "nll_after",
        "ece_before",
        "ece_after",
    }
    assert all(isinstance(v, float) for v in fit.as_dict().values())


@pytest.mark.parametrize("max_iter", [1, 2, 100])
def test_nll_after_never_exceeds_nll_before(max_iter):
    for seed, scale in [(5, 1.0), (6, 4.0), (7, 0.7)]:
        logits, target = _calibrated_logits(seed=seed, n=300, signal=1.5)
        fit = fit_temperature(scale * logits, target, max_iter=max_iter)
        assert fit.nll_after <= fit.nll_before
        assert T_MIN <= fit.temperature <= T_MAX


def test_separable_logits_hit_the_lowest_temperature():
    # Every sample right with a margin: the NLL falls as T falls, down to the bracket's end.
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    fit = fit_temperature(logits, torch.tensor([0, 1, 0]))
    assert fit.temperature == pytest.approx(T_MIN)
    assert fit.nll_after < 1e-6


def test_constant_logits_keep_temperature_one():
    # Equal logits: the temperature changes nothing, so the fit keeps T = 1.
    fit = fit_temperature(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))
    assert fit.temperature == 1.0
    assert fit.nll_after == fit.nll_before == pytest.approx(math.log(3))


def test_fit_is_deterministic_and_leaves_the_logits_untouched():
    logits, target = _calibrated_logits(seed=8, n=500, signal=2.0)
    logits = (4 * logits).float().requires_grad_()
    before = logits.detach().clone()
    assert fit_temperature(logits, target) == fit_temperature(logits, target)
    assert torch.equal(logits.detach(), before)


# --------------------------------------------------------------------- apply and wrap


def test_apply_temperature_divides_and_keeps_argmax():
    logits = torch.tensor([[4.0, -2.0, 1.0], [0.5, 0.25, 3.0]])
    scaled = apply_temperature(logits, 2.5)
    assert torch.allclose(scaled, logits / 2.5)
    assert torch.equal(scaled.argmax(dim=1), logits.argmax(dim=1))


class _Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def test_scaled_model_divides_logits_and_passes_embed_through():
    torch.manual_seed(0)
    model = _Embedder()
    scaled = TemperatureScaledModel(model, temperature=3.0)
    x = torch.randn(5, 4)
    assert torch.allclose(scaled(x), model(x) / 3.0)
    assert torch.equal(scaled.embed(x), model.embed(x))
    assert list(scaled.parameters()) == list(model.parameters())  # T is not trained


def test_scaled_model_without_embed_has_no_embed():
    scaled = TemperatureScaledModel(nn.Linear(4, 2), temperature=2.0)
    assert not hasattr(scaled, "embed")
    with pytest.raises(AttributeError, match="has no attribute 'embed'"):
        scaled.embed  # noqa: B018


def test_scaled_model_saves_and_loads_its_temperature_with_the_state_dict():
    torch.manual_seed(1)
    source = TemperatureScaledModel(_Embedder(), temperature=1.7)
    state = source.state_dict()
    assert state["temperature"].item() == pytest.approx(1.7)
    restored = TemperatureScaledModel(_Embedder(), temperature=1.0)
    restored.load_state_dict(state)
    x = torch.randn(3, 4)
    assert restored.temperature.item() == pytest.approx(1.7)
    assert torch.allclose(restored(x), source(x))
    assert restored.double().temperature.dtype == torch.float64


# --------------------------------------------------------------------- invalid input

GOOD_LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.5]])
GOOD_TARGET = torch.tensor([0, 1, 0])
NAN, INF = float("nan"), float("inf")

BAD_INPUTS = [
    pytest.param(torch.empty(0, 3), torch.empty(0, dtype=torch.long), "empty batch", id="empty"),
    pytest.param(
        torch.tensor([[NAN, 0.0], [0.0, 1.0]]),
        torch.tensor([0, 1]),
        "NaN or inf",
        id="nan",
    ),
    pytest.param(
        torch.tensor([[INF, 0.0], [0.0, 1.0]]),
        torch.tensor([0, 1]),
        "NaN or inf",
        id="inf",
    ),
    pytest.param(GOOD_LOGITS, GOOD_TARGET[:2], "same number of samples", id="length-mismatch"),
    pytest.param(GOOD_LOGITS[0], GOOD_TARGET[:1], r"shape \(N, C\)", id="logits-1d"),
    pytest.param(GOOD_LOGITS, GOOD_TARGET[:, None], r"shape \(N,\)", id="target-2d"),
    pytest.param(GOOD_LOGITS[:, :1], GOOD_TARGET, "at least 2 classes", id="one-class"),
    pytest.param(GOOD_LOGITS.long(), GOOD_TARGET, "floating point", id="int-logits"),
    pytest.param(GOOD_LOGITS, GOOD_TARGET.float(), "integer tensor", id="float-target"),
    pytest.param(GOOD_LOGITS, torch.tensor([0, 2, 0]), r"values in \[0, 2\)", id="target-range"),
    pytest.param(GOOD_LOGITS.tolist(), GOOD_TARGET, "torch tensors", id="list"),
]


@pytest.mark.parametrize(("logits", "target", "message"), BAD_INPUTS)
def test_fit_rejects_invalid_tensors(logits, target, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, target)


@pytest.mark.parametrize("max_iter", [0, -1, 2.0, True])
def test_fit_rejects_invalid_max_iter(max_iter):
    with pytest.raises(ValueError, match=r"`max_iter` to be an integer >= 1, but got"):
        fit_temperature(GOOD_LOGITS, GOOD_TARGET, max_iter=max_iter)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_invalid_temperature_is_rejected_by_apply_and_by_the_wrapper(temperature):
    with pytest.raises(ValueError, match=r"`temperature` to be a finite number > 0, but got"):
        apply_temperature(GOOD_LOGITS, temperature)
    with pytest.raises(ValueError, match=r"`temperature` to be a finite number > 0, but got"):
        TemperatureScaledModel(nn.Linear(2, 2), temperature)


def test_apply_temperature_rejects_integer_logits():
    with pytest.raises(ValueError, match="floating point torch tensor"):
        apply_temperature(torch.tensor([[1, 2]]), 2.0)
