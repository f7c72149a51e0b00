r"""Accuracy without labels: ATC, and the AC and DoC baselines.

Average Thresholded Confidence (Garg, Balakrishnan, Lipton, Neyshabur & Sedghi,
"Leveraging Unlabeled Data to Predict Out-of-Distribution Performance", ICLR 2022,
https://arxiv.org/abs/2201.04234). A score :math:`s(x)` of the model's probabilities is
thresholded at :math:`t`, fitted on the labelled validation split so that the share of
validation images scoring above it equals the validation accuracy:

.. math::
    \frac{1}{n} \sum_{i \le n} \mathbb 1[s(x_i) > t]
    = \frac{1}{n} \sum_{i \le n} \mathbb 1[\hat y_i = y_i], \qquad
    \widehat{\mathrm{acc}}_{\mathrm{ATC}} = \frac{1}{m} \sum_{j \le m} \mathbb 1[s(x'_j) > t]

for the validation images :math:`x_i` and the unlabelled batch :math:`x'_j`. Scores
(:func:`atc_scores`): the negative entropy :math:`\sum_k p_k \log p_k` (the paper's
ATC-NE, the default) or the top probability :math:`\max_k p_k` (ATC-MC). The paper fits
:math:`t` on temperature-scaled probabilities; so should the caller.

Threshold (:func:`fit_threshold`): with :math:`c` correct predictions among :math:`n` and
the scores sorted, :math:`s_{(1)} \le \dots \le s_{(n)}`, :math:`t = s_{(n-c)}`, so exactly
:math:`c` scores lie above it. When every prediction is right, every threshold below the
lowest score fits; :math:`t` is then the largest of them, just below :math:`s_{(1)}`, so
a batch image less confident than any validation image counts as an error (with
:math:`t = -\infty`, the other extreme, ATC could never estimate a drop). With tied
scores an exact split may not exist; :math:`t` is then the candidate (a score or just
below the lowest) whose count above is closest to :math:`c`, the smallest on a tie. This
is the threshold of the authors' ``find_ATC_threshold`` (github.com/saurabhgarg1996/
ATC_code, ``ATC_helper.py``), which scans the sorted scores for the smallest
:math:`|\#\{\text{wrong above}\} - \#\{\text{right at or below}\}|`, that is
:math:`|\#\{s > t\} - c|`. Its ``get_ATC_acc`` then counts ``scores >= t``; here the
estimate counts ``scores > t``, the side the threshold was fitted on, so the two differ
only for batch scores exactly equal to :math:`t` (and for all-correct validation, where
the authors return ``t = 0``).

Baselines: AC, the average top probability of the batch (Hendrycks & Gimpel, ICLR 2017);
DoC, "difference of confidences" (Guillory, Shankar, Ebrahimi, Darrell & Schmidt,
"Predicting with Confidence on Unseen Distributions", ICCV 2021,
https://arxiv.org/abs/2107.03315):
:math:`\mathrm{acc}_{\mathrm{val}} - (\overline{\mathrm{conf}}_{\mathrm{val}} -
\overline{\mathrm{conf}}_{\mathrm{batch}})`. For a model calibrated on validation DoC is
close to AC.

The interval of ATC (:func:`atc_interval`) is described there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import xlogy

__all__ = [
    "SCORE_KINDS",
    "AtcInterval",
    "atc_accuracy",
    "atc_interval",
    "atc_scores",
    "average_confidence",
    "bootstrap_thresholds",
    "class_thresholds",
    "doc_accuracy",
    "fit_threshold",
]

ScoreKind = Literal["negative_entropy", "max_confidence"]
SCORE_KINDS: tuple[str, ...] = ("negative_entropy", "max_confidence")
# Most resampled positions held at once by the interval (about 8 MiB per array).
_CHUNK_ELEMENTS = 1 << 20


def atc_scores(probs: np.ndarray, kind: str = "negative_entropy") -> np.ndarray:
    r"""ATC's score of each row of ``probs``: :math:`\sum_k p_k \log p_k` (``0 \log 0 = 0``)
    for ``"negative_entropy"``, :math:`\max_k p_k` for ``"max_confidence"``.

    Args:
        probs: ``(N, K)`` probabilities (validated by the caller).
        kind: one of :data:`SCORE_KINDS`.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind == "negative_entropy":
        return xlogy(probs, probs).sum(axis=1)
    if kind == "max_confidence":
        return probs.max(axis=1)
    raise ValueError(
        f"Expected the ATC score kind to be one of {SCORE_KINDS}, but got {kind!r}. "
        "Use 'negative_entropy' (the paper's ATC-NE) unless you have a reason."
    )


def fit_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The ATC threshold: ``#{scores > t}`` as close as possible to ``correct.sum()``.

    Args:
        scores: ``(n,)`` validation scores, ``n >= 1``.
        correct: ``(n,)`` booleans, the prediction of each validation image was right.

    Returns:
        ``t`` (a score, or the float just below the lowest score when every prediction
        is right); see the module docstring for ties.
    """
    n, c = len(scores), int(np.count_nonzero(correct))
    ordered = np.sort(scores)
    below = float(np.nextafter(ordered[0], -np.inf))
    if c == n:
        return below
    t = ordered[n - c - 1]
    if n - np.searchsorted(ordered, t, side="right") == c:
        return float(t)
    # Ties around the split: the candidate whose count above is closest to c.
    candidates = np.concatenate([[below], np.unique(ordered)])
    above = n - np.searchsorted(ordered, candidates, side="right")
    return float(candidates[int(np.argmin(np.abs(above - c)))])


def atc_accuracy(scores: np.ndarray, threshold: float) -> float:
    """ATC's estimate: the share of ``scores`` strictly above ``threshold``."""
    return float(np.mean(scores > threshold))


