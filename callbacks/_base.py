"""What every TAI callback shares: a bounded sample buffer, the run guard, logging.

A TAI callback gathers up to ``budget`` validation samples (and the logits validation
computed for them) while validation runs, then, at the end of the validation epoch, makes
its check on them. Subclasses implement :meth:`TaiCheckCallback.run_check` only.

Which epochs check, and how much (:meth:`TaiCheckCallback.check_kind`):

- the last epoch of a fit always runs the *final* check, in full: the model the fit
  returns is the one that gets measured completely;
- before it, every ``every_n_epochs``-th epoch runs an *interim* check, which a subclass
  may make cheaper (a seeded share of its grid, see ``cells_per_epoch`` of
  :class:`~callbacks.robustness.RobustnessCallback`); ``every_n_epochs=None`` skips them;
- when the end of a fit could not be foreseen at its last validation (early stopping,
  ``max_time``, validation not running on the last epoch), the final check runs in
  ``on_train_end`` on the samples of the last validation epoch and the final weights.

Figures are drawn and handed to the loggers by one background thread shared by all TAI
callbacks (matplotlib is not thread-safe: it runs in that thread only), so drawing
overlaps the next check or the next training epoch; ``teardown`` waits for them, so they
are stored when ``fit`` returns, and re-raises what drawing raised.

Under a multi-process strategy (``ddp``, ``ddp_spawn``, ...), each process buffers the
samples of its shard with their dataset indices; a check gathers every process's buffer
(``torch.distributed.all_gather_object``), drops the duplicates that ``DistributedSampler``
pads the last batches with, puts the samples back in dataset order and keeps the first
``budget``: the samples one process would have buffered from an unshuffled validation
loader. Rank zero computes the check on them and broadcasts the result, so every process
logs the same values (with ``sync_dist``, a mean of equal values) and holds the same
``last_result``; figures are drawn and stored by rank zero only.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DistributedSampler, SequentialSampler

from tai.modeling.memory_format import channels_last_on_cpu

Samples = tuple[Tensor, Tensor, Tensor | None, Tensor | None]
"""Images, targets, logits (None: not all returned by validation), dataset indices (None:
unknown)."""


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        allowed = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}")


class SampleBuffer:
    """Keeps the first ``budget`` (images, targets, logits, indices) seen in a validation
    epoch.

    Logits are those validation computed; when a batch came without them, the buffer
    holds none and :meth:`TaiCheckCallback.run_check` gets logits computed in one pass.
    Indices are the samples' positions in the validation dataset, kept under a
    multi-process strategy (see the module docstring); None when unknown.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.clear()

    def clear(self) -> None:
        self._x: list[Tensor] = []
        self._y: list[Tensor] = []
        self._logits: list[Tensor | None] = []
        self._indices: list[Tensor | None] = []
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size >= self.budget

    def add(
        self, x: Tensor, y: Tensor, logits: Tensor | None, indices: Tensor | None = None
    ) -> None:
        take = min(self.budget - self.size, len(y))
        if take <= 0:
            return
        self._x.append(x[:take].detach().cpu())
        self._y.append(y[:take].detach().cpu())
        self._logits.append(None if logits is None else logits[:take].detach().float().cpu())
        self._indices.append(None if indices is None else indices[:take])
        self.size += take

    def tensors(self) -> Samples | None:
        """The buffered samples, or None when there are none."""
        if self.size == 0:
            return None
        return (torch.cat(self._x), torch.cat(self._y), _cat(self._logits), _cat(self._indices))


def _cat(parts: list[Tensor | None]) -> Tensor | None:
    return None if not parts or any(t is None for t in parts) else torch.cat(parts)  # type: ignore[arg-type]


def _distributed(trainer: pl.Trainer) -> bool:
    return (
        trainer.world_size > 1
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
    )


