"""The pipeline when the tracking server fails it half-way (RELIABILITY.md, BUG-4 and BUG-5),
without servers: MLflow on SQLite in the workspace, its client made to fail as an unreachable
server does. What must hold: a failed run's MLflow run ends FAILED, now or at the next run;
a version whose registration did not complete is never listed, never champion, never
reused, and the retry or the next run removes it (or completes it)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import flows.pipeline
import flows.tasks.promotion as promotion
from flows.pipeline import tai_pipeline
from infra.mlflow_store import MlflowStore
from tai import tags
from tests.flows.conftest import IMPOSSIBLE

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def server_away(*args, **kwargs):
    """What an MLflow client call raises while the tracking server is down."""
    raise MlflowException(
        "API request to http://127.0.0.1:5000/api/2.0/mlflow failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded "
        "(Caused by NewConnectionError: Connection refused)"
    )


def created_then_failing(error: BaseException, times: int = 1):
    """``MlflowClient.create_model_version`` that creates the version and then raises
    ``error`` (its first ``times`` calls): the answer was lost after the registry acted."""
    real = MlflowClient.create_model_version
    calls = []

    def create(self, *args, **kwargs):
        version = real(self, *args, **kwargs)
        calls.append(version.version)
        if len(calls) <= times:
            raise error
        return version

    return create, calls


def all_versions(store: MlflowStore) -> list:
    """Every version in the registry, complete or not, oldest first."""
    found = store.client.search_model_versions(f"name='{store.model_name}'")
    return sorted(found, key=lambda v: int(v.version))


def mlflow_runs(store: MlflowStore) -> dict[str, str]:
    """Status of every run of the pipeline's experiment, by run id."""
    experiment = store.client.get_experiment_by_name(store.settings.experiment_name)
    return {
        r.info.run_id: r.info.status for r in store.client.search_runs([experiment.experiment_id])
    }


def test_a_failure_inside_registration_after_the_version_was_created_leaves_one_complete_version(
    tiny_settings, tiny_repo, monkeypatch
):
    """The registry created the version, but its answer was lost (a transient error), and the
    server was away when the task tried to delete it: the task's retry must neither register
    a second version nor leave one without its completion tag, and `champion` (version 1)
    must not move to a version whose gates failed."""
    first = tai_pipeline(branch="main", settings=tiny_settings)
    assert first.promoted
    registry = MlflowStore(tiny_settings)
    tiny_settings.policy_file.write_text(IMPOSSIBLE)  # the second version fails its gates
    create, created = created_then_failing(ConnectionError("connection reset by the registry"))
    monkeypatch.setattr(MlflowClient, "create_model_version", create)
    monkeypatch.setattr(MlflowClient, "delete_model_version", server_away)
    monkeypatch.setattr(promotion, "DISCARD_RETRY_S", 0.0, raising=False)

    second = tai_pipeline(branch="main", settings=tiny_settings)

    assert len(created) == 1  # the retry reused the version the registry had created
    versions = all_versions(registry)
    assert [str(v.version) for v in versions] == [first.version, second.version]
    assert all(v.tags.get(tags.REGISTRATION) == tags.REGISTRATION_COMPLETE for v in versions)
    assert registry.incomplete_versions() == []
    assert not second.promoted and second.champion_version == first.version
    assert registry.champion().version == first.version
    assert registry.get_version(second.version).tags[tags.GATES_PASSED] == "false"
    assert second.report_path.is_file()


def test_a_registration_that_fails_for_good_with_the_server_away_leaves_nothing_anyone_reads(
    tiny_settings, tiny_repo, monkeypatch
):
    """BUG-5: the version exists, registration fails (not a transient error, so no retry)
    and the delete fails too: the version stays, but pending, so it is not listed, cannot be
    champion and is not reused; the next run deletes it."""
    registry = MlflowStore(tiny_settings)
    with monkeypatch.context() as outage:
        create, created = created_then_failing(RuntimeError("the registry failed half-way"))
        outage.setattr(MlflowClient, "create_model_version", create)
        outage.setattr(MlflowClient, "delete_model_version", server_away)
        outage.setattr(promotion, "DISCARD_RETRY_S", 0.0, raising=False)
        with pytest.raises(RuntimeError, match="failed half-way"):
            tai_pipeline(branch="main", settings=tiny_settings)

    assert registry.list_versions() == []  # nothing reads what is left ...
    assert registry.champion() is None
    (left,) = all_versions(registry)  # ... though the delete failed: it is still there
    assert left.tags[tags.REGISTRATION] == tags.REGISTRATION_PENDING
    assert flows.pipeline.identical_version(registry, left.tags) is None
    assert mlflow_runs(registry) == {left.run_id: "FAILED"}

    # The next run (here it fails on its own right after its inputs) deletes it.
    def no_data(*args, **kwargs):
        raise RuntimeError("no data today")

    monkeypatch.setattr(flows.pipeline, "materialize", no_data)
    with pytest.raises(RuntimeError, match="no data today"):
        tai_pipeline(branch="main", settings=tiny_settings)
    assert all_versions(registry) == []


