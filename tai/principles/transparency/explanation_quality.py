"""How good an attribution map is: faithfulness, robustness, sanity and stability.

- Insertion AUC (Petsiuk et al., "RISE", BMVC 2018): start from a version of the image
  with no information and put back the most-attributed pixels first; a faithful map makes
  the target probability rise fast, so a *higher* area is better. The start image is, as in
  the paper, the image blurred with a Gaussian of side 11 and sigma 5 (``baseline="blur"``:
  it removes the detail while keeping the image statistics, so the model is not fed an
  out-of-distribution black square), or a constant (``baseline=0.0``). Deletion, its twin,
  is :func:`tai.principles.transparency.explain.deletion_auc`.
- Infidelity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
  2019) through captum: ``E_I[(I . phi - (f(x) - f(x - I)))^2]``, the mean squared error of
  the attribution ``phi`` as a predictor of how the target logit changes under random
  perturbations ``I``; lower is better.
- Max-sensitivity (same paper) through captum: the largest relative change of the map,
  ``max ||phi(x + d) - phi(x)|| / ||phi(x)||`` over ``d`` uniform in an L-infinity ball;
  lower is better.
- Model randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018): a map that hardly changes when the model's weights are re-initialised does not
  explain the model. Passes when the mean Spearman correlation between the maps of the
  trained and the randomised model is below a threshold.
- Similarity of two sets of maps (Spearman rank correlation and SSIM per example), e.g.
  champion and challenger attributions on the same prototypes.

Maps are compared through their *pixel heat*: the attribution summed over channels, in
absolute value (Adebayo et al. compare absolute maps; a sign flip of a whole map must not
count as a change of what the model looks at). Spearman correlations of a constant map are
undefined; here two constant maps correlate 1 (same ranking: none) and a constant map with
a non-constant one correlates 0.
"""

import copy
from dataclasses import dataclass

import numpy as np
import torch
from captum.metrics import infidelity, sensitivity_max
from scipy.stats import rankdata
from skimage.metrics import structural_similarity
from torch import Tensor, nn
from torch.nn import functional as F

from tai.principles.transparency.attribution_methods import attribute
from tai.principles.transparency.explain import (
    _check_images,
    _check_positive,
    _check_target,
    _eval_mode,
    _pixel_scores,
    _rank_of_pixels,
)

__all__ = [
    "InfidelityResult",
    "InsertionResult",
    "SanityResult",
    "SensitivityResult",
    "SimilarityResult",
    "attribution_similarity",
    "infidelity_score",
    "insertion_auc",
    "randomisation_sanity_check",
    "sensitivity_score",
]

RANDOMISATION_MODES = ("full", "cascade")
# Petsiuk et al.'s blur: a Gaussian kernel of side 11 and sigma 5.
_BLUR_SIZE = 11
_BLUR_SIGMA = 5.0
_SSIM_WINDOW = 7


@dataclass(frozen=True)
class InsertionResult:
    """Insertion curves and their areas.

    Attributes:
        auc: ``(N,)`` area under each insertion curve, in ``[0, 1]``; higher is more
            faithful.
        curves: ``(N, steps + 1)`` target probability after inserting ``0, 1/steps, ..., 1``
            of the pixels.
    """

    auc: Tensor
    curves: Tensor

    @property
    def mean(self) -> float:
        """Mean insertion AUC over the batch."""
        return float(self.auc.mean())


@dataclass(frozen=True)
class InfidelityResult:
    """Infidelity per example (``scores``, ``(N,)``, lower is better) and its mean."""

    scores: Tensor

    @property
    def mean(self) -> float:
        return float(self.scores.mean())


@dataclass(frozen=True)
class SensitivityResult:
    """Max-sensitivity per example (``scores``, ``(N,)``, lower is better) and its mean."""

    scores: Tensor
    method: str

    @property
    def mean(self) -> float:
        return float(self.scores.mean())


