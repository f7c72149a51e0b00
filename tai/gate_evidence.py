"""The statistics statistically sound gates need: confidence bounds and paired comparisons.

A gate policy (:mod:`tai.policy`) may judge a bound of a metric's confidence interval
(``use: lower | upper``) or the paired difference with the champion (``champion:``
section). This module computes both from the per-sample probabilities of the test split:

- Accuracy: the Wilson interval of the proportion of correct predictions; against the
  champion, Newcombe's paired interval with McNemar's exact test
  (:func:`tai.significance.accuracy_difference`).
- ECE: the report's own bootstrap (:func:`tai.calibration.ece_confidence_interval`), so
  at 95% the gate's bound is the report's ``ece_upper``.
- The other per-sample metrics (:data:`SAMPLE_METRICS`: MCE, adaptive and classwise
  ECE, NLL, Brier score): percentile-bootstrap intervals, and the paired bootstrap
  (:func:`tai.significance.paired_bootstrap`) against the champion.
- Fairness (worst-class accuracy, class gap, worst-group accuracy, group gap): the
  stratified bootstrap bounds :mod:`tai.fairness` already computes at the same level.

:data:`BOUNDED_METRICS` and :data:`COMPARABLE_METRICS` are the names a policy may use
with bounds or in its ``champion`` section; the pipeline refuses others before training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from tai.calibration import (
    adaptive_calibration_error,
    classwise_calibration_error,
    ece_confidence_interval,
    expected_calibration_error,
)
from tai.checks import check_confidence
from tai.significance import (
    PairedDifference,
    accuracy,
    accuracy_difference,
    paired_bootstrap,
    proportion_interval,
)

MetricFn = Callable[[Tensor, Tensor], float]


def _nll(probs: Tensor, targets: Tensor) -> float:
    picked = probs[torch.arange(len(targets)), targets].clamp_min(1e-12)
    return float(-picked.log().mean())


def _brier(probs: Tensor, targets: Tensor) -> float:
    onehot = torch.nn.functional.one_hot(targets, probs.shape[1]).to(probs.dtype)
    return float((probs - onehot).square().sum(1).mean())


# Metrics of the TAI report that are a function of (probabilities, targets) alone; the
# same definitions as tai.calibration.calibration_summary.
SAMPLE_METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "ece": lambda p, t: float(expected_calibration_error(p, t, n_bins=15)),
    "mce": lambda p, t: float(expected_calibration_error(p, t, n_bins=15, norm="max")),
    "adaptive_ece": lambda p, t: float(adaptive_calibration_error(p, t, n_bins=15)),
    "classwise_ece": lambda p, t: float(classwise_calibration_error(p, t, n_bins=15)),
    "nll": _nll,
    "brier": _brier,
}
FAIRNESS_BOUNDED = (
    "worst_class_accuracy",
    "class_accuracy_gap",
    "worst_group_accuracy",
    "group_error_rate_gap",
)
BOUNDED_METRICS = (*SAMPLE_METRICS, *FAIRNESS_BOUNDED)
COMPARABLE_METRICS = tuple(SAMPLE_METRICS)


def bootstrap_interval(
    metric_fn: MetricFn,
    probs: Tensor,
    targets: Tensor,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``metric_fn(probs, targets)`` (Efron &
    Tibshirani 1993, ch. 13), resampling the samples with replacement (seeded)."""
    check_confidence(confidence)
    if len(targets) == 0:
        raise ValueError("no samples: a confidence interval needs at least one")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            metric_fn(probs[idx], targets[idx])
            for idx in (
                torch.from_numpy(rng.integers(0, len(targets), len(targets)))
                for _ in range(n_resamples)
            )
        ]
    )
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def metric_bounds(
    names: Sequence[str],
    probs: Tensor,
    targets: Tensor,
    *,
    confidence: float,
    fairness_bounds: Mapping[str, tuple[float, float]] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """``(lower, upper)`` at ``confidence`` for each metric in ``names``.

    Args:
        names: metrics a policy judges by a bound (``GatePolicy.bound_metrics()``).
        probs: ``(N, C)`` probabilities of the test split.
        targets: ``(N,)`` class indices.
        confidence: two-sided level, the policy's.
        fairness_bounds: bounds :mod:`tai.fairness` computed at the same level.
        n_resamples: bootstrap resamples.
        seed: seeds the bootstrap.

    Raises:
        ValueError: a name is not in :data:`BOUNDED_METRICS`.
    """
    unknown = [n for n in names if n not in BOUNDED_METRICS]
    if unknown:
        raise ValueError(
            f"no confidence bound for {', '.join(map(repr, unknown))}; bounds exist for: "
            f"{', '.join(BOUNDED_METRICS)}"
        )
    bounds: dict[str, tuple[float, float]] = {}
    for name in names:
        if name == "accuracy":
            correct = int((probs.argmax(1) == targets).sum())
            interval = proportion_interval(correct, len(targets), confidence, method="wilson")
            bounds[name] = (interval.lower, interval.upper)
        elif name == "ece":
            # The same bootstrap as the report's ece_lower/ece_upper (equal at 95%).
            _, lower, upper = ece_confidence_interval(
                probs, targets, n_bins=15, n_boot=n_resamples, level=confidence, seed=seed
            )
            bounds[name] = (lower, upper)
        elif name in SAMPLE_METRICS:
            bounds[name] = bootstrap_interval(
                SAMPLE_METRICS[name],
                probs,
                targets,
                confidence=confidence,
                n_resamples=n_resamples,
                seed=seed,
            )
        elif fairness_bounds and name in fairness_bounds:
            bounds[name] = fairness_bounds[name]
    return bounds


def champion_comparisons(
    names: Sequence[str],
    champion_probs: Tensor,
    challenger_probs: Tensor,
    targets: Tensor,
    *,
    confidence: float,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """Paired ``challenger - champion`` differences on the same test samples.

    Raises:
        ValueError: a name is not in :data:`COMPARABLE_METRICS`, or the two models'
            outputs do not cover the same samples.
    """
    unknown = [n for n in names if n not in COMPARABLE_METRICS]
    if unknown:
        raise ValueError(
            f"cannot compare {', '.join(map(repr, unknown))} with the champion; comparable: "
            f"{', '.join(COMPARABLE_METRICS)}"
        )
    if champion_probs.shape != challenger_probs.shape:
        raise ValueError(
            f"champion and challenger outputs differ in shape: {tuple(champion_probs.shape)} "
            f"vs {tuple(challenger_probs.shape)}; compare them on the same test split"
        )
    comparisons = {}
    for name in names:
        if name == "accuracy":
            comparisons[name] = accuracy_difference(
                (champion_probs.argmax(1) == targets).numpy(),
                (challenger_probs.argmax(1) == targets).numpy(),
                confidence,
            )
        else:
            comparisons[name] = paired_bootstrap(
                SAMPLE_METRICS[name],
                champion_probs,
                challenger_probs,
                targets,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
            )
    return comparisons
