"""Image corruptions: contracts, determinism, severity, exact reference cases, plugins, errors.

The comparison with the ``imagecorruptions`` package itself is in
``test_corruption_reference.py``; here each corruption is checked against its definition
with numpy, scipy, scikit-image and PIL where those compute it exactly.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from tai.principles.reliability import corruptions as corruptions_module
from tai.principles.reliability.corruptions import (
    CORRUPTIONS,
    DEFAULT_CORRUPTIONS,
    ENTRY_POINT_GROUP,
    EXTRA_CORRUPTIONS,
    IMAGENET_C_CORRUPTIONS,
    SEVERITIES,
    Corruption,
    available_corruptions,
    corrupt,
    load_corruption_plugins,
    register_corruption,
)

BUILT_INS = list(IMAGENET_C_CORRUPTIONS + EXTRA_CORRUPTIONS)
RANDOM = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
    "speckle_noise",
    "spatter",
]
COLOUR = ["snow", "frost", "brightness", "spatter", "saturate"]


def _images(
    channels: int = 3, n: int = 4, size: int | tuple[int, int] = 24, seed: int = 0
) -> torch.Tensor:
    """Smooth gradients plus texture, so blur and contrast have something to remove."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    base = (torch.linspace(0.1, 0.9, h)[:, None] + torch.linspace(0.1, 0.9, w)[None, :]) / 2
    texture = 0.1 * torch.rand(n, channels, h, w, generator=g)
    tint = 0.2 * torch.rand(n, channels, 1, 1, generator=g)
    return (base * 0.8 + texture + tint).clamp(0, 1)