@dataclass(frozen=True)
class SanityResult:
    """Outcome of the model randomisation test.

    Attributes:
        method: the attribution method tested.
        mode: ``"full"`` (every layer re-initialised at once) or ``"cascade"`` (layers
            re-initialised one by one from the output down).
        correlations: ``(N,)`` Spearman correlation of the pixel heat of the trained and
            the fully randomised model, per example.
        mean_correlation: mean of ``correlations``.
        threshold: the test passes when ``mean_correlation < threshold``.
        passed: whether it passed; ``flagged`` is its negation.
        layer_correlations: ``(layer, mean correlation)`` after randomising each layer in
            cascade order (cascade mode), or ``(("all", mean),)`` in full mode.
    """

    method: str
    mode: str
    correlations: Tensor
    mean_correlation: float
    threshold: float
    passed: bool
    layer_correlations: tuple[tuple[str, float], ...]

    @property
    def flagged(self) -> bool:
        """True when the maps barely depend on the weights (the test failed)."""
        return not self.passed


@dataclass(frozen=True)
class SimilarityResult:
    """Similarity of two sets of maps, per example and on average.

    Attributes:
        spearman: ``(N,)`` Spearman rank correlation of the pixel heats, in ``[-1, 1]``.
        ssim: ``(N,)`` structural similarity of the pixel heats scaled to ``[0, 1]``.
    """

    spearman: Tensor
    ssim: Tensor

    @property
    def mean_spearman(self) -> float:
        return float(self.spearman.mean())

    @property
    def mean_ssim(self) -> float:
        return float(self.ssim.mean())


def insertion_auc(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    *,
    steps: int = 20,
    batch_size: int = 128,
    baseline: float | str = "blur",
) -> InsertionResult:
    """Insertion AUC (Petsiuk et al., 2018) of attribution maps.

    For ``k = 0..steps`` the ``round(k / steps * H * W)`` pixels with the largest
    channel-summed attribution (ties broken by position) take their values from the image,
    the others from the start image, and ``p_k = softmax(model(x_k))[target]`` is recorded;
    the AUC is the trapezoid area under ``p_k`` over the inserted fraction in ``[0, 1]``.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
        inputs: ``(N, C, H, W)`` images.
        attributions: ``(N, C, H, W)`` or ``(N, H, W)`` attribution maps.
        target: ``(N,)`` class index per image.
        steps: number of equal insertion fractions.
        batch_size: most images in one forward pass.
        baseline: ``"blur"`` (Gaussian blur, side 11, sigma 5, replicate borders) or a
            constant pixel value for the start image.

    Returns:
        :class:`InsertionResult` with ``(N,)`` AUCs and ``(N, steps + 1)`` curves.

    Raises:
        ValueError: on wrong shapes, a bad target, ``steps < 1``, ``batch_size < 1`` or a
            ``baseline`` that is neither ``"blur"`` nor a number.

    Example:
        >>> class Pixel0(torch.nn.Module):
        ...     def forward(self, x):  # logit of class 0 is 4 * pixel (0, 0)
        ...         return torch.stack([4 * x[:, 0, 0, 0], torch.zeros(len(x))], dim=1)
        >>> x = torch.ones(1, 1, 2, 2)
        >>> focused = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
        >>> r = insertion_auc(Pixel0(), x, focused, torch.tensor([0]), steps=4, baseline=0.0)
        >>> [round(p, 3) for p in r.curves[0].tolist()], round(r.mean, 3)
        ([0.5, 0.982, 0.982, 0.982, 0.982], 0.922)
    """
    _check_images(inputs)
    scores = _pixel_scores(attributions, inputs)
    _check_positive("steps", steps)
    _check_positive("batch_size", batch_size)
    start = _start_image(inputs, baseline)
    n, _, height, width = inputs.shape
    n_pixels = height * width
    target = target.to(inputs.device)
    inserted = torch.round(torch.arange(steps + 1) / steps * n_pixels).long().to(inputs.device)
    curves = torch.empty(n * (steps + 1), device=inputs.device)
    with _eval_mode(model), torch.no_grad():
        _check_target(model, inputs, target)
        for job in torch.arange(n * (steps + 1), device=inputs.device).split(batch_size):
            example, step = job // (steps + 1), job % (steps + 1)
            rank = _rank_of_pixels(scores[example])
            show = (rank < inserted[step, None]).view(-1, 1, height, width)
            x = torch.where(show, inputs[example], start[example])
            probs = torch.softmax(model(x), dim=1)
            curves[job] = probs[torch.arange(len(job)), target[example]].to(curves.dtype)
    curves = curves.view(n, steps + 1)
    fractions = inserted.to(curves.dtype) / n_pixels
    return InsertionResult(auc=torch.trapezoid(curves, x=fractions, dim=1), curves=curves)


