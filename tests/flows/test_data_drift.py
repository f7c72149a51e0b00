"""Data drift against the last model's data commit (flows.tasks.data_drift)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from prefect import flow

from flows.stores import make_data_store
from flows.tasks.data import data_card
from flows.tasks.data_drift import (
    baseline_version,
    compare_with_baseline,
    drift_metrics,
    drift_not_applicable,
)
from infra.datastore.base import DataVersion
from infra.mlflow_store import ModelVersionInfo
from tai.data.drift import DRIFT_METRIC_NAMES
from tests.conftest import write_tiny_dataset
from tests.flows.conftest import commit_dataset

VERSION = DataVersion("oxen", "repo", "c3")


def _model(version: str, commit: str, *, store="oxen", repo="repo", champion=False):
    tags = {"tai.data.store": store, "tai.data.repository": repo, "tai.data.commit": commit}
    return ModelVersionInfo("m", version, "run", tags, ["champion"] if champion else [])


class FakeRegistry:
    def __init__(self, versions, champion=None):
        self.versions, self._champion = versions, champion

    def champion(self):
        return self._champion

    def list_versions(self):
        return self.versions


def test_baseline_is_the_champions_data_commit():
    champion = _model("1", "c1", champion=True)
    registry = FakeRegistry([champion, _model("2", "c2")], champion)
    assert baseline_version(registry, VERSION) == DataVersion("oxen", "repo", "c1")


def test_baseline_without_champion_is_the_newest_versions_commit():
    registry = FakeRegistry([_model("1", "c1"), _model("2", "c2"), _model("3", "x", repo="other")])
    assert baseline_version(registry, VERSION).commit_id == "c2"


def test_no_baseline_for_the_first_model_or_the_same_commit():
    assert baseline_version(FakeRegistry([]), VERSION) is None
    assert baseline_version(FakeRegistry([_model("1", "c3")]), VERSION) is None
    assert drift_not_applicable(None) == dict.fromkeys(
        DRIFT_METRIC_NAMES, "no earlier model's data commit to compare with"
    )
    assert all(math.isnan(v) for v in drift_metrics(None).values())


def _brighten(dataset_root, factor: float) -> None:
    for png in (dataset_root / "train").rglob("*.png"):
        pixels = np.asarray(Image.open(png), dtype=np.float64) * factor
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="L").save(png)


@pytest.mark.integration
def test_drift_between_two_commits_finds_the_changed_data(tiny_settings, tmp_path):
    source = write_tiny_dataset(tmp_path / "src", counts={"train": 30, "val": 6, "test": 6})
    first = commit_dataset(tiny_settings, tmp_path / "src", "first")
    _brighten(source, 0.4)
    second = commit_dataset(tiny_settings, tmp_path / "src", "darker training images")
    store = make_data_store(tiny_settings)
    registry = FakeRegistry([_model("1", first, repo=store.repository)])
    version = DataVersion("oxen", store.repository, second)

    @flow
    def measure():
        root = store.materialize(second)
        card = data_card(root, "tiny", version, tiny_settings.cache_dir, 0)
        return compare_with_baseline(
            store, registry, version, root, card, "tiny", tiny_settings.cache_dir, 0
        )

    drift = measure()
    assert drift["baseline_commit"] == first
    assert drift["metrics"]["data_drifted_factors"] >= 1
    assert drift["metrics"]["data_factor_drift_max_ks"] > 0.5
    assert set(drift["metrics"]) == set(DRIFT_METRIC_NAMES)
    # Darker images have a lower noise level in [0, 1] units.
    assert drift["noise"]["overall_median"] < drift["noise"]["overall_median_baseline"]
    # Cached by (baseline, commit): the second call reads the same result back.
    cached = list((tiny_settings.cache_dir / "datadrift").glob("*.json"))
    assert len(cached) == 1
    assert measure() == drift