def raindrops(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A user's own corruption, loaded by the plugin tests as ``<this module>:raindrops``."""
    drops = torch.rand(images.shape[-2:], generator=generator, device=images.device) < 0.02
    return torch.where(drops, 1.0, images * (1 - 0.05 * severity))


@pytest.fixture(autouse=True)
def _one_thread():
    """Two threads on a shared, busy machine run these small tensors several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_registry():
    saved = dict(corruptions_module._REGISTRY)
    yield
    corruptions_module._REGISTRY.clear()
    corruptions_module._REGISTRY.update(saved)


def test_the_imagenet_c_and_extra_corruptions_are_registered_with_five_severities():
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert len(IMAGENET_C_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert available_corruptions()[: len(BUILT_INS)] == BUILT_INS
    assert set(DEFAULT_CORRUPTIONS) <= set(BUILT_INS)
    for name in BUILT_INS:
        assert isinstance(CORRUPTIONS[name], Corruption)
        assert len(CORRUPTIONS[name].parameters) == 5


def test_registry_view_is_read_only():
    with pytest.raises(TypeError):
        CORRUPTIONS["mine"] = CORRUPTIONS["contrast"]  # type: ignore[index]


def test_parameters_follow_imagenet_c():
    assert CORRUPTIONS["gaussian_noise"].parameters == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert CORRUPTIONS["gaussian_blur"].parameters == (1, 2, 3, 4, 6)
    assert CORRUPTIONS["contrast"].parameters == (0.4, 0.3, 0.2, 0.1, 0.05)
    assert CORRUPTIONS["jpeg_compression"].parameters == (25, 18, 15, 10, 7)
    assert CORRUPTIONS["glass_blur"].parameters[4] == (1.5, 4, 2)
    assert CORRUPTIONS["motion_blur"].parameters[0] == (10, 3)
    assert CORRUPTIONS["elastic_transform"].parameters == pytest.approx(
        (12.5, 16.25, 21.25, 25.0, 30.0)
    )
    # numpy's float arange: 1.00 .. 1.11 is 12 zoom factors, as in imagecorruptions.
    assert [len(z) for z in CORRUPTIONS["zoom_blur"].parameters] == [12, 16, 11, 13, 11]


@pytest.mark.parametrize("size", [24, (20, 33)], ids=["square", "non-square"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", BUILT_INS)
def test_every_severity_keeps_shape_dtype_and_range(name, channels, size):
    images = _images(channels, size=size)
    for severity in SEVERITIES:
        out = corrupt(images, name, severity, seed=1)
        assert out.shape == images.shape
        assert out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out, images)


@pytest.mark.parametrize("name", BUILT_INS)
def test_images_smaller_than_the_kernels_are_corrupted(name):
    images = _images(n=2, size=5)
    assert corrupt(images, name, 5).shape == images.shape


@pytest.mark.parametrize("name", ["gaussian_noise", "gaussian_blur", "contrast", "glass_blur"])
def test_float64_images_stay_float64(name):
    images = _images().double()
    assert corrupt(images, name, 3).dtype == torch.float64


@pytest.mark.parametrize("name", BUILT_INS)
def test_same_seed_gives_the_same_output(name):
    images = _images()
    assert torch.equal(corrupt(images, name, 3, seed=5), corrupt(images, name, 3, seed=5))


@pytest.mark.parametrize("name", RANDOM)
def test_different_seeds_give_different_draws(name):
    images = _images()
    assert not torch.equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


@pytest.mark.parametrize("name", RANDOM)
def test_each_image_gets_its_own_draws(name):
    same = _images(n=1, size=32).expand(2, -1, -1, -1).contiguous()
    out = corrupt(same, name, 5)
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("name", [n for n in BUILT_INS if n not in RANDOM])
def test_a_deterministic_corruption_treats_each_image_alone(name):
    images = _images(n=3)
    torch.testing.assert_close(corrupt(images[1:2], name, 4), corrupt(images, name, 4)[1:2])


def test_corrupt_does_not_modify_its_input():
    images = _images()
    copy = images.clone()
    for name in BUILT_INS:
        corrupt(images, name, 5)
    assert torch.equal(images, copy)


MONOTONE = [n for n in BUILT_INS if n not in ("glass_blur", "snow", "frost", "spatter")]


@pytest.mark.parametrize("name", MONOTONE)
def test_distance_to_the_clean_image_grows_with_severity(name):
    images = _images(n=8, size=32)
    distance = [(corrupt(images, name, s) - images).abs().mean().item() for s in SEVERITIES]
    assert distance == sorted(distance)
    assert distance[0] < distance[-1]


@pytest.mark.parametrize("name", ["glass_blur", "snow", "spatter"])
def test_severity_five_is_stronger_than_severity_one(name):
    # ImageNet-C's glass blur, snow and spatter are not monotone in between.
    images = _images(n=8, size=32)
    distance = [(corrupt(images, name, s) - images).abs().mean().item() for s in (1, 5)]
    assert distance[0] < distance[1]


def test_jpeg_loses_more_at_lower_quality():
    images = _images(n=8, size=32)
    mild = (corrupt(images, "jpeg_compression", 1) - images).abs().mean()
    severe = (corrupt(images, "jpeg_compression", 5) - images).abs().mean()
    assert severe > mild


def test_uint8_levels_round_half_to_even_as_numpy_does():
    # Values whose float32 product with 255 is exactly k + 0.5 (the ties), their neighbours
    # one ulp either side, and random values: OpenCV's one-pass conversion (used where it is
    # installed) must give numpy's rint(255 x) for every one.
    ties = np.float32(np.arange(255) + 0.5) / np.float32(255)
    ties = ties[np.float32(ties * np.float32(255)) == np.arange(255) + 0.5]
    assert ties.size > 50  # enough exact ties to test
    values = np.concatenate(
        [
            ties,
            np.nextafter(ties, np.float32(0)),
            np.nextafter(ties, np.float32(1)),
            np.random.default_rng(0).random(4096, dtype=np.float32),
            np.float32([0, 1]),
        ]
    )
    values = np.resize(values, (2, 3, 16, values.size // 96 + 1)).astype(np.float32)
    expected = np.rint(values * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(corruptions_module._levels_uint8(values), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 100])
def test_jpeg_returns_its_decoded_levels_divided_by_255(size, channels, dtype):
    # The output is level / 255 in the images' dtype, exactly (a division, not a product
    # with 1/255), and in [0, 1] without a clamp.
    g = torch.Generator().manual_seed(size + channels)
    images = torch.rand(2, channels, size, size + 7, generator=g, dtype=dtype)
    for severity in (1, 5):
        out = corrupt(images, "jpeg_compression", severity)
        levels = out.mul(255).round()
        assert out.dtype == dtype
        assert torch.equal(out, levels / 255)
        assert 0 <= out.min() and out.max() <= 1
        assert not torch.equal(out, images)


@pytest.mark.parametrize(("severity", "c"), [(1, 0.08), (2, 0.12)])
def test_gaussian_noise_std_is_close_to_c(severity, c):
    images = torch.full((8, 3, 32, 32), 0.5)
    noise = corrupt(images, "gaussian_noise", severity) - images
    assert noise.mean().item() == pytest.approx(0.0, abs=0.005)
    assert noise.std().item() == pytest.approx(c, rel=0.03)


def test_contrast_scales_each_channel_around_its_mean():
    images = _images(n=2)
    out = corrupt(images, "contrast", 2)
    mean = images.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out, (images - mean) * 0.3 + mean)
    torch.testing.assert_close(out.mean(dim=(2, 3)), images.mean(dim=(2, 3)))


def test_gaussian_blur_keeps_a_constant_image_and_the_mean_of_a_periodic_one():
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(corrupt(flat, "gaussian_blur", 5), flat)
    stripes = torch.tensor([0.0, 1.0]).repeat(1, 1, 16, 8)
    blurred = corrupt(stripes, "gaussian_blur", 2)
    assert blurred[..., 4:-4, 4:-4].sub(0.5).abs().max() < 0.01


def test_blur_works_on_images_smaller_than_the_kernel():
    images = _images(n=2, size=8)
    assert corrupt(images, "gaussian_blur", 5).shape == images.shape


# ------------------------------------------------------------- exact reference cases


def _hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).double().numpy()


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_equals_scikit_image(severity):
    from skimage.filters import gaussian

    images = _images(size=(20, 27))
    sigma = CORRUPTIONS["gaussian_blur"].parameters[severity - 1]
    expected = np.stack([gaussian(x, sigma=sigma, channel_axis=-1) for x in _hwc(images)])
    np.testing.assert_allclose(
        _hwc(corrupt(images, "gaussian_blur", severity)), expected, atol=1e-5
    )


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_and_saturate_equal_scikit_image_hsv(severity):
    from skimage.color import hsv2rgb, rgb2hsv

    images = _images()
    c = CORRUPTIONS["brightness"].parameters[severity - 1]
    a, b = CORRUPTIONS["saturate"].parameters[severity - 1]
    bright, saturated = [], []
    for x in _hwc(images):
        hsv = rgb2hsv(x)
        bright.append(hsv2rgb(np.concatenate([hsv[..., :2], np.clip(hsv[..., 2:] + c, 0, 1)], -1)))
        sat = np.clip(hsv[..., 1:2] * a + b, 0, 1)
        saturated.append(hsv2rgb(np.concatenate([hsv[..., :1], sat, hsv[..., 2:]], -1)))
    np.testing.assert_allclose(_hwc(corrupt(images, "brightness", severity)), bright, atol=1e-4)
    np.testing.assert_allclose(_hwc(corrupt(images, "saturate", severity)), saturated, atol=1e-4)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("size", [(32, 32), (57, 41)])
def test_pixelate_equals_pil_box_down_and_nearest_up(size, severity):
    images = _images(n=2, size=size)
    c = CORRUPTIONS["pixelate"].parameters[severity - 1]
    h, w = size
    expected = []
    for x in _hwc(images).astype(np.float32):
        channels = []
        for k in range(3):
            small = Image.fromarray(x[..., k], mode="F").resize((int(w * c), int(h * c)), Image.BOX)
            channels.append(np.asarray(small.resize((w, h), Image.NEAREST)))
        expected.append(np.stack(channels, -1))
    np.testing.assert_allclose(_hwc(corrupt(images, "pixelate", severity)), expected, atol=1e-5)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_zoom_blur_averages_scipy_zooms_of_the_centre(severity):
    from scipy.ndimage import zoom

    images = _images(n=1, size=(30, 26))
    x = _hwc(images)[0]
    h, w = x.shape[:2]
    out = x.copy()
    for z in CORRUPTIONS["zoom_blur"].parameters[severity - 1]:
        ch, cw = int(np.ceil(h / z)), int(np.ceil(w / z))
        top, left = (h - ch) // 2, (w - cw) // 2
        out += zoom(x[top : top + ch, left : left + cw], (z, z, 1), order=1)[:h, :w]
    expected = out / (len(CORRUPTIONS["zoom_blur"].parameters[severity - 1]) + 1)
    np.testing.assert_allclose(_hwc(corrupt(images, "zoom_blur", severity))[0], expected, atol=1e-5)


@pytest.mark.parametrize(("h", "w", "delta"), [(12, 15, 1), (20, 20, 2), (33, 31, 4), (9, 9, 4)])
def test_glass_pass_equals_imagenet_c_sequential_loop(h, w, delta):
    """ImageNet-C's loop on numpy views: ``x[h, w]`` takes ``x[h + dy, w + dx]``'s value."""
    images = torch.rand(3, 3, h, w, generator=torch.Generator().manual_seed(h))
    offsets = torch.randint(-delta, delta, (3, 2, h, w), generator=torch.Generator().manual_seed(w))
    out = corruptions_module._glass_pass(images, offsets, delta)
    for n, x in enumerate(_hwc(images)):
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = int(offsets[n, 0, row, col]), int(offsets[n, 1, row, col])
                x[row, col], x[row + dy, col + dx] = x[row + dy, col + dx], x[row, col]
        np.testing.assert_array_equal(_hwc(out)[n], x)


def test_motion_blur_is_a_one_sided_gaussian_weighted_line():
    impulse = torch.zeros(1, 1, 41, 41)
    impulse[0, 0, 20, 20] = 1.0
    weights, oy, ox = corruptions_module._motion_blur_kernel(10, 3.0, torch.tensor([0.0]), (41, 41))
    out = corruptions_module._line_blur(impulse, weights, oy, ox)[0, 0]
    # At angle 0 the image is sampled to the right, so the impulse spreads to the left.
    expected = torch.exp(-(torch.arange(21.0) ** 2) / 18)
    torch.testing.assert_close(out[20, 0:21].flip(0), expected / expected.sum())
    assert out[20, 21:].sum() == 0 and out.sum() == pytest.approx(1.0)


def test_fog_keeps_the_image_maximum_scaled_plasma_in_range():
    images = _images(n=4, size=32)
    plasma = corruptions_module._plasma_fractal(4, 32, 2.0, images, torch.Generator())
    assert plasma.shape == (4, 32, 32)
    assert torch.allclose(plasma.amin(dim=(1, 2)), torch.zeros(4))
    assert torch.allclose(plasma.amax(dim=(1, 2)), torch.ones(4))
    assert not torch.equal(plasma[0], plasma[1])


@pytest.mark.parametrize("severity", [1, 5])
def test_elastic_transform_moves_pixels_by_a_smooth_field_of_a_few_pixels(severity):
    images = _images(n=4, size=64)
    out = corrupt(images, "elastic_transform", severity)
    assert (out - images).abs().mean() > 0.005
    # A warp only moves values: the histogram of a smooth image barely changes.
    assert abs(out.mean() - images.mean()) < 0.01


def test_frost_texture_has_the_colour_and_contrast_of_imagenet_c_frost():
    texture = corruptions_module._frost_texture(
        200, (64, 64), torch.zeros(1), torch.Generator().manual_seed(0)
    )
    mean = torch.tensor([p[0] for p in corruptions_module._FROST_PALETTES]).mean(dim=0)
    torch.testing.assert_close(texture.mean(dim=(0, 2, 3)), mean, atol=0.04, rtol=0)
    within = texture.std(dim=(2, 3)).mean()
    assert 0.03 < within < 0.15  # the photographs' 64-pixel crops: 0.04 .. 0.13


def test_distance_to_no_edge_is_the_limit():
    distance = corruptions_module._chamfer_distance(np.zeros((1, 6, 6), dtype=bool))
    np.testing.assert_array_equal(distance, np.full((1, 6, 6), 20.0, dtype=np.float32))


def test_spatter_without_any_liquid_returns_the_image_not_nan(monkeypatch):
    # Noise of zero leaves the liquid layer at its mean .65, below every water threshold;
    # imagecorruptions divides 0 by 0 there and returns a black image.
    zeros = torch.zeros
    monkeypatch.setattr(torch, "randn", lambda *size, generator, **kwargs: zeros(*size, **kwargs))
    images = _images(n=2, size=16)
    for severity in (1, 2, 3):
        out = corrupt(images, "spatter", severity)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, images)


def _liquid_levels(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Spatter's 8-bit liquid layers (water, severity 1): drops with edges to find."""
    import scipy.ndimage

    mean, std, blur, threshold, *_ = corruptions_module._SPATTER[0]
    noise = np.random.default_rng(seed).standard_normal((n, h, w))
    liquid = scipy.ndimage.gaussian_filter(mean + std * noise, blur, mode="nearest", axes=(1, 2))
    liquid[liquid < threshold] = 0
    return (liquid.clip(0, 1) * 255).astype(np.uint8)


def test_chamfer_distance_equals_opencv():
    """The numpy passes (tai without OpenCV) against cv2.distanceTransform(DIST_L2, 5)."""
    cv2 = pytest.importorskip("cv2")
    edges = np.random.default_rng(0).random((3, 30, 41)) < 0.01
    edges[2] = False
    edges[2, 0, 0] = True  # distances beyond the limit
    expected = [
        np.minimum(cv2.distanceTransform(np.where(e, 0, 255).astype(np.uint8), cv2.DIST_L2, 5), 20)
        for e in edges
    ]
    np.testing.assert_array_equal(corruptions_module._chamfer_distance(edges), np.stack(expected))


def test_water_drops_without_opencv_equal_opencv(monkeypatch):
    """Spatter's water drops: the numpy steps (Canny, chamfer distance, blurs, equalisation,
    emboss) against OpenCV's, to the bit, on layers with many edges and on an empty one."""
    pytest.importorskip("cv2")
    levels = np.concatenate([_liquid_levels(4, 40, 56, seed=1), np.zeros((1, 40, 56), np.uint8)])
    with_opencv = corruptions_module._water_drops(levels)
    monkeypatch.setattr(corruptions_module, "_opencv", lambda: None)
    without = corruptions_module._water_drops(levels)
    assert with_opencv[:4].max() > 0
    np.testing.assert_array_equal(without, with_opencv)


# ------------------------------------------- fast paths equal the direct computations
# The speed-ups of tai.principles.reliability.corruptions (FFT, banded matrices, slices, scipy
# labelling, one channels-last interpolation) against the direct computations they replaced,
# kept here.


@pytest.mark.parametrize(
    ("h", "w", "mode"), [(20, 33, "nearest"), (9, 7, "mirror"), (5, 5, "nearest")]
)
def test_torch_padding_equals_the_index_tables(h, w, mode):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    for pad_h, pad_w in [(1, 2), (4, 6), (8, 9)]:
        if mode == "mirror" and (pad_h >= h or pad_w >= w):
            continue  # longer reflect-101 padding keeps the index tables
        rows = corruptions_module._border_index(h, pad_h, pad_h, mode, x.device)
        cols = corruptions_module._border_index(w, pad_w, pad_w, mode, x.device)
        expected = x.index_select(-2, rows).index_select(-1, cols)
        assert torch.equal(corruptions_module._pad(x, pad_h, pad_w, mode), expected)


@pytest.mark.parametrize(("size", "kernel_size"), [(48, 21), ((30, 41), 17), (5, 17)])
def test_fft_correlation_equals_the_direct_convolution(size, kernel_size):
    """Defocus blur: correlation by FFT against kornia's direct filter2d (asymmetric kernel,
    so a flipped kernel would fail)."""
    import kornia

    g = torch.Generator().manual_seed(1)
    h, w = (size, size) if isinstance(size, int) else size
    half = kernel_size // 2
    padded = corruptions_module._pad(torch.rand(3, 3, h, w, generator=g), half, half, "mirror")
    kernel = torch.rand(kernel_size, kernel_size, generator=g)
    kernel = kernel / kernel.sum()
    direct = kornia.filters.filter2d(padded, kernel[None], padding="valid")
    fft = corruptions_module._fft_correlate(padded, kernel)
    assert fft.shape == direct.shape == (3, 3, h, w)
    assert (fft - direct).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("size", "sigma", "truncate", "mode"),
    [
        (32, (0.7, 0.7), 4.0, "nearest"),
        ((20, 33), (1.5, 1.5), 4.0, "nearest"),
        (32, (6.0, 6.0), 4.0, "nearest"),
        ((30, 50), (0.3, 0.5), 3.0, "reflect"),
        (5, (3.0, 3.0), 4.0, "nearest"),
    ],
)
def test_banded_gaussian_filter_equals_kornia_separable_convolution(size, sigma, truncate, mode):
    import kornia

    h, w = (size, size) if isinstance(size, int) else size
    x = torch.rand(4, 3, h, w, generator=torch.Generator().manual_seed(2))
    radius_y, radius_x = (int(truncate * s + 0.5) for s in sigma)
    kernel_y = kornia.filters.get_gaussian_kernel1d(2 * radius_y + 1, sigma[0])
    kernel_x = kornia.filters.get_gaussian_kernel1d(2 * radius_x + 1, sigma[1])
    padded = corruptions_module._pad(x, radius_y, radius_x, mode)
    direct = kornia.filters.filter2d_separable(padded, kernel_x, kernel_y, padding="valid")
    banded = corruptions_module._gaussian_filter(x, sigma, truncate=truncate, mode=mode)
    assert max(h, w) <= corruptions_module._BANDED_MAX_SIZE  # the banded path ran
    assert (banded - direct).abs().max() < 1e-5


