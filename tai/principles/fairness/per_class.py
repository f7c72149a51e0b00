"""Fairness across classes: per-class accuracy (recall) and precision, worst-class accuracy
and the class accuracy gap, with stratified bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tai.principles.fairness._common import (
    _bootstrap_arg_validation,
    _min_and_gap_intervals,
    _predictions,
    _resolve_classes,
    _stratified_accuracy_bootstrap,
    _targets,
)


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
