r"""Calibration of a classifier's top-label confidence.

A classifier is calibrated when, among the samples it predicts with confidence ``p``, a
fraction ``p`` is correct. This module measures how far a model is from that, following
Guo et al., "On Calibration of Modern Neural Networks", ICML 2017
(https://arxiv.org/abs/1706.04599).

Binning: ``n_bins`` equal-width bins on ``[0, 1]``; bin ``m`` is ``[m/M, (m+1)/M)`` and
the last bin is closed, ``[(M-1)/M, 1]`` (``numpy.histogram`` semantics). This equals
``torchmetrics.functional.classification.multiclass_calibration_error`` except for a
confidence of exactly ``1.0``, which torchmetrics (1.9) counts in an extra, hidden bin of
its own (Lightning-AI/torchmetrics#3510); here it belongs to the last bin, as in the paper.

All functions take

- ``probs``: float tensor ``(N, C)`` of class probabilities (rows sum to 1, e.g. the
  output of ``logits.softmax(dim=1)``), ``C >= 2``;
- ``target``: integer tensor ``(N,)`` of class indices in ``[0, C)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CalibrationResult",
    "ReliabilityBins",
    "calibration_summary",
    "expected_calibration_error",
    "reliability_bins",
]

_ALLOWED_NORMS = ("l1", "l2", "max")
_ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of the top-label confidence, for reliability diagrams.

    Attributes:
        edges: the ``n_bins + 1`` bin boundaries ``0, 1/M, ..., 1``.
        confidence: mean top-label confidence per bin (``0.0`` for an empty bin).
        accuracy: fraction of correct top-label predictions per bin (``0.0`` if empty).
        count: number of samples per bin.
    """

    edges: list[float]
    confidence: list[float]
    accuracy: list[float]
    count: list[int]

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return len(self.count)


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration metrics of one set of predictions.

    Attributes:
        ece: expected calibration error (L1, Guo et al. 2017).
        mce: maximum calibration error over the bins.
        nll: mean negative log-likelihood of the target class.
        brier: multi-class Brier score, ``mean_i sum_c (p_ic - y_ic)^2``, in ``[0, 2]``.
        accuracy: top-1 accuracy.
        n_samples: number of samples.
        bins: the reliability bins the ECE and MCE were computed from.
    """

    ece: float
    mce: float
    nll: float
    brier: float
    accuracy: float
    n_samples: int
    bins: ReliabilityBins

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics for logging: ``ece``, ``mce``, ``nll`` and ``brier``."""
        return {"ece": self.ece, "mce": self.mce, "nll": self.nll, "brier": self.brier}


# --------------------------------------------------------------------------- validation


def _arg_validation(n_bins: int, norm: str | None = None) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(
            f"Expected argument `n_bins` to be an integer >= 1, but got {n_bins!r}. "
            "Pass the number of equal-width confidence bins, e.g. n_bins=15."
        )
    if norm is not None and norm not in _ALLOWED_NORMS:
        raise ValueError(
            f"Expected argument `norm` to be one of {_ALLOWED_NORMS}, but got {norm!r}. "
            "Use 'l1' for the ECE, 'l2' for the RMS calibration error, 'max' for the MCE."
        )


