"""The MMD test against a direct O(n^2) formula, scipy's permutation test and pdist,
its size over seeded no-shift repeats and its power on a known shift; Holm against
statsmodels; the factors against scikit-learn's PCA; KS per factor against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import ks_2samp, kstest, mannwhitneyu, permutation_test
from sklearn.decomposition import PCA
from statsmodels.stats.multitest import multipletests

from tai.monitoring.drift import (
    factor_drift,
    fit_factors,
    gaussian_mmd2,
    holm,
    median_bandwidth,
    mmd_test,
    noise_shift,
    permutations_for,
)


def direct_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Gretton et al. (2012), eq. 5, term by term."""

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    n, m = len(x), len(y)
    xx = sum(k(a, b) for a in x for b in x) / n**2
    yy = sum(k(a, b) for a in y for b in y) / m**2
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_mmd2_is_the_direct_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(15, 3)), rng.normal(0.5, 1.0, size=(11, 3))
    assert gaussian_mmd2(x, y, 1.3) == pytest.approx(direct_mmd2(x, y, 1.3), rel=1e-12)


def test_the_test_reports_the_statistic_and_the_median_heuristic():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 4)), rng.normal(0.3, 1.0, size=(30, 4))
    result = mmd_test(x, y, n_permutations=50, max_samples=100, rng=np.random.default_rng(0))
    pooled = np.concatenate([x, y])
    assert result.bandwidth == pytest.approx(np.median(pdist(pooled)), rel=1e-9)
    assert result.mmd2 == pytest.approx(direct_mmd2(x, y, result.bandwidth), rel=1e-9)
    assert (result.n_reference, result.n_batch, result.n_permutations) == (40, 30, 50)


def test_the_bandwidth_of_coinciding_points():
    assert median_bandwidth(np.zeros((3, 3))) == 1.0
    # Four points coincide, a fifth lies at distance 2: 6 of 10 distances are 0, so the
    # median is 0 and the positive distances' median (2) is taken.
    d2 = np.zeros((5, 5))
    d2[4, :4] = d2[:4, 4] = 4.0
    assert median_bandwidth(d2) == 2.0


def test_the_p_value_agrees_with_scipys_permutation_test():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 2)), rng.normal(0.25, 1.0, size=(25, 2))
    ours = mmd_test(x, y, n_permutations=2000, max_samples=100, rng=np.random.default_rng(3))

    pooled = np.concatenate([x, y])

    # scipy permutes 1-D samples: permute the points' indices.
    theirs = permutation_test(
        (np.arange(30), np.arange(30, 55)),
        lambda a, b: gaussian_mmd2(pooled[a], pooled[b], ours.bandwidth),
        permutation_type="independent",
        alternative="greater",
        n_resamples=2000,
        vectorized=False,
        rng=np.random.default_rng(4),
    )
    assert theirs.statistic == pytest.approx(ours.mmd2)
    # Two Monte Carlo estimates of one p-value (sd about 0.01 each near 0.2).
    assert abs(ours.p_value - theirs.pvalue) < 0.05
    assert 0.01 < ours.p_value < 0.9  # a weak shift: neither extreme


def test_the_relabellings_are_a_full_shuffles_first_samples():
    """The p-value counts exactly the relabellings a full argsort of the same uniform
    draws gives (the code takes the n smallest draws with a partition instead), each
    statistic by the direct formula."""
    from tai.monitoring import drift

    data = np.random.default_rng(4)
    x, y = data.normal(size=(12, 2)), data.normal(0.3, 1.0, size=(9, 2))
    b = drift._PERMUTATION_CHUNK + 7  # two chunks
    ours = mmd_test(x, y, n_permutations=b, max_samples=100, rng=np.random.default_rng(5))
    pooled, n = np.concatenate([x, y]), len(x)
    rng = np.random.default_rng(5)
    exceed = 0
    for size in (drift._PERMUTATION_CHUNK, 7):
        for order in np.argsort(rng.random((size, len(pooled))), axis=1):
            first = np.isin(np.arange(len(pooled)), order[:n])
            stat = direct_mmd2(pooled[first], pooled[~first], ours.bandwidth)
            exceed += stat >= ours.mmd2 - 1e-12
    assert ours.p_value == (1 + exceed) / (1 + b)
    assert 0.0 < ours.p_value < 1.0


