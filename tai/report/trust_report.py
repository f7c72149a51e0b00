"""The trust report: one self-contained HTML page per model version.

Figures are embedded as base64 PNGs, so the file can be mailed, archived with the model
version, or opened from MLflow's artifact view without a server. The page opens with the
gate decision, then has a section per principle; a table per principle lists every metric
the registry declares for it, with its description, value and interval.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from tai import tags
from tai.check import MetricSpec, Principle
from tai.data.card import data_metrics
from tai.evaluation.evaluate import Evaluation
from tai.evaluation.registry import all_checks
from tai.gates.decision import GateDecision
from tai.gates.eu_ai_act import evidence_table
from tai.gates.significance import PairedDifference
from tai.report.figures.autonomy import risk_coverage_curve
from tai.report.figures.canvas import figure_png
from tai.report.figures.data import factor_distribution_figure
from tai.report.figures.explanations import (
    explanation_sheets_figure,
    prototype_criticism_figure,
    prototype_figure,
)
from tai.report.figures.reliability import reliability_diagram, robustness_curve
from tai.report.figures.security import adversarial_curve


@dataclass(frozen=True)
class ReportContext:
    """What the page shows besides the evaluation itself."""

    model_name: str
    version: str
    lineage: dict[str, str]
    decision: GateDecision
    promoted: bool
    champion_version: str | None
    created: str
    data_card: dict | None = None
    version_tags: dict[str, str] = field(default_factory=dict)
    approval: dict | None = None
    comparisons: Mapping[str, PairedDifference] | None = None
    requirements: Mapping[str, Any] | None = None  # tai.gates.derivation.report_section


def report_figures(evaluation: Evaluation) -> dict[str, bytes]:
    """The report's figures as PNG bytes, by name."""
    figures: dict[str, bytes] = {}
    calibration = evaluation.detail("calibration")
    if calibration is not None:
        figures["reliability"] = figure_png(reliability_diagram(calibration))
    robustness = evaluation.detail("corruptions")
    if robustness is not None:
        figures["robustness"] = figure_png(robustness_curve(robustness))
    e = evaluation.detail("explanations")
    if e is not None:
        names = [evaluation.classes[label] for label in e.labels]
        figures["prototypes"] = figure_png(
            prototype_figure(
                e.images.cpu(), e.attributions.cpu(), e.labels, titles=[f"class {n}" for n in names]
            )
        )
        figures["gallery"] = figure_png(
            prototype_criticism_figure(
                [e.gallery[c][0].cpu() for c in e.labels],
                [e.gallery[c][1].cpu() for c in e.labels],
                names,
            )
        )
        figures["sheets"] = figure_png(
            explanation_sheets_figure(
                e.images.cpu(),
                {m: v.cpu() for m, v in e.method_maps.items()},
                e.class_mean_maps.cpu(),
                [f"class {name}" for name in names],
            ),
            tight=False,  # fixed margins
        )
    selective = evaluation.detail("selective_prediction")
    if selective is not None:
        curve, at = selective
        figures["risk_coverage"] = figure_png(
            risk_coverage_curve(curve, threshold_coverage=at.coverage if at else None)
        )
    adversarial = evaluation.detail("adversarial")
    if adversarial:
        figures["adversarial"] = figure_png(adversarial_curve(adversarial))
    return figures


def data_figures(card: dict | None) -> dict[str, bytes]:
    """Figures drawn from the data card's numbers (per-class factor distributions)."""
    distributions = (card or {}).get("factors", {}).get("distributions")
    if not distributions:
        return {}
    return {"factor_distributions": figure_png(factor_distribution_figure(distributions))}


@dataclass(frozen=True)
class MetricRow:
    """One row of a principle's metric table."""

    spec: MetricSpec
    value: float
    interval: tuple[float, float] | None
    skipped: str

    @property
    def shown(self) -> str:
        if math.isnan(self.value):
            return "–"
        return f"{self.value:.0f}" if self.spec.unit == "count" else f"{self.value:.4f}"


def metric_tables(
    metrics: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
    skipped: Mapping[str, str],
) -> dict[Principle, list[MetricRow]]:
    """Every metric the registry declares that this version reported, by principle, with
    its description, value, interval and why it was skipped (where it was)."""
    tables: dict[Principle, list[MetricRow]] = {p: [] for p in Principle}
    for check in all_checks():
        for spec in check.metric_specs():
            if spec.name in metrics and not spec.name.endswith(("_lower", "_upper")):
                tables[check.principle].append(
                    MetricRow(
                        spec,
                        float(metrics[spec.name]),
                        bounds.get(spec.name),
                        skipped.get(spec.name, ""),
                    )
                )
    return tables


def requirement_answers(
    section: Mapping[str, Any] | None, decision: GateDecision
) -> list[dict[str, Any]]:
    """Each demanded gate of the requirements with the evidence that answers it: the gate
    result this version got on that metric (value judged and verdict); monitoring rules are
    answered batch by batch by ``tai monitor``, approval by the approval record."""
    if not section:
        return []
    answers = []
    for row in section.get("demanded", []):
        kind = "champion" if row["section"] == "champion" else ""
        result = next(
            (
                r
                for r in decision.results
                if r.metric == row["metric"] and bool(r.compare) == bool(kind)
            ),
            None,
        )
        if row["section"] == "monitoring":
            evidence, verdict = "judged on every production batch (tai monitor)", "later"
        elif row["section"] == "approval":
            evidence, verdict = "the approval record of this version", "see decision"
        elif result is None:
            evidence, verdict = "no gate of the policy judges it", "missing"
        else:
            evidence = result.explain()
            verdict = "skipped" if result.skipped_because else ("pass" if result.passed else "fail")
        answers.append({**row, "evidence": evidence, "verdict": verdict})
    return answers


def render_trust_report(
    evaluation: Evaluation, context: ReportContext, figures: dict[str, bytes]
) -> str:
    """The HTML page for one model version."""
    env = Environment(
        loader=PackageLoader("tai.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    images = {k: base64.b64encode(v).decode() for k, v in figures.items()}
    report = evaluation.report(context.lineage)
    data = data_metrics(context.data_card) if context.data_card else {}
    drift = (context.data_card or {}).get("drift") or {}
    every = {**report["metrics"], **data, **drift.get("metrics", {})}
    evidence = evidence_table(
        every,
        {
            **context.lineage,
            tags.APPROVAL: "not required by the policy",
            **context.version_tags,
        },
        {"tai/tai_report.json", "data/data_card.json", "trust report"}
        | ({"requirements/tai-requirements.yaml"} if context.requirements else set()),
    )
    return env.get_template("trust_report.html.j2").render(
        evidence=evidence,
        ctx=context,
        report=report,
        metrics=report["metrics"],
        tables=metric_tables(every, evaluation.bounds, evaluation.not_applicable()),
        comparisons=context.comparisons,
        images=images,
        robustness=evaluation.detail("corruptions"),
        explanations=report.get("explanations"),
        card=context.data_card,
        data=data or None,
        tag=tags,
        requirements=context.requirements,
        answers=requirement_answers(context.requirements, context.decision),
    )
