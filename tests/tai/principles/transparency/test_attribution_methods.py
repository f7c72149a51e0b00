import doctest

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, Saliency
from torch import nn
from torch.nn import functional as F

from tai.principles.transparency.attribution_methods import (
    METHODS,
    AttributionMaps,
    attribute,
    default_target_layer,
)
from tai.principles.transparency.explain import integrated_gradients


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Tanh(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).double()


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)).double()


_TARGET = torch.tensor([0, 1, 2, 0])


class _OnePixel(nn.Module):
    """Two-class logits ``[a * x[c, h, w], 0]``."""

    def __init__(self, a: float = 5.0, where: tuple[int, int, int] = (0, 2, 3)) -> None:
        super().__init__()
        self.a, self.where = a, where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.where
        return torch.stack([self.a * x[:, c, h, w], torch.zeros_like(x[:, 0, 0, 0])], dim=1)


def test_methods_are_the_four_documented_ones():
    assert METHODS == ("integrated_gradients", "saliency", "gradcam", "occlusion")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_input_sized_maps_and_leaves_the_model_as_it_was(method):
    model, x = _tiny_cnn(), _images()
    model.train()
    model[5].eval()  # a submodule's own mode must survive
    running_mean = model[1].running_mean.clone()

    result = attribute(model, x, _TARGET, method=method, n_steps=8)

    channels = 1 if method == "gradcam" else x.shape[1]
    assert isinstance(result, AttributionMaps) and result.method == method
    assert result.maps.shape == (4, channels, 8, 8)
    assert torch.isfinite(result.maps).all() and not result.maps.requires_grad
    assert (result.convergence_delta is not None) == (method == "integrated_gradients")
    assert (result.target_layer is not None) == (method == "gradcam")
    assert model.training and not model[5].training
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(model[1].running_mean, running_mean)  # ran in eval mode


@pytest.mark.parametrize("method", METHODS)
def test_every_method_works_inside_inference_mode(method):
    model = _tiny_cnn()
    with torch.inference_mode():
        x = _images()
        result = attribute(model, x, _TARGET, method=method, n_steps=4)

    assert torch.isfinite(result.maps).all()


def test_integrated_gradients_is_the_project_implementation():
    model, x = _tiny_cnn(), _images()

    result = attribute(model, x, _TARGET, method="integrated_gradients", n_steps=16)

    reference = integrated_gradients(model, x, _TARGET, n_steps=16)
    torch.testing.assert_close(result.maps, reference.maps)
    torch.testing.assert_close(result.convergence_delta, reference.convergence_delta)


def test_saliency_is_the_absolute_input_gradient():
    weight = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0)).double()
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(weight.flatten(1))
    x = torch.rand(3, 1, 3, 3).double()

    result = attribute(model, x, torch.tensor([0, 1, 1]), method="saliency")

    expected = weight.abs()[[0, 1, 1]]
    torch.testing.assert_close(result.maps, expected)


def test_saliency_matches_captum_on_a_cnn():
    model, x = _tiny_cnn(), _images()

    result = attribute(model, x, _TARGET, method="saliency", batch_size=3)

    model.eval()
    reference = Saliency(model).attribute(x.clone().requires_grad_(), target=_TARGET, abs=True)
    torch.testing.assert_close(result.maps, reference)


def test_gradcam_defaults_to_the_last_conv_layer_and_matches_captum():
    model, x = _tiny_cnn(), _images()

    result = attribute(model, x, _TARGET, method="gradcam")

    assert default_target_layer(model) == "3" == result.target_layer
    model.eval()
    layer_map = LayerGradCam(model, model[3]).attribute(x, target=_TARGET, relu_attributions=True)
    expected = LayerAttribution.interpolate(layer_map, (8, 8), interpolate_mode="bilinear")
    torch.testing.assert_close(result.maps, expected)
    assert torch.all(result.maps >= 0)


def _gradcam_by_hand(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor):
    """Grad-CAM (Selvaraju et al., 2017) from its definition, with plain torch hooks: the
    layer's activations A (a forward hook), the gradient of each image's target logit
    with respect to them, weights = the spatial mean of that gradient per channel,
    ReLU(sum_k w_k A_k), upsampled bilinearly (align_corners=False) to the input."""
    kept = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: kept.update(a=output))
    try:
        logits = model(x)
    finally:
        handle.remove()
    activations = kept["a"]
    chosen = logits.gather(1, target[:, None]).sum()  # images are independent in eval mode
    (gradients,) = torch.autograd.grad(chosen, activations)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    return cam.detach(), F.interpolate(cam, size=x.shape[2:], mode="bilinear").detach()


