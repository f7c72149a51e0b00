"""Pixel attributions by four standard methods, behind one function.

- ``integrated_gradients``: Sundararajan et al., ICML 2017
  (:func:`tai.principles.transparency.explain.integrated_gradients`, baseline 0), with its
  completeness gap as
  ``convergence_delta``.
- ``saliency``: Simonyan et al., "Deep Inside Convolutional Networks", 2014: the absolute
  gradient of the target logit with respect to every input value (captum ``Saliency``).
- ``gradcam``: Selvaraju et al., ICCV 2017: ``ReLU(sum_k w_k A_k)`` with ``A`` the
  activations of a convolutional layer (its output) and ``w_k`` the spatial mean of the
  gradient of the target logit with respect to channel ``k`` (captum ``LayerGradCam``),
  upsampled bilinearly to the input size with ``LayerAttribution.interpolate``
  (``torch.nn.functional.interpolate``, ``align_corners=False``). One channel: maps are
  ``(N, 1, H, W)``.
- ``occlusion``: Zeiler & Fergus, ECCV 2014: the drop of the target logit when a square
  window (all channels) slides over the image and is set to 0 (captum ``Occlusion``).

Every method runs the model in eval mode and restores each submodule's own mode afterwards
(as :func:`tai.principles.transparency.explain.integrated_gradients` does, so that a training loop
calling it is
not disturbed); gradients are taken with respect to the inputs (or a layer's output) only,
so no ``.grad`` is left on the parameters. Calls inside ``torch.no_grad()`` or
``torch.inference_mode()`` work too.
"""

from dataclasses import dataclass

import torch
from captum.attr import LayerAttribution, LayerGradCam, Occlusion, Saliency
from torch import Tensor, nn

from tai.principles.transparency.explain import (
    _check_images,
    _check_positive,
    _check_target,
    _eval_mode,
    integrated_gradients,
)

__all__ = ["METHODS", "AttributionMaps", "attribute", "default_target_layer"]

METHODS = ("integrated_gradients", "saliency", "gradcam", "occlusion")

_NAMES_SHOWN = 12


@dataclass(frozen=True)
class AttributionMaps:
    """Attributions of one method for a batch.

    Attributes:
        method: one of :data:`METHODS`.
        maps: ``(N, C, H, W)`` attributions (``(N, 1, H, W)`` for ``gradcam``).
        convergence_delta: ``(N,)`` completeness gap for ``integrated_gradients``, else
            ``None``.
        target_layer: the layer GradCAM used, else ``None``.
    """

    method: str
    maps: Tensor
    convergence_delta: Tensor | None = None
    target_layer: str | None = None


def attribute(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    *,
    method: str,
    target_layer: str | None = None,
    n_steps: int = 32,
    occlusion_window: int | tuple[int, int] | None = None,
    batch_size: int = 64,
) -> AttributionMaps:
    """Attributions of the target logit to the input pixels by ``method``.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
        inputs: ``(N, C, H, W)`` images.
        target: ``(N,)`` class index per image.
        method: one of :data:`METHODS`.
        target_layer: name (as in ``model.named_modules()``) of the layer GradCAM explains;
            default the last ``nn.Conv2d`` of the model. Ignored by the other methods.
        n_steps: quadrature points of Integrated Gradients.
        occlusion_window: side (or ``(height, width)``) of the occluding window; default
            ``max(1, round(min(H, W) / 7))`` (4 pixels on 28x28 images), stride half the
            window. Ignored by the other methods.
        batch_size: most images per pass (for IG: interpolated images, examples x steps;
            for occlusion: occluded copies).

    Returns:
        :class:`AttributionMaps`.

    Raises:
        ValueError: on an unknown ``method`` (the message lists :data:`METHODS`), a
            ``target_layer`` that is not a module of the model (the message lists some),
            a model without ``nn.Conv2d`` when GradCAM needs a default layer, an
            occlusion window larger than the image, wrong shapes or targets, or
            non-positive ``n_steps``/``batch_size``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> attribute(model, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]),
        ...           method="saliency").maps.shape
        torch.Size([3, 1, 2, 2])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    _check_images(inputs)
    _check_positive("n_steps", n_steps)
    _check_positive("batch_size", batch_size)
    if method == "integrated_gradients":
        # At most `batch_size` interpolated images per pass (not examples x steps): with
        # examples x steps, max-sensitivity's 4 x 16 perturbed 64x64 RGB images took 3.5 GB.
        result = integrated_gradients(
            model, inputs, target, n_steps=n_steps, internal_batch_size=batch_size
        )
        return AttributionMaps(method, result.maps, result.convergence_delta)
    layer_name, layer, window = None, None, (1, 1)
    if method == "gradcam":
        layer_name = target_layer if target_layer is not None else default_target_layer(model)
        layer = _find_layer(model, layer_name)
    elif method == "occlusion":
        window = _occlusion_window(occlusion_window, inputs)
    with torch.inference_mode(False), torch.enable_grad(), _eval_mode(model):
        inputs, target = inputs.clone(), target.clone().to(inputs.device)
        _check_target(model, inputs, target)
        maps = []
        for x, t in zip(inputs.split(batch_size), target.split(batch_size), strict=True):
            if method == "saliency":
                attr = Saliency(model).attribute(x.requires_grad_(), target=t, abs=True)
            elif method == "gradcam":
                attr = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
                attr = LayerAttribution.interpolate(
                    attr, tuple(x.shape[2:]), interpolate_mode="bilinear"
                )
            else:
                attr = _occlusion(model, x, t, window, batch_size)
            maps.append(attr.detach())
    return AttributionMaps(method, torch.cat(maps), None, layer_name)


def default_target_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` of ``model`` (in ``named_modules`` order).

    Raises:
        ValueError: if the model has no ``nn.Conv2d``.
    """
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no Conv2d layer; pass target_layer.")
    return convs[-1]


def _find_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    shown = ", ".join(names[:_NAMES_SHOWN]) + (", ..." if len(names) > _NAMES_SHOWN else "")
    raise ValueError(
        f"target_layer {name!r} is not a module of the model; its modules include: {shown}."
    )


def _occlusion_window(window: int | tuple[int, int] | None, inputs: Tensor) -> tuple[int, int]:
    height, width = inputs.shape[2:]
    if window is None:
        side = max(1, round(min(height, width) / 7))
        return side, side
    size = (window, window) if isinstance(window, int) else tuple(window)
    if len(size) != 2 or not all(
        1 <= s <= limit for s, limit in zip(size, (height, width), strict=False)
    ):
        raise ValueError(
            f"occlusion_window must be a side or (height, width) between 1 and the image "
            f"size {(height, width)}, got {window!r}."
        )
    return size


def _occlusion(
    model: nn.Module, x: Tensor, target: Tensor, window: tuple[int, int], batch_size: int
) -> Tensor:
    channels = x.shape[1]
    strides = (channels, max(1, window[0] // 2), max(1, window[1] // 2))
    with torch.no_grad():
        return Occlusion(model).attribute(
            x,
            sliding_window_shapes=(channels, *window),
            strides=strides,
            baselines=0.0,
            target=target,
            # captum runs len(x) x perturbations_per_eval occluded images a pass.
            perturbations_per_eval=max(1, batch_size // len(x)),
        )
