"""`tai trends`: every gated metric across model versions and every monitoring estimate
across production batches, on one HTML page (read from the registry and the runs)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from flows.monitor import EXPERIMENT
from flows.preflight import load_run_inputs
from infra.mlflow_store import MlflowStore
from infra.settings import Settings
from tai import tags
from tai.report.trends import MetricSeries, render_trends

# The monitoring estimates shown (with their interval where there is one).
MONITORED = (
    ("estimated_accuracy", "estimated_accuracy_lower", "estimated_accuracy_upper"),
    ("average_confidence", None, None),
    ("doc_estimated_accuracy", None, None),
    ("deferral_rate", None, None),
    ("drift_p_value", None, None),
    ("prior_shift_tv", None, None),
)


def write_trends(settings: Settings, output: Path | None = None) -> Path:
    """Write the trends page; returns its path."""
    inputs = load_run_inputs(settings)
    registry = MlflowStore(settings)
    versions = registry.list_versions()
    by_version = {}
    for v in versions:
        data = registry.client.get_run(v.run_id).data.metrics
        by_version[v.version] = {
            **{k: x for k, x in data.items() if not k.startswith(("test/", "time/"))},
            **registry.test_metrics(v.run_id),
        }
    gated = []
    for gate in inputs.policy.gates:
        points = [
            (f"v{v.version}", by_version[v.version].get(gate.metric, math.nan), None)
            for v in versions
        ]
        gated.append(MetricSeries(f"{gate.metric} ({gate.use})", points, gate.threshold, gate.op))
    runs = registry.runs(EXPERIMENT)
    monitored = []
    for name, low, high in MONITORED:
        points = []
        for run in runs:
            m = run.data.metrics
            version = run.data.tags.get(tags.MODEL_VERSION, "?")
            label = f"v{version}:{run.data.tags.get(tags.BATCH_ID, '')[:6]}"
            band = (m[low], m[high]) if low and low in m and high in m else None
            points.append((label, m.get(name, math.nan), band))
        rule = next((r for r in inputs.policy.monitoring if r.metric == name), None)
        monitored.append(
            MetricSeries(name, points, rule.threshold if rule else None, rule.op if rule else "")
        )
    path = output or settings.reports_dir / f"trends-{registry.model_name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        render_trends(
            registry.model_name,
            gated,
            monitored,
            created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            champion=next((v.version for v in versions if v.is_champion), None),
        )
    )
    return path
