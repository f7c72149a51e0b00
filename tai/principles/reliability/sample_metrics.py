"""The metrics that are a function of (probabilities, targets) alone, and their intervals.

One definition of each (the calibration module's), used for the reported value, its
confidence bounds and the paired comparison with the champion, so the three can never
disagree on what the metric is. Accuracy gets the Wilson score interval (Wilson 1927),
the ECE the calibration module's own bootstrap, the others a percentile bootstrap
(Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import binomtest
from torch import Tensor

from tai.inputs import check_confidence
from tai.principles.reliability.calibration import (
    adaptive_calibration_error,
    brier_score,
    classwise_calibration_error,
    expected_calibration_error,
    negative_log_likelihood,
)

MetricFn = Callable[[Tensor, Tensor], float]
N_BINS = 15  # the bins of every binned metric of the report (Guo et al. 2017)


def accuracy(probs: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> float:
    """Top-1 accuracy of ``(N, C)`` scores against ``(N,)`` class indices (tensors or
    arrays: the paired bootstrap passes arrays)."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(targets)))


SAMPLE_METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "ece": lambda p, t: float(expected_calibration_error(p, t, n_bins=N_BINS)),
    "mce": lambda p, t: float(expected_calibration_error(p, t, n_bins=N_BINS, norm="max")),
    "adaptive_ece": lambda p, t: float(adaptive_calibration_error(p, t, n_bins=N_BINS)),
    "classwise_ece": lambda p, t: float(classwise_calibration_error(p, t, n_bins=N_BINS)),
    "nll": negative_log_likelihood,
    "brier": brier_score,
}


def wilson_interval(correct: int, total: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy's ``binomtest(...).proportion_ci``)."""
    check_confidence(confidence)
    ci = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(
    metric_fn: MetricFn,
    probs: Tensor,
    targets: Tensor,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``metric_fn(probs, targets)``, resampling the
    samples with replacement (``generator`` seeds the draws).

    Raises:
        ValueError: no samples, or ``confidence`` outside (0, 1).
    """
    check_confidence(confidence)
    n = len(targets)
    if n == 0:
        raise ValueError("no samples: a confidence interval needs at least one")
    values = np.array(
        [
            metric_fn(probs[idx], targets[idx])
            for idx in (torch.randint(0, n, (n,), generator=generator) for _ in range(n_resamples))
        ]
    )
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
