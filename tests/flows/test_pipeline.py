"""The pipeline end to end on the embedded stack (Oxen, MLflow on SQLite, Prefect)."""

import math

import pytest
import torch
from pydantic import SecretStr

import flows.tasks.promotion as promotion
from flows.lineage import PROJECT_ROOT, code_version
from flows.pipeline import tai_pipeline
from infra.mlflow_store import MlflowStore
from tests.flows.conftest import IMPOSSIBLE, LENIENT, copy_workspace, train_champion
from tests.secret_scan import mlflow_leaks, secret_values

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _head_commit() -> str:
    import subprocess

    return subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def _trained(tmp_path_factory):
    """Version 1, the champion, trained once for the tests that start from it."""
    return train_champion(tmp_path_factory.mktemp("champion"), LENIENT)


@pytest.fixture
def champion(_trained, tiny_settings):
    """This test's copy of a workspace whose version 1 is the champion; the first run's
    result. (The tests that start from nothing, or from other settings, train their own.)"""
    trained, _, first = _trained
    assert first.promoted and first.version == "1"
    copy_workspace(trained, tiny_settings.workspace_dir)
    return first


def test_pipeline_registers_with_lineage_and_gates_decide_the_champion(tiny_settings, tiny_repo):
    secrets = {
        "webhook_secret": SecretStr("whsec-9f8e7d6c5b4a"),
        "lakefs_secret_access_key": SecretStr("lakefs-sk-0a1b2c3d4e5f"),
    }
    tiny_settings = tiny_settings.model_copy(update=secrets)
    first = tai_pipeline(branch="main", settings=tiny_settings)
    registry = MlflowStore(tiny_settings)
    assert first.promoted and first.version == "1"
    v1 = registry.get_version("1")
    assert v1.tags["tai.data.store"] == "oxen"
    assert v1.tags["tai.data.commit"] == tiny_repo == first.data_commit
    # The code that ran: this checkout's commit (with -dirty-<digest> for uncommitted edits).
    assert v1.tags["tai.code.version"] == code_version()
    assert v1.tags["tai.code.version"].startswith(_head_commit())
    assert len(v1.tags["tai.policy.sha256"]) == 64
    assert v1.tags["tai.gates.passed"] == "true"
    assert v1.tags["tai.gate.accuracy"].startswith("pass: accuracy = ")
    assert first.report_path.is_file() and "Trust report" in first.report_path.read_text()
    # Each stage's duration is a metric of the run: a slow stage is visible later.
    timings = registry.client.get_run(first.run_id).data.metrics
    stages = ("data engineering", "training", "evaluation", "gates", "registration")
    assert all(timings[f"time/{stage}"] >= 0 for stage in stages)
    assert timings["time/check/calibration"] >= 0
    # No secret of the settings reached MLflow: params, tags, logs, artifacts, database.
    assert mlflow_leaks(tiny_settings, secret_values(tiny_settings)) == []

    # The registered pyfunc: calibrated probabilities and a decision per image.
    answers = registry.load_pyfunc().predict(torch.rand(2, 1, 16, 16).numpy())
    assert list(answers["decision"]) == [
        "predict" if c >= float(v1.tags["tai.defer_threshold"]) else "defer_to_human"
        for c in answers["confidence"]
    ]
    assert all(abs(sum(p) - 1) < 1e-5 for p in answers["probabilities"])

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


def test_a_policy_that_asks_for_approval_rejects_when_nobody_answers(tiny_settings, tiny_repo):
    tiny_settings.policy_file.write_text(
        "version: 1\ngates:\n  - {metric: accuracy, min: 0.0}\n"
        "approval: {required: true, timeout_s: 3}\n"
    )
    result = tai_pipeline(branch="main", settings=tiny_settings)
    registry = MlflowStore(tiny_settings)
    assert not result.promoted and registry.champion() is None
    tags = registry.get_version(result.version).tags
    assert tags["tai.gates.passed"] == "true"
    assert tags["tai.approval"] == "rejected"
    assert "timeout rejects" in tags["tai.approval.reason"]
    # A 3 s timeout is polled every 0.75 s (a quarter), not every 10 s: it ends on time.
    assert tags["tai.approval.poll_s"] == "0.75"
    assert result.gates_passed and result.reasons == []
    assert "rejected" in result.approval and "timeout rejects" in result.approval


def test_tampered_champion_weights_are_refused_and_nothing_is_registered(tiny_settings, champion):
    from infra.integrity import IntegrityError

    first = champion
    weights = next(
        tiny_settings.workspace_dir.glob(f"mlartifacts/**/{first.run_id}/**/state_dict.pt")
    )
    state = torch.load(weights, weights_only=True)
    torch.save({k: v + 0.01 for k, v in state.items()}, weights)

    with pytest.raises(IntegrityError, match="sha256"):
        tai_pipeline(branch="main", settings=tiny_settings, force=True)
    registry = MlflowStore(tiny_settings)
    assert [v.version for v in registry.list_versions()] == ["1"]
    assert registry.champion().version == "1"


