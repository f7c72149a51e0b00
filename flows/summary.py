"""Plain-text summaries the CLI prints."""

from __future__ import annotations

import math
from collections.abc import Sequence

from flows.pipeline import PipelineResult
from infra.mlflow_store import ModelVersionInfo
from tai import tags


def describe_result(result: PipelineResult) -> str:
    """A few lines on what one pipeline run did."""
    if result.reused:
        champion = " (the champion)" if result.champion_version == result.version else ""
        return "\n".join(
            [
                f"data commit      {result.data_commit}",
                f"unchanged        version {result.version}{champion} was trained on this "
                "data commit, code, policy and settings already; nothing was trained "
                "(`tai run --force` trains again)",
                f"trust report     {result.report_path}",
            ]
        )
    m = result.metrics
    lines = [
        f"data commit      {result.data_commit}",
        f"model version    {result.version} (MLflow run {result.run_id})",
        f"accuracy {m['accuracy']:.4f} · ECE {m['ece']:.4f} · "
        f"corruption acc {m['mean_corruption_accuracy']:.4f} · "
        f"deletion AUC {m['deletion_auc']:.3f}",
    ]
    leaked = result.data.get("data_split_leakage", math.nan)
    if not math.isnan(leaked):
        val = result.data.get("data_val_leakage", math.nan)
        val_text = "" if math.isnan(val) else f", {val:.0f} validation images"
        lines.append(
            f"data leakage     {leaked:.0f} test images{val_text} also in training"
            + (" (see the data card's leakage pairs)" if leaked or val else "")
        )
    if result.approval:
        lines.append(f"approval         {result.approval}")
    if result.promoted:
        lines.append(f"gates            all passed: version {result.version} is now `champion`")
    elif result.gates_passed and result.note:
        lines.append(f"gates            all passed, but {result.note}")
        lines.append(f"champion         {result.champion_version or 'none yet'}")
    elif result.gates_passed:
        lines.append("gates            all passed, but not approved: not promoted")
        lines.append(f"champion         {result.champion_version or 'none yet'}")
    else:
        lines.append("gates            FAILED, not promoted:")
        lines += [f"  - {reason}" for reason in result.reasons]
        lines.append(f"champion         {result.champion_version or 'none yet'}")
    lines.append(f"trust report     {result.report_path}")
    return "\n".join(lines)


def _champion_cell(version: ModelVersionInfo) -> str:
    """``yes`` for the champion; else a pending or rejected human approval, if any."""
    if version.is_champion:
        return "yes"
    approval = version.tags.get(tags.APPROVAL, "")
    return approval if approval in ("pending", "rejected") else ""


def versions_table(
    versions: Sequence[ModelVersionInfo], metrics: dict[str, dict] | None = None
) -> str:
    """One row per model version: data commit, key metrics, gates, champion."""
    if not versions:
        return "no model versions registered yet; run `tai run` or `tai demo`"
    metrics = metrics or {}
    header = (
        f"{'version':>7}  {'data commit':12}  {'accuracy':>8}  {'ECE':>7}  {'corrupt.':>8}  "
        f"{'gates':6}  champion  report"
    )
    rows = [header, "-" * len(header)]
    for v in versions:
        m = metrics.get(v.version, {})
        acc = f"{m['accuracy']:.4f}" if "accuracy" in m else "-"
        ece = f"{m['ece']:.4f}" if "ece" in m else "-"
        robust = m.get("mean_corruption_accuracy")
        robust = "-" if robust is None else f"{robust:.4f}"
        rows.append(
            f"{v.version:>7}  {v.tags.get(tags.DATA_COMMIT, '?')[:12]:12}  {acc:>8}  {ece:>7}  "
            f"{robust:>8}  "
            f"{'pass' if v.gates_passed else 'FAIL':6}  {_champion_cell(v):8}  "
            f"{v.tags.get(tags.REPORT, '')}"
        )
    return "\n".join(rows)
