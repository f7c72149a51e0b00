r"""How often the deployed model defers to a human on a batch, against validation.

A selective classifier (:mod:`tai.principles.autonomy.selective`) answers an image when
its calibrated top probability reaches the abstention threshold :math:`\theta` and defers
it to a person otherwise. On validation a share :math:`r_0` was deferred; on a batch of
:math:`m` images :math:`d` are. Under "nothing changed" :math:`d \sim
\mathrm{Binomial}(m, r_0)`; the two-sided exact binomial test (``scipy.stats.binomtest``,
the p-value sums the probabilities of every count no more likely than :math:`d`) says how
surprising :math:`d` is. Two-sided, because fewer deferrals than expected also mean the
confidences moved (e.g. an overconfident model under a shift). The interval of the
deferral rate is Clopper-Pearson (exact).

:math:`r_0` is taken as known: its own sampling error (``n_val`` images) is ignored, which
makes the test slightly anti-conservative when ``n_val`` is not much larger than
:math:`m` (with ``n_val = 10 m`` the variance of :math:`d / m - r_0` grows by 10%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

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
        p_value: two-sided exact binomial test of ``rate == expected_rate``.
    """

    threshold: float
    n_deferred: int
    n_images: int
    rate: float
    lower: float
    upper: float
    expected_rate: float
    p_value: float


def deferral_test(
    confidences: np.ndarray, threshold: float, expected_rate: float, *, confidence: float = 0.95
) -> DeferralTest:
    """Deferral rate of a batch, its exact interval and the binomial test against
    ``expected_rate`` (module docstring).

    Args:
        confidences: ``(m,)`` calibrated top probabilities of the batch, ``m >= 1``.
        threshold: the abstention threshold (defer when below).
        expected_rate: the validation's deferral rate, in [0, 1].
        confidence: level of the rate's interval.
    """
    m = len(confidences)
    d = int(np.count_nonzero(confidences < threshold))
    test = binomtest(d, m, float(expected_rate))
    ci = test.proportion_ci(confidence_level=confidence, method="exact")
    return DeferralTest(
        threshold=float(threshold),
        n_deferred=d,
        n_images=m,
        rate=d / m,
        lower=float(ci.low),
        upper=float(ci.high),
        expected_rate=float(expected_rate),
        p_value=float(test.pvalue),
    )
