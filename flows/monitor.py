"""The `tai-monitor` flow: a production batch of unlabeled images against a deployed model
version, with an alarm at the policy's rules and a review branch for people to label.

1. Inputs: the model version (``champion`` by default), its monitoring reference, the
   policy's ``monitoring:`` rules, and the batch (a folder, or a path of a data-store ref
   such as an ``inbox`` branch that production commits to). Everything is checked before
   anything is written.
2. The model's outputs on the batch, and the label-free assessment
   (:func:`tai.monitoring.assess.assess_batch`): ATC's accuracy estimate with its
   interval (AC and DoC beside it), per-class estimates and class priors, the deferral
   rate against the expected one, drift of embeddings, factors and noise.
3. The alarm: a batch that fails a rule. An alarm emits ``tai.monitor.alarm`` once per
   episode (no repeat for the same rules until a batch passes them again) and commits
   the batch's deferred and least confident images to ``review/<batch id>`` with a
   ``to_label.csv``: a person labels them into the training split and merges, which
   retrains through the usual trigger and gates.
4. The record: an MLflow run in the experiment ``tai-monitoring`` (tags: model version,
   data ref and commit, batch id), its metrics, the assessment as JSON and an HTML
   monitoring report; a Prefect artifact with the verdict.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.preflight import load_run_inputs
from flows.progress import current
from flows.stores import make_data_store
from flows.tasks.evaluation import rebuild_model
from flows.tasks.monitoring import (
    Batch,
    MonitoringError,
    batch_outputs,
    load_reference,
    noise_sigmas,
    read_batch,
    review_selection,
    write_review_folder,
)
from infra.mlflow_store import MlflowStore
from infra.settings import Settings, load_settings
from tai import tags
from tai.gates.decision import evaluate_monitoring
from tai.monitoring.assess import assess_batch, drift_rule_minimum

EXPERIMENT = "tai-monitoring"


@dataclass(frozen=True)
class MonitorResult:
    """What one monitoring run found; the CLI prints it (``--json``: :meth:`as_json`)."""

    model_version: str
    batch_id: str
    n_images: int
    metrics: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    alarm: bool
    new_alarm: bool
    reasons: list[str]
    report: Path
    run_id: str
    data_ref: str = ""
    data_commit: str = ""
    review_branch: str = ""
    review_images: int = 0
    event_id: str = ""
    worst_class: str = ""
    grown_class: str = ""
    most_shifted_factors: list[int] = field(default_factory=list)

    def as_json(self) -> dict:
        """The ``--json`` object: fixed keys first, then the rest."""
        m = self.metrics
        lower, upper = self.bounds.get("estimated_accuracy", (math.nan, math.nan))
        head = {
            "model_version": self.model_version,
            "n_images": self.n_images,
            "estimated_accuracy": m["estimated_accuracy"],
            "estimated_accuracy_lower": lower,
            "estimated_accuracy_upper": upper,
            "average_confidence": m["average_confidence"],
            "deferral_rate": m["deferral_rate"],
            "expected_deferral_rate": m["expected_deferral_rate"],
            "drift_p_value": m["drift_p_value"],
            "alarm": self.alarm,
            "reasons": self.reasons,
            "report": str(self.report),
        }
        rest = {
            "batch_id": self.batch_id,
            "doc_estimated_accuracy": m["doc_estimated_accuracy"],
            "deferral_p_value": m["deferral_p_value"],
            "drifted_factors": m["drifted_factors"],
            "most_shifted_factors": self.most_shifted_factors,
            "worst_class": self.worst_class,
            "worst_class_estimated_accuracy": m["worst_class_estimated_accuracy"],
            "prior_shift_tv": m["prior_shift_tv"],
            "grown_class": self.grown_class,
            "new_alarm": self.new_alarm,
            "event_id": self.event_id or None,
            "review_branch": self.review_branch or None,
            "review_images": self.review_images,
            "data_ref": self.data_ref or None,
            "data_commit": self.data_commit or None,
            "mlflow_run_id": self.run_id,
        }
        return {k: _json_number(v) for k, v in {**head, **rest}.items()}


def _json_number(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@flow(name="tai-monitor", log_prints=False)
def tai_monitor(
    folder: str | None = None,
    ref: str | None = None,
    prefix: str = "",
    model_version: str | None = None,
    settings: Settings | None = None,
) -> MonitorResult:
    """Assess one production batch against a deployed model version (see the module).

    Args:
        folder: a folder of the batch's images (any nesting).
        ref: instead of ``folder``, a branch or commit of the data store ...
        prefix: ... and the path of the batch in it (e.g. ``incoming/2026-12-03``).
        model_version: the version to monitor; ``champion`` when None.
        settings: overrides the settings read from the environment.
    """
    settings = settings or load_settings()
    progress = current()
    progress.timings.clear()
    with progress.stage("inputs"):
        inputs = load_run_inputs(settings)
        if not inputs.policy.monitoring:
            raise MonitoringError(
                f"{inputs.policy.source} has no `monitoring:` rules, so no batch could ever "
                "alarm; add rules (the README's example, or `tai init` derives them)"
            )
        registry = MlflowStore(settings)
        version = registry.get_version(model_version or "champion")
        reference = load_reference(registry, version.run_id, version.version)
        model, config = rebuild_model(registry, version)
        batch, data_ref, data_commit, local = _batch(settings, folder, ref, prefix, config)
    with progress.stage("inference"):
        probs, embeddings = batch_outputs(model, batch.images, batch_size=settings.batch_size)
    with progress.stage("assessment"):
        try:
            assessment = assess_batch(
                probs,
                embeddings,
                reference,
                confidence=inputs.policy.confidence,
                drift_p_min=drift_rule_minimum(inputs.policy.monitoring),
                noise_sigmas=noise_sigmas(batch.images),
                seed=settings.seed,
            )
        except ValueError as exc:  # the batch does not fit the model's reference
            raise MonitoringError(f"batch {batch.batch_id}: {exc}") from None
        decision = evaluate_monitoring(
            inputs.policy,
            assessment.metrics(),
            bounds=assessment.bounds(),
            not_applicable=assessment.not_applicable(),
        )
    run_tags = {
        tags.MODEL_VERSION: version.version,
        tags.BATCH_ID: batch.batch_id,
        tags.POLICY_SHA256: inputs.policy.sha256,
        **(
            {tags.DATA_COMMIT: data_commit, tags.DATA_BRANCH: data_ref, tags.BATCH_PREFIX: prefix}
            if data_ref
            else {}
        ),
    }
    run_id = registry.create_run(f"monitor@{batch.batch_id}", run_tags, experiment=EXPERIMENT)
    try:
        with progress.stage("record"):
            new_alarm, event_id, review = _act_on(
                settings, registry, version.version, batch, probs, reference, decision, local
            )
            report = _record(
                settings, registry, run_id, version.version, batch, assessment, decision, review
            )
    except BaseException:
        registry.delete_run(run_id)  # no half-written monitoring run
        raise
    registry.end_run(run_id)
    worst = assessment.worst_class
    return MonitorResult(
        model_version=version.version,
        batch_id=batch.batch_id,
        n_images=len(batch.names),
        metrics=assessment.metrics(),
        bounds=assessment.bounds(),
        alarm=not decision.passed,
        new_alarm=new_alarm,
        reasons=decision.reasons,
        report=report,
        run_id=run_id,
        data_ref=data_ref,
        data_commit=data_commit,
        review_branch=review[0],
        review_images=review[1],
        event_id=event_id,
        worst_class=worst.name if worst else "",
        grown_class=assessment.grown_class or "",
        most_shifted_factors=list(assessment.most_shifted_factors),
    )


@flow(name="tai-monitor-inbox", log_prints=False)
def monitor_inbox(
    ref: str = "inbox", prefix: str = "incoming", settings: Settings | None = None
) -> str:
    """Monitor the batch at ``prefix`` of the head of ``ref`` unless that commit's batch
    was monitored already (the scheduled deployment runs this every hour)."""
    settings = settings or load_settings()
    commit = make_data_store(settings).version(ref).commit_id
    seen = MlflowStore(settings).runs(
        EXPERIMENT,
        f"tags.`{tags.DATA_COMMIT}` = '{commit}' and tags.`{tags.BATCH_PREFIX}` = '{prefix}'",
    )
    if seen:
        return f"{ref}@{commit[:12]}:{prefix} was monitored already (run {seen[-1].info.run_id})"
    return describe(tai_monitor(ref=ref, prefix=prefix, settings=settings))


def _batch(settings, folder, ref, prefix, config) -> tuple[Batch, str, str, bool]:
    """The batch from a folder or a data-store path; (batch, ref, commit, from a folder)."""
    size, channels = config["image_size"], config["in_channels"]
    if (folder is None) == (ref is None):
        raise MonitoringError("give either a folder of images or --ref REF --prefix PATH")
    if folder is not None:
        return read_batch(Path(folder), channels=channels, size=size), "", "", True
    store = make_data_store(settings)
    version = store.version(ref)
    root = store.materialize(version.commit_id)
    where = root / prefix.strip("/")
    if not prefix.strip("/") or not where.is_dir():
        raise MonitoringError(
            f"{store.store_name} {store.repository}@{ref} has no folder {prefix!r}; pass "
            "--prefix with the path of the batch in it"
        )
    return read_batch(where, channels=channels, size=size), ref, version.commit_id, False


def _act_on(settings, registry, version, batch, probs, reference, decision, local):
    """The alarm's consequences: the episode (event once), the review branch."""
    from infra.events import emit_monitor_alarm

    failing = sorted(r.key for r in decision.results if not r.passed)
    info = registry.get_version(version)
    active = set(filter(None, info.tags.get(tags.MONITOR_ALARM, "").split(",")))
    if not failing:
        if active:
            registry.set_version_tag(version, tags.MONITOR_ALARM, "")
        return False, "", ("", 0)
    new = bool(set(failing) - active)
    registry.set_version_tag(version, tags.MONITOR_ALARM, ",".join(failing))
    review = _review_branch(settings, batch, probs, reference)
    event_id = ""
    if new:
        event_id = (
            emit_monitor_alarm(
                registry.model_name, version, batch.batch_id, decision.reasons, review[0]
            )
            or ""
        )
    return new, event_id, review


