r"""Estimators of the level of additive Gaussian noise in an image.

:func:`immerkaer_sigma` implements Immerkær, "Fast Noise Variance Estimation", Computer
Vision and Image Understanding 64(2), 1996 (https://doi.org/10.1006/cviu.1996.0060). It
complements the wavelet estimator of Donoho & Johnstone (1994) in
:func:`tai.data.profile.estimate_noise_sigma`: both recover the sigma of white Gaussian
noise on smooth images from the finest-scale high-pass response, but with different
filters and statistics (mean absolute response here, median absolute wavelet coefficient
there), so agreement of the two is a cheap check of an estimate. Texture and edges pass
both filters and raise both estimates.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["immerkaer_sigma"]


def immerkaer_sigma(image: np.ndarray) -> float:
    r"""Standard deviation of additive Gaussian noise in an image (Immerkær 1996).

    The mask :math:`N = \begin{psmallmatrix} 1 & -2 & 1 \\ -2 & 4 & -2 \\ 1 & -2 & 1
    \end{psmallmatrix}`, the difference of two Laplacians, annihilates locally
    linear (and bilinear) intensity, so on smooth images its response is noise alone;
    for white noise of variance :math:`\sigma^2` the response has variance
    :math:`36\sigma^2` and, being Gaussian, mean absolute value
    :math:`\sqrt{2/\pi}\,6\sigma`. Hence, over the :math:`(H-2)(W-2)` interior pixels,

    .. math::
        \hat\sigma = \sqrt{\frac{\pi}{2}} \, \frac{1}{6 (W - 2)(H - 2)}
            \sum_{x, y} \left| (I * N)(x, y) \right|.

    A colour image's channel estimates are averaged, as
    :func:`tai.data.profile.estimate_noise_sigma` does.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, ``H, W >= 3``; integer images are scaled to
            ``[0, 1]`` by their dtype's maximum, float images are taken to be in ``[0, 1]``.

    Returns:
        The estimated sigma on the ``[0, 1]`` intensity scale.

    Raises:
        ValueError: if ``image`` is not 2-D or 3-D, is smaller than 3 x 3, or holds NaN or inf.

    Example:
        A linear ramp has no noise, and the mask sees none:

        >>> import numpy as np
        >>> ramp = np.add.outer(np.linspace(0, 0.5, 8), np.linspace(0, 0.5, 8))
        >>> round(immerkaer_sigma(ramp), 12)
        0.0
        >>> noisy = 0.5 + np.random.default_rng(0).normal(0, 0.1, (256, 256))
        >>> round(immerkaer_sigma(noisy), 2)
        0.1
    """
    image = _as_float_image(image)
    channels = image[:, :, None] if image.ndim == 2 else image
    return float(np.mean([_immerkaer_channel(channels[:, :, c]) for c in range(channels.shape[2])]))


def _immerkaer_channel(x: np.ndarray) -> float:
    # The 3x3 mask is the outer product of [1, -2, 1] with itself: apply it separably.
    rows = x[:-2, :] - 2 * x[1:-1, :] + x[2:, :]
    response = rows[:, :-2] - 2 * rows[:, 1:-1] + rows[:, 2:]
    h, w = x.shape
    return math.sqrt(math.pi / 2) * float(np.abs(response).sum()) / (6 * (w - 2) * (h - 2))


def _as_float_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"Expected `image` of shape (H, W) or (H, W, C), but got shape {image.shape}. "
            "Pass one image, channels last."
        )
    if image.shape[0] < 3 or image.shape[1] < 3:
        raise ValueError(
            f"Expected `image` of at least 3 x 3 pixels, but got shape {image.shape}. "
            "The estimator needs a 3 x 3 neighbourhood."
        )
    if image.dtype == np.bool_:
        return image.astype(np.float64)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    image = image.astype(np.float64)
    if not np.isfinite(image).all():
        raise ValueError(
            "Expected `image` to be finite, but found NaN or inf values. "
            "Check the decoding of the file."
        )
    return image
