"""The trust report: one self-contained HTML page per model version.

Figures are embedded as base64 PNGs, so the file can be mailed, archived with the model
version, or opened from MLflow's artifact view without a server.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tai.data_card import data_metrics  # noqa: E402
from tai.eu_ai_act import evidence_table  # noqa: E402
from tai.evaluation import Evaluation  # noqa: E402
from tai.explain_plots import prototype_figure  # noqa: E402
from tai.plots import reliability_diagram, robustness_curve  # noqa: E402
from tai.policy import GateDecision  # noqa: E402
from tai.principle_plots import adversarial_curve, risk_coverage_curve  # noqa: E402
from tai.transparency_plots import (  # noqa: E402
    explanation_sheet_figure,
    factor_distribution_figure,
    prototype_criticism_figure,
)


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


def figure_png(figure: Figure) -> bytes:
    """Render and close a figure."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def report_figures(evaluation: Evaluation) -> dict[str, bytes]:
    """The report's figures as PNG bytes, by name (``sheet_<k>`` per prototype)."""
    e = evaluation.explanations
    names = [evaluation.classes[label] for label in e.labels]
    figures = {
        "reliability": figure_png(reliability_diagram(evaluation.calibration)),
        "robustness": figure_png(robustness_curve(evaluation.robustness)),
        "prototypes": figure_png(
            prototype_figure(
                e.images.cpu(), e.attributions.cpu(), e.labels, titles=[f"class {n}" for n in names]
            )
        ),
        "gallery": figure_png(
            prototype_criticism_figure(
                [e.gallery[c][0].cpu() for c in e.labels],
                [e.gallery[c][1].cpu() for c in e.labels],
                names,
            )
        ),
    }
    p = evaluation.principles
    if p is not None:
        covered = p.at_threshold.coverage if p.at_threshold else None
        figures["risk_coverage"] = figure_png(
            risk_coverage_curve(p.risk_coverage, threshold_coverage=covered)
        )
        if p.adversarial:
            figures["adversarial"] = figure_png(adversarial_curve(p.adversarial))
    for k, name in enumerate(names):
        maps = {m: v[k].cpu() for m, v in e.method_maps.items()}
        sheet = explanation_sheet_figure(
            e.images[k].cpu(), maps, e.class_mean_maps[k].cpu(), f"class {name}"
        )
        figures[f"sheet_{k}"] = figure_png(sheet)
    return figures


def data_figures(card: dict | None) -> dict[str, bytes]:
    """Figures drawn from the data card's numbers (per-class factor distributions)."""
    distributions = (card or {}).get("factors", {}).get("distributions")
    if not distributions:
        return {}
    return {"factor_distributions": figure_png(factor_distribution_figure(distributions))}


def render_trust_report(
    evaluation: Evaluation, context: ReportContext, figures: dict[str, bytes]
) -> str:
    """The HTML page for one model version."""
    env = Environment(
        loader=PackageLoader("tai", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    images = {k: base64.b64encode(v).decode() for k, v in figures.items()}
    report = evaluation.report(context.lineage)
    metrics = {
        **report["metrics"],
        **(data_metrics(context.data_card) if context.data_card else {}),
    }
    if context.data_card and context.data_card.get("drift"):
        metrics.update(context.data_card["drift"]["metrics"])
    evidence = evidence_table(
        metrics,
        {
            **context.lineage,
            "tai.approval": "not required by the policy",
            **context.version_tags,
        },
        {"tai/tai_report.json", "data/data_card.json", "trust report"},
    )
    return env.get_template("trust_report.html.j2").render(
        evidence=evidence,
        ctx=context,
        report=report,
        metrics=report["metrics"],
        images=images,
        robustness=evaluation.robustness,
        explanations=report["explanations"],
        card=context.data_card,
        data=data_metrics(context.data_card) if context.data_card else None,
    )
