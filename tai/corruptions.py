"""Common image corruptions at five severities, after ImageNet-C.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019 (https://arxiv.org/abs/1903.12261); parameters from their
``make_imagenet_c.py``. Every corruption takes a batch ``(N, C, H, W)`` of floats in
``[0, 1]`` with ``C`` = 1 or 3 and returns a tensor of the same shape and dtype, clamped
to ``[0, 1]``. Random corruptions draw from a ``torch.Generator`` seeded by ``seed``, so
a call is deterministic given its inputs.

==================  ==========================================  ==============================
name                operation                                   parameter at severity 1..5
==================  ==========================================  ==============================
gaussian_noise      ``x + c * N(0, 1)``                         ``c = .08, .12, .18, .26, .38``
shot_noise          ``Poisson(x * c) / c``                      ``c = 60, 25, 12, 5, 3``
impulse_noise       salt & pepper on a fraction ``c`` of values ``c = .03, .06, .09, .17, .27``
gaussian_blur       Gaussian filter, std ``sigma`` pixels        ``sigma = 1, 2, 3, 4, 6``
contrast            ``(x - mean) * c + mean``                   ``c = .4, .3, .2, .1, .05``
jpeg_compression    JPEG encode/decode at ``quality``           ``quality = 25, 18, 15, 10, 7``
==================  ==========================================  ==============================

Details, as in ImageNet-C: the blur kernel is truncated at 4 sigma and the border is
replicated (scipy's ``mode="nearest"``); the contrast mean is per image and channel; JPEG
works on the image quantised to 8 bits. The parameters were chosen for 224-pixel images,
so on small images (CIFAR, MNIST) the blur is relatively stronger.

Add a corruption with :func:`register_corruption`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import kornia
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "CorruptionFn",
    "available_corruptions",
    "corrupt",
    "register_corruption",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
_RANGE_TOLERANCE = 1e-6

CorruptionFn = Callable[[Tensor, int, torch.Generator], Tensor]
"""``fn(images, severity, generator) -> corrupted``; images ``(N, C, H, W)`` in [0, 1]."""


@dataclass(frozen=True)
class Corruption:
    """A named corruption: ``fn(images, severity, generator)`` for severities 1..5.

    Attributes:
        name: registry name.
        fn: the function; it may return values outside ``[0, 1]``, :func:`corrupt` clamps.
        parameters: the parameter per severity, for documentation and reports
            (``None`` for a user function that does not declare them).
    """

    name: str
    fn: CorruptionFn
    parameters: tuple[float, ...] | None = None

    def __call__(self, images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
        return self.fn(images, severity, generator)


# --------------------------------------------------------------------------- built-ins

_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_NOISE = (60.0, 25.0, 12.0, 5.0, 3.0)
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)
_GAUSSIAN_BLUR = (1.0, 2.0, 3.0, 4.0, 6.0)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_JPEG_QUALITY = (25, 18, 15, 10, 7)


def _gaussian_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: torchvision's gaussian_noise draws from the global RNG, not a Generator.
    c = _GAUSSIAN_NOISE[severity - 1]
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + c * noise


def _shot_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: neither torchvision nor kornia has Poisson (photon) noise.
    c = _SHOT_NOISE[severity - 1]
    return torch.poisson(images.clamp(0, 1) * c, generator=generator) / c


def _impulse_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: skimage's random_noise(mode="s&p") on tensors; salt and pepper equally likely.
    c = _IMPULSE_NOISE[severity - 1]
    u = torch.rand(images.shape, generator=generator, device=images.device)
    out = images.clone()
    out[u < c / 2] = 0.0
    out[(u >= c / 2) & (u < c)] = 1.0
    return out


def _gaussian_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    sigma = _GAUSSIAN_BLUR[severity - 1]
    # scipy/skimage truncate at 4 sigma: radius int(4 * sigma + 0.5).
    size = 2 * int(4 * sigma + 0.5) + 1
    # kornia rather than torchvision: replicate borders (scipy "nearest") and no limit on
    # the kernel size relative to the image, which reflect padding has.
    return kornia.filters.gaussian_blur2d(
        images, (size, size), (sigma, sigma), border_type="replicate"
    )


def _contrast(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: torchvision/kornia contrast blends with the grayscale mean or scales by 0;
    # ImageNet-C scales around the mean of each channel of each image.
    c = _CONTRAST[severity - 1]
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return (images - mean) * c + mean


def _jpeg_compression(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    quality = _JPEG_QUALITY[severity - 1]
    as_uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return TF.jpeg(as_uint8, quality).to(images.dtype) / 255


_REGISTRY: dict[str, Corruption] = {
    "gaussian_noise": Corruption("gaussian_noise", _gaussian_noise, _GAUSSIAN_NOISE),
    "shot_noise": Corruption("shot_noise", _shot_noise, _SHOT_NOISE),
    "impulse_noise": Corruption("impulse_noise", _impulse_noise, _IMPULSE_NOISE),
    "gaussian_blur": Corruption("gaussian_blur", _gaussian_blur, _GAUSSIAN_BLUR),
    "contrast": Corruption("contrast", _contrast, _CONTRAST),
    "jpeg_compression": Corruption(
        "jpeg_compression", _jpeg_compression, tuple(float(q) for q in _JPEG_QUALITY)
    ),
}

CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType(_REGISTRY)
"""Read-only view of the registry: name -> :class:`Corruption` (includes registered ones)."""


# --------------------------------------------------------------------------- validation


def _check_name(name: str) -> Corruption:
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown corruption {name!r}. Expected one of {available_corruptions()}; "
            "add your own with register_corruption."
        )
    return _REGISTRY[name]


def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(
            f"Expected `severity` to be an integer in {SEVERITIES}, but got {severity!r}."
        )


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise ValueError(
            f"Expected `images` to be a torch tensor, but got {type(images).__name__}."
        )
    if images.ndim != 4:
        raise ValueError(
            f"Expected `images` of shape (N, C, H, W), but got {images.ndim} dimensions "
            f"{tuple(images.shape)}. Add a batch dimension with images.unsqueeze(0)."
        )
    if images.shape[0] == 0:
        raise ValueError("Expected at least one image, but got an empty batch (N = 0).")
    if images.shape[1] not in (1, 3):
        raise ValueError(
            f"Expected 1 or 3 channels (grayscale or RGB), but got C = {images.shape[1]} in "
            f"shape {tuple(images.shape)}. Images must be channels-first (N, C, H, W)."
        )
    if not images.is_floating_point():
        raise ValueError(
            f"Expected a floating point tensor in [0, 1], but got dtype {images.dtype}. "
            "Convert uint8 images with images.float() / 255."
        )
    if not torch.isfinite(images).all():
        raise ValueError("Expected finite values in `images`, but found NaN or inf.")
    low, high = images.min().item(), images.max().item()
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"Expected `images` in [0, 1], but got values in [{low:.4g}, {high:.4g}]. "
            "Corrupt images before normalisation (mean/std), and scale uint8 by 1/255."
        )


# --------------------------------------------------------------------------- public API


def available_corruptions() -> list[str]:
    """Names of the registered corruptions, built-in first, in registration order."""
    return list(_REGISTRY)


def register_corruption(name: str, fn: CorruptionFn) -> None:
    """Add a corruption under ``name``; it becomes usable in :func:`corrupt` at once.

    Args:
        name: a new registry name (non-empty string).
        fn: ``fn(images, severity, generator) -> Tensor`` for severity 1..5, images
            ``(N, C, H, W)`` in ``[0, 1]``; draw randomness only from ``generator`` so the
            result is deterministic. The output is clamped to ``[0, 1]`` for you.

    Raises:
        ValueError: if ``name`` is empty or already registered, or ``fn`` is not callable.

    Example::

        def darken(images, severity, generator):
            return images * (1 - 0.1 * severity)

        register_corruption("darken", darken)
        corrupt(images, "darken", 3)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected `name` to be a non-empty string, but got {name!r}.")
    if name in _REGISTRY:
        raise ValueError(
            f"A corruption named {name!r} is already registered; registered names are "
            f"{available_corruptions()}. Choose another name."
        )
    if not callable(fn):
        raise ValueError(
            f"Expected `fn` to be callable as fn(images, severity, generator), but got "
            f"{type(fn).__name__}."
        )
    _REGISTRY[name] = Corruption(name, fn)


