r"""Temperature scaling: one scalar that recalibrates a classifier's logits.

Guo et al., "On Calibration of Modern Neural Networks", ICML 2017
(https://arxiv.org/abs/1706.04599), §4.2: divide the logits ``z`` by a temperature
``T > 0`` fitted on held-out (validation) data by minimising the negative log-likelihood,

.. math::
    T^* = \arg\min_{T > 0} -\frac{1}{N} \sum_i \log \operatorname{softmax}(z_i / T)_{y_i}.

``T > 1`` softens over-confident predictions, ``T < 1`` sharpens under-confident ones;
the arg-max, hence the accuracy, is unchanged.

Fitting: in the inverse temperature :math:`\beta = 1/T` the NLL
:math:`\frac{1}{N}\sum_i \operatorname{logsumexp}(\beta z_i) - \beta z_{i,y_i}` is convex
(log-sum-exp is convex, the second term linear), with derivative
:math:`\frac{1}{N}\sum_i \mathbb{E}_{p_i}[z] - z_{i,y_i}` and second derivative
:math:`\frac{1}{N}\sum_i \operatorname{Var}_{p_i}[z] \ge 0`. :func:`fit_temperature` finds
the root of the derivative by Newton's method safeguarded with bisection on the bracket
``T`` in ``[0.01, 100]``, in float64: deterministic, no learning rate, and it reaches the
global minimum (or the bracket's end when the NLL keeps falling, e.g. for separable data).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from tai.principles.reliability.calibration import expected_calibration_error

__all__ = ["TemperatureFit", "fit_temperature"]

T_MIN = 0.01
T_MAX = 100.0
_ECE_BINS = 15
# Stop when the bracket on beta is this narrow (relative) or the gradient this small.
_BETA_RTOL = 1e-10
_GRAD_ATOL = 1e-12


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the calibration it buys on the fitting data.

    Attributes:
        temperature: the fitted ``T``, in ``[0.01, 100]``; divide the logits by it.
        nll_before: mean NLL of ``softmax(logits)``.
        nll_after: mean NLL of ``softmax(logits / T)``; never above ``nll_before``.
        ece_before: top-label ECE (15 equal-width bins) of ``softmax(logits)``.
        ece_after: the same for ``softmax(logits / T)``.
    """

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def as_dict(self) -> dict[str, float]:
        """All fields, for logging."""
        return asdict(self)


