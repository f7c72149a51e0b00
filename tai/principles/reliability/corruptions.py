"""Common image corruptions at five severities: ImageNet-C and its four extra corruptions.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019 (https://arxiv.org/abs/1903.12261). Definitions and
parameters follow the ``imagecorruptions`` package (Michaelis et al. 2019,
https://github.com/bethgelab/imagecorruptions, v1.1.2): Hendrycks' ``make_imagenet_c.py``
generalised from 224x224 to any image size. Every corruption takes a batch
``(N, C, H, W)`` of floats in ``[0, 1]`` with ``C`` = 1 or 3 and returns a tensor of the
same shape and dtype, clamped to ``[0, 1]``. Random corruptions draw from a
``torch.Generator`` seeded by ``seed``, so a call is deterministic given its inputs; each
image gets its own draws (noise, angles, textures), as in ImageNet-C.

:data:`IMAGENET_C_CORRUPTIONS` are the 15 of the benchmark, :data:`EXTRA_CORRUPTIONS` the
four held-out ones. Parameters at severity 1, 2, 3, 4, 5 (``x`` the image, ``H x W`` its
size, ``px`` pixels):

==================  ==============================  =========================================
name                operation                       parameters at severity 1 .. 5
==================  ==============================  =========================================
gaussian_noise      ``x + c N(0, 1)``               c = .08, .12, .18, .26, .38
shot_noise          ``Poisson(c x) / c``            c = 60, 25, 12, 5, 3
impulse_noise       salt & pepper on a fraction c   c = .03, .06, .09, .17, .27
defocus_blur        disk of radius r px, smoothed   (r, s) = (3, .1), (4, .5), (6, .5),
                    by a Gaussian of std s          (8, .5), (10, .5)
glass_blur          blur s; k passes copying each   (s, d, k) = (.7, 1, 2), (.9, 2, 1),
                    pixel from an offset in         (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)
                    [-d, d)^2; blur s
motion_blur         one-sided line of 2r + 1 taps   (r, s) = (10, 3), (15, 5), (15, 8),
                    weighted exp(-i^2 / 2s^2),      (15, 12), (20, 15)
                    angle ~ U(-45, 45) degrees
zoom_blur           mean of x and its centre        z = arange(1, b, step), (b, step) =
                    zoomed by each z                (1.11, .01), (1.16, .01), (1.21, .02),
                                                    (1.26, .02), (1.31, .03)
snow                flakes N(m, s) zoomed by z,     (m, s, z, t, r, sr, a) =
                    kept above t, motion-blurred    (.1, .3, 3, .5, 10, 4, .8),
                    (r, sr, angle ~ U(-135, -45)),  (.2, .3, 2, .5, 12, 4, .7),
                    added and added rotated 180;    (.55, .3, 4, .9, 12, 8, .7),
                    x whitened to a x + (1 - a)     (.55, .3, 4.5, .85, 12, 8, .65),
                    max(x, 1.5 gray(x) + .5)        (.55, .3, 2.5, .85, 12, 12, .55)
frost               ``a x + b frost``               (a, b) = (1, .4), (.8, .6), (.7, .7),
                                                    (.65, .7), (.6, .75)
fog                 ``(x + a plasma) max(x) /       (a, w) = (1.5, 2), (2, 2), (2.5, 1.7),
                    (max(x) + a)``, diamond-square  (2.5, 1.5), (3, 1.4)
                    plasma fractal with decay w
brightness          HSV value ``v + c``             c = .1, .2, .3, .4, .5
contrast            ``(x - mean) c + mean``         c = .4, .3, .2, .1, .05
elastic_transform   bilinear warp by U(-.005 H,     alpha = 250 (.05, .065, .085, .1, .12)
                    .005 H) noise smoothed by a
                    Gaussian of std (.01 H, .01 W)
                    and scaled by alpha
pixelate            box downsampling to c H x c W,  c = .6, .5, .4, .3, .25
                    nearest upsampling
jpeg_compression    JPEG at quality q               q = 25, 18, 15, 10, 7
speckle_noise       ``x + c x N(0, 1)``             c = .15, .2, .35, .45, .6
gaussian_blur       Gaussian filter of std s px     s = 1, 2, 3, 4, 6
spatter             liquid N(m, s) blurred by b,    (m, s, b, t, k, mud) =
                    kept above t; water drops (pale (.65, .3, 4, .69, .6, 0),
                    turquoise, strength k) or, if   (.65, .3, 3, .68, .6, 0),
                    mud, brown mud (mask blurred    (.65, .3, 2, .68, .5, 0),
                    by k)                           (.65, .3, 1, .65, 1.5, 1),
                                                    (.67, .4, 1, .65, 1.5, 1)
saturate            HSV saturation ``s a + b``      (a, b) = (.3, 0), (.1, 0), (2, 0),
                                                    (5, .1), (20, .2)
==================  ==============================  =========================================

As in ``imagecorruptions``:

- Image size. The parameters were tuned for 224-pixel images and most are in pixels, so
  on small images (CIFAR, MNIST) the blurs are relatively stronger. ``imagecorruptions``,
  and this module, scale four corruptions with the image: elastic (noise range and
  smoothing proportional to ``H`` and ``W``), fog (plasma map of the next power of two
  above the image size), glass blur (its pass covers the whole image) and frost (the
  texture is cropped to the image; images larger than the photographs, about 350 x 550,
  enlarge it). Motion blur drops the taps that would shift by a whole image.
- Borders: Gaussian filters truncate at 4 std (3 for elastic) and replicate the border
  (scipy ``mode="nearest"``; elastic smooths with ``mode="reflect"``); defocus pads by
  reflection (OpenCV's default); shifts and zooms replicate the border; the elastic warp
  samples with half-sample reflection (scipy ``map_coordinates(mode="reflect")``).
- Glass blur: ImageNet-C's "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` acts on
  numpy views, so it copies ``x[h', w']`` into ``x[h, w]`` rather than exchanging them; the
  pass runs bottom-right to top-left, so a copied pixel can move again. This module
  reproduces that sequential copy exactly (vectorised) and, like the original, quantises
  to 8 bits between the two blurs.
- Pixelate downsamples with PIL's box filter and upsamples nearest, as ``imagecorruptions``
  (Hendrycks' 224-pixel script upsamples with the box filter too). Contrast's mean is per
  image and channel. JPEG encodes the image quantised to 8 bits with PIL at the
  same quality (4:2:0 chroma subsampling, PIL's default) and decodes it with torchvision.

Deviations:

- Frost: ImageNet-C blends photographs of frost shipped with its package. This module
  does not read them: it generates a frost texture (needle-like crystals on smooth noise
  at two scales, at a fixed pixel scale) whose mean colour and per-channel contrast are
  those of one of the five photographs ``imagecorruptions`` draws from, picked at random
  per image.
- Spatter (water) follows ImageNet-C's OpenCV steps (OpenCV's own functions where it is
  installed, numpy equivalents to the bit where not) except Canny's gradient norm, L2
  (OpenCV's default is L1); where no pixel reaches the liquid threshold the image is
  returned unchanged (``imagecorruptions`` divides 0 by 0 there and returns a black image).
- Shot noise: on images of 8-bit levels (``k / 255``) the Poisson counts are drawn by
  inverting their CDF, elsewhere by ``torch.poisson``: the same distribution, other draws.
- Grayscale (``C = 1``): corruptions defined per channel (noise, blurs, contrast, fog,
  elastic, pixelate) act on the one channel; colour ones (brightness, saturate, snow,
  frost, spatter) act on the image replicated to RGB and return its luminance
  ``.299 R + .587 G + .114 B``; JPEG encodes a grayscale JPEG. ``imagecorruptions``
  converts a grayscale image to RGB and returns RGB.
- Randomness comes from ``torch.Generator``: the same seed gives other (equally
  distributed) draws than ``imagecorruptions``' numpy.

Add a corruption with :func:`register_corruption`, or load user and third-party
corruptions with :func:`load_corruption_plugins`.
"""

from __future__ import annotations

import functools
import importlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType, ModuleType
from typing import Any

