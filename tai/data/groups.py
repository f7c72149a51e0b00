"""Groups and representation of a dataset: who is in the data, before any model.

A dataset may carry a ``<dataset>/metadata.csv`` with a group column per image
(:func:`read_group_column`); :func:`representation` counts each class, group and
class x group cell per split, the data engineering stage's check that every class and
group is represented.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tai.inputs import listed, string_labels

#: The column of ``metadata.csv`` that identifies a sample (see :func:`read_group_column`).
PATH_COLUMN = "path"


@dataclass(frozen=True)
class Representation:
    """How classes and groups are represented in each split of a dataset.

    Shares are fractions of the split's samples. A class (group) seen in any split is
    listed, with count 0, in every split.

    Attributes:
        splits: the split names, in the order given.
        classes: every class name, sorted.
        groups: every group name, sorted; empty without group labels.
        class_counts: ``class_counts[split][class]``.
        class_shares: ``class_shares[split][class]``.
        group_counts: ``group_counts[split][group]``; empty without group labels.
        group_shares: ``group_shares[split][group]``; empty without group labels.
        class_group_counts: ``class_group_counts[split][class][group]``.
        class_group_shares: ``class_group_shares[split][class][group]``.
        min_class_share: the smallest class share over every split and class.
        max_class_imbalance_ratio: largest over smallest class count in the reference
            split (``inf`` when a class has no sample there).
        min_group_share: the smallest group share over every split and group; ``None``
            without group labels.
    """

    splits: tuple[str, ...]
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    class_counts: dict[str, dict[str, int]]
    class_shares: dict[str, dict[str, float]]
    group_counts: dict[str, dict[str, int]]
    group_shares: dict[str, dict[str, float]]
    class_group_counts: dict[str, dict[str, dict[str, int]]]
    class_group_shares: dict[str, dict[str, dict[str, float]]]
    min_class_share: float
    max_class_imbalance_ratio: float
    min_group_share: float | None

    def as_dict(self) -> dict[str, float]:
        """Scalars for logging: ``min_class_share``, ``max_class_imbalance_ratio`` and,
        with group labels, ``min_group_share``."""
        out = {
            "min_class_share": self.min_class_share,
            "max_class_imbalance_ratio": self.max_class_imbalance_ratio,
        }
        if self.min_group_share is not None:
            out["min_group_share"] = self.min_group_share
        return out


def read_group_column(metadata_csv: Path | str, column: str, ids: Sequence[str]) -> list[str]:
    """The group in ``column`` of each sample of ``ids``, read from a ``metadata.csv``.

    Expected format: a CSV file (UTF-8, header row) beside the split folders of a dataset,
    ``<dataset>/metadata.csv``, with a column ``path`` that names each image relative to
    the dataset folder, with ``/`` separators, ``<split>/<label>/<file>`` (e.g.
    ``test/3/17.png``), and one column per group attribute::

        path,label,split,site
        test/3/17.png,3,test,hospital_a
        test/5/2.png,5,test,hospital_b

    ``ids`` are paths of the same form (paths from ``tai.data.profile.scan_dataset`` carry
    the dataset name in front: strip it). Paths are compared after turning ``\\`` into
    ``/`` and dropping ``.`` components; values are stripped of surrounding whitespace.

    Args:
        metadata_csv: the CSV file.
        column: the group column to read.
        ids: the samples' paths, in the order of the predictions.

    Returns:
        The group name of each sample, in the order of ``ids``.

    Raises:
        FileNotFoundError: if ``metadata_csv`` does not exist.
        ValueError: if the file lacks the ``path`` column or ``column``, lists a path twice,
            lacks a requested sample, or has an empty group for one.
    """
    metadata_csv = Path(metadata_csv)
    if not metadata_csv.is_file():
        raise FileNotFoundError(
            f"Metadata file {metadata_csv} does not exist. Group fairness needs a "
            f"metadata.csv with a {PATH_COLUMN!r} column and the group column {column!r}."
        )
    with metadata_csv.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        if PATH_COLUMN not in header:
            raise ValueError(
                f"Expected a {PATH_COLUMN!r} column in {metadata_csv}, but its columns are "
                f"{header}. Name each image in a {PATH_COLUMN!r} column, e.g. test/3/17.png."
            )
        if column not in header:
            raise ValueError(
                f"Group column {column!r} does not exist in {metadata_csv}; available "
                f"columns: {header}. Pass one of them as the group column."
            )
        group_of: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            key = _normalise_path(row[PATH_COLUMN] or "")
            if key in group_of:
                raise ValueError(
                    f"Path {key!r} occurs more than once in {metadata_csv} (again on line "
                    f"{line}). Keep one row per image."
                )
            group_of[key] = (row[column] or "").strip()

    wanted = [_normalise_path(i) for i in string_labels(ids, "the sample ids")]
    missing = [i for i in wanted if i not in group_of]
    if missing:
        raise ValueError(
            f"Sample {listed(missing)} is missing from {metadata_csv} ({len(missing)} of "
            f"{len(wanted)} samples). Add a row per image with its {PATH_COLUMN!r} relative "
            "to the dataset folder, e.g. test/3/17.png."
        )
    empty = [i for i in wanted if not group_of[i]]
    if empty:
        raise ValueError(
            f"Sample {listed(empty)} has no value in column {column!r} of {metadata_csv}. "
            "Fill in its group, or leave the sample out of the evaluation."
        )
    return [group_of[i] for i in wanted]


def _normalise_path(path: str) -> str:
    return PurePosixPath(path.strip().replace("\\", "/")).as_posix()


def representation(
    labels_by_split: Mapping[str, Sequence[str]],
    groups_by_split: Mapping[str, Sequence[str]] | None = None,
    *,
    reference_split: str = "train",
) -> Representation:
    """Counts and shares of each class, group and class x group cell per split.

    No model is involved: this is the data engineering stage's check that every class
    and group is represented. ``min_class_share`` is the smallest share of a class in any
    split (0 when a class is missing from a split), ``max_class_imbalance_ratio`` the
    largest over the smallest class count in ``reference_split`` (``inf`` when a class has
    no sample there) and ``min_group_share`` the smallest share of a group in any split.

    Args:
        labels_by_split: split name -> class name of each sample.
        groups_by_split: split name -> group name of each sample, aligned with
            ``labels_by_split``; ``None`` without group labels.
        reference_split: the split whose class counts give the imbalance ratio.

    Returns:
        A :class:`Representation`.

    Raises:
        ValueError: if a split is empty, ``reference_split`` is missing, labels are not
            strings, or the groups do not match the labels split by split.

    Example:
        >>> rep = representation({"train": ["cat", "cat", "cat", "dog"], "test": ["cat", "dog"]})
        >>> rep.as_dict()
        {'min_class_share': 0.25, 'max_class_imbalance_ratio': 3.0}
    """
    if not isinstance(labels_by_split, Mapping) or not labels_by_split:
        raise ValueError(
            f"Expected `labels_by_split` to map split names to class labels, but got "
            f"{labels_by_split!r}. Pass e.g. {{'train': [...], 'test': [...]}}."
        )
    if reference_split not in labels_by_split:
        raise ValueError(
            f"Expected the reference split {reference_split!r} in `labels_by_split`, but it "
            f"has only {list(labels_by_split)}. Pass `reference_split` as one of them."
        )
    labels = {
        s: string_labels(v, f"the class labels of split {s!r}") for s, v in labels_by_split.items()
    }
    for split, values in labels.items():
        if not values:
            raise ValueError(
                f"Split {split!r} has no samples. Leave empty splits out of `labels_by_split`."
            )
    groups = _aligned_groups(labels, groups_by_split)

    # Plain counting rather than pandas.crosstab: nested dicts are what the data card holds.
    classes = tuple(sorted({c for values in labels.values() for c in values}))
    group_names = tuple(sorted({g for values in (groups or {}).values() for g in values}))
    class_counts = {s: _counts(values, classes) for s, values in labels.items()}
    class_shares = {s: _shares(counts) for s, counts in class_counts.items()}
    group_counts: dict[str, dict[str, int]] = {}
    class_group_counts: dict[str, dict[str, dict[str, int]]] = {}
    if groups is not None:
        for split, values in labels.items():
            group_counts[split] = _counts(groups[split], group_names)
            class_group_counts[split] = {
                c: _counts(
                    [g for g, label in zip(groups[split], values, strict=True) if label == c],
                    group_names,
                )
                for c in classes
            }
    group_shares = {s: _shares(counts) for s, counts in group_counts.items()}
    class_group_shares = {
        s: {c: {g: n / len(labels[s]) for g, n in row.items()} for c, row in table.items()}
        for s, table in class_group_counts.items()
    }

    reference = class_counts[reference_split].values()
    smallest = min(reference)
    return Representation(
        splits=tuple(labels),
        classes=classes,
        groups=group_names,
        class_counts=class_counts,
        class_shares=class_shares,
        group_counts=group_counts,
        group_shares=group_shares,
        class_group_counts=class_group_counts,
        class_group_shares=class_group_shares,
        min_class_share=min(v for shares in class_shares.values() for v in shares.values()),
        max_class_imbalance_ratio=max(reference) / smallest if smallest else math.inf,
        min_group_share=(
            min(v for shares in group_shares.values() for v in shares.values())
            if groups is not None
            else None
        ),
    )


def _aligned_groups(
    labels: dict[str, list[str]], groups_by_split: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]] | None:
    if groups_by_split is None:
        return None
    if not isinstance(groups_by_split, Mapping) or set(groups_by_split) != set(labels):
        given = list(groups_by_split) if isinstance(groups_by_split, Mapping) else groups_by_split
        raise ValueError(
            f"Expected `groups_by_split` to have the splits {list(labels)} of "
            f"`labels_by_split`, but got {given!r}. Give the groups of every split or none."
        )
    groups = {s: string_labels(groups_by_split[s], f"the groups of split {s!r}") for s in labels}
    for split, values in groups.items():
        if len(values) != len(labels[split]):
            raise ValueError(
                f"Expected one group per sample of split {split!r}, but got {len(values)} "
                f"groups for {len(labels[split])} labels. Align the groups with the labels."
            )
    return groups


def _counts(values: Sequence[str], names: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for value in values:
        counts[value] += 1
    return counts


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()}