@pytest.mark.parametrize("channels", [1, 3])
def test_line_blur_by_slices_equals_the_gather_per_tap(channels):
    """Same values in the same order of additions, so equal to the bit; offsets beyond the
    image and taps of weight 0 included."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, channels, 23, 30, generator=g)
    weights = torch.rand(5, 9, generator=g) * (torch.rand(5, 9, generator=g) > 0.2)
    offsets_y = torch.randint(-40, 40, (5, 9), generator=g)
    offsets_x = torch.randint(-12, 12, (5, 9), generator=g)
    assert channels * 23 * 30 < corruptions_module._SLICE_MIN_PIXELS  # _line_blur gathers
    gathered = corruptions_module._line_blur(x, weights, offsets_y, offsets_x)
    sliced = corruptions_module._line_blur_slices(x, weights, offsets_y, offsets_x)
    assert torch.equal(sliced, gathered)


def test_canny_equals_opencv_with_the_l2_norm():
    """The numpy Canny (tai without OpenCV) against cv2.Canny(L2gradient=True)."""
    cv2 = pytest.importorskip("cv2")
    levels = _liquid_levels(6, 40, 48, seed=4)
    expected = np.stack([cv2.Canny(x, 50, 150, L2gradient=True) > 0 for x in levels])
    edges = corruptions_module._canny(levels, 50.0, 150.0)
    assert expected.sum() > 50  # edges to find, some only through weak pixels
    np.testing.assert_array_equal(edges, expected)


@pytest.mark.parametrize("severity", [1, 5])
def test_zoom_blur_equals_image_by_image_interpolation(severity):
    import torch.nn.functional as F

    images = _images(n=4, size=(37, 30))
    h, w = images.shape[-2:]
    out = images.clone()
    for zoom in CORRUPTIONS["zoom_blur"].parameters[severity - 1]:
        ch, cw = int(np.ceil(h / zoom)), int(np.ceil(w / zoom))
        top, left = (h - ch) // 2, (w - cw) // 2
        crop = images[..., top : top + ch, left : left + cw]
        size = (round(ch * zoom), round(cw * zoom))
        out = out + F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[..., :h, :w]
    expected = out / (len(CORRUPTIONS["zoom_blur"].parameters[severity - 1]) + 1)
    result = corrupt(images, "zoom_blur", severity)
    assert result.is_contiguous()
    assert (result - expected.clamp(0, 1)).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("grid", "cell", "start", "count"), [(5, 96.0, 40, 32), (21, 12.0, 7, 224)]
)
def test_bilinear_window_equals_a_crop_of_the_whole_upsampling(grid, cell, start, count):
    import torch.nn.functional as F

    values = torch.randn(2, 1, grid, grid, generator=torch.Generator().manual_seed(5))
    up = F.interpolate(values, scale_factor=cell, mode="bilinear", align_corners=True)
    expected = up[..., start : start + count, start : start + count]
    matrix = corruptions_module._bilinear_window(grid, int(grid * cell), start, count, values)
    window = torch.einsum("ih,nchw,jw->ncij", matrix, values, matrix)
    assert (window - expected).abs().max() < 1e-5


@pytest.mark.parametrize("severity", [1, 5])
def test_elastic_transform_equals_kornia_elastic_transform2d(severity):
    """The warp without kornia's 1 x 1 smoothing, against the former call of kornia."""
    import kornia

    images = _images(n=3, size=(28, 36))
    n, _, h, w = images.shape
    g = torch.Generator().manual_seed(7)
    max_shift = h * 0.005
    noise = corruptions_module._uniform((n, 2, h, w), -max_shift, max_shift, images, g)
    shift = (
        corruptions_module._gaussian_filter(
            noise, (h * 0.01, w * 0.01), truncate=3.0, mode="reflect"
        )
        * CORRUPTIONS["elastic_transform"].parameters[severity - 1]
    )
    expected = kornia.geometry.transform.elastic_transform2d(
        images,
        shift * torch.tensor([2 / w, 2 / h])[None, :, None, None],
        kernel_size=(1, 1),
        sigma=(1.0, 1.0),
        alpha=(1.0, 1.0),
        align_corners=False,
        padding_mode="reflection",
    )
    assert torch.equal(corrupt(images, "elastic_transform", severity, seed=7), expected.clamp(0, 1))