def _exceedance_flags(x, y, n_permutations, seed, bandwidth, observed):
    """Per relabelling, in the order the test draws them: is it as extreme as the batch?
    (A full argsort of the same uniform draws, each statistic by the direct formula.)"""
    from tai.monitoring import drift

    pooled, n = np.concatenate([x, y]), len(x)
    rng, flags = np.random.default_rng(seed), []
    for start in range(0, n_permutations, drift._PERMUTATION_CHUNK):
        size = min(drift._PERMUTATION_CHUNK, n_permutations - start)
        for order in np.argsort(rng.random((size, len(pooled))), axis=1):
            first = np.isin(np.arange(len(pooled)), order[:n])
            stat = direct_mmd2(pooled[first], pooled[~first], bandwidth)
            flags.append(stat >= observed - 1e-12)
    return np.array(flags)


@pytest.mark.parametrize("stop_after", [1, 3, 20])
def test_the_sequential_test_stops_at_the_h_th_exceedance(stop_after):
    """Besag and Clifford's rule on a hand-checkable case: the test stops at the
    relabelling where the h-th statistic reaches the observed one, p = h / L."""
    data = np.random.default_rng(8)
    x, y = data.normal(size=(12, 2)), data.normal(size=(9, 2))  # no shift: p is large
    b = 300
    ours = mmd_test(
        x,
        y,
        n_permutations=b,
        max_samples=100,
        rng=np.random.default_rng(9),
        stop_after=stop_after,
    )
    flags = _exceedance_flags(x, y, b, 9, ours.bandwidth, ours.mmd2)
    stop = int(np.flatnonzero(flags)[stop_after - 1]) + 1
    assert ours.stopped_after == stop_after
    assert ours.n_permutations == stop < b
    assert ours.p_value == stop_after / stop


def test_the_sequential_test_runs_in_full_when_too_few_relabellings_reach_the_batch():
    data = np.random.default_rng(10)
    x, y = data.normal(size=(30, 2)), data.normal(1.0, 1.0, size=(20, 2))  # a clear shift
    full = mmd_test(x, y, n_permutations=200, max_samples=100, rng=np.random.default_rng(1))
    ours = mmd_test(
        x, y, n_permutations=200, max_samples=100, rng=np.random.default_rng(1), stop_after=20
    )
    assert ours == full  # every field, p = (1 + count) / (1 + B) included
    assert ours.stopped_after is None and ours.n_permutations == 200


def test_a_stopped_test_and_the_full_test_alarm_alike():
    """Stopping at h >= B * p_min exceedances: both p-values are >= p_min whenever the
    test stops, so "p < p_min" is decided as by the full test, over shifts of every size."""

    p_min = 0.01
    b = permutations_for(p_min)
    h = max(20, math.ceil(b * p_min))
    data = np.random.default_rng(11)
    stopped = 0
    for shift in np.linspace(0.0, 1.2, 13):
        x, y = data.normal(size=(40, 3)), data.normal(shift, 1.0, size=(30, 3))
        full = mmd_test(x, y, n_permutations=b, max_samples=100, rng=np.random.default_rng(2))
        seq = mmd_test(
            x, y, n_permutations=b, max_samples=100, rng=np.random.default_rng(2), stop_after=h
        )
        assert (seq.p_value < p_min) == (full.p_value < p_min)
        if seq.stopped_after:
            stopped += 1
            assert seq.p_value >= p_min and full.p_value >= p_min
            assert seq.n_permutations < b
        else:
            assert seq == full
    assert 0 < stopped < 13  # both kinds occurred


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_stop_after_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="stop_after"):
        mmd_test(
            np.zeros((3, 2)),
            np.ones((3, 2)),
            n_permutations=5,
            max_samples=10,
            rng=np.random.default_rng(0),
            stop_after=bad,
        )


def test_a_known_shift_is_rejected():
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(1000, 32))
    batch = rng.normal(size=(200, 32))
    batch[:, :4] += 0.5  # half a standard deviation along 4 of 32 dimensions
    result = mmd_test(
        reference, batch, n_permutations=200, max_samples=1000, rng=np.random.default_rng(0)
    )
    assert result.p_value < 0.05


def test_without_a_shift_the_p_values_are_about_uniform():
    """40 seeded repeats: rejection rate at 0.05 at most 0.15, and the p-values do not
    reject uniformity (KS test, p > 0.01)."""
    rng = np.random.default_rng(6)
    p_values = []
    for i in range(40):
        reference = rng.normal(size=(300, 16))
        batch = rng.normal(size=(150, 16))
        result = mmd_test(
            reference, batch, n_permutations=100, max_samples=300, rng=np.random.default_rng(i)
        )
        p_values.append(result.p_value)
    p_values = np.array(p_values)
    assert np.mean(p_values < 0.05) <= 0.15
    assert kstest(p_values, "uniform").pvalue > 0.01