def bootstrap_thresholds(
    scores: np.ndarray, correct: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_boot`` thresholds refitted on resamples (with replacement) of the validation
    pairs ``(scores, correct)``: the sampling distribution of :func:`fit_threshold`."""
    n = len(scores)
    out = np.empty(n_boot)
    for b in range(n_boot):
        index = rng.integers(0, n, size=n)
        out[b] = fit_threshold(scores[index], correct[index])
    return out


def class_thresholds(
    scores: np.ndarray,
    preds: np.ndarray,
    correct: np.ndarray,
    n_classes: int,
    *,
    global_threshold: float,
    min_support: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per predicted class ``k``: the ATC threshold fitted on the validation images
    predicted as ``k`` (so that their share above it is the validation precision of
    ``k``), or ``global_threshold`` when fewer than ``min_support`` images were predicted
    ``k``.

    Returns:
        ``(thresholds, support, precision)``, each ``(n_classes,)``: the threshold, the
        validation images predicted as the class, and the share of them that is right
        (NaN without any).
    """
    thresholds = np.full(n_classes, float(global_threshold))
    support = np.bincount(preds, minlength=n_classes)
    right = np.bincount(preds[correct], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(support > 0, right / support, np.nan)
    for k in np.flatnonzero(support >= min_support):
        member = preds == k
        thresholds[k] = fit_threshold(scores[member], correct[member])
    return thresholds, support, precision


def average_confidence(probs: np.ndarray) -> float:
    """AC: the mean top probability."""
    return float(probs.max(axis=1).mean())


def doc_accuracy(val_accuracy: float, val_confidence: float, batch_confidence: float) -> float:
    """DoC: validation accuracy minus the drop of the mean top probability, clipped to
    [0, 1]."""
    return float(np.clip(val_accuracy - (val_confidence - batch_confidence), 0.0, 1.0))


@dataclass(frozen=True)
class AtcInterval:
    """ATC's estimate of one batch and its interval.

    Attributes:
        estimate: the share of batch scores above the reference threshold.
        lower: lower bound of the interval.
        upper: upper bound.
        confidence: its two-sided level.
        n_resamples: replicates it was computed from.
    """

    estimate: float
    lower: float
    upper: float
    confidence: float
    n_resamples: int


def atc_interval(
    scores: np.ndarray,
    confidences: np.ndarray,
    threshold: float,
    thresholds: np.ndarray,
    *,
    confidence: float,
    n_resamples: int,
    rng: np.random.Generator,
) -> AtcInterval:
    r"""ATC's estimate with an interval for the batch's (unknown) accuracy.

    The error of ATC on a batch of :math:`m` images is
    :math:`\frac1m \sum_j (a_j - c_j)` with :math:`a_j = \mathbb 1[s_j > t]` and
    :math:`c_j` the unknown correctness. Writing :math:`\pi_j` for the probability that
    image :math:`j` is right, :math:`c_j - \pi_j` is label noise, independent of which
    images came. Each of ``n_resamples`` replicates

    .. math::
        V_b = \widehat{\mathrm{acc}} + \frac1m \sum_{j \in I_b}
              \big[(a_j(t_b) - \pi_j) - (\bar a(t) - \bar\pi)\big]
              + \frac1m \sum_{j \in I_b} (\epsilon_j - \pi_j)

    draws a bootstrap resample :math:`I_b` of the batch (its images), a threshold
    :math:`t_b` from the validation bootstrap stored in the reference (the threshold's
    own uncertainty) and labels :math:`\epsilon_j \sim \mathrm{Bernoulli}(\pi_j)` (the
    label noise); the bounds are the percentiles of :math:`V_b`, clipped to [0, 1]. Its
    variance is that of :math:`a - \pi` plus :math:`\overline{\pi(1-\pi)}`, the variance
    of ATC's error, rather than that of :math:`a` alone, which a plain bootstrap of the
    estimate would give and which is too small when the model is confident. :math:`\pi_j`
    is the model's calibrated top probability (a proxy: only the width uses it; under a
    shift that makes the model overconfident the interval is too narrow, and ATC's own
    bias under a shift is not in it at all, see the module docstring of
    :mod:`tai.monitoring.assess`).

    Args:
        scores: ``(m,)`` batch scores.
        confidences: ``(m,)`` batch top probabilities (:math:`\pi_j`).
        threshold: the reference threshold :math:`t`.
        thresholds: the reference's bootstrap thresholds.
        confidence: two-sided level, in (0, 1).
        n_resamples: replicates.
        rng: numpy generator.
    """
    m = len(scores)
    estimate = atc_accuracy(scores, threshold)
    centre = estimate - float(confidences.mean())  # mean(a(t) - pi) over the batch
    replicates = np.empty(n_resamples)
    rows = max(1, _CHUNK_ELEMENTS // m)  # replicates drawn at once (bounded memory)
    for start in range(0, n_resamples, rows):
        size = min(rows, n_resamples - start)
        index = rng.integers(0, m, size=(size, m))
        t_b = rng.choice(thresholds, size=size)[:, None]
        pi = confidences[index]
        labels = rng.random(size=index.shape) < pi
        replicates[start : start + size] = (
            estimate
            + (scores[index] > t_b).mean(axis=1)
            - pi.mean(axis=1)
            - centre
            + labels.mean(axis=1)
            - pi.mean(axis=1)
        )
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(replicates, [alpha, 1 - alpha])
    return AtcInterval(
        estimate=estimate,
        lower=float(np.clip(lower, 0, 1)),
        upper=float(np.clip(upper, 0, 1)),
        confidence=float(confidence),
        n_resamples=int(n_resamples),
    )