import kornia
import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.fft import next_fast_len
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from tai.inputs import RANGE_TOLERANCE, check_image_batch

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_CORRUPTIONS",
    "ENTRY_POINT_GROUP",
    "EXTRA_CORRUPTIONS",
    "IMAGENET_C_CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "CorruptionFn",
    "available_corruptions",
    "corrupt",
    "load_corruption_plugins",
    "register_corruption",
]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
IMAGENET_C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The 15 ImageNet-C corruptions, in the paper's order (noise, blur, weather, digital)."""
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The four held-out ImageNet-C corruptions, meant for validation rather than reporting."""
DEFAULT_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "gaussian_blur",
    "contrast",
    "jpeg_compression",
)
"""A cheap subset (one noise, one blur, two digital) for checks that run during training."""
ENTRY_POINT_GROUP = "tai.corruptions"
"""Entry-point group that :func:`load_corruption_plugins` reads corruptions from."""

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as OpenCV and imagecorruptions' rgb2gray

CorruptionFn = Callable[[Tensor, int, torch.Generator], Tensor]
"""``fn(images, severity, generator) -> corrupted``; images ``(N, C, H, W)`` in [0, 1]."""


@dataclass(frozen=True)
class Corruption:
    """A named corruption: ``fn(images, severity, generator)`` for severities 1..5.

    Attributes:
        name: registry name.
        fn: the function; it may return values outside ``[0, 1]``, :func:`corrupt` clamps.
        parameters: the parameter (a number or a tuple of numbers) per severity, for
            documentation and reports (``None`` for a user function that does not declare
            them).
    """

    name: str
    fn: CorruptionFn
    parameters: tuple[Any, ...] | None = None

    def __call__(self, images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
        return self.fn(images, severity, generator)


# --------------------------------------------------------------------------- parameters

_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_NOISE = (60.0, 25.0, 12.0, 5.0, 3.0)
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)
_SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)
_GAUSSIAN_BLUR = (1.0, 2.0, 3.0, 4.0, 6.0)
_DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
_GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
_MOTION_BLUR = ((10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0))
# numpy's arange, as in imagecorruptions: its float steps give 12, 16, 11, 13, 11 factors.
_ZOOM_BLUR = tuple(
    tuple(np.arange(1, stop, step).tolist())
    for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
)
_SNOW = (
    (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
)
_FROST = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
_FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_ELASTIC = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
_JPEG_QUALITY = (25, 18, 15, 10, 7)
_SPATTER = (
    (0.65, 0.3, 4.0, 0.69, 0.6, 0),
    (0.65, 0.3, 3.0, 0.68, 0.6, 0),
    (0.65, 0.3, 2.0, 0.68, 0.5, 0),
    (0.65, 0.3, 1.0, 0.65, 1.5, 1),
    (0.67, 0.4, 1.0, 0.65, 1.5, 1),
)
_SATURATE = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))

# Mean RGB and per-channel std of the frost photographs imagecorruptions picks from
# (frost1, frost2, frost3 (a copy of frost2), frost4, frost5), measured once from its files
# (enlarged by 1.1, as imagecorruptions uses them), and the weight of the texture's fine
# components (crystals and 12-px noise) against its coarse 96-px noise. frost1, a 600 x 900
# photograph (the others 315-495 x 527-660 px), varies more at coarse scales: a 32-px crop of
# it holds 0.58 of its std, of the others 0.64-0.71 (our texture at weight 1: 0.72, at 0.7:
# 0.59), so at weight 1 its texture was a quarter more contrasted within small images.
_FROST_PALETTES = (
    ((0.305, 0.585, 0.650), (0.104, 0.064, 0.060), 0.7),
    ((0.787, 0.805, 0.841), (0.083, 0.086, 0.088), 1.0),
    ((0.787, 0.805, 0.841), (0.083, 0.086, 0.088), 1.0),
    ((0.540, 0.599, 0.648), (0.110, 0.110, 0.116), 1.0),
    ((0.441, 0.484, 0.528), (0.172, 0.168, 0.161), 1.0),
)


# --------------------------------------------------------------------------- helpers


@functools.cache
def _opencv() -> ModuleType | None:
    """OpenCV if it is installed, else None.

    Optional: tai does not depend on OpenCV, but ``imagecorruptions`` (the reference, a dev
    dependency) brings it. Where it is present the large-image Gaussian filters run through
    ``cv2.sepFilter2D``, 5-20x faster than torch's direct convolution on CPU at 224 px; the
    values agree within float rounding (tests/.../test_corruptions.py), and without OpenCV the
    torch code computes the same filter.
    """
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _uniform(shape: Sequence[int], low: float, high: float, like: Tensor, g: torch.Generator):
    return torch.rand(shape, generator=g, device=like.device, dtype=like.dtype) * (high - low) + low


def _border_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source index of each padded position along an axis of length ``n``.

    Own code rather than ``F.pad``: torch's reflect padding must be shorter than the axis,
    and it has no half-sample ("symmetric") mode; these work for any padding length.
    """
    i = torch.arange(-before, n + after, device=device)
    if mode == "nearest":  # a a | a b c d | d d   (scipy "nearest", OpenCV REPLICATE)
        return i.clamp(0, n - 1)
    if mode == "reflect":  # b a | a b c d | d c   (scipy "reflect", numpy "symmetric")
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if n == 1:
        return torch.zeros_like(i)
    i = i % (2 * n - 2)  # c b | a b c d | c b     (scipy "mirror", OpenCV REFLECT_101)
    return torch.where(i >= n, 2 * n - 2 - i, i)