def infidelity_score(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: Tensor,
    *,
    n_perturb: int = 16,
    normalize: bool = True,
    seed: int = 0,
    noise_std: float = 0.1,
    multiply_by_inputs: bool = True,
    baseline: float = 0.0,
    batch_size: int = 128,
) -> InfidelityResult:
    """Infidelity (Yeh et al., 2019) of attribution maps, via ``captum.metrics.infidelity``.

    Each of ``n_perturb`` perturbations draws ``eps ~ N(0, noise_std^2)`` per input value.
    With ``multiply_by_inputs=True`` (for maps that already scale with the input, such as
    Integrated Gradients, gradient x input and occlusion) the perturbed image is
    ``x - eps * (x - baseline)`` and ``I = eps``; with ``False`` (for plain gradients) it
    is ``x - eps`` and ``I = eps``. The infidelity is then
    ``mean over I of (sum(I * phi) - (f_t(x) - f_t(x_perturbed)))^2`` on the target
    *logit* ``f_t``. ``normalize=True`` rescales ``phi`` by the least-squares factor
    ``beta`` first (captum's ``normalize``), which makes the score invariant to the scale
    of the maps, so maps of different methods can be compared. ``(N, 1, H, W)`` maps
    (GradCAM) are broadcast over the channels.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
        inputs: ``(N, C, H, W)`` images.
        attributions: ``(N, C, H, W)`` or ``(N, 1, H, W)`` maps.
        target: ``(N,)`` class index per image.
        n_perturb: perturbations per example, at least 1.
        normalize: rescale the maps optimally first (scale-invariant score).
        seed: seed of the perturbations.
        noise_std: standard deviation of ``eps``, positive.
        multiply_by_inputs: see above.
        baseline: reference value of the multiplicative perturbation.
        batch_size: most perturbed images in one forward pass (captum's
            ``max_examples_per_batch``; otherwise all ``N x n_perturb`` go at once).

    Returns:
        :class:`InfidelityResult` with ``(N,)`` scores.

    Raises:
        ValueError: on wrong shapes, a bad target, ``n_perturb < 1``, ``noise_std <= 0``
            or ``batch_size < 1``.
    """
    _check_images(inputs)
    _check_positive("n_perturb", n_perturb)
    _check_positive("batch_size", batch_size)
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive, got {noise_std}.")
    maps = _broadcast_maps(attributions, inputs)
    generator = torch.Generator().manual_seed(seed)

    def perturb(x: Tensor) -> tuple[Tensor, Tensor]:
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) * noise_std
        shift = eps * (x - baseline) if multiply_by_inputs else eps
        return eps, x - shift

    target = target.to(inputs.device)
    with torch.inference_mode(False), torch.no_grad(), _eval_mode(model):
        inputs = inputs.clone()
        _check_target(model, inputs, target)
        scores = infidelity(
            model,
            perturb,
            inputs,
            maps,
            target=target,
            n_perturb_samples=n_perturb,
            max_examples_per_batch=_examples_per_pass(len(inputs), n_perturb, batch_size),
            normalize=normalize,
        )
    # A mean of squares; the normalised form (beta^2 a - 2 beta b + c) can round below 0.
    return InfidelityResult(scores=scores.detach().flatten().clamp_min(0.0))