def _tensor_validation(probs: Tensor, target: Tensor) -> None:
    if not isinstance(probs, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            "Expected `probs` and `target` to be torch tensors, but got "
            f"{type(probs).__name__} and {type(target).__name__}. Convert with torch.as_tensor."
        )
    if probs.ndim != 2:
        raise ValueError(
            f"Expected `probs` of shape (N, C), but got {probs.ndim} dimensions "
            f"{tuple(probs.shape)}. Flatten extra dimensions or add the class dimension."
        )
    if target.ndim != 1:
        raise ValueError(
            f"Expected `target` of shape (N,), but got {target.ndim} dimensions "
            f"{tuple(target.shape)}. Pass class indices, not one-hot vectors."
        )
    n, c = probs.shape
    if n == 0:
        raise ValueError(
            "Expected at least one sample, but got an empty batch (N = 0). "
            "Calibration is undefined without predictions; check the data loader."
        )
    if target.shape[0] != n:
        raise ValueError(
            f"Expected `probs` and `target` to have the same number of samples, but got "
            f"{n} and {target.shape[0]}. Pass one target per row of `probs`."
        )
    if c < 2:
        raise ValueError(
            f"Expected at least 2 classes in `probs`, but got C = {c}. "
            "For a binary model pass both columns (1 - p, p)."
        )
    if not probs.is_floating_point():
        raise ValueError(
            f"Expected `probs` to be a floating point tensor, but got dtype {probs.dtype}. "
            "Pass probabilities, e.g. logits.softmax(dim=1)."
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"Expected `target` to be an integer tensor of class indices, but got dtype "
            f"{target.dtype}. Convert with target.long()."
        )
    if not torch.isfinite(probs).all():
        raise ValueError(
            "Expected `probs` to be finite, but found NaN or inf values. "
            "Check the model output for overflow before the softmax."
        )
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(
            f"Expected `probs` in [0, 1], but got values in [{probs.min().item():.4g}, "
            f"{probs.max().item():.4g}]. These look like logits: apply softmax(dim=1) first."
        )
    row_error = (probs.sum(dim=1, dtype=torch.float64) - 1).abs().max().item()
    if row_error > _ROW_SUM_TOLERANCE:
        raise ValueError(
            f"Expected each row of `probs` to sum to 1 (tolerance {_ROW_SUM_TOLERANCE}), but "
            f"a row is off by {row_error:.4g}. Apply softmax(dim=1) to the logits."
        )
    t_min, t_max = target.min().item(), target.max().item()
    if t_min < 0 or t_max >= c:
        raise ValueError(
            f"Expected `target` values in [0, {c}) for C = {c} classes, but got values in "
            f"[{t_min}, {t_max}]. Check the label mapping against the model's classes."
        )


# --------------------------------------------------------------------------- computation