def test_group_fairness_from_metadata_csv(tiny_settings, tmp_path):
    from tests.conftest import write_tiny_dataset
    from tests.flows.conftest import commit_dataset

    root = write_tiny_dataset(tmp_path / "src")
    images = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    rows = [f"{p},{'left' if int(p.rsplit('/', 1)[1][:-4]) % 2 else 'right'}" for p in images]
    (root / "metadata.csv").write_text("path,hand\n" + "\n".join(rows) + "\n")
    commit_dataset(tiny_settings, tmp_path / "src")
    settings = tiny_settings.model_copy(update={"group_column": "hand"})

    result = tai_pipeline(branch="main", settings=settings)
    assert 0.0 <= result.metrics["worst_group_accuracy"] <= 1.0
    assert result.metrics["group_error_rate_gap"] >= 0.0
    html = result.report_path.read_text()
    assert "Groups (hand)" in html
    card = MlflowStore(settings).load_json(result.run_id, "data/data_card.json")
    assert card["representation"]["group_shares"]["test"] == {
        "left": pytest.approx(7 / 15),
        "right": pytest.approx(8 / 15),
    }


def test_a_users_corruption_runs_in_callbacks_report_and_gates(tiny_settings, tiny_repo):
    import tai.principles.reliability.corruptions as corruptions_module

    saved = dict(corruptions_module._REGISTRY)
    tiny_settings.policy_file.write_text(
        "version: 1\ngates:\n  - {metric: raindrops_mean, min: 0.0}\n"
        "  - {metric: raindrops_s5, min: 0.0}\n"
    )
    settings = tiny_settings.model_copy(
        update={
            "corruption_plugins": ["tests.tai.principles.reliability.test_corruptions:raindrops"],
            "corruptions": ["raindrops", "contrast"],
        }
    )
    try:
        result = tai_pipeline(branch="main", settings=settings)
    finally:
        corruptions_module._REGISTRY.clear()
        corruptions_module._REGISTRY.update(saved)
    assert result.promoted
    assert 0.0 <= result.metrics["raindrops_mean"] <= 1.0
    run = MlflowStore(settings).client.get_run(result.run_id)
    # The training callback checked it too, during validation.
    assert "tai/robustness/raindrops_mean" in run.data.metrics
    assert "<td>raindrops</td>" in result.report_path.read_text()
    assert (
        "pass: raindrops_mean"
        in MlflowStore(settings).get_version(result.version).tags["tai.gate.raindrops_mean"]
    )


def test_a_version_judged_against_a_champion_that_moved_meanwhile_is_not_promoted(
    tiny_settings, champion, monkeypatch
):
    """Two runs started by two quick merges both judged against the same champion: the one
    that finishes second must not move `champion` on a comparison that is out of date."""
    import flows.pipeline

    # This run is judged as if no champion existed yet (it loaded it before the first run
    # was promoted): by the time it is promoted, `champion` is version 1.
    monkeypatch.setattr(flows.pipeline, "load_champion", lambda store: None)
    second = tai_pipeline(branch="main", settings=tiny_settings, force=True)
    registry = MlflowStore(tiny_settings)
    assert second.gates_passed and not second.promoted
    assert registry.champion().version == "1" and second.champion_version == "1"
    note = registry.get_version(second.version).tags["tai.promotion"]
    assert note == (
        "not promoted: champion moved from none to version 1 while this version was judged "
        "against none; run the pipeline again to judge it against version 1"
    )
    assert second.note == note


def test_after_approval_a_failure_keeps_the_version_and_a_retry_neither_registers_nor_asks(
    tiny_settings, tiny_repo, monkeypatch
):
    from infra.approvals import approval_of, record_decision, request_approval

    tiny_settings.policy_file.write_text(
        "version: 1\ngates:\n  - {metric: accuracy, min: 0.0}\n"
        "approval: {required: true, timeout_s: 600}\n"
    )
    asked = []

    def a_person_approves(store, version, *, timeout_s):
        asked.append(version)
        request_approval(store, version, timeout_s=timeout_s)
        record_decision(store, version, True, "alice", "trust report read")
        return approval_of(store, version)

    renders = []
    real_render = promotion.render_trust_report

    def flaky_render(*args, **kwargs):
        renders.append(1)
        if len(renders) == 1:
            raise ConnectionError("the artifact store dropped the connection")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(promotion, "await_approval", a_person_approves)
    monkeypatch.setattr(promotion, "render_trust_report", flaky_render)
    result = tai_pipeline(branch="main", settings=tiny_settings)
    registry = MlflowStore(tiny_settings)
    assert [v.version for v in registry.list_versions()] == ["1"]  # registered once
    assert asked == ["1"]  # asked once, though the task ran twice
    assert len(renders) == 2
    assert result.promoted and registry.champion().version == "1"
    assert registry.get_version("1").tags["tai.approval.reviewer"] == "alice"


def test_an_unchanged_rerun_returns_the_version_without_training(tiny_settings, champion):
    first = champion
    again = tai_pipeline(branch="main", settings=tiny_settings)
    assert again.version == first.version and again.reused
    assert again.run_id == first.run_id and set(again.metrics) == set(first.metrics)
    assert all(
        again.metrics[k] == v or (math.isnan(v) and math.isnan(again.metrics[k]))
        for k, v in first.metrics.items()
    )
    registry = MlflowStore(tiny_settings)
    assert [v.version for v in registry.list_versions()] == ["1"]
    forced = tai_pipeline(branch="main", settings=tiny_settings, force=True)
    assert forced.version == "2" and not forced.reused
