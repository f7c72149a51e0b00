import doctest
import math

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from tai.principles.transparency.attribution_methods import attribute
from tai.principles.transparency.explain import deletion_auc
from tai.principles.transparency.explanation_quality import (
    InsertionResult,
    SanityResult,
    attribution_similarity,
    infidelity_score,
    insertion_auc,
    randomisation_sanity_check,
    sensitivity_score,
)
from tai.report.figures.explanations import explanation_sheets_figure


class _Linear(nn.Module):
    """Two-class logits ``[sum(w * x), 0]``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x * self.weight).flatten(1).sum(dim=1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


class _Quadratic(nn.Module):
    """Two-class logits ``[scale * sum(x^2) / 2, 0]``: the input gradient is ``scale * x``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.scale * x.square().flatten(1).sum(dim=1) / 2
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


class _OnePixel(nn.Module):
    def __init__(self, a: float = 5.0, where: tuple[int, int, int] = (0, 1, 2)) -> None:
        super().__init__()
        self.a, self.where = a, where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.where
        return torch.stack([self.a * x[:, c, h, w], torch.zeros_like(x[:, 0, 0, 0])], dim=1)


def _tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(3),
        nn.Flatten(),
        nn.Linear(4 * 9, 3),
    ).double()


def _images(n: int = 4, size: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1)).double()


_TARGET = torch.tensor([0, 1, 2, 0])


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# --- insertion AUC ----------------------------------------------------------------------


def test_insertion_auc_of_linear_model_matches_hand_computation():
    weight = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
    x = torch.ones(1, 1, 2, 2)

    result = insertion_auc(_Linear(weight), x, weight * x, torch.tensor([0]), steps=4, baseline=0.0)

    # Inserting pixels in order 4, 3, 2, 1 gives logits 0, 4, 7, 9, 10.
    curve = [_sigmoid(z) for z in (0, 4, 7, 9, 10)]
    auc = sum((a + b) / 2 * 0.25 for a, b in zip(curve, curve[1:], strict=False))
    assert isinstance(result, InsertionResult)
    torch.testing.assert_close(result.curves, torch.tensor([curve]))
    assert result.mean == pytest.approx(auc)


def test_insertion_starts_from_petsiuk_blur():
    model = _tiny_cnn()
    x = _images(size=12)
    maps = torch.rand(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)

    result = insertion_auc(model, x, maps, _TARGET, steps=4)

    # Gaussian of sigma 5 truncated at radius 5 (side 11), borders replicated.
    blurred = np.stack(
        [gaussian_filter(img[0], sigma=5, mode="nearest", truncate=1.0) for img in x.numpy()]
    )[:, None]
    with torch.no_grad():
        start = torch.softmax(model(torch.from_numpy(blurred)), dim=1)[torch.arange(4), _TARGET]
        end = torch.softmax(model(x), dim=1)[torch.arange(4), _TARGET]
    torch.testing.assert_close(result.curves[:, 0], start.float())
    torch.testing.assert_close(result.curves[:, -1], end.float())


def test_focused_attribution_has_higher_insertion_auc_than_random():
    model = _OnePixel(a=5.0, where=(1, 3, 5))
    x = torch.rand(16, 2, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    target = torch.zeros(16, dtype=torch.long)
    focused = torch.zeros_like(x)
    focused[:, 1, 3, 5] = 1.0
    random_maps = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))

    good = insertion_auc(model, x, focused, target, steps=16, baseline=0.0)
    bad = insertion_auc(model, x, random_maps, target, steps=16, baseline=0.0)

    assert torch.all(good.curves[:, 0] == 0.5) and torch.all(good.curves[:, 1:] > 0.9)
    assert good.mean > 0.9 > 0.8 > bad.mean


def test_insertion_batch_size_does_not_change_result():
    model, x = _tiny_cnn(), _images()
    maps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)

    whole = insertion_auc(model, x, maps, _TARGET, steps=6, batch_size=1000)
    small = insertion_auc(model, x, maps, _TARGET, steps=6, batch_size=5)

    torch.testing.assert_close(small.curves, whole.curves)