def _pad(x: Tensor, pad_h: int, pad_w: int, mode: str) -> Tensor:
    h, w = x.shape[-2:]
    # torch's own padding is a few times faster than two index_selects and copies the same
    # values; it covers replication at any length and reflect-101 shorter than the axis.
    if mode == "nearest" or (mode == "mirror" and pad_h < h and pad_w < w):
        torch_mode = "replicate" if mode == "nearest" else "reflect"
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=torch_mode)
    rows = _border_index(x.shape[-2], pad_h, pad_h, mode, x.device)
    cols = _border_index(x.shape[-1], pad_w, pad_w, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _gaussian_filter(
    x: Tensor, sigma: tuple[float, float], *, truncate: float = 4.0, mode: str = "nearest"
) -> Tensor:
    """``scipy.ndimage.gaussian_filter`` (what ``skimage.filters.gaussian`` runs) on H, W."""
    radius_y, radius_x = (int(truncate * s + 0.5) for s in sigma)
    kernel_y = _gaussian_kernel1d(2 * radius_y + 1, sigma[0], x.device, x.dtype)
    kernel_x = _gaussian_kernel1d(2 * radius_x + 1, sigma[1], x.device, x.dtype)
    h, w = x.shape[-2:]
    if max(h, w) > _BANDED_MAX_SIZE and _opencv_filters(x):
        return _opencv_separable(x, kernel_x[0], kernel_y[0], mode)
    padded = _pad(x, radius_y, radius_x, mode)
    if max(h, w) <= _BANDED_MAX_SIZE:
        # Small images: each 1-D pass as one product with a banded matrix (BLAS), 1.3-3x
        # faster at 32 x 32 than kornia's depthwise convolution, which it equals within
        # float rounding (tests/tai/test_corruptions.py); at 224 px the convolution wins.
        rows = padded @ _band_matrix(kernel_x[0], w).T  # (..., H + 2 ry, W)
        return _band_matrix(kernel_y[0], h) @ rows
    return kornia.filters.filter2d_separable(padded, kernel_x, kernel_y, padding="valid")


@functools.lru_cache(maxsize=128)
def _gaussian_kernel1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """kornia's normalised Gaussian kernel ``(1, size)``, computed once per size and sigma
    (shared: callers must not modify it)."""
    return kornia.filters.get_gaussian_kernel1d(size, sigma, device=device, dtype=dtype)


def _opencv_filters(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and bool(_opencv())


def _opencv_separable(x: Tensor, kernel_x: Tensor, kernel_y: Tensor, mode: str) -> Tensor:
    """Separable correlation of each ``(H, W)`` map of CPU ``x`` with ``cv2.sepFilter2D``, its
    border mode that of scipy's ``mode`` (no padded copy): equal to the padded filter to the
    bit, and 1.3-2.5x faster at 224 px than filtering the padded maps stacked."""
    cv2 = _opencv()
    border = {
        "nearest": cv2.BORDER_REPLICATE,
        "reflect": cv2.BORDER_REFLECT,
        "mirror": cv2.BORDER_REFLECT_101,
    }[mode]
    maps = x.contiguous().view(-1, *x.shape[-2:]).numpy()
    out = np.empty_like(maps)
    weights_x, weights_y = kernel_x.numpy(), kernel_y.numpy()
    for source, target in zip(maps, out, strict=True):
        cv2.sepFilter2D(source, -1, weights_x, weights_y, dst=target, borderType=border)
    return torch.from_numpy(out).view(x.shape)


_BANDED_MAX_SIZE = 64


def _band_matrix(kernel: Tensor, n_out: int) -> Tensor:
    """``(n_out, n_out + K - 1)`` matrix whose product with a padded signal is its valid
    cross-correlation with the 1-D ``kernel`` of length ``K``."""
    size = kernel.numel()
    rows = torch.arange(n_out, device=kernel.device)[:, None]
    cols = rows + torch.arange(size, device=kernel.device)[None, :]
    band = torch.zeros(n_out, n_out + size - 1, device=kernel.device, dtype=kernel.dtype)
    band[rows.expand(-1, size), cols] = kernel.expand(n_out, -1)
    return band


def _fft_correlate(padded: Tensor, kernel: Tensor) -> Tensor:
    """``kornia.filters.filter2d(padded, kernel, padding="valid")`` (cross-correlation of
    each channel with one ``(kh, kw)`` kernel, output ``H - kh + 1`` x ``W - kw + 1``) by FFT.

    Own code: kornia's and torch's convolutions are direct (cost grows with the kernel
    area); torch.fft has no convolution helper. The circular correlation over a transform
    at least as long as ``padded`` leaves the valid outputs untouched by the wrap-around;
    the length is rounded up to one scipy transforms fast. Equal to the direct sum within
    float rounding (tests/tai/test_corruptions.py).
    """
    kh, kw = kernel.shape
    h, w = padded.shape[-2] - kh + 1, padded.shape[-1] - kw + 1
    size = (next_fast_len(padded.shape[-2], real=True), next_fast_len(padded.shape[-1], real=True))
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernel, s=size).conj()
    return torch.fft.irfft2(spectrum, s=size)[..., :h, :w]


def _to_gray(images: Tensor) -> Tensor:
    weights = torch.tensor(_LUMA, device=images.device, dtype=images.dtype)
    return kornia.color.rgb_to_grayscale(images, rgb_weights=weights)


def _on_rgb(fn: CorruptionFn) -> CorruptionFn:
    """Run a colour corruption on grayscale images replicated to RGB; return the luminance."""

    @functools.wraps(fn)
    def wrapper(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
        if images.shape[1] == 3:
            return fn(images, severity, generator)
        rgb = fn(images.expand(-1, 3, -1, -1), severity, generator)
        return _to_gray(rgb.clamp(0, 1))  # clip as the RGB result would be, then convert

    return wrapper


def _line_blur(x: Tensor, weights: Tensor, offsets_y: Tensor, offsets_x: Tensor) -> Tensor:
    """``sum_i w[n, i] * x[n, :, clamp(y + oy[n, i]), clamp(x + ox[n, i])]``: a per-image
    sparse kernel, as shifts with replicated borders (imagecorruptions' ``_motion_blur``).

    Own code: kornia's ``motion_blur`` has a centred, uniformly weighted line kernel, while
    ImageNet-C's (ImageMagick's MotionBlurImage) is one-sided and Gaussian-weighted.
    """
    n, c, h, w = x.shape
    if c * h * w >= _SLICE_MIN_PIXELS:
        return _line_blur_slices(x, weights, offsets_y, offsets_x)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    # The taps any image uses, in one look at the weights (was one sync per tap).
    used = weights.any(dim=0).tolist()
    # A shift beyond the image reads the same border pixels as one by H - 1 (W - 1).
    offsets_y, offsets_x = offsets_y.clamp(1 - h, h - 1), offsets_x.clamp(1 - w, w - 1)
    pad_y, pad_x = int(offsets_y.abs().max()), int(offsets_x.abs().max())
    if (2 * pad_y + 1) * (2 * pad_x + 1) * h * w <= _SHIFT_TABLE_MAX_ENTRIES:
        # Each tap's flat source indices are rows of a cached table of every shift, picked
        # per image: building them per tap (a broadcast add over N x H x W int64) cost more
        # than the gather itself. The same indices, so the same values: motion blur 0.036 ->
        # 0.031 s, frost 0.040 -> 0.034 s, snow 0.025 -> 0.019 s at 32 px, 2026-12-04.
        table = _shift_table(h, w, pad_y, pad_x, x.device)
        keys = ((offsets_y + pad_y) * (2 * pad_x + 1) + (offsets_x + pad_x)).T.contiguous()
        for i, use in enumerate(used):
            if use:  # else a tap dropped for every image
                index = table.index_select(0, keys[i])[:, None, :].expand(n, c, h * w)
                out.addcmul_(weights[:, i, None, None], flat.gather(2, index))
        return out.view(n, c, h, w)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    for i, use in enumerate(used):
        if not use:
            continue  # a tap dropped for every image
        r = (rows[None, :] + offsets_y[:, i, None]).clamp(0, h - 1)  # (N, H)
        q = (cols[None, :] + offsets_x[:, i, None]).clamp(0, w - 1)  # (N, W)
        index = (r[:, :, None] * w + q[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        out.addcmul_(weights[:, i, None, None], flat.gather(2, index))
    return out.view(n, c, h, w)


# Largest shift table of _line_blur, in int64 entries (32 MB): motion blur's 41 x 41 shifts of
# a 32 x 32 image take 1.7 M, snow's 25 x 25 of its 80 x 80 flakes (32 px images) 4 M.
_SHIFT_TABLE_MAX_ENTRIES = 1 << 22


@functools.lru_cache(maxsize=4)
def _shift_table(h: int, w: int, pad_y: int, pad_x: int, device: torch.device) -> Tensor:
    """``((2 pad_y + 1) (2 pad_x + 1), H W)``: row ``(dy + pad_y) (2 pad_x + 1) + dx + pad_x``
    holds the flat index ``clamp(y + dy) W + clamp(x + dx)`` of each pixel ``(y, x)``, the
    shift by ``(dy, dx)`` with replicated borders (shared: callers must not modify it)."""
    shifts_y = torch.arange(-pad_y, pad_y + 1, device=device)[:, None]
    shifts_x = torch.arange(-pad_x, pad_x + 1, device=device)[:, None]
    rows = (torch.arange(h, device=device)[None, :] + shifts_y).clamp_(0, h - 1).mul_(w)
    cols = (torch.arange(w, device=device)[None, :] + shifts_x).clamp_(0, w - 1)
    return (rows[:, None, :, None] + cols[None, :, None, :]).reshape(-1, h * w)


# Above this many values per image, shifted slices of a padded copy beat one gather per
# tap (measured on one CPU thread: 3-4x faster at 224 x 224 RGB, 2-3x slower at 32 x 32).
_SLICE_MIN_PIXELS = 10_000


def _line_blur_slices(x: Tensor, weights: Tensor, offsets_y: Tensor, offsets_x: Tensor) -> Tensor:
    """:func:`_line_blur` as slices of a border-replicated copy, image by image.

    Same values, same order of additions: a shift by ``d`` with replicated borders is the
    window at ``pad + d`` of the padded image, and a shift beyond the image reads the same
    border pixels as a shift by ``H - 1`` (or ``W - 1``), so offsets are clipped to that.
    """
    n, _, h, w = x.shape
    taps = weights.tolist()
    ys = offsets_y.clamp(1 - h, h - 1).tolist()
    xs = offsets_x.clamp(1 - w, w - 1).tolist()
    used = [(k, i) for k in range(n) for i in range(len(taps[k])) if taps[k][i] != 0]
    pad_h = max((abs(ys[k][i]) for k, i in used), default=0)
    pad_w = max((abs(xs[k][i]) for k, i in used), default=0)
    padded = _pad(x, pad_h, pad_w, "nearest")
    out = torch.zeros_like(x)
    for k, i in used:
        top, left = pad_h + ys[k][i], pad_w + xs[k][i]
        out[k].add_(padded[k, :, top : top + h, left : left + w], alpha=taps[k][i])
    return out


def _motion_blur_kernel(
    radius: int, sigma: float, angle_deg: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Taps of imagecorruptions' motion blur: weights, row and column offsets per image."""
    width = 2 * radius + 1
    i = torch.arange(width, device=angle_deg.device, dtype=angle_deg.dtype)
    weights = torch.exp(-(i**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).expand(len(angle_deg), width)
    angle = torch.deg2rad(angle_deg)[:, None]
    offsets_y = torch.ceil(i * torch.sin(angle) - 0.5).long()
    offsets_x = torch.ceil(i * torch.cos(angle) - 0.5).long()
    # imagecorruptions stops at the first tap shifted by a whole image; offsets only grow
    # with i, so dropping those taps (without renormalising) is the same.
    inside = (offsets_y.abs() < size[0]) & (offsets_x.abs() < size[1])
    return weights * inside, offsets_y, offsets_x


def _motion_blur_images(x: Tensor, radius: int, sigma: float, angle_deg: Tensor) -> Tensor:
    weights, offsets_y, offsets_x = _motion_blur_kernel(radius, sigma, angle_deg, x.shape[-2:])
    return _line_blur(x, weights.to(x.dtype), offsets_y, offsets_x)


def _clipped_zoom(x: Tensor, zoom: float) -> Tensor:
    """Zoom the centre by ``zoom``: ``scipy.ndimage.zoom(order=1)`` of the centre crop.

    Returns the whole zoomed crop (at least the input size); callers keep the top-left
    ``H x W`` as imagecorruptions does. scipy's order-1 zoom maps the corners onto the
    corners, which is bilinear interpolation with ``align_corners=True``.
    """
    h, w = x.shape[-2:]
    crop_h, crop_w = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = x[..., top : top + crop_h, left : left + crop_w]
    size = (round(crop_h * zoom), round(crop_w * zoom))
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)


@functools.lru_cache(maxsize=64)
def _pil_box_weights(n_in: int, n_out: int) -> Tensor:
    """PIL's ``Image.BOX`` downsampling along one axis as an ``(n_out, n_in)`` matrix.

    Own code, PIL's ``precompute_coeffs`` in float64: torch's ``area`` mode (adaptive
    average pooling) rounds each window outward to whole pixels, PIL keeps the pixels whose
    centres fall inside it; they differ whenever ``n_in / n_out`` is not an integer.
    """
    scale = n_in / n_out
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        start, stop = (
            max(int(centre - scale / 2 + 0.5), 0),
            min(int(centre + scale / 2 + 0.5), n_in),
        )
        for j in range(start, stop):
            u = (j - centre + 0.5) / scale
            weights[i, j] = 1.0 if -0.5 < u <= 0.5 else 0.0
    return weights / weights.sum(dim=1, keepdim=True)


@functools.lru_cache(maxsize=64)
def _pil_nearest_index(n_in: int, n_out: int) -> Tensor:
    """Source index of each output pixel of PIL's ``Image.NEAREST`` resize (its
    ``ImagingScaleAffine`` accumulates the position by repeated addition; ties at exact
    integers therefore fall as in PIL, which ``nearest-exact`` interpolation does not match)."""
    step, position, index = n_in / n_out, n_in / n_out * 0.5, []
    for _ in range(n_out):
        index.append(min(int(position), n_in - 1))
        position += step
    return torch.tensor(index)


def _bilinear_window(n_in: int, n_out: int, start: int, count: int, like: Tensor) -> Tensor:
    """Rows ``start .. start + count`` of the ``(n_out, n_in)`` matrix of 1-D linear
    interpolation with ``align_corners=True``, computed as torch's bilinear kernel does
    (source ``i (n_in - 1) / (n_out - 1)``, upper neighbour clipped at the last sample)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    dst = torch.arange(start, start + count, device=like.device, dtype=like.dtype)
    src = dst * torch.tensor(scale, device=like.device, dtype=like.dtype)
    low = src.floor().long().clamp(0, n_in - 1)
    frac = (src - low).clamp(0, 1)
    high = (low + 1).clamp(max=n_in - 1)
    matrix = torch.zeros(count, n_in, device=like.device, dtype=like.dtype)
    index = torch.arange(count, device=like.device)
    matrix.index_put_((index, low), 1 - frac, accumulate=True)
    matrix.index_put_((index, high), frac, accumulate=True)
    return matrix


def _plasma_fractal(n: int, mapsize: int, decay: float, like: Tensor, g: torch.Generator):
    """Diamond-square height maps ``(n, mapsize, mapsize)`` in ``[0, 1]`` (ImageNet-C's
    ``plasma_fractal``, batched). Own code: no library has it."""
    maps = torch.zeros(n, mapsize, mapsize, device=like.device, dtype=torch.float32)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        return total / 4 + wibble * _uniform(total.shape, -wibble, wibble, maps, g)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres, corners = maps[:, half::step, half::step], maps[:, 0::step, 0::step]
        left = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        maps[:, 0::step, half::step] = wibbled_mean(left)
        top = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        maps[:, half::step, 0::step] = wibbled_mean(top)
        step, wibble = half, wibble / decay
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = (maps - low).amax(dim=(1, 2), keepdim=True)
    return ((maps - low) / high.clamp_min(1e-12)).to(like.dtype)


def _frost_texture(n: int, size: tuple[int, int], like: Tensor, g: torch.Generator) -> Tensor:
    """Procedural frost ``(n, 3, H, W)``: needle crystals on smooth noise, in the colours of
    ImageNet-C's frost photographs. Own code, replacing the photographs (see the module
    docstring); the pixel scale is fixed, like the photographs' for images up to about
    350 x 550 px."""
    h, w = size
    scale = max(1.0, h / 350, w / 550)  # imagecorruptions enlarges photos smaller than x
    device, dtype = like.device, like.dtype
    pick = torch.randint(0, len(_FROST_PALETTES), (n,), generator=g, device=device)

    def smooth_noise(cell: float) -> Tensor:
        # Bilinear upsampling of N(0, 1) on a grid of `cell`-pixel squares has variance
        # (2/3)^2 on average; scale it back to 1.
        gh, gw = math.ceil(h / cell) + 2, math.ceil(w / cell) + 2
        grid = torch.randn(n, 1, gh, gw, generator=g, device=device, dtype=dtype)
        offset = torch.randint(0, int(cell), (2,), generator=g, device=device)
        top, left = (int(v) for v in offset)
        # The H x W window at (top, left) of F.interpolate(grid, scale_factor=cell,
        # mode="bilinear", align_corners=True), without upsampling the whole grid (up to
        # 15x the image's area): bilinear is separable, so it is one matrix per axis.
        rows = _bilinear_window(gh, int(gh * cell), top, h, grid)
        cols = _bilinear_window(gw, int(gw * cell), left, w, grid)
        return torch.einsum("ih,nchw,jw->ncij", rows, grid, cols) * 1.5

    def needles(length: int, density: float, layers: int) -> Tensor:
        draws = [
            (
                torch.rand((n, 1, h, w), generator=g, device=device, dtype=dtype) < density,
                _uniform((n,), 0, 180, like, g),
            )
            for _ in range(layers)
        ]
        seeds = torch.cat([layer for layer, _ in draws]).to(dtype)
        angle = torch.cat([angle for _, angle in draws])
        i = torch.arange(-length, length + 1, device=device, dtype=dtype)
        rad = torch.deg2rad(angle)[:, None]
        oy = torch.round(i * torch.sin(rad)).long()
        ox = torch.round(i * torch.cos(rad)).long()
        taps = torch.full((len(angle), len(i)), 1.0 / len(i), device=device, dtype=dtype)
        streaks = _line_blur(seeds, taps, oy, ox)  # the layers in one call: less overhead
        # Each tap is Bernoulli(density): mean density, variance density(1-density)/taps.
        streaks.sub_(density).div_(math.sqrt(density * (1 - density) / len(i)))
        return streaks.view(layers, n, 1, h, w)

    # Needle length, softening and weights chosen so that the energy in octave bands from 1
    # to 24 pixels is within ~20% of the photographs' and a small CNN loses about as much
    # accuracy as on the photographs (tests/tai/test_corruption_reference.py).
    length, soft = round(6 * scale), 0.6 * scale
    # In place on tensors of this function's own: the same values, fewer passes and
    # allocations (a third of the texture's time at 224 px).
    crystals = needles(length, 0.03, 3).sum(0).div_(math.sqrt(3))
    crystals = _gaussian_filter(crystals, (soft, soft)).div_(0.74)  # its std, measured once
    fine = crystals.mul_(0.6).add_(smooth_noise(12 * scale).mul_(0.35))
    coarse = smooth_noise(96 * scale).mul_(0.7)
    weight = torch.tensor([p[2] for p in _FROST_PALETTES], device=device, dtype=dtype)[pick]
    weight = weight[:, None, None, None]
    # Unit variance: the three components are independent with unit variance each.
    texture = fine.mul_(weight).add_(coarse)
    texture.div_(torch.sqrt(weight**2 * (0.6**2 + 0.35**2) + 0.7**2))
    mean = torch.tensor([p[0] for p in _FROST_PALETTES], device=device, dtype=dtype)[pick]
    std = torch.tensor([p[1] for p in _FROST_PALETTES], device=device, dtype=dtype)[pick]
    return (std[:, :, None, None] * texture).add_(mean[:, :, None, None]).clamp_(0, 1)


# Spatter's water drops, after imagecorruptions' OpenCV steps, on 8-bit levels ``(N, H, W)``.
# Each step is the OpenCV function named, to the bit (tests/tai/test_corruptions.py compares
# them with cv2): the histogram equalisation turns any difference of a level or a flipped
# edge pixel into tens of levels. With OpenCV installed its Canny and distance transform run;
# without it (OpenCV is not a dependency of tai) these numpy versions. Not kornia: its Canny
# takes a float square root (in float64 a magnitude of exactly 50 passes the threshold) and
# its distance transform is a soft approximation.

_CANNY_TAN_22_5 = 13573  # OpenCV's tan(22.5 degrees) in 15-bit fixed point
# OpenCV's 5 x 5 chamfer mask of DIST_L2: axial, diagonal and knight's-move steps, float32.
_CHAMFER_STEPS = (np.float32(1.0), np.float32(1.4), np.float32(2.1969))
_SPATTER_DISTANCE_LIMIT = 20  # imagecorruptions truncates the distance at 20 px


def _canny(level: np.ndarray, low_threshold: float, high_threshold: float) -> np.ndarray:
    """``cv2.Canny(level, low, high, L2gradient=True)`` per image of ``(N, H, W)`` uint8, as
    booleans.

    3 x 3 Sobel with replicated borders; the squared L2 magnitude against the squared
    thresholds; non-maximum suppression along the gradient quantised by OpenCV's
    fixed-point tangents, with its ties (a pixel must beat its left/upper neighbour and
    equal or beat its right/lower one, beat both diagonal ones); hysteresis as scipy's
    labelling: a candidate is an edge when its 8-connected component of candidates holds a
    pixel above the high threshold (where OpenCV's edge tracking ends).
    """
    padded = np.pad(level.astype(np.int32), ((0, 0), (1, 1), (1, 1)), mode="edge")
    across = padded[:, :, 2:] - padded[:, :, :-2]
    dx = across[:, :-2] + 2 * across[:, 1:-1] + across[:, 2:]
    smooth = padded[:, :, :-2] + 2 * padded[:, :, 1:-1] + padded[:, :, 2:]
    dy = smooth[:, 2:] - smooth[:, :-2]
    magnitude = dx * dx + dy * dy
    mag = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))  # OpenCV's zero border
    centre = mag[:, 1:-1, 1:-1]
    x, y = np.abs(dx), np.abs(dy) << 15
    tan_22 = x * _CANNY_TAN_22_5
    tan_67 = tan_22 + (x << 16)
    horizontal = y < tan_22
    vertical = ~horizontal & (y > tan_67)
    same_sign = (dx ^ dy) >= 0  # the diagonal runs from top-left to bottom-right
    keep = np.where(
        horizontal,
        (centre > mag[:, 1:-1, :-2]) & (centre >= mag[:, 1:-1, 2:]),
        np.where(
            vertical,
            (centre > mag[:, :-2, 1:-1]) & (centre >= mag[:, 2:, 1:-1]),
            np.where(
                same_sign,
                (centre > mag[:, :-2, :-2]) & (centre > mag[:, 2:, 2:]),
                (centre > mag[:, :-2, 2:]) & (centre > mag[:, 2:, :-2]),
            ),
        ),
    )
    low, high = math.floor(low_threshold**2), math.floor(high_threshold**2)
    candidates = keep & (magnitude > low)
    within_image = np.zeros((3, 3, 3), dtype=bool)
    within_image[1] = True  # 8-connected in each image, not across the batch
    labels, count = scipy.ndimage.label(candidates, structure=within_image)
    anchored = np.bincount(labels[candidates & (magnitude > high)], minlength=count + 1) > 0
    anchored[0] = False
    return anchored[labels]


def _chamfer_distance(edges: np.ndarray) -> np.ndarray:
    """``cv2.distanceTransform(non-edges, cv2.DIST_L2, 5)`` per image of ``(N, H, W)``
    booleans, truncated at 20 px (``cv2.threshold(..., 20, 20, THRESH_TRUNC)``), float32.

    OpenCV 5 runs two raster passes of its 5 x 5 chamfer mask in float32 (OpenCV 4 in 16-bit
    fixed point: distances differ by ~1e-5 px, which the 8-bit truncation that follows can
    turn into a level). Without OpenCV, the same passes vectorised over the batch and a row
    at a time: a row takes its candidates from the two rows before it, then ``d[j] =
    min(c[j], d[j - 1] + 1)`` along it, relaxed until nothing changes (at most 21 rounds:
    values from 21 px up are truncated anyway, so they are capped there).
    """
    limit = np.float32(_SPATTER_DISTANCE_LIMIT)
    a, b, c = _CHAMFER_STEPS
    cap = np.float32(_SPATTER_DISTANCE_LIMIT + 1)  # any path through it ends above 20
    n, h, w = edges.shape
    d = np.full((n, h + 4, w + 4), cap, dtype=np.float32)  # two rows and columns of border
    for rows, near, far in (
        (range(2, h + 2), -1, -2),  # forward, from the top-left
        (range(h + 1, 1, -1), 1, 2),  # backward, from the bottom-right
    ):
        step = 1 if near < 0 else -1  # the direction along the row
        for i in rows:
            one, two = d[:, i + near], d[:, i + far]
            best = d[:, i, 2 : w + 2] if near > 0 else np.full((n, w), cap, np.float32)
            for column, weight in ((-1, c), (1, c)):
                best = np.minimum(best, two[:, 2 + column : w + 2 + column] + weight)
            for column, weight in ((-2, c), (-1, b), (0, a), (1, b), (2, c)):
                best = np.minimum(best, one[:, 2 + column : w + 2 + column] + weight)
            if near < 0:
                best[edges[:, i - 2]] = 0
            best = np.minimum(best, cap)
            row = np.full((n, w + 2), cap, dtype=np.float32)  # one cell of border
            row[:, 1:-1] = best
            inner = row[:, 1:-1]
            for _ in range(_SPATTER_DISTANCE_LIMIT + 1):
                moved = np.minimum(inner, row[:, 1 - step : w + 1 - step] + a)
                if np.array_equal(moved, inner):
                    break
                inner[:] = moved
            d[:, i, 2 : w + 2] = inner
    return np.minimum(d[:, 2:-2, 2:-2], limit)


def _box_sum_3x3(x: np.ndarray) -> np.ndarray:
    """Sum over each 3 x 3 window with reflect-101 borders (OpenCV's default), per image."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    return rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]


def _equalize_hist(levels: np.ndarray) -> np.ndarray:
    """``cv2.equalizeHist`` per image of ``(N, H, W)`` uint8: the look-up table
    ``round(cdf' 255 / (total - first))`` in float32, cdf' counting from the first level."""
    n = levels.shape[0]
    flat = levels.reshape(n, -1)
    hist = np.bincount((flat + 256 * np.arange(n)[:, None]).ravel(), minlength=256 * n)
    hist = hist.reshape(n, 256)
    first = (hist > 0).argmax(axis=1)
    first_count = hist[np.arange(n), first]
    total = flat.shape[1]
    scale = np.float32(255) / (total - first_count).astype(np.float32).clip(min=1)
    counted = hist.cumsum(axis=1) - hist.cumsum(axis=1)[np.arange(n), first][:, None]
    lut = np.rint(counted.astype(np.float32) * scale[:, None]).clip(0, 255).astype(np.uint8)
    lut[first_count == total] = np.arange(256, dtype=np.uint8)  # one level: left as it is
    return np.take_along_axis(lut, flat.astype(np.intp), axis=1).reshape(levels.shape)


_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


def _water_drops(level: np.ndarray) -> np.ndarray:
    """imagecorruptions' water drops from the 8-bit liquid layer ``(N, H, W)``, before the
    normalisation: ``liquid * dist`` (float32, whole numbers).

    With OpenCV, its own steps image by image (the reference's calls, Canny with the L2
    norm): 4-5x faster at 224 px than the numpy steps below, which compute the same values
    (tests/.../test_corruptions.py compares them)."""
    cv2 = _opencv()
    if cv2 is not None:
        return np.stack([_water_drops_opencv(cv2, x) for x in level])
    edges = _canny(level, 50.0, 150.0)
    distance = _chamfer_distance(edges)
    # cv2.blur on the float32 distances sums them in float64 (exactly) and scales by 1/9; the
    # float32 mean is then truncated to uint8.
    total = _box_sum_3x3(distance.astype(np.float64))
    distance = (total * (1 / 9)).astype(np.float32).astype(np.uint8)
    distance = _equalize_hist(distance)
    padded = np.pad(distance.astype(np.int32), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    h, w = distance.shape[1:]
    embossed = sum(
        _EMBOSS[i, j] * padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)
    )
    embossed = np.clip(embossed, 0, 255)  # cv2.filter2D to CV_8U saturates
    distance = np.rint(_box_sum_3x3(embossed) / 9).astype(np.float32)  # cv2.blur of uint8
    return level.astype(np.float32) * distance


def _water_drops_opencv(cv2: ModuleType, level: np.ndarray) -> np.ndarray:
    """:func:`_water_drops` of one ``(H, W)`` layer, as imagecorruptions' spatter runs it."""
    edges = cv2.Canny(level, 50, 150, L2gradient=True)
    distance = cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5)
    _, distance = cv2.threshold(
        distance, _SPATTER_DISTANCE_LIMIT, _SPATTER_DISTANCE_LIMIT, cv2.THRESH_TRUNC
    )
    distance = cv2.equalizeHist(cv2.blur(distance, (3, 3)).astype(np.uint8))
    distance = cv2.blur(cv2.filter2D(distance, cv2.CV_8U, _EMBOSS), (3, 3))
    return level * distance.astype(np.float32)


# --------------------------------------------------------------------------- corruptions


def _gaussian_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: torchvision's gaussian_noise draws from the global RNG, not a Generator.
    c = _GAUSSIAN_NOISE[severity - 1]
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return noise.mul_(c).add_(images)  # images + c * noise, in the noise's memory


def _shot_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: neither torchvision nor kornia has Poisson (photon) noise.
    c = _SHOT_NOISE[severity - 1]
    return _poisson(images.clamp(0, 1), c, generator) / c


def _poisson(x: Tensor, c: float, generator: torch.Generator) -> Tensor:
    """Counts drawn from ``Poisson(c x)``, in ``x``'s dtype.

    Images of 8-bit levels (``k / 255`` in their dtype, as ``uint8 / 255`` gives) have at most
    256 rates: the counts are the inverse CDF of one uniform each, looked up in the rates'
    tables (Chen and Asau's guide table, then a step up the CDF where needed), 2-3x faster
    than ``torch.poisson``, whose samplers run element by element. Any other image draws
    from ``torch.poisson``. Both are exact draws of the same distribution (not the same
    draws).
    """
    flat = x.reshape(-1)
    chunks = [(i, min(i + _CHUNK, flat.numel())) for i in range(0, flat.numel(), _CHUNK)]
    # Chunks of 64k values: the temporaries stay in cache and are not new memory each call
    # (fresh pages cost as much as the arithmetic at 224 px).
    for i, j in chunks:
        levels = flat[i:j].mul(255).round_()
        if not torch.equal(levels.div_(255), flat[i:j]):
            return torch.poisson(x * c, generator=generator)
    cdf, first, count = _poisson_tables(c, x.device, x.dtype)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64).flatten()
    position = torch.empty(flat.numel(), device=x.device, dtype=torch.int32)
    todo = []
    for i, j in chunks:
        # The guide table's entry of (level, bucket of u): the position in the flattened CDFs
        # of the smallest count whose CDF reaches the bucket's lower end (u * buckets is
        # exact); int32 indices, half the memory traffic of int64.
        key = flat[i:j].mul(255).round_().to(torch.int32).mul_(_POISSON_BUCKETS)
        key.add_((u[i:j] * _POISSON_BUCKETS).to(torch.int32))
        torch.index_select(first, 0, key, out=position[i:j])
        below = cdf.index_select(0, position[i:j]) < u[i:j]
        todo.append(torch.nonzero(below).flatten().add_(i))
    todo = torch.cat(todo)
    while todo.numel():  # a step up the CDF for each count whose CDF is still below its u
        step = position.index_select(0, todo) + 1
        position.index_copy_(0, todo, step)
        todo = todo[cdf.index_select(0, step) < u.index_select(0, todo)]
    return count.index_select(0, position).view(x.shape)


_CHUNK = 1 << 16
_POISSON_BUCKETS = 256  # a power of two: u * buckets is exact


@functools.lru_cache(maxsize=16)
def _poisson_tables(
    c: float, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Tables of :func:`_poisson` for the rates ``c k / 255``, k = 0..255, flattened by rate:
    the CDFs up to a count ``K`` far in every tail (rate + 12 standard deviations + 12, the
    CDF set to 1 there) ``(256 (K + 1),)`` float64; the guide tables, for each rate and
    bucket ``m``, the position of the smallest count whose CDF reaches ``m / buckets``
    ``(256 buckets,)`` int32; the count at each position ``(256 (K + 1),)`` in ``dtype``."""
    import scipy.stats

    rates = np.arange(256) / 255 * c
    top = math.ceil(c + 12 * math.sqrt(c) + 12)
    cdf = scipy.stats.poisson.cdf(np.arange(top + 1)[None, :], rates[:, None])
    cdf[:, -1] = 1.0
    grid = np.arange(_POISSON_BUCKETS) / _POISSON_BUCKETS
    first = np.stack([np.searchsorted(row, grid, side="left") for row in cdf])
    first = (first + (top + 1) * np.arange(256)[:, None]).astype(np.int32)
    count = np.tile(np.arange(top + 1, dtype=np.float64), 256)
    cdf_t, first_t, count_t = (torch.from_numpy(t.ravel()).to(device) for t in (cdf, first, count))
    return cdf_t, first_t, count_t.to(dtype)


def _impulse_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: skimage's random_noise(mode="s&p") on tensors. Each value is hit with
    # probability c, then salt or pepper with probability 1/2 (two uniforms, as skimage).
    c = _IMPULSE_NOISE[severity - 1]
    u = torch.rand((2, *images.shape), generator=generator, device=images.device)
    hit = u[0] <= c
    salt = u[1].le_(0.5)  # in place: the value of a hit, 1 (salt) or 0 (pepper)
    return torch.where(hit, salt.to(images.dtype), images)


def _speckle_noise(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: multiplicative Gaussian noise from a Generator (as gaussian_noise).
    c = _SPECKLE_NOISE[severity - 1]
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return noise.mul_(images * c).add_(images)  # images + images * c * noise, same rounding


def _gaussian_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # kornia's Gaussian kernel and separable filter; border replicated like scipy's
    # "nearest", with no limit on the kernel size relative to the image.
    sigma = _GAUSSIAN_BLUR[severity - 1]
    return _gaussian_filter(images, (sigma, sigma))


def _defocus_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    radius, alias_blur = _DEFOCUS_BLUR[severity - 1]
    kernel = _defocus_kernel(radius, alias_blur, images.device, images.dtype)
    half = kernel.shape[-1] // 2
    # cv2.filter2D (imagecorruptions' call): correlation (the kernel is symmetric) with
    # reflect-101 borders. With OpenCV on large images, that call map by map (1.3-2x faster
    # than our FFT at 224 px, 2x slower at 32 px); else by FFT, as OpenCV does for kernels
    # this large (3x faster than direct at 224 px). Equal within float rounding.
    h, w = images.shape[-2:]
    if h * w >= _OPENCV_FILTER2D_MIN_PIXELS and _opencv_filters(images):
        return _opencv_filter2d(images, kernel)
    return _fft_correlate(_pad(images, half, half, "mirror"), kernel)


_OPENCV_FILTER2D_MIN_PIXELS = 96 * 96


@functools.lru_cache(maxsize=32)
def _defocus_kernel(
    radius: int, alias_blur: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """ImageNet-C's anti-aliased disk (shared: callers must not modify it)."""
    half = max(8, radius)  # ImageNet-C's disk is drawn on at least a 17 x 17 grid
    grid = torch.arange(-half, half + 1, device=device, dtype=dtype)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).to(dtype)
    disk = (disk / disk.sum())[None, None]
    # Anti-alias as cv2.GaussianBlur(ksize=3 or 5, sigma=alias_blur) with reflect-101 borders.
    ksize = 3 if radius <= 8 else 5
    g1d = kornia.filters.get_gaussian_kernel1d(ksize, alias_blur, device=device, dtype=dtype)
    kernel = kornia.filters.filter2d_separable(
        _pad(disk, ksize // 2, ksize // 2, "mirror"), g1d, g1d, padding="valid"
    )
    return kernel[0, 0]


def _opencv_filter2d(images: Tensor, kernel: Tensor) -> Tensor:
    """``cv2.filter2D`` of each ``(H, W)`` map of CPU ``images`` with reflect-101 borders."""
    cv2 = _opencv()
    maps = images.contiguous().view(-1, *images.shape[-2:]).numpy()
    out = np.empty_like(maps)
    weights = kernel.numpy()
    for source, target in zip(maps, out, strict=True):
        cv2.filter2D(source, -1, weights, dst=target, borderType=cv2.BORDER_REFLECT_101)
    return torch.from_numpy(out).view(images.shape)


def _glass_pass(x: Tensor, offsets: Tensor, delta: int) -> Tensor:
    """One pass of ImageNet-C's glass-blur loop, vectorised; ``offsets`` ``(N, 2, H, W)``
    holds each position's ``(dx, dy)`` in ``[-delta, delta)``.

    The loop runs ``x[h, w] <- x[h + dy, w + dx]`` for h = H-delta .. delta+1 and, inside,
    w = W-delta .. delta+1. Own code (no library has it): a source later in raster order was
    visited before ``(h, w)`` and already holds its own copied value, so each position takes
    the value at the end of its chain of such sources, found by pointer jumping.
    """
    n, c, h, w = x.shape
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_rows = (rows > delta) & (rows <= h - delta)
    inside_cols = (cols > delta) & (cols <= w - delta)
    region = (inside_rows[:, None] & inside_cols[None, :]).flatten()
    position = torch.arange(h * w, device=x.device).expand(n, -1)
    source = position + (offsets[:, 1] * w + offsets[:, 0]).flatten(1)
    source = torch.where(region, source, position)
    follow = region[source] & (source > position)
    nxt = torch.where(follow, source, position)
    for _ in range(max(1, math.ceil(math.log2(h * w)))):
        jumped = nxt.gather(1, nxt)
        if torch.equal(jumped, nxt):
            break
        nxt = jumped
    final = source.gather(1, nxt)
    return x.flatten(2).gather(2, final[:, None, :].expand(n, c, -1)).view(n, c, h, w)


def _glass_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    sigma, delta, iterations = _GLASS_BLUR[severity - 1]
    n, _, h, w = images.shape
    x = _gaussian_filter(images, (sigma, sigma))
    x = torch.floor(x.clamp(0, 1) * 255) / 255  # np.uint8(... * 255) truncates
    for _ in range(iterations):
        offsets = torch.randint(
            -delta, delta, (n, 2, h, w), generator=generator, device=images.device
        )
        x = _glass_pass(x, offsets, delta)
    return _gaussian_filter(x, (sigma, sigma))


def _motion_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    radius, sigma = _MOTION_BLUR[severity - 1]
    angle = _uniform((images.shape[0],), -45, 45, images, generator)
    return _motion_blur_images(images, radius, sigma, angle)


def _zoom_blur(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    factors = _ZOOM_BLUR[severity - 1]
    n, c, h, w = images.shape
    # The batch as the channels of one channels-last image: torch's bilinear kernel then
    # interpolates N x C contiguous values per pixel, 2-6x faster than image by image
    # (equal within float rounding, tests/tai/test_corruptions.py).
    source = images.reshape(1, n * c, h, w).contiguous(memory_format=torch.channels_last)
    out = source.clone()
    for zoom in factors:
        out += _clipped_zoom(source, zoom)[..., :h, :w]
    return (out / (len(factors) + 1)).reshape(n, c, h, w).contiguous()


@_on_rgb
def _snow(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    mean, std, zoom, threshold, radius, sigma, blend = _SNOW[severity - 1]
    n, _, h, w = images.shape
    # In place where a tensor is this function's own: the same values, fewer passes.
    flakes = torch.randn(n, 1, h, w, generator=generator, device=images.device, dtype=images.dtype)
    flakes = _clipped_zoom(flakes.mul_(std).add_(mean), zoom)
    flakes = flakes.masked_fill_(flakes < threshold, 0.0).clamp_(0, 1)
    angle = _uniform((n,), -135, -45, images, generator)
    flakes = _motion_blur_images(flakes, radius, sigma, angle)
    flakes = flakes[..., :h, :w].mul(255).round_().div_(255)  # the layer is stored as 8 bits
    whitened = torch.maximum(images, _to_gray(images).mul_(1.5).add_(0.5))
    out = whitened.mul_(1 - blend).add_(images * blend)
    return out.add_(flakes).add_(flakes.flip(-2, -1))


@_on_rgb
def _frost(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    a, b = _FROST[severity - 1]
    texture = _frost_texture(images.shape[0], images.shape[-2:], images, generator)
    return (images * a).add_(texture, alpha=b)


def _fog(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    a, decay = _FOG[severity - 1]
    n, _, h, w = images.shape
    mapsize = 1 << (max(h, w, 3) - 1).bit_length()  # next power of two, as imagecorruptions
    plasma = _plasma_fractal(n, mapsize, decay, images, generator)[:, None, :h, :w]
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    # (x + a plasma) max(x) / (max(x) + a): the per-image factor first, two passes over x.
    return (images + a * plasma).mul_(peak / (peak + a))


@_on_rgb
def _brightness(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # HSV value + c, without the round trip through HSV (kornia's takes ~30 passes over the
    # image): at fixed hue and saturation RGB is proportional to the value, so each pixel is
    # scaled by v' / v; black (v = 0, hue and saturation 0) becomes the gray v'. Equal to
    # kornia's round trip within float rounding (tests/tai/test_corruptions.py).
    c = _BRIGHTNESS[severity - 1]
    value = images.amax(dim=1, keepdim=True)
    brighter = (value + c).clamp_(max=1)
    ratio = brighter / value  # inf or nan where v = 0, replaced below
    return torch.where(value > 0, images * ratio, brighter)


def _contrast(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Own code: torchvision/kornia contrast blends with the grayscale mean or scales by 0;
    # ImageNet-C scales around the mean of each channel of each image.
    c = _CONTRAST[severity - 1]
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return (images - mean) * c + mean


def _elastic_transform(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    alpha = _ELASTIC[severity - 1]
    n, _, h, w = images.shape
    max_shift = h * 0.005  # imagecorruptions uses H for both axes
    noise = _uniform((n, 2, h, w), -max_shift, max_shift, images, generator)  # (dx, dy) px
    shift = _gaussian_filter(noise, (h * 0.01, w * 0.01), truncate=3.0, mode="reflect")
    # Displacements in normalised coordinates, added to the identity grid and sampled as
    # kornia's elastic_transform2d does. grid_sample's "reflection" with
    # align_corners=False is scipy's "reflect".
    to_normalised = torch.tensor([2 / w, 2 / h], device=images.device, dtype=images.dtype)
    shift = shift.mul_(alpha).mul_(to_normalised[None, :, None, None])  # in place: its own
    if images.dtype not in (torch.float32, torch.float64):
        # kornia samples half precision on CPU in float32 (torch's half kernel is wrong);
        # its own smoothing is switched off (1 x 1 kernel): ImageNet-C smooths with
        # reflected borders, above.
        return kornia.geometry.transform.elastic_transform2d(
            images,
            shift,
            kernel_size=(1, 1),
            sigma=(1.0, 1.0),
            alpha=(1.0, 1.0),
            align_corners=False,
            padding_mode="reflection",
        )
    # The same steps without kornia's smoothing by a 1 x 1 kernel of weight 1 (an exact
    # identity that took 2/3 of the time at 32 x 32 in four depthwise convolutions).
    identity = torch.eye(2, 3, device=images.device, dtype=images.dtype)[None]
    grid = F.affine_grid(identity, [1, 1, h, w], align_corners=False)
    return F.grid_sample(
        images,
        grid + shift.permute(0, 2, 3, 1),
        mode="bilinear",
        padding_mode="reflection",
        align_corners=False,
    )


def _pixelate(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # PIL's BOX down and NEAREST up (imagecorruptions). Own code: torch's "area" resize rounds
    # each window outward to whole pixels (see _pil_box_weights) and its "nearest" modes do not
    # place ties as PIL does. The box sums are index_adds of the pixels into their windows
    # (rows first, whole rows at a time), the upsampling a gather and an index_select: 5-10x
    # faster than products with the weight matrices at 224 px.
    c = _PIXELATE[severity - 1]
    n, channels, h, w = images.shape
    small_h, small_w = max(1, int(h * c)), max(1, int(w * c))
    small = _box_sums(images, -2, small_h)
    small = _box_sums(small, -1, small_w)
    rows, cols = _pil_box_counts(h, small_h), _pil_box_counts(w, small_w)
    small /= (rows[:, None] * cols[None, :]).to(images.device, images.dtype)
    up_cols = _pil_nearest_index(small_w, w).to(images.device)
    small = torch.gather(small, -1, up_cols.expand(n, channels, small_h, w))
    return small.index_select(-2, _pil_nearest_index(small_h, h).to(images.device))


def _box_sums(x: Tensor, dim: int, n_out: int) -> Tensor:
    """Sums of the pixels in each window of PIL's BOX downsampling of ``x`` along ``dim``."""
    shape = list(x.shape)
    shape[dim] = n_out + 1  # the last collects the pixels that fall in no window
    out = x.new_zeros(shape)
    for pixels, windows in _pil_box_memberships(x.shape[dim], n_out):
        source = x if pixels is None else x.index_select(dim, pixels.to(x.device))
        out.index_add_(dim, windows.to(x.device), source)
    return out.narrow(dim, 0, n_out)


@functools.lru_cache(maxsize=64)
def _pil_box_memberships(n_in: int, n_out: int) -> tuple[tuple[Tensor | None, Tensor], ...]:
    """Index_add passes: (pixels, their windows) in ``_pil_box_weights(n_in, n_out)``.

    Its windows nearly partition the pixels, but float rounding at the window edges leaves a
    pixel in none (window ``n_out``, dropped, here) or, rarely, in two (a second pass)."""
    inside = _pil_box_weights(n_in, n_out) > 0  # (n_out, n_in)
    first = torch.where(inside.any(0), inside.to(torch.uint8).argmax(0), n_out)
    passes: list[tuple[Tensor | None, Tensor]] = [(None, first)]
    rest = inside.clone()
    rest[first.clamp(max=n_out - 1), torch.arange(n_in)] = False
    while rest.any():
        pixels = torch.nonzero(rest.any(0)).flatten()
        windows = rest[:, pixels].to(torch.uint8).argmax(0)
        passes.append((pixels, windows))
        rest[windows, pixels] = False
    return tuple(passes)


@functools.lru_cache(maxsize=64)
def _pil_box_counts(n_in: int, n_out: int) -> Tensor:
    return (_pil_box_weights(n_in, n_out) > 0).sum(1)


def _jpeg_compression(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # Encoded by PIL's libjpeg-turbo, imagecorruptions' own call (the same bytes; 2.5x
    # faster here than torchvision's encode_jpeg, which was the time JPEG lost to the
    # reference at 224 px), decoded by torchvision for the whole batch at once (1.7x faster
    # than PIL's decoder), straight into float.
    quality = _JPEG_QUALITY[severity - 1]
    # On CPU in float32/64 the quantisation and the conversion back run in numpy: the same
    # IEEE operations (multiply, round half to even, exact casts) as torch's, one thread,
    # 2.5x (quantising) and 1.5x (back to float) faster. 0.035 -> 0.028 s at 224 px,
    # 2026-12-04.
    in_numpy = (
        images.device.type == "cpu"
        and images.dtype in (torch.float32, torch.float64)
        and not images.requires_grad
    )
    h, w = images.shape[-2:]
    if in_numpy and h * w >= _PIL_JPEG_MIN_PIXELS and _opencv() and images.dtype == torch.float32:
        levels = _levels_uint8(images.numpy())
        encoded = [_pil_jpeg(image, quality) for image in levels]
        return _decoded_to_float(encoded, images, in_numpy=True)
    if in_numpy and h * w >= _PIL_JPEG_MIN_PIXELS:
        # Without OpenCV: each image converted just before PIL encodes it, through one
        # image's scratch, instead of a float copy of the whole batch (megabytes of fresh
        # memory a call): 35.0 -> 32.5 ms for 8 images of 224 px, five severities, 2026-12-04.
        values = images.numpy()
        scratch = np.empty(values.shape[1:], values.dtype)
        encoded = []
        for image in values:
            np.multiply(image, values.dtype.type(255), out=scratch)
            encoded.append(_pil_jpeg(np.rint(scratch, out=scratch).astype(np.uint8), quality))
        return _decoded_to_float(encoded, images, in_numpy=True)
    if in_numpy:
        as_uint8 = torch.from_numpy(_levels_uint8(images.numpy()))
    else:
        as_uint8 = images.mul(255).round_().to(torch.uint8)  # in [0, 1]: no clamp needed
    if h * w < _PIL_JPEG_MIN_PIXELS and images.device.type == "cpu":
        # Small images: torchvision's encoder for the whole batch, without PIL's per-image
        # overhead (Python in Image.save). Both call libjpeg-turbo with the same settings
        # (quality, baseline tables, 4:2:0, islow DCT): the decoded pixels are equal (checked
        # 1 x 1 to 97 x 95, RGB and grayscale, every quality). 0.026 -> 0.014 s at 32 px,
        # 2026-12-04. (On CUDA it would run nvjpeg, another encoder: not used there.)
        encoded = encode_jpeg(list(as_uint8), quality=quality)
    else:
        encoded = [_pil_jpeg(image, quality) for image in as_uint8.cpu().numpy()]
    return _decoded_to_float(encoded, images, in_numpy=in_numpy)


def _levels_uint8(values: np.ndarray) -> np.ndarray:
    """``round(255 * values)`` as uint8, rounding half to even, for values in ``[0, 1]``."""
    cv2 = _opencv()
    if cv2 is not None and values.dtype == np.float32:
        # One pass in OpenCV (a float32 multiply, round half to even, saturation: numpy's
        # operations, equal to the bit, tested) instead of numpy's three: 8 images of 224 px,
        # 2.0 -> 0.5 ms for five severities, 2026-12-04. (Not for float64: OpenCV's
        # 64f -> 8u conversion computes in float32.)
        rows = values.reshape(-1, values.shape[-1])
        return cv2.convertScaleAbs(rows, alpha=255).reshape(values.shape)
    scaled = values * values.dtype.type(255)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def _decoded_to_float(encoded: list[Tensor], images: Tensor, *, in_numpy: bool) -> Tensor:
    """The JPEG bytes decoded (torchvision, the whole batch) into ``images``' dtype and
    device, divided by 255."""
    out = torch.empty_like(images)
    decoded = decode_jpeg(encoded, device=images.device)
    if in_numpy:
        targets = out.numpy()
        cv2 = _opencv() if images.shape[-2] * images.shape[-1] >= _PIL_JPEG_MIN_PIXELS else None
        for target, image in zip(targets, decoded, strict=True):
            if cv2 is not None and image.shape[0] == 3:
                # torchvision decodes to interleaved pixels (its CHW is a view): OpenCV splits
                # the channels, and each is divided contiguously, 1.4x faster than dividing
                # the strided view (8 images of 224 px: 4.2 -> 3.0 ms, 2026-12-04). Small
                # images stay in one call each: three calls cost more than they save.
                pixels = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
                for channel, plane in zip(target, cv2.split(pixels), strict=True):
                    np.divide(plane, 255, out=channel, dtype=targets.dtype)
            else:
                np.divide(image.numpy(), 255, out=target, dtype=targets.dtype)  # in its dtype
        return out
    for target, image in zip(out, decoded, strict=True):
        target.copy_(image)
    return out.div_(255)


# Images of fewer pixels are encoded by torchvision (faster below about 128 x 128: 1.2 against
# 3.4 ms for 64 images of 32 x 32, 1.0 against 1.2 ms for 16 of 96 x 96), others by PIL.
_PIL_JPEG_MIN_PIXELS = 96 * 96


def _pil_jpeg(image: np.ndarray, quality: int) -> Tensor:
    """JPEG bytes of one ``(C, H, W)`` uint8 image, encoded by PIL."""
    # Each channel as a PIL band without a copy, interleaved by PIL: half the time of
    # transposing the batch to channels-last in torch first.
    bands = [
        Image.frombuffer("L", channel.shape[::-1], channel, "raw", "L", 0, 1) for channel in image
    ]
    buffer = io.BytesIO()
    (bands[0] if len(bands) == 1 else Image.merge("RGB", bands)).save(
        buffer, "JPEG", quality=quality
    )
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


@_on_rgb
def _spatter(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    mean, std, blur, threshold, strength, mud = _SPATTER[severity - 1]
    n, _, h, w = images.shape
    noise = torch.randn(n, 1, h, w, generator=generator, device=images.device, dtype=images.dtype)
    # The liquid layer as imagecorruptions computes it, in float64 (skimage.filters.gaussian
    # runs scipy's filter, ours the same one within float64 rounding, 3-4x faster at 224 px):
    # water quantises it to 8 bits, where a float32 rounding would move a level now and then.
    liquid = noise[:, 0].to(torch.float64).mul_(std).add_(mean)
    liquid = _gaussian_filter(liquid[:, None], (blur, blur))[:, 0].cpu().numpy()
    liquid[liquid < threshold] = 0
    if mud:
        mask = (liquid > threshold).astype(np.float32)
        mask = scipy.ndimage.gaussian_filter(mask, strength, mode="nearest", axes=(1, 2))
        mask[mask < 0.8] = 0
        mask_t = torch.from_numpy(mask).to(images.device, images.dtype)[:, None]
        brown = torch.tensor([63, 42, 20], device=images.device, dtype=images.dtype) / 255
        return images * (1 - mask_t) + brown[None, :, None, None] * mask_t
    # Water: drops shaded by an embossed distance-to-edge map (ImageNet-C's OpenCV steps),
    # the product with the 8-bit layer, normalised per image in float32 as the reference.
    level = (liquid.clip(0, 1) * 255).astype(np.uint8)
    drops = _water_drops(level)
    peak = drops.max(axis=(1, 2), keepdims=True)
    drops = drops / np.where(peak > 0, peak, np.float32(1)) * np.float32(strength)
    drops_t = torch.from_numpy(drops).to(images.device, images.dtype)[:, None]
    turquoise = torch.tensor([175, 238, 238], device=images.device, dtype=images.dtype) / 255
    return torch.addcmul(images, drops_t, turquoise[None, :, None, None])


@_on_rgb
def _saturate(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    # HSV saturation s a + b, without the round trip through HSV: at fixed hue and value each
    # channel's distance below the value, v - x, is proportional to the saturation
    # s = (v - min) / v, so it is scaled by s' / s = s' v / (v - min). A gray pixel (hue and
    # saturation 0) becomes the hue-0 colour (v, v (1 - s'), v (1 - s')), as in kornia and
    # scikit-image. Equal to kornia's round trip within float rounding (test_corruptions.py).
    a, b = _SATURATE[severity - 1]
    value, low = images.amax(dim=1, keepdim=True), images.amin(dim=1, keepdim=True)
    delta = value - low
    saturation = delta / torch.where(value > 0, value, 1.0)
    saturated = saturation.mul_(a).add_(b).clamp_(0, 1)
    scale = saturated * value / torch.where(delta > 0, delta, 1.0)
    # In place on one tensor of our own, and only the green and blue of gray pixels replaced
    # (their red, v - 0 scale, is already v): the same values with three full-size
    # temporaries fewer (the colour steps, the red image and the where over it). 0.026 ->
    # 0.020 s at 224 px, 0.005 -> 0.003 s at 32 px, 2026-12-04.
    colour = (value - images).mul_(scale)
    colour = torch.sub(value, colour, out=colour)
    faded = value * (1 - saturated)
    torch.where(delta > 0, colour[:, 1:], faded, out=colour[:, 1:])
    return colour


_BUILT_INS: tuple[tuple[str, CorruptionFn, tuple[Any, ...]], ...] = (
    ("gaussian_noise", _gaussian_noise, _GAUSSIAN_NOISE),
    ("shot_noise", _shot_noise, _SHOT_NOISE),
    ("impulse_noise", _impulse_noise, _IMPULSE_NOISE),
    ("defocus_blur", _defocus_blur, _DEFOCUS_BLUR),
    ("glass_blur", _glass_blur, _GLASS_BLUR),
    ("motion_blur", _motion_blur, _MOTION_BLUR),
    ("zoom_blur", _zoom_blur, _ZOOM_BLUR),
    ("snow", _snow, _SNOW),
    ("frost", _frost, _FROST),
    ("fog", _fog, _FOG),
    ("brightness", _brightness, _BRIGHTNESS),
    ("contrast", _contrast, _CONTRAST),
    ("elastic_transform", _elastic_transform, _ELASTIC),
    ("pixelate", _pixelate, _PIXELATE),
    ("jpeg_compression", _jpeg_compression, tuple(float(q) for q in _JPEG_QUALITY)),
    ("speckle_noise", _speckle_noise, _SPECKLE_NOISE),
    ("gaussian_blur", _gaussian_blur, _GAUSSIAN_BLUR),
    ("spatter", _spatter, _SPATTER),
    ("saturate", _saturate, _SATURATE),
)

_BUILT_IN_FNS = frozenset(fn for _, fn, _ in _BUILT_INS)
# Built-ins whose output is in [0, 1] by construction, returned without a clamp: JPEG's
# decoded levels / 255 (the clamp was about 3% of JPEG's time at 224 px).
_IN_UNIT_RANGE = frozenset({_jpeg_compression})

_REGISTRY: dict[str, Corruption] = {
    name: Corruption(name, fn, parameters) for name, fn, parameters in _BUILT_INS
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
    # The common case in one pass over the values (aminmax; a NaN makes both comparisons
    # false) instead of check_image_batch's four (isfinite, all, min, max): 3-5% of the
    # suite's time at 224 px. Anything else goes to check_image_batch for its error message.
    if (
        isinstance(images, Tensor)
        and images.ndim == 4
        and images.shape[0] > 0
        and images.shape[1] in (1, 3)
        and images.is_floating_point()
    ):
        low, high = torch.aminmax(images)
        if low.item() >= -RANGE_TOLERANCE and high.item() <= 1 + RANGE_TOLERANCE:
            return
    check_image_batch(
        images,
        hint="Corrupt images before normalisation (mean/std), and scale uint8 by 1/255.",
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


def _import_spec(spec: str) -> tuple[str, CorruptionFn]:
    """``"[name=]module:function"`` -> (registry name, function)."""
    usage = (
        "Expected 'module:function' or 'name=module:function' (e.g. "
        "'my_package.corruptions:raindrops')"
    )
    if not isinstance(spec, str):
        raise ValueError(f"{usage}, but got {type(spec).__name__} {spec!r}.")
    name, _, target = spec.rpartition("=") if "=" in spec else ("", "", spec)
    module_name, colon, attribute = target.strip().partition(":")
    if not colon or not module_name or not attribute or ":" in attribute:
        raise ValueError(f"{usage}, but got {spec!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"Cannot import module {module_name!r} of corruption plugin {spec!r}: {error}. "
            "Install the package that provides it or fix the module path."
        ) from error
    fn: Any = module
    for part in attribute.split("."):
        if not hasattr(fn, part):
            raise ValueError(
                f"Module {module_name!r} has no attribute {attribute!r} (corruption plugin "
                f"{spec!r}). Check the function name after the colon."
            )
        fn = getattr(fn, part)
    return (name.strip() or attribute.rsplit(".", 1)[-1]), fn


def _register_plugin(name: str, fn: Any, origin: str) -> bool:
    if not callable(fn):
        raise ValueError(
            f"Corruption plugin {origin} is a {type(fn).__name__}, not a function "
            "fn(images, severity, generator)."
        )
    existing = _REGISTRY.get(name)
    if existing is not None:
        if existing.fn is fn:
            return False  # loading the same plugin twice is a no-op
        raise ValueError(
            f"Corruption plugin {origin} would register {name!r}, which is already "
            "registered for another function. Name it explicitly: 'other_name=module:function'."
        )
    register_corruption(name, fn)
    return True


def load_corruption_plugins(spec: Sequence[str] = (), *, entry_points: bool = True) -> list[str]:
    """Register user corruptions given as import paths and installed as entry points.

    A plugin is a function ``fn(images, severity, generator) -> Tensor`` as for
    :func:`register_corruption` (for instance a domain-specific perturbation such as lens
    dirt or a scanner artefact). Two ways to provide one:

    - ``spec``: strings ``"module:function"`` (registered under the function's name) or
      ``"name=module:function"``;
    - an installed package's entry point in the group ``"tai.corruptions"``, registered
      under the entry point's name; in ``pyproject.toml``::

          [project.entry-points."tai.corruptions"]
          raindrops = "my_package.corruptions:raindrops"

    Loading the same function under the same name again does nothing, so the call is
    idempotent.

    Args:
        spec: import paths of corruption functions.
        entry_points: also load every entry point of the ``"tai.corruptions"`` group.

    Returns:
        The names registered by this call, in order.

    Raises:
        ValueError: for a malformed spec, a module that cannot be imported, a missing
            attribute, an object that is not callable, an entry point that fails to load,
            or a name already registered for a different function.
    """
    if isinstance(spec, str):
        raise ValueError(
            f"Expected `spec` to be a sequence of 'module:function' strings, but got the "
            f"string {spec!r}. Wrap it in a list: [{spec!r}]."
        )
    loaded: list[tuple[str, Any, str]] = []
    for item in spec:
        name, fn = _import_spec(item)
        loaded.append((name, fn, repr(item)))
    if entry_points:
        for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            origin = f"entry point {point.name!r} = {point.value!r} (group {ENTRY_POINT_GROUP!r})"
            try:
                fn = point.load()
            except Exception as error:  # any import-time failure of a third-party plugin
                raise ValueError(f"Cannot load corruption {origin}: {error}") from error
            loaded.append((point.name, fn, origin))
    return [name for name, fn, origin in loaded if _register_plugin(name, fn, origin)]


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
    out = out.to(images.dtype)
    if corruption.fn in _BUILT_IN_FNS and _owns_memory(out, images):
        if corruption.fn in _IN_UNIT_RANGE:
            return out
        return out.clamp_(0, 1)  # a tensor made for this call: clamped in place, one pass less
    return out.clamp(0, 1)


def _owns_memory(out: Tensor, images: Tensor) -> bool:
    """Whether ``out`` is a dense tensor with storage of its own, not shared with ``images``
    (not the input, a view of it or a broadcast tensor)."""
    return (
        out._base is None
        and out.is_contiguous()
        and out.untyped_storage().data_ptr() != images.untyped_storage().data_ptr()
        and out.untyped_storage().nbytes() == out.numel() * out.element_size()
    )
