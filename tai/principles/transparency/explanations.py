"""Global explanations of a trained classifier on a held-out split, and their quality.

Three sets of images of the split, each chosen for what it measures:

- **Prototypes and criticisms** come from MMD-critic (Kim et al., 2016) on the model's
  penultimate-layer embeddings of the *selection half* of the split
  (:func:`split_for_prototypes`: each class's images halved at random). For each class's
  first prototype an explanation sheet holds the attribution maps of every method and
  the class-mean Integrated Gradients map.
- **Nearest-prototype accuracy** (Kim et al.'s evaluation of prototypes) is scored on the
  *scoring half*, disjoint from the selection half. Scored on the images the prototypes
  were chosen from it is optimistic: every prototype classifies itself, and MMD-critic
  puts the prototypes where that very sample is dense.
- **Explanation quality** is measured on the *quality sample*, a seeded random sample of
  the split (the caller draws it, e.g. with :meth:`tai.check.EvalContext.sample`):
  deletion and insertion AUC (Petsiuk et al., 2018), infidelity and max-sensitivity (Yeh
  et al., 2019, through captum) of the Integrated Gradients maps, and the model-
  randomisation sanity check of every method (Adebayo et al., 2018). Every value is kept
  per image, so that its mean gets a confidence interval over the images
  (:func:`quality_intervals`). The prototypes are too few for that and too typical of
  their class to stand for the split.

Only the images each part needs are read, through a loader (``indices -> images``): the
prototypes and criticisms, a few images per class for the class-mean maps, and the
quality sample in batches. The embeddings of the whole split are in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tai.inputs import check_confidence
from tai.principles.transparency.attribution_methods import METHODS, attribute
from tai.principles.transparency.explain import deletion_auc, integrated_gradients
from tai.principles.transparency.explanation_quality import (
    attribution_similarity,
    infidelity_score,
    insertion_auc,
    randomisation_sanity_check,
    sensitivity_score,
)
from tai.principles.transparency.mmd_critic import (
    PrototypesAndCriticisms,
    mmd_critic,
    nearest_prototype_accuracy,
)

Loader = Callable[[Tensor], Tensor]

TRANSPARENCY_METRICS = (
    "deletion_auc",
    "insertion_auc",
    "infidelity",
    "sensitivity",
    "ig_convergence_delta",
    "nearest_prototype_accuracy",
    "sanity_failures",
    *(f"sanity_{m}_correlation" for m in METHODS),
)
# Metrics that are the mean of a per-image value over the quality sample (and so have a
# confidence interval over its images).
PER_IMAGE_METRICS = (
    "deletion_auc",
    "insertion_auc",
    "infidelity",
    "sensitivity",
    *(f"sanity_{m}_correlation" for m in METHODS),
)
# Per-image metrics that explain each image again (max-sensitivity: perturbed copies; the
# randomisation check: a randomised model, every method): measured on the re-explained
# subset of the quality sample, the costliest part of the check.
REEXPLAINED_METRICS = ("sensitivity", *(f"sanity_{m}_correlation" for m in METHODS))
# A method passes the randomisation check when the mean correlation is below this.
SANITY_THRESHOLD = 0.5
# Max-sensitivity perturbations per image (each re-explains the image with IG).
SENSITIVITY_PERTURBATIONS = 4
# Most bootstrap means (resamples x images) drawn at once.
_MAX_RESAMPLE_ELEMENTS = 2**22


@dataclass(frozen=True)
class PrototypeSplit:
    """Disjoint halves of the split's positions, stratified by class, both ascending.

    Attributes:
        selection: where MMD-critic chooses the prototypes and criticisms.
        scoring: where the nearest-prototype classifier is scored.
    """

    selection: Tensor
    scoring: Tensor


@dataclass(frozen=True)
class QualitySample:
    """Explanation quality per image of the quality sample.

    Attributes:
        indices: positions of the sampled images in the split.
        values: metric of :data:`PER_IMAGE_METRICS` -> float64 values, one per image: of
            ``indices`` (in their order), or of ``reexplained`` for
            :data:`REEXPLAINED_METRICS`.
        convergence_delta: ``(n,)`` Integrated Gradients completeness gap per image.
        reexplained: the positions (a subset of ``indices``, in their order) where the
            metrics of :data:`REEXPLAINED_METRICS` were measured.
    """

    indices: list[int]
    values: dict[str, Tensor]
    convergence_delta: Tensor
    reexplained: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    def means(self) -> dict[str, float]:
        """The mean of each metric over the sampled images."""
        return {name: float(v.mean()) for name, v in self.values.items()}


@dataclass(frozen=True)
class Explanations:
    """Prototypes and criticisms of the evaluated split with their attribution maps, and
    the quality of the explanations on a sample of the split.

    Attributes:
        indices: first prototype of each class, into the evaluated split.
        labels: their classes.
        images: ``(P, C, H, W)`` those prototypes.
        attributions: ``(P, C, H, W)`` their Integrated Gradients maps.
        deletion_auc: deletion AUC per prototype (the report's table).
        convergence_delta: IG completeness gap per prototype.
        criticism_indices: class -> its criticisms, into the split.
        prototype_indices: class -> its prototypes, into the split.
        method_maps: method -> ``(P, C|1, H, W)`` maps of the prototypes.
        class_mean_maps: ``(P, C, H, W)`` mean IG map over samples of each class.
        class_mean_indices: class -> the images its class-mean map averages.
        quality: every metric of :data:`TRANSPARENCY_METRICS`.
        sanity: method -> ``{"mean_correlation", "passed"}`` on the quality sample.
        gallery: class -> (prototype images, criticism images).
        quality_sample: the per-image values the quality metrics are the means of.
        split: the selection and scoring halves of the nearest-prototype accuracy.
    """

    indices: list[int]
    labels: list[int]
    images: Tensor
    attributions: Tensor
    deletion_auc: list[float]
    convergence_delta: list[float]
    criticism_indices: dict[int, list[int]]
    prototype_indices: dict[int, list[int]]
    method_maps: dict[str, Tensor]
    class_mean_maps: Tensor
    class_mean_indices: dict[int, list[int]]
    quality: dict[str, float]
    sanity: dict[str, dict[str, float | bool]]
    gallery: dict[int, tuple[Tensor, Tensor]]
    quality_sample: QualitySample
    split: PrototypeSplit


def split_for_prototypes(
    targets: Tensor, generator: torch.Generator, *, min_selection: int = 1
) -> PrototypeSplit:
    """Halve each class's positions at random: ``ceil(n / 2)`` to the selection half, the
    rest to the scoring half.

    Args:
        targets: ``(N,)`` class of every image of the split.
        generator: draws the halves.
        min_selection: images each class needs in the selection half (prototypes plus
            criticisms per class).

    Raises:
        ValueError: a class has too few images for ``min_selection`` in its selection
            half and one image in its scoring half.
    """
    targets = targets.detach().cpu()
    if targets.ndim != 1 or len(targets) == 0:
        raise ValueError(
            f"targets must be a non-empty (N,) tensor of classes, got shape "
            f"{tuple(targets.shape)}; pass the split's class indices"
        )
    need = max(2 * min_selection - 1, 2)
    selection, scoring = [], []
    for cls in torch.unique(targets).tolist():
        members = torch.nonzero(targets == cls).flatten()
        if len(members) < need:
            raise ValueError(
                f"class {cls} has {len(members)} images in the split but needs {need}: "
                f"{min_selection} to choose its prototypes and criticisms from half of "
                f"them, and one to score the nearest-prototype classifier on the other "
                f"half; lower prototypes_per_class or add images of that class"
            )
        members = members[torch.randperm(len(members), generator=generator)]
        half = math.ceil(len(members) / 2)
        selection.append(members[:half])
        scoring.append(members[half:])
    return PrototypeSplit(torch.cat(selection).sort().values, torch.cat(scoring).sort().values)


def held_out_prototypes(
    embeddings: Tensor,
    targets: Tensor,
    split: PrototypeSplit,
    *,
    n_prototypes: int = 1,
    n_criticisms: int = 1,
    seed: int = 0,
) -> tuple[PrototypesAndCriticisms, float]:
    """MMD-critic on the selection half, and the nearest-prototype accuracy on the scoring
    half.

    Returns:
        The prototypes and criticisms (indices into the whole split) and the accuracy of
        the 1-nearest-prototype classifier on the scoring half.

    Raises:
        ValueError: the halves overlap or one is empty, or MMD-critic refuses the
            selection half.
    """
    selection, scoring = split.selection, split.scoring
    if len(selection) == 0 or len(scoring) == 0:
        raise ValueError(
            f"the selection and scoring halves need images, got {len(selection)} and "
            f"{len(scoring)}; build them with split_for_prototypes"
        )
    if np.intersect1d(selection.numpy(), scoring.numpy()).size:
        raise ValueError(
            "the selection and scoring halves share images, so the nearest-prototype "
            "accuracy would not be held out; build them with split_for_prototypes"
        )
    local = mmd_critic(
        embeddings[selection],
        targets[selection],
        n_prototypes=n_prototypes,
        n_criticisms=n_criticisms,
        seed=seed,
    )
    pc = PrototypesAndCriticisms(
        prototypes={c: selection[v].tolist() for c, v in local.prototypes.items()},
        criticisms={c: selection[v].tolist() for c, v in local.criticisms.items()},
        bandwidth=local.bandwidth,
        approximated=local.approximated,
    )
    protos = [i for c in sorted(pc.prototypes) for i in pc.prototypes[c]]
    accuracy = nearest_prototype_accuracy(
        embeddings[scoring], targets[scoring], embeddings[protos], targets[protos]
    )
    return pc, accuracy


def explanation_quality(
    model: nn.Module,
    load_images: Loader,
    targets: Tensor,
    index: Tensor,
    *,
    methods: Sequence[str] = METHODS,
    n_steps: int = 32,
    seed: int = 0,
    batch_size: int = 64,
    reexplain_index: Tensor | None = None,
) -> QualitySample:
    """Explanation quality of every image at ``index``, read ``batch_size`` at a time.

    Per image: deletion and insertion AUC and infidelity of the Integrated Gradients map
    and its completeness gap; and, on the images of ``reexplain_index`` only, the metrics
    that explain an image again (:data:`REEXPLAINED_METRICS`): max-sensitivity
    (:data:`SENSITIVITY_PERTURBATIONS` perturbations, each explained with Integrated
    Gradients) and, for every method, the Spearman correlation of its map with the map of
    one randomised copy of the model (the same copy for every batch: it is re-initialised
    from ``seed``). Batch ``k`` draws its infidelity and sensitivity perturbations from
    ``seed + k``.

    Args:
        model: classifier on images in [0, 1], in eval mode.
        load_images: ``indices -> (n, C, H, W)`` images of the split.
        targets: ``(N,)`` classes of the whole split.
        index: ``(n,)`` positions of the images to measure.
        methods: the methods of the randomisation check.
        n_steps: Integrated Gradients steps.
        seed: seeds the perturbations and the randomised model.
        batch_size: images read and explained at once, and the most images in any one
            pass through the model (steps, perturbations and occlusions included).
        reexplain_index: a non-empty subset of ``index`` for the metrics of
            :data:`REEXPLAINED_METRICS`; ``None``: all of ``index``.

    Raises:
        ValueError: an empty ``index``, an unknown method, ``batch_size < 1``, or a
            ``reexplain_index`` that is empty or not within ``index``.
    """
    return _quality_and_maps(
        model,
        load_images,
        targets,
        index,
        methods=methods,
        n_steps=n_steps,
        seed=seed,
        batch_size=batch_size,
        reexplain_index=reexplain_index,
    )[0]


def _quality_and_maps(
    model: nn.Module,
    load_images: Loader,
    targets: Tensor,
    index: Tensor,
    *,
    methods: Sequence[str] = METHODS,
    n_steps: int = 32,
    seed: int = 0,
    batch_size: int = 64,
    reexplain_index: Tensor | None = None,
) -> tuple[QualitySample, dict[int, Tensor]]:
    """:func:`explanation_quality`, and the Integrated Gradients map of each image of
    ``index`` by its position."""
    if index.ndim != 1 or len(index) == 0:
        raise ValueError(
            f"index must be a non-empty (n,) tensor of positions, got shape "
            f"{tuple(index.shape)}; sample at least one image"
        )
    _check_methods(methods)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}; pass e.g. 64")
    reexplain = torch.isin(index, index if reexplain_index is None else reexplain_index)
    if reexplain_index is not None and (
        len(reexplain_index) == 0 or int(reexplain.sum()) != len(set(reexplain_index.tolist()))
    ):
        raise ValueError(
            "reexplain_index must be a non-empty subset of index; draw it from the quality "
            "sample's positions"
        )
    parts: dict[str, list[Tensor]] = {name: [] for name in _per_image_names(methods)}
    deltas = []
    ig_maps: dict[int, Tensor] = {}  # for the randomisation check and the class means
    for k, chunk in enumerate(index.split(batch_size)):
        x, y = load_images(chunk), targets[chunk]
        # Every pass below runs at most `batch_size` images through the model, whatever
        # the steps or perturbations it needs (at 224x224 these passes were the memory).
        ig = integrated_gradients(model, x, y, n_steps=n_steps, internal_batch_size=batch_size)
        ig_maps |= dict(zip(chunk.tolist(), ig.maps.detach(), strict=True))
        parts["deletion_auc"].append(deletion_auc(model, x, ig.maps, y, batch_size=batch_size).auc)
        parts["insertion_auc"].append(
            insertion_auc(model, x, ig.maps, y, batch_size=batch_size).auc
        )
        parts["infidelity"].append(
            infidelity_score(model, x, ig.maps, y, seed=seed + k, batch_size=batch_size).scores
        )
        deltas.append(ig.convergence_delta)
    # The re-explained images in batches of their own (read a second time), so that each
    # pass is as full as the first loop's.
    for k, chunk in enumerate(index[reexplain].split(batch_size)):
        x, y = load_images(chunk), targets[chunk]
        maps = torch.stack([ig_maps[i] for i in chunk.tolist()])  # not explained again
        parts["sensitivity"].append(
            sensitivity_score(
                model,
                x,
                y,
                method="integrated_gradients",
                n_perturb=SENSITIVITY_PERTURBATIONS,
                n_steps=n_steps,
                seed=seed + k,
                batch_size=batch_size,
                maps=maps,
            ).scores
        )
        for m in methods:
            check = randomisation_sanity_check(
                model,
                x,
                y,
                method=m,
                seed=seed,
                n_steps=n_steps,
                threshold=SANITY_THRESHOLD,
                batch_size=batch_size,
                trained_maps=maps if m == "integrated_gradients" else None,
            )
            parts[f"sanity_{m}_correlation"].append(check.correlations)
    values = {name: torch.cat([v.detach().double().cpu() for v in p]) for name, p in parts.items()}
    sample = QualitySample(
        indices=index.tolist(),
        values=values,
        convergence_delta=torch.cat(deltas).detach().double().cpu(),
        reexplained=index[reexplain].tolist(),
    )
    return sample, ig_maps


def quality_intervals(
    values: Mapping[str, Tensor],
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    generator: torch.Generator | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap interval (Efron & Tibshirani 1993, ch. 13) of the mean of each
    metric's per-image values.

    Each of ``n_resamples`` resamples draws the sampled images with replacement; the same
    resampled images serve every metric. A percentile bootstrap rather than a t-interval
    because several of these values are bounded and skewed (deletion AUCs pile up near 0,
    infidelity is a mean of squares with a long right tail), where the t-interval's
    symmetric normal approximation misplaces the bounds at a few hundred images; the
    bootstrap follows the skew and is what the project's other intervals use.

    Args:
        values: metric -> ``(n,)`` values, all of the same ``n`` (one per image).
        confidence: two-sided level, in (0, 1).
        n_resamples: bootstrap resamples, at least 1.
        generator: draws the resamples.

    Returns:
        metric -> ``(lower, upper)``; NaN bounds for a metric with a non-finite value.

    Raises:
        ValueError: ``confidence`` outside (0, 1), ``n_resamples < 1``, no values, or
            metrics with different numbers of images.
    """
    check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}; pass e.g. 1000")
    sizes = {name: len(v) for name, v in values.items()}
    if not values or set(sizes.values()) == {0} or len(set(sizes.values())) != 1:
        raise ValueError(
            f"values must hold the same positive number of per-image values for every "
            f"metric, got {sizes}; pass the QualitySample's values"
        )
    n = next(iter(sizes.values()))
    table = torch.stack([v.detach().double().cpu().flatten() for v in values.values()])
    rows = max(1, _MAX_RESAMPLE_ELEMENTS // n)
    means = []
    for start in range(0, n_resamples, rows):
        draws = torch.randint(0, n, (min(rows, n_resamples - start), n), generator=generator)
        means.append(table[:, draws].mean(dim=2))  # (metrics, resamples)
    means = torch.cat(means, dim=1).numpy()
    alpha = (1 - confidence) / 2
    bounds = {}
    for row, name in enumerate(values):
        if not np.isfinite(table[row].numpy()).all():
            bounds[name] = (math.nan, math.nan)
            continue
        low, high = np.quantile(means[row], [alpha, 1 - alpha])
        bounds[name] = (float(low), float(high))
    return bounds


def explain_model(
    model: nn.Module,
    targets: Tensor,
    embeddings: Tensor,
    load_images: Loader,
    *,
    quality_index: Tensor,
    split: PrototypeSplit,
    methods: Sequence[str] = METHODS,
    n_prototypes: int = 1,
    n_criticisms: int = 1,
    n_steps: int = 32,
    class_mean_samples: int = 16,
    seed: int = 0,
    batch_size: int = 64,
    reexplain_index: Tensor | None = None,
) -> Explanations:
    """Prototypes, criticisms, explanation sheets and explanation quality.

    Args:
        model: classifier on images in [0, 1], in eval mode.
        targets: ``(N,)`` classes of the held-out split.
        embeddings: ``(N, D)`` the model's penultimate-layer embeddings of the split.
        load_images: ``indices -> (n, C, H, W)`` images of the split in [0, 1]; only the
            images needed are read.
        quality_index: positions of the quality sample (:func:`explanation_quality`).
        split: selection and scoring halves (:func:`split_for_prototypes`).
        methods: attribution methods from
            :data:`tai.principles.transparency.attribution_methods.METHODS`.
        n_prototypes: prototypes per class.
        n_criticisms: criticisms per class.
        n_steps: Integrated Gradients steps.
        class_mean_samples: images per class averaged into the class-mean map.
        seed: seeds every random choice.
        batch_size: images of the quality sample read and explained at once, and the most
            images (examples x steps) of one Integrated Gradients pass.
        reexplain_index: where in the quality sample the metrics that explain an image
            again are measured (:func:`explanation_quality`); ``None``: all of it.

    Raises:
        ValueError: an unknown method, a class with too few images in the selection half,
            or an empty quality sample.
    """
    _check_methods(methods)
    pc, accuracy = held_out_prototypes(
        embeddings,
        targets,
        split,
        n_prototypes=n_prototypes,
        n_criticisms=n_criticisms,
        seed=seed,
    )
    classes = sorted(pc.prototypes)
    shown = [i for c in classes for i in (*pc.prototypes[c], *pc.criticisms[c])]
    loaded = dict(zip(shown, load_images(torch.tensor(shown)), strict=True))
    index = torch.tensor([pc.prototypes[c][0] for c in classes])
    x, y = torch.stack([loaded[i] for i in index.tolist()]), targets[index]
    ig = integrated_gradients(model, x, y, n_steps=n_steps, internal_batch_size=batch_size)
    method_maps = {
        m: attribute(model, x, y, method=m, n_steps=n_steps, batch_size=batch_size).maps
        for m in methods
    }
    method_maps["integrated_gradients"] = ig.maps
    sample, quality_maps = _quality_and_maps(
        model,
        load_images,
        targets,
        quality_index,
        methods=methods,
        n_steps=n_steps,
        seed=seed,
        batch_size=batch_size,
        reexplain_index=reexplain_index,
    )
    quality = {
        **sample.means(),
        "ig_convergence_delta": float(sample.convergence_delta.abs().max()),
        "nearest_prototype_accuracy": accuracy,
    }
    sanity: dict[str, dict[str, float | bool]] = {}
    for m in methods:
        mean = quality[f"sanity_{m}_correlation"]
        sanity[m] = {"mean_correlation": mean, "passed": bool(mean < SANITY_THRESHOLD)}
    quality["sanity_failures"] = float(sum(not s["passed"] for s in sanity.values()))

    def stack(indices: list[int]) -> Tensor:
        return torch.stack([loaded[i] for i in indices]) if indices else x[:0]

    class_means, class_mean_indices = _class_means(
        model,
        load_images,
        targets,
        classes,
        class_mean_samples,
        n_steps,
        seed,
        batch_size,
        known=quality_maps,
    )

    return Explanations(
        indices=index.tolist(),
        labels=y.tolist(),
        images=x,
        attributions=ig.maps.detach(),
        deletion_auc=deletion_auc(model, x, ig.maps, y, batch_size=batch_size).auc.tolist(),
        convergence_delta=ig.convergence_delta.tolist(),
        criticism_indices={int(c): list(pc.criticisms[c]) for c in classes},
        prototype_indices={int(c): list(pc.prototypes[c]) for c in classes},
        method_maps={m: v.detach() for m, v in method_maps.items()},
        class_mean_maps=class_means,
        class_mean_indices=class_mean_indices,
        quality=quality,
        sanity=sanity,
        gallery={int(c): (stack(pc.prototypes[c]), stack(pc.criticisms[c])) for c in classes},
        quality_sample=sample,
        split=split,
    )


def _class_means(
    model: nn.Module,
    load_images: Loader,
    targets: Tensor,
    classes: list[int],
    k: int,
    n_steps: int,
    seed: int,
    batch_size: int = 64,
    *,
    known: Mapping[int, Tensor] | None = None,
) -> tuple[Tensor, dict[int, list[int]]]:
    """Mean IG map over up to ``k`` random images of each class (only those are read),
    and the images of each class it averages.

    ``known``: maps already computed by position (the quality sample's, itself a seeded
    random sample of the split): a class's images among them are taken first (up to
    ``k``, in their order) and the rest drawn at random from the class's other images.
    The images averaged are still a random subset of the class, and fewer are explained
    again (about 40% of the demo's 160 at 64 quality images).
    """
    known = known or {}
    generator = torch.Generator().manual_seed(seed)
    means, picked = [], {}
    for c in classes:
        members = torch.nonzero(targets == c).flatten()
        reused = [i for i in known if int(targets[i]) == c][:k]
        others = members[~torch.isin(members, torch.tensor(reused, dtype=members.dtype))]
        pick = others[torch.randperm(len(others), generator=generator)[: k - len(reused)]]
        maps = [known[i] for i in reused]
        if len(pick):
            maps += list(
                integrated_gradients(
                    model,
                    load_images(pick),
                    targets[pick],
                    n_steps=n_steps,
                    internal_batch_size=batch_size,
                ).maps
            )
        means.append(torch.stack(maps).mean(0))
        picked[int(c)] = reused + pick.tolist()
    return torch.stack(means).detach(), picked


def _check_methods(methods: Sequence[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attribution methods {unknown}; choose from {', '.join(METHODS)}")


def _per_image_names(methods: Sequence[str]) -> list[str]:
    return [
        "deletion_auc",
        "insertion_auc",
        "infidelity",
        "sensitivity",
        *(f"sanity_{m}_correlation" for m in methods),
    ]


def attribution_stability(
    reference: nn.Module, model: nn.Module, images: Tensor, targets: Tensor, *, n_steps: int = 32
) -> dict[str, float]:
    """Similarity of two models' Integrated Gradients maps on the same images.

    Used between the champion (``reference``) and a challenger on the challenger's
    prototypes: high Spearman correlation and SSIM mean the explanation did not change.
    """
    a = integrated_gradients(reference, images, targets, n_steps=n_steps).maps
    b = integrated_gradients(model, images, targets, n_steps=n_steps).maps
    result = attribution_similarity(a, b)
    return {
        "attribution_stability_spearman": float(result.spearman.mean()),
        "attribution_stability_ssim": float(result.ssim.mean()),
    }