def test_insertion_and_deletion_match_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    model = _tiny_cnn().float().eval()
    x = _images(5).float()
    target = torch.tensor([0, 1, 2, 0, 1])
    maps = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    flipping = quantus.PixelFlipping(
        features_in_step=4,
        perturb_baseline=0.0,
        normalise=False,
        abs=False,
        disable_warnings=True,
    )

    def quantus_curves(a):
        return np.array(
            flipping(
                model=model,
                x_batch=x.numpy(),
                y_batch=target.numpy(),
                a_batch=a.numpy(),
                device="cpu",
                softmax=True,
                channel_first=True,
            )
        )

    # 36 pixels, 4 per step: 9 steps. Flipping the least-attributed first (order of -maps)
    # leaves exactly the pixels insertion has put back, so its curve is insertion's reversed.
    insertion = insertion_auc(model, x, maps, target, steps=9, baseline=0.0).curves
    deletion = deletion_auc(model, x, maps, target, steps=9).curves
    np.testing.assert_allclose(quantus_curves(-maps)[:, ::-1], insertion[:, :-1], atol=1e-6)
    np.testing.assert_allclose(quantus_curves(maps), deletion[:, 1:], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": "black"}, "baseline must be 'blur' or a number, got 'black'"),
        ({"baseline": None}, "baseline must be 'blur' or a number, got None"),
        ({"steps": 0}, "steps must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ],
)
def test_insertion_rejects_bad_arguments(kwargs, message):
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=message):
        insertion_auc(_OnePixel(), x, x, torch.zeros(2, dtype=torch.long), **kwargs)


def test_insertion_rejects_attributions_of_other_shape():
    with pytest.raises(ValueError, match=r"attributions must have shape \(N, C, H, W\)"):
        insertion_auc(
            _OnePixel(),
            torch.rand(2, 1, 4, 4),
            torch.rand(2, 4, 5),
            torch.zeros(2, dtype=torch.long),
        )


# --- infidelity --------------------------------------------------------------------------


def test_gradient_times_input_of_a_linear_model_has_zero_infidelity():
    weight = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)).double()
    x = _images(3, 3).repeat(1, 2, 1, 1)
    model = _Linear(weight)

    ig = attribute(model, x, torch.zeros(3, dtype=torch.long), method="integrated_gradients")
    multiplicative = infidelity_score(model, x, ig.maps, torch.zeros(3, dtype=torch.long))
    additive = infidelity_score(
        model,
        x,
        weight.expand_as(x),
        torch.zeros(3, dtype=torch.long),
        multiply_by_inputs=False,
        normalize=False,
    )

    torch.testing.assert_close(ig.maps, weight * x)  # IG of a linear model: w * x
    assert multiplicative.scores.shape == (3,)
    assert float(multiplicative.scores.max()) < 1e-12  # rounding of beta^2 a - 2 beta b + c
    assert float(additive.scores.max()) < 1e-12


def test_infidelity_matches_its_definition_on_a_nonlinear_model():
    model, x = _tiny_cnn(), _images()
    maps = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)

    result = infidelity_score(
        model, x, maps, _TARGET, n_perturb=6, normalize=False, seed=3, noise_std=0.2
    )

    eps = (
        torch.randn((4 * 6, 1, 6, 6), generator=torch.Generator().manual_seed(3), dtype=x.dtype)
        * 0.2
    )
    repeated = x.repeat_interleave(6, dim=0)
    target = _TARGET.repeat_interleave(6)
    with torch.no_grad():
        logits = model(repeated)[torch.arange(24), target]
        perturbed = model(repeated - eps * repeated)[torch.arange(24), target]
    predicted = (eps * maps.repeat_interleave(6, dim=0)).flatten(1).sum(dim=1)
    expected = (predicted - (logits - perturbed)).square().view(4, 6).mean(dim=1)
    torch.testing.assert_close(result.scores, expected)


def test_normalised_infidelity_ignores_the_scale_of_the_maps_and_ranks_maps():
    model, x = _tiny_cnn(), _images()
    ig = attribute(model, x, _TARGET, method="integrated_gradients").maps
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=x.dtype)

    once = infidelity_score(model, x, ig, _TARGET)
    scaled = infidelity_score(model, x, 40.0 * ig, _TARGET)
    random_maps = infidelity_score(model, x, noise, _TARGET)

    torch.testing.assert_close(scaled.scores, once.scores)
    assert once.mean < random_maps.mean


def test_infidelity_broadcasts_single_channel_maps():
    weight = torch.ones(1, 2, 3, 3).double()
    x = _images(2, 3).repeat(1, 2, 1, 1)
    per_pixel = (weight * x).sum(dim=1, keepdim=True) / 2  # same value for both channels

    result = infidelity_score(
        _Linear(weight), x, per_pixel, torch.zeros(2, dtype=torch.long), multiply_by_inputs=False
    )

    assert result.scores.shape == (2,) and torch.isfinite(result.scores).all()


