"""The monitoring report: one self-contained HTML page per production batch, in the look
of the trust report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from tai.gates.decision import GateDecision
from tai.monitoring.assess import BatchAssessment


@dataclass(frozen=True)
class MonitoringContext:
    """What the page shows besides the assessment itself."""

    model_name: str
    version: str
    batch_id: str
    n_images: int
    created: str
    decision: GateDecision
    review_branch: str = ""
    review_images: int = 0
    selftest: dict[str, Any] | None = None


def render_monitoring_report(assessment: BatchAssessment, context: MonitoringContext) -> str:
    """The HTML page for one batch."""
    env = Environment(
        loader=PackageLoader("tai.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    return env.get_template("monitoring_report.html.j2").render(ctx=context, a=assessment.as_dict())
