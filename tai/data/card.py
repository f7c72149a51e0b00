"""The data card of one data commit: validation, noise profile, label noise, factors.

Data engineering runs before any model exists, so every embedding here is model-free:
a PCA of the normalised pixels (``tai.data.factors.pixel_embeddings``). The card is a JSON-
ready dict with ``schema_version``; :func:`data_metrics` flattens the numbers a gate
policy may use, prefixed ``data_``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tai.data.factors import factors_of_variation, pixel_embeddings, traversal
from tai.data.groups import read_group_column, representation
from tai.data.images import load_split
from tai.data.label_noise import find_label_issues
from tai.data.profile import DatasetError, noise_profile, scan_dataset, validate_dataset

SCHEMA_VERSION = "1.0"
METADATA_FILE = "metadata.csv"


def build_data_card(
    root: Path,
    dataset: str,
    *,
    max_images: int = 3000,
    n_components: int = 32,
    n_factors: int = 8,
    group_column: str = "",
    factor_method: str = "pca",
    seed: int = 0,
) -> dict:
    """Validate and profile ``<root>/<dataset>``.

    Args:
        root: the materialised commit.
        dataset: the dataset folder in it.
        max_images: training images used for the label-noise estimate and the factors
            (a seeded subset that keeps every class), which bounds the cost.
        n_components: pixel-PCA components of the embedding.
        n_factors: factors of variation reported.
        group_column: a column of ``<dataset>/metadata.csv`` with each image's group;
            the card then reports each group's representation per split.
        factor_method: ``"pca"`` or ``"ica"`` (FastICA) for the factors of variation of
            the pixel-PCA embedding (:func:`tai.data.factors.factors_of_variation`).
        seed: seeds every sample.

    Raises:
        tai.data.profile.DatasetError: the dataset is malformed, or the group column is
            missing from ``metadata.csv`` or lacks an image.
    """
    summary = validate_dataset(root, dataset)
    records = scan_dataset(root, dataset)
    profile = noise_profile(root, records, seed=seed)
    train = load_split(
        root,
        [r for r in records if r.split == "train"],
        summary.classes,
        max_images=max_images,
        seed=seed,
    )
    pca = pixel_embeddings(train.images, n_components=min(n_components, len(train) - 1), seed=seed)
    codes = pca.transform(train.images)
    factors = factors_of_variation(
        codes, n_factors=min(n_factors, codes.shape[1]), method=factor_method, seed=seed
    )
    label_noise = _label_noise(codes.numpy(), train.targets.numpy(), summary.classes, seed)
    distributions = _factor_distributions(
        root, records, summary.classes, pca, factors, max_images=max_images, seed=seed
    )
    groups = image_groups(root, dataset, records, group_column) if group_column else None
    splits = sorted({r.split for r in records})
    rep = representation(
        {s: [r.label for r in records if r.split == s] for s in splits},
        {s: [g for r, g in zip(records, groups, strict=True) if r.split == s] for s in splits}
        if groups
        else None,
    )
    if groups:
        _check_groups_are_tested(rep.group_counts, group_column)
    return {
        "schema_version": SCHEMA_VERSION,
        "summary": summary.as_dict(),
        "noise_profile": profile.as_dict(),
        "label_noise": label_noise,
        "factors": {
            "embedding": f"pixel PCA, {pca.components.shape[0]} components, "
            f"{len(train)} training images",
            "method": factors.method,
            "explained_variance_ratio": [float(v) for v in factors.explained_variance_ratio],
            "distributions": distributions,
        },
        "representation": {
            "group_column": group_column or None,
            "class_shares": rep.class_shares,
            "group_shares": rep.group_shares,
            "group_counts": rep.group_counts,
            **rep.as_dict(),
        },
    }


def _factor_distributions(
    root: Path,
    records,
    classes: list[str],
    pca,
    factors,
    *,
    max_images: int,
    n_shown: int = 4,
    seed: int = 0,
) -> dict:
    """Per split and class: mean, standard deviation and quartiles of each of the top
    ``n_shown`` factor scores (the training split's factors, every split projected)."""
    k = min(n_shown, factors.components.shape[0])
    out: dict[str, dict[str, dict[str, list[float] | int]]] = {}
    for split in sorted({r.split for r in records}):
        data = load_split(
            root,
            [r for r in records if r.split == split],
            classes,
            max_images=max_images,
            seed=seed,
        )
        scores = factors.transform(pca.transform(data.images))[:, :k]
        out[split] = {}
        for index, name in enumerate(classes):
            mine = scores[data.targets == index]
            if len(mine) == 0:
                continue
            q = torch.quantile(mine, torch.tensor([0.25, 0.5, 0.75]), dim=0)
            out[split][name] = {
                "n": len(mine),
                "mean": mine.mean(0).tolist(),
                "std": mine.std(0, unbiased=False).tolist(),
                "q25": q[0].tolist(),
                "median": q[1].tolist(),
                "q75": q[2].tolist(),
            }
    return out


def _check_groups_are_tested(counts: dict[str, dict[str, int]], column: str) -> None:
    """A group without test images cannot be evaluated: stop before training."""
    untested = sorted(g for g, n in counts.get("test", {}).items() if n == 0)
    if untested:
        raise DatasetError(
            f"group column {column!r}: group {', '.join(map(repr, untested))} has no test "
            "images, so its accuracy cannot be measured; add test images of it, merge it "
            "with another group in metadata.csv, or choose another TAI_GROUP_COLUMN"
        )


def image_groups(root: Path, dataset: str, records, column: str) -> list[str]:
    """The group of each record, from ``<dataset>/metadata.csv`` (see
    :func:`tai.data.groups.read_group_column` for its format).

    Raises:
        DatasetError: the file, the column or an image's row is missing.
    """
    prefix = f"{dataset}/"
    ids = [r.path[len(prefix) :] if r.path.startswith(prefix) else r.path for r in records]
    try:
        return read_group_column(Path(root) / dataset / METADATA_FILE, column, ids)
    except (OSError, ValueError) as exc:
        where = str(exc).replace(f"{root}/", "")
        raise DatasetError(f"group column {column!r}: {where}") from None


def factor_traversals(
    root: Path, dataset: str, *, max_images: int = 3000, n_factors: int = 4, seed: int = 0
) -> tuple[list[Tensor], list[float]]:
    """Traversals along the top pixel-PCA factors of the training split, and the share of
    variance each factor explains (the report draws them: ``factor_traversal_figure``).

    The same seeded subset and PCA as :func:`build_data_card`; each traversal holds the
    mean image moved from -2 to +2 standard deviations along one factor.
    """
    records = [r for r in scan_dataset(root, dataset) if r.split == "train"]
    classes = sorted({r.label for r in records})
    train = load_split(root, records, classes, max_images=max_images, seed=seed)
    pca = pixel_embeddings(train.images, n_components=min(32, len(train) - 1), seed=seed)
    k = min(n_factors, pca.components.shape[0])
    rows = [traversal(pca, i) for i in range(k)]
    return rows, [float(v) for v in pca.explained_variance_ratio[:k]]


def _label_noise(features: np.ndarray, labels: np.ndarray, classes: list[str], seed: int) -> dict:
    """Confident learning on out-of-fold probabilities; skipped when a class is too small."""
    n_folds = 5
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < n_folds:
        return {"skipped": f"a class has fewer than {n_folds} training images", "issue_rate": None}
    result = find_label_issues(features, labels, n_folds=n_folds, seed=seed)
    return {
        "method": result.method,
        "issue_rate": result.issue_rate,
        "issues": len(result.issue_indices),
        "per_class_rate": {classes[k]: v for k, v in result.per_class_rate.items()},
    }


def data_metrics(card: dict) -> dict[str, float]:
    """The card's gateable numbers, as declared by :data:`tai.data.checks.CARD_CHECKS`."""
    per_split_class = card["noise_profile"]["per_split_class"]
    medians = [s["median"] for classes in per_split_class.values() for s in classes.values()]
    issue_rate = card["label_noise"].get("issue_rate")
    rep = card.get("representation", {})
    return {
        "data_label_issue_rate": float("nan") if issue_rate is None else float(issue_rate),
        "data_noise_sigma_median": float(np.median(medians)),
        "data_min_class_balance": float(min(card["summary"]["class_balance"].values())),
        "data_duplicate_groups": float(len(card["summary"]["duplicates"])),
        "data_min_class_share": float(rep.get("min_class_share", float("nan"))),
        "data_max_class_imbalance_ratio": float(rep.get("max_class_imbalance_ratio", float("nan"))),
        "data_min_group_share": float(rep.get("min_group_share", float("nan"))),
    }
