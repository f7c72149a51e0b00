"""Peak memory of the training stage, phase by phase, in one process.

The pipeline's trainer (`flows.tasks.training.make_trainer`) and TAI callbacks
(`tai_callbacks`, the default budget and corruptions) fit the small CNN for one epoch on
random RGB images of ``--size`` (made on the fly, no folder), while a thread samples the
process's resident memory every 20 ms (glibc's mmap threshold fixed at 128 px and more, as
`tai` runs).
Prints the peak of each phase: the training steps, the validation loop, each callback's
check and what follows.

    .venv/bin/python benchmarks/training_memory.py --size 224
"""

from __future__ import annotations

import argparse
import threading
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from flows.tasks.training import make_trainer, tai_callbacks
from infra.memory import fix_mmap_threshold_for
from infra.settings import Settings
from tai.modeling.module import ClassifierModule


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6


class RandomImages(Dataset):
    def __init__(self, n: int, size: int, classes: int) -> None:
        self.n, self.size, self.classes = n, size, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, self.size, self.size, generator=g), i % self.classes


class Phases(pl.Callback):
    """Names the phase the sampler charges memory to."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def on_train_batch_start(self, *args, **kwargs) -> None:
        self.state["phase"] = "training steps"

    def on_validation_start(self, *args, **kwargs) -> None:
        self.state["phase"] = "validation loop"

    def on_validation_epoch_end(self, *args, **kwargs) -> None:
        self.state["phase"] = "after the checks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--val", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--glibc-default", action="store_true", help="leave glibc's mmap threshold alone"
    )
    args = parser.parse_args()
    if not args.glibc_default:
        fix_mmap_threshold_for((args.size, args.size))  # as `tai` does
    settings = Settings(max_epochs=1)
    classes = 4
    state = {"phase": "set-up", "peaks": {}}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peaks = state["peaks"]
            phase = state["phase"]
            peaks[phase] = max(peaks.get(phase, 0.0), rss_mb())
            time.sleep(0.02)

    callbacks = tai_callbacks(settings.tai_budget, settings.corruptions, args.batch_size)
    for callback in callbacks:
        compute, name = callback._compute, type(callback).__name__

        def labelled(*a, _compute=compute, _name=name, **k):
            state["phase"] = f"check: {_name}"
            try:
                return _compute(*a, **k)
            finally:
                state["phase"] = "validation loop"

        callback._compute = labelled
    module = ClassifierModule(
        "small_cnn", in_channels=3, num_classes=classes, image_size=(args.size, args.size)
    )
    loaders = [
        DataLoader(RandomImages(n, args.size, classes), batch_size=args.batch_size, shuffle=s)
        for n, s in ((args.train, True), (args.val, False))
    ]
    trainer = make_trainer(settings, logger=False, callbacks=[*callbacks, Phases(state)])
    threading.Thread(target=sample, daemon=True).start()
    state["peaks"]["set-up"] = rss_mb()
    started = time.monotonic()
    trainer.fit(module, *loaders)
    for callback in callbacks:
        callback.wait_for_figures()
    stop.set()
    print(
        f"size {args.size}, batch {args.batch_size}, budget {settings.tai_budget}, "
        f"{time.monotonic() - started:.0f} s"
    )
    for phase, peak in state["peaks"].items():
        print(f"{phase:40s} peak {peak:7.0f} MB")


if __name__ == "__main__":
    main()