def corrupt(images: Tensor, name: str, severity: int, *, seed: int = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` to a batch of images.

    Args:
        images: ``(N, C, H, W)`` float tensor in ``[0, 1]``, ``C`` = 1 or 3.
        name: a name from :func:`available_corruptions`.
        severity: 1 (mild) to 5 (severe).
        seed: seed of the ``torch.Generator`` random corruptions draw from.

    Returns:
        The corrupted batch: same shape, dtype and device, values in ``[0, 1]``.

    Raises:
        ValueError: for an unknown name, a severity outside 1..5, or invalid images.

    Example:
        >>> import torch
        >>> x = torch.tensor([0.0, 1.0]).repeat(1, 3, 2, 1)  # columns black and white
        >>> corrupt(x, "contrast", 1)[0, 0, 0]  # (x - 0.5) * 0.4 + 0.5
        tensor([0.3000, 0.7000])
    """
    corruption = _check_name(name)
    _check_severity(severity)
    _check_images(images)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    with torch.no_grad():
        out = corruption(images.detach(), severity, generator)
    if out.shape != images.shape:
        raise ValueError(
            f"Corruption {name!r} returned shape {tuple(out.shape)} for input shape "
            f"{tuple(images.shape)}; a corruption must keep the shape."
        )
    return out.to(images.dtype).clamp(0, 1)
