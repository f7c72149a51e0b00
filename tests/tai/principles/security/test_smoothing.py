"""Randomized-smoothing certification against the paper's formulas, scipy and statsmodels."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from scipy.stats import binom, binomtest
from torch import nn

from tai.principles.security.smoothing import (
    ABSTAIN,
    CertificationResult,
    certified_accuracy,
    clopper_pearson_lower_bound,
    radius_key,
)

PHI_INV = NormalDist().inv_cdf  # the standard library's, independent of scipy


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared, busy machine run these small tensors several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Constant(nn.Module):
    """Always predicts class ``k`` of ``num_classes``."""

    def __init__(self, k: int, num_classes: int = 3) -> None:
        super().__init__()
        self.logits = torch.nn.functional.one_hot(torch.tensor(k), num_classes).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.repeat(len(x), 1)


class CoinFlip(nn.Module):
    """Compares two pixels that are equal in the clean image: the noise decides, 50/50."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]


class Brightness(nn.Module):
    """Linear binary classifier on the mean pixel: class 1 when the mean exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1).mean(dim=1) - 0.5
        return torch.stack([-score, score], dim=1)


def _brightness_images(means: list[float], size: int = 4) -> torch.Tensor:
    return torch.tensor(means).reshape(-1, 1, 1, 1).expand(-1, 1, size, size).clone()


def _distance_to_boundary(means: list[float], size: int = 4) -> list[float]:
    # w = 1/d (all d pixels), b = -0.5: |w.x + b| / ||w|| = |mean - 0.5| * sqrt(d).
    return [abs(m - 0.5) * math.sqrt(size * size) for m in means]


# ------------------------------------------------------------------------ Clopper-Pearson


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_bound_of_all_successes_is_alpha_to_the_one_over_n(n, alpha):
    # P(Bin(n, p) >= n) = p^n = alpha  =>  p = alpha^(1/n)
    assert clopper_pearson_lower_bound(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-9)


def test_clopper_pearson_bound_of_no_success_is_zero():
    assert clopper_pearson_lower_bound(0, 50, 0.001) == 0.0


@pytest.mark.parametrize(("k", "n"), [(1, 10), (8, 10), (55, 100), (990, 1000), (6200, 10000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_bound_solves_its_defining_tail_equation(k, n, alpha):
    # The one-sided bound p_L is the p at which seeing k or more successes has probability alpha.
    p_lower = clopper_pearson_lower_bound(k, n, alpha)
    assert binom.sf(k - 1, n, p_lower) == pytest.approx(alpha, rel=1e-6)
    assert p_lower < k / n


def test_clopper_pearson_bound_matches_a_published_table_value():
    # Two-sided 90% exact interval of 8/10 is (0.4931, 0.9632) (e.g. Agresti & Coull 1998).
    assert clopper_pearson_lower_bound(8, 10, 0.05) == pytest.approx(0.4931, abs=5e-5)


@pytest.mark.parametrize(("k", "n"), [(3, 10), (97, 100), (512, 1000)])
def test_clopper_pearson_bound_matches_scipy_binomtest(k, n):
    alpha = 0.001
    interval = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert clopper_pearson_lower_bound(k, n, alpha) == pytest.approx(interval.low, rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(3, 10), (97, 100), (512, 1000), (100, 100)])
def test_clopper_pearson_bound_matches_statsmodels_as_cohen_et_al_call_it(k, n):
    stats = pytest.importorskip(
        "statsmodels.stats.proportion", reason="statsmodels is the reference of Cohen's code"
    )
    alpha = 0.001
    expected = stats.proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    assert clopper_pearson_lower_bound(k, n, alpha) == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------------------- CERTIFY


@pytest.mark.parametrize(("k", "sigma", "n"), [(2, 0.25, 100), (0, 0.5, 500), (1, 1.0, 40)])
def test_a_constant_model_gets_the_largest_radius_n_samples_allow(k, sigma, n):
    alpha = 0.001
    targets = torch.tensor([k, k, (k + 1) % 3])
    images = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    result = certified_accuracy(
        Constant(k), images, targets, sigma=sigma, n0=5, n=n, alpha=alpha, radii=(0.0,)
    )
    bound = alpha ** (1 / n)
    assert result.predictions == (k, k, k)
    assert result.pa_lower == pytest.approx((bound,) * 3, rel=1e-9)
    assert result.certified_radii == pytest.approx((sigma * PHI_INV(bound),) * 3, rel=1e-9)
    assert result.certified_accuracy == [pytest.approx(2 / 3)]  # the third target differs
    assert result.abstention_rate == 0.0
    assert result.average_certified_radius == pytest.approx(2 / 3 * sigma * PHI_INV(bound))


def test_a_model_that_flips_a_coin_under_noise_abstains():
    images = torch.full((4, 1, 3, 3), 0.5)
    result = certified_accuracy(CoinFlip(), images, torch.tensor([0, 1, 0, 1]), n0=20, n=400)
    assert result.predictions == (ABSTAIN,) * 4
    assert all(p < 0.5 for p in result.pa_lower)
    assert result.abstention_rate == 1.0
    assert result.certified_accuracy == [0.0, 0.0, 0.0]
    assert result.certified_radii == (0.0,) * 4
    assert result.average_certified_radius == 0.0


def test_a_linear_model_is_certified_just_inside_its_distance_to_the_boundary():
    # Cohen et al. (section 3, "linear" example): for a binary linear classifier the smoothed
    # classifier's exact radius is sigma * Phi^-1(pA) = |w.x + b| / ||w||, the distance to the
    # hyperplane. The certificate is sound (<= that distance) and, with n = 4000, loose by
    # less than sigma * (Phi^-1(pA) - Phi^-1(pA - 3.1 * sqrt(pA (1 - pA) / n))) <= 0.2 sigma here.
    sigma = 0.25
    means = [0.42, 0.45, 0.47, 0.53, 0.56, 0.58]
    images, targets = _brightness_images(means), torch.tensor([0, 0, 0, 1, 1, 1])
    result = certified_accuracy(Brightness(), images, targets, sigma=sigma, n0=50, n=4000)
    distance = _distance_to_boundary(means)
    assert result.predictions == (0, 0, 0, 1, 1, 1)
    for certified, exact in zip(result.certified_radii, distance, strict=True):
        assert exact - 0.2 * sigma <= certified <= exact


def test_certified_accuracy_is_non_increasing_in_radius():
    means = [0.1, 0.3, 0.42, 0.46, 0.49, 0.51, 0.55, 0.6, 0.75, 0.9]
    images = _brightness_images(means)
    targets = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 0])  # the last one is labelled wrong
    radii = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2)
    result = certified_accuracy(Brightness(), images, targets, n=500, radii=radii)
    accuracy = result.certified_accuracy
    assert all(a >= b for a, b in zip(accuracy, accuracy[1:], strict=False))
    assert accuracy[0] > accuracy[-1] and accuracy[-1] == 0.0
    for r, acc in zip(radii, accuracy, strict=True):  # each is the count it claims to be
        triples = zip(result.predictions, targets.tolist(), result.certified_radii, strict=True)
        hits = [p == t and rad >= r for p, t, rad in triples]
        assert acc == pytest.approx(sum(hits) / len(hits))


def test_model_forward_passes_are_n_times_n0_plus_n():
    class Counting(Brightness):
        seen = 0

        def forward(self, x):
            Counting.seen += len(x)
            return super().forward(x)

    model = Counting()
    certified_accuracy(model, _brightness_images([0.2, 0.8, 0.4]), torch.tensor([0, 1, 0]),
                       n0=7, n=130, batch_size=32)  # fmt: skip
    assert Counting.seen == 3 * (7 + 130)


def test_certification_is_deterministic_for_a_seed_and_model_mode_is_restored():
    model = nn.Sequential(nn.Dropout(0.9), Brightness())  # dropout would randomise the votes
    model.train()
    images, targets = _brightness_images([0.45, 0.53, 0.56]), torch.tensor([0, 1, 1])
    first = certified_accuracy(model, images, targets, n=300, seed=3)
    again = certified_accuracy(model, images, targets, n=300, seed=3)
    other = certified_accuracy(model, images, targets, n=300, seed=4)
    assert first == again
    assert first.pa_lower != other.pa_lower
    assert model.training


def test_result_as_dict_names_each_radius():
    result = CertificationResult(
        sigma=0.25, n0=10, n=100, alpha=0.001, radii=(0.0, 0.25, 1.0),
        certified_accuracy=[0.8, 0.5, 0.1], abstention_rate=0.1,
        average_certified_radius=0.3, predictions=(1,), certified_radii=(0.3,), pa_lower=(0.9,),
    )  # fmt: skip
    assert result.as_dict() == {
        "certified_accuracy_r0": 0.8,
        "certified_accuracy_r0p25": 0.5,
        "certified_accuracy_r1": 0.1,
        "smoothing_abstention_rate": 0.1,
        "average_certified_radius": 0.3,
    }
    assert radius_key(0.125) == "r0p125"


# ---------------------------------------------------------------------------------- errors


def _ok_inputs():
    return Constant(0), torch.full((2, 1, 2, 2), 0.5), torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, r"`sigma` > 0 .* got 0.0"),
        ({"sigma": -0.25}, r"`sigma` > 0 .* got -0.25"),
        ({"sigma": math.inf}, r"`sigma` to be finite, but got inf"),
        ({"n0": 0}, r"`n0` to be an integer >= 1, but got 0"),
        ({"n": 0}, r"`n` to be an integer >= 1, but got 0"),
        ({"n": 10.0}, r"`n` to be an integer >= 1, but got 10.0"),
        ({"alpha": 0.0}, r"`alpha` in \(0, 1\) .* got 0.0"),
        ({"alpha": 1.0}, r"`alpha` in \(0, 1\) .* got 1.0"),
        ({"alpha": math.nan}, r"`alpha` to be finite, but got nan"),
        ({"radii": (0.0, -0.5)}, r"radii >= 0 in `radii`, but got \[0.0, -0.5\]"),
        ({"radii": ()}, r"`radii` to be a non-empty sequence .* got \(\)"),
        ({"radii": 0.5}, r"`radii` to be a non-empty sequence .* got 0.5"),
        ({"radii": (0.5, 0.5)}, r"distinct `radii`"),
        ({"batch_size": 0}, r"`batch_size` to be an integer >= 1, but got 0"),
        ({"seed": 1.5}, r"`seed` to be an integer, but got 1.5"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    model, images, targets = _ok_inputs()
    with pytest.raises(ValueError, match=match):
        certified_accuracy(model, images, targets, **kwargs)


@pytest.mark.parametrize(
    ("images", "targets", "match"),
    [
        (torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long), "empty batch"),
        (torch.full((2, 1, 2, 2), math.nan), torch.tensor([0, 1]), "found NaN or inf"),
        (torch.full((2, 1, 2, 2), -0.5), torch.tensor([0, 1]), r"in \[0, 1\], but got values"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, 1, 2]), "2 images and 3 targets"),
        (torch.zeros(2, 1, 2, 2), torch.tensor([0, 3]), r"indices < 3 \(the model's"),
    ],
)
def test_bad_tensors_are_rejected(images, targets, match):
    with pytest.raises(ValueError, match=match):
        certified_accuracy(Constant(0), images, targets, n0=2, n=2)


def test_a_model_that_does_not_return_logits_is_rejected():
    _, images, targets = _ok_inputs()
    with pytest.raises(ValueError, match=r"`model` to return logits of shape \(3, num_classes\)"):
        certified_accuracy(nn.Flatten(start_dim=0), images, targets, n0=3, n=3)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((11, 10, 0.01), r"`successes` <= `trials` = 10, but got 11"),
        ((-1, 10, 0.01), r"`successes` to be an integer >= 0, but got -1"),
        ((0, 0, 0.01), r"`trials` to be an integer >= 1, but got 0"),
        ((5, 10, 1.5), r"`alpha` in \(0, 1\)"),
    ],
)
def test_bad_clopper_pearson_arguments_are_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        clopper_pearson_lower_bound(*args)
