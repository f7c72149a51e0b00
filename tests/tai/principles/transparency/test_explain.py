import math

import matplotlib.colors
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from matplotlib.figure import Figure
from torch import nn

from tai.principles.transparency.explain import DeletionResult, deletion_auc, integrated_gradients
from tai.report.figures.explanations import prototype_figure


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    # Smooth activations keep the quadrature error of IG small; BatchNorm/Dropout make
    # eval mode matter.
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).double()


def _images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1)).double()


class _OnePixel(nn.Module):
    """Two-class logits ``[a * x[c, h, w], 0]``: only one pixel matters."""

    def __init__(self, a: float = 5.0, where: tuple[int, int, int] = (0, 0, 0)) -> None:
        super().__init__()
        self.a, self.where = a, where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.where
        return torch.stack([self.a * x[:, c, h, w], torch.zeros_like(x[:, 0, 0, 0])], dim=1)


class _Linear(nn.Module):
    """Two-class logits ``[sum(w * x), 0]`` on 1x2x2 images."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x * self.weight).flatten(1).sum(dim=1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


# --- integrated gradients -------------------------------------------------------------


def test_ig_is_complete_sum_equals_logit_difference():
    model, x = _tiny_cnn(), _images()
    target = torch.tensor([0, 1, 2, 0, 1])

    result = integrated_gradients(model, x, target, n_steps=64)

    model.eval()
    with torch.no_grad():
        gain = model(x) - model(torch.zeros_like(x))
    expected = gain[torch.arange(5), target]
    assert result.maps.shape == x.shape
    assert result.convergence_delta.shape == (5,)
    torch.testing.assert_close(result.maps.sum(dim=(1, 2, 3)), expected, atol=1e-4, rtol=0)
    assert result.convergence_delta.abs().max() < 1e-4


def test_ig_matches_captum_called_directly():
    model, x = _tiny_cnn(), _images()
    target = torch.tensor([2, 1, 0, 2, 1])

    ours = integrated_gradients(model, x, target, n_steps=16, baseline=0.5, internal_batch_size=40)

    model.eval()
    maps, delta = IntegratedGradients(model).attribute(
        x, baselines=0.5, target=target, n_steps=16, return_convergence_delta=True
    )
    torch.testing.assert_close(ours.maps, maps)
    torch.testing.assert_close(ours.convergence_delta, delta)


@pytest.mark.parametrize("internal_batch_size", [None, 1, 7, 1000])
def test_ig_does_not_depend_on_internal_batch_size(internal_batch_size):
    model, x = _tiny_cnn(), _images()
    target = torch.tensor([0, 1, 2, 0, 1])
    reference = integrated_gradients(model, x, target, n_steps=8, internal_batch_size=None)

    result = integrated_gradients(
        model, x, target, n_steps=8, internal_batch_size=internal_batch_size
    )

    torch.testing.assert_close(result.maps, reference.maps)


def test_ig_restores_train_mode_and_leaves_no_parameter_grads():
    model, x = _tiny_cnn(), _images()
    model.train()
    model[3].eval()  # a submodule's own mode must survive too
    running_mean = model[1].running_mean.clone()

    integrated_gradients(model, x, torch.zeros(5, dtype=torch.long), n_steps=4)

    assert model.training and model[1].training and not model[3].training
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(model[1].running_mean, running_mean)  # ran in eval mode


def test_ig_works_inside_inference_mode():
    model = _tiny_cnn()
    with torch.inference_mode():
        x = _images()
        result = integrated_gradients(model, x, torch.zeros(5, dtype=torch.long), n_steps=4)

    assert torch.isfinite(result.maps).all()


def test_ig_rejects_target_outside_model_classes():
    with pytest.raises(ValueError, match=r"target holds class 3, outside \[0, 3\)"):
        integrated_gradients(_tiny_cnn(), _images(), torch.tensor([0, 1, 2, 3, 0]))


def test_ig_rejects_target_of_wrong_length():
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(5,\)"):
        integrated_gradients(_tiny_cnn(), _images(), torch.tensor([0, 1]))


def test_ig_rejects_float_target():
    with pytest.raises(ValueError, match="target must hold integer class indices"):
        integrated_gradients(_tiny_cnn(), _images(), torch.zeros(5))


def test_ig_rejects_non_image_inputs():
    with pytest.raises(ValueError, match=r"inputs must be a non-empty batch of images"):
        integrated_gradients(_tiny_cnn(), torch.rand(3, 8, 8), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_steps": 0}, "n_steps must be at least 1, got 0"),
        ({"internal_batch_size": 0}, "internal_batch_size must be at least 1, got 0"),
    ],
)
def test_ig_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        integrated_gradients(_tiny_cnn(), _images(), torch.zeros(5, dtype=torch.long), **kwargs)


def test_ig_rejects_model_without_class_logits():
    model = nn.Sequential(nn.Flatten(0)).double()
    with pytest.raises(ValueError, match=r"model must return logits of shape \(N, num_classes\)"):
        integrated_gradients(model, _images(), torch.zeros(5, dtype=torch.long))


# --- deletion AUC ---------------------------------------------------------------------


def test_deletion_auc_of_linear_model_matches_hand_computation():
    weight = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
    x = torch.ones(1, 1, 2, 2)

    result = deletion_auc(_Linear(weight), x, weight * x, torch.tensor([0]), steps=4)

    # Removing pixels in order 4, 3, 2, 1 leaves logits 10, 6, 3, 1, 0.
    sigmoid = [1 / (1 + math.exp(-z)) for z in (10, 6, 3, 1, 0)]
    auc = sum((a + b) / 2 * 0.25 for a, b in zip(sigmoid, sigmoid[1:], strict=False))
    torch.testing.assert_close(result.curves, torch.tensor([sigmoid]))
    torch.testing.assert_close(result.auc, torch.tensor([auc]))
    assert result.mean == pytest.approx(auc)


def test_deletion_ranks_by_channel_sum_and_uses_the_baseline():
    # Channel 0 says pixel 0 first, but the channel sum ranks pixel 1 first.
    weight = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    attributions = torch.tensor([[[[2.0, 1.0]], [[-2.0, 5.0]]]])
    model = _Linear(weight)
    x = torch.ones(1, 2, 1, 2)

    result = deletion_auc(model, x, attributions, torch.tensor([0]), steps=2, baseline=-1.0)

    sig = [1 / (1 + math.exp(-z)) for z in (1.0, 1.0, -1.0)]
    torch.testing.assert_close(result.curves, torch.tensor([sig]))


def test_deletion_accepts_channel_summed_maps():
    weight = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
    x = torch.ones(2, 1, 2, 2)
    full = deletion_auc(_Linear(weight), x, (weight * x), torch.tensor([0, 1]), steps=4)

    summed = deletion_auc(_Linear(weight), x, (weight * x)[:, 0], torch.tensor([0, 1]), steps=4)

    torch.testing.assert_close(summed.auc, full.auc)


def test_focused_attribution_has_lower_deletion_auc_than_random():
    model = _OnePixel(a=5.0, where=(1, 3, 5))
    x = torch.rand(16, 2, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    target = torch.zeros(16, dtype=torch.long)
    focused = torch.zeros_like(x)
    focused[:, 1, 3, 5] = 1.0
    random_maps = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))

    good = deletion_auc(model, x, focused, target, steps=16)
    bad = deletion_auc(model, x, random_maps, target, steps=16)

    assert torch.all(good.curves[:, 1:] == 0.5)  # the pixel goes in the first step
    assert good.mean < 0.55 < 0.65 < bad.mean


def test_ig_on_one_pixel_model_is_faithful_under_deletion():
    model = _OnePixel(a=5.0, where=(0, 2, 2)).double()
    x = _images(4) + 0.5
    target = torch.zeros(4, dtype=torch.long)

    maps = integrated_gradients(model, x, target, n_steps=8).maps

    assert torch.count_nonzero(maps.sum(dim=1)) == 4  # one pixel per image
    result = deletion_auc(model, x, maps, target, steps=8)
    assert torch.all(result.curves[:, 1:] == 0.5)


def test_deletion_batch_size_does_not_change_result():
    model = _OnePixel()
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    maps = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 0])

    whole = deletion_auc(model, x, maps, target, steps=5, batch_size=1000)
    small = deletion_auc(model, x, maps, target, steps=5, batch_size=4)

    torch.testing.assert_close(small.curves, whole.curves)


def test_deletion_auc_equals_the_published_definition_computed_image_by_image():
    """Petsiuk et al.: delete the round(k / steps * H * W) most attributed pixels (summed
    over channels, ties by position), record the target's softmax probability, and take
    the trapezoid area over the removed fraction; recomputed here one image at a time."""
    model, x = _tiny_cnn(), _images()
    maps = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    target = torch.tensor([0, 1, 2, 0, 1])
    steps = 7

    result = deletion_auc(model, x, maps, target, steps=steps)

    assert isinstance(result, DeletionResult)
    assert result.curves.shape == (5, 8)
    n, _, height, width = x.shape
    model.eval()
    for i in range(n):
        order = np.argsort(-maps[i].sum(0).flatten().numpy(), kind="stable")
        curve = []
        for k in range(steps + 1):
            removed = int(round(k / steps * height * width))
            image = x[i].clone().view(x.shape[1], -1)
            image[:, order[:removed]] = 0.0
            with torch.no_grad():
                logits = model(image.view(1, *x.shape[1:]))
            curve.append(torch.softmax(logits, 1)[0, target[i]].item())
        fractions = [int(round(k / steps * height * width)) / (height * width) for k in range(8)]
        np.testing.assert_allclose(result.curves[i].numpy(), curve, atol=1e-6)
        assert result.auc[i].item() == pytest.approx(np.trapezoid(curve, fractions), abs=1e-6)


def test_deletion_rejects_attributions_of_other_shape():
    with pytest.raises(ValueError, match=r"attributions must have shape \(N, C, H, W\)"):
        deletion_auc(_OnePixel(), torch.rand(2, 1, 4, 4), torch.rand(2, 4, 5), torch.zeros(2))


def test_deletion_rejects_target_outside_model_classes():
    with pytest.raises(ValueError, match=r"target holds class -1, outside \[0, 2\)"):
        x = torch.rand(2, 1, 4, 4)
        deletion_auc(_OnePixel(), x, x, torch.tensor([0, -1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ],
)
def test_deletion_rejects_invalid_arguments(kwargs, message):
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=message):
        deletion_auc(_OnePixel(), x, x, torch.zeros(2, dtype=torch.long), **kwargs)


# --- figure ---------------------------------------------------------------------------


def test_prototype_figure_puts_image_above_zero_centred_heat_map():
    images = torch.rand(3, 3, 6, 6)
    attributions = torch.randn(3, 3, 6, 6)

    fig = prototype_figure(images, attributions, [0, 1, 2], titles=["a", "b", "c"])

    assert isinstance(fig, Figure)
    mosaic = fig.axes[0].images[0].get_array()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["a", "b", "c", "prototype", "attribution"]
    for j in range(3):
        left = j * 7  # 6-pixel cells, one pixel apart
        np.testing.assert_allclose(mosaic[:6, left : left + 6], images[j].permute(1, 2, 0))
        heat = attributions[j].sum(dim=0)
        # white at 0, the colormap's ends at +-max|heat| of this map
        expected = matplotlib.colormaps["RdBu_r"]((0.5 + 0.5 * heat / heat.abs().max()).numpy())
        np.testing.assert_allclose(mosaic[7:13, left : left + 6], expected[..., :3], atol=1e-12)
    assert fig.axes[1].get_ylabel() == "map / max |map|"  # the one colour bar
    fig.canvas.draw()  # renders on Agg without a display


def test_prototype_figure_defaults_titles_to_class_labels_and_scales_images_outside_0_1():
    images = torch.rand(2, 1, 5, 5) * 4 - 2
    fig = prototype_figure(images, torch.zeros(2, 5, 5), [7, 9])

    assert [t.get_text() for t in fig.axes[0].texts][:2] == ["class 7", "class 9"]
    mosaic = fig.axes[0].images[0].get_array()
    first = images[0, 0]
    scaled = (first - first.min()) / (first.max() - first.min())  # min-max per image
    np.testing.assert_allclose(mosaic[:5, :5, 0], scaled.numpy(), atol=1e-6)
    white = np.array(matplotlib.colormaps["RdBu_r"](0.5)[:3])
    np.testing.assert_allclose(mosaic[6:11, :5], np.broadcast_to(white, (5, 5, 3)))  # zero map


@pytest.mark.parametrize(
    ("images", "attributions", "labels", "titles", "message"),
    [
        (torch.rand(2, 2, 4, 4), torch.rand(2, 2, 4, 4), [0, 1], None, "with C 1 or 3"),
        (torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 5), [0, 1], None, "attributions must"),
        (torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), [0], None, "labels must have one entry"),
        (torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), [0, 1], ["a"], "titles must have one"),
    ],
)
def test_prototype_figure_rejects_mismatched_inputs(images, attributions, labels, titles, message):
    with pytest.raises(ValueError, match=message):
        prototype_figure(images, attributions, labels, titles=titles)