# ------------------------------------------------------------------------ grayscale


@pytest.mark.parametrize("name", COLOUR)
def test_colour_corruptions_on_grayscale_return_the_luminance_of_the_rgb_result(name):
    gray = _images(channels=1)
    rgb = corrupt(gray.expand(-1, 3, -1, -1).contiguous(), name, 4, seed=2)
    luminance = (rgb * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, True)
    torch.testing.assert_close(corrupt(gray, name, 4, seed=2), luminance)


@pytest.mark.parametrize(
    "name", ["defocus_blur", "zoom_blur", "contrast", "pixelate", "gaussian_blur", "fog"]
)
def test_per_channel_corruptions_treat_grayscale_as_one_channel_of_rgb(name):
    gray = _images(channels=1)
    rgb = corrupt(gray.expand(-1, 3, -1, -1).contiguous(), name, 3)
    torch.testing.assert_close(corrupt(gray, name, 3), rgb[:, :1])


# --------------------------------------------------------------------------- registry


def test_register_corruption_makes_a_custom_function_available(restore_registry):
    def darken(images, severity, generator):
        return images * (1 - 0.1 * severity)

    register_corruption("darken", darken)
    assert "darken" in available_corruptions()
    assert "darken" in CORRUPTIONS
    images = torch.ones(2, 1, 4, 4)
    torch.testing.assert_close(corrupt(images, "darken", 3), torch.full_like(images, 0.7))


