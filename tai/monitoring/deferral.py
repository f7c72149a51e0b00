r"""How often the deployed model defers to a human on a batch, against validation.

A selective classifier (:mod:`tai.principles.autonomy.selective`) answers an image when
its calibrated top probability reaches the abstention threshold :math:`\theta` and defers
it to a person otherwise. On validation :math:`d_0` of :math:`n` images were deferred (a
share :math:`r_0 = d_0 / n`); on a batch of :math:`m` images :math:`d` are. Under "nothing
changed" both counts are draws of the same deferral probability, and the test
(:func:`deferral_test`) is Fisher's exact test of the 2x2 table

.. math::
    \begin{pmatrix} d & m - d \\ d_0 & n - d_0 \end{pmatrix}

(``scipy.stats.fisher_exact``, two-sided: the p-value sums the hypergeometric
probabilities of every table with the same margins no more likely than the observed
one). Two-sided, because fewer deferrals than expected also mean the confidences moved
(e.g. an overconfident model under a shift). A two-sample test, because :math:`r_0` is
itself an estimate: testing :math:`d \sim \mathrm{Binomial}(m, r_0)` as if :math:`r_0`
were exact ignores its sampling error, and the variance of :math:`d/m - r_0` is
:math:`r(1-r)(1/m + 1/n)`, not :math:`r(1-r)/m`; with batches of 500 and 750 validation
images the binomial test understates it by 40% and alarms on benign batches far more
often than its level (measured: 9 of 30 benign batches at ``p < 0.001`` in
``benchmarks/monitoring.py``, seed 0, none with Fisher's test). Without the validation
count (``n_reference=None``) the exact binomial test against :math:`r_0`
(``scipy.stats.binomtest``) is the fallback. The interval of the batch's deferral rate is
Clopper-Pearson (exact) either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, fisher_exact

__all__ = ["DeferralTest", "deferral_test"]


@dataclass(frozen=True)
class DeferralTest:
    """The batch's deferral rate against the validation's.

    Attributes:
        threshold: the abstention threshold: an image is deferred when its top
            probability is below it.
        n_deferred: images of the batch deferred.
        n_images: images in the batch.
        rate: ``n_deferred / n_images``.
        lower: lower bound of the rate's Clopper-Pearson interval.
        upper: its upper bound.
        expected_rate: the validation's deferral rate.
        p_value: two-sided p-value of "the batch defers as often as validation".
        method: ``"fisher"`` (Fisher's exact test against the validation count) or
            ``"binomial"`` (the exact binomial test against ``expected_rate``, when the
            validation count is unknown).
        n_reference: validation images (None for the binomial test).
        n_reference_deferred: validation images deferred (None for the binomial test).
    """

    threshold: float
    n_deferred: int
    n_images: int
    rate: float
    lower: float
    upper: float
    expected_rate: float
    p_value: float
    method: str = "binomial"
    n_reference: int | None = None
    n_reference_deferred: int | None = None


def deferral_test(
    confidences: np.ndarray,
    threshold: float,
    expected_rate: float,
    *,
    n_reference: int | None = None,
    confidence: float = 0.95,
) -> DeferralTest:
    """Deferral rate of a batch, its exact interval and the test against validation
    (module docstring).

    Args:
        confidences: ``(m,)`` calibrated top probabilities of the batch, ``m >= 1``.
        threshold: the abstention threshold (defer when below).
        expected_rate: the validation's deferral rate, in [0, 1].
        n_reference: validation images the rate was measured on; their deferred count
            is ``round(expected_rate * n_reference)``. None: test against
            ``expected_rate`` as if it were exact (binomial).
        confidence: level of the rate's interval.

    Raises:
        ValueError: ``n_reference`` is not a positive integer, or ``expected_rate *
            n_reference`` is not (close to) a count.
    """
    m = len(confidences)
    d = int(np.count_nonzero(confidences < threshold))
    ci = binomtest(d, m).proportion_ci(confidence_level=confidence, method="exact")
    method, d0, p_value = "binomial", None, None
    if n_reference is None:
        p_value = float(binomtest(d, m, float(expected_rate)).pvalue)
    else:
        if isinstance(n_reference, bool) or not isinstance(n_reference, int | np.integer):
            raise ValueError(f"Expected `n_reference` to be an integer, but got {n_reference!r}.")
        n = int(n_reference)
        exact = float(expected_rate) * n
        d0 = round(exact)
        if n < 1 or abs(exact - d0) > 1e-6 * max(1, n):
            raise ValueError(
                f"Expected `expected_rate * n_reference` to be a count of validation images, "
                f"but got {expected_rate!r} * {n_reference!r} = {exact:.6g}. Pass the rate "
                "measured on the n_reference validation images."
            )
        method = "fisher"
        p_value = float(fisher_exact([[d, m - d], [d0, n - d0]]).pvalue)
    return DeferralTest(
        threshold=float(threshold),
        n_deferred=d,
        n_images=m,
        rate=d / m,
        lower=float(ci.low),
        upper=float(ci.high),
        expected_rate=float(expected_rate),
        p_value=min(1.0, p_value),
        method=method,
        n_reference=None if d0 is None else n,
        n_reference_deferred=d0,
    )