def validation_batch_indices(trainer: pl.Trainer) -> list[list[int]] | None:
    """The dataset indices of each batch of the (first) validation loader, in order; None
    unless its sampler is sequential or a ``DistributedSampler`` (iterating another one,
    e.g. a random sampler, would draw from the random state)."""
    loaders = trainer.val_dataloaders
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    batch_sampler = getattr(loaders, "batch_sampler", None)
    sampler = getattr(batch_sampler, "sampler", None)
    if type(sampler) not in (SequentialSampler, DistributedSampler):
        return None
    return [list(batch) for batch in batch_sampler]


def gather_samples(trainer: pl.Trainer, samples: Samples | None, budget: int) -> Samples | None:
    """Every process's buffered samples, as one process would have buffered them: in
    dataset order without ``DistributedSampler``'s duplicates, the first ``budget``.
    Without indices (a sampler other than sequential or ``DistributedSampler``), rank by
    rank. A collective call: every process must make it."""
    parts: list[Samples | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, samples)
    present = [p for p in parts if p is not None]
    if not present:
        return None
    x = torch.cat([p[0] for p in present])
    y = torch.cat([p[1] for p in present])
    logits = _cat([p[2] for p in present])
    indices = _cat([p[3] for p in present])
    if indices is None:
        keep = torch.arange(min(len(y), budget))
    else:
        ordered, order = torch.sort(indices, stable=True)
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[1:] = ordered[1:] != ordered[:-1]  # padding repeats an index: keep one
        keep = order[first][:budget]
    return (
        x[keep],
        y[keep],
        None if logits is None else logits[keep],
        None if indices is None else indices[keep],
    )


def batch_logits(outputs: Any, n: int) -> Tensor | None:
    """The ``(n, K)`` logits a ``validation_step`` returned (``{"logits": ...}`` or the
    tensor itself), else None."""
    logits = outputs.get("logits") if isinstance(outputs, dict) else outputs
    if isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[0] == n:
        return logits
    return None


def log_figure(trainer: pl.Trainer, figure: Figure, artifact_file: str, *, step: int) -> None:
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
            experiment.add_figure(artifact_file, figure, global_step=step)


_figure_thread: ThreadPoolExecutor | None = None
_figure_thread_lock = threading.Lock()


def _figure_executor() -> ThreadPoolExecutor:
    """The one thread that draws every TAI callback's figures."""
    global _figure_thread
    with _figure_thread_lock:
        if _figure_thread is None:
            _figure_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tai-figures")
        return _figure_thread


def is_last_validation(trainer: pl.Trainer) -> bool:
    """Whether this validation is the fit's last one, as far as can be known now: the last
    epoch, ``max_steps`` reached, a stop already requested, or a plain ``validate()``."""
    if trainer.state.fn != "fit":
        return True
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        return True
    return bool(trainer.should_stop)