def test_custom_corruption_gets_a_seeded_generator_and_its_output_is_clamped(restore_registry):
    def noisy(images, severity, generator):
        return images + severity * torch.randn(images.shape, generator=generator)

    register_corruption("noisy", noisy)
    images = _images()
    first, second = corrupt(images, "noisy", 5, seed=3), corrupt(images, "noisy", 5, seed=3)
    assert torch.equal(first, second)
    assert first.min() == 0 and first.max() == 1


def test_custom_corruption_that_changes_the_shape_is_rejected(restore_registry):
    register_corruption("crop", lambda images, severity, generator: images[..., 1:, 1:])
    with pytest.raises(ValueError, match="returned shape .* must keep the shape"):
        corrupt(_images(), "crop", 1)


# --------------------------------------------------------------------- invalid input


def test_unknown_corruption_names_the_value_and_the_accepted_ones():
    with pytest.raises(
        ValueError, match=r"Unknown corruption 'rain'\. Expected one of \[.*'contrast'"
    ):
        corrupt(_images(), "rain", 1)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True])
def test_severity_outside_one_to_five_is_rejected(severity):
    with pytest.raises(
        ValueError, match=r"`severity` to be an integer in \(1, 2, 3, 4, 5\), but got"
    ):
        corrupt(_images(), "contrast", severity)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        pytest.param(torch.rand(4, 2, 8, 8), r"1 or 3 channels .* C = 2", id="two-channels"),
        pytest.param(torch.rand(4, 8, 8, 3), r"1 or 3 channels .* C = 8", id="channels-last"),
        pytest.param(torch.rand(3, 8, 8), r"shape \(N, C, H, W\).*3 dimensions", id="no-batch"),
        pytest.param(torch.rand(0, 3, 8, 8), "empty batch", id="empty"),
        pytest.param(torch.rand(2, 3, 8, 8) * 255, r"in \[0, 1\]", id="0-255"),
        pytest.param(torch.rand(2, 3, 8, 8) - 0.5, r"in \[0, 1\]", id="normalised"),
        pytest.param(torch.full((1, 1, 2, 2), float("nan")), "NaN or inf", id="nan"),
        pytest.param(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating point.*255", id="uint8"),
        pytest.param([[0.5]], "torch tensor", id="list"),
    ],
)
def test_invalid_images_are_rejected(images, message):
    with pytest.raises(ValueError, match=message):
        corrupt(images, "contrast", 1)


