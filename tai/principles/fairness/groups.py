"""Fairness across labelled groups (a ``metadata.csv`` column): per-group accuracy and error
rate through fairlearn's ``MetricFrame``, the worst-group accuracy of Sagawa et al.
(ICLR 2020, https://arxiv.org/abs/1911.08731) and the group error-rate gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fairlearn.metrics import MetricFrame, count
from sklearn.metrics import accuracy_score, zero_one_loss

from tai.inputs import listed, string_labels
from tai.principles.fairness._common import (
    _bootstrap_arg_validation,
    _min_and_gap_intervals,
    _predictions,
    _stratified_accuracy_bootstrap,
    _targets,
)


@dataclass(frozen=True)
class GroupFairness:
    """Per-group accuracy, worst-group accuracy and the group error-rate gap.

    Attributes:
        column: the ``metadata.csv`` column the groups come from.
        groups: the group names, sorted.
        accuracy: accuracy within each group.
        error_rate: ``1 - accuracy`` within each group.
        count: number of samples of each group.
        worst_group: name of the group with the lowest accuracy (the first on a tie).
        worst_group_accuracy: the lowest group accuracy.
        worst_group_accuracy_lower: lower bound of its bootstrap confidence interval.
        worst_group_accuracy_upper: upper bound of that interval.
        group_error_rate_gap: highest minus lowest group error rate.
        group_error_rate_gap_lower: lower bound of its bootstrap confidence interval.
        group_error_rate_gap_upper: upper bound of that interval.
        confidence: coverage of the intervals.
        n_resamples: number of bootstrap resamples.
    """

    column: str
    groups: tuple[str, ...]
    accuracy: tuple[float, ...]
    error_rate: tuple[float, ...]
    count: tuple[int, ...]
    worst_group: str
    worst_group_accuracy: float
    worst_group_accuracy_lower: float
    worst_group_accuracy_upper: float
    group_error_rate_gap: float
    group_error_rate_gap_lower: float
    group_error_rate_gap_upper: float
    confidence: float
    n_resamples: int

    def as_dict(self) -> dict[str, float]:
        """Scalars for logging: worst-group accuracy and group error-rate gap with bounds."""
        return {
            "worst_group_accuracy": self.worst_group_accuracy,
            "worst_group_accuracy_lower": self.worst_group_accuracy_lower,
            "worst_group_accuracy_upper": self.worst_group_accuracy_upper,
            "group_error_rate_gap": self.group_error_rate_gap,
            "group_error_rate_gap_lower": self.group_error_rate_gap_lower,
            "group_error_rate_gap_upper": self.group_error_rate_gap_upper,
        }

    def per_group(self) -> dict[str, list[Any]]:
        """Columns of a per-group table: ``group``, ``accuracy``, ``error_rate``, ``count``."""
        return {
            "group": list(self.groups),
            "accuracy": list(self.accuracy),
            "error_rate": list(self.error_rate),
            "count": list(self.count),
        }


def group_fairness(
    preds: Any,
    targets: Any,
    groups: Sequence[str],
    *,
    column: str,
    expected_groups: Sequence[str] | None = None,
    min_samples: int = 1,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> GroupFairness:
    r"""Per-group accuracy, worst-group accuracy and the group error-rate gap.

    Per-group accuracy, error rate (``1 - accuracy``) and count come from fairlearn's
    ``MetricFrame``; the worst-group accuracy is its ``group_min()`` of the accuracy
    (Sagawa et al. 2020) and the gap its ``difference()`` of the error rate (largest minus
    smallest group error rate). The confidence intervals are percentile intervals of
    ``n_resamples`` bootstrap resamples stratified by group; as in :func:`class_fairness`
    they are biased (minimum downwards, gap upwards) and the worse bound is the one to gate.

    Args:
        preds: ``(N, C)`` scores or ``(N,)`` predicted class indices.
        targets: ``(N,)`` integer class indices.
        groups: ``N`` group names, one per sample (e.g. from :func:`read_group_column`).
        column: the name of the group column, for the result and error messages.
        expected_groups: the groups the split should hold; every one must have samples and
            no other group may occur. By default the groups seen in ``groups``.
        min_samples: fewest samples a group may have; the worst-group accuracy of a group
            of a handful of samples says little.
        n_resamples: number of bootstrap resamples, ``>= 1``.
        confidence: coverage of the intervals, in ``(0, 1)``.
        seed: seed of the resampling.

    Returns:
        A :class:`GroupFairness`.

    Raises:
        ValueError: if an argument or input is invalid, an expected group has no samples,
            an unexpected group occurs, or a group has fewer than ``min_samples`` samples.

    Example:
        >>> result = group_fairness(
        ...     [0, 1, 1, 0, 1], [0, 1, 0, 0, 0], ["x", "x", "y", "y", "y"], column="site",
        ...     n_resamples=100)
        >>> result.per_group()["accuracy"], result.worst_group
        ([1.0, 0.3333333333333333], 'y')
        >>> round(result.worst_group_accuracy, 4), round(result.group_error_rate_gap, 4)
        (0.3333, 0.6667)
    """
    _bootstrap_arg_validation(n_resamples, confidence, seed)
    if not isinstance(column, str) or not column:
        raise ValueError(
            f"Expected argument `column` to be the non-empty name of the group column, but "
            f"got {column!r}."
        )
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise ValueError(
            f"Expected argument `min_samples` to be an integer >= 1, but got {min_samples!r}."
        )
    pred_idx, _ = _predictions(preds)
    targets = _targets(targets, pred_idx.shape[0])
    labels = np.asarray(string_labels(groups, f"the groups of column {column!r}"), dtype=object)
    if labels.shape[0] != pred_idx.shape[0]:
        raise ValueError(
            f"Expected one group of column {column!r} per sample, but got {labels.shape[0]} "
            f"groups for {pred_idx.shape[0]} samples. Read the groups for the same samples, "
            "in the same order, as the predictions."
        )
    _check_groups(labels, column, expected_groups, min_samples)

    frame = MetricFrame(
        metrics={"accuracy": accuracy_score, "error_rate": zero_one_loss, "count": count},
        y_true=targets,
        y_pred=pred_idx,
        sensitive_features={column: labels},
    )
    by_group = frame.by_group
    names = tuple(str(g) for g in by_group.index)
    accuracy = by_group["accuracy"].to_numpy(dtype=np.float64)
    sizes = by_group["count"].to_numpy().astype(np.int64)
    # Exact: accuracy is correct / count with count < 2**52.
    correct = np.rint(accuracy * sizes).astype(np.int64)

    boot = _stratified_accuracy_bootstrap(correct, sizes, n_resamples, seed)
    (worst_lo, worst_hi), (gap_lo, gap_hi) = _min_and_gap_intervals(boot, confidence)
    # The row range of the accuracies equals that of the error rates 1 - accuracy.
    return GroupFairness(
        column=column,
        groups=names,
        accuracy=tuple(float(a) for a in accuracy),
        error_rate=tuple(float(e) for e in by_group["error_rate"]),
        count=tuple(int(s) for s in sizes),
        worst_group=names[int(np.argmin(accuracy))],
        worst_group_accuracy=float(frame.group_min()["accuracy"]),
        worst_group_accuracy_lower=worst_lo,
        worst_group_accuracy_upper=worst_hi,
        group_error_rate_gap=float(frame.difference()["error_rate"]),
        group_error_rate_gap_lower=gap_lo,
        group_error_rate_gap_upper=gap_hi,
        confidence=float(confidence),
        n_resamples=n_resamples,
    )


def _check_groups(
    labels: np.ndarray, column: str, expected: Sequence[str] | None, min_samples: int
) -> None:
    names, sizes = np.unique(labels, return_counts=True)
    observed = dict(zip(names.tolist(), sizes.tolist(), strict=True))
    if expected is not None:
        expected_list = string_labels(expected, f"the expected groups of column {column!r}")
        missing = [g for g in expected_list if g not in observed]
        if missing:
            raise ValueError(
                f"Group {listed(missing)} of column {column!r} has no samples in the "
                f"evaluated split (groups present: {listed(sorted(observed))}). Evaluate on a "
                "split that holds every group, or leave the group out of `expected_groups`."
            )
        unexpected = sorted(set(observed) - set(expected_list))
        if unexpected:
            raise ValueError(
                f"Group {listed(unexpected)} of column {column!r} is not among the expected "
                f"groups {listed(expected_list)}. Fix the value in metadata.csv or add the "
                "group to `expected_groups`."
            )
    small = [f"{g!r} ({n})" for g, n in observed.items() if n < min_samples]
    if small:
        raise ValueError(
            f"Group {', '.join(small)} of column {column!r} has fewer than min_samples = "
            f"{min_samples} samples. Evaluate on more data, merge small groups in "
            "metadata.csv, or lower `min_samples`."
        )
