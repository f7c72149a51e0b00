"""The deferral test: Fisher's exact test against the validation count (scipy and a
hand-computed hypergeometric sum), the binomial fallback, the Clopper-Pearson interval,
and its size when the validation rate is itself an estimate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, fisher_exact, hypergeom

from tai.monitoring.deferral import deferral_test


def confidences(n_deferred: int, n: int) -> np.ndarray:
    """``n`` top probabilities, the first ``n_deferred`` below a threshold of 0.5."""
    return np.where(np.arange(n) < n_deferred, 0.4, 0.9)


def test_fisher_p_value_is_scipys_and_the_hypergeometric_sum():
    # Batch: 2 of 6 deferred; validation: 1 of 8 (rate 0.125).
    result = deferral_test(confidences(2, 6), 0.5, 1 / 8, n_reference=8)
    assert (result.method, result.n_deferred, result.n_images) == ("fisher", 2, 6)
    assert (result.n_reference, result.n_reference_deferred) == (8, 1)
    assert result.p_value == pytest.approx(fisher_exact([[2, 4], [1, 7]]).pvalue, rel=1e-12)
    # By hand: 3 deferred among 14 images, 6 of them in the batch; the batch's count is
    # hypergeometric on 0..3; the two-sided p sums the counts no more likely than 2.
    # P(k) = C(3, k) C(11, 6 - k) / C(14, 6) = (462, 1386, 990, 165) / 3003.
    pmf = hypergeom(14, 3, 6).pmf(np.arange(4))
    np.testing.assert_allclose(pmf, np.array([462, 1386, 990, 165]) / 3003, rtol=1e-12)
    assert result.p_value == pytest.approx((462 + 990 + 165) / 3003, rel=1e-12)


def test_the_benchmarks_benign_batch_no_longer_alarms():
    # benchmarks/monitoring.py, seed 0: a benign batch deferring 10 of 500, validation 38
    # of 750. Taken as an exact rate, 38/750 makes 10 of 500 a p < 0.001 alarm; as a
    # count with its own sampling error it is not.
    batch = confidences(10, 500)
    fisher = deferral_test(batch, 0.5, 38 / 750, n_reference=750)
    binomial = deferral_test(batch, 0.5, 38 / 750)
    assert binomial.method == "binomial"
    assert binomial.p_value == pytest.approx(binomtest(10, 500, 38 / 750).pvalue, rel=1e-12)
    assert binomial.p_value < 0.001 < fisher.p_value
    assert fisher.p_value == pytest.approx(fisher_exact([[10, 490], [38, 712]]).pvalue, rel=1e-12)


def test_the_interval_is_clopper_pearson_either_way():
    ci = binomtest(7, 40).proportion_ci(confidence_level=0.9, method="exact")
    for n_reference in (None, 100):
        result = deferral_test(
            confidences(7, 40), 0.5, 0.05, n_reference=n_reference, confidence=0.9
        )
        assert result.rate == 7 / 40
        assert (result.lower, result.upper) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_with_an_estimated_rate_fisher_holds_its_level_and_the_binomial_test_does_not():
    # Both counts drawn with the same deferral probability: every rejection is false.
    rng = np.random.default_rng(0)
    m, n, rate, level = 200, 300, 0.05, 0.05
    draws = list(zip(rng.binomial(m, rate, size=600), rng.binomial(n, rate, size=600), strict=True))
    p_values = {  # each distinct pair of counts once (the interval is the slow part)
        (d, d0): (
            deferral_test(confidences(d, m), 0.5, d0 / n, n_reference=n).p_value,
            deferral_test(confidences(d, m), 0.5, d0 / n).p_value,
        )
        for d, d0 in set(draws)
    }
    fisher, binomial = np.array([p_values[pair] for pair in draws]).T
    # Fisher's test is exact (conservative); the binomial test understates the variance
    # of d/m - d0/n by a factor 1 + m/n and rejects about 13% at 5%.
    assert np.mean(fisher < level) <= level
    assert np.mean(binomial < level) > 0.09


@pytest.mark.parametrize(
    ("rate", "n_reference", "message"),
    [(0.05, 0, "count of validation images"), (0.051, 100, "count"), (0.1, 10.0, "integer")],
)
def test_an_inconsistent_reference_count_is_refused(rate, n_reference, message):
    with pytest.raises(ValueError, match=message):
        deferral_test(confidences(1, 10), 0.5, rate, n_reference=n_reference)