def _review_branch(settings, batch, probs, reference) -> tuple[str, int]:
    """Commit the images a person should label to ``review/<batch id>``; (branch, count).
    The branch starts from the training branch; nothing is committed if anything fails."""
    threshold = reference.abstention_threshold
    picked = review_selection(
        probs, None if math.isnan(threshold) else threshold, settings.review_budget
    )
    store = make_data_store(settings)
    branch = f"review/{batch.batch_id}"
    if branch in store.list_branches():
        if store.list_files(branch, prefix=f"review/{batch.batch_id}/"):
            return branch, len(picked)  # the same batch again: its review exists
    else:
        store.create_branch(branch, settings.data_branch)
    # A branch without the review (an earlier try failed before its commit) is filled now.
    with tempfile.TemporaryDirectory(dir=settings.workspace_dir) as tmp:
        write_review_folder(Path(tmp), batch, probs, reference.classes, picked)
        store.upload(branch, Path(tmp))
        store.commit(
            branch,
            f"Review {len(picked)} images of production batch {batch.batch_id}",
            {"source": "tai monitor", "batch": batch.batch_id, "images": str(len(picked))},
        )
    return branch, len(picked)


def _record(settings, registry, run_id, version, batch, assessment, decision, review) -> Path:
    """Metrics, the assessment and the HTML report into the run; the report's path."""
    from tai.report.monitoring_report import MonitoringContext, render_monitoring_report

    registry.log_metrics(run_id, {**assessment.metrics(), "alarm": float(not decision.passed)})
    registry.log_metrics(run_id, {f"time/{k}": v for k, v in current().timings.items()})
    registry.log_json(run_id, assessment.as_dict(), "monitoring/assessment.json")
    registry.log_json(run_id, decision.as_dict(), "monitoring/alarm_decision.json")
    selftest = _selftest(registry, version)
    context = MonitoringContext(
        model_name=registry.model_name,
        version=version,
        batch_id=batch.batch_id,
        n_images=len(batch.names),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        decision=decision,
        review_branch=review[0],
        review_images=review[1],
        selftest=selftest,
    )
    report = (
        settings.reports_dir / f"monitor-{registry.model_name}-v{version}-{batch.batch_id}.html"
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_monitoring_report(assessment, context))
    registry.log_file(run_id, report, "monitoring")
    verdict = "ALARM" if not decision.passed else "no alarm"
    create_markdown_artifact(
        markdown=f"## Batch {batch.batch_id} on version {version}: {verdict}\n\n"
        f"{decision.markdown_table()}\n",
        key="tai-monitor",
        description="TAI monitoring of a production batch",
    )
    return report


