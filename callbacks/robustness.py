"""RobustnessCallback: accuracy under image corruptions at severities 1-5."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor

from callbacks._base import TaiCheckCallback, _check_positive_int
from callbacks._grid import grid_share, interim_index
from tai.principles.reliability.corruptions import (
    DEFAULT_CORRUPTIONS,
    SEVERITIES,
    available_corruptions,
    corrupt,
)
from tai.principles.reliability.robustness import RobustnessResult
from tai.report.figures.reliability import robustness_curve


@dataclass(frozen=True)
class RobustnessCells:
    """What an interim check measured: a share of the corruption x severity grid.

    Attributes:
        clean_accuracy: top-1 accuracy on the uncorrupted samples.
        accuracy: ``(corruption, severity)`` -> accuracy, for the cells measured only.
    """

    clean_accuracy: float
    accuracy: dict[tuple[str, int], float]


class RobustnessCallback(TaiCheckCallback):
    """Accuracy of the model on corrupted validation samples, per corruption and severity.

    Each cell (a corruption at a severity) is the accuracy on the same ``budget`` samples
    corrupted with :func:`tai.principles.reliability.corruptions.corrupt` and ``seed``,
    equal to :func:`tai.principles.reliability.robustness.corruption_accuracy`'s; the
    clean accuracy comes from the logits validation computed.

    The final check (last epoch) runs the whole grid and logs
    ``tai/robustness/clean_accuracy``, ``tai/robustness/mean_corruption_accuracy``,
    ``tai/robustness/<name>_mean`` and every cell ``tai/robustness/<name>_s<k>``; the
    accuracy-against-severity curve goes to the loggers as a figure. An interim check
    (an earlier epoch) runs ``cells_per_epoch`` cells, a seeded share that moves on
    through the grid from check to check, and logs the clean accuracy and those cells
    only, under the same cell names: the means are logged from whole grids only.

    Args:
        corruptions: names from
        :func:`tai.principles.reliability.corruptions.available_corruptions`.
        severities: subset of 1..5.
        budget: at most this many validation samples per check (128 by default: each
            cell's accuracy to about +-0.05 at 95% near 0.9, the whole grid's 20 cells in
            about 0.4 s for the small CNN on CPU; logged as ``tai/robustness/samples``).
        every_n_epochs: an interim check every n-th epoch; ``None``: the last epoch only.
        cells_per_epoch: cells of an interim check; ``None``: the whole grid every time.
        batch_size: images per forward pass (bounds memory).
        seed: seeds the random corruptions (so epochs are comparable) and the order in
            which interim checks visit the grid.
        log_figures: log the robustness curve: ``"last"`` epoch, ``True`` every check
            that runs the whole grid.

    Raises:
        ValueError: an unknown corruption, a severity outside 1-5, a non-positive size.

    Example::

        trainer = Trainer(callbacks=[RobustnessCallback(corruptions=["gaussian_noise"])])
    """

    name = "robustness"

    def __init__(
        self,
        corruptions: Sequence[str] = DEFAULT_CORRUPTIONS,
        severities: Sequence[int] = SEVERITIES,
        *,
        budget: int = 128,
        every_n_epochs: int | None = 1,
        cells_per_epoch: int | None = 2,
        batch_size: int = 256,
        seed: int = 0,
        log_figures: bool | Literal["last"] = "last",
    ) -> None:
        known = available_corruptions()
        unknown = [c for c in corruptions if c not in known]
        if (
            unknown
            or not corruptions
            or isinstance(corruptions, str)
            or len(set(corruptions)) != len(corruptions)
        ):
            raise ValueError(
                f"`corruptions` must be a non-empty list of distinct names from "
                f"{', '.join(known)}; "
                f"got {corruptions if isinstance(corruptions, str) else list(corruptions)!r}"
            )
        bad = [s for s in severities if s not in SEVERITIES]
        if bad or not severities or len(set(severities)) != len(severities):
            raise ValueError(
                f"`severities` must be a non-empty subset of 1..5, got {list(severities)!r}"
            )
        _check_positive_int("cells_per_epoch", cells_per_epoch, allow_none=True)
        _check_positive_int("batch_size", batch_size)
        super().__init__(budget=budget, every_n_epochs=every_n_epochs, log_figures=log_figures)
        self.corruptions = tuple(corruptions)
        self.severities = tuple(severities)
        self.cells_per_epoch = cells_per_epoch
        self.batch_size = batch_size
        self.seed = seed

    @property
    def grid(self) -> list[tuple[str, int]]:
        """Every (corruption, severity) cell, corruption by corruption."""
        return [(c, s) for c in self.corruptions for s in self.severities]

    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
        *,
        final: bool,
    ) -> RobustnessResult | RobustnessCells:
        per_check = None if final else self.cells_per_epoch
        index = interim_index(trainer.current_epoch, self.every_n_epochs)
        cells = grid_share(self.grid, per_check, index, self.seed)
        clean = int((logits.argmax(dim=1) == targets).sum()) / len(targets)
        images, targets = images.to(pl_module.device), targets.to(pl_module.device)
        accuracy = {
            (name, s): self._accuracy(pl_module, corrupt(images, name, s, seed=self.seed), targets)
            for name, s in cells
        }
        if len(cells) < len(self.grid):
            metrics = {"clean_accuracy": clean}
            metrics.update({f"{name}_s{s}": a for (name, s), a in accuracy.items()})
            self.log_metrics(
                trainer, pl_module, {f"tai/robustness/{k}": v for k, v in metrics.items()}
            )
            return RobustnessCells(clean_accuracy=clean, accuracy=accuracy)
        result = RobustnessResult(
            clean_accuracy=clean,
            accuracy={c: [accuracy[c, s] for s in self.severities] for c in self.corruptions},
            severities=self.severities,
        )
        self.log_metrics(
            trainer, pl_module, {f"tai/robustness/{k}": v for k, v in result.as_dict().items()}
        )
        if self.wants_figure(trainer, final=final):
            self.submit_figure(trainer, lambda: robustness_curve(result), "curve")
        return result

    def _accuracy(self, pl_module: pl.LightningModule, images: Tensor, targets: Tensor) -> float:
        # Batches of `batch_size` from the start, as corruption_accuracy makes them.
        correct = 0
        with torch.no_grad():
            for x, y in zip(
                images.split(self.batch_size), targets.split(self.batch_size), strict=True
            ):
                correct += int((pl_module(x).argmax(dim=1) == y).sum())
        return correct / len(targets)
