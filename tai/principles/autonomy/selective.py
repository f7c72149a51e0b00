r"""Selective prediction: answer when confident, abstain otherwise (autonomy & control).

A selective classifier (Geifman & El-Yaniv, "Selective Classification for Deep Neural
Networks", NeurIPS 2017, https://arxiv.org/abs/1705.08500) predicts only when its
confidence :math:`\kappa(x)` reaches a threshold :math:`\theta` and hands the other
samples to a human. Here :math:`\kappa` is the top softmax probability (the paper's
"softmax response"). At threshold :math:`\theta` on :math:`N` samples,

.. math::
    \phi(\theta) = \frac{|\{i : \kappa_i \ge \theta\}|}{N}, \qquad
    r(\theta) = \frac{|\{i : \kappa_i \ge \theta,\ \hat y_i \ne y_i\}|}
                     {|\{i : \kappa_i \ge \theta\}|}

are the coverage and the selective risk (the error rate on the accepted samples).

Risk-coverage curve: rank the samples by decreasing confidence; at coverage
:math:`k/N` the risk is the error rate of the :math:`k` most confident samples,
:math:`r_k = E_k / k` with :math:`E_k` the errors among them, for ``k = 1..N``.
Ties: samples of equal confidence have no order, so :math:`E_k` inside a group of tied
samples is the expectation over their orders, the group's errors spread evenly over its
positions (:math:`E_k` interpolated linearly between the group's ends). The curve then
does not depend on the input order, and a constant-confidence model has the flat curve
:math:`r_k = ` its error rate. Without ties this is the plain ranked curve.

AURC, the area under that curve (Geifman, Uziel & El-Yaniv, "Bias-Reduced Uncertainty
Estimation for Deep Neural Classifiers", ICLR 2019, https://arxiv.org/abs/1805.08206,
§3), is its mean, :math:`\mathrm{AURC} = \frac{1}{N}\sum_{k=1}^N r_k`. Its best value for
a model with :math:`e` errors comes from the oracle that ranks every correct sample
first:

.. math::
    \mathrm{AURC}^* = \frac{1}{N} \sum_{k=N-e+1}^{N} \frac{k - (N - e)}{k},

which tends to the paper's :math:`r + (1 - r)\ln(1 - r)`, :math:`r = e/N`, as
:math:`N \to \infty` (the paper's formula is this sum's integral). E-AURC
:math:`= \mathrm{AURC} - \mathrm{AURC}^*` is the part of the area due to a bad ranking
alone: 0 for a perfect one; this module uses the exact finite-sample
:math:`\mathrm{AURC}^*`, so E-AURC is never negative.

The threshold is fitted on validation data (:func:`abstention_threshold`, for a target
coverage or a largest risk) and evaluated on test data (:func:`selective_metrics`).

Own code rather than ``torch_uncertainty.metrics.AURC``: that metric breaks ties by an
unstable sort, integrates with the trapezoid rule and has neither the exact E-AURC nor
the threshold selection; the tests compare with it where the definitions agree.

All functions take ``probs``: ``(N, C)`` class probabilities (rows sum to 1) and
``targets``: ``(N,)`` class indices, as torch tensors or numpy arrays.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tai.principles.reliability.calibration import _tensor_validation, _top_label

__all__ = [
    "RiskCoverage",
    "SelectiveMetrics",
    "SelectiveReport",
    "abstention_threshold",
    "risk_coverage",
    "selective_metrics",
    "selective_report",
]

DEFAULT_REPORT_COVERAGE = 0.8


@dataclass(frozen=True)
class RiskCoverage:
    """The risk-coverage curve of the top-label confidence and its areas.

    Attributes:
        coverage: ``k / N`` for ``k = 1..N``.
        risk: selective risk of the ``k`` most confident samples (ties averaged, see the
            module docstring).
        confidence: the ``k``-th largest confidence, the threshold that accepts them.
        aurc: area under the curve, the mean of ``risk``.
        optimal_aurc: AURC of the oracle ranking with the same errors (finite-sample).
        e_aurc: ``aurc - optimal_aurc``.
        error_rate: error rate at full coverage.
        n_samples: ``N``.
    """

    coverage: list[float]
    risk: list[float]
    confidence: list[float]
    aurc: float
    optimal_aurc: float
    e_aurc: float
    error_rate: float
    n_samples: int

    def risk_at_coverage(self, target_coverage: float) -> float:
        """Selective risk of the ``ceil(target_coverage * N)`` most confident samples.

        Raises:
            ValueError: if ``target_coverage`` is not in ``(0, 1]``.
        """
        _check_coverage(target_coverage)
        return self.risk[_rank_for_coverage(target_coverage, self.n_samples) - 1]

    def as_dict(self) -> dict[str, float]:
        """Flat scalars for logging: ``aurc`` and ``e_aurc``."""
        return {"aurc": self.aurc, "e_aurc": self.e_aurc}


@dataclass(frozen=True)
class SelectiveMetrics:
    """Coverage and selective risk of one confidence threshold on one data set.

    Attributes:
        threshold: accept a sample when its confidence is ``>=`` this.
        coverage: fraction of samples accepted.
        selective_risk: error rate on the accepted samples; ``nan`` when none is accepted.
        n_accepted: number of samples accepted.
        n_samples: number of samples.
    """

    threshold: float
    coverage: float
    selective_risk: float
    n_accepted: int
    n_samples: int

    def as_dict(self) -> dict[str, float]:
        """Flat scalars: ``abstention_threshold``, ``coverage_at_threshold`` and
        ``selective_risk_at_threshold``."""
        return {
            "abstention_threshold": self.threshold,
            "coverage_at_threshold": self.coverage,
            "selective_risk_at_threshold": self.selective_risk,
        }


@dataclass(frozen=True)
class SelectiveReport:
    """Selective prediction on the test split, with the threshold fitted on validation.

    Attributes:
        curve: the test risk-coverage curve.
        at_threshold: test coverage and risk at the validation threshold.
        report_coverage: the coverage of ``risk_at_coverage``.
        risk_at_coverage: test selective risk at ``report_coverage``.
    """

    curve: RiskCoverage
    at_threshold: SelectiveMetrics
    report_coverage: float
    risk_at_coverage: float

    def as_dict(self) -> dict[str, float]:
        """Flat scalars: ``aurc``, ``e_aurc``, ``risk_at_coverage``,
        ``abstention_threshold``, ``coverage_at_threshold``, ``selective_risk_at_threshold``."""
        return {
            **self.curve.as_dict(),
            "risk_at_coverage": self.risk_at_coverage,
            **self.at_threshold.as_dict(),
        }


# --------------------------------------------------------------------------- validation


def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _check_coverage(value: float, name: str = "target coverage") -> None:
    if not _is_real(value) or not 0 < value <= 1:  # NaN fails the comparison too
        raise ValueError(
            f"{name} must be in (0, 1]; got {value!r}. Pass the fraction of samples the "
            "model should answer itself, e.g. 0.9."
        )


def _check_max_risk(value: float) -> None:
    if not _is_real(value) or not 0 <= value <= 1:
        raise ValueError(
            f"max_risk must be in [0, 1]; got {value!r}. Pass the largest error rate "
            "acceptable on the answered samples, e.g. 0.05."
        )


def _confidence_and_errors(probs: Tensor | np.ndarray, targets: Tensor | np.ndarray):
    """Validated top-label confidence (float64) and error indicator (0/1) as numpy arrays."""
    probs = torch.as_tensor(probs) if isinstance(probs, np.ndarray) else probs
    targets = torch.as_tensor(targets) if isinstance(targets, np.ndarray) else targets
    if isinstance(probs, Tensor) and probs.ndim >= 1 and probs.shape[0] == 0:
        raise ValueError(
            "Expected at least one sample, but got an empty `probs` (N = 0). Selective "
            "risk and coverage are undefined without predictions; check the data loader."
        )
    _tensor_validation(probs, targets)  # shapes, dtypes, NaN, [0, 1], rows summing to 1
    confidence, correct = _top_label(probs.detach(), targets)
    confidence = confidence.cpu().to(torch.float64).numpy()
    return confidence, 1.0 - correct.cpu().numpy()


# --------------------------------------------------------------------------- computation


def _rank_for_coverage(target_coverage: float, n: int) -> int:
    """Smallest ``k`` with ``k / n >= target_coverage``; rounding noise (0.7 * 10) ignored."""
    return min(n, max(1, math.ceil(round(target_coverage * n, 9))))


def _tie_groups(confidence: np.ndarray, errors: np.ndarray):
    """Sorted confidences, and per group of equal confidence: last rank, errors up to it."""
    order = np.argsort(-confidence, kind="stable")
    sorted_conf, sorted_err = confidence[order], errors[order]
    new_group = np.empty(sorted_conf.size, dtype=bool)
    new_group[0] = True
    new_group[1:] = sorted_conf[1:] != sorted_conf[:-1]
    group = np.cumsum(new_group) - 1
    size = np.bincount(group)
    end = np.cumsum(size)  # accepted count when the threshold is this group's confidence
    cum_errors = np.cumsum(np.bincount(group, weights=sorted_err))
    return sorted_conf, group, size, end, cum_errors


def _curve(confidence: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sorted_conf, group, size, end, cum_errors = _tie_groups(confidence, errors)
    k = np.arange(1, confidence.size + 1)
    group_errors = np.diff(cum_errors, prepend=0.0)
    # Expected errors among the first k when tied samples come in a random order.
    expected = cum_errors[group] - group_errors[group] * (end[group] - k) / size[group]
    return sorted_conf, expected / k


def _optimal_aurc(n: int, n_errors: int) -> float:
    k = np.arange(n - n_errors + 1, n + 1, dtype=np.float64)
    return float(np.sum(1.0 - (n - n_errors) / k) / n)


def _threshold_for_risk(confidence: np.ndarray, errors: np.ndarray, max_risk: float) -> float:
    sorted_conf, _, _, end, cum_errors = _tie_groups(confidence, errors)
    ok = np.flatnonzero(cum_errors / end <= max_risk)
    if ok.size == 0:
        return math.inf
    return float(sorted_conf[end[ok[-1]] - 1])


def _check_target_and_risk(target_coverage: float | None, max_risk: float | None) -> None:
    if (target_coverage is None) == (max_risk is None):
        raise ValueError(
            "Expected exactly one of `target_coverage` and `max_risk`, but got "
            f"target_coverage={target_coverage!r} and max_risk={max_risk!r}. Pass "
            "target_coverage to answer a fixed fraction of samples, or max_risk to answer "
            "as many as possible within an error rate."
        )
    if target_coverage is not None:
        _check_coverage(target_coverage)
    else:
        _check_max_risk(max_risk)


# --------------------------------------------------------------------------- public API


def risk_coverage(probs: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> RiskCoverage:
    """Risk-coverage curve, AURC and E-AURC of the top-label confidence.

    The formulas and the treatment of ties are in the module docstring.

    Args:
        probs: ``(N, C)`` class probabilities.
        targets: ``(N,)`` class indices.

    Returns:
        A :class:`RiskCoverage`.

    Raises:
        ValueError: for empty inputs, NaN, values outside ``[0, 1]``, rows not summing to 1,
            or mismatched shapes.

    Example:
        Confidences 0.9, 0.8, 0.7, 0.6, 0.55; the second and the last are wrong.

        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
        >>> curve = risk_coverage(probs, torch.tensor([0, 1, 0, 0, 1]))
        >>> [round(r, 4) for r in curve.risk]
        [0.0, 0.5, 0.3333, 0.25, 0.4]
        >>> round(curve.aurc, 4), round(curve.optimal_aurc, 4), round(curve.e_aurc, 4)
        (0.2967, 0.13, 0.1667)
        >>> curve.risk_at_coverage(0.8)
        0.25
    """
    confidence, errors = _confidence_and_errors(probs, targets)
    sorted_conf, risk = _curve(confidence, errors)
    n = confidence.size
    aurc = float(risk.mean())
    optimal = _optimal_aurc(n, int(errors.sum()))
    return RiskCoverage(
        coverage=(np.arange(1, n + 1) / n).tolist(),
        risk=risk.tolist(),
        confidence=sorted_conf.tolist(),
        aurc=aurc,
        optimal_aurc=optimal,
        # Rounding may leave -1e-17 for a perfect ranking; E-AURC >= 0 by construction.
        e_aurc=max(0.0, aurc - optimal),
        error_rate=float(errors.mean()),
        n_samples=n,
    )


def abstention_threshold(
    probs_val: Tensor | np.ndarray,
    targets_val: Tensor | np.ndarray,
    *,
    target_coverage: float | None = None,
    max_risk: float | None = None,
) -> float:
    """Confidence threshold fitted on validation data: answer when confidence >= it.

    Give exactly one of:

    - ``target_coverage``: the largest threshold whose coverage on the validation set is
      at least ``target_coverage``, i.e. the ``ceil(target_coverage * N)``-th largest
      confidence (more samples are accepted when others tie with it);
    - ``max_risk``: the lowest threshold, among the validation confidences, whose selective
      risk on the validation set is at most ``max_risk``, i.e. the largest coverage that
      keeps the risk within it. When even the most confident group of samples errs more
      often, the threshold is ``inf``: abstain on everything.

    This is the empirical threshold; it does not carry the high-probability risk guarantee
    of the paper's SGR algorithm.

    Args:
        probs_val: ``(N, C)`` validation class probabilities.
        targets_val: ``(N,)`` validation class indices.
        target_coverage: fraction of samples to answer, in ``(0, 1]``.
        max_risk: largest acceptable selective risk, in ``[0, 1]``.

    Returns:
        The threshold, a validation confidence or ``inf``.

    Raises:
        ValueError: if both or neither of ``target_coverage`` and ``max_risk`` are given,
            either is out of range, or the inputs are invalid.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
        >>> targets = torch.tensor([0, 1, 0, 0, 1])
        >>> round(abstention_threshold(probs, targets, target_coverage=0.6), 4)
        0.7
        >>> round(abstention_threshold(probs, targets, max_risk=0.3), 4)
        0.6
    """
    _check_target_and_risk(target_coverage, max_risk)
    confidence, errors = _confidence_and_errors(probs_val, targets_val)
    if target_coverage is not None:
        k = _rank_for_coverage(target_coverage, confidence.size)
        return float(np.sort(confidence)[::-1][k - 1])
    return _threshold_for_risk(confidence, errors, max_risk)


def selective_metrics(
    probs_test: Tensor | np.ndarray, targets_test: Tensor | np.ndarray, threshold: float
) -> SelectiveMetrics:
    """Coverage and selective risk when answering only samples with confidence >= threshold.

    Args:
        probs_test: ``(N, C)`` class probabilities.
        targets_test: ``(N,)`` class indices.
        threshold: the confidence threshold, e.g. from :func:`abstention_threshold`;
            ``inf`` abstains on everything.

    Returns:
        A :class:`SelectiveMetrics`; its ``selective_risk`` is ``nan`` at coverage 0.

    Raises:
        ValueError: if ``threshold`` is not a real number or is NaN, or the inputs are
            invalid.
    """
    if not _is_real(threshold) or math.isnan(threshold):
        raise ValueError(
            f"Expected `threshold` to be a real number, but got {threshold!r}. Pass the "
            "value returned by abstention_threshold()."
        )
    confidence, errors = _confidence_and_errors(probs_test, targets_test)
    accepted = confidence >= threshold
    n_accepted = int(accepted.sum())
    return SelectiveMetrics(
        threshold=float(threshold),
        coverage=n_accepted / confidence.size,
        selective_risk=float(errors[accepted].mean()) if n_accepted else math.nan,
        n_accepted=n_accepted,
        n_samples=int(confidence.size),
    )


def selective_report(
    probs_val: Tensor | np.ndarray,
    targets_val: Tensor | np.ndarray,
    probs_test: Tensor | np.ndarray,
    targets_test: Tensor | np.ndarray,
    *,
    target_coverage: float | None = None,
    max_risk: float | None = None,
    report_coverage: float = DEFAULT_REPORT_COVERAGE,
) -> SelectiveReport:
    """Fit the abstention threshold on validation, then measure everything on test.

    Args:
        probs_val: ``(N_val, C)`` validation class probabilities.
        targets_val: ``(N_val,)`` validation class indices.
        probs_test: ``(N_test, C)`` test class probabilities.
        targets_test: ``(N_test,)`` test class indices.
        target_coverage: as in :func:`abstention_threshold` (give it or ``max_risk``).
        max_risk: as in :func:`abstention_threshold`.
        report_coverage: coverage, in ``(0, 1]``, of the ``risk_at_coverage`` scalar.

    Returns:
        A :class:`SelectiveReport`.

    Raises:
        ValueError: as :func:`abstention_threshold` and :func:`risk_coverage`, or if
            ``report_coverage`` is not in ``(0, 1]``.
    """
    _check_coverage(report_coverage, "report coverage")
    threshold = abstention_threshold(
        probs_val, targets_val, target_coverage=target_coverage, max_risk=max_risk
    )
    curve = risk_coverage(probs_test, targets_test)
    return SelectiveReport(
        curve=curve,
        at_threshold=selective_metrics(probs_test, targets_test, threshold),
        report_coverage=float(report_coverage),
        risk_at_coverage=curve.risk_at_coverage(report_coverage),
    )
