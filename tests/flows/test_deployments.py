"""The pipeline's deployments in code and in prefect.yaml, and that the two agree."""

from __future__ import annotations

import pytest
import yaml
from pydantic import TypeAdapter

from flows.deployments import (
    COMMIT_FROM_EVENT,
    data_merge_trigger,
    monitor_deployments,
    nightly_schedule,
    pipeline_deployments,
    serve_pipeline,
)
from infra.events import EventError
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def deployments():
    return {d.name: d for d in pipeline_deployments()}


@pytest.fixture(scope="module")
def lakefs_deployments():
    """What prefect.yaml declares: the work-pool setup is the production stack, on lakeFS,
    with the inbox's hourly monitoring."""
    return {d.name: d for d in [*pipeline_deployments(store="lakefs"), *monitor_deployments()]}


@pytest.fixture(scope="module")
def yaml_deployments():
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_three_deployments_of_the_pipeline(deployments):
    assert sorted(deployments) == ["manual", "nightly", "on-data-merge"]
    for d in deployments.values():
        assert d.flow_name == "tai-pipeline"
        assert d.entrypoint == "flows/pipeline.py:tai_pipeline"
        assert d.parameters == {"branch": "main"}


def test_a_merge_event_on_the_branch_runs_the_pipeline_on_its_commit(deployments):
    (trigger,) = deployments["on-data-merge"].triggers
    assert trigger.expect == {"tai.data.merged"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "tai.data.oxen.data.main"}
    assert trigger.posture == "Reactive" and trigger.threshold == 1
    # Prefect renders the Jinja against the triggering event; no settings parameter.
    assert trigger.parameters == {"branch": "main", "commit": "{{ event.payload.commit_id }}"}
    assert COMMIT_FROM_EVENT == "{{ event.payload.commit_id }}"
    assert deployments["on-data-merge"].schedules in (None, [])


def test_nightly_retrains_on_the_branch_head_and_manual_has_neither(deployments):
    (schedule,) = deployments["nightly"].schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "UTC"
    assert deployments["nightly"].triggers == []
    assert deployments["manual"].triggers == [] and deployments["manual"].schedules in (None, [])


def test_the_branch_store_and_repository_shape_trigger_and_parameters():
    trigger = data_merge_trigger(branch="staging", store="lakefs", repository="images")
    assert trigger.match.model_dump() == {"prefect.resource.id": "tai.data.lakefs.images.staging"}
    assert trigger.parameters["branch"] == "staging"


def test_an_invalid_cron_is_refused():
    with pytest.raises(ValueError, match=r"cron 'every night' \(timezone 'UTC'\) is not a valid"):
        nightly_schedule("every night")


def test_a_store_that_emits_no_events_is_refused():
    with pytest.raises(EventError, match=r"store must be one of oxen, lakefs; got 'git'"):
        pipeline_deployments(store="git")


def test_serving_without_a_prefect_server_is_refused():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(EventError, match=r"serving the pipeline deployments needs a running"):
            serve_pipeline()


def test_the_inbox_is_monitored_every_hour_once_per_commit():
    (deployment,) = monitor_deployments(inbox="inbox", prefix="incoming")
    assert deployment.flow_name == "tai-monitor-inbox" and deployment.name == "scheduled"
    assert deployment.parameters == {"ref": "inbox", "prefix": "incoming"}
    assert [s.schedule.cron for s in deployment.schedules] == ["0 * * * *"]
    with pytest.raises(ValueError, match="is not a valid schedule"):
        monitor_deployments(cron="every hour")


def test_prefect_yaml_declares_the_same_deployments(lakefs_deployments, yaml_deployments):
    assert sorted(yaml_deployments) == sorted(lakefs_deployments)
    for name, spec in yaml_deployments.items():
        code = lakefs_deployments[name]
        assert spec["entrypoint"] == code.entrypoint
        assert spec["parameters"] == code.parameters
        assert spec["tags"] == code.tags
        assert spec["description"] == code.description
        assert spec["work_pool"]["name"] == "tai-pool"


def test_prefect_yaml_triggers_equal_the_code_triggers(lakefs_deployments, yaml_deployments):
    from prefect.events import DeploymentTriggerTypes

    adapter = TypeAdapter(list[DeploymentTriggerTypes])
    for name, code in lakefs_deployments.items():
        from_yaml = adapter.validate_python(yaml_deployments[name].get("triggers", []))
        assert [t.model_dump() for t in from_yaml] == [t.model_dump() for t in code.triggers]


def test_prefect_yaml_schedules_equal_the_code_schedules(lakefs_deployments, yaml_deployments):
    for name, code in lakefs_deployments.items():
        from_yaml = [
            (s["cron"], s["timezone"]) for s in yaml_deployments[name].get("schedules", [])
        ]
        from_code = [(s.schedule.cron, s.schedule.timezone) for s in code.schedules or []]
        assert from_yaml == from_code
    # And Prefect's own schedule model accepts what the YAML says.
    (spec,) = yaml_deployments["nightly"]["schedules"]
    assert nightly_schedule(spec["cron"], spec["timezone"]).cron == spec["cron"]