def sensitivity_score(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    *,
    method: str,
    n_perturb: int = 8,
    radius: float = 0.02,
    seed: int = 0,
    target_layer: str | None = None,
    n_steps: int = 32,
    batch_size: int = 64,
    maps: Tensor | None = None,
) -> SensitivityResult:
    """Max-sensitivity (Yeh et al., 2019) of a method, via ``captum.metrics.sensitivity_max``.

    ``max over n_perturb draws of ||phi(x + d) - phi(x)||_F / ||phi(x)||_F`` with ``d``
    uniform in the L-infinity ball of ``radius`` (seeded), ``phi`` the maps of
    :func:`tai.principles.transparency.attribution_methods.attribute` for the same target.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
        inputs: ``(N, C, H, W)`` images.
        target: ``(N,)`` class index per image.
        method: one of :data:`tai.principles.transparency.attribution_methods.METHODS`.
        n_perturb: perturbations per example, at least 1.
        radius: L-infinity radius of the perturbations, positive.
        seed: seed of the perturbations.
        target_layer: GradCAM's layer (see
        :func:`~tai.principles.transparency.attribution_methods.attribute`).
        n_steps: Integrated Gradients' quadrature points.
        batch_size: most images in one pass: perturbed images explained at once (captum's
            ``max_examples_per_batch``) and images of one pass inside the method.
        maps: ``method``'s maps of ``inputs`` (with these ``n_steps``) when the caller has
            them, used instead of explaining ``inputs`` again; None: computed here.

    Returns:
        :class:`SensitivityResult` with ``(N,)`` scores.

    Raises:
        ValueError: on an unknown method, wrong shapes, a bad target, ``n_perturb < 1``,
            ``radius <= 0`` or ``batch_size < 1``.
    """
    _check_images(inputs)
    _check_positive("n_perturb", n_perturb)
    _check_positive("batch_size", batch_size)
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}.")
    if maps is not None and maps.shape != inputs.shape:
        raise ValueError(
            f"maps must have the inputs' shape {tuple(inputs.shape)}, got "
            f"{tuple(maps.shape)}; pass the maps of these inputs or None."
        )
    with _eval_mode(model):
        _check_target(model, inputs, target)
    # Fails fast on an unknown method or layer, before captum's batched calls.
    attribute(
        model,
        inputs[:1],
        target[:1],
        method=method,
        target_layer=target_layer,
        n_steps=n_steps,
        batch_size=batch_size,
    )
    generator = torch.Generator().manual_seed(seed)

    def perturb(x: Tensor, perturb_radius: float) -> Tensor:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return x + (2 * noise - 1) * perturb_radius

    known = None if maps is None else maps.detach().to(inputs.device)

    def explain(x: Tensor | tuple[Tensor, ...], target: Tensor) -> Tensor | tuple[Tensor]:
        # captum passes a tuple for the unperturbed call and expects a tuple back. With
        # the caller's maps that call explains nothing: 1 pass in n_perturb + 1 less.
        if isinstance(x, tuple) and known is not None:
            return (known,)
        explained = attribute(
            model,
            x[0] if isinstance(x, tuple) else x,
            target,
            method=method,
            target_layer=target_layer,
            n_steps=n_steps,
            batch_size=batch_size,
        ).maps
        return (explained,) if isinstance(x, tuple) else explained

    with torch.inference_mode(False):
        scores = sensitivity_max(
            explain,
            inputs.clone(),
            perturb_func=perturb,
            perturb_radius=radius,
            n_perturb_samples=n_perturb,
            max_examples_per_batch=_examples_per_pass(len(inputs), n_perturb, batch_size),
            target=target.clone().to(inputs.device),
        )
    return SensitivityResult(scores=scores.detach().flatten(), method=method)


