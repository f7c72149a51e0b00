"""Noise-level estimators: recovery of known Gaussian noise, a convolution reference, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import convolve2d

from tai.data.noise_estimators import immerkaer_sigma
from tai.data.profile import estimate_noise_sigma

ESTIMATORS = [
    pytest.param(immerkaer_sigma, id="immerkaer"),
    pytest.param(estimate_noise_sigma, id="wavelet"),
]


def _smooth_image(size: int = 128, rgb: bool = False) -> np.ndarray:
    """Low-frequency sinusoids plus a ramp, in [0.15, 0.85]."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.5 + 0.2 * np.sin(2 * np.pi * x) * np.cos(2 * np.pi * 0.7 * y) + 0.1 * (x - y)
    if rgb:
        image = np.stack([image, 0.9 * image, 1.1 * image - 0.05], axis=-1)
    return image


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "rgb"])
@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1, 0.2])
def test_estimator_recovers_added_gaussian_noise_within_20_percent(estimator, rgb, sigma):
    clean = _smooth_image(rgb=rgb)
    # Not clipped to [0, 1]: clipping would remove noise and bias any estimator low.
    noisy = clean + np.random.default_rng(round(sigma * 1000)).normal(0, sigma, clean.shape)
    assert estimator(noisy) == pytest.approx(sigma, rel=0.2)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_estimators_see_almost_no_noise_in_a_smooth_clean_image(estimator):
    assert estimator(_smooth_image()) < 1e-3


def test_immerkaer_matches_the_papers_formula_with_a_2d_convolution():
    image = np.random.default_rng(0).uniform(0, 1, (23, 31))
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]])
    h, w = image.shape
    expected = (
        math.sqrt(math.pi / 2)
        / (6 * (w - 2) * (h - 2))
        * np.abs(convolve2d(image, mask, mode="valid")).sum()
    )
    assert immerkaer_sigma(image) == pytest.approx(expected, rel=1e-12)


def test_immerkaer_is_zero_on_a_bilinear_image():
    y, x = np.mgrid[0:16, 0:16] / 16
    assert immerkaer_sigma(0.2 + 0.3 * x + 0.2 * y + 0.1 * x * y) == pytest.approx(0.0, abs=1e-12)


def test_immerkaer_averages_the_channels_of_a_colour_image():
    rng = np.random.default_rng(1)
    channels = [0.5 + rng.normal(0, s, (64, 64)) for s in (0.02, 0.05, 0.08)]
    expected = np.mean([immerkaer_sigma(c) for c in channels])
    assert immerkaer_sigma(np.stack(channels, axis=-1)) == pytest.approx(expected)
    assert immerkaer_sigma(channels[0][:, :, None]) == pytest.approx(immerkaer_sigma(channels[0]))


def test_immerkaer_scales_integer_images_by_their_dtype_maximum():
    rng = np.random.default_rng(2)
    image8 = np.clip(np.round((0.5 + rng.normal(0, 0.05, (64, 64))) * 255), 0, 255).astype(np.uint8)
    assert immerkaer_sigma(image8) == pytest.approx(immerkaer_sigma(image8 / 255.0))
    assert immerkaer_sigma(image8) == pytest.approx(0.05, rel=0.2)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        pytest.param(
            np.zeros(10), r"shape \(H, W\) or \(H, W, C\), but got shape \(10,\)", id="1d"
        ),
        pytest.param(np.zeros((4, 4, 3, 2)), r"but got shape \(4, 4, 3, 2\)", id="4d"),
        pytest.param(
            np.zeros((2, 5)), r"at least 3 x 3 pixels, but got shape \(2, 5\)", id="small"
        ),
        pytest.param(np.full((5, 5), np.nan), "NaN or inf", id="nan"),
        pytest.param(np.full((5, 5), np.inf), "NaN or inf", id="inf"),
    ],
)
def test_immerkaer_rejects_invalid_images(image, message):
    with pytest.raises(ValueError, match=message):
        immerkaer_sigma(image)
