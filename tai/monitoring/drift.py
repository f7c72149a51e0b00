r"""Has the batch's input distribution moved? Embedding MMD, factor KS tests, noise level.

Kernel two-sample test (Gretton, Borgwardt, Rasch, Schölkopf & Smola, "A Kernel
Two-Sample Test", JMLR 13, 2012) of the batch's penultimate-layer embeddings
:math:`y_1..y_m` against the reference's sample of training embeddings :math:`x_1..x_n`
(:func:`mmd_test`). With the Gaussian kernel
:math:`k(a, b) = \exp(-\lVert a - b \rVert^2 / (2\sigma^2))`,

.. math::
    \mathrm{MMD}^2_b = \frac{1}{n^2} \sum_{i,i'} k(x_i, x_{i'})
    + \frac{1}{m^2} \sum_{j,j'} k(y_j, y_{j'}) - \frac{2}{nm} \sum_{i,j} k(x_i, y_j)

(the biased V-statistic, the paper's eq. 5, as :func:`tai.data.factors.factor_drift`).
:math:`\sigma` is the median distance between distinct points of the pooled sample (the
"median heuristic", §8 of the paper), computed once on the pooled sample, so it does not
change under relabelling and the permutation test stays exact. p-value:
:math:`(1 + \#\{b : \mathrm{MMD}^2_{(b)} \ge \mathrm{MMD}^2\}) / (1 + B)` over ``B``
random relabellings of the pooled points (seeded). With ``stop_after = h`` the test stops
once ``h`` relabellings have reached the observed statistic, after ``L <= B`` of them, and
the p-value is Besag and Clifford's sequential one, :math:`h / L` ("Sequential Monte Carlo
p-values", Biometrika 78(2), 1991), valid like the full test's. A batch like the reference
(a large p-value) then costs about :math:`h / p` relabellings instead of ``B``; a batch
that stops is one the full test would not have rejected at any level below
:math:`h / B` either (both p-values are at least that). Each side is first subsampled
(seeded, without replacement) to at most ``max_samples`` points, which bounds the cost
at :math:`O(B (n + m)^2)`.

Factor drift (:func:`factor_drift`): the top principal components of the training
embeddings (:func:`fit_factors`, fitted once and stored in the reference) are the
factors; per factor, the batch's scores are compared with the stored training scores by
the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``). The p-values are
corrected by Holm's step-down procedure (Holm, "A Simple Sequentially Rejective Multiple
Test Procedure", Scand. J. Statist. 6, 1979), which controls the family-wise error rate:
an alarm on "some factor drifted" is then a false alarm with probability at most
``alpha``, as for the MMD test. A factor *drifted* when its Holm-adjusted p-value is
below ``alpha``.

Noise level (:func:`noise_shift`): the median wavelet noise level of the batch's images
(:func:`tai.data.profile.estimate_noise_sigma`, computed by the caller) against a sample
of the training images', with the two-sided Mann-Whitney U test.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp, mannwhitneyu

__all__ = [
    "FactorShift",
    "Factors",
    "MmdTest",
    "NoiseShift",
    "factor_drift",
    "fit_factors",
    "gaussian_mmd2",
    "holm",
    "median_bandwidth",
    "mmd_test",
    "noise_shift",
    "permutations_for",
]

# Relabellings scored at once by the permutation test (bounds memory at ~16 MiB).
_PERMUTATION_CHUNK = 128


def permutations_for(p_value: float) -> int:
    r"""Relabellings enough for the permutation test to go below ``p_value``:
    :math:`B = \lceil 2 / p \rceil`.

    The smallest p-value of :func:`mmd_test` is :math:`1 / (1 + B)`; a rule "alarm when
    p < ``p_value``" can only fire when that is below ``p_value``. With
    :math:`B = \lceil 2/p \rceil` it is below :math:`p/2`, so a batch more extreme than
    all but a few relabellings still alarms.

    Raises:
        ValueError: ``p_value`` is not a number in (0, 1].
    """
    ok = isinstance(p_value, numbers.Real) and not isinstance(p_value, bool)
    if not ok or not 0 < float(p_value) <= 1:
        raise ValueError(f"Expected a p-value threshold in (0, 1], but got {p_value!r}.")
    # The tolerance keeps an exact quotient (2 / 0.001) from rounding up to the next count.
    return math.ceil(2.0 / float(p_value) * (1 - 1e-12))


@dataclass(frozen=True)
class MmdTest:
    """The kernel two-sample test of the batch against the reference.

    Attributes:
        mmd2: the biased MMD² of the (subsampled) samples.
        p_value: its permutation p-value.
        bandwidth: the Gaussian kernel's sigma (median heuristic).
        n_reference: reference points tested (after subsampling).
        n_batch: batch points tested (after subsampling).
        n_permutations: relabellings drawn: ``B``, or fewer when the test stopped early.
        stopped_after: ``h`` when the test stopped at its ``h``-th relabelling as extreme
            as the batch (``p_value = h / n_permutations``), else None.
    """

    mmd2: float
    p_value: float
    bandwidth: float
    n_reference: int
    n_batch: int
    n_permutations: int
    stopped_after: int | None = None


def _squared_distances(z: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", z, z)
    d2 = norms[:, None] + norms[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def median_bandwidth(squared_distances: np.ndarray) -> float:
    """The median distance between distinct points (of the upper triangle); the median of
    the positive ones if that is 0, and 1.0 if every point coincides."""
    upper = squared_distances[np.triu_indices(len(squared_distances), k=1)]
    median = float(np.median(upper)) if upper.size else 0.0
    if median <= 0:
        positive = upper[upper > 0]
        median = float(np.median(positive)) if positive.size else 1.0
    return float(np.sqrt(median))


def gaussian_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """The biased MMD² of ``x`` and ``y`` with a Gaussian kernel of sigma ``bandwidth``."""
    kernel = np.exp(-_squared_distances(np.concatenate([x, y])) / (2 * bandwidth**2))
    n = len(x)
    return float(kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean())


def mmd_test(
    reference: np.ndarray,
    batch: np.ndarray,
    *,
    n_permutations: int,
    max_samples: int,
    rng: np.random.Generator,
    stop_after: int | None = None,
) -> MmdTest:
    """Kernel two-sample test of ``batch`` against ``reference`` (module docstring).

    Args:
        reference: ``(n, D)`` reference points, ``n >= 2``.
        batch: ``(m, D)`` batch points, ``m >= 2``.
        n_permutations: relabellings ``B >= 1``.
        max_samples: most points kept per side.
        rng: numpy generator of the subsampling and the relabellings.
        stop_after: stop at this many relabellings as extreme as the batch, with the
            sequential p-value (module docstring); None: always all ``B``.

    Raises:
        ValueError: ``stop_after`` is not an integer >= 1 or None.
    """
    if stop_after is not None and (
        isinstance(stop_after, bool)
        or not isinstance(stop_after, numbers.Integral)
        or stop_after < 1
    ):
        raise ValueError(
            f"Expected `stop_after` to be an integer >= 1 or None, but got {stop_after!r}."
        )
    x = _subsample(reference, max_samples, rng)
    y = _subsample(batch, max_samples, rng)
    pooled = np.concatenate([x, y])
    d2 = _squared_distances(pooled)
    sigma = median_bandwidth(d2)
    kernel = np.exp(d2 * (-0.5 / sigma**2))
    n, total = len(x), len(pooled)
    row_sums = kernel.sum(axis=1)
    grand = row_sums.sum()

    def statistic(first: np.ndarray) -> np.ndarray:
        """MMD² of each relabelling whose first sample is the rows of ``first`` (bool
        masks): from s_xx = 1_A' K 1_A and s_x = 1_A' K 1 alone."""
        a = first.astype(np.float64)
        s_xx = np.einsum("bi,bi->b", a @ kernel, a)
        s_x = a @ row_sums
        s_xy = s_x - s_xx
        s_yy = grand - 2 * s_x + s_xx
        m = total - n
        return s_xx / n**2 + s_yy / m**2 - 2 * s_xy / (n * m)

    observed = float(statistic((np.arange(total) < n)[None])[0])
    exceed = 0
    for start in range(0, n_permutations, _PERMUTATION_CHUNK):
        size = min(_PERMUTATION_CHUNK, n_permutations - start)
        # Each relabelling's first sample: the n smallest of `total` uniform draws, a
        # uniformly random n-subset. A partition finds them (the same set as a full
        # argsort's first n, which took half the self-test's time: 2.6x slower).
        draws = rng.random((size, total))
        first = draws <= np.partition(draws, n - 1, axis=1)[:, n - 1 : n]
        # The tolerance counts relabellings equal to the observed one up to rounding.
        hits = np.flatnonzero(statistic(first) >= observed - 1e-12)
        if stop_after is not None and exceed + len(hits) >= stop_after:
            drawn = start + int(hits[stop_after - exceed - 1]) + 1
            return MmdTest(
                mmd2=observed,
                p_value=stop_after / drawn,
                bandwidth=sigma,
                n_reference=n,
                n_batch=total - n,
                n_permutations=drawn,
                stopped_after=int(stop_after),
            )
        exceed += len(hits)
    return MmdTest(
        mmd2=observed,
        p_value=(1 + exceed) / (1 + n_permutations),
        bandwidth=sigma,
        n_reference=n,
        n_batch=total - n,
        n_permutations=int(n_permutations),
    )


def _subsample(x: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= max_samples:
        return x
    return x[np.sort(rng.choice(len(x), size=max_samples, replace=False))]


@dataclass(frozen=True)
class Factors:
    """The top principal components of the training embeddings.

    Attributes:
        mean: ``(D,)`` the embeddings' mean.
        components: ``(F, D)`` orthonormal directions, by decreasing variance; the sign of
            each makes its largest absolute loading positive (scikit-learn's
            ``svd_flip``), so a fit is deterministic.
        explained_variance_ratio: ``(F,)`` share of the total variance of each.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N, F)`` factor scores of ``(N, D)`` embeddings."""
        return (embeddings - self.mean) @ self.components.T


def fit_factors(embeddings: np.ndarray, n_factors: int) -> Factors:
    """PCA of ``(N, D)`` embeddings (``N >= 2``), keeping ``min(n_factors, D, N - 1)``
    components: the eigenvectors of the sample covariance (``O(N D^2)``), as
    ``sklearn.decomposition.PCA`` up to numerical precision."""
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    covariance = centred.T @ centred / (len(embeddings) - 1)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    k = min(n_factors, embeddings.shape[1], len(embeddings) - 1)
    components = vectors[:, order[:k]].T
    biggest = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(k), biggest])
    signs[signs == 0] = 1.0
    total = float(np.clip(values, 0, None).sum())
    ratio = np.clip(values[order[:k]], 0, None) / total if total > 0 else np.zeros(k)
    return Factors(mean, components * signs[:, None], ratio)


def holm(p_values: np.ndarray) -> np.ndarray:
    r"""Holm's step-down adjusted p-values: with :math:`p_{(1)} \le \dots \le p_{(F)}`,
    :math:`\tilde p_{(i)} = \max_{j \le i} \min(1, (F - j + 1)\, p_{(j)})`, in the input
    order. Rejecting :math:`\tilde p < \alpha` controls the family-wise error at
    :math:`\alpha`."""
    p = np.asarray(p_values, dtype=np.float64)
    f = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (f - np.arange(f)) * p[order])
    adjusted = np.empty(f)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


@dataclass(frozen=True)
class FactorShift:
    """The KS test of one factor of the batch against the training sample.

    Attributes:
        factor: the factor's index (0 = the component of largest variance).
        explained_variance_ratio: its share of the training embeddings' variance.
        ks_statistic: the largest distance between the two empirical CDFs, in [0, 1].
        p_value: the KS test's p-value.
        adjusted_p_value: Holm-adjusted over the factors.
        drifted: ``adjusted_p_value < alpha``.
    """

    factor: int
    explained_variance_ratio: float
    ks_statistic: float
    p_value: float
    adjusted_p_value: float
    drifted: bool


def factor_drift(
    reference_scores: np.ndarray,
    batch_scores: np.ndarray,
    explained_variance_ratio: np.ndarray,
    *,
    alpha: float,
) -> tuple[FactorShift, ...]:
    """Per-factor KS tests with Holm's correction (module docstring), in factor order.

    Args:
        reference_scores: ``(n, F)`` training factor scores.
        batch_scores: ``(m, F)`` the batch's.
        explained_variance_ratio: ``(F,)`` of the factors (recorded in the result).
        alpha: family-wise level of "drifted".
    """
    tests = [
        ks_2samp(reference_scores[:, j], batch_scores[:, j])
        for j in range(reference_scores.shape[1])
    ]
    raw = np.array([float(t.pvalue) for t in tests])
    adjusted = holm(raw)
    return tuple(
        FactorShift(
            factor=j,
            explained_variance_ratio=float(explained_variance_ratio[j]),
            ks_statistic=float(t.statistic),
            p_value=float(raw[j]),
            adjusted_p_value=float(adjusted[j]),
            drifted=bool(adjusted[j] < alpha),
        )
        for j, t in enumerate(tests)
    )


@dataclass(frozen=True)
class NoiseShift:
    """The batch's noise level against the training images'.

    Attributes:
        batch_median: median noise sigma of the batch's images.
        training_median: median of the reference's training sample.
        shift: ``batch_median - training_median`` (pixel units of [0, 1] images).
        p_value: two-sided Mann-Whitney U test of the two samples.
        n_batch: batch sigmas.
        n_training: training sigmas.
    """

    batch_median: float
    training_median: float
    shift: float
    p_value: float
    n_batch: int
    n_training: int


def noise_shift(batch_sigmas: np.ndarray, training_sigmas: np.ndarray) -> NoiseShift:
    """Median noise level of the batch against the training sample, with the two-sided
    Mann-Whitney U test (NaN p-value when either side has a single value)."""
    if len(batch_sigmas) > 1 and len(training_sigmas) > 1:
        p = float(mannwhitneyu(batch_sigmas, training_sigmas, alternative="two-sided").pvalue)
    else:
        p = float("nan")
    b, t = float(np.median(batch_sigmas)), float(np.median(training_sigmas))
    return NoiseShift(b, t, b - t, p, len(batch_sigmas), len(training_sigmas))
