"""Pixel attributions (Integrated Gradients) and their faithfulness (deletion AUC).

Integrated Gradients (Sundararajan et al., "Axiomatic Attribution for Deep Networks",
ICML 2017) attributes the target logit ``f_t`` to every input value::

    IG_i(x) = (x_i - b_i) * integral_0^1 d f_t(b + a (x - b)) / d x_i  da

and is *complete*: ``sum_i IG_i(x) = f_t(x) - f_t(b)``; captum reports the gap of its
quadrature as the convergence delta.

Deletion (Petsiuk et al., "RISE", BMVC 2018) measures how faithful a map is: remove the
most-attributed pixels first, in ``steps`` equal fractions, and follow the softmax
probability of the target class; a faithful map makes it fall fast, so a *lower* area
under that curve is better. Pixels are ranked by the attribution summed over channels
(signed, so positive evidence goes first), and a removed pixel is set to ``baseline`` in
every channel.

Models are expected to map ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from captum.attr import IntegratedGradients
from torch import Tensor

__all__ = ["Attributions", "DeletionResult", "deletion_auc", "integrated_gradients"]


@dataclass(frozen=True)
class Attributions:
    """Integrated Gradients for a batch.

    Attributes:
        maps: ``(N, C, H, W)`` attributions, same shape as the inputs.
        convergence_delta: ``(N,)`` completeness gap ``sum(maps) - (f_t(x) - f_t(b))``.
    """

    maps: Tensor
    convergence_delta: Tensor


@dataclass(frozen=True)
class DeletionResult:
    """Deletion curves and their areas.

    Attributes:
        auc: ``(N,)`` area under each deletion curve, in ``[0, 1]``; lower is more faithful.
        curves: ``(N, steps + 1)`` target probability after removing ``0, 1/steps, ..., 1``
            of the pixels.
    """

    auc: Tensor
    curves: Tensor

    @property
    def mean(self) -> float:
        """Mean deletion AUC over the batch."""
        return float(self.auc.mean())


def integrated_gradients(
    model: torch.nn.Module,
    inputs: Tensor,
    target: Tensor,
    *,
    n_steps: int = 32,
    baseline: float = 0.0,
    internal_batch_size: int | None = 64,
) -> Attributions:
    """Integrated Gradients of the target logit with respect to the input pixels.

    The model runs in eval mode and its modes are restored afterwards; gradients are taken
    with respect to the inputs only, so no ``.grad`` is left on the parameters. It also
    works when called under ``torch.no_grad()`` or ``torch.inference_mode()``.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
        inputs: ``(N, C, H, W)`` images.
        target: ``(N,)`` class index per image, each in ``[0, num_classes)``.
        n_steps: quadrature points on the path from the baseline to the input (captum's
            Gauss-Legendre rule).
        baseline: constant image value the path starts from.
        internal_batch_size: most images (examples x steps) in one forward/backward pass;
            ``None`` puts the whole batch and all steps in one pass.

    Returns:
        :class:`Attributions` with ``(N, C, H, W)`` maps and ``(N,)`` convergence deltas.

    Raises:
        ValueError: on wrong shapes, a target outside ``[0, num_classes)``, ``n_steps < 1``
            or ``internal_batch_size < 1``.
    """
    _check_images(inputs)
    _check_positive("n_steps", n_steps)
    if internal_batch_size is not None:
        _check_positive("internal_batch_size", internal_batch_size)
    # Callers may sit in a no_grad or inference_mode block (a Lightning validation hook);
    # IG needs autograd, and inference tensors must be cloned into normal ones first.
    with torch.inference_mode(False), torch.enable_grad(), _eval_mode(model):
        inputs, target = inputs.clone(), target.clone()
        _check_target(model, inputs, target)
        ig = IntegratedGradients(model)
        # captum always runs every example of a call in each pass and splits only the
        # steps, so the examples are chunked here to keep a pass within the budget.
        per_call = (
            len(inputs) if internal_batch_size is None else max(1, internal_batch_size // n_steps)
        )
        maps, deltas = [], []
        for x, t in zip(inputs.split(per_call), target.split(per_call), strict=True):
            attr, delta = ig.attribute(
                x,
                baselines=baseline,
                target=t,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                return_convergence_delta=True,
            )
            maps.append(attr.detach())
            deltas.append(delta.detach())
    return Attributions(maps=torch.cat(maps), convergence_delta=torch.cat(deltas))


def deletion_auc(
    model: torch.nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    *,
    steps: int = 20,
    baseline: float = 0.0,
    batch_size: int = 128,
) -> DeletionResult:
    """Deletion AUC (Petsiuk et al., 2018) of attribution maps.

    For ``k = 0..steps`` the ``round(k / steps * H * W)`` pixels with the largest
    channel-summed attribution are set to ``baseline`` (ties broken by position) and
    ``p_k = softmax(model(x_k))[target]`` is recorded; the AUC is the trapezoid area
    under ``p_k`` over the removed fraction in ``[0, 1]``.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
        inputs: ``(N, C, H, W)`` images.
        attributions: ``(N, C, H, W)`` or ``(N, H, W)`` attribution maps.
        target: ``(N,)`` class index per image, each in ``[0, num_classes)``.
        steps: number of equal deletion fractions.
        baseline: value a removed pixel takes.
        batch_size: most images in one forward pass.

    Returns:
        :class:`DeletionResult` with ``(N,)`` AUCs and ``(N, steps + 1)`` curves.

    Raises:
        ValueError: on wrong shapes, a target outside ``[0, num_classes)``, ``steps < 1``
            or ``batch_size < 1``.

    Example:
        >>> class Pixel0(torch.nn.Module):
        ...     def forward(self, x):  # logit of class 0 is 4 * pixel (0, 0)
        ...         return torch.stack([4 * x[:, 0, 0, 0], torch.zeros(len(x))], dim=1)
        >>> x = torch.ones(1, 1, 2, 2)
        >>> focused = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
        >>> r = deletion_auc(Pixel0(), x, focused, torch.tensor([0]), steps=4)
        >>> [round(p, 3) for p in r.curves[0].tolist()], round(r.mean, 3)
        ([0.982, 0.5, 0.5, 0.5, 0.5], 0.56)
    """
    _check_images(inputs)
    scores = _pixel_scores(attributions, inputs)
    _check_positive("steps", steps)
    _check_positive("batch_size", batch_size)
    n, _, height, width = inputs.shape
    n_pixels = height * width
    target = target.to(inputs.device)
    removed = torch.round(torch.arange(steps + 1) / steps * n_pixels).long()
    removed = removed.to(inputs.device)
    curves = torch.empty(n * (steps + 1), device=inputs.device)
    with _eval_mode(model), torch.no_grad():
        _check_target(model, inputs, target)
        for job in torch.arange(n * (steps + 1), device=inputs.device).split(batch_size):
            example, step = job // (steps + 1), job % (steps + 1)
            rank = _rank_of_pixels(scores[example])
            keep = (rank >= removed[step, None]).view(-1, 1, height, width)
            x = torch.where(keep, inputs[example], torch.as_tensor(baseline, dtype=inputs.dtype))
            probs = torch.softmax(model(x), dim=1)
            curves[job] = probs[torch.arange(len(job)), target[example]].to(curves.dtype)
    curves = curves.view(n, steps + 1)
    fractions = removed.to(curves.dtype) / n_pixels
    return DeletionResult(auc=torch.trapezoid(curves, x=fractions, dim=1), curves=curves)


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode, then restore every submodule's own mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _check_images(inputs: Tensor) -> None:
    if inputs.ndim != 4 or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs must be a non-empty batch of images of shape (N, C, H, W), "
            f"got shape {tuple(inputs.shape)}."
        )


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}.")


def _check_target(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> None:
    if target.ndim != 1 or target.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"target must have shape (N,) = ({inputs.shape[0]},) to match inputs, "
            f"got shape {tuple(target.shape)}."
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}.")
    with torch.no_grad():
        logits = model(inputs[:1])
    if logits.ndim != 2:
        raise ValueError(
            f"model must return logits of shape (N, num_classes), got shape "
            f"{tuple(logits.shape)} for one input."
        )
    num_classes = logits.shape[1]
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"target holds class {bad}, outside [0, {num_classes}) for a model with "
            f"{num_classes} outputs."
        )


def _pixel_scores(attributions: Tensor, inputs: Tensor) -> Tensor:
    """``(N, H * W)`` ranking scores: attributions summed over channels."""
    n, _, height, width = inputs.shape
    if attributions.shape in ((n, inputs.shape[1], height, width), (n, height, width)):
        summed = attributions if attributions.ndim == 3 else attributions.sum(dim=1)
        return summed.reshape(n, height * width).to(inputs.device)
    raise ValueError(
        f"attributions must have shape (N, C, H, W) = {tuple(inputs.shape)} or "
        f"(N, H, W) = {(n, height, width)} to match inputs, got {tuple(attributions.shape)}."
    )


def _rank_of_pixels(scores: Tensor) -> Tensor:
    """Rank of each pixel (0 = most attributed) within its row; ties keep pixel order."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)
