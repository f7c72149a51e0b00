"""How the flows are started: `tai-pipeline` on new data, nightly and by hand, and
`tai-monitor-inbox` on schedule over the production inbox.

- ``tai-pipeline/on-data-merge``: a deployment trigger on ``tai.data.merged`` for one
  branch of one repository; the event's ``commit_id`` becomes the flow's ``commit``, so the
  run is pinned to the merge commit even if the branch moves on.
- ``tai-pipeline/nightly``: a cron schedule that retrains on the branch head.
- ``tai-pipeline/manual``: no schedule or trigger; for ``prefect deployment run`` and the UI.
- ``tai-monitor-inbox/scheduled``: a cron schedule (hourly by default) that monitors the
  newest batch production committed to the inbox branch, once per commit; an alarm puts
  images on a review branch, whose merge retrains through ``on-data-merge``.

:func:`serve_pipeline` serves them from this process (``prefect.serve``); ``prefect.yaml``
at the repository root declares the same three for a work pool (``prefect deploy --all``).
Every process involved must talk to one Prefect server (``PREFECT_API_URL``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.events import EVENT_DATA_MERGED, data_resource_id, require_prefect_api

if TYPE_CHECKING:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events import DeploymentEventTrigger

ON_DATA_MERGE = "on-data-merge"
NIGHTLY = "nightly"
MANUAL = "manual"
TAGS = ["tai"]
# Jinja, rendered by Prefect's RunDeployment action against the triggering event.
COMMIT_FROM_EVENT = "{{ event.payload.commit_id }}"


def data_merge_trigger(
    *, branch: str = "main", store: str = "oxen", repository: str = "data"
) -> DeploymentEventTrigger:
    """The trigger that runs the pipeline on the commit of each merge into ``branch``."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"tai-retrain-on-merge-{store}-{repository}-{branch}",
        description=f"Retrain when new data is merged into {repository}@{branch} ({store}).",
        expect={EVENT_DATA_MERGED},
        match={"prefect.resource.id": data_resource_id(store, repository, branch)},
        parameters={"branch": branch, "commit": COMMIT_FROM_EVENT},
    )


def nightly_schedule(cron: str = "0 3 * * *", timezone: str = "UTC") -> CronSchedule:
    """The retraining schedule; raises ValueError naming the cron string if it is invalid."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        reason = "; ".join(e["msg"] for e in exc.errors())
        raise ValueError(
            f"cron {cron!r} (timezone {timezone!r}) is not a valid schedule: {reason}; "
            "write five fields, e.g. '0 3 * * *' for 03:00 every day"
        ) from None


def pipeline_deployments(
    *,
    branch: str = "main",
    cron: str = "0 3 * * *",
    store: str = "oxen",
    repository: str = "data",
    timezone: str = "UTC",
) -> list[RunnerDeployment]:
    """The on-data-merge, nightly and manual deployments of `tai-pipeline`.

    Args:
        branch: the data branch whose merges trigger a run and whose head the others use.
        cron: the nightly schedule (five-field cron).
        store: ``oxen`` or ``lakefs``; must match the store that emits the event.
        repository: the data repository whose merges trigger a run.
        timezone: the time zone of ``cron``.

    Raises:
        ValueError: if the cron string is invalid or a name cannot be part of a resource id.
    """
    trigger = data_merge_trigger(branch=branch, store=store, repository=repository)
    schedule = nightly_schedule(cron, timezone)
    from flows.pipeline import tai_pipeline  # torch and Lightning: only when deploying

    common: dict[str, Any] = {"parameters": {"branch": branch}, "tags": TAGS}
    return [
        tai_pipeline.to_deployment(
            name=ON_DATA_MERGE,
            triggers=[trigger],
            description=f"Runs on the merge commit of each merge into {repository}@{branch}.",
            **common,
        ),
        tai_pipeline.to_deployment(
            name=NIGHTLY,
            schedules=[schedule],
            description=f"Retrains on the head of {repository}@{branch} on schedule {cron}.",
            **common,
        ),
        tai_pipeline.to_deployment(
            name=MANUAL,
            description=f"Runs on the head of {repository}@{branch} when started by hand.",
            **common,
        ),
    ]


MONITOR = "scheduled"


def monitor_deployments(
    *, inbox: str = "inbox", prefix: str = "incoming", cron: str = "0 * * * *"
) -> list[RunnerDeployment]:
    """The scheduled monitoring of the production inbox (``inbox``, path ``prefix``).

    Raises:
        ValueError: if the cron string is invalid.
    """
    schedule = nightly_schedule(cron)
    from flows.monitor import monitor_inbox

    return [
        monitor_inbox.to_deployment(
            name=MONITOR,
            schedules=[schedule],
            parameters={"ref": inbox, "prefix": prefix},
            description=f"Monitors the newest batch of {inbox}:{prefix} on schedule {cron}.",
            tags=TAGS,
        )
    ]


def serve_pipeline(
    *,
    limit: int | None = 1,
    monitor: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Serve the pipeline's three deployments (and, given ``monitor``, the inbox's
    monitoring) from this process until interrupted (blocking).

    Args:
        limit: how many flow runs may execute at once (one trains at a time by default).
        monitor: arguments of :func:`monitor_deployments`; None serves no monitoring.
        **kwargs: passed to :func:`pipeline_deployments`.

    Raises:
        EventError: if no Prefect server is configured: triggers and events need one.
    """
    require_prefect_api("serving the pipeline deployments")
    from prefect import serve

    deployments = pipeline_deployments(**kwargs)
    if monitor is not None:
        deployments += monitor_deployments(**monitor)
    serve(*deployments, limit=limit)
