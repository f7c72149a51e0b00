import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from tai.data.card import (
    SCHEMA_VERSION,
    build_data_card,
    data_metrics,
    data_not_applicable,
    factor_traversals,
)
from tai.data.checks import CARD_CHECKS
from tai.data.profile import DatasetError
from tests.conftest import write_tiny_dataset


def test_data_card_profiles_a_valid_dataset(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 12, "val": 4, "test": 4}, classes=3, size=12)
    card = json.loads(json.dumps(build_data_card(tmp_path, "tiny", n_components=8, n_factors=4)))
    assert card["schema_version"] == SCHEMA_VERSION
    assert card["summary"]["splits"]["train"] == {"0": 12, "1": 12, "2": 12}
    assert len(card["factors"]["explained_variance_ratio"]) == 4
    # The classes are perfectly separable (a bright square per corner): no label is doubted.
    assert card["label_noise"]["issue_rate"] == 0.0
    assert card["label_noise"]["issues"] == 0
    assert card["label_noise"]["per_class_rate"] == {"0": 0.0, "1": 0.0, "2": 0.0}
    metrics = data_metrics(card)
    assert set(metrics) == {m for c in CARD_CHECKS for m in c.metric_names}
    assert metrics["data_min_class_balance"] == 1.0
    assert metrics["data_duplicate_groups"] == 0.0
    assert metrics["data_label_issue_rate"] == 0.0
    assert metrics["data_split_leakage"] == metrics["data_val_leakage"] == 0.0
    assert card["leakage"]["splits"]["test"] == {"images": 12, "exact": 0, "near": 0, "leaking": 0}
    assert card["leakage"]["pairs"] == []


def test_one_mislabelled_training_image_is_the_one_label_issue(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 12, "val": 4, "test": 4}, classes=3, size=12)
    train = tmp_path / "tiny" / "train"
    shutil.move(train / "0" / "5.png", train / "1" / "mislabelled.png")  # a 0 filed as a 1
    card = build_data_card(tmp_path, "tiny", n_components=8, n_factors=4)
    assert card["label_noise"]["issues"] == 1
    assert card["label_noise"]["issue_rate"] == pytest.approx(1 / 36)
    assert card["label_noise"]["per_class_rate"] == pytest.approx({"0": 0.0, "1": 1 / 13, "2": 0.0})
    assert data_metrics(card)["data_label_issue_rate"] == pytest.approx(1 / 36)


def test_label_noise_is_skipped_when_a_class_is_too_small(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 3, "val": 2, "test": 2}, classes=2, size=8)
    card = build_data_card(tmp_path, "tiny", n_components=4, n_factors=2)
    assert card["label_noise"]["skipped"].startswith(
        "classes '0' (3), '1' (3) have fewer than 5 training images; confident learning "
        "needs at least 5 per class"
    )
    assert math.isnan(data_metrics(card)["data_label_issue_rate"])
    assert data_not_applicable(card) == {
        "data_label_issue_rate": card["label_noise"]["skipped"],
        "data_min_group_share": "no group column (TAI_GROUP_COLUMN)",
    }


def test_a_malformed_dataset_fails_the_card(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 3, "val": 2}, classes=2, size=8)
    with pytest.raises(DatasetError, match=r"split folder\(s\) \['test'\] missing"):
        build_data_card(tmp_path, "tiny")


def test_factor_traversals_give_one_row_of_seven_steps_per_factor(tmp_path):
    from tai.report.figures.data import factor_traversal_figure

    write_tiny_dataset(tmp_path, counts={"train": 10, "val": 2, "test": 2}, classes=2, size=8)
    rows, explained = factor_traversals(tmp_path, "tiny", n_factors=3)
    assert [tuple(r.shape) for r in rows] == [(7, 1, 8, 8)] * 3
    assert len(explained) == 3 and explained == sorted(explained, reverse=True)
    assert len(factor_traversal_figure(rows, explained).axes) == 3  # one strip per factor


