"""Fit time with the TAI callbacks against the same fit without them.

Same data (the MNIST sample: 3,500 training and 750 validation images), same model
(small CNN), seed, batch size (64) and MLflow logger, in one process; runs alternate
between the two configurations. Prints the medians of wall and CPU time, their ratios
as a markdown row for BENCHMARKS.md, and with ``--profile`` where the callbacks' time
goes (per callback, interim and final checks, and the tai calls inside them).

Callback sets (``--config``):

- ``defaults``: the four callbacks with their own defaults (the demo's settings with
  ``--epochs 5``);
- ``pipeline``: ``flows.tasks.training.tai_callbacks`` (three callbacks, budget 512);
- ``readme``: the four as README's "Using the TAI callbacks" shows them, with the small
  CNN's penultimate layer, ``model.features``, for ``embedding_layer``.

    .venv/bin/python benchmarks/callback_overhead.py [--config defaults] [--epochs 5]
        [--repeats 3] [--threads N] [--profile]

``--threads`` sets torch's intra-op threads (default: torch's choice, one per core). On
shared cores, torch's threads wait for each other at every operation; one thread keeps
timings meaningful when the load is above the number of cores.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger

import callbacks
import callbacks._base
import callbacks.adversarial
import callbacks.calibration
import callbacks.prototypes
import callbacks.robustness
from flows.tasks.training import make_trainer, tai_callbacks
from infra.sample_data import write_mnist_sample
from infra.settings import load_settings
from tai.modeling.datamodule import FolderDataModule
from tai.modeling.module import ClassifierModule


def callback_set(config: str, settings) -> list[pl.Callback]:
    if config == "pipeline":
        return tai_callbacks(settings.tai_budget, settings.corruptions)
    if config == "defaults":
        return [
            callbacks.CalibrationCallback(),
            callbacks.RobustnessCallback(),
            callbacks.PrototypeExplanationCallback(),
            callbacks.AdversarialCallback(),
        ]
    if config == "readme":
        return [
            callbacks.CalibrationCallback(n_bins=15, budget=1000),
            callbacks.RobustnessCallback(
                corruptions=["gaussian_noise", "contrast"], every_n_epochs=2
            ),
            callbacks.PrototypeExplanationCallback(per_class=1, embedding_layer="model.features"),
            callbacks.AdversarialCallback(
                epsilons=[0.05, 0.1], steps=10, budget=64, every_n_epochs=5
            ),
        ]
    raise ValueError(f"unknown config {config!r}")


class Profile:
    """Wall and CPU seconds per (callback, where, part), by wrapping the callbacks' check
    and the tai functions their modules call. CPU is the calling thread's
    (``time.thread_time``): exact with ``--threads 1``, while figures are drawn in the
    figure thread alongside the checks of the main one."""

    MAIN = {
        callbacks.calibration: ("calibration_summary",),
        callbacks.robustness: ("corrupt",),
        callbacks.prototypes: ("select_prototypes", "attribute", "deletion_auc"),
        callbacks.adversarial: ("adversarial_accuracy",),
    }
    FIGURES = {
        callbacks.calibration: ("calibration", "reliability_diagram"),
        callbacks.robustness: ("robustness", "robustness_curve"),
        callbacks.prototypes: ("explain", "prototype_figure"),
        callbacks.adversarial: ("adversarial", "adversarial_curve"),
    }

    def __init__(self) -> None:
        self.times: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.context = ("", "")
        base = callbacks._base.TaiCheckCallback
        self._patch(base, "_check", self._around_check)
        self._patch(base, "log_metrics", self._timed(lambda *a: (*self.context, "log_metrics")))
        self._patch(base, "wait_for_figures", self._timed_wait)
        self._patch(
            callbacks.RobustnessCallback,
            "_accuracy",
            self._timed(lambda *a: (*self.context, "forward passes")),
        )
        for module, names in self.MAIN.items():
            for name in names:
                self._patch(module, name, self._timed(lambda *a, n=name: (*self.context, n)))
        for module, (cb, name) in self.FIGURES.items():
            key = (cb, "figure thread", f"draw: {name}")
            self._patch(module, name, self._timed(lambda *a, k=key: k))
        # log_figure(trainer, figure, "tai/<callback>/<stem>_epochNNN.png", step=...)
        self._patch(
            callbacks._base,
            "log_figure",
            self._timed(lambda *a: (a[2].split("/")[1], "figure thread", "render and store")),
        )

    def _patch(self, owner, name, make) -> None:
        setattr(owner, name, make(getattr(owner, name)))

    def _add(self, key, wall: float, cpu: float) -> None:
        self.times[key][0] += wall
        self.times[key][1] += cpu

    def _around_check(self, check):
        @functools.wraps(check)
        def wrapper(cb, trainer, pl_module, *, final, in_validation):
            self.context = (cb.name, "final check" if final else "interim checks")
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return check(cb, trainer, pl_module, final=final, in_validation=in_validation)
            finally:
                key = (*self.context, "whole check")
                self._add(key, time.perf_counter() - wall, time.thread_time() - cpu)

        return wrapper

    def _timed_wait(self, wait):
        @functools.wraps(wait)
        def wrapper(cb):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return wait(cb)
            finally:
                key = (cb.name, "end of fit", "wait for figures")
                self._add(key, time.perf_counter() - wall, time.thread_time() - cpu)

        return wrapper

    def _timed(self, key_of):
        def make(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                key = key_of(*args)
                wall, cpu = time.perf_counter(), time.thread_time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._add(key, time.perf_counter() - wall, time.thread_time() - cpu)

            return wrapper

        return make

    def report(self, fits: int) -> None:
        print(f"\nwhere the callbacks' time goes (seconds per fit, mean of {fits} fits):")
        print("| callback | where | part | wall s | CPU s |")
        print("|---|---|---|---|---|")
        rows = dict(sorted(self.times.items()))
        for (name, where, part), (wall, cpu) in rows.items():
            print(f"| {name} | {where} | {part} | {wall / fits:.3f} | {cpu / fits:.3f} |")
            if part == "whole check":
                parts = [
                    v for (n, w, p), v in rows.items() if (n, w) == (name, where) and p != part
                ]
                rest = [wall - sum(v[0] for v in parts), cpu - sum(v[1] for v in parts)]
                print(
                    f"| {name} | {where} | rest (model passes, copies) | {rest[0] / fits:.3f} | "
                    f"{rest[1] / fits:.3f} |"
                )


def fit_seconds(data, settings, workdir: Path, config: str | None) -> tuple[float, float]:
    pl.seed_everything(0, verbose=False)
    module = ClassifierModule("small_cnn", data.in_channels, data.num_classes, data.classes)
    logger = MLFlowLogger(
        "bench",
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        artifact_location=(workdir / "art").as_uri(),
    )
    cbs = callback_set(config, settings) if config else []
    trainer = make_trainer(settings, logger=logger, callbacks=cbs)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=data)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("defaults", "pipeline", "readme"), default="defaults")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = Profile() if args.profile else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        settings = load_settings(workspace=workdir / "ws", max_epochs=args.epochs)
        write_mnist_sample(workdir / "data")
        data = FolderDataModule(workdir / "data", "mnist", batch_size=settings.batch_size)
        data.setup()
        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for flag in (False, True):
                times[flag].append(
                    fit_seconds(data, settings, workdir, args.config if flag else None)
                )
    load_after = os.getloadavg()
    print(f"config {args.config}, {args.epochs} epochs, torch threads {torch.get_num_threads()}")
    print(
        f"load average before {load_before[0]:.1f} {load_before[1]:.1f}, after "
        f"{load_after[0]:.1f} {load_after[1]:.1f} (1 and 5 min)"
    )
    for flag, label in ((False, "without"), (True, "with")):
        runs = ", ".join(f"{w:.1f} ({c:.1f})" for w, c in times[flag])
        print(f"runs {label} callbacks, wall (CPU) s: {runs}")
    base = [statistics.median(t[i] for t in times[False]) for i in (0, 1)]
    tai = [statistics.median(t[i] for t in times[True]) for i in (0, 1)]
    print("| config | epochs | without: wall (CPU) s | with: wall (CPU) s | ratio wall (CPU) |")
    print("|---|---|---|---|---|")
    ratio = f"{tai[0] / base[0]:.3f}x ({tai[1] / base[1]:.3f}x)"
    print(
        f"| {args.config} | {args.epochs} | {base[0]:.1f} ({base[1]:.1f}) | "
        f"{tai[0]:.1f} ({tai[1]:.1f}) | {ratio} |"
    )
    if profile:
        profile.report(args.repeats)


if __name__ == "__main__":
    main()
