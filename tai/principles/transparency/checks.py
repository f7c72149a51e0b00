"""Transparency check of the evaluation: prototypes, explanations and their quality."""

from __future__ import annotations

import math

import torch

from tai.check import Check, CheckResult, EvalContext, MetricSpec, Principle, metric
from tai.principles.transparency.attribution_methods import METHODS
from tai.principles.transparency.explanations import (
    Explanations,
    attribution_stability,
    explain_model,
)

STABILITY = ("attribution_stability_spearman", "attribution_stability_ssim")


class ExplanationCheck(Check):
    """MMD-critic prototypes and criticisms, explanation sheets and explanation quality
    (deletion and insertion AUC, infidelity, sensitivity, the randomisation sanity check),
    and, with a champion, the stability of the explanations between the two models.

    Args:
        prototypes_per_class: prototypes explained per class.
        ig_steps: Integrated Gradients steps.
    """

    name = "explanations"
    principle = Principle.TRANSPARENCY
    title = "Explanations"

    def __init__(self, *, prototypes_per_class: int = 1, ig_steps: int = 32) -> None:
        self.prototypes_per_class = prototypes_per_class
        self.ig_steps = ig_steps

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (
            metric("deletion_auc", False, "deletion AUC of Integrated Gradients (RISE)"),
            metric("insertion_auc", True, "insertion AUC of Integrated Gradients (RISE)"),
            metric("infidelity", False, "infidelity of Integrated Gradients (Yeh et al.)", ""),
            metric("sensitivity", False, "max-sensitivity of Integrated Gradients", ""),
            metric("ig_convergence_delta", False, "largest IG completeness gap", ""),
            metric("nearest_prototype_accuracy", True, "1-nearest-prototype accuracy"),
            metric("sanity_failures", False, "methods failing the randomisation check", "count"),
            *(
                metric(
                    f"sanity_{m}_correlation",
                    False,
                    f"{m} maps' correlation with a randomised model's",
                    "",
                )
                for m in METHODS
            ),
            *(
                metric(
                    name, True, f"{kind} of IG maps, champion vs this model", needs_baseline=True
                )
                for name, kind in zip(STABILITY, ("Spearman correlation", "SSIM"), strict=True)
            ),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        explanations = explain_model(
            ctx.model,
            ctx.images(torch.arange(len(ctx))),
            ctx.targets,
            ctx.embeddings,
            n_prototypes=self.prototypes_per_class,
            n_steps=self.ig_steps,
            seed=seed,
        )
        stability = dict.fromkeys(STABILITY, math.nan)
        skipped = dict.fromkeys(STABILITY, "no champion to compare with")
        if ctx.champion is not None:
            stability = attribution_stability(
                ctx.champion,
                ctx.model,
                explanations.images,
                torch.tensor(explanations.labels),
                n_steps=self.ig_steps,
            )
            skipped = {}
        return self.result(
            {**explanations.quality, **stability},
            skipped=skipped,
            detail=explanations,
            section={"explanations": _section(explanations, ctx.classes)},
        )


def _section(e: Explanations, classes) -> dict:
    return {
        "method": "integrated_gradients",
        "prototype_indices": e.indices,
        "prototype_labels": [classes[i] for i in e.labels],
        "deletion_auc": e.deletion_auc,
        "convergence_delta": e.convergence_delta,
        "prototypes_per_class": {classes[c]: v for c, v in e.prototype_indices.items()},
        "criticisms_per_class": {classes[c]: v for c, v in e.criticism_indices.items()},
        "quality": e.quality,
        "sanity_check": e.sanity,
    }
