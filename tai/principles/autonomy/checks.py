"""Autonomy-and-control check of the evaluation: selective prediction with deferral."""

from __future__ import annotations

import math

import torch

from tai.check import Check, CheckResult, EvalContext, MetricSpec, Principle, metric
from tai.principles.autonomy.selective import risk_coverage, selective_metrics

AT_THRESHOLD = ("abstention_threshold", "coverage_at_threshold", "selective_risk_at_threshold")


class SelectivePredictionCheck(Check):
    """The risk-coverage curve of the model's confidence (AURC, E-AURC, the risk at a
    fixed coverage) and what the deployed deferral rule does on the held-out split: the
    share of images it answers and its error rate on them.

    Args:
        report_coverage: the coverage at which ``risk_at_coverage`` is read.
    """

    name = "selective_prediction"
    principle = Principle.AUTONOMY
    title = "Selective prediction and deferral to a person"

    def __init__(self, report_coverage: float = 0.8) -> None:
        self.report_coverage = report_coverage

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        return (
            metric("aurc", False, "area under the risk-coverage curve"),
            metric("e_aurc", False, "excess AURC over an optimal confidence ranking"),
            metric("risk_at_coverage", False, "error rate on the 80% most confident images"),
            metric("abstention_threshold", None, "confidence below which the model defers", ""),
            metric("coverage_at_threshold", True, "share of images the model answers"),
            metric("selective_risk_at_threshold", False, "error rate on the answered images"),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        curve = risk_coverage(ctx.probs, ctx.targets)
        at = None
        values = {
            **curve.as_dict(),
            "risk_at_coverage": curve.risk_at_coverage(self.report_coverage),
            **dict.fromkeys(AT_THRESHOLD, math.nan),
        }
        skipped = dict.fromkeys(AT_THRESHOLD, "no abstention threshold was fitted")
        if ctx.abstention_threshold is not None:
            at = selective_metrics(ctx.probs, ctx.targets, ctx.abstention_threshold)
            values.update(at.as_dict())
            skipped = {}
        step = max(len(curve.coverage) // 50, 1)  # the curve thinned for the report's figure
        section = {
            "autonomy": {
                "coverage": list(curve.coverage[::step]),
                "risk": list(curve.risk[::step]),
                "report_coverage": self.report_coverage,
                "at_threshold": at.as_dict() if at else None,
            }
        }
        return self.result(values, skipped=skipped, detail=(curve, at), section=section)