def test_values_within_tolerance_of_the_range_are_accepted():
    images = torch.full((1, 1, 4, 4), 1 + 5e-7)
    assert corrupt(images, "contrast", 1).max() <= 1


def test_registering_an_existing_name_is_rejected(restore_registry):
    with pytest.raises(ValueError, match=r"'contrast' is already registered; registered names"):
        register_corruption("contrast", lambda images, severity, generator: images)


@pytest.mark.parametrize(
    ("name", "fn", "message"),
    [
        ("", lambda x, s, g: x, "non-empty string"),
        ("ok", "not a function", "callable"),
    ],
)
def test_registering_an_invalid_corruption_is_rejected(restore_registry, name, fn, message):
    with pytest.raises(ValueError, match=message):
        register_corruption(name, fn)


# ---------------------------------------------------------------------------- plugins


def test_plugin_given_as_module_and_function_is_registered_under_its_name(restore_registry):
    assert load_corruption_plugins([f"{__name__}:raindrops"], entry_points=False) == ["raindrops"]
    images = _images()
    expected = raindrops(images, 2, torch.Generator().manual_seed(0)).clamp(0, 1)
    torch.testing.assert_close(corrupt(images, "raindrops", 2), expected)


def test_plugin_can_be_registered_under_another_name(restore_registry):
    assert load_corruption_plugins([f"lens_rain = {__name__}:raindrops"], entry_points=False) == [
        "lens_rain"
    ]
    assert CORRUPTIONS["lens_rain"].fn is raindrops