class TaiCheckCallback(pl.Callback, abc.ABC):
    """Base class: buffer validation samples within a budget, check at the end of the
    validation epoch (see the module docstring for which epochs check, and how much).

    Args:
        budget: at most this many validation samples per check.
        every_n_epochs: an interim check every n-th epoch before the last; ``None``: the
            last epoch only. The last epoch always runs the final check, in full.
        log_figures: hand figures to the loggers: ``"last"`` (default) from the final
            check only, ``True`` from every check that runs in full, ``False`` never.
            Rendering and storing a figure costs more than most checks.
    """

    name = "check"

    def __init__(
        self,
        *,
        budget: int = 512,
        every_n_epochs: int | None = 1,
        log_figures: bool | Literal["last"] = "last",
    ) -> None:
        super().__init__()
        _check_positive_int("budget", budget)
        _check_positive_int("every_n_epochs", every_n_epochs, allow_none=True)
        if log_figures not in (True, False, "last"):
            raise ValueError(f"`log_figures` must be True, False or 'last', got {log_figures!r}")
        self.budget = budget
        self.every_n_epochs = every_n_epochs
        self.log_figures = log_figures
        self._buffer = SampleBuffer(budget)
        self._final_step: int | None = None  # global step of the last final check
        self._batch_indices: list[list[int]] | None = None
        self._pending: dict[str, float] = {}
        self._figures: list[Future[None]] = []
        self.last_result: Any = None

    # -- the guard -------------------------------------------------------------------
    def check_kind(self, trainer: pl.Trainer) -> Literal["final", "interim"] | None:
        """``"final"`` on the fit's last validation, ``"interim"`` on every n-th epoch
        before it, ``None`` otherwise (and during the sanity check)."""
        if trainer.sanity_checking:
            return None
        if is_last_validation(trainer):
            return "final"
        if self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return None
        return "interim"

    # -- hooks: a guard plus one call -----------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._final_step = None  # a callback may serve several fits

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._buffer.clear()
        # Indices only matter when processes' shards are put back together.
        self._batch_indices = validation_batch_indices(trainer) if trainer.world_size > 1 else None
        if trainer.world_size > 1 and self._batch_indices is None:
            rank_zero_warn(
                f"{type(self).__name__}: the validation loader's sampler is neither sequential "
                "nor a DistributedSampler, so the processes' samples are gathered rank by rank "
                "and may differ from those of one process."
            )

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Buffered on every epoch (copies of at most `budget` samples): an unforeseen end
        # of the fit runs the final check on them in on_train_end. The first validation
        # loader only.
        if self._buffer.full or trainer.sanity_checking or dataloader_idx != 0:
            return
        indices = None
        if self._batch_indices is not None and batch_idx < len(self._batch_indices):
            indices = torch.tensor(self._batch_indices[batch_idx], dtype=torch.long)
            if len(indices) != len(batch[1]):
                indices = None
        self._buffer.add(batch[0], batch[1], batch_logits(outputs, len(batch[1])), indices)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        kind = self.check_kind(trainer)
        if kind is None:
            return
        self._check(trainer, pl_module, final=kind == "final", in_validation=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._final_step == trainer.global_step:
            return
        self._check(trainer, pl_module, final=True, in_validation=False)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.wait_for_figures()

    # -- the check -------------------------------------------------------------------
    def _check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        *,
        final: bool,
        in_validation: bool,
    ) -> None:
        """Gather the samples (several processes), compute on rank zero, log everywhere.

        Every process calls it at the same points (the guards depend on the trainer's
        state only), since gathering and broadcasting are collective calls.
        """
        # Outside inference mode (a Trainer's default for validation), the joined samples
        # are ordinary tensors that gradient-based checks can use without another copy.
        with torch.inference_mode(False):
            samples = self._buffer.tensors()
        if final:
            # The buffer's views keep whole validation batches alive; the final check is
            # the last use of them (if training went on after it, on_train_end finds no
            # samples and the final result stands). At 224x224 and the default budget the
            # three callbacks' views and copies held 0.9 GB during the last check.
            self._buffer.clear()
        distributed = _distributed(trainer)
        if distributed:
            samples = gather_samples(trainer, samples, self.budget)
        if samples is None:
            return
        result: Any = None
        failure: BaseException | None = None
        self._pending = {}
        if trainer.is_global_zero:
            try:
                result = self._compute(trainer, pl_module, samples, final, in_validation)
            except BaseException as error:  # re-raised below, after the other ranks know
                failure = error
        metrics, self._pending = self._pending, {}
        if distributed:
            # Rank zero's result for every rank; a failure there stops them all.
            sent = (result, metrics, failure is not None) if trainer.is_global_zero else None
            result, metrics, failed = trainer.strategy.broadcast(sent, src=0)
            if failed and failure is None:
                raise RuntimeError(f"{type(self).__name__}: the check failed on rank zero")
        if failure is not None:
            raise failure
        self.last_result = result
        self._log(trainer, pl_module, metrics, in_validation=in_validation)
        if final:
            self._final_step = trainer.global_step

    def _compute(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        samples: Samples,
        final: bool,
        in_validation: bool,
    ) -> Any:
        was_training = pl_module.training
        pl_module.eval()
        try:
            # Validation runs under no_grad or inference mode; gradient-based checks
            # (explanations, attacks) need ordinary tensors, hence the clones outside it.
            # The check's passes with channels-last convolutions on the CPU (1.35-1.45x
            # faster for the small CNN; the weights' layout is put back before training
            # goes on, see tai.modeling.memory_format).
            with (
                torch.inference_mode(False),
                torch.enable_grad(),
                channels_last_on_cpu(pl_module),
            ):
                x, y, logits, _ = samples
                # The buffer joined its batches into new tensors; only inference tensors
                # (joined under inference mode, e.g. gathered under DDP) need a copy.
                x = x.clone() if x.is_inference() else x
                y = y.clone()
                # Logits from validation are stale after training steps (on_train_end).
                if logits is None or not in_validation:
                    logits = self._logits(pl_module, x)
                else:
                    logits = logits.clone()
                result = self.run_check(trainer, pl_module, x, y, logits, final=final)
                # The sample size beside the values: what a smaller budget costs in precision.
                self.log_metrics(trainer, pl_module, {f"tai/{self.name}/samples": len(y)})
                return result
        finally:
            pl_module.train(was_training)

    @staticmethod
    def _logits(pl_module: pl.LightningModule, images: Tensor, batch_size: int = 64) -> Tensor:
        with torch.no_grad():
            return torch.cat(
                [pl_module(b.to(pl_module.device)).float().cpu() for b in images.split(batch_size)]
            )

    @abc.abstractmethod
    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
        *,
        final: bool,
    ) -> Any:
        """Compute, log (:meth:`log_metrics`) and return this check's result on the
        buffered samples; ``final`` for the fit's final check, which runs in full."""

    # -- output ----------------------------------------------------------------------
    def log_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, metrics: dict[str, float]
    ) -> None:
        """Record ``metrics`` of the running check; they are logged once it returns (on
        every process, see the module docstring)."""
        self._pending.update({k: float(v) for k, v in metrics.items()})

    def _log(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        metrics: dict[str, float],
        *,
        in_validation: bool,
    ) -> None:
        """``pl_module.log_dict`` during validation; from ``on_train_end``, where Lightning
        forbids it, straight to the loggers and ``trainer.callback_metrics``."""
        if not metrics:
            return
        if in_validation:
            # Every rank logs rank zero's values: the mean over ranks is that value.
            pl_module.log_dict(metrics, sync_dist=trainer.world_size > 1)
            return
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})

    def submit_figure(self, trainer: pl.Trainer, draw: Callable[[], Figure], stem: str) -> None:
        """Draw ``draw()`` and hand it to the loggers in the figure thread (the module
        docstring); ``draw`` must only read objects that nothing changes afterwards."""
        if not trainer.is_global_zero:
            return
        name, step = self.figure_name(trainer, stem), trainer.global_step
        self._figures.append(
            _figure_executor().submit(lambda: log_figure(trainer, draw(), name, step=step))
        )

    def wait_for_figures(self) -> None:
        """Block until this callback's figures are stored; re-raise what drawing raised."""
        pending, self._figures = self._figures, []
        for future in pending:
            future.result()

    def wants_figure(self, trainer: pl.Trainer, *, final: bool) -> bool:
        """Whether this check's figure goes to the loggers (see ``log_figures``); callers
        ask only for checks that ran in full."""
        return self.log_figures is True or (self.log_figures == "last" and final)

    def figure_name(self, trainer: pl.Trainer, stem: str) -> str:
        return f"tai/{self.name}/{stem}_epoch{trainer.current_epoch:03d}.png"

    # No state_dict: which epochs check, and which share of a grid an interim check takes,
    # follow from the epoch number, so a resumed fit continues the same schedule. (A
    # callback that overrides state_dict is "stateful" to Lightning, which then refuses
    # two of the same class in one Trainer, e.g. two RobustnessCallbacks.)
