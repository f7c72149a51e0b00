"""Reliability checks of the evaluation: accuracy and calibration, robustness to corruptions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

import torch

from tai.check import Check, CheckResult, EvalContext, MetricSpec, Principle, metric
from tai.principles.reliability.calibration import calibration_report, calibration_summary
from tai.principles.reliability.corruptions import DEFAULT_CORRUPTIONS, SEVERITIES
from tai.principles.reliability.robustness import (
    RobustnessResult,
    corruption_error_ratios,
    paired_corruption_accuracy,
    relative_corruption_error_ratios,
)
from tai.principles.reliability.sample_metrics import (
    N_BINS,
    SAMPLE_METRICS,
    bootstrap_interval,
    wilson_interval,
)

NO_TEMPERATURE = "no temperature was fitted"


class CalibrationCheck(Check):
    """Accuracy and calibration on the held-out split (Guo et al. 2017), with intervals.

    Accuracy has a Wilson interval and the ECE its bootstrap interval (``ece_lower``,
    ``ece_upper``) at the run's confidence level; the other per-sample metrics get a
    bootstrap interval when a gate judges one of their bounds.
    """

    name = "calibration"
    principle = Principle.RELIABILITY
    title = "Accuracy and calibration"

    def __init__(self, n_bins: int = N_BINS) -> None:
        self.n_bins = n_bins

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        sample = {"bounded": True, "comparable": True}
        return (
            metric("accuracy", True, "top-1 accuracy", **sample),
            metric("ece", False, "expected calibration error, 15 equal-width bins", **sample),
            metric("ece_lower", False, "lower bound of the ECE's bootstrap interval"),
            metric("ece_upper", False, "upper bound of the ECE's bootstrap interval"),
            metric("mce", False, "maximum calibration error over the bins", **sample),
            metric("adaptive_ece", False, "ECE with equal-mass bins (Nixon et al.)", **sample),
            metric("classwise_ece", False, "classwise ECE (Kull et al. 2019)", **sample),
            metric("nll", False, "negative log-likelihood of the true class", "nats", **sample),
            metric("brier", False, "multi-class Brier score, in [0, 2]", "", **sample),
            metric("temperature", None, "temperature fitted on validation", "ratio"),
            metric("ece_unscaled", False, "test ECE before temperature scaling"),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        report = calibration_report(
            ctx.probs,
            ctx.targets,
            n_bins=self.n_bins,
            n_boot=ctx.n_resamples,
            level=ctx.confidence,
            seed=seed,
        )
        correct = int((ctx.probs.argmax(1) == ctx.targets).sum())
        bounds = {
            "accuracy": wilson_interval(correct, len(ctx), ctx.confidence),
            "ece": (report.ece_lower, report.ece_upper),
        }
        for name in sorted(ctx.bound_metrics & (set(SAMPLE_METRICS) - set(bounds))):
            bounds[name] = bootstrap_interval(
                SAMPLE_METRICS[name],
                ctx.probs,
                ctx.targets,
                confidence=ctx.confidence,
                n_resamples=ctx.n_resamples,
                generator=generator,
            )
        skipped, scaling = {}, {"temperature": math.nan, "ece_unscaled": math.nan}
        if ctx.temperature is None:
            skipped = dict.fromkeys(scaling, NO_TEMPERATURE)
        else:
            # softmax(T * log p) undoes the division of the logits by T (softmax ignores shifts)
            logp = ctx.probs.double().clamp_min(torch.finfo(torch.float64).tiny).log()
            unscaled = (logp * ctx.temperature).softmax(1)
            scaling = {
                "temperature": ctx.temperature,
                "ece_unscaled": calibration_summary(unscaled, ctx.targets, n_bins=self.n_bins).ece,
            }
        values = {"accuracy": report.accuracy, **report.as_extended_dict(), **scaling}
        section = {
            "calibration": {
                **report.as_extended_dict(),
                "confidence": ctx.confidence,
                "bins": asdict(report.bins),
            }
        }
        return self.result(values, skipped=skipped, bounds=bounds, detail=report, section=section)


class CorruptionCheck(Check):
    """Accuracy under common corruptions (Hendrycks & Dietterich 2019) on a seeded subset.

    With a champion, the champion classifies the very same corrupted images, and the
    corruption errors CE and mCE are ratios of the two models' errors on them.

    Args:
        corruptions: names of :mod:`tai.principles.reliability.corruptions`.
        severities: severities 1-5 to evaluate.
        budget: test images corrupted (a seeded random subset).
        batch_size: images per forward pass.
    """

    name = "corruptions"
    principle = Principle.RELIABILITY
    title = "Robustness to corruptions"

    def __init__(
        self,
        corruptions: Sequence[str] = DEFAULT_CORRUPTIONS,
        severities: Sequence[int] = SEVERITIES,
        *,
        budget: int = 1000,
        batch_size: int = 256,
    ) -> None:
        self.corruptions = tuple(corruptions)
        self.severities = tuple(severities)
        self.budget = budget
        self.batch_size = batch_size

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        specs = [
            metric("clean_accuracy", True, "accuracy on the uncorrupted subset"),
            metric("mean_corruption_accuracy", True, "mean accuracy over corruptions x severities"),
        ]
        for c in self.corruptions:
            specs.append(metric(f"{c}_mean", True, f"accuracy under {c}, mean over severities"))
            specs += [
                metric(f"{c}_s{s}", True, f"accuracy under {c} at severity {s}")
                for s in self.severities
            ]
        return (
            *specs,
            metric(
                "corruption_mce",
                False,
                "mCE against the champion on the same images",
                "ratio",
                needs_baseline=True,
            ),
            metric(
                "relative_corruption_mce",
                False,
                "relative mCE against the champion on the same images",
                "ratio",
                needs_baseline=True,
            ),
        )

    def run(self, ctx: EvalContext, generator: torch.Generator) -> CheckResult:
        index = ctx.sample(self.budget, generator)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        images, targets = ctx.images(index), ctx.targets[index]
        models = [ctx.model] if ctx.champion is None else [ctx.model, ctx.champion]
        results = paired_corruption_accuracy(
            models,
            images,
            targets,
            corruptions=self.corruptions,
            severities=self.severities,
            batch_size=self.batch_size,
            seed=seed,
        )
        mine = results[0]
        errors, skipped = _errors_against(mine, results[1] if len(results) > 1 else None)
        section = {
            "robustness": {
                "severities": list(mine.severities),
                "clean_accuracy": mine.clean_accuracy,
                "accuracy": mine.accuracy,
                "n_images": len(index),
                "champion_accuracy": results[1].accuracy if len(results) > 1 else None,
            }
        }
        return self.result(
            {**mine.as_dict(), **errors}, skipped=skipped, detail=mine, section=section
        )


def _errors_against(
    mine: RobustnessResult, champion: RobustnessResult | None
) -> tuple[dict[str, float], dict[str, str]]:
    """mCE and relative mCE against the champion, each NaN with its reason where undefined
    (no champion; a champion that makes no error, or is not degraded, on a corruption)."""
    values = {"corruption_mce": math.nan, "relative_corruption_mce": math.nan}
    if champion is None:
        return values, dict.fromkeys(values, "no champion to compare with")
    skipped = {}
    for name, ratios in (
        ("corruption_mce", corruption_error_ratios),
        ("relative_corruption_mce", relative_corruption_error_ratios),
    ):
        try:
            per_corruption = ratios(mine, champion)
        except ValueError as exc:
            skipped[name] = f"undefined against the champion: {exc}"
        else:
            values[name] = sum(per_corruption.values()) / len(per_corruption)
    return values, skipped
