"""What every TAI callback shares: a bounded sample buffer, the run guard, figure logging.

A TAI callback gathers up to ``budget`` validation samples while validation runs, then,
at the end of the validation epoch, makes one call into ``tai/`` on them. Subclasses
implement :meth:`TaiCheckCallback.run_check` only.
"""

from __future__ import annotations

import abc
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from torch import Tensor


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        allowed = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}")


class SampleBuffer:
    """Keeps the first ``budget`` (images, targets, logits) seen in a validation epoch."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.clear()

    def clear(self) -> None:
        self._x: list[Tensor] = []
        self._y: list[Tensor] = []
        self._logits: list[Tensor] = []
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size >= self.budget

    def add(self, x: Tensor, y: Tensor, logits: Tensor) -> None:
        take = min(self.budget - self.size, len(y))
        if take <= 0:
            return
        self._x.append(x[:take].detach().cpu())
        self._y.append(y[:take].detach().cpu())
        self._logits.append(logits[:take].detach().float().cpu())
        self.size += take

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return torch.cat(self._x), torch.cat(self._y), torch.cat(self._logits)


def log_figure(trainer: pl.Trainer, figure: Figure, artifact_file: str) -> None:
    """Hand a figure to every logger that can store one.

    MLflow's client takes ``log_figure(run_id, figure, artifact_file)``, TensorBoard's
    writer ``add_figure(tag, figure, step)``; other loggers are skipped.
    """
    # The figures are pyplot-free (tai.report.figures): nothing to close afterwards.
    for logger in trainer.loggers:
        experiment = logger.experiment
        if hasattr(experiment, "log_figure") and getattr(logger, "run_id", None):
            experiment.log_figure(logger.run_id, figure, artifact_file)
        elif hasattr(experiment, "add_figure"):
            experiment.add_figure(artifact_file, figure, global_step=trainer.global_step)


class TaiCheckCallback(pl.Callback, abc.ABC):
    """Base class: buffer validation samples within a budget, run a check every n epochs.

    Args:
        budget: at most this many validation samples per check.
        every_n_epochs: run the check every n-th validation epoch (the last epoch always
            runs when ``always_on_last_epoch``).
        log_figures: hand figures to the loggers: ``"last"`` (default) on the last
            epoch only, ``True`` on every check, ``False`` never. Rendering and storing
            a figure costs more than most checks, so per-epoch figures are opt-in.
    """

    name = "check"

    def __init__(
        self,
        *,
        budget: int = 512,
        every_n_epochs: int = 1,
        log_figures: bool | Literal["last"] = "last",
    ) -> None:
        super().__init__()
        _check_positive_int("budget", budget)
        _check_positive_int("every_n_epochs", every_n_epochs)
        self.budget = budget
        self.every_n_epochs = every_n_epochs
        if log_figures not in (True, False, "last"):
            raise ValueError(f"`log_figures` must be True, False or 'last', got {log_figures!r}")
        self.log_figures = log_figures
        self._buffer = SampleBuffer(budget)
        self.last_result: Any = None

    # -- the guard -------------------------------------------------------------------
    def should_run(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return last or epoch % self.every_n_epochs == 0

    # -- hooks: a guard plus one call -----------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._buffer.clear()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._buffer.full or not self.should_run(trainer):
            return
        x, y = batch[0], batch[1]
        logits = outputs.get("logits") if isinstance(outputs, dict) else None
        if logits is None:
            with torch.no_grad():
                logits = pl_module(x)
        self._buffer.add(x, y, logits)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._buffer.size == 0 or not self.should_run(trainer):
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            # Validation runs under inference mode; gradient-based checks (explanations,
            # attacks) need ordinary tensors, hence the clones outside it.
            with torch.inference_mode(False), torch.enable_grad():
                x, y, logits = (t.clone() for t in self._buffer.tensors())
                self._buffer.clear()
                self.last_result = self.run_check(trainer, pl_module, x, y, logits)
        finally:
            pl_module.train(was_training)

    @abc.abstractmethod
    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
    ) -> Any:
        """Compute, log and return this check's result on the buffered samples."""

    def wants_figure(self, trainer: pl.Trainer) -> bool:
        """Whether this check's figure goes to the loggers (see ``log_figures``)."""
        if self.log_figures == "last":
            return (
                trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
            )
        return bool(self.log_figures)

    def figure_name(self, trainer: pl.Trainer, stem: str) -> str:
        return f"tai/{self.name}/{stem}_epoch{trainer.current_epoch:03d}.png"

    def state_dict(self) -> dict[str, Any]:
        return {}
