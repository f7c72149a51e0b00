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

Beyond the top-label ECE/MCE the module offers the adaptive (equal-mass) calibration error
of Nixon et al., "Measuring Calibration in Deep Learning", CVPR Workshops 2019
(https://arxiv.org/abs/1904.01685), the classwise ECE of Kull et al., "Beyond temperature
scaling", NeurIPS 2019 (https://arxiv.org/abs/1910.12656), and a percentile-bootstrap
confidence interval of the ECE (Efron & Tibshirani, "An Introduction to the Bootstrap",
1993), so a gate can test the interval's upper bound instead of a noisy point estimate.

All functions take

- ``probs``: float tensor ``(N, C)`` of class probabilities (rows sum to 1, e.g. the
  output of ``logits.softmax(dim=1)``), ``C >= 2``;
- ``target``: integer tensor ``(N,)`` of class indices in ``[0, C)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = [
    "CalibrationResult",
    "ReliabilityBins",
    "adaptive_calibration_error",
    "calibration_report",
    "calibration_summary",
    "classwise_calibration_error",
    "ece_confidence_interval",
    "brier_score",
    "expected_calibration_error",
    "negative_log_likelihood",
    "reliability_bins",
]

_ALLOWED_NORMS = ("l1", "l2", "max")
_ROW_SUM_TOLERANCE = 1e-3
# Most resampled indices held in memory at once by the bootstrap (about 32 MiB of int64).
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


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
        adaptive_ece: top-label ECE with equal-mass bins (Nixon et al. 2019); ``nan``
            unless filled by :func:`calibration_report`.
        classwise_ece: classwise ECE (Kull et al. 2019); ``nan`` unless filled.
        ece_lower: lower bound of the bootstrap confidence interval of ``ece``; ``nan``
            unless filled.
        ece_upper: upper bound of that interval; ``nan`` unless filled.
    """

    ece: float
    mce: float
    nll: float
    brier: float
    accuracy: float
    n_samples: int
    bins: ReliabilityBins
    adaptive_ece: float = math.nan
    classwise_ece: float = math.nan
    ece_lower: float = math.nan
    ece_upper: float = math.nan

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics for logging: ``ece``, ``mce``, ``nll`` and ``brier``."""
        return {"ece": self.ece, "mce": self.mce, "nll": self.nll, "brier": self.brier}

    def as_extended_dict(self) -> dict[str, float]:
        """All scalar metrics: those of :meth:`as_dict`, ``adaptive_ece``,
        ``classwise_ece``, ``ece_upper`` and ``ece_lower`` (``nan`` where not computed)."""
        return {
            **self.as_dict(),
            "adaptive_ece": self.adaptive_ece,
            "classwise_ece": self.classwise_ece,
            "ece_upper": self.ece_upper,
            "ece_lower": self.ece_lower,
        }


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


def _bootstrap_arg_validation(n_boot: int, level: float, seed: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(
            f"Expected argument `n_boot` to be an integer >= 1, but got {n_boot!r}. "
            "Pass the number of bootstrap resamples, e.g. n_boot=1000."
        )
    if (
        isinstance(level, bool)
        or not isinstance(level, numbers.Real)
        or not math.isfinite(level)
        or not 0 < level < 1
    ):
        raise ValueError(
            f"Expected argument `level` to be a float in the open interval (0, 1), but got "
            f"{level!r}. Pass the coverage of the interval, e.g. level=0.95."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(
            f"Expected argument `seed` to be an integer, but got {seed!r}. "
            "The same seed gives the same interval."
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


def _equal_width_index(values: Tensor, n_bins: int) -> tuple[Tensor, Tensor]:
    """Edges and the equal-width bin of each value; the last bin is closed."""
    # Edges in the values' dtype, as torchmetrics, so a tie with an edge bins alike.
    edges = torch.linspace(0, 1, n_bins + 1, dtype=values.dtype, device=values.device)
    index = (torch.bucketize(values, edges, right=True) - 1).clamp(0, n_bins - 1)
    return edges, index


def _equal_mass_index(values: Tensor, n_bins: int) -> Tensor:
    """The equal-mass bin of each value: rank ``r`` of ``N`` (stable sort) goes to ``rM // N``."""
    order = torch.sort(values, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(values.numel(), device=values.device)
    return rank * n_bins // values.numel()


def _index_statistics(
    index: Tensor, confidences: Tensor, accuracies: Tensor, n_bins: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin mean accuracy, mean confidence and count (float64, empty bins 0)."""
    count = torch.zeros(n_bins, dtype=torch.float64, device=confidences.device)
    conf_sum = torch.zeros_like(count)
    acc_sum = torch.zeros_like(count)
    count.scatter_add_(0, index, torch.ones_like(accuracies))
    conf_sum.scatter_add_(0, index, confidences.to(torch.float64))
    acc_sum.scatter_add_(0, index, accuracies)
    safe = count.clamp_min(1)
    return acc_sum / safe, conf_sum / safe, count


def _bin_statistics(
    confidences: Tensor, accuracies: Tensor, n_bins: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Edges, per-bin mean accuracy, mean confidence and count (float64, empty bins 0)."""
    edges, index = _equal_width_index(confidences, n_bins)
    return edges, *_index_statistics(index, confidences, accuracies, n_bins)


def _adaptive_ce(confidences: Tensor, accuracies: Tensor, n_bins: int, norm: str) -> float:
    index = _equal_mass_index(confidences, n_bins)
    return _ce_compute(*_index_statistics(index, confidences, accuracies, n_bins), norm)


def _classwise_ce(probs: Tensor, target: Tensor, n_bins: int) -> float:
    """Mean over classes of the equal-width ECE of ``p_k`` against ``[y = k]``."""
    n, c = probs.shape
    _, index = _equal_width_index(probs, n_bins)  # (N, C)
    onehot = torch.nn.functional.one_hot(target.to(probs.device).long(), c)
    # |sum_{i in B_mk} ([y_i = k] - p_ik)| / N is the bin's weighted gap |B_mk|/N |acc - conf|.
    residual = onehot.to(torch.float64) - probs.to(torch.float64)
    flat = index + n_bins * torch.arange(c, device=probs.device)
    sums = torch.zeros(c * n_bins, dtype=torch.float64, device=probs.device)
    sums.scatter_add_(0, flat.flatten(), residual.flatten())
    return float(sums.abs().view(c, n_bins).sum(dim=1).mean() / n)


def _bootstrap_ece(
    confidences: Tensor, accuracies: Tensor, n_bins: int, n_boot: int, seed: int
) -> Tensor:
    """ECE of ``n_boot`` resamples (with replacement) of the samples, float64 on the CPU."""
    confidences = confidences.detach().cpu()
    _, index = _equal_width_index(confidences, n_bins)
    residual = accuracies.cpu() - confidences.to(torch.float64)
    n = residual.numel()
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    eces = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draw = torch.randint(0, n, (b, n), generator=generator)
        # ECE = sum_m |sum_{i in B_m} (acc_i - conf_i)| / N, one row of bins per resample.
        flat = index[draw] + n_bins * torch.arange(b)[:, None]
        sums = torch.bincount(
            flat.flatten(), weights=residual[draw].flatten(), minlength=b * n_bins
        )
        eces.append(sums.view(b, n_bins).abs().sum(dim=1) / n)
    return torch.cat(eces)


def _percentile_interval(samples: Tensor, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=samples.dtype)
    lower, upper = torch.quantile(samples, q).tolist()
    return lower, upper


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
    return _summary(probs.detach(), target, n_bins)


def negative_log_likelihood(probs: Tensor, target: Tensor) -> float:
    r"""Mean negative log-likelihood of the target class,
    :math:`-\frac{1}{N}\sum_i \log p_{i, y_i}`, in nats.

    The one definition used by the report, the confidence bounds and the champion
    comparisons: probabilities are clamped to the smallest positive normal number of their
    dtype before the logarithm (a zero probability gives a large, finite loss), in float64.

    Example:
        >>> import torch
        >>> round(negative_log_likelihood(torch.tensor([[0.5, 0.5], [0.9, 0.1]]),
        ...                               torch.tensor([0, 0])), 4)
        0.3993
    """
    _tensor_validation(probs, target)
    return float(_per_sample_nll(probs.detach(), target).mean())


def brier_score(probs: Tensor, target: Tensor) -> float:
    r"""Multi-class Brier score (Brier 1950),
    :math:`\frac{1}{N}\sum_i \sum_c (p_{ic} - [c = y_i])^2`, in ``[0, 2]``.

    Example:
        >>> import torch
        >>> round(brier_score(torch.tensor([[0.5, 0.5], [0.9, 0.1]]), torch.tensor([0, 0])), 4)
        0.26
    """
    _tensor_validation(probs, target)
    return float(_per_sample_brier(probs.detach(), target).mean())


def _per_sample_nll(probs: Tensor, target: Tensor) -> Tensor:
    p_target = probs.gather(1, target.to(probs.device).long()[:, None]).squeeze(1)
    return -p_target.clamp_min(torch.finfo(probs.dtype).tiny).to(torch.float64).log()


def _per_sample_brier(probs: Tensor, target: Tensor) -> Tensor:
    onehot = torch.nn.functional.one_hot(target.to(probs.device).long(), probs.shape[1])
    return (probs.to(torch.float64) - onehot.to(torch.float64)).pow(2).sum(dim=1)


def adaptive_calibration_error(
    probs: Tensor, target: Tensor, *, n_bins: int = 15, norm: str = "l1"
) -> float:
    r"""Top-label calibration error with equal-mass (adaptive) bins (Nixon et al. 2019).

    Equal-width bins leave most bins nearly empty when a model is confident, so the ECE
    rests on a few bins. Adaptive binning (Nixon et al., "Measuring Calibration in Deep
    Learning", 2019) sorts the samples by top-label confidence and gives each of the
    ``M = n_bins`` bins the same number of samples: the sample of rank :math:`r`
    (0-based, stable sort, so ties keep sample order) of :math:`N` goes to bin
    :math:`\lfloor rM/N \rfloor`; every bin holds :math:`\lfloor N/M \rfloor` or
    :math:`\lceil N/M \rceil` samples, and bins stay empty only when ``M > N``. Then,
    as for :func:`expected_calibration_error`,

    .. math::
        \mathrm{ACE} = \sum_m \frac{|B_m|}{N}
            \left|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)\right| \quad (\text{"l1"})

    with the ``"l2"`` and ``"max"`` norms as there. This is the top-label form (also
    called AdaECE, Mukhoti et al. 2020); Nixon et al.'s ACE further averages the adaptive
    error over every class's probability, as :func:`classwise_calibration_error` does with
    equal-width bins.

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1.
        target: ``(N,)`` integer class indices.
        n_bins: number of equal-mass confidence bins.
        norm: ``"l1"``, ``"l2"`` or ``"max"``.

    Returns:
        The adaptive calibration error, a float in ``[0, 1]``.

    Raises:
        ValueError: if an argument or input tensor is invalid.

    Example:
        With five bins for five samples each bin holds one sample, and the error is the
        mean ``|correct - confidence|``: ``(0.1 + 0.9 + 0.1 + 0.3 + 0.7) / 5 = 0.42``.

        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
        >>> target = torch.tensor([0, 1, 1, 0, 0])
        >>> round(adaptive_calibration_error(probs, target, n_bins=5), 6)
        0.42
    """
    _arg_validation(n_bins, norm)
    _tensor_validation(probs, target)
    confidences, accuracies = _top_label(probs.detach(), target)
    return _adaptive_ce(confidences, accuracies, n_bins, norm)


def classwise_calibration_error(probs: Tensor, target: Tensor, *, n_bins: int = 15) -> float:
    r"""Classwise ECE: the mean over classes of each class probability's ECE (Kull et al. 2019).

    The top-label ECE looks only at the predicted class. Classwise calibration (Kull et
    al., "Beyond temperature scaling: Obtaining well-calibrated multiclass probabilities
    with Dirichlet calibration", NeurIPS 2019) asks every class probability :math:`p_k` to
    match the frequency of :math:`y = k`. With :math:`B_{mk}` the samples whose
    :math:`p_k` falls into equal-width bin :math:`m` (bins as in
    :func:`expected_calibration_error`):

    .. math::
        \text{classwise-ECE} = \frac{1}{C} \sum_{k=1}^{C} \sum_m \frac{|B_{mk}|}{N}
            \left| \frac{1}{|B_{mk}|}\sum_{i \in B_{mk}} [y_i = k]
            - \frac{1}{|B_{mk}|}\sum_{i \in B_{mk}} p_{ik} \right|

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1.
        target: ``(N,)`` integer class indices.
        n_bins: number of equal-width bins on ``[0, 1]`` per class.

    Returns:
        The classwise ECE, a float in ``[0, 1]``.

    Raises:
        ValueError: if an argument or input tensor is invalid.

    Example:
        Class 0 has probabilities 0.9 (twice, one a class-0 sample), 0.7 (class 0),
        0.3 (class 0) and 0.1 (class 1): ``(0.8 + 0.3 + 0.7 + 0.1) / 5 = 0.38``; with two
        classes class 1 mirrors it.

        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
        >>> target = torch.tensor([0, 1, 1, 0, 0])
        >>> round(classwise_calibration_error(probs, target, n_bins=5), 6)
        0.38
    """
    _arg_validation(n_bins)
    _tensor_validation(probs, target)
    return _classwise_ce(probs.detach(), target, n_bins)


def ece_confidence_interval(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    r"""The ECE and a percentile-bootstrap confidence interval for it.

    Draws ``n_boot`` resamples of the ``N`` samples with replacement, computes each
    resample's ECE with the fixed equal-width bins, and takes the
    :math:`\alpha = (1 - \text{level}) / 2` and :math:`1 - \alpha` quantiles (linear
    interpolation) of those ECEs as the interval (Efron & Tibshirani 1993, ch. 13).
    Resamples are drawn in chunks of bounded memory with a CPU ``torch.Generator``
    seeded by ``seed``: the same inputs and seed give the same interval.

    The binned ECE is biased upwards (a resample's bins hold fewer distinct samples, so
    their gaps are noisier), so for a well-calibrated model the bootstrap distribution can
    lie above the point estimate and the interval need not contain it. The upper bound is
    the conservative number for a gate.

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1.
        target: ``(N,)`` integer class indices.
        n_bins: number of equal-width confidence bins on ``[0, 1]``.
        n_boot: number of bootstrap resamples, ``>= 1``.
        level: coverage of the interval, in ``(0, 1)``.
        seed: seed of the resampling.

    Returns:
        ``(ece, lower, upper)``: the ECE of all samples (equal to
        :func:`expected_calibration_error`) and the interval's bounds.

    Raises:
        ValueError: if an argument or input tensor is invalid.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
        >>> target = torch.tensor([0, 1, 1, 0, 0])
        >>> ece, lower, upper = ece_confidence_interval(probs, target, n_bins=5, n_boot=200)
        >>> round(ece, 6), lower <= upper
        (0.22, True)
    """
    _arg_validation(n_bins)
    _bootstrap_arg_validation(n_boot, level, seed)
    _tensor_validation(probs, target)
    confidences, accuracies = _top_label(probs.detach(), target)
    return _ece_interval(confidences, accuracies, n_bins, n_boot, level, seed)


def calibration_report(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> CalibrationResult:
    """Every calibration metric of this module, for an evaluation report.

    :func:`calibration_summary` plus the adaptive ECE, the classwise ECE and the
    bootstrap interval of the ECE at ``level`` (:func:`ece_confidence_interval`), all with
    ``n_bins`` bins. It costs about ``n_boot``
    times a summary; use :func:`calibration_summary` where that matters (e.g. every epoch).

    Args:
        probs: ``(N, C)`` class probabilities, rows summing to 1.
        target: ``(N,)`` integer class indices.
        n_bins: number of bins of every binned metric.
        n_boot: number of bootstrap resamples for ``ece_lower`` and ``ece_upper``.
        level: two-sided coverage of that interval.
        seed: seed of the resampling.

    Returns:
        A :class:`CalibrationResult` with every field filled.

    Raises:
        ValueError: if an argument or input tensor is invalid.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
        >>> target = torch.tensor([0, 1, 1, 0, 0])
        >>> report = calibration_report(probs, target, n_bins=5, n_boot=200)
        >>> round(report.ece, 4), round(report.adaptive_ece, 4), round(report.classwise_ece, 4)
        (0.22, 0.42, 0.38)
        >>> list(report.as_extended_dict())
        ['ece', 'mce', 'nll', 'brier', 'adaptive_ece', 'classwise_ece', 'ece_upper', 'ece_lower']
    """
    _arg_validation(n_bins)
    _bootstrap_arg_validation(n_boot, level, seed)
    _tensor_validation(probs, target)
    probs = probs.detach()
    summary = _summary(probs, target, n_bins)
    confidences, accuracies = _top_label(probs, target)
    _, lower, upper = _ece_interval(confidences, accuracies, n_bins, n_boot, level, seed)
    return replace(
        summary,
        adaptive_ece=_adaptive_ce(confidences, accuracies, n_bins, "l1"),
        classwise_ece=_classwise_ce(probs, target, n_bins),
        ece_lower=lower,
        ece_upper=upper,
    )


# --------------------------------------------------------------------------- composition


def _ece_interval(
    confidences: Tensor, accuracies: Tensor, n_bins: int, n_boot: int, level: float, seed: int
) -> tuple[float, float, float]:
    _, acc_bin, conf_bin, count = _bin_statistics(confidences, accuracies, n_bins)
    point = _ce_compute(acc_bin, conf_bin, count, "l1")
    lower, upper = _percentile_interval(
        _bootstrap_ece(confidences, accuracies, n_bins, n_boot, seed), level
    )
    return point, lower, upper


def _summary(probs: Tensor, target: Tensor, n_bins: int) -> CalibrationResult:
    """:func:`calibration_summary` of validated, detached inputs."""
    confidences, accuracies = _top_label(probs, target)
    edges, acc_bin, conf_bin, count = _bin_statistics(confidences, accuracies, n_bins)

    return CalibrationResult(
        ece=_ce_compute(acc_bin, conf_bin, count, "l1"),
        mce=_ce_compute(acc_bin, conf_bin, count, "max"),
        nll=float(_per_sample_nll(probs, target).mean()),
        brier=float(_per_sample_brier(probs, target).mean()),
        accuracy=float(accuracies.mean()),
        n_samples=int(probs.shape[0]),
        bins=_to_bins(edges, acc_bin, conf_bin, count),
    )
