"""Gates and promotion: judge the TAI report, register the version, move `champion`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.tasks._retry import retry_transient
from flows.tasks.approval import await_approval
from flows.tasks.data import DataCard
from infra.approvals import Approval
from infra.mlflow_store import MlflowStore
from tai import tags
from tai.evaluation.evaluate import Evaluation
from tai.gates.decision import GateDecision, evaluate_gates
from tai.gates.policy import GatePolicy
from tai.gates.significance import PairedDifference
from tai.report.trust_report import ReportContext, data_figures, render_trust_report, report_figures

DEFER_TAG = tags.DEFER_THRESHOLD


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    champion_version: str | None
    report_path: Path
    approval: Approval | None = None


@task(cache_policy=NO_CACHE)
def judge(
    policy: GatePolicy,
    metrics: dict[str, float],
    not_applicable: dict[str, str],
    bounds: dict[str, tuple[float, float]] | None = None,
    comparisons: dict[str, PairedDifference] | None = None,
) -> GateDecision:
    """Evaluate every gate; publish the gate table as a Prefect artifact.

    ``comparisons`` is None when there is no champion: the champion gates are skipped.
    """
    decision = evaluate_gates(
        policy, metrics, not_applicable=not_applicable, bounds=bounds, comparisons=comparisons
    )
    verdict = "all gates passed" if decision.passed else "gates failed"
    create_markdown_artifact(
        markdown=f"## Gate decision: {verdict}\n\n{decision.markdown_table()}\n",
        key="tai-gates",
        description="TAI gate decision of this pipeline run",
    )
    return decision


def gate_tags(decision: GateDecision) -> dict[str, str]:
    out = {tags.GATES_PASSED: str(decision.passed).lower()}
    for r in decision.results:
        out[tags.gate_tag(r.key)] = r.explain()
    if decision.reasons:
        out[tags.GATES_REASONS] = "; ".join(decision.reasons)
    return out


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def register_and_promote(
    store: MlflowStore,
    run_id: str,
    example: torch.Tensor,
    evaluation: Evaluation,
    decision: GateDecision,
    lineage: dict[str, str],
    data: DataCard,
    reports_dir: Path,
    *,
    classes: list[str],
    defer_threshold: float | None,
    approval_timeout_s: int | None = None,
    comparisons: dict[str, PairedDifference] | None = None,
) -> Promotion:
    """Register a new model version with lineage and gate tags, write its trust report,
    and make it `champion` only if every gate passed (and, when the policy asks for it,
    a person approved it within ``approval_timeout_s``).

    The registered model is the servable pyfunc of :mod:`infra.pyfunc_model`: it applies
    the fitted temperature and answers "defer_to_human" below ``defer_threshold``.
    If anything fails after the version was created, the version is deleted again, so
    the registry never holds a half-registered model and the alias never moves.
    """
    log = get_run_logger()
    model_uri = store.log_model(
        run_id, example.numpy(), classes=classes, defer_threshold=defer_threshold
    )
    previous = store.champion()
    # The abstention threshold the served model applies, visible on the version.
    oversight = {} if defer_threshold is None else {DEFER_TAG: repr(float(defer_threshold))}
    version = store.register(model_uri, run_id, {**lineage, **gate_tags(decision), **oversight})
    report_path = reports_dir / f"{store.model_name}-v{version}.html"
    try:
        approval = None
        if decision.passed and approval_timeout_s is not None:
            log.info("version %s passed every gate; waiting for a person's approval", version)
            approval = await_approval(store, version, timeout_s=approval_timeout_s)
        promoted = decision.passed and (approval is None or approval.approved)
        version_tags = store.get_version(version).tags
        context = ReportContext(
            model_name=store.model_name,
            version=version,
            lineage=lineage,
            decision=decision,
            promoted=promoted,
            champion_version=previous.version if previous else None,
            created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            data_card=data.card,
            version_tags=version_tags,
            approval=approval.as_dict() if approval else None,
            comparisons=comparisons,
        )
        figures = {
            **report_figures(evaluation),
            **data_figures(data.card),
            "factors": data.factors_png.read_bytes(),
        }
        html = render_trust_report(evaluation, context, figures)
        reports_dir.mkdir(parents=True, exist_ok=True)
        report_path.write_text(html)
        store.log_file(run_id, report_path, "tai")
        store.set_version_tag(version, tags.REPORT, str(report_path))
        if promoted:
            store.set_champion(version)
    except BaseException:
        store.delete_version(version)
        report_path.unlink(missing_ok=True)
        raise
    if promoted:
        log.info("version %s passed every gate and is now champion", version)
    elif approval is not None:
        log.warning("version %s was not approved: %s", version, approval.explain())
    else:
        log.warning("version %s failed gates: %s", version, "; ".join(decision.reasons))
    champion = version if promoted else (previous.version if previous else None)
    return Promotion(version, promoted, champion, report_path, approval)
