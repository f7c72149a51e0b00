import json
import math

import pytest

from tai.data.card import SCHEMA_VERSION, build_data_card, data_metrics
from tai.data.checks import CARD_CHECKS
from tai.data.profile import DatasetError
from tests.conftest import write_tiny_dataset


def test_data_card_profiles_a_valid_dataset(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 12, "val": 4, "test": 4}, classes=3, size=12)
    card = json.loads(json.dumps(build_data_card(tmp_path, "tiny", n_components=8, n_factors=4)))
    assert card["schema_version"] == SCHEMA_VERSION
    assert card["summary"]["splits"]["train"] == {"0": 12, "1": 12, "2": 12}
    assert len(card["factors"]["explained_variance_ratio"]) == 4
    assert card["label_noise"]["issue_rate"] is not None
    metrics = data_metrics(card)
    assert set(metrics) == {m for c in CARD_CHECKS for m in c.metric_names}
    assert metrics["data_min_class_balance"] == 1.0
    assert metrics["data_duplicate_groups"] == 0.0
    assert 0.0 <= metrics["data_label_issue_rate"] <= 1.0


def test_label_noise_is_skipped_when_a_class_is_too_small(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 3, "val": 2, "test": 2}, classes=2, size=8)
    card = build_data_card(tmp_path, "tiny", n_components=4, n_factors=2)
    assert "fewer than 5 training images" in card["label_noise"]["skipped"]
    assert math.isnan(data_metrics(card)["data_label_issue_rate"])


def test_a_malformed_dataset_fails_the_card(tmp_path):
    write_tiny_dataset(tmp_path, counts={"train": 3, "val": 2}, classes=2, size=8)
    with pytest.raises(DatasetError, match=r"split folder\(s\) \['test'\] missing"):
        build_data_card(tmp_path, "tiny")


def test_factor_traversals_give_one_row_of_seven_steps_per_factor(tmp_path):
    from tai.data.card import factor_traversals
    from tai.report.figures.data import factor_traversal_figure

    write_tiny_dataset(tmp_path, counts={"train": 10, "val": 2, "test": 2}, classes=2, size=8)
    rows, explained = factor_traversals(tmp_path, "tiny", n_factors=3)
    assert [tuple(r.shape) for r in rows] == [(7, 1, 8, 8)] * 3
    assert len(explained) == 3 and explained == sorted(explained, reverse=True)
    assert len(factor_traversal_figure(rows, explained).axes) == 3 * 7


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
