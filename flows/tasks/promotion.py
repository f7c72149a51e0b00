"""Gates and promotion: judge the TAI report, register the version, move `champion`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.tasks.data import DataCard
from infra.mlflow_store import MlflowStore
from tai.evaluation import Evaluation
from tai.policy import GateDecision, GatePolicy, evaluate_gates
from tai.trust_report import ReportContext, render_trust_report, report_figures


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    champion_version: str | None
    report_path: Path


@task(cache_policy=NO_CACHE)
def judge(
    policy: GatePolicy, metrics: dict[str, float], not_applicable: dict[str, str]
) -> GateDecision:
    """Evaluate every gate; publish the gate table as a Prefect artifact."""
    decision = evaluate_gates(policy, metrics, not_applicable=not_applicable)
    verdict = "all gates passed" if decision.passed else "gates failed"
    create_markdown_artifact(
        markdown=f"## Gate decision: {verdict}\n\n{decision.markdown_table()}\n",
        key="tai-gates",
        description="TAI gate decision of this pipeline run",
    )
    return decision


def gate_tags(decision: GateDecision) -> dict[str, str]:
    tags = {"tai.gates.passed": str(decision.passed).lower()}
    for r in decision.results:
        tags[f"tai.gate.{r.metric}"] = r.explain()
    if decision.reasons:
        tags["tai.gates.reasons"] = "; ".join(decision.reasons)
    return tags


@task(retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def register_and_promote(
    store: MlflowStore,
    run_id: str,
    model: torch.nn.Module,
    example: torch.Tensor,
    evaluation: Evaluation,
    decision: GateDecision,
    lineage: dict[str, str],
    data: DataCard,
    reports_dir: Path,
) -> Promotion:
    """Register a new model version with lineage and gate tags, write its trust report,
    and make it `champion` only if every gate passed.

    If anything fails after the version was created, the version is deleted again, so
    the registry never holds a half-registered model and the alias never moves.
    """
    log = get_run_logger()
    model_uri = store.log_model(run_id, model.eval(), example.numpy())
    previous = store.champion()
    version = store.register(model_uri, run_id, {**lineage, **gate_tags(decision)})
    report_path = reports_dir / f"{store.model_name}-v{version}.html"
    try:
        context = ReportContext(
            model_name=store.model_name,
            version=version,
            lineage=lineage,
            decision=decision,
            promoted=decision.passed,
            champion_version=previous.version if previous else None,
            created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            data_card=data.card,
        )
        figures = {**report_figures(evaluation), "factors": data.factors_png.read_bytes()}
        html = render_trust_report(evaluation, context, figures)
        reports_dir.mkdir(parents=True, exist_ok=True)
        report_path.write_text(html)
        store.log_file(run_id, report_path, "tai")
        store.set_version_tag(version, "tai.report", str(report_path))
        if decision.passed:
            store.set_champion(version)
    except BaseException:
        store.delete_version(version)
        report_path.unlink(missing_ok=True)
        raise
    if decision.passed:
        log.info("version %s passed every gate and is now champion", version)
    else:
        log.warning("version %s failed gates: %s", version, "; ".join(decision.reasons))
    champion = version if decision.passed else (previous.version if previous else None)
    return Promotion(version, decision.passed, champion, report_path)
