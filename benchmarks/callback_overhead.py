"""Fit time with all TAI callbacks against the same fit without them.

Same data (the MNIST sample), same model, same seed, same MLflow logger, in one
process; runs alternate between the two configurations. Prints the medians and the
ratio as a markdown row for BENCHMARKS.md.

    .venv/bin/python benchmarks/callback_overhead.py [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger

from flows.tasks.training import make_trainer, tai_callbacks
from infra.sample_data import write_mnist_sample
from infra.settings import load_settings
from tai.modeling.datamodule import FolderDataModule
from tai.modeling.module import ClassifierModule


def fit_seconds(data: FolderDataModule, settings, workdir: Path, *, with_callbacks: bool) -> float:
    pl.seed_everything(0, verbose=False)
    module = ClassifierModule("small_cnn", data.in_channels, data.num_classes, data.classes)
    logger = MLFlowLogger(
        "bench",
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        artifact_location=(workdir / "art").as_uri(),
    )
    callbacks = tai_callbacks(settings.tai_budget, settings.corruptions) if with_callbacks else []
    trainer = make_trainer(settings, logger=logger, callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        settings = load_settings(workspace=workdir / "ws", max_epochs=args.epochs)
        write_mnist_sample(workdir / "data")
        data = FolderDataModule(workdir / "data", "mnist", batch_size=settings.batch_size)
        data.setup()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for flag in (False, True):
                times[flag].append(fit_seconds(data, settings, workdir, with_callbacks=flag))
    base, tai = statistics.median(times[False]), statistics.median(times[True])
    print(f"runs without callbacks: {[round(t, 1) for t in times[False]]}")
    print(f"runs with callbacks:    {[round(t, 1) for t in times[True]]}")
    print("| epochs | fit without TAI callbacks (median s) | fit with (median s) | ratio |")
    print("|---|---|---|---|")
    print(f"| {args.epochs} | {base:.1f} | {tai:.1f} | {tai / base:.3f}x |")


if __name__ == "__main__":
    main()