@pytest.mark.parametrize("pooled", [False, True])
def test_gradcam_equals_an_independent_computation_with_hooks(pooled):
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),  # negative activations: the ReLU of the weighted sum matters
        nn.MaxPool2d(2) if pooled else nn.Identity(),  # a 4x4 map upsampled to 8x8
        nn.Conv2d(4, 3, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * (16 if pooled else 64), 3),
    ).double()
    model.eval()
    x = _images(6)
    target = torch.tensor([0, 1, 2, 2, 1, 0])

    result = attribute(model, x, target, method="gradcam", batch_size=4)

    assert result.target_layer == "3"  # the last Conv2d by default
    cam, expected = _gradcam_by_hand(model, model[3], x.clone(), target)
    assert cam.shape[2:] == ((4, 4) if pooled else (8, 8))
    assert (cam > 0).any() and (cam == 0).any()  # the ReLU clipped some cells, not all
    torch.testing.assert_close(result.maps, expected, rtol=1e-9, atol=1e-12)


def test_gradcam_on_a_named_layer_is_upsampled_to_the_input():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 3, 3, padding=1),
        nn.Flatten(),
        nn.Linear(48, 2),
    )
    x = torch.rand(2, 1, 8, 8)

    first = attribute(model, x, torch.tensor([0, 1]), method="gradcam", target_layer="0")
    last = attribute(model, x, torch.tensor([0, 1]), method="gradcam")

    assert first.target_layer == "0" and last.target_layer == "3"
    assert first.maps.shape == last.maps.shape == (2, 1, 8, 8)


def test_occlusion_of_a_one_pixel_model_is_the_logit_drop_at_that_pixel():
    model = _OnePixel(a=5.0, where=(0, 2, 3))
    x = torch.rand(3, 1, 6, 6) + 0.5

    result = attribute(
        model, x, torch.zeros(3, dtype=torch.long), method="occlusion", occlusion_window=1
    )

    expected = torch.zeros_like(x)
    expected[:, 0, 2, 3] = 5.0 * x[:, 0, 2, 3]
    torch.testing.assert_close(result.maps, expected)


def test_occlusion_default_window_covers_neighbouring_pixels():
    model = _OnePixel(a=5.0, where=(0, 14, 14))
    x = torch.ones(1, 1, 28, 28)

    result = attribute(model, x, torch.zeros(1, dtype=torch.long), method="occlusion")

    # 4x4 windows with stride 2: every pixel within the windows covering (14, 14) scores.
    support = torch.nonzero(result.maps[0, 0])
    assert support.min().item() >= 11 and support.max().item() <= 17
    assert result.maps[0, 0, 14, 14] == pytest.approx(5.0)


def test_unknown_method_lists_the_accepted_ones():
    with pytest.raises(
        ValueError,
        match="method must be one of integrated_gradients, saliency, gradcam, occlusion; "
        "got 'lime'",
    ):
        attribute(_tiny_cnn(), _images(), _TARGET, method="lime")


def test_unknown_target_layer_lists_module_names():
    with pytest.raises(
        ValueError, match=r"target_layer 'conv9' is not a module of the model; .*: 0, 1, 2, 3"
    ):
        attribute(_tiny_cnn(), _images(), _TARGET, method="gradcam", target_layer="conv9")


def test_gradcam_needs_a_conv_layer_or_an_explicit_one():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double()
    with pytest.raises(ValueError, match="model has no Conv2d layer; pass target_layer"):
        attribute(model, _images(), _TARGET, method="gradcam")


@pytest.mark.parametrize("window", [0, 9, (2, 9), (1, 2, 3)])
def test_occlusion_window_must_fit_the_image(window):
    with pytest.raises(ValueError, match=r"occlusion_window must be .* image size \(8, 8\)"):
        attribute(_tiny_cnn(), _images(), _TARGET, method="occlusion", occlusion_window=window)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_steps": 0}, "n_steps must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ],
)
def test_attribute_rejects_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        attribute(_tiny_cnn(), _images(), _TARGET, method="saliency", **kwargs)


def test_attribute_rejects_bad_targets_and_inputs():
    with pytest.raises(ValueError, match=r"target holds class 3, outside \[0, 3\)"):
        attribute(_tiny_cnn(), _images(), torch.tensor([0, 1, 2, 3]), method="saliency")
    with pytest.raises(ValueError, match=r"inputs must be a non-empty batch of images"):
        attribute(_tiny_cnn(), torch.rand(8, 8), _TARGET, method="saliency")


def test_docstring_examples_hold():
    import tai.principles.transparency.attribution_methods as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