def _metadata(root, rows):
    lines = ["path,site"] + [f"{path},{site}" for path, site in rows]
    (root / "tiny" / "metadata.csv").write_text("\n".join(lines) + "\n")


def _all_images(root):
    return sorted(p.relative_to(root / "tiny").as_posix() for p in (root / "tiny").rglob("*.png"))


def test_group_representation_per_split(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, classes=2, size=8)
    images = _all_images(tmp_path)
    _metadata(tmp_path, [(p, "a" if p.endswith("/0.png") else "b") for p in images])
    card = build_data_card(tmp_path, "tiny", n_components=4, n_factors=2, group_column="site")
    rep = card["representation"]
    assert rep["group_column"] == "site"
    # Each class has 0.png..5.png in train and 0.png, 1.png in test: a is 0.png.
    assert rep["group_shares"]["train"] == {"a": pytest.approx(2 / 12), "b": pytest.approx(10 / 12)}
    assert rep["group_shares"]["test"] == {"a": 0.5, "b": 0.5}
    assert data_metrics(card)["data_min_group_share"] == pytest.approx(2 / 12)


def test_a_group_without_test_images_stops_the_card(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, classes=2, size=8)
    images = _all_images(tmp_path)
    _metadata(
        tmp_path,
        [(p, "night" if p.startswith("train") and p.endswith("5.png") else "day") for p in images],
    )
    with pytest.raises(
        DatasetError, match=r"group column 'site': group 'night' has no test images"
    ):
        build_data_card(tmp_path, "tiny", n_components=4, n_factors=2, group_column="site")


@pytest.mark.parametrize(
    ("column", "rows", "pattern"),
    [
        (
            "hospital",
            None,
            r"group column 'hospital': Group column 'hospital' does not exist .*available",
        ),
        ("site", "drop-one", r"group column 'site': Sample 'test/1/1.png' is missing"),
    ],
)
def test_bad_group_metadata_is_a_dataset_error(tmp_path, column, rows, pattern):
    write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, classes=2, size=8)
    images = _all_images(tmp_path)
    if rows == "drop-one":
        images = [p for p in images if p != "test/1/1.png"]
    _metadata(tmp_path, [(p, "a") for p in images])
    with pytest.raises(DatasetError, match=pattern):
        build_data_card(tmp_path, "tiny", n_components=4, n_factors=2, group_column=column)


def test_ica_factors_are_an_option(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 12, "val": 4, "test": 4}, classes=3, size=12)
    pca = build_data_card(tmp_path, "tiny", n_components=8, n_factors=4)
    ica = build_data_card(tmp_path, "tiny", n_components=8, n_factors=4, factor_method="ica")
    assert (pca["factors"]["method"], ica["factors"]["method"]) == ("pca", "ica")
    assert ica["factors"]["explained_variance_ratio"] != pca["factors"]["explained_variance_ratio"]


def test_factor_distributions_per_split_and_class(tmp_path):
    from tai.report.trust_report import data_figures

    write_tiny_dataset(tmp_path, counts={"train": 12, "val": 4, "test": 4}, classes=3, size=12)
    card = build_data_card(tmp_path, "tiny", n_components=8, n_factors=4)
    dist = card["factors"]["distributions"]
    assert set(dist) == {"train", "val", "test"}
    assert set(dist["test"]) == {"0", "1", "2"} and dist["test"]["0"]["n"] == 4
    stats = dist["train"]["1"]
    assert len(stats["mean"]) == 4
    for f in range(4):
        assert stats["q25"][f] <= stats["median"][f] <= stats["q75"][f]
    # The classes' bright corners differ, so the top factor separates their means.
    means = [dist["train"][c]["mean"][0] for c in ("0", "1", "2")]
    assert max(means) - min(means) > 1.0
    assert data_figures(card)["factor_distributions"].startswith(b"\x89PNG")
    assert data_figures({}) == {}


