"""Gates and promotion: judge the TAI report, register the version, move `champion`."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.tasks._retry import retry_transient
from flows.tasks.approval import await_approval
from flows.tasks.data import DataCard, write_atomically
from infra.approvals import APPROVED, REJECTED, Approval, approval_of
from infra.mlflow_store import MlflowStore, ModelVersionInfo, retrying
from tai import tags
from tai.evaluation.evaluate import Evaluation
from tai.evaluation.registry import metric_specs
from tai.gates.decision import GateDecision, evaluate_gates
from tai.gates.derivation import report_section
from tai.gates.policy import GatePolicy
from tai.gates.requirements import Requirements
from tai.gates.significance import PairedDifference
from tai.report.trust_report import ReportContext, data_figures, render_trust_report, report_figures

DEFER_TAG = tags.DEFER_THRESHOLD
# How long a failed registration keeps trying to delete its version while the tracking
# server does not answer (BUG-5); what is left then is `pending`, which no reader trusts,
# and the next pipeline run deletes it (discard_incomplete_versions).
DISCARD_RETRY_S = 30.0


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    champion_version: str | None
    report_path: Path
    approval: Approval | None = None
    note: str = ""  # why a passing version was not promoted (the champion moved)


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
    requirements: Requirements | None = None,
    policy: GatePolicy | None = None,
    extra_tags: dict[str, str] | None = None,
    baseline: str | None = None,
) -> Promotion:
    """Register a new model version with lineage and gate tags, write its trust report,
    and make it `champion` only if every gate passed (and, when the policy asks for it,
    a person approved it within ``approval_timeout_s``) and the champion is still the one
    it was judged against (``baseline``).

    The registered model is the servable pyfunc of :mod:`infra.pyfunc_model`: it applies
    the fitted temperature and answers "defer_to_human" below ``defer_threshold``.

    Registration is all or nothing: the version is created ``tai.registration=pending``
    (with all its tags, in one call) and tagged ``complete`` as the last step (with the
    alias, when it is promoted, moved right after); a pending version is not listed, never
    champion, never reused by an unchanged re-run.

    What a failure leaves: before a person decided, the version is deleted again (the
    registry never holds a half-registered model, the alias never moves); if the tracking
    server does not answer for :data:`DISCARD_RETRY_S`, the version stays pending and the
    next pipeline run deletes it (:func:`discard_incomplete_versions`). Once a person
    decided, the version and the decision stay, and a retry of this task reuses them: it
    neither registers a second version nor asks again. A retry also reuses (and completes)
    a pending version of this run that could not be deleted. Compare-and-set: if `champion`
    moved while this run was judged against ``baseline`` (two merges a few seconds apart),
    the version is not promoted and says so (tag ``tai.promotion``); run the pipeline
    again to judge it against the new champion.
    """
    log = get_run_logger()
    version: str | None = None
    report_path: Path | None = None
    approval = None
    try:
        existing = store.version_of_run(run_id)
        if existing is not None:  # a retry: the version of this run exists already
            version = existing.version
            log.info("version %s of run %s exists; continuing with it", version, run_id)
        else:
            model_uri = store.log_model(
                run_id, example.numpy(), classes=classes, defer_threshold=defer_threshold
            )
            # The abstention threshold the served model applies, visible on the version.
            oversight = {} if defer_threshold is None else {DEFER_TAG: repr(float(defer_threshold))}
            version = store.register(
                model_uri,
                run_id,
                {**lineage, **gate_tags(decision), **oversight, **(extra_tags or {})},
                complete=False,
            )
        report_path = reports_dir / f"{store.model_name}-v{version}.html"
        if decision.passed and approval_timeout_s is not None:
            approval = approval_of(store, version)
            if approval.state not in (APPROVED, REJECTED):
                log.info("version %s passed every gate; waiting for a person's approval", version)
                approval = await_approval(store, version, timeout_s=approval_timeout_s)
        wanted = decision.passed and (approval is None or approval.approved)
        with champion_lock(store):
            current = store.champion()
            moved = wanted and (current.version if current else None) != baseline
            promoted = wanted and not moved
            note = ""
            if moved:
                note = (
                    f"not promoted: champion moved from {_v(baseline)} to {_v(current.version)} "
                    f"while this version was judged against {_v(baseline)}; run the pipeline "
                    f"again to judge it against {_v(current.version)}"
                )
                store.set_version_tag(version, tags.PROMOTION, note)
            report_path = _write_report(
                store,
                run_id,
                version,
                report_path,
                evaluation,
                decision,
                lineage,
                data,
                promoted=promoted,
                previous=current.version if current else None,
                approval=approval,
                comparisons=comparisons,
                requirements=requirements,
                policy=policy,
            )
            # The last step: the version is complete, then (set_champion completes it
            # first) champion; the alias never points at a pending version.
            if promoted:
                store.set_champion(version)
            else:
                store.complete_registration(version)
    except BaseException:
        if approval is None or approval.state not in (APPROVED, REJECTED):
            # Nobody decided yet: nothing to keep. `version` is None when registering
            # failed, possibly after the registry created the version: look it up.
            _discard(store, run_id, version, log)
            if report_path is not None:
                report_path.unlink(missing_ok=True)
        raise
    if promoted:
        log.info("version %s passed every gate and is now champion", version)
    elif moved:
        log.warning("version %s: %s", version, note)
    elif approval is not None:
        log.warning("version %s was not approved: %s", version, approval.explain())
    else:
        log.warning("version %s failed gates: %s", version, "; ".join(decision.reasons))
    champion = version if promoted else (current.version if current else None)
    return Promotion(version, promoted, champion, report_path, approval, note)


def _discard(store: MlflowStore, run_id: str, version: str | None, log) -> None:
    """Delete the version of a registration that failed, trying for :data:`DISCARD_RETRY_S`
    while the server does not answer; never raises (the registration's error is the one to
    report). Kept: a version a person decided on (the registry answered after the task's
    own check failed) and one that holds the alias (it was set, only the answer was lost:
    deleting it would leave no champion)."""

    seen = {"version": version or "(unknown)"}

    def discard() -> str | None:
        info = store.version_of_run(run_id)  # one version per run; `version` may be None
        if info is None or _decided(info):
            return None
        seen["version"] = info.version
        champion = store.champion()
        if champion is not None and champion.version == info.version:
            return None
        try:
            store.delete_version(info.version)
        except Exception as exc:  # deleted by an earlier try whose answer was lost
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
        return info.version

    try:
        deleted = retrying(discard, for_s=DISCARD_RETRY_S)
    except Exception as exc:
        log.warning(
            "could not delete version %s of the failed run %s (%s); it stays `%s=%s`, which "
            "nothing reads, and the next pipeline run deletes it",
            seen["version"],
            run_id,
            _first_line(exc),
            tags.REGISTRATION,
            tags.REGISTRATION_PENDING,
        )
        return
    if deleted is not None:
        log.info("deleted version %s of the failed run %s", deleted, run_id)


def discard_incomplete_versions(
    store: MlflowStore, log: logging.Logger | logging.LoggerAdapter
) -> list[str]:
    """What failed registrations left (BUG-5): every version still ``pending`` whose MLflow
    run has ended is deleted, unless a person decided on it: then its registration is
    completed (the version and the decision stay, as :func:`register_and_promote`
    promises; it lacks only its report). Returns the versions deleted.

    A pending version of a run still RUNNING is being registered (or waits for a person's
    approval) by a live pipeline run, and is left alone: a pipeline's MLflow run is RUNNING
    until the pipeline ends it (``flows.pipeline`` resumes it after Lightning's logger
    ends it early), and ``flows.pipeline.fail_orphaned_runs``, called first, marks FAILED
    the RUNNING runs whose Prefect flow run is over.
    """
    deleted = []
    for info in store.incomplete_versions():
        if not store.run_ended(info.run_id):
            continue
        if _decided(info):
            store.complete_registration(info.version)
            log.warning(
                "version %s: its run %s ended before its registration completed, but a "
                "person decided on it (%s); completed it, without a trust report",
                info.version,
                info.run_id,
                info.tags.get(tags.APPROVAL),
            )
            continue
        store.delete_version(info.version)
        deleted.append(info.version)
        log.warning(
            "deleted version %s: its run %s ended before its registration completed",
            info.version,
            info.run_id,
        )
    return deleted


def _decided(info: ModelVersionInfo) -> bool:
    return info.tags.get(tags.APPROVAL) in (APPROVED, REJECTED)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _v(version: str | None) -> str:
    return f"version {version}" if version else "none"


def _write_report(
    store: MlflowStore,
    run_id: str,
    version: str,
    report_path: Path,
    evaluation: Evaluation,
    decision: GateDecision,
    lineage: dict[str, str],
    data: DataCard,
    *,
    promoted: bool,
    previous: str | None,
    approval: Approval | None,
    comparisons: dict[str, PairedDifference] | None,
    requirements: Requirements | None,
    policy: GatePolicy | None,
) -> Path:
    """The version's trust report, written, logged to the run and tagged on the version."""
    context = ReportContext(
        model_name=store.model_name,
        version=version,
        lineage=lineage,
        decision=decision,
        promoted=promoted,
        champion_version=previous,
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        data_card=data.card,
        version_tags=store.get_version(version).tags,
        approval=approval.as_dict() if approval else None,
        comparisons=comparisons,
        requirements=(
            report_section(requirements, metric_specs(), policy) if requirements else None
        ),
    )
    figures = {
        **report_figures(evaluation),
        **data_figures(data.card),
        "factors": data.factors_png.read_bytes(),
    }
    html = render_trust_report(evaluation, context, figures)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(report_path, html)
    store.log_file(run_id, report_path, "tai")
    store.set_version_tag(version, tags.REPORT, str(report_path))
    return report_path


@contextlib.contextmanager
def champion_lock(store: MlflowStore) -> Iterator[None]:
    """Serialise the check-and-set of `champion` between runs on this machine (a file
    lock in the workspace): two runs cannot both see the old champion and both move it.
    Runs on different machines against one tracking server share no lock; the check
    right before the set still catches every move that finished before it."""
    path = store.settings.workspace_dir / "locks" / f"{store.model_name}.champion.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