def test_loading_the_same_plugin_twice_is_a_no_op(restore_registry):
    spec = [f"{__name__}:raindrops"]
    load_corruption_plugins(spec, entry_points=False)
    assert load_corruption_plugins(spec, entry_points=False) == []
    assert available_corruptions().count("raindrops") == 1


def _install_distribution(root, monkeypatch, entry_points: str) -> None:
    """A minimal installed distribution (dist-info with entry points) on ``sys.path``."""
    (root / "tai_rain_plugin.py").write_text(
        textwrap.dedent(
            """
            def drizzle(images, severity, generator):
                return images * 0.5
            """
        )
    )
    info = root / "tai_rain_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tai-rain-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")
    monkeypatch.syspath_prepend(str(root))


def test_entry_points_of_installed_packages_are_registered(tmp_path, monkeypatch, restore_registry):
    _install_distribution(tmp_path, monkeypatch, "drizzle = tai_rain_plugin:drizzle")
    assert load_corruption_plugins([]) == ["drizzle"]
    images = _images()
    torch.testing.assert_close(corrupt(images, "drizzle", 1), images * 0.5)


def test_an_entry_point_that_fails_to_load_names_itself(tmp_path, monkeypatch, restore_registry):
    _install_distribution(tmp_path, monkeypatch, "broken = tai_rain_plugin:missing")
    with pytest.raises(
        ValueError, match=r"Cannot load corruption entry point 'broken' = 'tai_rain_plugin:missing'"
    ):
        load_corruption_plugins([])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            "raindrops", r"Expected 'module:function'.*but got 'raindrops'", id="no-colon"
        ),
        pytest.param(
            ":raindrops", r"Expected 'module:function'.*but got ':raindrops'", id="no-module"
        ),
        pytest.param(
            "pkg.mod:", r"Expected 'module:function'.*but got 'pkg.mod:'", id="no-function"
        ),
        pytest.param(42, r"Expected 'module:function'.*but got int 42", id="not-a-string"),
        pytest.param(
            "no_such_module_xyz:fn",
            r"Cannot import module 'no_such_module_xyz' of corruption plugin",
            id="missing-module",
        ),
        pytest.param(
            f"{__name__}:no_such_function",
            r"has no attribute 'no_such_function'.*function name after the colon",
            id="missing-function",
        ),
        pytest.param(f"{__name__}:BUILT_INS", r"is a list, not a function", id="not-callable"),
        pytest.param(
            f"contrast = {__name__}:raindrops",
            r"would register 'contrast', which is already registered",
            id="taken-name",
        ),
    ],
)
def test_bad_plugin_specs_are_rejected_with_the_spec_and_the_fix(spec, message, restore_registry):
    with pytest.raises(ValueError, match=message):
        load_corruption_plugins([spec], entry_points=False)


