"""Fitting images of any size and mode to a model's input (shared by training and serving)."""

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from tai.data.model_input import covering_size, fit_images


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 53, 37), (3, 24, 24), (1, 3, 10, 11)])
def test_a_square_target_is_torchvisions_resize_of_the_shorter_side_then_centre_crop(shape):
    x = torch.rand(*shape)
    expected = F.center_crop(F.resize(x, [24], antialias=True), [24, 24]).clamp(0, 1)
    assert torch.equal(fit_images(x, in_channels=3, image_size=24), expected)


@pytest.mark.parametrize(
    ("size", "target", "covering"),
    [
        ((100, 200), (32, 32), (32, 64)),
        ((200, 100), (32, 32), (64, 32)),
        ((100, 400), (32, 64), (32, 128)),
        ((400, 100), (32, 64), (256, 64)),
        ((30, 60), (30, 60), (30, 60)),
        ((7, 9), (28, 28), (28, 36)),
    ],
)
def test_the_image_is_scaled_to_the_smallest_size_covering_the_target(size, target, covering):
    assert covering_size(*size, target) == covering
    out = fit_images(torch.rand(2, 1, *size), in_channels=1, image_size=target)
    assert out.shape == (2, 1, *target)
    assert 0 <= out.min() and out.max() <= 1


def test_a_non_square_target_keeps_the_centre():
    x = torch.zeros(1, 1, 40, 40)
    x[..., 10:30, :] = 1.0  # a horizontal band through the middle
    out = fit_images(x, in_channels=1, image_size=(20, 40))
    assert torch.equal(out, x[..., 10:30, :])


def test_the_mode_is_converted_to_the_models():
    rgb = torch.rand(2, 3, 8, 8)
    gray = fit_images(rgb, in_channels=1, image_size=8)
    assert torch.equal(gray, F.rgb_to_grayscale(rgb))
    assert torch.equal(fit_images(gray, in_channels=3, image_size=8), gray.expand(-1, 3, -1, -1))


def test_images_that_already_fit_are_returned_as_they_are():
    x = torch.rand(2, 3, 8, 6)
    assert fit_images(x, in_channels=3, image_size=(8, 6)) is x


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        (torch.rand(1, 4, 8, 8), {}, r"1 \(grayscale\) or 3 \(RGB\) channels, but got 4"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), {}, "float tensor of images"),
        (torch.rand(8, 8), {}, "float tensor of images"),
        (torch.rand(1, 3, 8, 8), {"in_channels": 2}, "in_channels must be 1"),
        (torch.rand(1, 3, 8, 8), {"image_size": 0}, "at least 1x1"),
    ],
)
def test_bad_images_or_targets_are_refused(images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_images(images, **{"in_channels": 3, "image_size": 8, **kwargs})
