"""CalibrationCallback: ECE, MCE, NLL, Brier score and a reliability diagram."""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
from torch import Tensor

from callbacks._base import TaiCheckCallback, _check_positive_int
from tai.principles.reliability.calibration import CalibrationResult, calibration_summary
from tai.report.figures.reliability import reliability_diagram


class CalibrationCallback(TaiCheckCallback):
    """Measures top-label calibration on validation samples and logs a reliability diagram.

    Logs ``tai/calibration/{ece,mce,nll,brier}`` through ``pl_module.log`` and the figure
    ``tai/calibration/reliability_epochNNN.png`` through the trainer's loggers. The check
    reads the logits validation computed (when ``validation_step`` returns them, as
    ``{"logits": ...}`` or the tensor), so it costs milliseconds and runs in full every
    time.

    Args:
        n_bins: equal-width confidence bins (Guo et al. 2017 use 15).
        budget: at most this many validation samples per check.
        every_n_epochs: check every n-th epoch; ``None``: the last epoch only. The last
            epoch always checks.
        log_figures: log the reliability diagram: ``"last"`` epoch, ``True`` every check.

    Raises:
        ValueError: an argument is not a positive integer.

    Example::

        trainer = Trainer(callbacks=[CalibrationCallback(n_bins=15, budget=1000)])
    """

    name = "calibration"

    def __init__(
        self,
        n_bins: int = 15,
        *,
        budget: int = 512,
        every_n_epochs: int | None = 1,
        log_figures: bool | Literal["last"] = "last",
    ) -> None:
        _check_positive_int("n_bins", n_bins)
        super().__init__(budget=budget, every_n_epochs=every_n_epochs, log_figures=log_figures)
        self.n_bins = n_bins

    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
        *,
        final: bool,
    ) -> CalibrationResult:
        result = calibration_summary(logits.softmax(dim=1), targets, n_bins=self.n_bins)
        self.log_metrics(
            trainer, pl_module, {f"tai/calibration/{k}": v for k, v in result.as_dict().items()}
        )
        if self.wants_figure(trainer, final=final):
            self.submit_figure(trainer, lambda: reliability_diagram(result), "reliability")
        return result
