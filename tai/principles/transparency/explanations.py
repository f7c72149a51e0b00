"""Global explanations of a trained classifier on a held-out split, and their quality.

Prototypes and criticisms come from MMD-critic (Kim et al., 2016) on the model's
penultimate-layer embeddings. For each class's first prototype an explanation sheet
holds the attribution maps of every method and the class-mean Integrated Gradients map.
Quality is measured on the prototypes: deletion and insertion AUC (Petsiuk et al., 2018),
infidelity and max-sensitivity (Yeh et al., 2019, through captum), and the model-
randomisation sanity check of every method (Adebayo et al., 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tai.principles.transparency.attribution_methods import METHODS, attribute
from tai.principles.transparency.explain import deletion_auc, integrated_gradients
from tai.principles.transparency.explanation_quality import (
    attribution_similarity,
    infidelity_score,
    insertion_auc,
    randomisation_sanity_check,
    sensitivity_score,
)
from tai.principles.transparency.mmd_critic import mmd_critic, nearest_prototype_accuracy

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


@dataclass(frozen=True)
class Explanations:
    """Prototypes and criticisms of the evaluated split with their attribution maps."""

    indices: list[int]  # first prototype of each class, into the evaluated split
    labels: list[int]
    images: Tensor  # (P, C, H, W) those prototypes
    attributions: Tensor  # (P, C, H, W) their Integrated Gradients maps
    deletion_auc: list[float]  # per prototype
    convergence_delta: list[float]
    criticism_indices: dict[int, list[int]]
    prototype_indices: dict[int, list[int]]
    method_maps: dict[str, Tensor]  # method -> (P, C|1, H, W) on the prototypes
    class_mean_maps: Tensor  # (P, C, H, W) mean IG map over samples of each class
    quality: dict[str, float]
    sanity: dict[str, dict[str, float | bool]]
    gallery: dict[int, tuple[Tensor, Tensor]]  # class -> (prototype images, criticism images)


def explain_model(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    embeddings: Tensor,
    *,
    methods: Sequence[str] = METHODS,
    n_prototypes: int = 1,
    n_criticisms: int = 1,
    n_steps: int = 32,
    class_mean_samples: int = 16,
    seed: int = 0,
) -> Explanations:
    """Prototypes, criticisms, explanation sheets and explanation quality.

    Args:
        model: classifier on images in [0, 1], in eval mode.
        images: (N, C, H, W) held-out images.
        targets: (N,) their classes.
        embeddings: (N, D) the model's penultimate-layer embeddings of ``images``.
        methods: attribution methods from
        :data:`tai.principles.transparency.attribution_methods.METHODS`.
        n_prototypes: prototypes per class.
        n_criticisms: criticisms per class.
        n_steps: Integrated Gradients steps.
        class_mean_samples: images per class averaged into the class-mean map.
        seed: seeds every random choice.

    Raises:
        ValueError: an unknown method, or a class with fewer samples than
            ``n_prototypes + n_criticisms``.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attribution methods {unknown}; choose from {', '.join(METHODS)}")
    pc = mmd_critic(
        embeddings, targets, n_prototypes=n_prototypes, n_criticisms=n_criticisms, seed=seed
    )
    classes = sorted(pc.prototypes)
    index = torch.tensor([pc.prototypes[c][0] for c in classes])
    x, y = images[index], targets[index]
    ig = integrated_gradients(model, x, y, n_steps=n_steps)
    method_maps = {m: attribute(model, x, y, method=m, n_steps=n_steps).maps for m in methods}
    method_maps["integrated_gradients"] = ig.maps
    deletion = deletion_auc(model, x, ig.maps, y)
    all_protos = [i for c in classes for i in pc.prototypes[c]]
    quality = {
        "deletion_auc": deletion.mean,
        "insertion_auc": insertion_auc(model, x, ig.maps, y).mean,
        "infidelity": infidelity_score(model, x, ig.maps, y, seed=seed).mean,
        "sensitivity": sensitivity_score(
            model, x, y, method="integrated_gradients", n_perturb=4, n_steps=n_steps, seed=seed
        ).mean,
        "ig_convergence_delta": float(ig.convergence_delta.abs().max()),
        "nearest_prototype_accuracy": nearest_prototype_accuracy(
            embeddings, targets, embeddings[all_protos], targets[all_protos]
        ),
    }
    sanity = {}
    for m in methods:
        check = randomisation_sanity_check(model, x, y, method=m, seed=seed, n_steps=n_steps)
        sanity[m] = {"mean_correlation": check.mean_correlation, "passed": check.passed}
        quality[f"sanity_{m}_correlation"] = check.mean_correlation
    quality["sanity_failures"] = float(sum(not s["passed"] for s in sanity.values()))
    return Explanations(
        indices=index.tolist(),
        labels=y.tolist(),
        images=x,
        attributions=ig.maps.detach(),
        deletion_auc=deletion.auc.tolist(),
        convergence_delta=ig.convergence_delta.tolist(),
        criticism_indices={int(c): list(pc.criticisms[c]) for c in classes},
        prototype_indices={int(c): list(pc.prototypes[c]) for c in classes},
        method_maps={m: v.detach() for m, v in method_maps.items()},
        class_mean_maps=_class_means(
            model, images, targets, classes, class_mean_samples, n_steps, seed
        ),
        quality=quality,
        sanity=sanity,
        gallery={int(c): (images[pc.prototypes[c]], images[pc.criticisms[c]]) for c in classes},
    )


def _class_means(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    classes: list[int],
    k: int,
    n_steps: int,
    seed: int,
) -> Tensor:
    """Mean IG map over up to ``k`` random samples of each class."""
    generator = torch.Generator().manual_seed(seed)
    means = []
    for c in classes:
        members = torch.nonzero(targets == c).flatten()
        pick = members[torch.randperm(len(members), generator=generator)[:k]]
        maps = integrated_gradients(model, images[pick], targets[pick], n_steps=n_steps).maps
        means.append(maps.mean(0))
    return torch.stack(means).detach()


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