def test_a_single_string_spec_is_rejected(restore_registry):
    with pytest.raises(ValueError, match=r"Wrap it in a list: \['mod:fn'\]"):
        load_corruption_plugins("mod:fn")


@pytest.mark.parametrize("severity", [1, 5])
def test_defocus_blur_through_opencv_equals_the_fft(severity, monkeypatch):
    pytest.importorskip("cv2")
    images = _images(n=2, size=(100, 120))
    assert 100 * 120 >= corruptions_module._OPENCV_FILTER2D_MIN_PIXELS  # the OpenCV path
    with_opencv = corrupt(images, "defocus_blur", severity)
    monkeypatch.setattr(corruptions_module, "_opencv", lambda: None)
    torch.testing.assert_close(with_opencv, corrupt(images, "defocus_blur", severity))


@pytest.mark.parametrize("c", [60.0, 3.0])
def test_poisson_by_tables_draws_poisson_counts(c):
    """Shot noise's counts on 8-bit images (inverse CDF through guide tables): the mean,
    variance and frequencies of Poisson(c k / 255), per level."""
    import scipy.stats

    levels = torch.tensor([0, 1, 77, 255])
    x = (levels[:, None].expand(-1, 50_000).float() / 255).contiguous()
    counts = corruptions_module._poisson(x, c, torch.Generator().manual_seed(0))
    assert counts.dtype == x.dtype and torch.equal(counts, counts.round())
    for k, row in zip(levels.tolist(), counts.double().numpy(), strict=True):
        rate = c * k / 255
        assert abs(row.mean() - rate) < 5 * np.sqrt(max(rate, 1e-3) / row.size) + 1e-9
        values, seen = np.unique(row, return_counts=True)
        expected = scipy.stats.poisson.pmf(values, rate) * row.size
        big = expected > 20  # the frequent counts: a chi-square test of their frequencies
        if big.sum() > 1:
            scaled = expected[big] * seen[big].sum() / expected[big].sum()
            assert scipy.stats.chisquare(seen[big], scaled).pvalue > 1e-4


def test_poisson_of_other_values_falls_back_to_torch(monkeypatch):
    x = torch.full((2, 3, 8, 8), 0.3)  # not a multiple of 1/255
    calls = []
    poisson = torch.poisson
    monkeypatch.setattr(torch, "poisson", lambda *a, **k: calls.append(1) or poisson(*a, **k))
    counts = corruptions_module._poisson(x, 60.0, torch.Generator().manual_seed(0))
    assert calls and counts.shape == x.shape and (counts >= 0).all()


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
@pytest.mark.parametrize(("size", "sigma"), [((70, 90), (2.0, 3.0)), ((66, 80), (24.0, 1.0))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opencv_gaussian_filter_equals_kornia_separable_convolution(size, sigma, mode, dtype):
    """Large images: cv2.sepFilter2D with the border mode against the padded convolution
    (tai without OpenCV), with a kernel wider than an image side too."""
    import kornia

    pytest.importorskip("cv2")
    h, w = size
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(3), dtype=dtype)
    radius_y, radius_x = (int(4.0 * s + 0.5) for s in sigma)
    kernel_y = kornia.filters.get_gaussian_kernel1d(2 * radius_y + 1, sigma[0], dtype=dtype)
    kernel_x = kornia.filters.get_gaussian_kernel1d(2 * radius_x + 1, sigma[1], dtype=dtype)
    padded = corruptions_module._pad(x, radius_y, radius_x, mode)
    direct = kornia.filters.filter2d_separable(padded, kernel_x, kernel_y, padding="valid")
    assert max(h, w) > corruptions_module._BANDED_MAX_SIZE  # the OpenCV path runs
    opencv = corruptions_module._gaussian_filter(x, sigma, mode=mode)
    assert opencv.dtype == dtype
    assert (opencv - direct).abs().max() < 1e-5
