"""Fairness checks of the evaluation: across classes, labelled groups and clusters."""

from __future__ import annotations

import torch

from tai.check import Check, CheckResult, EvalContext, MetricSpec, Principle, metric
from tai.principles.fairness.clusters import cluster_fairness
from tai.principles.fairness.groups import group_fairness
from tai.principles.fairness.per_class import class_fairness


def _bounded(name: str, higher_is_better: bool, description: str) -> tuple[MetricSpec, ...]:
    """A metric with a bootstrap interval, and its two bounds as metrics of their own."""
    return (
        metric(name, higher_is_better, description, bounded=True),
        metric(f"{name}_lower", higher_is_better, f"lower bound of {name}'s interval"),
        metric(f"{name}_upper", higher_is_better, f"upper bound of {name}'s interval"),
    )


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


class ClassFairnessCheck(Check):
    """Per-class accuracy (recall) and precision, the worst class and the largest gap,
    with stratified bootstrap intervals."""

    name = "class_fairness"
    principle = Principle.FAIRNESS
    title = "Fairness across classes"

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (
            *_bounded("worst_class_accuracy", True, "accuracy of the worst class"),
            *_bounded("class_accuracy_gap", False, "best minus worst class accuracy"),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        result = class_fairness(
            ctx.probs,
            ctx.targets,
            classes=list(ctx.classes),
            n_resamples=ctx.n_resamples,
            confidence=ctx.confidence,
            seed=_seed(generator),
        )
        values = result.as_dict()
        section = {
            "fairness": {
                "confidence": result.confidence,
                "per_class": result.per_class(),
                "worst_class": result.worst_class,
            }
        }
        return self.result(values, bounds=_bounds(values), detail=result, section=section)


class GroupFairnessCheck(Check):
    """Accuracy and error rate per group of a ``metadata.csv`` column, the worst group
    (Sagawa et al. 2020) and the error-rate gap, with stratified bootstrap intervals."""

    name = "group_fairness"
    principle = Principle.FAIRNESS
    title = "Fairness across groups"

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (
            *_bounded("worst_group_accuracy", True, "accuracy of the worst group"),
            *_bounded("group_error_rate_gap", False, "largest minus smallest group error rate"),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        if ctx.groups is None:
            return self.not_applicable("no group column (TAI_GROUP_COLUMN)", {"fairness": {}})
        result = group_fairness(
            ctx.probs.argmax(1),
            ctx.targets,
            ctx.groups,
            column=ctx.group_column,
            expected_groups=ctx.expected_groups,
            n_resamples=ctx.n_resamples,
            confidence=ctx.confidence,
            seed=_seed(generator),
        )
        values = result.as_dict()
        section = {"fairness": {"groups": {"column": result.column, **result.per_group()}}}
        return self.result(values, bounds=_bounds(values), detail=result, section=section)


class ClusterFairnessCheck(Check):
    """Accuracy per k-means cluster of each class's embeddings (GEORGE, Sohoni et al.
    2020): a hidden subclass the model fails on, without group labels.

    Args:
        clusters_per_class: k of the k-means within each class.
    """

    name = "cluster_fairness"
    principle = Principle.FAIRNESS
    title = "Fairness across clusters"

    def __init__(self, clusters_per_class: int = 3) -> None:
        self.clusters_per_class = clusters_per_class

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (
            metric("worst_cluster_accuracy", True, "accuracy of the worst cluster"),
            metric("worst_cluster_size", None, "images in the worst cluster", "count"),
            metric("cluster_accuracy_gap", False, "best minus worst cluster accuracy"),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        result = cluster_fairness(
            ctx.embeddings,
            ctx.probs.argmax(1),
            ctx.targets,
            clusters_per_class=self.clusters_per_class,
            seed=_seed(generator),
        )
        return self.result(
            result.as_dict(),
            detail=result,
            section={"fairness": {"clusters": result.per_cluster()}},
        )


def _bounds(values: dict[str, float]) -> dict[str, tuple[float, float]]:
    """The intervals of the metrics that come with ``_lower`` and ``_upper`` companions."""
    return {
        name: (values[f"{name}_lower"], values[f"{name}_upper"])
        for name in values
        if f"{name}_lower" in values and f"{name}_upper" in values
    }
