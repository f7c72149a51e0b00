"""A tiny model and a figure-recording logger for the DDP test; importable by the
processes that ``ddp_spawn`` starts (they unpickle these classes by module path)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger
from torch import Tensor, nn
from torch.utils.data import DistributedSampler, Sampler


class TinyNet(pl.LightningModule):
    """Conv, ReLU, pool, linear; no batch norm or dropout, so that two processes that each
    see half of every batch take the same SGD steps as one process that sees it whole."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten()
        )
        self.head = nn.Linear(36, 3)
        self.lr = lr

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return {"logits": self(batch[0])}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class _FigureFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add_figure(self, tag: str, figure, global_step: int = 0) -> None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        (self.folder / f"rank{rank}-{tag.replace('/', '_')}").touch()


class FigureFileLogger(Logger):
    """Writes an empty file per figure it is handed, named with the process's rank; not
    restricted to rank zero, so a figure handed over on another rank shows."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    @property
    def name(self) -> str:
        return "figures"

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self) -> _FigureFiles:
        return _FigureFiles(self.folder)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass


class TwoRanksInOne(Sampler[int]):
    """One process's order of ``n`` training samples that takes, at step k, the k-th
    batches of ``batch_size`` of both ranks of a two-process fit (Lightning's
    ``DistributedSampler`` for training: shuffled with ``PL_GLOBAL_SEED``, re-drawn with
    each epoch); with batches of ``2 * batch_size`` and a mean loss, it takes the same
    steps as the two processes together."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n, self.batch_size, self.epoch = n, batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        orders = []
        for rank in (0, 1):
            sampler = DistributedSampler(
                range(self.n),
                num_replicas=2,
                rank=rank,
                shuffle=True,
                seed=int(os.getenv("PL_GLOBAL_SEED", 0)),
            )
            sampler.set_epoch(self.epoch)
            orders.append(list(sampler))
        for start in range(0, len(orders[0]), self.batch_size):
            for order in orders:
                yield from order[start : start + self.batch_size]