def test_a_failed_runs_mlflow_run_is_marked_failed_once_the_server_answers_again(
    tiny_settings, tiny_repo, monkeypatch
):
    """BUG-4: the tracking server is away for the first two tries to mark the run FAILED."""
    real = MlflowClient.set_terminated
    tries = []

    def away_twice(self, run_id, status=None, end_time=None):
        tries.append(status)
        if len(tries) <= 2:
            server_away()
        return real(self, run_id, status=status, end_time=end_time)

    def broken(*args, **kwargs):
        raise RuntimeError("drift check crashed")

    monkeypatch.setattr(MlflowClient, "set_terminated", away_twice)
    monkeypatch.setattr(flows.pipeline, "compare_with_baseline", broken)
    with pytest.raises(RuntimeError, match="drift check crashed"):
        tai_pipeline(branch="main", settings=tiny_settings)

    assert tries == ["FAILED"] * 3
    assert list(mlflow_runs(MlflowStore(tiny_settings)).values()) == ["FAILED"]


def test_a_run_left_running_by_a_failed_run_is_marked_failed_by_the_next_run(
    tiny_settings, tiny_repo, monkeypatch
):
    """BUG-4: the tracking server stays away while the failed run tries to mark its MLflow run
    FAILED; the flow run still reports its own error, and the next pipeline run (whose
    Prefect flow run is another) marks the orphan FAILED."""

    def broken(*args, **kwargs):
        raise RuntimeError("drift check crashed")

    monkeypatch.setattr(flows.pipeline, "compare_with_baseline", broken)
    with monkeypatch.context() as outage:
        outage.setattr(MlflowClient, "set_terminated", server_away)
        outage.setattr(flows.pipeline, "FAIL_RUN_RETRY_S", 0.0, raising=False)
        with pytest.raises(RuntimeError, match="drift check crashed"):  # not MLflow's error
            tai_pipeline(branch="main", settings=tiny_settings)
    registry = MlflowStore(tiny_settings)
    (orphan,) = mlflow_runs(registry)
    assert mlflow_runs(registry) == {orphan: "RUNNING"}
    assert registry.client.get_run(orphan).data.tags[tags.FLOW_RUN]

    with pytest.raises(RuntimeError, match="drift check crashed"):
        tai_pipeline(branch="main", settings=tiny_settings)

    statuses = mlflow_runs(registry)
    assert len(statuses) == 2 and set(statuses.values()) == {"FAILED"}, statuses


def test_a_live_run_is_not_marked_failed(tiny_settings, tiny_repo, monkeypatch):
    """An MLflow run still RUNNING whose flow run is not over (another pipeline run, in
    progress) or unknown to this Prefect API is left alone."""
    registry = MlflowStore(tiny_settings)
    unknown = registry.create_run("elsewhere", {tags.FLOW_RUN: "0" * 32})
    untagged = registry.create_run("no tag", {})
    seen = {}

    def look(*args, **kwargs):
        # A run of this (live) flow run, as a second pipeline run would have it.
        seen["live"] = registry.create_run("live", flows.pipeline.flow_run_tag())
        assert flows.pipeline.fail_orphaned_runs(registry, flows.pipeline.get_run_logger()) == []
        raise RuntimeError("stop here")

    monkeypatch.setattr(flows.pipeline, "materialize", look)
    with pytest.raises(RuntimeError, match="stop here"):
        tai_pipeline(branch="main", settings=tiny_settings)

    statuses = mlflow_runs(registry)
    assert statuses[unknown] == statuses[untagged] == statuses[seen["live"]] == "RUNNING"
