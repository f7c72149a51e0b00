"""The `tai-pipeline` flow: data engineering, training, evaluation, gates, promotion."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefect import flow, get_run_logger

from flows.lineage import MODEL_SETTINGS, lineage_tags, model_tags, same_inputs
from flows.preflight import load_run_inputs, run_settings
from flows.progress import current
from flows.stores import make_data_store
from flows.tasks.data import data_card, materialize, resolve_data_version
from flows.tasks.data_drift import compare_with_baseline, drift_metrics, drift_not_applicable
from flows.tasks.evaluation import (
    calibrate,
    compare_with_champion,
    evaluate,
    load_champion,
    weights_config,
)
from flows.tasks.monitoring import fit_monitoring
from flows.tasks.promotion import discard_incomplete_versions, judge, register_and_promote
from flows.tasks.training import train_model
from infra.mlflow_store import MlflowStore, ModelVersionInfo
from infra.settings import Settings, load_settings
from tai import tags
from tai.data.card import data_metrics, data_not_applicable

# How long a failed run keeps trying to mark its MLflow run FAILED while the tracking server
# does not answer (BUG-4): well under a minute, so a failed run does not hang; an outage that
# outlasts it is mended by the next run (fail_orphaned_runs).
FAIL_RUN_RETRY_S = 40.0


@dataclass(frozen=True)
class PipelineResult:
    """What one pipeline run produced; the CLI prints it."""

    data_commit: str
    run_id: str
    version: str
    promoted: bool
    champion_version: str | None
    metrics: dict[str, float]
    reasons: list[str]
    report_path: Path
    gates_passed: bool = False
    approval: str = ""  # a person's decision, when the policy asked for one
    data: dict[str, float] = field(default_factory=dict)  # the data card's and drift's
    note: str = ""  # why a version that passed was not promoted (the champion moved)
    reused: bool = False  # an identical version existed: nothing was trained


@flow(name="tai-pipeline", log_prints=False)
def tai_pipeline(
    branch: str = "main",
    commit: str | None = None,
    settings: Settings | None = None,
    force: bool = False,
) -> PipelineResult:
    """Train, check, gate and register a model on one data commit.

    A version trained on the same data commit, code, policy, requirements and
    model-shaping settings is returned as it is, without training, registering or moving
    `champion` (a nightly run on an unchanged branch, a replayed event), unless ``force``.

    Args:
        branch: the data branch whose head is used when no commit is given.
        commit: a data commit id; pins the run to it.
        settings: overrides the settings read from the environment.
        force: train even if an identical version exists.
    """
    settings = settings or load_settings()
    log = get_run_logger()
    progress = current()
    progress.timings.clear()
    # Everything that can be wrong with the inputs is checked before anything is trained.
    with progress.stage("inputs"):
        inputs = load_run_inputs(settings)
        policy = inputs.policy
        settings = run_settings(settings, inputs.requirements)
        store = make_data_store(settings)
        data_version = resolve_data_version(store, commit or branch)
        lineage = lineage_tags(data_version, policy, inputs.requirements, settings)
        mlflow = MlflowStore(settings)
        clean_up_after_failed_runs(mlflow, log)
        if not force:
            earlier = identical_version(mlflow, lineage)
            if earlier is not None:
                log.info("version %s was trained on the same inputs; nothing to do", earlier)
                return reused_result(mlflow, earlier, data_version.commit_id)
    with progress.stage("data engineering"):
        root = materialize(store, data_version)
        data = data_card(
            root,
            settings.dataset,
            data_version,
            settings.cache_dir,
            settings.seed,
            settings.group_column,
            settings.factor_method,
        )
    card = data.card

    run_id = mlflow.create_run(
        f"train@{data_version.commit_id[:10]}", {**lineage, **flow_run_tag()}
    )
    try:
        with progress.stage("data drift"):
            drift = compare_with_baseline(
                store,
                mlflow,
                data_version,
                root,
                data,
                settings.dataset,
                settings.cache_dir,
                settings.seed,
            )
        data = replace(data, card={**card, "drift": drift})
        card = data.card
        data_numbers = {**data_metrics(card), **drift_metrics(drift)}
        mlflow.log_json(run_id, card, "data/data_card.json")
        mlflow.log_file(run_id, data.factors_png, "data")
        mlflow.log_metrics(run_id, data_numbers)
        mlflow.log_params(run_id, settings_params(settings))
        if inputs.requirements is not None:
            requirements_text = settings.requirements_file.read_text()
            mlflow.log_text(run_id, requirements_text, "requirements/tai-requirements.yaml")
        with progress.stage("training"):
            trained = train_model(settings, root, run_id)
            mlflow.resume_run(run_id)  # Lightning's logger ended it; it goes on till the end
        with progress.stage("calibration"):
            calibrated = calibrate(trained, settings.target_coverage)
        with progress.stage("evaluation"):
            champion = load_champion(mlflow)
            evaluation = evaluate(
                calibrated, trained, settings, inputs, data_version.commit_id, champion
            )
        with progress.stage("monitoring reference"):
            monitoring = fit_monitoring(trained, calibrated, evaluation, policy, seed=settings.seed)
            with tempfile.TemporaryDirectory() as tmp:
                for path in monitoring.save(Path(tmp)):
                    mlflow.log_file(run_id, path, "monitoring")
        mlflow.log_metrics(run_id, evaluation.metrics, prefix="test/")
        mlflow.log_json(run_id, evaluation.report(lineage), "tai/tai_report.json")
        with progress.stage("gates"):
            comparisons = compare_with_champion(evaluation, policy, settings.seed)
            decision = judge(
                policy,
                {**evaluation.metrics, **data_numbers},
                {
                    **data_not_applicable(card),
                    **drift_not_applicable(drift),
                    **evaluation.not_applicable(),
                },
                evaluation.bounds,
                comparisons,
            )
        mlflow.log_json(run_id, decision.as_dict(), "tai/gate_decision.json")
        with progress.stage("registration"):
            example = trained.data.eval_split("test").images([0, 1])
            mlflow.log_weights(
                run_id,
                calibrated.model.state_dict(),
                weights_config(calibrated, trained.data.input_size),
            )
            promotion = register_and_promote(
                mlflow,
                run_id,
                example,
                evaluation,
                decision,
                lineage,
                data,
                settings.reports_dir,
                classes=trained.data.classes,
                defer_threshold=calibrated.abstention_threshold,
                approval_timeout_s=(
                    policy.approval.timeout_s if policy.approval.required else None
                ),
                comparisons=comparisons,
                requirements=inputs.requirements,
                policy=policy,
                extra_tags={
                    tags.ATC_THRESHOLD: repr(monitoring.reference.threshold),
                    **model_tags(trained.module.model),
                },
                baseline=champion.version if champion else None,
            )
        mlflow.log_metrics(run_id, {f"time/{k}": v for k, v in progress.timings.items()})
    except BaseException:
        mark_failed(mlflow, run_id, log)
        raise
    mlflow.end_run(run_id)
    log.info(
        "model version %s: %s",
        promotion.version,
        "champion" if promotion.promoted else "not promoted",
    )
    return PipelineResult(
        data_commit=data_version.commit_id,
        run_id=run_id,
        version=promotion.version,
        promoted=promotion.promoted,
        champion_version=promotion.champion_version,
        metrics=evaluation.metrics,
        data=data_numbers,
        reasons=decision.reasons,
        report_path=promotion.report_path,
        gates_passed=decision.passed,
        approval=promotion.approval.explain() if promotion.approval else "",
        note=promotion.note,
    )


def flow_run_tag() -> dict[str, str]:
    """The MLflow run's tag naming this Prefect flow run (see :func:`fail_orphaned_runs`)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return {}
    return {tags.FLOW_RUN: str(context.flow_run.id)}


