"""AdversarialCallback: accuracy under FGSM and PGD attacks (L-infinity) during validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytorch_lightning as pl
from torch import Tensor

from callbacks._base import TaiCheckCallback, _check_positive_int, log_figure
from tai.principles.security.adversarial import ATTACKS, AdversarialResult, adversarial_accuracy
from tai.report.figures.security import adversarial_curve


class AdversarialCallback(TaiCheckCallback):
    """Accuracy of the model on adversarially perturbed validation samples.

    Logs ``tai/adversarial/<attack>_mean_accuracy`` and ``<attack>_accuracy_<eps>`` per
    radius (:meth:`tai.principles.security.adversarial.AdversarialResult.as_dict`); the
    accuracy-against-ε
    curve goes to the loggers as a figure. PGD costs ``steps`` forward and backward
    passes per sample and radius: keep ``budget`` small or ``every_n_epochs`` large.

    Args:
        epsilons: L-infinity radii in (0, 1] (pixel values in [0, 1]).
        attacks: a non-empty subset of ``("pgd", "fgsm")``.
        steps: PGD iterations.
        budget: at most this many validation samples per check.
        every_n_epochs: run every n-th validation epoch; the last epoch always runs.
        seed: seeds PGD's random start, so epochs are comparable.
        log_figures: log the curve: ``"last"`` epoch, ``True`` every check, ``False`` never.

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
        budget: int = 128,
        every_n_epochs: int = 1,
        seed: int = 0,
        log_figures: bool | Literal["last"] = "last",
    ) -> None:
        bad = [e for e in epsilons if not 0 < e <= 1]
        if bad or not epsilons:
            raise ValueError(
                f"`epsilons` must be a non-empty list in (0, 1], got {list(epsilons)!r}"
            )
        unknown = [a for a in attacks if a not in ATTACKS]
        if unknown or not attacks:
            raise ValueError(
                f"`attacks` must be a non-empty subset of {', '.join(ATTACKS)}; "
                f"got {list(attacks)!r}"
            )
        _check_positive_int("steps", steps)
        super().__init__(budget=budget, every_n_epochs=every_n_epochs, log_figures=log_figures)
        self.epsilons = tuple(sorted(epsilons))
        self.attacks = tuple(attacks)
        self.steps = steps
        self.seed = seed

    def run_check(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        images: Tensor,
        targets: Tensor,
        logits: Tensor,
    ) -> list[AdversarialResult]:
        results = [
            adversarial_accuracy(
                pl_module,
                images.to(pl_module.device),
                targets.to(pl_module.device),
                epsilons=self.epsilons,
                attack=attack,
                steps=self.steps,
                seed=self.seed,
            )
            for attack in self.attacks
        ]
        metrics = {k: v for r in results for k, v in r.as_dict().items()}
        pl_module.log_dict({f"tai/adversarial/{k}": v for k, v in metrics.items()})
        if self.wants_figure(trainer):
            log_figure(trainer, adversarial_curve(results), self.figure_name(trainer, "curve"))
        return results
