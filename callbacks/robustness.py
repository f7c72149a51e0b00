"""RobustnessCallback: accuracy under image corruptions at severities 1-5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytorch_lightning as pl
from torch import Tensor

from callbacks._base import TaiCheckCallback, _check_positive_int, log_figure
from tai.principles.reliability.corruptions import (
    DEFAULT_CORRUPTIONS,
    SEVERITIES,
    available_corruptions,
)
from tai.principles.reliability.robustness import RobustnessResult, corruption_accuracy
from tai.report.figures.reliability import robustness_curve


class RobustnessCallback(TaiCheckCallback):
    """Accuracy of the model on corrupted validation samples, per corruption and severity.

    Logs ``tai/robustness/mean_corruption_accuracy``, ``tai/robustness/<name>_mean`` and
    the clean accuracy of the same samples; the accuracy-against-severity curve goes to
    the loggers as a figure.

    Args:
        corruptions: names from
        :func:`tai.principles.reliability.corruptions.available_corruptions`.
        severities: subset of 1..5.
        budget: at most this many validation samples per check.
        every_n_epochs: run every n-th validation epoch; the last epoch always runs.
        batch_size: images per forward pass (bounds memory).
        seed: seeds the random corruptions, so epochs are comparable.
        log_figures: log the robustness curve: ``"last"`` epoch, ``True`` every check.

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
        budget: int = 256,
        every_n_epochs: int = 1,
        batch_size: int = 256,
        seed: int = 0,
        log_figures: bool | Literal["last"] = "last",
    ) -> None:
        known = available_corruptions()
        unknown = [c for c in corruptions if c not in known]
        if unknown or not corruptions:
            raise ValueError(
                f"`corruptions` must be a non-empty list of {', '.join(known)}; "
                f"got {list(corruptions)!r}"
            )
        bad = [s for s in severities if s not in SEVERITIES]
        if bad or not severities:
            raise ValueError(
                f"`severities` must be a non-empty subset of 1..5, got {list(severities)!r}"
            )
        _check_positive_int("batch_size", batch_size)
        super().__init__(budget=budget, every_n_epochs=every_n_epochs, log_figures=log_figures)
        self.corruptions = tuple(corruptions)
        self.severities = tuple(severities)
        self.batch_size = batch_size
        self.seed = seed

    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
    ) -> RobustnessResult:
        images = images.to(pl_module.device)
        result = corruption_accuracy(
            pl_module,
            images,
            targets.to(pl_module.device),
            corruptions=self.corruptions,
            severities=self.severities,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        # Per-severity cells stay in the figure and the report; the logger gets summaries.
        summary = {
            k: v
            for k, v in result.as_dict().items()
            if k in ("clean_accuracy", "mean_corruption_accuracy") or k.endswith("_mean")
        }
        pl_module.log_dict({f"tai/robustness/{k}": v for k, v in summary.items()})
        if self.wants_figure(trainer):
            log_figure(trainer, robustness_curve(result), self.figure_name(trainer, "curve"))
        return result