def mark_failed(mlflow: MlflowStore, run_id: str, log) -> None:
    """Mark the MLflow run of a failed pipeline run FAILED, trying for
    :data:`FAIL_RUN_RETRY_S` while the tracking server does not answer. Never raises: the
    pipeline's own error is what the flow run must report, and a run left RUNNING is marked
    FAILED by the next pipeline run (:func:`fail_orphaned_runs`)."""
    try:
        mlflow.end_run(run_id, failed=True, retry_for_s=FAIL_RUN_RETRY_S)
    except Exception as exc:
        log.warning(
            "could not mark MLflow run %s FAILED (%s: %s); the next pipeline run will",
            run_id,
            type(exc).__name__,
            str(exc).strip().splitlines()[0] if str(exc).strip() else "",
        )


def clean_up_after_failed_runs(mlflow: MlflowStore, log) -> None:
    """What runs that failed while the tracking server was down left behind: MLflow runs
    still RUNNING (BUG-4) and versions whose registration never completed (BUG-5). Best
    effort: a failure here is logged, and the run goes on (if MLflow is down, the next step
    says so)."""
    try:
        fail_orphaned_runs(mlflow, log)
        discard_incomplete_versions(mlflow, log)
    except Exception as exc:
        log.warning("could not clean up after earlier failed runs: %s: %s", type(exc).__name__, exc)