def _top_label(probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Top-label confidence and correctness (1.0/0.0) per sample."""
    confidences, predictions = probs.max(dim=1)
    return confidences, predictions.eq(target.to(predictions.device)).to(torch.float64)


def _bin_statistics(
    confidences: Tensor, accuracies: Tensor, n_bins: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges, per-bin mean accuracy, mean confidence and count (float64, empty bins 0)."""
    # Edges in the confidences' dtype, as torchmetrics, so a tie with an edge bins alike.
    edges = torch.linspace(0, 1, n_bins + 1, dtype=confidences.dtype, device=confidences.device)
    index = (torch.bucketize(confidences, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64, device=confidences.device)
    conf_sum = torch.zeros_like(count)
    acc_sum = torch.zeros_like(count)
    count.scatter_add_(0, index, torch.ones_like(accuracies))
    conf_sum.scatter_add_(0, index, confidences.to(torch.float64))
    acc_sum.scatter_add_(0, index, accuracies)
    safe = count.clamp_min(1)
    return edges, acc_sum / safe, conf_sum / safe, count


def _ce_compute(acc_bin: Tensor, conf_bin: Tensor, count: Tensor, norm: str) -> float:
    gap = (acc_bin - conf_bin).abs()
    weight = count / count.sum()
    if norm == "l1":
        return float((gap * weight).sum())
    if norm == "l2":
        return math.sqrt(float((gap.pow(2) * weight).sum()))
    return float(gap.max())


def _to_bins(edges: Tensor, acc_bin: Tensor, conf_bin: Tensor, count: Tensor) -> ReliabilityBins:
    return ReliabilityBins(
        edges=[float(e) for e in edges.tolist()],
        confidence=conf_bin.tolist(),
        accuracy=acc_bin.tolist(),
        count=[int(c) for c in count.tolist()],
    )


# --------------------------------------------------------------------------- public API


def expected_calibration_error(
    probs: Tensor, target: Tensor, *, n_bins: int = 15, norm: str = "l1"
) -> float:
    r"""Top-label calibration error with equal-width bins (Guo et al. 2017).

    With :math:`B_m` the samples whose top-label confidence falls into bin :math:`m`,
    :math:`\mathrm{acc}(B_m)` their accuracy and :math:`\mathrm{conf}(B_m)` their mean
    confidence:

    .. math::
        \mathrm{ECE} = \sum_m \frac{|B_m|}{N} \left|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\right|
        \quad (\text{norm}=\text{"l1"})

        \mathrm{RMSCE} = \sqrt{\sum_m \frac{|B_m|}{N}
            \left(\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\right)^2} \quad (\text{"l2"})

        \mathrm{MCE} = \max_m \left|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\right|
        \quad (\text{"max"})

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1.
        target: ``(N,)`` integer class indices.
        n_bins: number of equal-width confidence bins on ``[0, 1]``.
        norm: ``"l1"`` (ECE), ``"l2"`` (RMS calibration error) or ``"max"`` (MCE).

    Returns:
        The calibration error, a float in ``[0, 1]``.

    Raises:
        ValueError: if an argument or input tensor is invalid (see the module docstring).

    Example:
        Five samples, two classes, five bins. Confidences 0.9 and 0.7 fall into bins
        ``[0.8, 1]`` and ``[0.6, 0.8)``; the first bin is 2/3 accurate at mean confidence
        0.9, the second 1/2 accurate at mean confidence 0.7:
        ``3/5 * |2/3 - 0.9| + 2/5 * |1/2 - 0.7| = 0.22``.

        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
        >>> target = torch.tensor([0, 1, 1, 0, 0])
        >>> round(expected_calibration_error(probs, target, n_bins=5), 6)
        0.22
        >>> round(expected_calibration_error(probs, target, n_bins=5, norm="max"), 6)
        0.233333
    """
    _arg_validation(n_bins, norm)
    _tensor_validation(probs, target)
    confidences, accuracies = _top_label(probs.detach(), target)
    _, acc_bin, conf_bin, count = _bin_statistics(confidences, accuracies, n_bins)
    return _ce_compute(acc_bin, conf_bin, count, norm)


def reliability_bins(probs: Tensor, target: Tensor, *, n_bins: int = 15) -> ReliabilityBins:
    """Per-bin mean confidence, accuracy and count of the top-label predictions.

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1.
        target: ``(N,)`` integer class indices.
        n_bins: number of equal-width confidence bins on ``[0, 1]``.

    Returns:
        The bins; ``edges`` has ``n_bins + 1`` entries, the other lists ``n_bins``.

    Raises:
        ValueError: if an argument or input tensor is invalid.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
        >>> target = torch.tensor([0, 1, 1, 0, 0])
        >>> reliability_bins(probs, target, n_bins=5).count
        [0, 0, 0, 2, 3]
    """
    _arg_validation(n_bins)
    _tensor_validation(probs, target)
    confidences, accuracies = _top_label(probs.detach(), target)
    return _to_bins(*_bin_statistics(confidences, accuracies, n_bins))


def calibration_summary(probs: Tensor, target: Tensor, *, n_bins: int = 15) -> CalibrationResult:
    r"""ECE, MCE, NLL, Brier score, accuracy and reliability bins in one pass.

    .. math::
        \mathrm{NLL} = -\frac{1}{N}\sum_i \log p_{i, y_i}, \qquad
        \mathrm{Brier} = \frac{1}{N}\sum_i \sum_c \left(p_{ic} - [c = y_i]\right)^2

    Probabilities are clamped to the smallest positive normal number of their dtype
    before the logarithm, so a zero probability on the target gives a large, finite NLL.
    The Brier score is the multi-class form of Brier (1950), in ``[0, 2]``.

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1.
        target: ``(N,)`` integer class indices.
        n_bins: number of equal-width confidence bins for ECE, MCE and the bins.

    Returns:
        A :class:`CalibrationResult`.

    Raises:
        ValueError: if an argument or input tensor is invalid.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
        >>> target = torch.tensor([0, 1, 1, 0, 0])
        >>> result = calibration_summary(probs, target, n_bins=5)
        >>> {k: round(v, 4) for k, v in result.as_dict().items()}
        {'ece': 0.22, 'mce': 0.2333, 'nll': 0.8148, 'brier': 0.564}
        >>> result.accuracy
        0.6
    """
    _arg_validation(n_bins)
    _tensor_validation(probs, target)
    probs = probs.detach()
    confidences, accuracies = _top_label(probs, target)
    edges, acc_bin, conf_bin, count = _bin_statistics(confidences, accuracies, n_bins)

    target = target.to(probs.device).long()
    p_target = probs.gather(1, target[:, None]).squeeze(1)
    nll = -p_target.clamp_min(torch.finfo(probs.dtype).tiny).to(torch.float64).log().mean()
    onehot = torch.nn.functional.one_hot(target, probs.shape[1]).to(torch.float64)
    brier = (probs.to(torch.float64) - onehot).pow(2).sum(dim=1).mean()

    return CalibrationResult(
        ece=_ce_compute(acc_bin, conf_bin, count, "l1"),
        mce=_ce_compute(acc_bin, conf_bin, count, "max"),
        nll=float(nll),
        brier=float(brier),
        accuracy=float(accuracies.mean()),
        n_samples=int(probs.shape[0]),
        bins=_to_bins(edges, acc_bin, conf_bin, count),
    )