def _selftest(registry: MlflowStore, version: str) -> dict | None:
    from flows.tasks.monitoring import SELFTEST_ARTIFACT
    from infra.mlflow_store import RegistryError

    try:
        return registry.load_json(registry.get_version(version).run_id, SELFTEST_ARTIFACT)
    except RegistryError:
        return None


def describe(result: MonitorResult) -> str:
    """A few lines on what one monitoring run found."""
    m = result.metrics
    lower, upper = result.bounds.get("estimated_accuracy", (math.nan, math.nan))
    lines = [
        f"batch            {result.batch_id} ({result.n_images} images) on model version "
        f"{result.model_version}",
        f"accuracy         {m['estimated_accuracy']:.3f} estimated (ATC), interval "
        f"[{lower:.3f}, {upper:.3f}]; average confidence {m['average_confidence']:.3f}, "
        f"DoC {m['doc_estimated_accuracy']:.3f}",
        f"deferral         {m['deferral_rate']:.3f} of images (expected "
        f"{m['expected_deferral_rate']:.3f}, p = {m['deferral_p_value']:.3g})",
        f"drift            MMD p = {m['drift_p_value']:.3g}; {m['drifted_factors']:.0f} "
        "factors of variation drifted",
    ]
    if result.alarm:
        lines.append("alarm            yes" + ("" if result.new_alarm else " (same as before)"))
        lines += [f"  - {r}" for r in result.reasons]
        if result.review_branch:
            lines.append(
                f"review           {result.review_images} images on branch "
                f"{result.review_branch}: label them (to_label.csv) and merge"
            )
    else:
        lines.append("alarm            no")
    lines.append(f"report           {result.report}")
    return "\n".join(lines)