# ------------------------------------------------------------- leakage between the splits


def test_training_images_in_the_test_and_val_splits_are_counted_and_listed(tmp_path):
    folder = write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, classes=2)
    shutil.copy(folder / "train/0/0.png", folder / "test/0/copy.png")
    pixels = np.asarray(Image.open(folder / "train/1/3.png"), dtype=np.float64)
    noise = np.random.default_rng(0).normal(0.0, 4.0, pixels.shape)  # sigma 0.016
    brighter = np.clip(np.round(pixels + 12 + noise), 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(folder / "test/1/brighter.png")
    Image.fromarray(brighter).save(folder / "val/1/brighter.png")
    card = json.loads(json.dumps(build_data_card(tmp_path, "tiny", n_components=4, n_factors=2)))
    leakage = card["leakage"]
    assert leakage["splits"] == {
        "test": {"images": 6, "exact": 1, "near": 1, "leaking": 2},
        "val": {"images": 5, "exact": 0, "near": 1, "leaking": 1},
    }
    assert [(p["split"], p["path"], p["train_path"], p["kind"]) for p in leakage["pairs"]] == [
        ("test", "tiny/test/0/copy.png", "tiny/train/0/0.png", "exact"),
        ("test", "tiny/test/1/brighter.png", "tiny/train/1/3.png", "near"),
        ("val", "tiny/val/1/brighter.png", "tiny/train/1/3.png", "near"),
    ]
    assert 0 < leakage["pairs"][1]["distance"] <= leakage["near_threshold"]
    metrics = data_metrics(card)
    assert (metrics["data_split_leakage"], metrics["data_val_leakage"]) == (2.0, 1.0)
    # Both are byte-identical duplicate groups too; test against val is not leakage.
    assert card["summary"]["duplicates"] == [
        ["tiny/test/0/copy.png", "tiny/train/0/0.png"],
        ["tiny/test/1/brighter.png", "tiny/val/1/brighter.png"],
    ]


def test_a_card_without_leakage_reports_nan_with_the_reason(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 5, "val": 1, "test": 1}, classes=2, size=8)
    card = build_data_card(tmp_path, "tiny", n_components=4, n_factors=2)
    del card["leakage"]  # a card built before the check existed (a drift baseline)
    metrics = data_metrics(card)
    assert math.isnan(metrics["data_split_leakage"]) and math.isnan(metrics["data_val_leakage"])
    assert data_not_applicable(card)["data_split_leakage"].startswith(
        "the data card has no leakage of a 'test' split"
    )


# ------------------------------------------- small and degenerate datasets: no tracebacks


def _remove_training_images(folder, label: str, keep: int) -> None:
    for path in sorted((folder / "train" / label).glob("*.png"))[keep:]:
        path.unlink()


@pytest.mark.parametrize(("keep", "noun"), [(2, "images"), (1, "image")])
def test_a_class_with_too_few_training_images_skips_label_noise_naming_it(tmp_path, keep, noun):
    folder = write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, size=8)
    _remove_training_images(folder, "1", keep)
    card = build_data_card(tmp_path, "tiny", n_components=4, n_factors=2)
    assert card["label_noise"] == {
        "skipped": f"class '1' has {keep} training {noun}; confident learning needs at least "
        "5 per class (5-fold out-of-fold probabilities): add training images",
        "issue_rate": None,
    }
    assert card["factors"]["distributions"]["train"]["1"]["n"] == keep
    assert data_not_applicable(card)["data_label_issue_rate"].startswith("class '1' has")
    rows, _ = factor_traversals(tmp_path, "tiny", n_factors=2)
    assert len(rows) == 2


def test_three_images_per_class_and_split_give_a_card(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 3, "val": 3, "test": 3})
    card = build_data_card(tmp_path, "tiny")  # the defaults: 32 components, 8 factors
    assert card["label_noise"]["skipped"].startswith("classes '0' (3), '1' (3), '2' (3) have")
    assert len(card["factors"]["explained_variance_ratio"]) == 8  # 9 images: 8 components
    assert data_metrics(card)["data_split_leakage"] == 0.0