def randomisation_sanity_check(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    *,
    method: str,
    threshold: float = 0.5,
    seed: int = 0,
    mode: str = "full",
    target_layer: str | None = None,
    n_steps: int = 32,
    batch_size: int = 64,
    trained_maps: Tensor | None = None,
) -> SanityResult:
    """Model randomisation test (Adebayo et al., 2018) of an attribution method.

    A deep copy of ``model`` has its weights re-initialised (each module's own
    ``reset_parameters``, seeded; a module without one gets its parameters redrawn from
    ``N(0, std of the trained parameter)``); the original model is left untouched. In
    ``"full"`` mode every layer is re-initialised at once; in ``"cascade"`` mode layers
    are re-initialised one at a time from the output down and the maps are compared after
    each, which shows where the maps stop depending on the weights. The maps of both
    models (pixel heat, see the module doc) are compared per example by Spearman rank
    correlation; the test passes when the mean correlation with the fully randomised model
    is below ``threshold``.

    Args:
        model: the trained model.
        inputs: ``(N, C, H, W)`` images.
        target: ``(N,)`` class index per image (the same for both models).
        method: one of :data:`tai.principles.transparency.attribution_methods.METHODS`.
        threshold: largest mean correlation that still fails to pass, in ``(-1, 1]``.
        seed: seed of the re-initialisation. (A model that was only *initialised*, never
            trained, with ``torch.manual_seed(seed)`` would be re-drawn as itself.)
        mode: ``"full"`` or ``"cascade"``.
        target_layer: GradCAM's layer (see
        :func:`~tai.principles.transparency.attribution_methods.attribute`).
        n_steps: Integrated Gradients' quadrature points.
        batch_size: most images in one pass through either model (see
            :func:`~tai.principles.transparency.attribution_methods.attribute`).
        trained_maps: ``method``'s maps of ``inputs`` on ``model`` when the caller has them
            already (the quality sample's Integrated Gradients): not computed again.

    Returns:
        :class:`SanityResult`.

    Raises:
        ValueError: on an unknown ``mode`` or method, a ``threshold`` outside ``(-1, 1]``,
            a model without parameters, wrong shapes or a bad target.
    """
    if mode not in RANDOMISATION_MODES:
        raise ValueError(f"mode must be one of {RANDOMISATION_MODES}, got {mode!r}.")
    if not -1.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (-1, 1], got {threshold}.")
    layers = _randomisable_layers(model)

    def heat(net: nn.Module) -> Tensor:
        maps = attribute(
            net,
            inputs,
            target,
            method=method,
            target_layer=target_layer,
            n_steps=n_steps,
            batch_size=batch_size,
        ).maps
        return _pixel_heat(maps)

    if trained_maps is not None and trained_maps.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"trained_maps must hold one map per input ({inputs.shape[0]}), got "
            f"{trained_maps.shape[0]}; pass the maps of these inputs or None."
        )
    trained = heat(model) if trained_maps is None else _pixel_heat(trained_maps)
    randomised = copy.deepcopy(model)
    copies = dict(randomised.named_modules())
    layer_correlations = []
    stages = [layers] if mode == "full" else [[name] for name in reversed(layers)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for stage in stages:
            for name in stage:
                _reinitialise(copies[name])
            correlations = _spearman_rows(trained, heat(randomised))
            label = "all" if mode == "full" else (stage[0] or "(root)")
            layer_correlations.append((label, float(correlations.mean())))
    mean = float(correlations.mean())
    return SanityResult(
        method=method,
        mode=mode,
        correlations=correlations,
        mean_correlation=mean,
        threshold=threshold,
        passed=mean < threshold,
        layer_correlations=tuple(layer_correlations),
    )


def attribution_similarity(a: Tensor, b: Tensor) -> SimilarityResult:
    """Spearman correlation and SSIM, per example, between two sets of maps.

    Both are computed on the pixel heat (``|sum over channels|``). For SSIM each heat map
    is divided by its maximum (so it lies in ``[0, 1]``; an all-zero map stays 0) and
    scikit-image's ``structural_similarity`` is used with ``data_range=1`` and a 7x7
    window (smaller, odd, for maps under 7 pixels a side).

    Args:
        a: ``(N, C, H, W)`` or ``(N, H, W)`` maps, e.g. the champion's.
        b: maps of the same shape, e.g. the challenger's on the same images.

    Returns:
        :class:`SimilarityResult`.

    Raises:
        ValueError: if the shapes differ, are not 3-D or 4-D, are empty, or the maps are
            smaller than 3x3.

    Example:
        >>> a = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> r = attribution_similarity(a, 2 * a)
        >>> round(r.mean_spearman, 6), round(r.mean_ssim, 6)
        (1.0, 1.0)
    """
    if a.shape != b.shape or a.ndim not in (3, 4) or a.shape[0] == 0:
        raise ValueError(
            f"a and b must be non-empty maps of the same shape, (N, C, H, W) or (N, H, W); "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if min(a.shape[-2:]) < 3:
        raise ValueError(f"maps must be at least 3x3 for SSIM, got {tuple(a.shape[-2:])}.")
    heat_a = _pixel_heat(a if a.ndim == 4 else a[:, None])
    heat_b = _pixel_heat(b if b.ndim == 4 else b[:, None])
    spearman = _spearman_rows(heat_a, heat_b)
    side = min(_SSIM_WINDOW, min(a.shape[-2:]))
    window = side if side % 2 else side - 1
    ssim = [
        structural_similarity(_unit(x), _unit(y), data_range=1.0, win_size=window)
        for x, y in zip(heat_a.numpy(), heat_b.numpy(), strict=True)
    ]
    return SimilarityResult(spearman=spearman, ssim=torch.tensor(ssim, dtype=torch.float64))


def _start_image(inputs: Tensor, baseline: float | str) -> Tensor:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be 'blur' or a number, got {baseline!r}.")
        return _gaussian_blur(inputs)
    if isinstance(baseline, bool) or not isinstance(baseline, int | float):
        raise ValueError(f"baseline must be 'blur' or a number, got {baseline!r}.")
    return torch.full_like(inputs, float(baseline))


def _gaussian_blur(images: Tensor) -> Tensor:
    """Separable Gaussian blur (side 11, sigma 5) with replicated borders, per channel."""
    half = _BLUR_SIZE // 2
    offsets = torch.arange(_BLUR_SIZE, dtype=images.dtype, device=images.device) - half
    kernel = torch.exp(-offsets.square() / (2 * _BLUR_SIGMA**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    cols = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(images, (half, half, 0, 0), mode="replicate"), rows, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, half, half), mode="replicate"), cols, groups=channels)


def _broadcast_maps(attributions: Tensor, inputs: Tensor) -> Tensor:
    n, c, h, w = inputs.shape
    if attributions.shape == inputs.shape:
        return attributions.to(inputs.device, inputs.dtype)
    if attributions.shape == (n, 1, h, w):
        return attributions.expand(n, c, h, w).to(inputs.device, inputs.dtype).contiguous()
    raise ValueError(
        f"attributions must have shape (N, C, H, W) = {tuple(inputs.shape)} or "
        f"(N, 1, H, W) = {(n, 1, h, w)} to match inputs, got {tuple(attributions.shape)}."
    )


def _pixel_heat(maps: Tensor) -> Tensor:
    """``(N, H, W)`` absolute channel-summed maps, float64 on the CPU."""
    return maps.detach().double().cpu().sum(dim=1).abs()


def _spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation of every row of ``a`` with the same row of ``b`` (average
    ranks for ties; 1 for two constant rows, 0 for one constant row)."""
    ra = rankdata(a.reshape(len(a), -1).numpy(), axis=1)
    rb = rankdata(b.reshape(len(b), -1).numpy(), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm_a, norm_b = np.linalg.norm(ra, axis=1), np.linalg.norm(rb, axis=1)
    both = (norm_a > 0) & (norm_b > 0)
    rho = np.where(both, (ra * rb).sum(axis=1) / np.where(both, norm_a * norm_b, 1.0), 0.0)
    rho = np.where((norm_a == 0) & (norm_b == 0), 1.0, rho)
    return torch.from_numpy(np.clip(rho, -1.0, 1.0))


def _unit(heat: np.ndarray) -> np.ndarray:
    top = heat.max()
    return heat / top if top > 0 else heat


def _randomisable_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, in ``named_modules`` (input-to-output)
    order."""
    layers = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    if not layers:
        raise ValueError("model has no parameters to randomise; the test needs a trained model.")
    return layers


@torch.no_grad()
def _reinitialise(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for parameter in module.parameters(recurse=False):
        scale = float(parameter.std()) if parameter.numel() > 1 else 1.0
        parameter.normal_(0.0, scale or 1.0)


def _examples_per_pass(n: int, n_perturb: int, batch_size: int) -> int:
    """captum's ``max_examples_per_batch`` for at most ``batch_size`` perturbed images a
    pass: it slices the perturbations, never the examples, so a pass holds at least all
    ``n`` examples once and at most ``n x n_perturb`` (outside that range it warns)."""
    return max(n, min(batch_size, n * n_perturb))