def test_subsampling_bounds_each_side():
    rng = np.random.default_rng(7)
    result = mmd_test(
        rng.normal(size=(500, 3)),
        rng.normal(size=(400, 3)),
        n_permutations=10,
        max_samples=120,
        rng=np.random.default_rng(0),
    )
    assert (result.n_reference, result.n_batch) == (120, 120)


def test_holm_is_statsmodels():
    rng = np.random.default_rng(8)
    for size in (1, 2, 7, 20):
        p = rng.uniform(0, 0.2, size=size)
        p[0] = p[-1]  # a tie
        expected = multipletests(p, alpha=0.05, method="holm")[1]
        np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


def test_the_factors_are_scikit_learns_pca():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(400, 10)) @ rng.normal(size=(10, 10))
    ours = fit_factors(x, 4)
    pca = PCA(n_components=4).fit(x)
    for mine, theirs in zip(ours.components, pca.components_, strict=True):
        assert abs(mine @ theirs) == pytest.approx(1.0, abs=1e-8)  # equal up to sign
    np.testing.assert_allclose(ours.explained_variance_ratio, pca.explained_variance_ratio_)
    np.testing.assert_allclose(np.abs(ours.transform(x)), np.abs(pca.transform(x)), atol=1e-8)
    # Signs: the largest absolute loading of every component is positive.
    biggest = np.abs(ours.components).argmax(axis=1)
    assert (ours.components[np.arange(4), biggest] > 0).all()
    assert fit_factors(x[:3], 8).components.shape == (2, 10)  # at most N - 1


def test_a_shift_along_one_factor_is_named_and_the_others_are_not():
    rng = np.random.default_rng(10)
    scales = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    reference = rng.normal(size=(1000, 6)) * scales
    batch = rng.normal(size=(300, 6)) * scales
    batch[:, 2] += 2.0  # two thirds of a standard deviation along the third factor
    factors = fit_factors(reference, 4)
    ref_scores, batch_scores = factors.transform(reference), factors.transform(batch)
    result = factor_drift(ref_scores, batch_scores, factors.explained_variance_ratio, alpha=0.05)
    assert [f.drifted for f in result] == [False, False, True, False]
    assert max(result, key=lambda f: f.ks_statistic).factor == 2
    for f in result:
        expected = ks_2samp(ref_scores[:, f.factor], batch_scores[:, f.factor])
        assert f.ks_statistic == pytest.approx(expected.statistic)
        assert f.p_value == pytest.approx(expected.pvalue)
    adjusted = holm(np.array([f.p_value for f in result]))
    assert [f.adjusted_p_value for f in result] == pytest.approx(list(adjusted))


def test_noise_shift_by_hand_and_mann_whitney():
    train = np.array([0.010, 0.012, 0.011, 0.013, 0.009])
    batch = np.array([0.020, 0.022, 0.019])
    result = noise_shift(batch, train)
    assert result.batch_median == 0.020 and result.training_median == 0.011
    assert result.shift == pytest.approx(0.009)
    assert result.p_value == pytest.approx(mannwhitneyu(batch, train).pvalue)
    assert np.isnan(noise_shift(batch[:1], train).p_value)


@pytest.mark.parametrize(
    ("p", "expected"), [(0.001, 2000), (0.01, 200), (0.05, 40), (0.003, 667), (1e-4, 20000)]
)
def test_permutations_for_a_threshold_reach_below_half_of_it(p, expected):
    n = permutations_for(p)
    assert n == expected  # ceil(2 / p)
    assert 1 / (1 + n) < p / 2


def test_the_smallest_p_value_is_one_over_one_plus_the_permutations():
    # Two far-apart clouds: no relabelling is as extreme as the observed split, so the
    # p-value is the smallest the test can give, and it is below the threshold the
    # permutations were derived from.
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(60, 3)), rng.normal(5.0, 1.0, size=(40, 3))
    n = permutations_for(0.001)
    result = mmd_test(x, y, n_permutations=n, max_samples=100, rng=np.random.default_rng(0))
    assert result.p_value == 1 / (1 + n) < 0.001


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan"), True, "0.01"])
def test_an_impossible_p_value_threshold_is_refused(p):
    with pytest.raises(ValueError, match="p-value threshold"):
        permutations_for(p)