def fail_orphaned_runs(mlflow: MlflowStore, log) -> list[str]:
    """Mark FAILED every MLflow run of the experiment that is still RUNNING although the
    Prefect flow run that created it (its ``tai.flow_run_id`` tag) has ended.

    A pipeline run marks its MLflow run FAILED when it fails; if the tracking server is
    down then (and stays down past :data:`FAIL_RUN_RETRY_S`), or the process is killed, the
    run stays RUNNING for ever. Prefect knows whether that flow run is over (COMPLETED,
    FAILED, CRASHED, CANCELLED): then nobody will end the MLflow run, and this does. Why
    the flow run's state and not the MLflow run's age: two pipeline runs may overlap (two
    merges), and a live run must never be marked FAILED; a run without the tag (created
    elsewhere, or before the tag existed) or whose flow run this Prefect API does not know
    is left alone. Returns the MLflow runs marked FAILED.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    orphans = []
    running = [(r, t[tags.FLOW_RUN]) for r, t in mlflow.running_runs() if t.get(tags.FLOW_RUN)]
    if not running:
        return orphans
    with get_client(sync_client=True) as client:
        for run_id, flow_run_id in running:
            try:
                state = client.read_flow_run(UUID(flow_run_id)).state
            except (ObjectNotFound, ValueError):
                continue  # not a flow run of this Prefect API: not ours to judge
            if state is not None and state.is_final():
                mlflow.end_run(run_id, failed=True)
                orphans.append(run_id)
                log.warning(
                    "marked MLflow run %s FAILED: its flow run %s ended %s without ending it",
                    run_id,
                    flow_run_id,
                    state.type.value,
                )
    return orphans


def settings_params(settings: Settings) -> dict[str, object]:
    """The settings that shape the model (:data:`flows.lineage.MODEL_SETTINGS`), logged as
    MLflow params. ``image_size`` and ``pretrained`` are left to the LightningModule's
    hyperparameters, which log their resolved values (MLflow refuses a param logged twice
    with two values: ``0`` is "choose" in the settings, ``(224, 224)`` what was chosen)."""
    resolved_by_the_module = {"image_size", "pretrained"}
    return {k: getattr(settings, k) for k in MODEL_SETTINGS if k not in resolved_by_the_module}


def identical_version(registry: MlflowStore, lineage: dict[str, str]) -> ModelVersionInfo | None:
    """The newest version trained on exactly the inputs of ``lineage``, if any."""
    for version in reversed(registry.list_versions()):
        if same_inputs(lineage, version.tags):
            return version
    return None


def reused_result(registry: MlflowStore, version: ModelVersionInfo, commit: str) -> PipelineResult:
    """What an identical earlier run produced, as this run's result."""
    champion = registry.champion()
    reasons = version.tags.get(tags.GATES_REASONS, "")
    return PipelineResult(
        data_commit=commit,
        run_id=version.run_id,
        version=version.version,
        promoted=False,
        champion_version=champion.version if champion else None,
        metrics=registry.test_metrics(version.run_id),
        reasons=reasons.split("; ") if reasons else [],
        report_path=Path(version.tags.get(tags.REPORT, "")),
        gates_passed=version.gates_passed,
        reused=True,
    )