@pytest.mark.parametrize(
    ("maps", "kwargs", "message"),
    [
        (torch.rand(2, 1, 4, 4), {"n_perturb": 0}, "n_perturb must be at least 1, got 0"),
        (torch.rand(2, 1, 4, 4), {"noise_std": 0.0}, "noise_std must be positive, got 0.0"),
        (torch.rand(2, 3, 4, 4), {}, r"attributions must have shape \(N, C, H, W\)"),
    ],
)
def test_infidelity_rejects_bad_input(maps, kwargs, message):
    with pytest.raises(ValueError, match=message):
        infidelity_score(
            _OnePixel(), torch.rand(2, 1, 4, 4), maps, torch.zeros(2, dtype=torch.long), **kwargs
        )


# --- sensitivity -------------------------------------------------------------------------


def test_saliency_of_a_linear_model_has_zero_sensitivity():
    weight = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)).double()
    x = _images(3, 4)

    result = sensitivity_score(
        _Linear(weight), x, torch.zeros(3, dtype=torch.long), method="saliency"
    )

    assert result.method == "saliency"
    torch.testing.assert_close(result.scores, torch.zeros(3, dtype=torch.float64))


def test_sensitivity_of_quadratic_model_is_largest_relative_perturbation():
    # Saliency of sum(x^2)/2 is |x|; for x > radius it moves exactly by the perturbation d,
    # so the score is max_k ||d_k|| / ||x||.
    x = _images(3, 4) + 0.5
    result = sensitivity_score(
        _Quadratic(),
        x,
        torch.zeros(3, dtype=torch.long),
        method="saliency",
        n_perturb=5,
        radius=0.05,
        seed=2,
    )

    uniform = torch.rand((15, 1, 4, 4), generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    norms = ((2 * uniform - 1) * 0.05).flatten(1).norm(dim=1).view(3, 5)
    expected = norms.max(dim=1).values / x.flatten(1).norm(dim=1)
    torch.testing.assert_close(result.scores, expected)


def test_sensitivity_runs_for_gradcam_and_is_reproducible():
    model, x = _tiny_cnn(), _images()

    first = sensitivity_score(model, x, _TARGET, method="gradcam", n_perturb=3)
    second = sensitivity_score(model, x, _TARGET, method="gradcam", n_perturb=3)

    assert first.scores.shape == (4,) and torch.all(first.scores >= 0)
    torch.testing.assert_close(first.scores, second.scores)


def test_sensitivity_with_the_inputs_maps_given_does_not_explain_them_again():
    model, x = _tiny_cnn(), _images(4, 8)
    maps = attribute(model, x, _TARGET, method="integrated_gradients", n_steps=8).maps
    options = {"method": "integrated_gradients", "n_perturb": 3, "n_steps": 8, "seed": 4}
    computed = sensitivity_score(model, x, _TARGET, **options)
    given = sensitivity_score(model, x, _TARGET, maps=maps, **options)
    torch.testing.assert_close(given.scores, computed.scores, rtol=1e-6, atol=1e-9)
    # other maps change the scores: the given ones are really used
    other = sensitivity_score(model, x, _TARGET, maps=maps.flip(0), **options)
    assert not torch.allclose(other.scores, computed.scores)
    with pytest.raises(ValueError, match=r"maps must have the inputs' shape \(4, 1, 8, 8\)"):
        sensitivity_score(model, x, _TARGET, maps=maps[:3], **options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "lime"}, "method must be one of integrated_gradients, saliency"),
        ({"method": "saliency", "radius": 0.0}, "radius must be positive, got 0.0"),
        ({"method": "saliency", "n_perturb": 0}, "n_perturb must be at least 1, got 0"),
        ({"method": "gradcam", "target_layer": "nope"}, "target_layer 'nope' is not a module"),
    ],
)
def test_sensitivity_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sensitivity_score(_tiny_cnn(), _images(), _TARGET, **kwargs)


# --- randomisation sanity check ----------------------------------------------------------


def test_maps_that_ignore_the_weights_are_flagged():
    # Saliency of scale * sum(x^2) / 2 is |scale| * |x|: its ranking never depends on scale.
    model = _Quadratic(scale=2.0)
    x = _images(3, 5)

    result = randomisation_sanity_check(
        model, x, torch.zeros(3, dtype=torch.long), method="saliency"
    )

    assert isinstance(result, SanityResult)
    torch.testing.assert_close(result.correlations, torch.ones(3, dtype=torch.float64))
    assert result.flagged and not result.passed
    assert result.layer_correlations == (("all", 1.0),)
    assert model.scale.item() == 2.0  # the original is untouched


