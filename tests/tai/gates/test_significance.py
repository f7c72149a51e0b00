"""Significance helpers against statsmodels, scipy, a published table and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import bootstrap, norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from tai.gates.significance import (
    PairedDifference,
    accuracy,
    accuracy_difference,
    mcnemar_test,
    paired_bootstrap,
    proportion_interval,
)
from tai.principles.reliability.calibration import expected_calibration_error


def _paired(seed: int, n: int = 400, acc_a: float = 0.8, acc_b: float = 0.85):
    rng = np.random.default_rng(seed)
    shared = rng.random(n)  # a sample hard for one model tends to be hard for the other
    return shared < acc_a, (0.7 * shared + 0.3 * rng.random(n)) < acc_b


def _table(a_right: int, only_a: int, only_b: int, neither: int):
    """Correctness arrays of a paired 2x2 table (a right & b right, a only, b only, none)."""
    a = [1] * a_right + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * a_right + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, dtype=bool), np.array(b, dtype=bool)


# --------------------------------------------------------------------- proportion_interval


@pytest.mark.parametrize(("successes", "n"), [(0, 10), (1, 10), (7, 20), (20, 20), (961, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize(
    ("method", "sm_method"), [("wilson", "wilson"), ("clopper-pearson", "beta")]
)
def test_proportion_interval_matches_statsmodels(successes, n, confidence, method, sm_method):
    expected = proportion_confint(successes, n, alpha=1 - confidence, method=sm_method)
    iv = proportion_interval(successes, n, confidence, method)
    assert (iv.lower, iv.upper) == pytest.approx(expected, abs=1e-9)
    assert iv.estimate == successes / n
    assert (iv.successes, iv.n, iv.confidence, iv.method) == (successes, n, confidence, method)


def test_wilson_interval_follows_the_published_formula():
    # Wilson (1927): centre (p + z^2/2n) / (1 + z^2/n), half-width
    # z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
    k, n, z = 7, 20, norm.ppf(0.975)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    iv = proportion_interval(k, n)
    assert (iv.lower, iv.upper) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_clopper_pearson_with_no_success_has_its_closed_form():
    # With k = 0 the exact upper bound solves (1 - u)^n = alpha / 2.
    iv = proportion_interval(0, 30, 0.95, "clopper-pearson")
    assert iv.lower == 0.0
    assert iv.upper == pytest.approx(1 - 0.025 ** (1 / 30), abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"successes": 3, "n": 0}, "`n` to be an integer >= 1, got 0"),
        ({"successes": 11, "n": 10}, "`successes` <= `n`, but got 11 successes of 10"),
        ({"successes": -1, "n": 10}, "`successes` to be an integer >= 0"),
        ({"successes": True, "n": 10}, "`successes` to be an integer"),
        ({"successes": 3, "n": 10, "confidence": 1.0}, r"open interval \(0, 1\).*got 1.0"),
        ({"successes": 3, "n": 10, "method": "wald"}, r"one of \('wilson', 'clopper-pearson'\)"),
    ],
)
def test_proportion_interval_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        proportion_interval(**kwargs)


# --------------------------------------------------------------------- McNemar


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mcnemar_matches_statsmodels_exact(seed):
    a, b = _paired(seed, n=120)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    expected = mcnemar(table, exact=True)
    result = mcnemar_test(a, b)
    assert (result.b, result.c) == (table[0][1], table[1][0])
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert result.n == 120


def test_mcnemar_counts_and_p_value_by_hand():
    # Only b is right on 6 samples, a never alone: p = 2 * (1/2)^6.
    a, b = _table(a_right=10, only_a=0, only_b=6, neither=4)
    result = mcnemar_test(a, b)
    assert (result.b, result.c) == (0, 6)
    assert result.p_value == pytest.approx(2 * 0.5**6, abs=1e-15)


def test_mcnemar_without_discordant_pairs_has_p_one():
    a, b = _table(a_right=5, only_a=0, only_b=0, neither=3)
    result = mcnemar_test(torch.tensor(a), torch.tensor(b))
    assert (result.b, result.c, result.p_value) == (0, 0, 1.0)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1, 0, 1], [1, 0], "same samples for both models, but got 3 and 2"),
        ([], [], "non-empty 1-D array"),
        ([[1, 0]], [[1, 0]], r"1-D array .* shape \(1, 2\)"),
        ([1, 2, 0], [1, 0, 0], "booleans or 0/1.*e.g. 2"),
    ],
)
def test_mcnemar_rejects_unpaired_or_non_boolean_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        mcnemar_test(a, b)


# --------------------------------------------------------------------- accuracy_difference


def test_newcombe_interval_matches_the_published_example():
    # Fagerland, Lydersen & Laake (2017), ch. 8, Cavo et al. (2012): table [[59, 6], [16, 80]]
    # (rows: first measurement). Newcombe square-and-add: -0.0621 (95% CI -0.1186 to -0.0046).
    challenger, champion = _table(a_right=59, only_a=6, only_b=16, neither=80)
    d = accuracy_difference(champion, challenger)
    assert d.diff == pytest.approx(-0.0621, abs=5e-5)
    assert (d.lower, d.upper) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert d.value_a == pytest.approx(75 / 161) and d.value_b == pytest.approx(65 / 161)
    assert d.p_value == pytest.approx(mcnemar([[59, 6], [16, 80]], exact=True).pvalue)
    assert (d.method, d.test, d.n) == ("newcombe", "McNemar exact", 161)


def test_swapping_the_models_mirrors_the_newcombe_interval():
    a, b = _paired(3)
    forward, backward = accuracy_difference(a, b), accuracy_difference(b, a)
    assert backward.diff == pytest.approx(-forward.diff)
    assert (backward.lower, backward.upper) == pytest.approx((-forward.upper, -forward.lower))
    assert backward.p_value == pytest.approx(forward.p_value)


def test_identical_models_differ_by_nothing():
    a, _ = _paired(4)
    d = accuracy_difference(a, a)
    assert (d.diff, d.p_value) == (0.0, 1.0)
    assert d.lower <= 0.0 <= d.upper
    boot = accuracy_difference(a, a, method="bootstrap", n_resamples=50)
    assert (boot.lower, boot.upper) == (0.0, 0.0)


def test_newcombe_and_bootstrap_agree_on_a_large_sample():
    a, b = _paired(5, n=2000)
    newcombe = accuracy_difference(a, b)
    boot = accuracy_difference(a, b, method="bootstrap", n_resamples=2000, seed=1)
    assert boot.diff == newcombe.diff and boot.p_value == newcombe.p_value
    assert (boot.lower, boot.upper) == pytest.approx((newcombe.lower, newcombe.upper), abs=0.004)


def test_accuracy_difference_rejects_an_unknown_method():
    with pytest.raises(ValueError, match=r"`method` to be one of \('newcombe', 'bootstrap'\)"):
        accuracy_difference([1, 0], [1, 1], method="wald")


# --------------------------------------------------------------------- paired_bootstrap


def _predictions(seed: int, n: int = 300, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=g)
    onehot = torch.nn.functional.one_hot(targets, classes).float()
    probs_a = (2 * onehot + torch.randn(n, classes, generator=g)).softmax(dim=1)
    probs_b = (2.5 * onehot + torch.randn(n, classes, generator=g)).softmax(dim=1)
    return probs_a, probs_b, targets


def test_vectorised_accuracy_bootstrap_equals_the_generic_loop():
    probs_a, probs_b, targets = _predictions(0)
    fast = paired_bootstrap(accuracy, probs_a, probs_b, targets, n_resamples=300, seed=7)
    slow = paired_bootstrap(
        lambda p, t: accuracy(p, t), probs_a, probs_b, targets, n_resamples=300, seed=7
    )
    assert (fast.lower, fast.upper) == pytest.approx((slow.lower, slow.upper), abs=1e-12)
    assert (fast.value_a, fast.value_b, fast.n) == (slow.value_a, slow.value_b, slow.n)
    assert fast.diff == pytest.approx(accuracy(probs_b, targets) - accuracy(probs_a, targets))


def test_paired_bootstrap_matches_scipy_paired_percentile_bootstrap():
    probs_a, probs_b, targets = _predictions(1, n=500)
    right_a = (probs_a.argmax(1) == targets).numpy().astype(float)
    right_b = (probs_b.argmax(1) == targets).numpy().astype(float)
    reference = bootstrap(
        (right_a, right_b),
        lambda a, b, axis: b.mean(axis=axis) - a.mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=4000,
        method="percentile",
        random_state=0,
    ).confidence_interval
    d = paired_bootstrap(accuracy, probs_a, probs_b, targets, n_resamples=4000, seed=3)
    # Two Monte-Carlo estimates of the same quantiles: about 0.002 apart at n = 500.
    assert (d.lower, d.upper) == pytest.approx((reference.low, reference.high), abs=0.006)


def test_paired_bootstrap_takes_any_metric_on_tensors():
    probs_a, probs_b, targets = _predictions(2)
    d = paired_bootstrap(expected_calibration_error, probs_a, probs_b, targets, n_resamples=40)
    ece_a = expected_calibration_error(probs_a, targets)
    ece_b = expected_calibration_error(probs_b, targets)
    assert (d.value_a, d.value_b) == pytest.approx((ece_a, ece_b))
    assert d.diff == pytest.approx(ece_b - ece_a)
    assert d.lower < d.upper
    assert (d.method, d.confidence, d.n, math.isnan(d.p_value)) == ("bootstrap", 0.95, 300, True)


def test_paired_bootstrap_is_reproducible_and_seeded():
    probs_a, probs_b, targets = _predictions(3)
    args = (accuracy, probs_a.numpy(), probs_b.numpy(), targets.numpy())
    first = paired_bootstrap(*args, n_resamples=200, seed=1)
    again = paired_bootstrap(*args, n_resamples=200, seed=1)
    other = paired_bootstrap(*args, n_resamples=200, seed=2)
    assert (again.lower, again.upper) == (first.lower, first.upper)
    assert (other.lower, other.upper) != (first.lower, first.upper)


def test_a_wider_confidence_gives_a_wider_interval():
    probs_a, probs_b, targets = _predictions(4)
    narrow = paired_bootstrap(accuracy, probs_a, probs_b, targets, confidence=0.8)
    wide = paired_bootstrap(accuracy, probs_a, probs_b, targets, confidence=0.99)
    assert wide.lower < narrow.lower <= narrow.upper < wide.upper


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_resamples": 0}, "`n_resamples` to be an integer >= 1"),
        ({"seed": 1.5}, "`seed` to be an integer"),
        ({"confidence": 0.0}, "open interval"),
    ],
)
def test_paired_bootstrap_rejects_bad_arguments(kwargs, message):
    probs_a, probs_b, targets = _predictions(5, n=10)
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(accuracy, probs_a, probs_b, targets, **kwargs)


def test_paired_bootstrap_rejects_unpaired_inputs():
    probs_a, probs_b, targets = _predictions(6, n=10)
    with pytest.raises(ValueError, match="got 10 outputs of a, 9 outputs of b and 10 targets"):
        paired_bootstrap(accuracy, probs_a, probs_b[:9], targets)


def test_results_flatten_to_floats():
    d = accuracy_difference(*_paired(7))
    assert set(d.as_dict()) == {
        "diff",
        "lower",
        "upper",
        "confidence",
        "value_a",
        "value_b",
        "p_value",
    }
    assert all(isinstance(v, float) for v in d.as_dict().values())
    assert isinstance(d, PairedDifference)
    assert all(isinstance(v, float) for v in mcnemar_test(*_paired(7)).as_dict().values())
    assert proportion_interval(3, 4).as_dict()["estimate"] == 0.75
