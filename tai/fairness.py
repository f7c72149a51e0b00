r"""Fairness of an image classifier across classes, labelled groups and unlabelled clusters.

Four views, each a pure function with a frozen-dataclass result whose ``as_dict()`` gives
flat scalars for logging and gates:

- :func:`class_fairness`: per-class accuracy, i.e. the recall
  :math:`\mathrm{acc}_k = |\{i : y_i = k, \hat y_i = k\}| / |\{i : y_i = k\}|` of each
  class (for a single-label classifier the accuracy on the samples of class :math:`k`),
  per-class precision, the worst-class accuracy :math:`\min_k \mathrm{acc}_k` and the gap
  :math:`\max_k \mathrm{acc}_k - \min_k \mathrm{acc}_k`.
- :func:`group_fairness`: the same for groups named by a ``metadata.csv`` column (read
  with :func:`read_group_column`): per-group accuracy and error rate through fairlearn's
  ``MetricFrame``, the worst-group accuracy of Sagawa et al., "Distributionally Robust
  Neural Networks for Group Shifts", ICLR 2020 (https://arxiv.org/abs/1911.08731), and
  the gap between the largest and the smallest group error rate.
- :func:`cluster_fairness`: pseudo-groups when no group labels exist. Each class's
  embeddings are clustered with k-means and accuracy is measured per (class, cluster), as
  in GEORGE (Sohoni et al., "No Subclass Left Behind: Fine-Grained Robustness in
  Coarse-Grained Classification Problems", NeurIPS 2020, https://arxiv.org/abs/2011.12945),
  to surface the hidden stratification of Oakden-Rayner et al., CHIL 2020
  (https://arxiv.org/abs/1909.12475): a subclass the model fails on inside a class it
  handles well on average.
- :func:`representation`: no model, the data engineering stage's view: counts and shares
  of each class, group and class x group cell per split, the smallest share and the
  train split's class imbalance ratio.

Worst-class/-group accuracy and the gaps come with percentile bootstrap confidence
intervals (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13),
stratified by class (resp. group): each resample draws, within every stratum, as many
samples as it holds, with replacement, so every stratum keeps its size and none goes
missing from a resample.

Predictions are given either as ``(N, C)`` scores (probabilities or logits; the arg-max is
the prediction) or as ``(N,)`` integer class indices, targets as ``(N,)`` integer class
indices in ``[0, C)``; torch tensors, numpy arrays and lists are accepted.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from fairlearn.metrics import MetricFrame, count
from sklearn.cluster import KMeans
from sklearn.metrics import accuracy_score, zero_one_loss
from torch import Tensor

from tai.checks import check_confidence

__all__ = [
    "ClassFairness",
    "ClusterFairness",
    "GroupFairness",
    "Representation",
    "class_fairness",
    "cluster_fairness",
    "group_fairness",
    "read_group_column",
    "representation",
]

#: The column of ``metadata.csv`` that identifies a sample (see :func:`read_group_column`).
PATH_COLUMN = "path"
# k-means restarts per class: fixed, so a result depends on the seed alone.
_KMEANS_N_INIT = 10
# Names listed in one error message at most.
_MAX_LISTED = 5


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ClassFairness:
    """Per-class accuracy and precision, worst-class accuracy and the class accuracy gap.

    Attributes:
        classes: the class names, index ``k`` is class ``k``.
        recall: per-class accuracy (recall) ``correct_k / support_k``; ``nan`` for a class
            without samples.
        precision: ``correct_k / predicted_k``; ``nan`` for a class never predicted.
        support: number of samples of each class.
        worst_class: name of the class with the lowest accuracy (the first on a tie).
        worst_class_accuracy: the lowest per-class accuracy over the classes with samples.
        worst_class_accuracy_lower: lower bound of its bootstrap confidence interval.
        worst_class_accuracy_upper: upper bound of that interval.
        class_accuracy_gap: highest minus lowest per-class accuracy.
        class_accuracy_gap_lower: lower bound of its bootstrap confidence interval.
        class_accuracy_gap_upper: upper bound of that interval.
        confidence: coverage of the intervals.
        n_resamples: number of bootstrap resamples.
    """

    classes: tuple[str, ...]
    recall: tuple[float, ...]
    precision: tuple[float, ...]
    support: tuple[int, ...]
    worst_class: str
    worst_class_accuracy: float
    worst_class_accuracy_lower: float
    worst_class_accuracy_upper: float
    class_accuracy_gap: float
    class_accuracy_gap_lower: float
    class_accuracy_gap_upper: float
    confidence: float
    n_resamples: int

    @property
    def absent_classes(self) -> tuple[str, ...]:
        """Classes without samples: left out of the worst class and the gap."""
        return tuple(c for c, s in zip(self.classes, self.support, strict=True) if s == 0)

    def as_dict(self) -> dict[str, float]:
        """Scalars for logging: worst-class accuracy and class accuracy gap with bounds."""
        return {
            "worst_class_accuracy": self.worst_class_accuracy,
            "worst_class_accuracy_lower": self.worst_class_accuracy_lower,
            "worst_class_accuracy_upper": self.worst_class_accuracy_upper,
            "class_accuracy_gap": self.class_accuracy_gap,
            "class_accuracy_gap_lower": self.class_accuracy_gap_lower,
            "class_accuracy_gap_upper": self.class_accuracy_gap_upper,
        }

    def per_class(self) -> dict[str, list[Any]]:
        """Columns of a per-class table: ``class``, ``accuracy`` (the recall),
        ``precision`` and ``support``."""
        return {
            "class": list(self.classes),
            "accuracy": list(self.recall),
            "precision": list(self.precision),
            "support": list(self.support),
        }


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


@dataclass(frozen=True)
class ClusterFairness:
    """Accuracy per (class, k-means cluster of that class's embeddings).

    Clusters are numbered per class by decreasing size: cluster 0 is the class's largest.

    Attributes:
        cluster_class: class name of each cluster.
        cluster_index: index of each cluster within its class.
        cluster_size: number of samples of each cluster.
        cluster_accuracy: accuracy within each cluster.
        assignments: for each sample, the index of its cluster within its class.
        worst_cluster_class: class of the cluster with the lowest accuracy (on a tie the
            largest such cluster, then the first).
        worst_cluster_index: index of that cluster within its class.
        worst_cluster_size: number of samples of that cluster.
        worst_cluster_accuracy: the lowest cluster accuracy.
        cluster_accuracy_gap: the largest within-class gap, ``max`` over classes of the
            highest minus the lowest accuracy of that class's clusters.
    """

    cluster_class: tuple[str, ...]
    cluster_index: tuple[int, ...]
    cluster_size: tuple[int, ...]
    cluster_accuracy: tuple[float, ...]
    assignments: tuple[int, ...]
    worst_cluster_class: str
    worst_cluster_index: int
    worst_cluster_size: int
    worst_cluster_accuracy: float
    cluster_accuracy_gap: float

    def as_dict(self) -> dict[str, float]:
        """Scalars for logging: worst cluster accuracy and size, cluster accuracy gap."""
        return {
            "worst_cluster_accuracy": self.worst_cluster_accuracy,
            "worst_cluster_size": float(self.worst_cluster_size),
            "cluster_accuracy_gap": self.cluster_accuracy_gap,
        }

    def per_cluster(self) -> dict[str, list[Any]]:
        """Columns of a per-cluster table: ``class``, ``cluster``, ``size``, ``accuracy``."""
        return {
            "class": list(self.cluster_class),
            "cluster": list(self.cluster_index),
            "size": list(self.cluster_size),
            "accuracy": list(self.cluster_accuracy),
        }


@dataclass(frozen=True)
class Representation:
    """How classes and groups are represented in each split of a dataset.

    Shares are fractions of the split's samples. A class (group) seen in any split is
    listed, with count 0, in every split.

    Attributes:
        splits: the split names, in the order given.
        classes: every class name, sorted.
        groups: every group name, sorted; empty without group labels.
        class_counts: ``class_counts[split][class]``.
        class_shares: ``class_shares[split][class]``.
        group_counts: ``group_counts[split][group]``; empty without group labels.
        group_shares: ``group_shares[split][group]``; empty without group labels.
        class_group_counts: ``class_group_counts[split][class][group]``.
        class_group_shares: ``class_group_shares[split][class][group]``.
        min_class_share: the smallest class share over every split and class.
        max_class_imbalance_ratio: largest over smallest class count in the reference
            split (``inf`` when a class has no sample there).
        min_group_share: the smallest group share over every split and group; ``None``
            without group labels.
    """

    splits: tuple[str, ...]
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    class_counts: dict[str, dict[str, int]]
    class_shares: dict[str, dict[str, float]]
    group_counts: dict[str, dict[str, int]]
    group_shares: dict[str, dict[str, float]]
    class_group_counts: dict[str, dict[str, dict[str, int]]]
    class_group_shares: dict[str, dict[str, dict[str, float]]]
    min_class_share: float
    max_class_imbalance_ratio: float
    min_group_share: float | None

    def as_dict(self) -> dict[str, float]:
        """Scalars for logging: ``min_class_share``, ``max_class_imbalance_ratio`` and,
        with group labels, ``min_group_share``."""
        out = {
            "min_class_share": self.min_class_share,
            "max_class_imbalance_ratio": self.max_class_imbalance_ratio,
        }
        if self.min_group_share is not None:
            out["min_group_share"] = self.min_group_share
        return out


# --------------------------------------------------------------------------- validation


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _bootstrap_arg_validation(n_resamples: int, confidence: float, seed: int) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(
            f"Expected argument `n_resamples` to be an integer >= 1, but got {n_resamples!r}. "
            "Pass the number of bootstrap resamples, e.g. n_resamples=1000."
        )
    check_confidence(confidence)
    _seed_validation(seed)


def _seed_validation(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(
            f"Expected argument `seed` to be an integer, but got {seed!r}. "
            "The same seed gives the same result."
        )


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _is_integer_array(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_


def _predictions(probs_or_preds: Any) -> tuple[np.ndarray, int | None]:
    """Predicted class indices and, for ``(N, C)`` scores, ``C``."""
    array = _to_numpy(probs_or_preds)
    if array.ndim == 2:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(
                f"Expected `(N, C)` predictions to be float scores, but got dtype "
                f"{array.dtype}. Pass probabilities or logits, or `(N,)` class indices."
            )
        if array.shape[1] < 1 or not np.isfinite(array).all():
            raise ValueError(
                "Expected `(N, C)` scores with C >= 1 and finite values, but got shape "
                f"{array.shape} or NaN/inf. Check the model output."
            )
        return array.argmax(axis=1), int(array.shape[1])
    if array.ndim == 1 and (_is_integer_array(array) or array.size == 0):
        return array.astype(np.int64), None
    raise ValueError(
        f"Expected predictions of shape (N, C) (float scores) or (N,) (integer class "
        f"indices), but got shape {array.shape} and dtype {array.dtype}. Pass "
        "logits.softmax(dim=1), the logits, or logits.argmax(dim=1)."
    )


def _targets(targets: Any, n: int) -> np.ndarray:
    array = _to_numpy(targets)
    if array.ndim != 1 or not (_is_integer_array(array) or array.size == 0):
        raise ValueError(
            f"Expected `targets` of shape (N,) with integer class indices, but got shape "
            f"{array.shape} and dtype {array.dtype}. Pass class indices, not one-hot vectors."
        )
    if array.shape[0] != n:
        raise ValueError(
            f"Expected predictions and `targets` to have the same number of samples, but "
            f"got {n} and {array.shape[0]}. Pass one target per prediction."
        )
    if n == 0:
        raise ValueError(
            "Expected at least one sample, but got none (N = 0). Fairness is undefined "
            "without predictions; check the data loader."
        )
    return array.astype(np.int64)


def _resolve_classes(
    classes: int | Sequence[str] | None,
    preds: np.ndarray,
    targets: np.ndarray,
    n_scores: int | None,
) -> tuple[str, ...]:
    if classes is None:
        n_classes = n_scores or int(max(preds.max(), targets.max())) + 1
        names = tuple(str(k) for k in range(n_classes))
    elif isinstance(classes, int) and not isinstance(classes, bool):
        if classes < 1:
            raise ValueError(
                f"Expected argument `classes` to be >= 1, but got {classes}. Pass the number "
                "of classes or their names."
            )
        names = tuple(str(k) for k in range(classes))
    elif isinstance(classes, Sequence | np.ndarray) and not isinstance(classes, str):
        names = tuple(str(c) for c in classes)
        if not names or len(set(names)) != len(names):
            raise ValueError(
                f"Expected argument `classes` to be distinct class names, but got {classes!r}. "
                "Pass the names in the order of the class indices."
            )
    else:
        raise ValueError(
            f"Expected argument `classes` to be None, an integer or a sequence of names, but "
            f"got {classes!r}."
        )
    n_classes = len(names)
    if n_scores is not None and n_scores != n_classes:
        raise ValueError(
            f"Expected {n_classes} score columns for the {n_classes} classes, but the "
            f"predictions have {n_scores}. Pass `classes` matching the model's output."
        )
    for name, values in (("predictions", preds), ("targets", targets)):
        if values.min() < 0 or values.max() >= n_classes:
            raise ValueError(
                f"Expected {name} in [0, {n_classes}) for {n_classes} classes, but got values "
                f"in [{values.min()}, {values.max()}]. Check the label mapping or `classes`."
            )
    return names


def _string_labels(values: Any, what: str) -> list[str]:
    labels = list(values)
    bad = [v for v in labels if not isinstance(v, str)]
    if bad:
        raise ValueError(
            f"Expected {what} to be strings, but got {bad[0]!r} of type "
            f"{type(bad[0]).__name__}. Convert them with str() or read them with "
            "read_group_column."
        )
    return labels


# --------------------------------------------------------------------------- computation


def _stratified_accuracy_bootstrap(
    correct: np.ndarray, size: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """Accuracy of every stratum in each stratified resample, shape ``(n_resamples, S)``.

    A resample draws ``size_s`` of stratum ``s``'s samples with replacement; each draw is
    correct with probability ``correct_s / size_s``, independently, so its number of
    correct samples is exactly ``Binomial(size_s, correct_s / size_s)``. Drawing that count
    gives the same bootstrap distribution as resampling indices (own code rather than
    ``scipy.stats.bootstrap``, which it matches in the tests) at ``O(n_resamples * S)``
    instead of ``O(n_resamples * N)``, and every statistic is computed from the same draws.
    """
    rng = np.random.default_rng(seed)
    return rng.binomial(size, correct / size, size=(n_resamples, size.size)) / size


def _min_and_gap_intervals(
    boot: np.ndarray, confidence: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals (linear interpolation) of the row minimum and the row range."""
    alpha = (1 - confidence) / 2
    q = [alpha, 1 - alpha]
    worst = np.quantile(boot.min(axis=1), q)
    gap = np.quantile(boot.max(axis=1) - boot.min(axis=1), q)
    return (float(worst[0]), float(worst[1])), (float(gap[0]), float(gap[1]))


# --------------------------------------------------------------------------- public API


def class_fairness(
    probs_or_preds: Any,
    targets: Any,
    *,
    classes: int | Sequence[str] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ClassFairness:
    r"""Per-class accuracy (recall) and precision, worst-class accuracy and the gap.

    With :math:`n_k` the samples of class :math:`k`, :math:`m_k` the samples predicted
    :math:`k` and :math:`c_k` those both:

    .. math::
        \mathrm{acc}_k = c_k / n_k, \quad \mathrm{prec}_k = c_k / m_k, \quad
        \text{worst} = \min_k \mathrm{acc}_k, \quad
        \text{gap} = \max_k \mathrm{acc}_k - \min_k \mathrm{acc}_k

    over the classes with :math:`n_k > 0`: a class without samples (listed in
    ``absent_classes``) has accuracy ``nan`` and takes no part in the worst class or the gap.
    The confidence intervals are percentile intervals of ``n_resamples`` bootstrap
    resamples stratified by class. The minimum of noisy estimates is biased downwards and
    their range upwards, so the intervals tend to lie below (worst class) and above (gap)
    the point estimates and need not contain them; the worse bound (``lower`` of the
    worst-class accuracy, ``upper`` of the gap) is the conservative number for a gate.

    Args:
        probs_or_preds: ``(N, C)`` scores (probabilities or logits) or ``(N,)`` predicted
            class indices.
        targets: ``(N,)`` integer class indices.
        classes: number of classes or their names in index order; by default ``C`` of the
            scores, or the largest index seen plus one.
        n_resamples: number of bootstrap resamples, ``>= 1``.
        confidence: coverage of the intervals, in ``(0, 1)``.
        seed: seed of the resampling.

    Returns:
        A :class:`ClassFairness`.

    Raises:
        ValueError: if an argument or input is invalid.

    Example:
        Class ``a`` has 2 of 3 samples right, class ``b`` 1 of 2:

        >>> result = class_fairness([0, 0, 1, 1, 0], [0, 0, 0, 1, 1], classes=["a", "b"])
        >>> result.recall, result.precision
        ((0.6666666666666666, 0.5), (0.6666666666666666, 0.5))
        >>> result.worst_class, result.worst_class_accuracy, round(result.class_accuracy_gap, 4)
        ('b', 0.5, 0.1667)
    """
    _bootstrap_arg_validation(n_resamples, confidence, seed)
    preds, n_scores = _predictions(probs_or_preds)
    targets = _targets(targets, preds.shape[0])
    names = _resolve_classes(classes, preds, targets, n_scores)
    n_classes = len(names)

    # Own bincounts instead of sklearn's precision_recall_fscore_support (equal to it to
    # 1e-9 in the tests): the bootstrap needs the counts themselves.
    support = np.bincount(targets, minlength=n_classes)
    predicted = np.bincount(preds, minlength=n_classes)
    correct = np.bincount(targets[preds == targets], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, correct / support, np.nan)
        precision = np.where(predicted > 0, correct / predicted, np.nan)

    present = np.flatnonzero(support > 0)
    worst = int(present[np.argmin(recall[present])])
    boot = _stratified_accuracy_bootstrap(correct[present], support[present], n_resamples, seed)
    (worst_lo, worst_hi), (gap_lo, gap_hi) = _min_and_gap_intervals(boot, confidence)
    return ClassFairness(
        classes=names,
        recall=tuple(float(r) for r in recall),
        precision=tuple(float(p) for p in precision),
        support=tuple(int(s) for s in support),
        worst_class=names[worst],
        worst_class_accuracy=float(recall[worst]),
        worst_class_accuracy_lower=worst_lo,
        worst_class_accuracy_upper=worst_hi,
        class_accuracy_gap=float(recall[present].max() - recall[worst]),
        class_accuracy_gap_lower=gap_lo,
        class_accuracy_gap_upper=gap_hi,
        confidence=float(confidence),
        n_resamples=n_resamples,
    )


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
    labels = np.asarray(_string_labels(groups, f"the groups of column {column!r}"), dtype=object)
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
        expected_list = _string_labels(expected, f"the expected groups of column {column!r}")
        missing = [g for g in expected_list if g not in observed]
        if missing:
            raise ValueError(
                f"Group {_listed(missing)} of column {column!r} has no samples in the "
                f"evaluated split (groups present: {_listed(sorted(observed))}). Evaluate on a "
                "split that holds every group, or leave the group out of `expected_groups`."
            )
        unexpected = sorted(set(observed) - set(expected_list))
        if unexpected:
            raise ValueError(
                f"Group {_listed(unexpected)} of column {column!r} is not among the expected "
                f"groups {_listed(expected_list)}. Fix the value in metadata.csv or add the "
                "group to `expected_groups`."
            )
    small = [f"{g!r} ({n})" for g, n in observed.items() if n < min_samples]
    if small:
        raise ValueError(
            f"Group {', '.join(small)} of column {column!r} has fewer than min_samples = "
            f"{min_samples} samples. Evaluate on more data, merge small groups in "
            "metadata.csv, or lower `min_samples`."
        )


def read_group_column(metadata_csv: Path | str, column: str, ids: Sequence[str]) -> list[str]:
    """The group in ``column`` of each sample of ``ids``, read from a ``metadata.csv``.

    Expected format: a CSV file (UTF-8, header row) beside the split folders of a dataset,
    ``<dataset>/metadata.csv``, with a column ``path`` that names each image relative to
    the dataset folder, with ``/`` separators, ``<split>/<label>/<file>`` (e.g.
    ``test/3/17.png``), and one column per group attribute::

        path,label,split,site
        test/3/17.png,3,test,hospital_a
        test/5/2.png,5,test,hospital_b

    ``ids`` are paths of the same form (paths from ``tai.data_profile.scan_dataset`` carry
    the dataset name in front: strip it). Paths are compared after turning ``\\`` into
    ``/`` and dropping ``.`` components; values are stripped of surrounding whitespace.

    Args:
        metadata_csv: the CSV file.
        column: the group column to read.
        ids: the samples' paths, in the order of the predictions.

    Returns:
        The group name of each sample, in the order of ``ids``.

    Raises:
        FileNotFoundError: if ``metadata_csv`` does not exist.
        ValueError: if the file lacks the ``path`` column or ``column``, lists a path twice,
            lacks a requested sample, or has an empty group for one.
    """
    metadata_csv = Path(metadata_csv)
    if not metadata_csv.is_file():
        raise FileNotFoundError(
            f"Metadata file {metadata_csv} does not exist. Group fairness needs a "
            f"metadata.csv with a {PATH_COLUMN!r} column and the group column {column!r}."
        )
    with metadata_csv.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        if PATH_COLUMN not in header:
            raise ValueError(
                f"Expected a {PATH_COLUMN!r} column in {metadata_csv}, but its columns are "
                f"{header}. Name each image in a {PATH_COLUMN!r} column, e.g. test/3/17.png."
            )
        if column not in header:
            raise ValueError(
                f"Group column {column!r} does not exist in {metadata_csv}; available "
                f"columns: {header}. Pass one of them as the group column."
            )
        group_of: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            key = _normalise_path(row[PATH_COLUMN] or "")
            if key in group_of:
                raise ValueError(
                    f"Path {key!r} occurs more than once in {metadata_csv} (again on line "
                    f"{line}). Keep one row per image."
                )
            group_of[key] = (row[column] or "").strip()

    wanted = [_normalise_path(i) for i in _string_labels(ids, "the sample ids")]
    missing = [i for i in wanted if i not in group_of]
    if missing:
        raise ValueError(
            f"Sample {_listed(missing)} is missing from {metadata_csv} ({len(missing)} of "
            f"{len(wanted)} samples). Add a row per image with its {PATH_COLUMN!r} relative "
            "to the dataset folder, e.g. test/3/17.png."
        )
    empty = [i for i in wanted if not group_of[i]]
    if empty:
        raise ValueError(
            f"Sample {_listed(empty)} has no value in column {column!r} of {metadata_csv}. "
            "Fill in its group, or leave the sample out of the evaluation."
        )
    return [group_of[i] for i in wanted]


def _normalise_path(path: str) -> str:
    return PurePosixPath(path.strip().replace("\\", "/")).as_posix()


def cluster_fairness(
    embeddings: Any,
    preds: Any,
    targets: Any,
    *,
    clusters_per_class: int = 3,
    classes: int | Sequence[str] | None = None,
    seed: int = 0,
) -> ClusterFairness:
    r"""Accuracy per k-means cluster of each class's embeddings: pseudo-groups without labels.

    For every class with samples, its samples' embeddings (by the *target* class, as in
    GEORGE, Sohoni et al. 2020) are split by scikit-learn's ``KMeans`` (Euclidean,
    ``n_init=10``, ``random_state=seed``) into :math:`k = \min(\text{clusters\_per\_class},
    d)` clusters, :math:`d` the number of distinct embeddings of the class: a class with
    fewer samples (or duplicates) gets fewer clusters, one sample one cluster. Clusters
    are numbered by decreasing size within their class. Normalise the embeddings first
    (e.g. L2) if their scale should not matter.

    The worst cluster is the one with the lowest accuracy; ``cluster_accuracy_gap`` is the
    largest gap between two clusters *of the same class*, so that it measures hidden
    stratification rather than the class gap of :func:`class_fairness`.

    Args:
        embeddings: ``(N, D)`` features of the samples, e.g. the penultimate layer.
        preds: ``(N, C)`` scores or ``(N,)`` predicted class indices.
        targets: ``(N,)`` integer class indices.
        clusters_per_class: most clusters per class, ``>= 1``.
        classes: number of classes or their names, as in :func:`class_fairness`.
        seed: seed of k-means.

    Returns:
        A :class:`ClusterFairness`.

    Raises:
        ValueError: if an argument or input is invalid.
    """
    if (
        isinstance(clusters_per_class, bool)
        or not isinstance(clusters_per_class, int)
        or clusters_per_class < 1
    ):
        raise ValueError(
            f"Expected argument `clusters_per_class` to be an integer >= 1, but got "
            f"{clusters_per_class!r}. Pass the number of pseudo-groups per class, e.g. 3."
        )
    _seed_validation(seed)
    pred_idx, n_scores = _predictions(preds)
    targets = _targets(targets, pred_idx.shape[0])
    names = _resolve_classes(classes, pred_idx, targets, n_scores)
    features = _to_numpy(embeddings)
    if features.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(
            f"Expected `embeddings` of shape (N, D) with N = {targets.shape[0]} samples, but "
            f"got shape {features.shape}. Pass one feature vector per prediction."
        )
    if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
        raise ValueError(
            f"Expected finite numeric `embeddings`, but got dtype {features.dtype} or "
            "NaN/inf values. Check the feature extractor."
        )
    if not np.issubdtype(features.dtype, np.floating):
        features = features.astype(np.float64)

    correct = pred_idx == targets
    assignments = np.full(targets.shape[0], -1, dtype=np.int64)
    rows: list[tuple[int, int, int, float]] = []  # (class, cluster, size, accuracy)
    for k in np.unique(targets):
        members = np.flatnonzero(targets == k)
        labels = _cluster(features[members], clusters_per_class, seed)
        assignments[members] = labels
        for j in range(int(labels.max()) + 1):
            in_cluster = labels == j
            rows.append(
                (int(k), j, int(in_cluster.sum()), float(correct[members][in_cluster].mean()))
            )

    accuracy = np.array([r[3] for r in rows])
    size = np.array([r[2] for r in rows])
    # Lowest accuracy; on a tie the largest cluster (most evidence), then the first.
    worst = min(range(len(rows)), key=lambda i: (accuracy[i], -size[i], i))
    cls = np.array([r[0] for r in rows])
    gap = max(float(accuracy[cls == k].max() - accuracy[cls == k].min()) for k in np.unique(cls))
    return ClusterFairness(
        cluster_class=tuple(names[r[0]] for r in rows),
        cluster_index=tuple(r[1] for r in rows),
        cluster_size=tuple(r[2] for r in rows),
        cluster_accuracy=tuple(r[3] for r in rows),
        assignments=tuple(int(a) for a in assignments),
        worst_cluster_class=names[rows[worst][0]],
        worst_cluster_index=rows[worst][1],
        worst_cluster_size=rows[worst][2],
        worst_cluster_accuracy=rows[worst][3],
        cluster_accuracy_gap=gap,
    )


def _cluster(features: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """k-means labels of one class, renumbered by decreasing size (ties: first sample)."""
    k = min(clusters, np.unique(features, axis=0).shape[0])
    if k == 1:
        return np.zeros(features.shape[0], dtype=np.int64)
    labels = KMeans(n_clusters=k, n_init=_KMEANS_N_INIT, random_state=seed).fit_predict(features)
    sizes = np.bincount(labels, minlength=k)
    first = np.array([np.flatnonzero(labels == j)[0] for j in range(k)])
    order = np.lexsort((first, -sizes))  # last key is primary
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels]


def representation(
    labels_by_split: Mapping[str, Sequence[str]],
    groups_by_split: Mapping[str, Sequence[str]] | None = None,
    *,
    reference_split: str = "train",
) -> Representation:
    """Counts and shares of each class, group and class x group cell per split.

    No model is involved: this is the data engineering stage's check that every class
    and group is represented. ``min_class_share`` is the smallest share of a class in any
    split (0 when a class is missing from a split), ``max_class_imbalance_ratio`` the
    largest over the smallest class count in ``reference_split`` (``inf`` when a class has
    no sample there) and ``min_group_share`` the smallest share of a group in any split.

    Args:
        labels_by_split: split name -> class name of each sample.
        groups_by_split: split name -> group name of each sample, aligned with
            ``labels_by_split``; ``None`` without group labels.
        reference_split: the split whose class counts give the imbalance ratio.

    Returns:
        A :class:`Representation`.

    Raises:
        ValueError: if a split is empty, ``reference_split`` is missing, labels are not
            strings, or the groups do not match the labels split by split.

    Example:
        >>> rep = representation({"train": ["cat", "cat", "cat", "dog"], "test": ["cat", "dog"]})
        >>> rep.as_dict()
        {'min_class_share': 0.25, 'max_class_imbalance_ratio': 3.0}
    """
    if not isinstance(labels_by_split, Mapping) or not labels_by_split:
        raise ValueError(
            f"Expected `labels_by_split` to map split names to class labels, but got "
            f"{labels_by_split!r}. Pass e.g. {{'train': [...], 'test': [...]}}."
        )
    if reference_split not in labels_by_split:
        raise ValueError(
            f"Expected the reference split {reference_split!r} in `labels_by_split`, but it "
            f"has only {list(labels_by_split)}. Pass `reference_split` as one of them."
        )
    labels = {
        s: _string_labels(v, f"the class labels of split {s!r}") for s, v in labels_by_split.items()
    }
    for split, values in labels.items():
        if not values:
            raise ValueError(
                f"Split {split!r} has no samples. Leave empty splits out of `labels_by_split`."
            )
    groups = _aligned_groups(labels, groups_by_split)

    # Plain counting rather than pandas.crosstab: nested dicts are what the data card holds.
    classes = tuple(sorted({c for values in labels.values() for c in values}))
    group_names = tuple(sorted({g for values in (groups or {}).values() for g in values}))
    class_counts = {s: _counts(values, classes) for s, values in labels.items()}
    class_shares = {s: _shares(counts) for s, counts in class_counts.items()}
    group_counts: dict[str, dict[str, int]] = {}
    class_group_counts: dict[str, dict[str, dict[str, int]]] = {}
    if groups is not None:
        for split, values in labels.items():
            group_counts[split] = _counts(groups[split], group_names)
            class_group_counts[split] = {
                c: _counts(
                    [g for g, label in zip(groups[split], values, strict=True) if label == c],
                    group_names,
                )
                for c in classes
            }
    group_shares = {s: _shares(counts) for s, counts in group_counts.items()}
    class_group_shares = {
        s: {c: {g: n / len(labels[s]) for g, n in row.items()} for c, row in table.items()}
        for s, table in class_group_counts.items()
    }

    reference = class_counts[reference_split].values()
    smallest = min(reference)
    return Representation(
        splits=tuple(labels),
        classes=classes,
        groups=group_names,
        class_counts=class_counts,
        class_shares=class_shares,
        group_counts=group_counts,
        group_shares=group_shares,
        class_group_counts=class_group_counts,
        class_group_shares=class_group_shares,
        min_class_share=min(v for shares in class_shares.values() for v in shares.values()),
        max_class_imbalance_ratio=max(reference) / smallest if smallest else math.inf,
        min_group_share=(
            min(v for shares in group_shares.values() for v in shares.values())
            if groups is not None
            else None
        ),
    )


def _aligned_groups(
    labels: dict[str, list[str]], groups_by_split: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]] | None:
    if groups_by_split is None:
        return None
    if not isinstance(groups_by_split, Mapping) or set(groups_by_split) != set(labels):
        given = list(groups_by_split) if isinstance(groups_by_split, Mapping) else groups_by_split
        raise ValueError(
            f"Expected `groups_by_split` to have the splits {list(labels)} of "
            f"`labels_by_split`, but got {given!r}. Give the groups of every split or none."
        )
    groups = {s: _string_labels(groups_by_split[s], f"the groups of split {s!r}") for s in labels}
    for split, values in groups.items():
        if len(values) != len(labels[split]):
            raise ValueError(
                f"Expected one group per sample of split {split!r}, but got {len(values)} "
                f"groups for {len(labels[split])} labels. Align the groups with the labels."
            )
    return groups


def _counts(values: Sequence[str], names: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for value in values:
        counts[value] += 1
    return counts


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()}