def test_maps_of_a_weight_sensitive_model_pass_full_randomisation():
    model, x = _tiny_cnn(), _images(4, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    result = randomisation_sanity_check(model, x, _TARGET, method="saliency", seed=1)

    assert result.passed and result.mean_correlation < 0.5
    assert result.correlations.shape == (4,)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_cascade_randomises_layers_from_the_output_down():
    model, x = _tiny_cnn(), _images(4, 8)

    result = randomisation_sanity_check(model, x, _TARGET, method="gradcam", mode="cascade", seed=1)

    assert [name for name, _ in result.layer_correlations] == ["6", "2", "0"]
    assert result.layer_correlations[-1][1] == pytest.approx(result.mean_correlation)
    assert result.mode == "cascade" and result.method == "gradcam"


def test_the_trained_models_maps_given_are_not_computed_again():
    model, x = _tiny_cnn(), _images(4, 8)
    maps = attribute(model, x, _TARGET, method="saliency").maps
    computed = randomisation_sanity_check(model, x, _TARGET, method="saliency", seed=1)
    given = randomisation_sanity_check(
        model, x, _TARGET, method="saliency", seed=1, trained_maps=maps
    )
    torch.testing.assert_close(given.correlations, computed.correlations)
    # maps of other images than these change the result: they are really used
    other = randomisation_sanity_check(
        model, x, _TARGET, method="saliency", seed=1, trained_maps=maps.flip(0)
    )
    assert not torch.allclose(other.correlations, computed.correlations)
    with pytest.raises(ValueError, match="trained_maps must hold one map per input \\(4\\), got 3"):
        randomisation_sanity_check(model, x, _TARGET, method="saliency", trained_maps=maps[:3])


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        (_tiny_cnn(), {"mode": "layer"}, r"mode must be one of \('full', 'cascade'\)"),
        (_tiny_cnn(), {"threshold": 1.5}, r"threshold must be in \(-1, 1\], got 1.5"),
        (_OnePixel(), {}, "model has no parameters to randomise"),
    ],
)
def test_sanity_check_rejects_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        randomisation_sanity_check(
            model, _images(2), torch.zeros(2, dtype=torch.long), method="saliency", **kwargs
        )


# --- similarity --------------------------------------------------------------------------


def test_similarity_of_identical_maps_is_one_and_ignores_sign_and_scale():
    maps = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))

    result = attribution_similarity(maps, -3.0 * maps)

    torch.testing.assert_close(result.spearman, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(result.ssim, torch.ones(3, dtype=torch.float64))
    assert result.mean_spearman == pytest.approx(1.0) and result.mean_ssim == pytest.approx(1.0)


def test_similarity_matches_scipy_and_skimage():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 9, 9, generator=g)
    b = a + 0.8 * torch.randn(4, 9, 9, generator=g)

    result = attribution_similarity(a, b)

    heat_a, heat_b = a.abs().double().numpy(), b.abs().double().numpy()
    for i in range(4):
        assert result.spearman[i] == pytest.approx(
            spearmanr(heat_a[i].ravel(), heat_b[i].ravel()).statistic
        )
        assert result.ssim[i] == pytest.approx(
            structural_similarity(
                heat_a[i] / heat_a[i].max(), heat_b[i] / heat_b[i].max(), data_range=1.0, win_size=7
            )
        )
    assert 0 < result.mean_spearman < 1


def test_similarity_of_constant_maps_follows_the_documented_convention():
    zeros, ramp = torch.zeros(1, 1, 4, 4), torch.arange(16.0).reshape(1, 1, 4, 4)

    assert attribution_similarity(zeros, zeros).spearman.tolist() == [1.0]
    assert attribution_similarity(zeros, ramp).spearman.tolist() == [0.0]


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 5), "must be non-empty maps of the same"),
        (torch.rand(2, 4), torch.rand(2, 4), "must be non-empty maps of the same"),
        (torch.rand(2, 1, 2, 4), torch.rand(2, 1, 2, 4), r"at least 3x3 for SSIM, got \(2, 4\)"),
    ],
)
def test_similarity_rejects_bad_shapes(a, b, message):
    with pytest.raises(ValueError, match=message):
        attribution_similarity(a, b)


# --- explanation sheet -------------------------------------------------------------------


