"""The data card of one data commit: validation, leakage between the splits, noise
profile, label noise, factors.

Data engineering runs before any model exists, so every embedding here is model-free:
a PCA of the normalised pixels (``tai.data.factors.pixel_embeddings``). The card is a JSON-
ready dict with ``schema_version``; :func:`data_metrics` flattens the numbers a gate
policy may use, prefixed ``data_``, and :func:`data_not_applicable` says why one of them
is NaN.

Small datasets: every step either runs or says why not. A malformed dataset (a missing
split or class, a single class, an undecodable image, ...) stops the card with a one-line
:class:`~tai.data.profile.DatasetError`; an estimate that a small dataset cannot support
(label noise needs 5 training images per class) is skipped with its reason in the card;
the pixel PCA keeps at most ``N - 1`` components of ``N`` training images and at most one
per pixel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tai.data.factors import (
    FACTOR_METHODS,
    PixelPCA,
    factors_of_variation,
    pixel_embeddings,
    traversal,
)
from tai.data.groups import read_group_column, representation
from tai.data.images import (
    DECODED_CACHE_BYTES,
    InputFormat,
    SplitTensors,
    downscaled,
    input_format,
    load_split,
)
from tai.data.label_noise import find_label_issues
from tai.data.leakage import image_descriptor, split_leakage
from tai.data.profile import (
    DatasetError,
    DatasetSummary,
    ImageRecord,
    decoded_images_kept,
    noise_profile,
    scan_dataset,
    validate_dataset,
)

SCHEMA_VERSION = "1.0"
METADATA_FILE = "metadata.csv"
#: Folds of the out-of-fold probabilities of the label-noise estimate: the fewest
#: training images a class needs for it.
LABEL_NOISE_FOLDS = 5
NO_GROUP_COLUMN = "no group column (TAI_GROUP_COLUMN)"


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

    Every image is read once for the validation, its duplicates and the leakage between
    the training split and the others (``leakage``: :func:`tai.data.leakage.split_leakage`);
    bounded samples are read again for the noise profile, the label noise and the factors.

    Args:
        root: the materialised commit.
        dataset: the dataset folder in it.
        max_images: training images used for the label-noise estimate and the factors
            (a seeded subset that keeps every class), which bounds the cost; 0 for all.
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
        ValueError: an option is out of range (``max_images`` 1 or negative,
            ``n_components`` or ``n_factors`` below 1, an unknown ``factor_method``).
    """
    _check_options(max_images, n_factors, n_components=n_components, method=factor_method)
    # Validation decodes every image; the noise profile, the factors and their
    # distributions read samples of the same images again: keep what fits.
    with decoded_images_kept(DECODED_CACHE_BYTES):  # while one card is built
        records: list[ImageRecord] = []
        digests: list[str] = []
        descriptors: list[np.ndarray] = []

        def describe(record: ImageRecord, sha256: str, pixels: np.ndarray) -> None:
            records.append(record)
            digests.append(sha256)
            descriptors.append(image_descriptor(pixels))

        summary = validate_dataset(root, dataset, on_image=describe)
        stacked = np.stack(descriptors)
        descriptors.clear()
        leakage = split_leakage(
            [r.path for r in records], [r.split for r in records], digests, stacked
        )
        del stacked
        profile = noise_profile(root, records, seed=seed)
        fmt = pixel_format(summary)
        train_records = [r for r in records if r.split == "train"]
        train = load_split(
            root, train_records, summary.classes, max_images=max_images, seed=seed, fmt=fmt
        )
        pca = _pixel_pca(train, n_components, seed)
        codes = pca.transform(train.images)
        factors = factors_of_variation(
            codes, n_factors=min(n_factors, codes.shape[1]), method=factor_method, seed=seed
        )
        label_noise = _label_noise(
            codes.numpy(), train.targets.numpy(), summary.classes, seed, of=len(train_records)
        )
        distributions = _factor_distributions(
            root, records, summary.classes, pca, factors, fmt, max_images=max_images, seed=seed
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
        "leakage": leakage.as_dict(),
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
    fmt: InputFormat,
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
            fmt=fmt,
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
    mean image moved from -2 to +2 standard deviations along one factor. Fewer factors
    than ``n_factors`` come back when the PCA has fewer components (``N - 1`` of ``N``
    training images, one per pixel).

    Raises:
        tai.data.profile.DatasetError: the dataset has no ``train`` split or fewer than 2
            training images.
        ValueError: ``max_images`` is 1 or negative, or ``n_factors`` below 1.
    """
    _check_options(max_images, n_factors)
    records = [r for r in scan_dataset(root, dataset) if r.split == "train"]
    if len(records) < 2:
        raise DatasetError(
            f"factors of variation need at least 2 training images, found {len(records)} in "
            f"{Path(root) / dataset / 'train'}; add images to its class folders and commit."
        )
    classes = sorted({r.label for r in records})
    fmt = downscaled(input_format(root, records, seed=seed), PIXEL_MAX_SIDE)
    train = load_split(root, records, classes, max_images=max_images, seed=seed, fmt=fmt)
    pca = _pixel_pca(train, 32, seed)
    k = min(n_factors, pca.components.shape[0])
    rows = [traversal(pca, i) for i in range(k)]
    return rows, [float(v) for v in pca.explained_variance_ratio[:k]]


# The data stage's pixel statistics (PCA factors, label noise) on images at most this
# large: 64 x 64 x 3 values per image keep 3,000 training images under 150 MB.
PIXEL_MAX_SIDE = 64


def pixel_format(summary: DatasetSummary | dict) -> InputFormat:
    """The format the data stage reads images in: the model's mode, the most common size
    scaled down to :data:`PIXEL_MAX_SIDE` (the same for every commit of the same data).

    ``summary`` is the validation's summary, or its JSON in a data card (``card["summary"]``).
    """
    s = summary.as_dict() if isinstance(summary, DatasetSummary) else summary
    channels = 1 if s["mode"] == "L" else 3
    return downscaled(
        InputFormat(channels, tuple(s["image_size"]), s.get("sizes", {}), s.get("modes", {})),
        PIXEL_MAX_SIDE,
    )


def _check_options(
    max_images: int, n_factors: int, *, n_components: int = 1, method: str = "pca"
) -> None:
    if max_images == 1 or max_images < 0:
        raise ValueError(
            f"max_images must be 0 (every training image) or at least 2, got {max_images}; "
            "a PCA needs two images."
        )
    for name, value in (("n_components", n_components), ("n_factors", n_factors)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    if method not in FACTOR_METHODS:
        raise ValueError(f"factor_method must be one of {FACTOR_METHODS}, got {method!r}.")


def _pixel_pca(train: SplitTensors, n_components: int, seed: int) -> PixelPCA:
    """Pixel PCA of the training sample with at most ``n_components`` components: fewer
    for few images (``N - 1``, the rank of ``N`` centred images) or few pixels."""
    pixels = int(np.prod(train.images.shape[1:]))
    k = max(1, min(n_components, len(train) - 1, pixels))
    return pixel_embeddings(train.images, n_components=k, seed=seed)


def _label_noise(
    features: np.ndarray, labels: np.ndarray, classes: list[str], seed: int, *, of: int
) -> dict:
    """Confident learning on out-of-fold probabilities; skipped, with the reason, when a
    class has fewer training images than folds (``of``: training images before sampling)."""
    n_folds = LABEL_NOISE_FOLDS
    counts = np.bincount(labels, minlength=len(classes))
    small = [(classes[k], int(n)) for k, n in enumerate(counts) if n < n_folds]
    if small:
        return {"skipped": _too_few_for_label_noise(small, len(labels), of), "issue_rate": None}
    result = find_label_issues(features, labels, n_folds=n_folds, seed=seed)
    return {
        "method": result.method,
        "issue_rate": result.issue_rate,
        "issues": len(result.issue_indices),
        "per_class_rate": {classes[k]: v for k, v in result.per_class_rate.items()},
    }


def _too_few_for_label_noise(small: list[tuple[str, int]], used: int, of: int) -> str:
    """Why the label noise is skipped: the classes short of training images, and what to do."""
    shown = ", ".join(f"{name!r} ({n})" for name, n in small[:5])
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    if len(small) == 1:
        name, n = small[0]
        what = f"class {name!r} has {n} training image{'' if n == 1 else 's'}"
    else:
        what = f"classes {shown}{more} have fewer than {LABEL_NOISE_FOLDS} training images"
    sampled = used < of
    return (
        f"{what}{f' in the sample of {used} of {of}' if sampled else ''}; confident learning "
        f"needs at least {LABEL_NOISE_FOLDS} per class ({LABEL_NOISE_FOLDS}-fold out-of-fold "
        f"probabilities): {'raise max_images' if sampled else 'add training images'}"
    )


def data_metrics(card: dict) -> dict[str, float]:
    """The card's gateable numbers, as declared by :data:`tai.data.checks.CARD_CHECKS`.

    NaN where the card could not estimate one (:func:`data_not_applicable` says why):
    ``data_split_leakage`` and ``data_val_leakage`` of a card without a ``leakage``
    section (built before it existed) included.
    """
    per_split_class = card["noise_profile"]["per_split_class"]
    medians = [s["median"] for classes in per_split_class.values() for s in classes.values()]
    issue_rate = card["label_noise"].get("issue_rate")
    rep = card.get("representation", {})
    leaking = {s: c["leaking"] for s, c in card.get("leakage", {}).get("splits", {}).items()}
    return {
        "data_label_issue_rate": float("nan") if issue_rate is None else float(issue_rate),
        "data_noise_sigma_median": float(np.median(medians)),
        "data_min_class_balance": float(min(card["summary"]["class_balance"].values())),
        "data_duplicate_groups": float(len(card["summary"]["duplicates"])),
        "data_split_leakage": float(leaking.get("test", math.nan)),
        "data_val_leakage": float(leaking.get("val", math.nan)),
        "data_min_class_share": float(rep.get("min_class_share", float("nan"))),
        "data_max_class_imbalance_ratio": float(rep.get("max_class_imbalance_ratio", float("nan"))),
        "data_min_group_share": float(rep.get("min_group_share", float("nan"))),
    }


def data_not_applicable(card: dict) -> dict[str, str]:
    """The metrics of :func:`data_metrics` that are NaN for this card, with the reason (a
    gate on one of them is skipped with it rather than failed on a NaN)."""
    metrics = data_metrics(card)
    reasons = {
        "data_label_issue_rate": card["label_noise"].get("skipped", "not estimated"),
        "data_min_group_share": NO_GROUP_COLUMN,
    }
    out = {}
    for name, value in metrics.items():
        if math.isnan(value):
            if name in reasons:
                out[name] = reasons[name]
            elif name in ("data_split_leakage", "data_val_leakage"):
                split = "test" if name == "data_split_leakage" else "val"
                out[name] = f"the data card has no leakage of a {split!r} split against 'train'"
            else:
                out[name] = "not estimated"
    return out
