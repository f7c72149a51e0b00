"""Channels-last (NHWC) against the default NCHW layout of a model's weights, on the CPU.

In one process, alternating the two layouts, medians of ``--repeats`` (the sizes per
model are in ``_cases``; for the small CNN on 28x28 grey images, the demo's):

- ``forward``: images through the model under ``no_grad`` (small CNN: 2,560 in batches
  of 128, the robustness check's final grid of 20 cells of 128);
- ``input gradients``: forward and backward passes to the input, parameters frozen, as
  PGD makes them (small CNN: 128 images, 10 steps);
- ``train steps``: optimiser steps (AdamW) in train mode (small CNN: 20 of 128);
- ``fit`` (``--fit``): the 5-epoch fit of ``ClassifierModule("small_cnn")`` on the MNIST
  sample through the pipeline's trainer, with and without its channels-last
  ``configure_model`` (medians of at least 3).

The other models, with fewer and smaller batches: ``resnet18_small`` on 32x32 RGB and
torchvision's ``resnet18`` on 224x224 RGB.

    .venv/bin/python benchmarks/channels_last.py [--repeats 5] [--fit]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tai.modeling.memory_format import to_channels_last
from tai.modeling.models import build_model


def _forward(model: nn.Module, x: torch.Tensor, batch: int) -> None:
    with torch.no_grad():
        for chunk in x.split(batch):
            model(chunk)


def _input_gradients(model: nn.Module, x: torch.Tensor, batch: int, steps: int) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    y = torch.zeros(len(x), dtype=torch.long)
    for chunk, target in zip(x.split(batch), y.split(batch), strict=True):
        adv = chunk.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = nn.functional.cross_entropy(model(adv), target[: len(adv)], reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = (adv + 0.01 * grad.sign()).clamp(0, 1).detach()
    for p in model.parameters():
        p.requires_grad_(True)


def _train_steps(model: nn.Module, x: torch.Tensor, batch: int) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    y = torch.zeros(len(x), dtype=torch.long)
    for chunk, target in zip(x.split(batch), y.split(batch), strict=True):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(chunk), target).backward()
        optimizer.step()
    model.eval()


def _cases() -> list[tuple[str, Callable[[], nn.Module], tuple[int, ...], tuple[int, ...]]]:
    # (name, model, image shape, (forward images, batch, gradient images, PGD steps,
    # training batches))
    return [
        ("small_cnn 1x28x28", lambda: build_model("small_cnn", in_channels=1, num_classes=10),
         (1, 28, 28), (2560, 128, 128, 10, 20)),
        ("resnet18_small 3x32x32", lambda: build_model(
            "resnet18_small", in_channels=3, num_classes=10), (3, 32, 32), (256, 64, 64, 2, 4)),
        ("resnet18 3x224x224", lambda: build_model(
            "resnet18", in_channels=3, num_classes=10, image_size=224), (3, 224, 224),
         (32, 16, 16, 1, 2)),
    ]  # fmt: skip


def _median_pair(fn: Callable[[bool], None], repeats: int) -> tuple[float, float]:
    times: dict[bool, list[float]] = {False: [], True: []}
    for flag in (False, True):  # warm-up, not counted
        fn(flag)
    for _ in range(repeats):
        for flag in (False, True):
            start = time.perf_counter()
            fn(flag)
            times[flag].append(time.perf_counter() - start)
    return statistics.median(times[False]), statistics.median(times[True])


def _row(case: str, what: str, nchw: float, nhwc: float) -> None:
    print(f"| {case} | {what} | {nchw:.3f} | {nhwc:.3f} | {nchw / nhwc:.2f}x |")


def _kernels(case, repeats: int) -> None:
    name, make, shape, (n, batch, n_grad, steps, n_train) = case
    torch.manual_seed(0)
    models = {False: make().eval(), True: make().eval()}
    models[True].load_state_dict(models[False].state_dict())
    to_channels_last(models[True])
    x = torch.rand(n, *shape)
    train_x = torch.rand(batch * n_train, *shape)
    forward = _median_pair(lambda f: _forward(models[f], x, batch), repeats)
    _row(name, f"forward, {n} images", *forward)
    gradients = _median_pair(
        lambda f: _input_gradients(models[f], x[:n_grad], batch, steps), repeats
    )
    _row(name, f"input gradients, {n_grad} images x {steps}", *gradients)
    train = _median_pair(lambda f: _train_steps(models[f], train_x, batch), repeats)
    _row(name, f"train steps, {n_train} of {batch}", *train)


def _fit(repeats: int) -> None:
    import pytorch_lightning as pl

    from flows.tasks.training import make_trainer
    from infra.sample_data import write_mnist_sample
    from infra.settings import load_settings
    from tai.modeling.datamodule import FolderDataModule
    from tai.modeling.module import ClassifierModule

    class Nchw(ClassifierModule):
        def configure_model(self) -> None:  # the layout the model was built in
            pass

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = load_settings(workspace=work / "ws", max_epochs=5)
        write_mnist_sample(work / "data")
        data = FolderDataModule(work / "data", "mnist", batch_size=settings.batch_size)
        data.setup()

        def fit(channels_last: bool) -> None:
            pl.seed_everything(0, verbose=False)
            cls = ClassifierModule if channels_last else Nchw
            module = cls("small_cnn", data.in_channels, data.num_classes, data.classes)
            make_trainer(settings, logger=False, callbacks=[]).fit(module, datamodule=data)

        _row("small_cnn 1x28x28", "5-epoch fit, MNIST sample", *_median_pair(fit, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit", action="store_true")
    args = parser.parse_args()
    before = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, medians of {args.repeats}, seconds")
    print("| model | work | NCHW | channels-last | speed-up |")
    print("|---|---|---|---|---|")
    for case in _cases():
        _kernels(case, args.repeats)
    if args.fit:
        _fit(max(args.repeats // 2, 3))
    after = os.getloadavg()
    print(
        f"load average before {before[0]:.1f} {before[1]:.1f}, after {after[0]:.1f} {after[1]:.1f}"
    )


if __name__ == "__main__":
    main()
