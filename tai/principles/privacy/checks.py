"""Privacy check of the evaluation: membership inference against the training data."""

from __future__ import annotations

import torch

from tai.check import (
    Check,
    CheckResult,
    EvalContext,
    MetricSpec,
    Principle,
    metric,
    sample_indices,
)
from tai.principles.privacy.membership import membership_inference, per_sample_loss


class MembershipInferenceCheck(Check):
    """The loss-threshold membership-inference attack (Yeom et al. 2018) on a seeded
    sample of training images (members) and test images (non-members).

    ``mia_advantage`` is held out: the attack's threshold is fitted on one half of the
    members and non-members and scored on the other, both ways (two-fold cross-fitting),
    so a model that leaks nothing scores about 0 instead of the in-sample best
    ``TPR - FPR`` (about ``0.89 / sqrt(n)``). Its two-sided interval at ``ctx.confidence``
    (Newcombe's hybrid score interval of a difference of two proportions) is in the
    result's ``bounds``, so a gate can judge ``use: upper``. The formulas, references and
    why AUC, Yeom's advantage and the TPR at 1% FPR stay in-sample are in
    :mod:`tai.principles.privacy.membership`.

    Args:
        budget: members and non-members attacked, each.
    """

    name = "membership_inference"
    principle = Principle.PRIVACY
    title = "Membership inference"

    def __init__(self, budget: int = 1000, *, batch_size: int = 256) -> None:
        self.budget = budget
        self.batch_size = batch_size  # images per forward pass

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (
            metric("mia_auc", False, "AUC of the loss-threshold attack (0.5 = no leak)"),
            metric(
                "mia_advantage",
                False,
                "TPR - FPR at a threshold fitted on the other half (0 = no leak)",
                bounded=True,
            ),
            metric("mia_yeom_advantage", False, "TPR - FPR at the mean training loss"),
            metric("mia_tpr_at_1pct_fpr", False, "members found at 1% false positives"),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        if ctx.members is None:
            return self.not_applicable("no training images were given", {"privacy": None})
        inside = sample_indices(len(ctx.members), self.budget, generator)
        members = ctx.members.load(inside)
        outside = ctx.sample(self.budget, generator)
        result = membership_inference(
            per_sample_loss(ctx.model, members, ctx.members.targets[inside], self.batch_size),
            per_sample_loss(ctx.model, ctx.images(outside), ctx.targets[outside], self.batch_size),
            seed=int(torch.randint(2**31 - 1, (1,), generator=generator)),
            confidence=ctx.confidence,
        )
        reported = result.as_dict()
        return self.result(
            {name: reported[name] for name in self.metric_names},
            bounds={"mia_advantage": result.advantage_bounds},
            detail=result,
            section={"privacy": reported},
        )