def _sheet_cell(fig: Figure, row: int, column: int, size: int) -> np.ndarray:
    """The RGB cell of the mosaic at ``(row, column)`` (cells of ``size`` pixels)."""
    array = fig.axes[0].images[0].get_array()
    gap = max(1, size // 14)
    top, left = row * (size + gap), column * (size + gap)
    return np.asarray(array[top : top + size, left : left + size])


def test_explanation_sheets_draw_each_image_its_maps_and_its_class_mean_in_a_row():
    images = torch.rand(2, 1, 6, 6)
    maps = {"saliency": torch.randn(2, 1, 6, 6), "gradcam": torch.randn(2, 6, 6)}
    means = torch.randn(2, 1, 6, 6)

    fig = explanation_sheets_figure(images, maps, means, ["digit 7", "digit 1"])

    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["image", "saliency", "gradcam", "class mean", "digit 7", "digit 1"]
    for k in range(2):
        # the image in grey, each map on the diverging colormap scaled to its own max |.|
        np.testing.assert_allclose(
            _sheet_cell(fig, k, 0, 6), images[k, 0, ..., None].expand(6, 6, 3)
        )
        for j, heat in enumerate([maps["saliency"][k, 0], maps["gradcam"][k], means[k, 0]]):
            limit = heat.abs().max()
            expected = colormaps["RdBu_r"]((0.5 + 0.5 * heat / limit).numpy())[..., :3]
            np.testing.assert_allclose(_sheet_cell(fig, k, 1 + j, 6), expected, atol=1e-12)
    assert fig.axes[1].get_ylabel() == "map / max |map|"
    fig.canvas.draw()


def test_explanation_sheets_without_class_means():
    fig = explanation_sheets_figure(
        torch.rand(1, 3, 5, 5), {"ig": torch.rand(1, 3, 5, 5)}, None, ["x"]
    )
    assert [t.get_text() for t in fig.axes[0].texts] == ["image", "ig", "x"]


@pytest.mark.parametrize(("methods", "rows"), [(1, 1), (3, 10)])
def test_explanation_sheets_keep_every_label_inside_the_figure(methods, rows):
    # fixed margins, no layout solver: the row titles and the colour bar must still fit
    maps = {f"method {i}": torch.randn(rows, 1, 28, 28) * 3 for i in range(methods)}
    fig = explanation_sheets_figure(
        torch.rand(rows, 3, 28, 28), maps, torch.randn(rows, 1, 28, 28), ["class 10"] * rows
    )
    renderer = fig.canvas.get_renderer()
    figure_box = fig.bbox
    for artist in [*fig.axes, *fig.axes[0].texts]:
        box = artist.get_tightbbox(renderer) if hasattr(artist, "get_tightbbox") else None
        box = box if box is not None else artist.get_window_extent(renderer)
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, artist
        assert figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1, artist


def test_explanation_sheets_reject_bad_input():
    a = {"a": torch.rand(1, 6, 6)}
    with pytest.raises(ValueError, match=r"images must be a non-empty \(N, C, H, W\) batch"):
        explanation_sheets_figure(torch.rand(6, 6), a, None, ["t"])
    with pytest.raises(ValueError, match="maps is empty"):
        explanation_sheets_figure(torch.rand(1, 1, 6, 6), {}, None, ["t"])
    with pytest.raises(ValueError, match=r"map 'class mean' must have shape .* \(6, 6\)"):
        explanation_sheets_figure(torch.rand(1, 1, 6, 6), a, torch.rand(1, 5, 5), ["t"])
    with pytest.raises(ValueError, match=r"map 'a' must hold one map per image \(2\), got 1"):
        explanation_sheets_figure(torch.rand(2, 1, 6, 6), a, None, ["t", "u"])
    with pytest.raises(ValueError, match=r"titles must have one entry per image \(1\), got 2"):
        explanation_sheets_figure(torch.rand(1, 1, 6, 6), a, None, ["t", "u"])


def test_docstring_examples_hold():
    import tai.principles.transparency.explanation_quality as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_a_sheet_png_without_cropping_keeps_the_figure_size():
    import io

    from PIL import Image

    from tai.report.figures.canvas import figure_png

    fig = explanation_sheets_figure(torch.rand(1, 1, 8, 8), {"a": torch.rand(1, 8, 8)}, None, ["t"])
    width, height = fig.get_size_inches() * 50
    loose = Image.open(io.BytesIO(figure_png(fig, dpi=50, tight=False)))
    cropped = Image.open(io.BytesIO(figure_png(fig, dpi=50)))

    assert loose.size == (round(width), round(height))
    assert cropped.size != loose.size  # the default crops to what is drawn