def fit_temperature(logits: Tensor, target: Tensor, *, max_iter: int = 100) -> TemperatureFit:
    r"""Fit the temperature that minimises the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Fit on validation logits, never on the test split the calibration is reported on.
    See the module docstring for the method. If the fitted ``T`` does not lower the NLL
    below that of ``T = 1`` (the logits are already calibrated, up to rounding),
    ``T = 1`` is returned.

    Args:
        logits: ``(N, C)`` float logits (before the softmax), ``C >= 2``.
        target: ``(N,)`` integer class indices in ``[0, C)``.
        max_iter: most Newton/bisection steps; 100 is far more than convergence needs.

    Returns:
        A :class:`TemperatureFit`.

    Raises:
        ValueError: if ``max_iter`` is not a positive integer, or the logits or targets
            are empty, not finite, of the wrong shape or dtype, or out of range.

    Example:
        Logits twice as sharp as needed: the fit halves them back.

        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
        >>> target = torch.tensor([0, 0, 1, 0])  # 3 of 4 correct at confidence 0.88
        >>> fit = fit_temperature(logits, target)
        >>> round(fit.temperature, 4)  # ln(3) / 2 = 1 / 1.8205 makes sigmoid(2 / T) = 0.75
        1.8205
        >>> fit.nll_after < fit.nll_before
        True
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(
            f"Expected argument `max_iter` to be an integer >= 1, but got {max_iter!r}. "
            "Pass the most optimisation steps, e.g. max_iter=100."
        )
    _logits_validation(logits, target)
    z = logits.detach().to(torch.float64)
    y = target.to(z.device).long()
    z_target = z.gather(1, y[:, None]).squeeze(1)

    beta = _minimise_nll(z, z_target, max_iter)
    nll_before = _nll(z, z_target, 1.0)
    nll_after = _nll(z, z_target, beta)
    if not nll_after < nll_before:
        beta, nll_after = 1.0, nll_before
    temperature = 1.0 / beta
    return TemperatureFit(
        temperature=temperature,
        nll_before=nll_before,
        nll_after=nll_after,
        ece_before=expected_calibration_error(z.softmax(dim=1), y, n_bins=_ECE_BINS),
        ece_after=expected_calibration_error((z * beta).softmax(dim=1), y, n_bins=_ECE_BINS),
    )


# --------------------------------------------------------------------------- helpers


def _logits_validation(logits: Tensor, target: Tensor) -> None:
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            "Expected `logits` and `target` to be torch tensors, but got "
            f"{type(logits).__name__} and {type(target).__name__}. Convert with torch.as_tensor."
        )
    if logits.ndim != 2:
        raise ValueError(
            f"Expected `logits` of shape (N, C), but got {logits.ndim} dimensions "
            f"{tuple(logits.shape)}. Flatten extra dimensions or add the class dimension."
        )
    if target.ndim != 1:
        raise ValueError(
            f"Expected `target` of shape (N,), but got {target.ndim} dimensions "
            f"{tuple(target.shape)}. Pass class indices, not one-hot vectors."
        )
    n, c = logits.shape
    if n == 0:
        raise ValueError(
            "Expected at least one sample, but got an empty batch (N = 0). "
            "A temperature cannot be fitted without validation logits."
        )
    if target.shape[0] != n:
        raise ValueError(
            f"Expected `logits` and `target` to have the same number of samples, but got "
            f"{n} and {target.shape[0]}. Pass one target per row of `logits`."
        )
    if c < 2:
        raise ValueError(
            f"Expected at least 2 classes in `logits`, but got C = {c}. "
            "For a binary model with one logit s pass the two columns (0, s)."
        )
    if not logits.is_floating_point():
        raise ValueError(
            f"Expected `logits` to be a floating point tensor, but got dtype {logits.dtype}. "
            "Pass the model's raw output."
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(
            f"Expected `target` to be an integer tensor of class indices, but got dtype "
            f"{target.dtype}. Convert with target.long()."
        )
    if not torch.isfinite(logits).all():
        raise ValueError(
            "Expected `logits` to be finite, but found NaN or inf values. "
            "Check the model for overflow or a diverged training run."
        )
    t_min, t_max = target.min().item(), target.max().item()
    if t_min < 0 or t_max >= c:
        raise ValueError(
            f"Expected `target` values in [0, {c}) for C = {c} classes, but got values in "
            f"[{t_min}, {t_max}]. Check the label mapping against the model's classes."
        )


def _nll(z: Tensor, z_target: Tensor, beta: float) -> float:
    return float((torch.logsumexp(beta * z, dim=1) - beta * z_target).mean())


def _derivatives(z: Tensor, z_target: Tensor, beta: float) -> tuple[float, float]:
    """First and second derivative of the mean NLL with respect to ``beta``."""
    p = (beta * z).softmax(dim=1)
    mean_z = (p * z).sum(dim=1)
    var_z = (p * (z - mean_z[:, None]).pow(2)).sum(dim=1)
    return float((mean_z - z_target).mean()), float(var_z.mean())


def _minimise_nll(z: Tensor, z_target: Tensor, max_iter: int) -> float:
    """The inverse temperature in ``[1/T_MAX, 1/T_MIN]`` minimising the convex mean NLL."""
    lo, hi = 1.0 / T_MAX, 1.0 / T_MIN
    if _derivatives(z, z_target, lo)[0] >= 0:
        return lo  # NLL rises from the softest end: as soft as allowed.
    if _derivatives(z, z_target, hi)[0] <= 0:
        return hi  # NLL still falls at the sharpest end (e.g. separable data).
    beta = 1.0
    for _ in range(max_iter):
        grad, curvature = _derivatives(z, z_target, beta)
        if abs(grad) <= _GRAD_ATOL:
            break
        if grad > 0:
            hi = beta
        else:
            lo = beta
        if hi - lo <= _BETA_RTOL * hi:
            break
        step = beta - grad / curvature if curvature > 0 else math.nan
        # Newton where it stays inside the bracket, else bisect (geometrically: beta is a scale).
        beta = step if lo < step < hi else math.sqrt(lo * hi)
    return beta