def test_two_images_per_split_give_a_card_with_one_factor(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 1, "val": 1, "test": 1}, classes=2, size=8)
    card = build_data_card(tmp_path, "tiny")
    assert card["factors"]["embedding"] == "pixel PCA, 1 components, 2 training images"
    assert len(card["factors"]["explained_variance_ratio"]) == 1
    assert card["label_noise"]["skipped"].startswith("classes '0' (1), '1' (1) have fewer")
    assert card["representation"]["class_shares"]["test"] == {"0": 0.5, "1": 0.5}
    rows, explained = factor_traversals(tmp_path, "tiny")
    assert len(rows) == len(explained) == 1


def test_images_with_fewer_pixels_than_components_give_a_card(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, classes=2, size=2)
    card = build_data_card(tmp_path, "tiny")
    assert card["factors"]["embedding"].startswith("pixel PCA, 4 components")
    rows, _ = factor_traversals(tmp_path, "tiny")
    assert [tuple(r.shape) for r in rows] == [(7, 1, 2, 2)] * 4


def test_a_class_missing_from_val_is_a_dataset_error(tmp_path):
    folder = write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, size=8)
    shutil.rmtree(folder / "val" / "2")
    with pytest.raises(
        DatasetError,
        match=r"class folders differ between splits.*split 'val' lacks \['2'\].*give every "
        "split the same class folders",
    ):
        build_data_card(tmp_path, "tiny")


def test_a_single_class_is_a_dataset_error(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 6, "val": 2, "test": 2}, classes=1, size=8)
    with pytest.raises(DatasetError, match=r"has a single class, '0': a classifier needs at least"):
        build_data_card(tmp_path, "tiny")


def test_blank_images_have_noise_zero_not_nan(tmp_path):
    folder = write_tiny_dataset(tmp_path, counts={"train": 5, "val": 1, "test": 1}, classes=2)
    Image.fromarray(np.full((16, 16), 0, np.uint8)).save(folder / "train/0/blank.png")
    Image.fromarray(np.full((16, 16), 0, np.uint8)).save(folder / "test/1/blank.png")
    card = build_data_card(tmp_path, "tiny", n_components=4, n_factors=2)
    assert not math.isnan(data_metrics(card)["data_noise_sigma_median"])
    # Blank images have no look to compare: only their bytes match.
    assert card["leakage"]["splits"]["test"]["exact"] == 1


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"max_images": 1}, "max_images must be 0 .* or at least 2, got 1"),
        ({"n_components": 0}, "n_components must be at least 1, got 0"),
        ({"n_factors": 0}, "n_factors must be at least 1, got 0"),
        ({"factor_method": "nmf"}, r"factor_method must be one of \('pca', 'ica'\), got 'nmf'"),
    ],
)
def test_options_out_of_range_are_named(tmp_path, options, pattern):
    write_tiny_dataset(tmp_path, counts={"train": 2, "val": 1, "test": 1}, classes=2, size=4)
    with pytest.raises(ValueError, match=pattern):
        build_data_card(tmp_path, "tiny", **options)


def test_factor_traversals_need_two_training_images(tmp_path):
    folder = write_tiny_dataset(tmp_path, counts={"train": 1, "test": 1}, classes=1, size=8)
    with pytest.raises(DatasetError, match=r"need at least 2 training images, found 1 in .*train"):
        factor_traversals(tmp_path, "tiny")
    shutil.rmtree(folder / "train")
    with pytest.raises(DatasetError, match="found 0"):
        factor_traversals(tmp_path, "tiny")
    with pytest.raises(ValueError, match="max_images must be 0"):
        factor_traversals(tmp_path, "tiny", max_images=-3)
