"""AdversarialCallback: accuracy under FGSM and PGD attacks (L-infinity) during validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytorch_lightning as pl
from torch import Tensor

from callbacks._base import TaiCheckCallback, _check_positive_int
from callbacks._grid import grid_share, interim_index
from tai.principles.security.adversarial import ATTACKS, AdversarialResult, adversarial_accuracy
from tai.report.figures.security import adversarial_curve


class AdversarialCallback(TaiCheckCallback):
    """Accuracy of the model on adversarially perturbed validation samples.

    Each cell (an attack at a radius) is
    :func:`tai.principles.security.adversarial.adversarial_accuracy` on the buffered
    samples with ``seed``; a radius's accuracy does not depend on the other radii asked
    for, so a cell measured alone equals the same cell of the whole grid.

    The final check (last epoch) runs every attack at every radius and logs
    ``tai/adversarial/<attack>_mean_accuracy``, ``<attack>_clean_accuracy`` and
    ``<attack>_accuracy_<eps>`` per radius
    (:meth:`tai.principles.security.adversarial.AdversarialResult.as_dict`); the
    accuracy-against-ε curve goes to the loggers as a figure. An interim check (an
    earlier epoch, see ``every_n_epochs``) runs ``cells_per_epoch`` cells, a seeded share
    that moves on through the grid from check to check, and logs the clean accuracy and
    those cells only: the means are logged from whole grids only. PGD costs ``steps``
    forward and backward passes per sample and radius, so interim checks are off by
    default.

    Args:
        epsilons: L-infinity radii in (0, 1] (pixel values in [0, 1]).
        attacks: a non-empty subset of ``("pgd", "fgsm")``.
        steps: PGD iterations.
        budget: at most this many validation samples per check (64 by default: PGD's
            ``steps`` forward and backward passes per sample and radius made 128 the
            largest share of the callbacks' cost; the sample size is logged as
            ``tai/adversarial/samples``).
        every_n_epochs: an interim check every n-th epoch; ``None`` (default): the last
            epoch only.
        cells_per_epoch: (attack, radius) cells of an interim check; ``None``: all.
        seed: seeds PGD's random start (so epochs are comparable) and the order in which
            interim checks visit the grid.
        log_figures: log the curve: ``"last"`` epoch, ``True`` every check that runs
            the whole grid, ``False`` never.

    Raises:
        ValueError: an unknown attack, a radius outside (0, 1], a non-positive size.

    Example::

        trainer = Trainer(callbacks=[AdversarialCallback(epsilons=[0.05, 0.1], budget=64)])
    """

    name = "adversarial"

    def __init__(
        self,
        epsilons: Sequence[float] = (0.05, 0.1),
        attacks: Sequence[str] = ATTACKS,
        *,
        steps: int = 10,
        budget: int = 64,
        every_n_epochs: int | None = None,
        cells_per_epoch: int | None = 1,
        seed: int = 0,
        log_figures: bool | Literal["last"] = "last",
    ) -> None:
        bad = [e for e in epsilons if not 0 < e <= 1]
        if bad or not epsilons or len(set(epsilons)) != len(epsilons):
            raise ValueError(
                f"`epsilons` must be a non-empty list of distinct radii in (0, 1], "
                f"got {list(epsilons)!r}"
            )
        unknown = [a for a in attacks if a not in ATTACKS]
        if unknown or not attacks or isinstance(attacks, str) or len(set(attacks)) != len(attacks):
            raise ValueError(
                f"`attacks` must be a non-empty subset of {', '.join(ATTACKS)}; "
                f"got {attacks if isinstance(attacks, str) else list(attacks)!r}"
            )
        _check_positive_int("steps", steps)
        _check_positive_int("cells_per_epoch", cells_per_epoch, allow_none=True)
        super().__init__(budget=budget, every_n_epochs=every_n_epochs, log_figures=log_figures)
        self.epsilons = tuple(sorted(epsilons))
        self.attacks = tuple(attacks)
        self.steps = steps
        self.cells_per_epoch = cells_per_epoch
        self.seed = seed

    @property
    def grid(self) -> list[tuple[str, float]]:
        """Every (attack, radius) cell, attack by attack."""
        return [(a, e) for a in self.attacks for e in self.epsilons]

    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
        *,
        final: bool,
    ) -> list[AdversarialResult]:
        per_check = None if final else self.cells_per_epoch
        index = interim_index(trainer.current_epoch, self.every_n_epochs)
        cells = grid_share(self.grid, per_check, index, self.seed)
        whole = len(cells) == len(self.grid)
        images, targets = images.to(pl_module.device), targets.to(pl_module.device)
        results = [
            adversarial_accuracy(
                pl_module,
                images,
                targets,
                epsilons=[e for a, e in cells if a == attack],
                attack=attack,
                steps=self.steps,
                seed=self.seed,
            )
            for attack in self.attacks
            if any(a == attack for a, _ in cells)
        ]
        metrics = {
            k: v
            for r in results
            for k, v in r.as_dict().items()
            if whole or not k.endswith("_mean_accuracy")  # a mean over some radii only
        }
        self.log_metrics(
            trainer, pl_module, {f"tai/adversarial/{k}": v for k, v in metrics.items()}
        )
        if whole and self.wants_figure(trainer, final=final):
            self.submit_figure(trainer, lambda: adversarial_curve(results), "curve")
        return results
