"""Data engineering, second half: how the data changed since the last model's data.

The baseline is the data commit of the current champion, else of the newest registered
model version, in the same store and repository; the first model has none, and its
drift gates are skipped. The comparison (:func:`tai.data.drift.data_drift`) is cached
by (baseline, commit, code version), like the data card.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.lineage import code_version
from flows.tasks.data import DataCard, data_card, write_atomically
from infra.datastore.base import DataStore, DataVersion
from infra.mlflow_store import MlflowStore
from tai import tags
from tai.data.card import pixel_format
from tai.data.drift import DRIFT_METRIC_NAMES, data_drift
from tai.data.images import InputFormat, load_split
from tai.data.profile import scan_dataset

# Training images per commit that enter the factor-drift tests (bounds their cost).
DRIFT_IMAGES = 1000


def baseline_version(registry: MlflowStore, version: DataVersion) -> DataVersion | None:
    """The data commit of the champion, else of the newest model version; None if none
    was trained on this store and repository or it is ``version`` itself."""
    champion = registry.champion()
    candidates = ([champion] if champion else []) + registry.list_versions()[::-1]
    for model in candidates:
        labels = model.tags
        if (
            labels.get(tags.DATA_STORE) == version.store
            and labels.get(tags.DATA_REPOSITORY) == version.repository
            and labels.get(tags.DATA_COMMIT)
        ):
            commit = labels[tags.DATA_COMMIT]
            if commit == version.commit_id:
                return None
            return DataVersion(version.store, version.repository, commit)
    return None


def drift_not_applicable(drift: dict | None) -> dict[str, str]:
    """Drift gates that cannot apply (no baseline), with the reason."""
    if drift is not None:
        return {}
    return dict.fromkeys(DRIFT_METRIC_NAMES, "no earlier model's data commit to compare with")


def drift_metrics(drift: dict | None) -> dict[str, float]:
    """The gateable drift numbers; NaN without a baseline."""
    if drift is None:
        return dict.fromkeys(DRIFT_METRIC_NAMES, float("nan"))
    return {k: float(v) for k, v in drift["metrics"].items()}


@task(cache_policy=NO_CACHE)
def compare_with_baseline(
    store: DataStore,
    registry: MlflowStore,
    version: DataVersion,
    root: Path,
    data: DataCard,
    dataset: str,
    cache_dir: Path,
    seed: int,
) -> dict | None:
    """Noise shift and factor drift against the baseline commit (JSON-ready), or None."""
    log = get_run_logger()
    baseline = baseline_version(registry, version)
    if baseline is None:
        log.info("no earlier model's data commit: data drift not measured")
        return None
    key = f"{version.store}-{version.repository}-{baseline.commit_id}-{version.commit_id}"
    path = cache_dir / "datadrift" / f"{key}-{code_version()}.json"
    if path.is_file():
        return json.loads(path.read_text())
    base_root = store.materialize(baseline.commit_id)
    base_card = data_card.fn(base_root, dataset, baseline, cache_dir, seed)
    fmt = pixel_format(data.card["summary"])
    drift = data_drift(
        baseline.commit_id,
        base_card.card,
        data.card,
        _train_images(base_root, dataset, seed, fmt),
        _train_images(root, dataset, seed, fmt),
        seed=seed,
    ).as_dict()
    write_atomically(path, json.dumps(drift, indent=2, sort_keys=True))
    log.info(
        "data drift against commit %s: %s",
        baseline.commit_id,
        ", ".join(f"{k} = {v:.4g}" for k, v in drift["metrics"].items()),
    )
    return drift


def _train_images(root: Path, dataset: str, seed: int, fmt: InputFormat):
    """A bounded sample of a commit's training images in ``fmt``: both commits in the same
    format, so their pixels compare."""
    records = [r for r in scan_dataset(root, dataset) if r.split == "train"]
    classes = sorted({r.label for r in records})
    return load_split(root, records, classes, max_images=DRIFT_IMAGES, seed=seed, fmt=fmt).images
