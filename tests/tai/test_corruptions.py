"""Image corruptions: shape/dtype/range contracts, determinism, severity and errors."""

from __future__ import annotations

import pytest
import torch

from tai import corruptions as corruptions_module
from tai.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    Corruption,
    available_corruptions,
    corrupt,
    register_corruption,
)

BUILT_INS = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "contrast",
    "jpeg_compression",
]


def _images(channels: int = 3, n: int = 4, size: int = 24, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus texture, so blur and contrast have something to remove."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.1, 0.9, size)
    base = (ramp[None, :] + ramp[:, None]) / 2
    texture = 0.1 * torch.rand(n, channels, size, size, generator=g)
    return (base * 0.9 + texture).clamp(0, 1)


@pytest.fixture
def restore_registry():
    saved = dict(corruptions_module._REGISTRY)
    yield
    corruptions_module._REGISTRY.clear()
    corruptions_module._REGISTRY.update(saved)


def test_built_in_corruptions_are_registered_with_five_severities():
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert available_corruptions()[: len(BUILT_INS)] == BUILT_INS
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


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", BUILT_INS)
def test_every_severity_keeps_shape_dtype_and_range(name, channels):
    images = _images(channels)
    for severity in SEVERITIES:
        out = corrupt(images, name, severity, seed=1)
        assert out.shape == images.shape
        assert out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out, images)


@pytest.mark.parametrize("name", ["gaussian_noise", "gaussian_blur", "contrast"])
def test_float64_images_stay_float64(name):
    images = _images().double()
    assert corrupt(images, name, 3).dtype == torch.float64


@pytest.mark.parametrize("name", BUILT_INS)
def test_same_seed_gives_the_same_output(name):
    images = _images()
    assert torch.equal(corrupt(images, name, 3, seed=5), corrupt(images, name, 3, seed=5))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise"])
def test_different_seeds_give_different_noise(name):
    images = _images()
    assert not torch.equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


def test_corrupt_does_not_modify_its_input():
    images = _images()
    copy = images.clone()
    for name in BUILT_INS:
        corrupt(images, name, 5)
    assert torch.equal(images, copy)


@pytest.mark.parametrize(
    "name", ["gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast"]
)
def test_distance_to_the_clean_image_grows_with_severity(name):
    images = _images(n=8, size=32)
    distance = [(corrupt(images, name, s) - images).abs().mean().item() for s in SEVERITIES]
    assert distance == sorted(distance)
    assert distance[0] < distance[-1]


def test_jpeg_loses_more_at_lower_quality():
    images = _images(n=8, size=32)
    mild = (corrupt(images, "jpeg_compression", 1) - images).abs().mean()
    severe = (corrupt(images, "jpeg_compression", 5) - images).abs().mean()
    assert severe > mild


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
        ValueError, match=r"Unknown corruption 'fog'\. Expected one of \[.*'contrast'"
    ):
        corrupt(_images(), "fog", 1)


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
