"""Security checks of the evaluation: adversarial examples and certified robustness."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tai.check import Check, CheckResult, EvalContext, MetricSpec, Principle, metric
from tai.principles.security.adversarial import ATTACKS, adversarial_accuracy, epsilon_key
from tai.principles.security.smoothing import DEFAULT_RADII, certified_accuracy, radius_key


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


class AdversarialCheck(Check):
    """Accuracy under FGSM and PGD (L-infinity) on a seeded subset of the split.

    Args:
        epsilons: L-infinity radii of the attacks, images in [0, 1].
        steps: PGD iterations.
        budget: test images attacked.
    """

    name = "adversarial"
    principle = Principle.SECURITY
    title = "Adversarial robustness"

    def __init__(
        self,
        epsilons: Sequence[float] = (0.05, 0.1),
        *,
        steps: int = 10,
        budget: int = 256,
        batch_size: int = 64,
    ):
        if not epsilons:
            raise ValueError("AdversarialCheck needs at least one epsilon; leave it out instead")
        self.epsilons = tuple(epsilons)
        self.steps = steps
        self.budget = budget
        self.batch_size = batch_size  # images attacked at once (gradients: training-like memory)

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        specs = []
        for attack in ATTACKS:
            name = attack.upper()
            specs += [
                metric(f"{attack}_clean_accuracy", True, f"accuracy of the {name} subset, clean"),
                metric(f"{attack}_mean_accuracy", True, f"accuracy under {name}, mean over ε"),
                *(
                    metric(
                        f"{attack}_accuracy_{epsilon_key(e)}",
                        True,
                        f"accuracy under {name} at ε={e:g}",
                    )
                    for e in self.epsilons
                ),
            ]
        return tuple(specs)

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        index = ctx.sample(self.budget, generator)
        images, targets = ctx.images(index), ctx.targets[index]
        seed = _seed(generator)
        results = [
            adversarial_accuracy(
                ctx.model,
                images,
                targets,
                epsilons=self.epsilons,
                attack=attack,
                steps=self.steps,
                seed=seed,
                batch_size=self.batch_size,
            )
            for attack in ATTACKS
        ]
        values = {k: v for r in results for k, v in r.as_dict().items()}
        section = {
            "adversarial": [
                {
                    "attack": r.attack,
                    "epsilons": list(r.epsilons),
                    "accuracy": list(r.accuracy),
                    "clean_accuracy": r.clean_accuracy,
                    "steps": r.steps,
                    "random_start": r.random_start,
                }
                for r in results
            ]
        }
        return self.result(values, detail=results, section=section)


class CertificationCheck(Check):
    """Randomized-smoothing certification (Cohen et al. 2019): the accuracy the smoothed
    classifier certifies at each L2 radius. Off unless ``enabled``: it costs
    ``n0 + n`` forward passes per image.
    """

    name = "certification"
    principle = Principle.SECURITY
    title = "Certified robustness"

    def __init__(
        self,
        *,
        enabled: bool = False,
        sigma: float = 0.25,
        n0: int = 100,
        n: int = 1000,
        budget: int = 64,
        batch_size: int = 64,
    ) -> None:
        self.enabled = enabled
        self.sigma, self.n0, self.n, self.budget = sigma, n0, n, budget
        self.batch_size = batch_size  # noisy copies per forward pass

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (
            *(
                metric(
                    f"certified_accuracy_{radius_key(r)}",
                    True,
                    f"certified accuracy at L2 radius {r:g}",
                )
                for r in DEFAULT_RADII
            ),
            metric(
                "smoothing_abstention_rate", False, "images the smoothed classifier abstains on"
            ),
            metric("average_certified_radius", True, "mean certified L2 radius", ""),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        if not self.enabled:
            return self.not_applicable("certification off (TAI_CERTIFY)", {"certification": None})
        index = ctx.sample(self.budget, generator)
        result = certified_accuracy(
            ctx.model,
            ctx.images(index),
            ctx.targets[index],
            sigma=self.sigma,
            n0=self.n0,
            n=self.n,
            seed=_seed(generator),
            batch_size=self.batch_size,
        )
        section = {
            "certification": {
                "sigma": result.sigma,
                "n0": result.n0,
                "n": result.n,
                "alpha": result.alpha,
                "radii": list(result.radii),
                "certified_accuracy": list(result.certified_accuracy),
                "abstention_rate": result.abstention_rate,
            }
        }
        return self.result(result.as_dict(), detail=result, section=section)
