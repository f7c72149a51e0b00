"""The pipeline end to end on the embedded stack (Oxen, MLflow on SQLite, Prefect)."""

import math

import mlflow.pytorch
import pytest
import torch

import flows.tasks.promotion as promotion
from flows.pipeline import tai_pipeline
from infra.mlflow_store import MlflowStore
from tests.flows.conftest import IMPOSSIBLE

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_pipeline_registers_with_lineage_and_gates_decide_the_champion(tiny_settings, tiny_repo):
    first = tai_pipeline(branch="main", settings=tiny_settings)
    registry = MlflowStore(tiny_settings)
    assert first.promoted and first.version == "1"
    v1 = registry.get_version("1")
    assert v1.tags["tai.data.store"] == "oxen"
    assert v1.tags["tai.data.commit"] == tiny_repo == first.data_commit
    assert v1.tags["tai.code.version"]
    assert len(v1.tags["tai.policy.sha256"]) == 64
    assert v1.tags["tai.gates.passed"] == "true"
    assert v1.tags["tai.gate.accuracy"].startswith("pass: accuracy = ")
    assert first.report_path.is_file() and "Trust report" in first.report_path.read_text()

    mlflow.set_tracking_uri(tiny_settings.tracking_uri)
    champion = mlflow.pytorch.load_model(f"models:/{tiny_settings.registered_model_name}@champion")
    x = torch.rand(2, 1, 16, 16)
    assert champion(x).shape == (2, 3)

    # A failing gate: the version is registered with its reasons, the alias stays.
    tiny_settings.policy_file.write_text(IMPOSSIBLE)
    second = tai_pipeline(commit=tiny_repo, settings=tiny_settings)
    assert not second.promoted and second.version == "2"
    v2 = registry.get_version("2")
    assert v2.tags["tai.gates.passed"] == "false"
    assert "FAIL: accuracy" in v2.tags["tai.gates.reasons"]
    assert registry.champion().version == "1"
    assert second.champion_version == "1"
    assert [v.is_champion for v in registry.list_versions()] == [True, False]
    # The first model had no champion to compare explanations with; the second had one.
    assert math.isnan(first.metrics["attribution_stability_spearman"])
    assert -1.0 <= second.metrics["attribution_stability_spearman"] <= 1.0
    # The tiny champion makes no error on some corruptions: mCE is undefined, not a crash.
    assert math.isnan(first.metrics["corruption_mce"])
    assert math.isnan(second.metrics["corruption_mce"]) or second.metrics["corruption_mce"] > 0


def test_a_failure_after_registration_leaves_no_version_and_no_alias(
    tiny_settings, tiny_repo, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full while writing the report")

    monkeypatch.setattr(promotion, "render_trust_report", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        tai_pipeline(branch="main", settings=tiny_settings)
    registry = MlflowStore(tiny_settings)
    assert registry.list_versions() == []
    assert registry.champion() is None
    assert not list(tiny_settings.reports_dir.glob("*.html"))
